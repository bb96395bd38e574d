//! The daemon's event loop: one task owns the swarm, the folder documents and the
//! schedule of scans and pulls; blocking work (scans, pulls, serving chunks) runs on
//! worker threads and reports back through a channel.
//!
//! Per folder, at most one scan or one pull runs at a time, so the scanner never sees a
//! half-applied pull, and the index is updated by the puller before the scanner looks.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use cairn_core::ContentId;
use cairn_core::conduct::{Conduct, Verdict, Violation};
use cairn_core::folder::doc::DEFAULT_SHARDS;
use cairn_core::folder::{
    DeviceId, EntryValue, FolderDoc, FolderMessage, LocalChange, PeerSync, TreeOptions,
};
use cairn_core::planner::{LocalStore, plan};
use cairn_core::wire::{BlocksRequest, BlocksResponse, MetaRequest, MetaResponse};
use futures::StreamExt;
use libp2p::request_response::{self, InboundRequestId, OutboundRequestId, ResponseChannel};
use libp2p::swarm::dial_opts::DialOpts;
use libp2p::swarm::{ConnectionId, SwarmEvent};
use libp2p::{Multiaddr, PeerId, Swarm, identify, mdns};
use tokio::sync::{mpsc, oneshot};

use crate::config::{Config, FolderConfig, FolderType, Home};
use crate::index::{FolderRecord, Index};
use crate::metrics::Metrics;
use crate::net::{Behaviour, BehaviourEvent, FrameError};
use crate::puller::{NetCommand, PullError, PullOutcome, Puller};
use crate::scanner::{ScanReport, scan_folder, scan_paths};
use crate::watcher::Watcher;

/// How often the loop looks at timers (rescans, redials, retries).
const TICK: Duration = Duration::from_millis(500);
/// Redial trusted peers that are not connected this often.
const REDIAL: Duration = Duration::from_secs(5);
/// Retry a pull that failed after this long.
const PULL_RETRY: Duration = Duration::from_secs(3);
/// Rescan interval when the watcher does not work.
const FALLBACK_RESCAN: Duration = Duration::from_secs(10);
/// After pairing on an open connection, reconnect this soon: the new connection is the
/// first on which the peer is served meta and blocks (`net::Gated`).
pub(crate) const RECONNECT_AFTER_PAIRING: Duration = Duration::from_secs(1);
/// A stream that ended inside a frame counts as a violation only if the connection is
/// still up this long after (a peer killed mid-frame is not hostile).
const TRUNCATION_GRACE: Duration = Duration::from_secs(2);
/// Blocks answers being read from disk at once for one peer.
const SERVE_JOBS_PER_PEER: usize = 4;
/// Bytes of blocks answers handed to the network and not yet sent, per peer; past it,
/// further requests of the peer wait their turn.
const SERVE_BYTES_PER_PEER: u64 = 16 << 20;
/// Offers of folders remembered per peer, and in all.
const MAX_OFFERS_PER_PEER: usize = 16;
const MAX_OFFERS: usize = 64;
/// An offer not repeated for this long is forgotten (it comes back when the peer offers
/// again).
const OFFER_TTL: Duration = Duration::from_secs(3600);
/// Refused paths remembered per folder.
const MAX_REFUSED: usize = 1000;

/// Something that happened off the loop.
pub enum Event {
    ScanDone {
        folder: String,
        result: Result<ScanReport, String>,
    },
    PullDone {
        folder: String,
        outcome: PullOutcome,
    },
    FsChanged {
        folder: String,
        /// Absolute paths that changed; empty when everything must be scanned.
        paths: Vec<std::path::PathBuf>,
    },
    RestoreDone {
        folder: String,
        changed: bool,
    },
    WatcherFailed {
        folder: String,
        error: String,
    },
    BlocksReady {
        channel: ResponseChannel<Vec<u8>>,
        peer: PeerId,
        request_id: InboundRequestId,
        response: BlocksResponse,
    },
    Control(ControlRequest),
}

/// A question from the control API.
pub enum ControlRequest {
    Status(oneshot::Sender<Status>),
    Metrics(oneshot::Sender<String>),
    Rescan {
        folder: Option<String>,
        reply: oneshot::Sender<Result<(), crate::admin::ApiError>>,
    },
    Shutdown,
    Admin(crate::admin::AdminRequest),
    Pair(crate::pair::PairCtl),
}

pub use crate::refused::RefusedPath;
pub use cairn_api::status::{FolderStatus, PeerStatus, RecentChange, Status, WaitingPath};

/// How many recent changes the daemon remembers (in memory: a feed, not a log).
pub const RECENT_MAX: usize = 100;

/// Blocks requests of one peer: answers being made, bytes handed to the network, and
/// requests waiting for their turn.
#[derive(Default)]
pub(crate) struct Serving {
    jobs: usize,
    bytes: u64,
    sent: HashMap<InboundRequestId, u64>,
    queue: std::collections::VecDeque<(InboundRequestId, ResponseChannel<Vec<u8>>, BlocksRequest)>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Busy {
    Idle,
    Scanning,
    Pulling,
    /// Copying a kept version back (`history.rs`).
    Restoring,
}

/// Paths scanned at most in one partial scan; more changes make it a full scan.
const MAX_SCAN_PATHS: usize = 1000;

/// What the next scan of a folder must cover.
#[derive(Debug, Default)]
pub(crate) enum ScanNeed {
    #[default]
    Nothing,
    /// Only these folder-relative paths (and what lies under them) changed.
    Paths(BTreeSet<String>),
    /// Everything (start, periodic safety net, resume, a lost watcher event, ...).
    All,
}

impl ScanNeed {
    /// The whole folder must be scanned.
    pub(crate) fn all(&mut self) {
        *self = ScanNeed::All;
    }

    /// `paths` changed; a partial scan covers them unless a full one is due anyway.
    pub(crate) fn paths(&mut self, paths: impl IntoIterator<Item = String>) {
        match self {
            ScanNeed::All => {}
            ScanNeed::Nothing => {
                *self = ScanNeed::Paths(paths.into_iter().collect());
            }
            ScanNeed::Paths(set) => set.extend(paths),
        }
        if let ScanNeed::Paths(set) = self
            && (set.len() > MAX_SCAN_PATHS || set.contains(""))
        {
            *self = ScanNeed::All;
        }
    }

    pub(crate) fn is_due(&self) -> bool {
        !matches!(self, ScanNeed::Nothing)
    }
}

pub(crate) struct Folder {
    pub(crate) config: FolderConfig,
    pub(crate) record: FolderRecord,
    pub(crate) doc: FolderDoc,
    pub(crate) peers: HashMap<PeerId, PeerSync>,
    pub(crate) busy: Busy,
    pub(crate) scan: ScanNeed,
    pub(crate) needs_pull: bool,
    pub(crate) in_sync: bool,
    /// When the last full scan started (the periodic rescan counts from it).
    pub(crate) last_scan: Instant,
    /// When the scan running now (or the last one) started, full or partial.
    pub(crate) scan_started: Instant,
    pub(crate) retry_pull_at: Option<Instant>,
    pub(crate) last_error: Option<String>,
    pub(crate) _watcher: Option<Watcher>,
    pub(crate) watcher_failed: bool,
    pub(crate) progress: Option<Arc<crate::puller::PullProgress>>,
    pub(crate) last_scan_took: Duration,
    pub(crate) scan_done_at: Option<Instant>,
    /// (when, bytes done) at the last tick, and the smoothed rate in bytes/s.
    pub(crate) rate: (Instant, u64, f64),
    /// `cairn restore` requests waiting for the folder to be idle.
    pub(crate) restores: std::collections::VecDeque<crate::history::PendingRestore>,
    /// Files the last pull could not get because no connected peer has their version.
    pub(crate) waiting: Vec<WaitingPath>,
    /// The last pull failed only for versions no connected peer has.
    pub(crate) waiting_only: bool,
    /// Entries refused, by path (never retried while they stay as they are).
    pub(crate) refused: BTreeMap<String, RefusedPath>,
    /// The last pull stopped for lack of disk space.
    pub(crate) no_space: bool,
}

/// The device's stores, as the planner sees them.
struct IndexStore<'a>(&'a Index);

impl LocalStore for IndexStore<'_> {
    fn has_manifest(&self, content: &ContentId) -> bool {
        self.0.has_manifest(content).unwrap_or(false)
    }
}

/// The daemon.
pub struct Engine {
    pub(crate) home: Home,
    pub(crate) swarm: Swarm<Behaviour>,
    pub(crate) index: Arc<Index>,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) folders: BTreeMap<String, Folder>,
    pub(crate) trusted: HashMap<PeerId, (String, Vec<Multiaddr>)>,
    pub(crate) connected: HashSet<PeerId>,
    pub(crate) meta_pending: HashMap<OutboundRequestId, (String, PeerId)>,
    pub(crate) meta_inflight: HashSet<(String, PeerId)>,
    pub(crate) blocks_pending:
        HashMap<OutboundRequestId, oneshot::Sender<Result<BlocksResponse, String>>>,
    pub(crate) net_tx: mpsc::UnboundedSender<NetCommand>,
    pub(crate) net_rx: mpsc::UnboundedReceiver<NetCommand>,
    pub(crate) events_tx: mpsc::UnboundedSender<Event>,
    pub(crate) events_rx: mpsc::UnboundedReceiver<Event>,
    pub(crate) started: Instant,
    pub(crate) last_dial: Option<Instant>,
    pub(crate) listen: Vec<Multiaddr>,
    pub(crate) shutdown: bool,
    pub(crate) config: Config,
    pub(crate) config_path: PathBuf,
    pub(crate) device: DeviceId,
    pub(crate) peer_listen: HashMap<PeerId, Vec<Multiaddr>>,
    pub(crate) offers: BTreeMap<String, crate::admin::Offer>,
    pub(crate) invitation: Option<crate::pair::Invitation>,
    pub(crate) join: Option<crate::pair::Join>,
    pub(crate) pair_pending: HashMap<OutboundRequestId, PeerId>,
    pub(crate) recent: std::collections::VecDeque<RecentChange>,
    pub(crate) conduct: Conduct<PeerId>,
    pub(crate) reconnect_at: HashMap<PeerId, Instant>,
    pub(crate) serving: HashMap<PeerId, Serving>,
    /// Streams that ended inside a frame: (peer, connection, reason, when).
    pub(crate) truncated: Vec<(PeerId, ConnectionId, String, Instant)>,
    pub(crate) offered_at: HashMap<String, Instant>,
    /// Connections open now, by peer (trusted or not).
    pub(crate) connections: HashMap<PeerId, HashSet<ConnectionId>>,
}

/// Errors starting the daemon.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Index(#[from] crate::index::IndexError),
    #[error(transparent)]
    Net(#[from] crate::net::NetError),
    #[error("folder {id}: {why}")]
    Folder { id: String, why: String },
    #[error("cannot listen on {addr}: {why}")]
    Listen { addr: String, why: String },
}

impl Engine {
    /// Opens the index, loads every folder and starts listening.
    pub fn new(
        home: Home,
        config: &Config,
        config_path: PathBuf,
        key: libp2p::identity::Keypair,
    ) -> Result<Self, StartError> {
        let local_id = key.public().to_peer_id();
        let device = DeviceId::from_identity(&local_id.to_bytes());
        let index = Arc::new(Index::open(&home.index())?);
        let mut swarm = crate::net::build_swarm(key, config.network.mdns)?;
        for addr in &config.network.listen {
            let ma: Multiaddr = addr.parse().map_err(|e| StartError::Listen {
                addr: addr.clone(),
                why: format!("{e}"),
            })?;
            swarm.listen_on(ma).map_err(|e| StartError::Listen {
                addr: addr.clone(),
                why: e.to_string(),
            })?;
        }
        for b in &config.network.bootstrap {
            if let Ok(ma) = b.parse::<Multiaddr>()
                && let Some(libp2p::multiaddr::Protocol::P2p(peer)) = ma.iter().last()
            {
                swarm.behaviour_mut().kad.add_address(&peer, ma.clone());
            }
        }
        let mut trusted = HashMap::new();
        for p in &config.peers {
            if let Ok(id) = p.id.parse::<PeerId>() {
                let addrs: Vec<Multiaddr> =
                    p.addresses.iter().filter_map(|a| a.parse().ok()).collect();
                for a in &addrs {
                    swarm.behaviour_mut().kad.add_address(&id, a.clone());
                }
                swarm.behaviour_mut().meta.allow(id);
                swarm.behaviour_mut().blocks.allow(id);
                trusted.insert(id, (p.name.clone(), addrs));
            }
        }
        let (net_tx, net_rx) = mpsc::unbounded_channel();
        let (events_tx, events_rx) = mpsc::unbounded_channel();
        let mut folders = BTreeMap::new();
        for fc in &config.folders {
            let folder = load_folder(&index, fc, device, &events_tx)?;
            folders.insert(fc.id.clone(), folder);
        }
        tracing::info!(peer_id = %local_id, folders = folders.len(), "daemon_started");
        Ok(Engine {
            home,
            swarm,
            index,
            metrics: Arc::new(Metrics::default()),
            folders,
            trusted,
            connected: HashSet::new(),
            meta_pending: HashMap::new(),
            meta_inflight: HashSet::new(),
            blocks_pending: HashMap::new(),
            net_tx,
            net_rx,
            events_tx,
            events_rx,
            started: Instant::now(),
            recent: std::collections::VecDeque::new(),
            last_dial: None,
            listen: Vec::new(),
            shutdown: false,
            config: config.clone(),
            config_path,
            device,
            peer_listen: HashMap::new(),
            offers: BTreeMap::new(),
            invitation: None,
            join: None,
            pair_pending: HashMap::new(),
            conduct: Conduct::default(),
            reconnect_at: HashMap::new(),
            serving: HashMap::new(),
            truncated: Vec::new(),
            offered_at: HashMap::new(),
            connections: HashMap::new(),
        })
    }

    /// A sender for events from outside the loop (the control API).
    pub fn events(&self) -> mpsc::UnboundedSender<Event> {
        self.events_tx.clone()
    }

    /// Runs until shut down.
    pub async fn run(mut self) {
        let mut tick = tokio::time::interval(TICK);
        while !self.shutdown {
            tokio::select! {
                event = self.swarm.select_next_some() => {
                    let t = Instant::now();
                    self.on_swarm(event);
                    self.turn_took(t);
                }
                Some(event) = self.events_rx.recv() => {
                    let t = Instant::now();
                    self.on_event(event);
                    self.turn_took(t);
                }
                Some(cmd) = self.net_rx.recv() => {
                    let t = Instant::now();
                    self.on_net_command(cmd);
                    self.turn_took(t);
                }
                _ = tick.tick() => {
                    let t = Instant::now();
                    self.on_tick();
                    self.turn_took(t);
                }
            }
        }
        tracing::info!("daemon_stopped");
    }

    /// Schedules what the turn that started at `started` made due, and records how long
    /// the whole turn kept the loop (`cairn_loop_stall_seconds`).
    fn turn_took(&mut self, started: Instant) {
        self.schedule();
        self.metrics.loop_stall.observe(started.elapsed());
    }

    fn on_tick(&mut self) {
        self.pair_tick();
        let now = Instant::now();
        self.conduct_tick(now);
        for f in self.folders.values_mut() {
            if let Some(p) = &f.progress {
                let done = p.done_bytes.load(Ordering::Relaxed);
                let dt = (now - f.rate.0).as_secs_f64().max(1e-3);
                let instant = done.saturating_sub(f.rate.1) as f64 / dt;
                f.rate = (now, done, 0.5 * f.rate.2 + 0.5 * instant);
            }
        }
        if self.last_dial.is_none_or(|t| now - t >= REDIAL) {
            self.last_dial = Some(now);
            self.dial_missing();
        }
        for f in self.folders.values_mut() {
            let interval = if f.watcher_failed {
                FALLBACK_RESCAN
            } else {
                Duration::from_secs(f.config.rescan_interval_s.max(1))
            };
            if now - f.last_scan >= interval {
                f.scan.all();
            }
            if f.retry_pull_at.is_some_and(|t| now >= t) {
                f.retry_pull_at = None;
                f.needs_pull = true;
            }
        }
    }

    fn dial_missing(&mut self) {
        let missing: Vec<(PeerId, Vec<Multiaddr>)> = self
            .trusted
            .iter()
            .filter(|(p, _)| !self.connected.contains(p))
            .map(|(p, (_, a))| (*p, a.clone()))
            .collect();
        let now = Instant::now();
        for (peer, addrs) in missing {
            if self.conduct.banned(&peer, now) {
                continue;
            }
            if addrs.is_empty() {
                // Ask the DHT where the peer is; a found address is dialled on the result.
                self.swarm.behaviour_mut().kad.get_closest_peers(peer);
            } else {
                // Also every address Kademlia and mDNS know: the remembered ones go
                // stale when the peer restarts on a new port.
                let _ = self.swarm.dial(
                    DialOpts::peer_id(peer)
                        .addresses(addrs)
                        .extend_addresses_through_behaviour()
                        .build(),
                );
            }
        }
    }

    fn schedule(&mut self) {
        let ids: Vec<String> = self.folders.keys().cloned().collect();
        for id in ids {
            let Some(f) = self.folders.get_mut(&id) else {
                continue;
            };
            if f.busy != Busy::Idle {
                continue;
            }
            // A restore goes first, and also runs in a paused folder (it syncs on resume).
            if !f.restores.is_empty() {
                self.start_restore(&id);
                continue;
            }
            if f.config.paused {
                continue;
            }
            // While changes keep coming (a big copy), leave at least twice the last scan's
            // duration between scans, so scanning takes at most a third of the time instead
            // of walking the growing folder back to back. A lone change still gets scanned
            // at once.
            let gap_over = f
                .scan_done_at
                .is_none_or(|done| done.elapsed() >= 2 * f.last_scan_took);
            if f.scan.is_due() && gap_over {
                let scope = match std::mem::take(&mut f.scan) {
                    ScanNeed::Paths(paths) => Some(paths),
                    _ => None,
                };
                self.start_scan(&id, scope);
            } else if f.needs_pull && (f.retry_pull_at.is_none() || f.waiting_only) {
                // A pull that only waits for versions other devices have does not hold
                // back new changes; one that failed otherwise backs off until its retry.
                f.needs_pull = false;
                self.start_pull(&id);
            }
        }
    }

    /// Scans folder `id`: only `scope` (what the watcher saw change), or all of it.
    fn start_scan(&mut self, id: &str, scope: Option<BTreeSet<String>>) {
        let Some(f) = self.folders.get_mut(id) else {
            return;
        };
        f.busy = Busy::Scanning;
        f.scan_started = Instant::now();
        if scope.is_none() {
            // The periodic rescan counts from the last full one.
            f.last_scan = f.scan_started;
        }
        let (index, record, tx, folder) = (
            self.index.clone(),
            f.record.clone(),
            self.events_tx.clone(),
            id.to_string(),
        );
        tracing::debug!(folder = id, scope = ?scope, "scan_started");
        tokio::task::spawn_blocking(move || {
            let result = match &scope {
                Some(paths) => scan_paths(&index, &record, paths),
                None => scan_folder(&index, &record, &|_| {}),
            };
            let _ = tx.send(Event::ScanDone {
                folder,
                result: result.map_err(|e| e.to_string()),
            });
        });
    }

    fn on_scan_done(&mut self, id: &str, result: Result<ScanReport, String>) {
        self.on_scan_report(id, result);
        crate::memory::trim();
    }

    fn on_scan_report(&mut self, id: &str, result: Result<ScanReport, String>) {
        let Some(f) = self.folders.get_mut(id) else {
            return;
        };
        f.busy = Busy::Idle;
        f.last_scan_took = f.scan_started.elapsed();
        f.scan_done_at = Some(Instant::now());
        let report = match result {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(folder = id, error = %e, "scan_failed");
                f.last_error = Some(e);
                return;
            }
        };
        Metrics::add(&self.metrics.scan_files, report.read_files);
        Metrics::add(&self.metrics.scan_bytes, report.read_bytes);
        // A file still being written is normal, not an error: it is scanned again.
        f.last_error = report
            .issues
            .iter()
            .find(|i| !i.changing)
            .map(|i| format!("{}: {}", i.path, i.problem));
        let mut touched = HashSet::new();
        // Every change the index holds that the document has not recorded: this scan's,
        // and any a killed process committed to the index but never recorded.
        let unrecorded = match self.index.unrecorded(id) {
            Ok(u) => u,
            Err(e) => {
                tracing::error!(folder = id, error = %e, "unrecorded_changes_unreadable");
                report
                    .changes
                    .iter()
                    .map(|c| (c.path.clone(), c.previous))
                    .collect()
            }
        };
        if f.config.kind != FolderType::ReceiveOnly {
            for (path, previous) in &unrecorded {
                let local = match self.index.entry(id, path) {
                    Ok(Some(e)) => LocalChange::Present {
                        kind: e.kind,
                        content: e.content,
                        size: e.stamp.size,
                        mtime_ns: e.stamp.mtime_ns,
                        mode: e.stamp.mode,
                        link_target: e.link_target,
                    },
                    Ok(None) => LocalChange::Deleted,
                    Err(_) => continue,
                };
                if f.doc.record_local(path, &local, *previous) {
                    touched.insert(f.doc.shard_of(path));
                }
            }
        }
        let local: Vec<(String, String)> = report
            .changes
            .iter()
            .rev()
            .take(RECENT_MAX)
            .rev()
            .map(|c| (c.path.clone(), format!("{:?}", c.change).to_lowercase()))
            .collect();
        self.remember(id, local, "local");
        let Some(f) = self.folders.get_mut(id) else {
            return;
        };
        let paths: Vec<String> = unrecorded.iter().map(|(p, _)| p.clone()).collect();
        if !touched.is_empty() {
            f.doc.commit();
            tracing::info!(
                folder = id,
                changes = report.changes.len(),
                "local_changes_recorded"
            );
            self.persist_recording(id, touched, &paths);
            self.sync_folder(id);
        } else if let Err(e) = self.index.clear_unrecorded(id, &paths) {
            tracing::error!(folder = id, error = %e, "unrecorded_changes_not_cleared");
        }
        // A scan that found nothing new leaves nothing new to pull.
        if (!report.changes.is_empty() || !paths.is_empty())
            && let Some(f) = self.folders.get_mut(id)
        {
            f.needs_pull = true;
        }
    }

    pub(crate) fn persist(&mut self, id: &str, shards: impl IntoIterator<Item = usize>) {
        self.persist_recording(id, shards, &[]);
    }

    /// Saves shards that record the scan changes of `paths` (see `Index::unrecorded`).
    fn persist_recording(
        &mut self,
        id: &str,
        shards: impl IntoIterator<Item = usize>,
        paths: &[String],
    ) {
        let Some(f) = self.folders.get_mut(id) else {
            return;
        };
        let saved: Vec<(u16, Vec<u8>)> = shards
            .into_iter()
            .map(|s| (s as u16, f.doc.save_shard(s)))
            .collect();
        if let Err(e) = self.index.put_folder_shards_recording(id, &saved, paths) {
            tracing::error!(folder = id, error = %e, "persist_failed");
        }
    }

    fn start_pull(&mut self, id: &str) {
        self.plan_and_pull(id);
        // The tree, the index snapshot and the plan were just freed (or moved to the
        // puller's thread).
        crate::memory::trim();
    }

    fn plan_and_pull(&mut self, id: &str) {
        let roots: HashMap<String, PathBuf> = self
            .folders
            .iter()
            .map(|(k, f)| (k.clone(), f.record.root.clone()))
            .collect();
        let Some(f) = self.folders.get_mut(id) else {
            return;
        };
        if f.config.kind == FolderType::SendOnly {
            f.in_sync = true;
            return;
        }
        let options = TreeOptions::default();
        let tree = f.doc.tree(options);
        // Invalid paths in the document are refused once each, and their authors counted.
        let invalid: Vec<(String, String, Option<DeviceId>)> = tree
            .rejected
            .iter()
            .filter(|(path, _)| !f.refused.contains_key(path))
            .map(|(path, why)| {
                let author = f.doc.values(path).first().map(|v| v.device);
                (path.clone(), why.to_string(), author)
            })
            .collect();
        for (path, why, author) in invalid {
            self.refuse(id, &path, None, author, Violation::InvalidPath, why);
        }
        let Some(f) = self.folders.get_mut(id) else {
            return;
        };
        let written = f.doc.materialize(&tree);
        if !written.is_empty() {
            let shards: HashSet<usize> = written.iter().map(|p| f.doc.shard_of(p)).collect();
            self.persist(id, shards);
            self.sync_folder(id);
        }
        let Some(f) = self.folders.get_mut(id) else {
            return;
        };
        // Versions refused before stay refused (never fetched again) while the document
        // asks for exactly them.
        f.refused.retain(|path, r| {
            r.content.is_none()
                || tree
                    .entries
                    .get(path)
                    .is_some_and(|e| e.value.content == r.content)
        });
        let refused: HashMap<String, ContentId> = f
            .refused
            .iter()
            .filter_map(|(p, r)| Some((p.clone(), r.content?)))
            .collect();
        f.busy = Busy::Pulling;
        let Ok(chunker) = f.record.chunker() else {
            f.busy = Busy::Idle;
            return;
        };
        let peers: Vec<PeerId> = f
            .config
            .peers
            .iter()
            .filter_map(|p| p.parse().ok())
            .filter(|p| self.connected.contains(p))
            .collect();
        let puller = Puller {
            folder: id.to_string(),
            root: f.record.root.clone(),
            chunker,
            index: self.index.clone(),
            history_dir: self.home.history(),
            roots,
            peers,
            net: self.net_tx.clone(),
            metrics: self.metrics.clone(),
            progress: Arc::new(crate::puller::PullProgress::default()),
            dirty_dirs: Default::default(),
            keeps: Default::default(),
            preserving: Default::default(),
        };
        f.progress = Some(puller.progress.clone());
        f.rate = (Instant::now(), 0, 0.0);
        let (tx, folder) = (self.events_tx.clone(), id.to_string());
        // Planning reads the whole index and every manifest the tree names: it runs on
        // the puller's thread, never on the loop (the control API stays responsive
        // whatever the size of a pull).
        std::thread::spawn(move || {
            let outcome = match plan_pull(&puller, &tree, &refused) {
                Ok(Some(plan)) => {
                    tracing::debug!(folder, actions = ?plan.actions, "pull_started");
                    let values: HashMap<String, EntryValue> = tree
                        .entries
                        .into_iter()
                        .map(|(p, e)| (p, e.value))
                        .collect();
                    drop(refused);
                    puller.run(&plan, &values)
                }
                Ok(None) => PullOutcome {
                    planned_nothing: true,
                    ..PullOutcome::default()
                },
                Err(e) => PullOutcome {
                    failed: vec![e],
                    ..PullOutcome::default()
                },
            };
            let _ = tx.send(Event::PullDone { folder, outcome });
        });
    }

    /// When every folder is in sync, manifests learnt from peers are no longer needed
    /// (except those of kept versions): a peer cannot grow the index with them.
    fn prune_manifests(&mut self) {
        let all_in_sync = self
            .folders
            .values()
            .all(|f| f.in_sync || f.config.kind == FolderType::SendOnly);
        if !all_in_sync || self.index.remote_manifest_count().unwrap_or(0) == 0 {
            return;
        }
        match self.index.prune_remote_manifests() {
            Ok(0) => {}
            Ok(n) => tracing::info!(removed = n, "remote_manifests_pruned"),
            Err(e) => tracing::warn!(error = %e, "remote_manifest_prune_failed"),
        }
    }

    /// A violation by the device that authored an entry: counted against its peer when
    /// it is paired (and connected or not), else against `unpaired`.
    fn device_violation(&mut self, author: Option<DeviceId>, kind: Violation, reason: &str) {
        let peer = author.and_then(|d| {
            self.trusted
                .keys()
                .find(|p| DeviceId::from_identity(&p.to_bytes()) == d)
                .copied()
        });
        match peer {
            Some(p) => self.violation(p, kind, reason),
            None => {
                self.metrics.violation("unpaired", kind.as_str());
                tracing::warn!(
                    kind = kind.as_str(),
                    reason,
                    "protocol_violation_by_unpaired_author"
                );
            }
        }
    }

    fn on_pull_done(&mut self, id: &str, outcome: PullOutcome) {
        crate::memory::trim();
        let Some(f) = self.folders.get_mut(id) else {
            return;
        };
        f.busy = Busy::Idle;
        f.progress = None;
        if outcome.planned_nothing {
            f.in_sync = true;
            f.waiting.clear();
            f.no_space = false;
            self.prune_manifests();
            return;
        }
        f.in_sync = false;
        let recent: Vec<(String, String)> = outcome
            .recent
            .iter()
            .map(|(p, w)| (p.clone(), w.to_string()))
            .collect();
        self.remember(id, recent, "remote");
        let Some(f) = self.folders.get_mut(id) else {
            return;
        };
        tracing::info!(
            folder = id,
            done = outcome.done,
            failed = outcome.failed.len(),
            "pull_finished"
        );
        if !outcome.raced.is_empty() {
            f.scan.all();
        }
        let (waiting, dropped) = self.sort_waiting(id, &outcome.waiting);
        let Some(f) = self.folders.get_mut(id) else {
            return;
        };
        f.waiting = waiting;
        f.no_space = outcome.failed.iter().any(PullError::is_no_space);
        let error = outcome
            .failed
            .iter()
            .find(|e| !e.is_unavailable() && !matches!(e, PullError::Refused { .. }));
        let only_refused = !outcome.failed.is_empty()
            && outcome
                .failed
                .iter()
                .all(|e| matches!(e, PullError::Refused { .. }));
        f.waiting_only = !outcome.failed.is_empty() && error.is_none();
        if outcome.failed.is_empty() || only_refused {
            f.last_error = None;
            f.needs_pull = outcome.done > 0 || only_refused;
        } else {
            // Versions no connected peer has are waiting, not an error.
            f.last_error = error.map(ToString::to_string);
            f.retry_pull_at = Some(Instant::now() + PULL_RETRY);
        }
        if !dropped.is_empty() {
            self.drop_unavailable(id, &dropped);
        }
        for e in outcome.failed {
            if let PullError::Refused {
                path,
                content,
                author,
                why,
            } = e
            {
                self.refuse(
                    id,
                    &path,
                    Some(content),
                    Some(author),
                    Violation::SizeMismatch,
                    why,
                );
            }
        }
    }

    /// Refuses an entry of folder `id`: listed in the status (never written, and never
    /// fetched again while the document asks for that version), and counted against the
    /// device that wrote it.
    fn refuse(
        &mut self,
        id: &str,
        path: &str,
        content: Option<ContentId>,
        author: Option<DeviceId>,
        kind: Violation,
        reason: String,
    ) {
        let Some(f) = self.folders.get_mut(id) else {
            return;
        };
        if f.refused.len() >= MAX_REFUSED {
            return;
        }
        let counted = format!("{path}: {reason}");
        f.refused.insert(
            path.to_string(),
            RefusedPath {
                path: path.to_string(),
                reason,
                device: author.map(|d| d.short()).unwrap_or_default(),
                content,
            },
        );
        self.device_violation(author, kind, &counted);
    }

    /// Splits files a pull could not get into those waiting for a device (with who is
    /// expected to have them) and versions this device authored but no longer has, which
    /// nobody can ever provide.
    fn sort_waiting(
        &self,
        id: &str,
        missing: &[(String, ContentId)],
    ) -> (Vec<WaitingPath>, Vec<(String, ContentId)>) {
        let Some(f) = self.folders.get(id) else {
            return Default::default();
        };
        let mut waiting = Vec::new();
        let mut dropped = Vec::new();
        let all_members_connected = f
            .config
            .peers
            .iter()
            .filter_map(|p| p.parse::<PeerId>().ok())
            .filter(|p| self.trusted.contains_key(p))
            .all(|p| self.connected.contains(&p));
        for (path, content) in missing {
            let Some(author) = f
                .doc
                .values(path)
                .into_iter()
                .find(|v| v.content == Some(*content))
                .map(|v| v.device)
            else {
                continue; // changed meanwhile: the next pull sees what is wanted now
            };
            // Only when every member is connected (and none had it) can nobody have it.
            if author == self.device && all_members_connected && !self.holds(content) {
                dropped.push((path.clone(), *content));
            } else {
                waiting.push(WaitingPath {
                    path: path.clone(),
                    device: self.device_label(author),
                });
            }
        }
        waiting.sort_by(|a, b| a.path.cmp(&b.path));
        (waiting, dropped)
    }

    /// Whether this device has every byte of `content` (in a file or in history).
    fn holds(&self, content: &ContentId) -> bool {
        let mut all = true;
        let known = self.index.each_page(content, |m, _| {
            all = m
                .chunks
                .iter()
                .all(|c| self.index.has_chunk(&c.id).unwrap_or(true));
            all
        });
        match known {
            Ok(known) => known && all,
            Err(_) => true, // unsure: keep waiting rather than drop
        }
    }

    /// Drops versions this device authored and no longer has, so no device waits for them
    /// forever (see [`FolderDoc::record_unavailable`]); logged and counted.
    fn drop_unavailable(&mut self, id: &str, dropped: &[(String, ContentId)]) {
        let Some(f) = self.folders.get_mut(id) else {
            return;
        };
        let mut touched = HashSet::new();
        for (path, content) in dropped {
            if f.doc.record_unavailable(path, *content) {
                tracing::warn!(folder = id, path = %path, content = %content.short(), "version_unavailable");
                Metrics::add(&self.metrics.versions_unavailable, 1);
                touched.insert(f.doc.shard_of(path));
            }
        }
        if touched.is_empty() {
            return;
        }
        f.doc.commit();
        f.waiting
            .retain(|w| !dropped.iter().any(|(p, _)| p == &w.path));
        f.needs_pull = true;
        f.retry_pull_at = None;
        self.persist(id, touched);
        self.sync_folder(id);
    }

    /// Adds changes (oldest first) to the recent-changes feed.
    fn remember(&mut self, folder: &str, changes: Vec<(String, String)>, origin: &'static str) {
        let at = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        for (path, change) in changes {
            if self.recent.len() == RECENT_MAX {
                self.recent.pop_back();
            }
            self.recent.push_front(RecentChange {
                at,
                folder: folder.to_string(),
                path,
                change,
                origin: origin.into(),
            });
        }
    }

    pub(crate) fn is_member(&self, folder: &str, peer: &PeerId) -> bool {
        self.trusted.contains_key(peer)
            && self
                .folders
                .get(folder)
                .is_some_and(|f| f.config.peers.iter().any(|p| p == &peer.to_string()))
    }

    pub(crate) fn sync_folder(&mut self, id: &str) {
        let peers: Vec<PeerId> = self
            .connected
            .iter()
            .copied()
            .filter(|p| self.is_member(id, p))
            .collect();
        for p in peers {
            self.sync_with(id, p);
        }
    }

    pub(crate) fn sync_with(&mut self, id: &str, peer: PeerId) {
        if self.meta_inflight.contains(&(id.to_string(), peer)) || !self.connected.contains(&peer) {
            return;
        }
        let Some(f) = self.folders.get_mut(id) else {
            return;
        };
        if f.config.paused {
            return;
        }
        let state = f.peers.entry(peer).or_insert_with(|| f.doc.new_peer());
        let Some(msg) = f.doc.generate_sync_message(state) else {
            return;
        };
        let request = MetaRequest {
            folder: id.to_string(),
            message: Some(msg.encode()),
        }
        .encode();
        Metrics::add(&self.metrics.meta_bytes_sent, request.len() as u64);
        let rid = self.swarm.behaviour_mut().meta.send_request(&peer, request);
        self.meta_pending.insert(rid, (id.to_string(), peer));
        self.meta_inflight.insert((id.to_string(), peer));
    }

    /// Applies a peer's folder message; false if it was malformed.
    fn apply_meta(&mut self, id: &str, peer: PeerId, bytes: &[u8]) -> bool {
        Metrics::add(&self.metrics.meta_bytes_received, bytes.len() as u64);
        let Some(f) = self.folders.get_mut(id) else {
            return false;
        };
        let msg = match FolderMessage::decode(bytes) {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!(peer = %peer, error = %e, "protocol_violation_meta");
                return false;
            }
        };
        let before = f.doc.heads();
        let state = f.peers.entry(peer).or_insert_with(|| f.doc.new_peer());
        if let Err(e) = f.doc.receive_sync_message(state, &msg) {
            tracing::warn!(peer = %peer, error = %e, "protocol_violation_meta");
            state.reset();
            return false;
        }
        let changed = f.doc.heads() != before;
        if changed {
            f.needs_pull = true;
            let shards: Vec<usize> = msg.shards.iter().map(|(s, _)| *s as usize).collect();
            self.persist(id, shards);
        }
        true
    }

    /// The one path of every protocol violation: counted by peer (`unpaired` for
    /// strangers) and kind, logged with the reason, the peer disconnected, and banned for a
    /// while when it keeps doing it ([`cairn_core::conduct`]).
    pub(crate) fn violation(&mut self, peer: PeerId, kind: Violation, reason: &str) {
        let now = Instant::now();
        let label = if self.trusted.contains_key(&peer) {
            peer.to_string()
        } else {
            "unpaired".to_string()
        };
        self.metrics.violation(&label, kind.as_str());
        match self.conduct.record(&peer, kind, reason, now) {
            Verdict::Disconnect => {
                tracing::warn!(peer = %peer, kind = kind.as_str(), reason, "protocol_violation");
            }
            Verdict::Ban { until } => {
                tracing::warn!(
                    peer = %peer,
                    kind = kind.as_str(),
                    reason,
                    banned_s = (until - now).as_secs(),
                    "protocol_violation_peer_banned"
                );
            }
        }
        let _ = self.swarm.disconnect_peer_id(peer);
    }

    /// A failed inbound or outbound stream: a refused frame is a violation; one cut
    /// short is, if the connection outlives it ([`TRUNCATION_GRACE`]).
    pub(crate) fn stream_failed(
        &mut self,
        peer: PeerId,
        connection: ConnectionId,
        error: &std::io::Error,
    ) {
        if let Some(refused) = FrameError::of(error) {
            self.frame_refused(peer, connection, refused, error.to_string());
        }
    }

    /// A request the codec refused ([`FrameError::refused_request`]): counted, and not
    /// answered. True if `request` was one.
    pub(crate) fn refused_request(
        &mut self,
        peer: PeerId,
        connection: ConnectionId,
        request: &[u8],
    ) -> bool {
        let Some(refused) = FrameError::refused_request(request) else {
            return false;
        };
        let reason = refused.to_string();
        self.frame_refused(peer, connection, &refused, reason);
        true
    }

    /// A frame over its limit is a violation at once; one cut short only if its connection
    /// outlives it ([`TRUNCATION_GRACE`]).
    fn frame_refused(
        &mut self,
        peer: PeerId,
        connection: ConnectionId,
        refused: &FrameError,
        reason: String,
    ) {
        match refused {
            FrameError::TooLarge { .. } => self.violation(peer, Violation::FrameTooLarge, &reason),
            FrameError::Truncated { .. } if self.truncated.len() < 1024 => {
                self.truncated
                    .push((peer, connection, reason, Instant::now()));
            }
            FrameError::Truncated { .. } => {}
        }
    }

    /// Timers of the conduct policy: truncations whose connection survived, reconnects
    /// after pairing, stale offers.
    fn conduct_tick(&mut self, now: Instant) {
        let due: Vec<(PeerId, ConnectionId, String)> = self
            .truncated
            .iter()
            .filter(|(.., at)| now - *at >= TRUNCATION_GRACE)
            .map(|(p, c, r, _)| (*p, *c, r.clone()))
            .collect();
        self.truncated
            .retain(|(.., at)| now - *at < TRUNCATION_GRACE);
        for (peer, connection, reason) in due {
            if self
                .connections
                .get(&peer)
                .is_some_and(|c| c.contains(&connection))
            {
                self.violation(peer, Violation::Truncated, &reason);
            }
        }
        let reconnect: Vec<PeerId> = self
            .reconnect_at
            .iter()
            .filter(|(_, t)| now >= **t)
            .map(|(p, _)| *p)
            .collect();
        for peer in reconnect {
            self.reconnect_at.remove(&peer);
            if !self.swarm.behaviour().meta.is_open_to(&peer) {
                tracing::info!(peer = %peer, "reconnecting_after_pairing");
                let _ = self.swarm.disconnect_peer_id(peer);
                self.last_dial = None;
            }
        }
        let stale: Vec<String> = self
            .offered_at
            .iter()
            .filter(|(_, t)| now - **t >= OFFER_TTL)
            .map(|(f, _)| f.clone())
            .collect();
        for f in stale {
            self.offered_at.remove(&f);
            self.offers.remove(&f);
        }
    }

    /// Remembers a paired device's offer of a folder, within the caps.
    fn remember_offer(&mut self, folder: &str, peer: PeerId) {
        let Some((name, _)) = self.trusted.get(&peer) else {
            return;
        };
        if self.folders.contains_key(folder) {
            return;
        }
        let from = peer.to_string();
        if self
            .config
            .declined
            .iter()
            .any(|d| d.folder == folder && d.device == from)
        {
            return;
        }
        if let Some(o) = self.offers.get(folder) {
            if o.from == peer.to_string() {
                self.offered_at.insert(folder.to_string(), Instant::now());
            }
            return;
        }
        let of_peer = self.offers.values().filter(|o| o.from == from).count();
        if of_peer >= MAX_OFFERS_PER_PEER || self.offers.len() >= MAX_OFFERS {
            tracing::debug!(folder, peer = %peer, "folder_offer_ignored_over_cap");
            return;
        }
        tracing::info!(folder, peer = %peer, "folder_offered");
        self.offers.insert(
            folder.to_string(),
            crate::admin::Offer {
                folder: folder.to_string(),
                from,
                from_name: name.clone(),
            },
        );
        self.offered_at.insert(folder.to_string(), Instant::now());
    }

    fn on_meta(&mut self, event: request_response::Event<Vec<u8>, Vec<u8>>) {
        match event {
            request_response::Event::Message {
                peer,
                message,
                connection_id,
            } => match message {
                request_response::Message::Request {
                    request, channel, ..
                } => {
                    if self.refused_request(peer, connection_id, &request) {
                        return;
                    }
                    let response = match MetaRequest::decode(&request) {
                        Err(e) => {
                            self.violation(peer, Violation::Malformed, &e.to_string());
                            MetaResponse::Denied
                        }
                        Ok(req) if !self.is_member(&req.folder, &peer) => {
                            // A paired device offering a folder we do not have: remember
                            // the offer for `cairn accept`. The answer is the same Denied.
                            self.remember_offer(&req.folder, peer);
                            MetaResponse::Denied
                        }
                        Ok(req) => {
                            let ok = req
                                .message
                                .as_ref()
                                .is_none_or(|m| self.apply_meta(&req.folder, peer, m));
                            if !ok {
                                self.violation(
                                    peer,
                                    Violation::Malformed,
                                    "a folder message that does not decode or apply",
                                );
                                MetaResponse::Denied
                            } else {
                                let f = self.folders.get_mut(&req.folder);
                                let message = f.and_then(|f| {
                                    let state =
                                        f.peers.entry(peer).or_insert_with(|| f.doc.new_peer());
                                    f.doc.generate_sync_message(state).map(|m| m.encode())
                                });
                                MetaResponse::Ok { message }
                            }
                        }
                    };
                    let bytes = response.encode();
                    Metrics::add(&self.metrics.meta_bytes_sent, bytes.len() as u64);
                    let _ = self
                        .swarm
                        .behaviour_mut()
                        .meta
                        .send_response(channel, bytes);
                }
                request_response::Message::Response {
                    request_id,
                    response,
                } => {
                    let Some((id, peer)) = self.meta_pending.remove(&request_id) else {
                        return;
                    };
                    self.meta_inflight.remove(&(id.clone(), peer));
                    match MetaResponse::decode(&response) {
                        Ok(MetaResponse::Ok { message }) => {
                            if let Some(m) = message
                                && !self.apply_meta(&id, peer, &m)
                            {
                                self.violation(
                                    peer,
                                    Violation::Malformed,
                                    "a folder message that does not decode or apply",
                                );
                                return;
                            }
                            self.sync_with(&id, peer);
                        }
                        Ok(MetaResponse::Denied) => {
                            tracing::info!(folder = %id, peer = %peer, "meta_denied_by_peer");
                        }
                        Err(e) => self.violation(peer, Violation::Malformed, &e.to_string()),
                    }
                }
            },
            request_response::Event::InboundFailure {
                peer,
                connection_id,
                error: request_response::InboundFailure::Io(e),
                ..
            } => self.stream_failed(peer, connection_id, &e),
            request_response::Event::OutboundFailure {
                request_id,
                peer,
                error,
                connection_id,
            } => {
                if let request_response::OutboundFailure::Io(e) = &error {
                    self.stream_failed(peer, connection_id, e);
                }
                if let Some((id, _)) = self.meta_pending.remove(&request_id) {
                    self.meta_inflight.remove(&(id.clone(), peer));
                    // The message may be lost: start over with this peer.
                    if let Some(f) = self.folders.get_mut(&id)
                        && let Some(s) = f.peers.get_mut(&peer)
                    {
                        s.reset();
                    }
                    if matches!(
                        error,
                        request_response::OutboundFailure::UnsupportedProtocols
                    ) {
                        // The peer does not serve us meta: it does not trust this device.
                        tracing::info!(folder = %id, peer = %peer, "meta_refused_by_peer");
                    } else {
                        tracing::debug!(peer = %peer, error = %error, "meta_request_failed");
                    }
                }
            }
            _ => {}
        }
    }

    fn on_blocks(&mut self, event: request_response::Event<Vec<u8>, Vec<u8>>) {
        match event {
            request_response::Event::Message {
                peer,
                message,
                connection_id,
            } => match message {
                request_response::Message::Request {
                    request,
                    channel,
                    request_id,
                } => {
                    if self.refused_request(peer, connection_id, &request) {
                        return;
                    }
                    let req = match BlocksRequest::decode(&request) {
                        Ok(r) => r,
                        Err(e) => {
                            self.violation(peer, Violation::Malformed, &e.to_string());
                            let _ = self
                                .swarm
                                .behaviour_mut()
                                .blocks
                                .send_response(channel, BlocksResponse::Denied.encode());
                            return;
                        }
                    };
                    if !self.is_member(req.folder(), &peer) {
                        let _ = self
                            .swarm
                            .behaviour_mut()
                            .blocks
                            .send_response(channel, BlocksResponse::Denied.encode());
                        return;
                    }
                    self.serving
                        .entry(peer)
                        .or_default()
                        .queue
                        .push_back((request_id, channel, req));
                    self.serve_next(peer);
                }
                request_response::Message::Response {
                    request_id,
                    response,
                } => {
                    if let Some(reply) = self.blocks_pending.remove(&request_id) {
                        let decoded = BlocksResponse::decode(&response).map_err(|e| e.to_string());
                        if let Err(e) = &decoded {
                            self.violation(peer, Violation::Malformed, e);
                        }
                        let _ = reply.send(decoded);
                    }
                }
            },
            request_response::Event::OutboundFailure {
                request_id,
                error,
                peer,
                connection_id,
            } => {
                if let request_response::OutboundFailure::Io(e) = &error {
                    self.stream_failed(peer, connection_id, e);
                }
                if let Some(reply) = self.blocks_pending.remove(&request_id) {
                    let _ = reply.send(Err(error.to_string()));
                }
            }
            request_response::Event::InboundFailure {
                peer,
                request_id,
                error,
                connection_id,
            } => {
                if let request_response::InboundFailure::Io(e) = &error {
                    self.stream_failed(peer, connection_id, e);
                }
                self.served(peer, request_id);
            }
            request_response::Event::ResponseSent {
                peer, request_id, ..
            } => self.served(peer, request_id),
        }
    }

    /// Starts answering the next waiting blocks requests of `peer`, within its budget: at
    /// most [`SERVE_JOBS_PER_PEER`] answers read at once, and none while more than
    /// [`SERVE_BYTES_PER_PEER`] of its answers wait to be sent. A peer that asks for more
    /// (or reads slowly) only waits longer; its requests hold nothing but a stream.
    fn serve_next(&mut self, peer: PeerId) {
        loop {
            let Some(s) = self.serving.get_mut(&peer) else {
                return;
            };
            if s.jobs >= SERVE_JOBS_PER_PEER || s.bytes >= SERVE_BYTES_PER_PEER {
                return;
            }
            let Some((request_id, channel, req)) = s.queue.pop_front() else {
                if s.jobs == 0 && s.sent.is_empty() {
                    self.serving.remove(&peer);
                }
                return;
            };
            let Some(root) = self
                .folders
                .get(req.folder())
                .map(|f| f.record.root.clone())
            else {
                let _ = self
                    .swarm
                    .behaviour_mut()
                    .blocks
                    .send_response(channel, BlocksResponse::Denied.encode());
                continue;
            };
            s.jobs += 1;
            let (index, tx) = (self.index.clone(), self.events_tx.clone());
            tokio::task::spawn_blocking(move || {
                let response = crate::serve::answer(&index, &root, &req);
                let _ = tx.send(Event::BlocksReady {
                    channel,
                    peer,
                    request_id,
                    response,
                });
            });
        }
    }

    /// An answer to `peer` was sent (or failed): its bytes leave the peer's budget.
    fn served(&mut self, peer: PeerId, request_id: InboundRequestId) {
        if let Some(s) = self.serving.get_mut(&peer)
            && let Some(n) = s.sent.remove(&request_id)
        {
            s.bytes = s.bytes.saturating_sub(n);
        }
        self.serve_next(peer);
    }

    fn on_net_command(&mut self, cmd: NetCommand) {
        match cmd {
            NetCommand::Blocks {
                peer,
                request,
                reply,
            } => {
                if !self.connected.contains(&peer) {
                    let _ = reply.send(Err(format!("{peer} is not connected")));
                    return;
                }
                let rid = self
                    .swarm
                    .behaviour_mut()
                    .blocks
                    .send_request(&peer, request.encode());
                self.blocks_pending.insert(rid, reply);
            }
            NetCommand::Violation { peer, kind, reason } => self.violation(peer, kind, &reason),
        }
    }

    fn on_event(&mut self, event: Event) {
        match event {
            Event::ScanDone { folder, result } => self.on_scan_done(&folder, result),
            Event::PullDone { folder, outcome } => self.on_pull_done(&folder, outcome),
            Event::RestoreDone { folder, changed } => self.on_restore_done(&folder, changed),
            Event::FsChanged { folder, paths } => {
                if let Some(f) = self.folders.get_mut(&folder) {
                    let root = &f.record.root;
                    let relative: Option<Vec<String>> = paths
                        .iter()
                        .map(|p| {
                            let rel = p.strip_prefix(root).ok()?.to_str()?;
                            Some(rel.trim_end_matches('/').to_string())
                        })
                        .collect();
                    match relative {
                        Some(rel) if !rel.is_empty() => f.scan.paths(rel),
                        _ => f.scan.all(),
                    }
                }
            }
            Event::WatcherFailed { folder, error } => {
                tracing::warn!(folder = %folder, error = %error, "watcher_failed_falling_back_to_rescans");
                Metrics::add(&self.metrics.watcher_fallbacks, 1);
                if let Some(f) = self.folders.get_mut(&folder) {
                    f.watcher_failed = true;
                    f.scan.all();
                }
            }
            Event::BlocksReady {
                channel,
                peer,
                request_id,
                response,
            } => {
                let (chunks, bytes) = match &response {
                    BlocksResponse::Chunks(items) => items
                        .iter()
                        .filter_map(|(_, d)| d.as_ref())
                        .fold((0, 0), |(n, b), d| (n + 1, b + d.len() as u64)),
                    BlocksResponse::Delta(Some(d)) => (1, d.len() as u64),
                    _ => (0, 0),
                };
                if chunks > 0 && self.trusted.contains_key(&peer) {
                    self.metrics.peer(&peer.to_string(), |c| {
                        c.chunks_sent += chunks;
                        c.bytes_sent += bytes;
                    });
                }
                let encoded = response.encode();
                let size = encoded.len() as u64;
                let sent = self
                    .swarm
                    .behaviour_mut()
                    .blocks
                    .send_response(channel, encoded)
                    .is_ok();
                if let Some(s) = self.serving.get_mut(&peer) {
                    s.jobs = s.jobs.saturating_sub(1);
                    if sent {
                        s.bytes += size;
                        s.sent.insert(request_id, size);
                    }
                }
                self.serve_next(peer);
            }
            Event::Control(req) => self.on_control(req),
        }
    }

    fn on_control(&mut self, req: ControlRequest) {
        match req {
            ControlRequest::Status(reply) => {
                let _ = reply.send(self.status());
            }
            ControlRequest::Metrics(reply) => {
                self.metrics.peers_connected.store(
                    self.connected.len() as u64,
                    std::sync::atomic::Ordering::Relaxed,
                );
                self.metrics.remote_manifests.store(
                    self.index.remote_manifest_count().unwrap_or(0),
                    std::sync::atomic::Ordering::Relaxed,
                );
                let _ = reply.send(self.metrics.render());
            }
            ControlRequest::Rescan { folder, reply } => {
                let result = match folder {
                    Some(id) => match self.folders.get_mut(&id) {
                        Some(f) => {
                            f.scan.all();
                            Ok(())
                        }
                        None => Err(crate::admin::ApiError::NotFound(format!(
                            "no folder {id}; `cairn folders` lists them"
                        ))),
                    },
                    None => {
                        self.folders.values_mut().for_each(|f| f.scan.all());
                        Ok(())
                    }
                };
                let _ = reply.send(result);
            }
            ControlRequest::Shutdown => self.shutdown = true,
            ControlRequest::Admin(req) => self.on_admin(req),
            ControlRequest::Pair(ctl) => self.on_pair_ctl(ctl),
        }
    }

    fn status(&self) -> Status {
        let folders = self
            .folders
            .values()
            .map(|f| {
                let totals = self.index.totals(&f.config.id).unwrap_or_default();
                let state = if f.config.paused {
                    "paused"
                } else {
                    match f.busy {
                        Busy::Scanning => "scanning",
                        Busy::Pulling => "syncing",
                        Busy::Restoring => "restoring",
                        Busy::Idle if f.no_space => "no_space",
                        Busy::Idle if f.last_error.is_some() => "error",
                        Busy::Idle if !f.waiting.is_empty() => "waiting",
                        Busy::Idle => "idle",
                    }
                };
                FolderStatus {
                    id: f.config.id.clone(),
                    path: f.config.path.clone(),
                    kind: f.config.kind,
                    state: state.to_string(),
                    in_sync: f.in_sync && f.busy == Busy::Idle && !f.needs_pull && !f.scan.is_due(),
                    files: totals.files,
                    bytes: totals.bytes,
                    pull_queue: f
                        .progress
                        .as_ref()
                        .map_or(0, |p| p.actions_left.load(Ordering::Relaxed)),
                    pull_bytes_total: f
                        .progress
                        .as_ref()
                        .map_or(0, |p| p.total_bytes.load(Ordering::Relaxed)),
                    pull_bytes_done: f
                        .progress
                        .as_ref()
                        .map_or(0, |p| p.done_bytes.load(Ordering::Relaxed)),
                    rate_bytes_per_s: if f.progress.is_some() {
                        f.rate.2 as u64
                    } else {
                        0
                    },
                    last_error: f.last_error.clone(),
                    watcher: if f.watcher_failed { "fallback" } else { "ok" }.into(),
                    waiting: f.waiting.clone(),
                    refused: f.refused.values().map(Into::into).collect(),
                }
            })
            .collect();
        let mut peers: Vec<PeerStatus> = self
            .trusted
            .iter()
            .map(|(id, (name, _))| {
                let record = self.conduct.get(id);
                let now = Instant::now();
                PeerStatus {
                    id: id.to_string(),
                    name: name.clone(),
                    connected: self.connected.contains(id),
                    violations: self.metrics.violations_of(&id.to_string()),
                    last_violation: record.map(|r| format!("{}: {}", r.last.0.as_str(), r.last.1)),
                    banned_for_s: record
                        .and_then(|r| r.banned_until)
                        .filter(|t| *t > now)
                        .map(|t| (t - now).as_secs().max(1)),
                }
            })
            .collect();
        peers.sort_by(|a, b| a.id.cmp(&b.id));
        Status {
            device_id: self.swarm.local_peer_id().to_string(),
            device_name: self.config.device_name(),
            offers: self.offers.values().cloned().collect(),
            uptime_s: self.started.elapsed().as_secs(),
            listen: self.listen.iter().map(|a| a.to_string()).collect(),
            peers,
            folders,
            recent: self.recent.iter().cloned().collect(),
        }
    }

    fn on_swarm(&mut self, event: SwarmEvent<BehaviourEvent>) {
        match &event {
            SwarmEvent::ConnectionEstablished {
                peer_id,
                connection_id,
                ..
            } => {
                if self.conduct.banned(peer_id, Instant::now()) {
                    tracing::debug!(peer = %peer_id, "banned_peer_refused");
                    let _ = self.swarm.close_connection(*connection_id);
                    return;
                }
                self.connections
                    .entry(*peer_id)
                    .or_default()
                    .insert(*connection_id);
                self.join_connected(*peer_id);
            }
            SwarmEvent::ConnectionClosed {
                peer_id,
                connection_id,
                num_established,
                ..
            } => {
                if let Some(c) = self.connections.get_mut(peer_id) {
                    c.remove(connection_id);
                    if c.is_empty() {
                        self.connections.remove(peer_id);
                    }
                }
                if *num_established == 0 {
                    self.peer_listen.remove(peer_id);
                    self.serving.remove(peer_id);
                }
            }
            _ => {}
        }
        match event {
            SwarmEvent::NewListenAddr { address, .. } => {
                tracing::info!(address = %address, "listening");
                self.listen.push(address);
            }
            SwarmEvent::ConnectionEstablished { peer_id, .. }
                if self.trusted.contains_key(&peer_id)
                    && !self.connected.contains(&peer_id)
                    && self.swarm.behaviour().meta.is_open_to(&peer_id) =>
            {
                tracing::info!(peer = %peer_id, "peer_connected");
                self.connected.insert(peer_id);
                let ids: Vec<String> = self.folders.keys().cloned().collect();
                for id in ids {
                    if self.is_member(&id, &peer_id) {
                        if let Some(f) = self.folders.get_mut(&id) {
                            let fresh = f.doc.new_peer();
                            f.peers.insert(peer_id, fresh);
                            f.needs_pull = true;
                        }
                        self.sync_with(&id, peer_id);
                    }
                }
            }
            SwarmEvent::ConnectionClosed { peer_id, .. }
                if !self.swarm.behaviour().meta.is_open_to(&peer_id) =>
            {
                if self.connected.remove(&peer_id) {
                    tracing::info!(peer = %peer_id, "peer_disconnected");
                }
                self.meta_inflight.retain(|(_, p)| *p != peer_id);
            }
            SwarmEvent::Behaviour(BehaviourEvent::Meta(e)) => self.on_meta(e),
            SwarmEvent::Behaviour(BehaviourEvent::Blocks(e)) => self.on_blocks(e),
            SwarmEvent::Behaviour(BehaviourEvent::Pair(e)) => self.on_pair(e),
            SwarmEvent::Behaviour(BehaviourEvent::Kad(
                libp2p::kad::Event::OutboundQueryProgressed {
                    result: libp2p::kad::QueryResult::GetProviders(result),
                    step,
                    ..
                },
            )) => {
                if let Ok(libp2p::kad::GetProvidersOk::FoundProviders { providers, .. }) = result {
                    for p in providers {
                        self.join_candidate(p);
                    }
                }
                if step.last {
                    self.join_lookup_done();
                }
            }
            SwarmEvent::Behaviour(BehaviourEvent::Identify(identify::Event::Received {
                peer_id,
                info,
                ..
            })) => {
                // At most a few addresses of a peer are believed (a stranger could list
                // thousands), and kept only while it is connected.
                let addrs: Vec<Multiaddr> = info.listen_addrs.into_iter().take(8).collect();
                for a in &addrs {
                    self.swarm
                        .behaviour_mut()
                        .kad
                        .add_address(&peer_id, a.clone());
                }
                if self.connections.contains_key(&peer_id) {
                    self.peer_listen.insert(peer_id, addrs);
                }
            }
            SwarmEvent::Behaviour(BehaviourEvent::Mdns(mdns::Event::Discovered(found))) => {
                let mut by_peer: HashMap<PeerId, Vec<Multiaddr>> = HashMap::new();
                for (peer, addr) in found {
                    self.swarm
                        .behaviour_mut()
                        .kad
                        .add_address(&peer, addr.clone());
                    by_peer.entry(peer).or_default().push(addr);
                }
                // A paired device seen on the LAN is dialled at once, with every address it
                // announced in one dial: dials of one address each are dropped while the
                // first (perhaps a loopback address of the other host) is pending. Kademlia
                // and mDNS keep the addresses for the periodic redial.
                for (peer, addrs) in by_peer {
                    if self.trusted.contains_key(&peer)
                        && !self.connected.contains(&peer)
                        && !self.conduct.banned(&peer, Instant::now())
                    {
                        let _ = self
                            .swarm
                            .dial(DialOpts::peer_id(peer).addresses(addrs).build());
                    }
                }
            }
            SwarmEvent::Behaviour(BehaviourEvent::Kad(
                libp2p::kad::Event::OutboundQueryProgressed {
                    result: libp2p::kad::QueryResult::GetClosestPeers(Ok(ok)),
                    ..
                },
            )) => {
                for info in ok.peers {
                    if self.trusted.contains_key(&info.peer_id)
                        && !self.connected.contains(&info.peer_id)
                        && !info.addrs.is_empty()
                    {
                        let _ = self.swarm.dial(
                            DialOpts::peer_id(info.peer_id)
                                .addresses(info.addrs)
                                .build(),
                        );
                    }
                }
            }
            _ => {}
        }
    }
}

/// Plans a pull of `tree` against the index (on the puller's thread): None when there is
/// nothing to do (abandoned pulls are then forgotten).
fn plan_pull(
    puller: &Puller,
    tree: &cairn_core::folder::Tree,
    refused: &HashMap<String, ContentId>,
) -> Result<Option<cairn_core::planner::Plan>, PullError> {
    let local: BTreeMap<_, _> = puller.index.entries(&puller.folder)?.into_iter().collect();
    let mut plan = plan(tree, &local, &IndexStore(&puller.index));
    drop(local);
    plan.actions.retain(|a| match a {
        cairn_core::planner::Action::WriteFile { path, content, .. } => {
            refused.get(path) != Some(content)
        }
        _ => true,
    });
    for (path, why) in &plan.rejected {
        tracing::warn!(folder = %puller.folder, path = %path, error = %why, "path_rejected");
    }
    if plan.is_empty() {
        crate::puller::forget_abandoned_pulls(&puller.index, &puller.folder, &puller.root, &plan);
        return Ok(None);
    }
    Ok(Some(plan))
}

pub(crate) fn load_folder(
    index: &Index,
    fc: &FolderConfig,
    device: DeviceId,
    events: &mpsc::UnboundedSender<Event>,
) -> Result<Folder, StartError> {
    let err = |why: String| StartError::Folder {
        id: fc.id.clone(),
        why,
    };
    std::fs::create_dir_all(&fc.path)
        .map_err(|e| err(format!("cannot create {}: {e}", fc.path.display())))?;
    let root = fc.path.canonicalize().map_err(|e| err(e.to_string()))?;
    let record = match index.folders()?.into_iter().find(|f| f.id == fc.id) {
        Some(r) if r.root == root => r,
        _ => {
            let r = FolderRecord {
                id: fc.id.clone(),
                root: root.clone(),
                chunker: cairn_core::ChunkerParams::V1_DEFAULT.to_string(),
            };
            index.put_folder(&r)?;
            r
        }
    };
    let doc = match index.folder_shards(&fc.id)? {
        Some(saved) => FolderDoc::load(device, &saved).map_err(|e| err(e.to_string()))?,
        None => {
            let mut doc = FolderDoc::new(device, DEFAULT_SHARDS).map_err(|e| err(e.to_string()))?;
            let saved: Vec<(u16, Vec<u8>)> = (0..DEFAULT_SHARDS as usize)
                .map(|s| (s as u16, doc.save_shard(s)))
                .collect();
            index.put_folder_shards(&fc.id, &saved)?;
            doc
        }
    };
    let (watcher, watcher_failed) = match Watcher::start(&root, fc.id.clone(), events.clone()) {
        Ok(w) => (Some(w), false),
        Err(e) => {
            tracing::warn!(folder = %fc.id, error = %e, "watcher_unavailable_falling_back_to_rescans");
            (None, true)
        }
    };
    Ok(Folder {
        config: fc.clone(),
        record,
        doc,
        peers: HashMap::new(),
        busy: Busy::Idle,
        restores: Default::default(),
        waiting: Vec::new(),
        waiting_only: false,
        refused: BTreeMap::new(),
        no_space: false,
        scan: ScanNeed::All,
        needs_pull: true,
        in_sync: false,
        last_scan: Instant::now(),
        scan_started: Instant::now(),
        retry_pull_at: None,
        last_error: None,
        _watcher: watcher,
        watcher_failed,
        progress: None,
        rate: (Instant::now(), 0, 0.0),
        last_scan_took: Duration::ZERO,
        scan_done_at: None,
    })
}
