//! The daemon's driver: one task owns the swarm and the [`Node`] (every decision, sans
//! I/O, in `cairn_core::node`), feeds it what happens (swarm events, watcher events, job
//! results, control requests, the clock) and carries out the actions it polls: scans and
//! pulls on worker threads, meta requests on the swarm, writes of folder documents to the
//! index, dials and disconnects.
//!
//! Submodules by role: `swarm` (network events, serving blocks, frame violations), `jobs`
//! (scans and pulls off the loop, folder loading), `status` (what `cairn status` shows).

mod jobs;
mod status;
mod swarm;

pub use status::{FolderStatus, PeerStatus, RecentChange, RefusedPath, Status, WaitingPath};

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant, SystemTime};

use cairn_core::folder::{DeviceId, TreeOptions};
use cairn_core::node::{Action, Node};
use cairn_core::wire::BlocksResponse;
use futures::StreamExt;
use libp2p::request_response::{InboundRequestId, OutboundRequestId, ResponseChannel};
use libp2p::swarm::ConnectionId;
use libp2p::swarm::dial_opts::DialOpts;
use libp2p::{Multiaddr, PeerId, Swarm};
use tokio::sync::{mpsc, oneshot};

use crate::config::{Config, FolderConfig, Home};
use crate::index::{FolderRecord, Index};
use crate::metrics::Metrics;
use crate::net::Behaviour;
use crate::puller::{NetCommand, PullProgress};
use crate::watcher::Watcher;

pub(crate) use jobs::{holds, load_folder};
pub(crate) use swarm::Serving;

/// How often the loop looks at timers (rescans, redials, retries).
const TICK: Duration = Duration::from_millis(500);
/// Manifests learnt from peers removed per tick once every folder is in sync: a few
/// milliseconds of the loop each, 10,000 per second.
const PRUNE_BATCH: usize = 5_000;
/// The status is published for `/v1/status` at least this often while the loop turns
/// (and after every control request that may change it).
const STATUS_EVERY: Duration = Duration::from_millis(100);
/// A turn of the loop this long is logged (`slow_turn`, with what it handled).
const SLOW_TURN: Duration = Duration::from_millis(20);
/// After pairing on an open connection, reconnect this soon: the new connection is the
/// first on which the peer is served meta and blocks (`net::Gated`).
pub(crate) const RECONNECT_AFTER_PAIRING: Duration = Duration::from_secs(1);

/// Something that happened off the loop.
pub enum Event {
    ScanDone {
        folder: String,
        result: Result<cairn_core::node::ScanDone, String>,
        read_files: u64,
        read_bytes: u64,
    },
    PullDone {
        folder: String,
        outcome: cairn_core::node::PullDone,
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
        response: crate::serve::Encoded,
    },
    Control(ControlRequest),
    /// Kept versions and the version store's size, counted off the loop.
    VersionsCounted {
        kept: usize,
        bytes: u64,
    },
    /// Changes the user asked for (a restore from the group, a rewind), checked off the
    /// loop: recorded as local changes, then `done` is told whether they were.
    Requested {
        folder: String,
        changes: crate::group::Requested,
        done: Box<dyn FnOnce(bool) + Send>,
    },
}

impl Event {
    /// What the event is, for `slow_turn` logs.
    fn kind(&self) -> &'static str {
        match self {
            Event::ScanDone { .. } => "scan_done",
            Event::PullDone { .. } => "pull_done",
            Event::FsChanged { .. } => "fs_changed",
            Event::RestoreDone { .. } => "restore_done",
            Event::WatcherFailed { .. } => "watcher_failed",
            Event::BlocksReady { .. } => "blocks_ready",
            Event::Control(ControlRequest::Status(_)) => "control_status",
            Event::Control(_) => "control",
            Event::VersionsCounted { .. } => "versions_counted",
            Event::Requested { .. } => "requested",
        }
    }
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

/// The last published status: the control API answers `/v1/status` from it without
/// going through the loop, so a long turn (recording 100,000 scanned changes, deriving a
/// large tree) never holds up the answer; it is at most [`STATUS_EVERY`] older than the
/// last turn.
pub type StatusFeed = tokio::sync::watch::Receiver<Option<Arc<Status>>>;

/// What only the daemon keeps of a folder: where it is, its watcher, the running pull's
/// progress, queued restores. Everything decided about it is in the [`Node`].
pub(crate) struct Local {
    pub(crate) config: FolderConfig,
    pub(crate) record: FolderRecord,
    pub(crate) _watcher: Option<Watcher>,
    pub(crate) progress: Option<Arc<PullProgress>>,
    /// (when, bytes done) at the last tick, and the smoothed rate in bytes/s.
    pub(crate) rate: (Instant, u64, f64),
    /// `cairn restore` requests waiting for the folder to be idle.
    pub(crate) restores: VecDeque<crate::history::PendingRestore>,
}

/// The daemon.
pub struct Engine {
    pub(crate) swarm: Swarm<Behaviour>,
    pub(crate) index: Arc<Index>,
    /// Bytes of kept versions.
    pub(crate) versions: Arc<crate::versions::VersionStore>,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) node: Node<PeerId>,
    pub(crate) local: BTreeMap<String, Local>,
    /// Remembered addresses of trusted peers.
    pub(crate) addresses: HashMap<PeerId, Vec<Multiaddr>>,
    pub(crate) meta_pending: HashMap<OutboundRequestId, (String, PeerId)>,
    pub(crate) blocks_pending:
        HashMap<OutboundRequestId, oneshot::Sender<Result<BlocksResponse, String>>>,
    pub(crate) net_tx: mpsc::UnboundedSender<NetCommand>,
    pub(crate) net_rx: mpsc::UnboundedReceiver<NetCommand>,
    pub(crate) events_tx: mpsc::UnboundedSender<Event>,
    pub(crate) events_rx: mpsc::UnboundedReceiver<Event>,
    pub(crate) started: (Instant, SystemTime),
    pub(crate) listen: Vec<Multiaddr>,
    pub(crate) shutdown: bool,
    pub(crate) config: Config,
    pub(crate) config_path: PathBuf,
    pub(crate) device: DeviceId,
    pub(crate) peer_listen: HashMap<PeerId, Vec<Multiaddr>>,
    pub(crate) invitation: Option<crate::pair::Invitation>,
    pub(crate) join: Option<crate::pair::Join>,
    pub(crate) pair_pending: HashMap<OutboundRequestId, PeerId>,
    pub(crate) reconnect_at: HashMap<PeerId, Instant>,
    pub(crate) serving: HashMap<PeerId, Serving>,
    /// Streams that ended inside a frame: (peer, connection, reason, when).
    pub(crate) truncated: Vec<(PeerId, ConnectionId, String, Instant)>,
    /// Connections open now, by peer (trusted or not).
    pub(crate) connections: HashMap<PeerId, HashSet<ConnectionId>>,
    status_tx: tokio::sync::watch::Sender<Option<Arc<Status>>>,
    status_at: Option<Instant>,
    /// A turn changed something since the last published status.
    status_dirty: bool,
    /// Manifests learnt from peers are being pruned, a batch per tick.
    prune_due: bool,
    /// Rendezvous on the DHT with paired devices.
    pub(crate) rendezvous: crate::rendezvous::Rendezvous,
    /// What AutoNAT last said of this device ("public", "behind NAT", "unknown").
    pub(crate) reachability: &'static str,
    /// Open connections that go through a relay.
    pub(crate) relayed: HashSet<ConnectionId>,
    /// Why the last dial of a peer was made (taken when its connection opens).
    pub(crate) dial_reason: HashMap<PeerId, &'static str>,
    /// How the connection to each connected peer came about.
    pub(crate) found_by: HashMap<PeerId, &'static str>,
    /// Connected DHT servers in the routing table (counted when the status is made).
    pub(crate) dht_peers: usize,
    pub(crate) private_only: bool,
    /// Relay reservations and the group this device relays for.
    pub(crate) relays: crate::relay::Relays,
    /// Kept versions (all folders) and the version store's bytes on disk, as last counted.
    pub(crate) kept_versions: (usize, u64),
    /// When the versions the folders' rules no longer keep are dropped next.
    pub(crate) next_version_prune: Instant,
    /// A pull or restore may have kept versions since the last count (recounted at
    /// most every [`crate::history::RECOUNT_EVERY`]).
    pub(crate) recount_versions: bool,
    pub(crate) last_version_count: Instant,
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
    #[error(transparent)]
    Versions(#[from] crate::versions::VersionError),
}

/// Whether another socket holds the fixed port of `addr`: a plain bind is tried first,
/// because libp2p listens with SO_REUSEPORT, so a second daemon of the same user would
/// otherwise share the port with the first (the kernel splitting connections between them).
fn port_taken(addr: &Multiaddr) -> Option<std::io::Error> {
    use libp2p::multiaddr::Protocol;
    let mut parts = addr.iter();
    let ip: std::net::IpAddr = match parts.next()? {
        Protocol::Ip4(a) => a.into(),
        Protocol::Ip6(a) => a.into(),
        _ => return None,
    };
    let probe = match parts.next()? {
        Protocol::Tcp(port) if port != 0 => std::net::TcpListener::bind((ip, port)).err(),
        Protocol::Udp(port) if port != 0 => std::net::UdpSocket::bind((ip, port)).err(),
        _ => None,
    };
    probe.filter(|e| e.kind() == std::io::ErrorKind::AddrInUse)
}

/// How long the daemon waits at start for its listeners' addresses before it dials.
const LISTEN_WAIT: Duration = Duration::from_secs(1);

/// Whether every configured TCP listener on a wildcard address has reported an address of
/// its family other than loopback (libp2p-tcp then dials from its port).
fn tcp_listeners_known(configured: &[String], reported: &[Multiaddr]) -> bool {
    use libp2p::multiaddr::Protocol;
    let family = |ma: &Multiaddr| -> Option<(bool, bool, bool)> {
        let mut it = ma.iter();
        let (v4, unspecified, loopback) = match it.next()? {
            Protocol::Ip4(a) => (true, a.is_unspecified(), a.is_loopback()),
            Protocol::Ip6(a) => (false, a.is_unspecified(), a.is_loopback()),
            _ => return None,
        };
        matches!(it.next()?, Protocol::Tcp(_)).then_some((v4, unspecified, loopback))
    };
    configured
        .iter()
        .filter_map(|a| family(&a.parse().ok()?))
        .filter(|(_, unspecified, _)| *unspecified)
        .all(|(v4, _, _)| {
            reported
                .iter()
                .filter_map(family)
                .any(|(rv4, _, loopback)| rv4 == v4 && !loopback)
        })
}

/// Listens on `addr`; a fixed port that is taken (another daemon, another program) falls
/// back to a port the system picks, so the device still starts, and says so.
fn listen(swarm: &mut libp2p::Swarm<crate::net::Behaviour>, addr: Multiaddr) -> Result<(), String> {
    use libp2p::multiaddr::Protocol;
    let tried = match port_taken(&addr) {
        Some(e) => Err(e.to_string()),
        None => swarm.listen_on(addr.clone()).map_err(|e| e.to_string()),
    };
    match tried {
        Ok(_) => Ok(()),
        Err(e) => {
            let fixed = addr
                .iter()
                .any(|p| matches!(p, Protocol::Tcp(n) | Protocol::Udp(n) if n != 0));
            if !fixed {
                return Err(e);
            }
            let any: Multiaddr = addr
                .iter()
                .map(|p| match p {
                    Protocol::Tcp(_) => Protocol::Tcp(0),
                    Protocol::Udp(_) => Protocol::Udp(0),
                    p => p,
                })
                .collect();
            tracing::warn!(address = %addr, error = %e, fallback = %any, "listen_port_taken");
            swarm.listen_on(any).map(|_| ()).map_err(|e| e.to_string())
        }
    }
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
        // Opened and migrated before anything else runs (blocking this worker: the daemon
        // has not started yet).
        let (versions, kept_versions) = tokio::task::block_in_place(|| {
            let store = crate::versions::VersionStore::open(
                &home.versions(),
                &home.history(),
                tokio::runtime::Handle::current(),
            )?;
            crate::versions::migrate(&index)?;
            crate::versions::drop_unlisted(&index, &store)?;
            let kept = index.all_history().map_or(0, |h| h.len());
            let bytes = store.disk_bytes();
            Ok::<_, crate::versions::VersionError>((Arc::new(store), (kept, bytes)))
        })?;
        crate::versions::spawn_importer(index.clone(), versions.clone())
            .map_err(crate::versions::VersionError::Io)?;
        let private_only = crate::private_net::switch_on();
        if private_only {
            tracing::info!("private_network_only: dialling loopback and private addresses only");
        }
        let relays = crate::relay::Relays::new(
            &config.network.relays,
            config
                .peers
                .iter()
                .filter_map(|p| p.id.parse::<PeerId>().ok()),
        );
        let net = crate::net::NetOptions {
            mdns: config.network.mdns,
            private_only,
            relay: if config.network.relay_server {
                crate::net::RelayServe::Group(relays.group.clone())
            } else if config.network.public_relay {
                crate::net::RelayServe::Public
            } else {
                crate::net::RelayServe::Off
            },
        };
        let mut swarm = crate::net::build_swarm(key, &net)?;
        for addr in &config.network.listen {
            let ma: Multiaddr = addr.parse().map_err(|e| StartError::Listen {
                addr: addr.clone(),
                why: format!("{e}"),
            })?;
            listen(&mut swarm, ma).map_err(|why| StartError::Listen {
                addr: addr.clone(),
                why,
            })?;
        }
        for b in config.network.bootstrap_peers() {
            if let Ok(ma) = b.parse::<Multiaddr>()
                && let Some(libp2p::multiaddr::Protocol::P2p(peer)) = ma.iter().last()
            {
                swarm.behaviour_mut().kad.add_address(&peer, ma.clone());
            }
        }
        // Addresses the device says it has (a forwarded port, an address it cannot see).
        for a in &config.network.announce {
            match a.parse::<Multiaddr>() {
                Ok(ma) => swarm.add_external_address(ma),
                Err(e) => tracing::warn!(address = %a, error = %e, "announce_address_invalid"),
            }
        }
        let mut node = Node::new(device, config.device_name(), TreeOptions::default());
        // Large batches of document changes (a directory rename, a big sync message) are
        // recorded and applied shard by shard on every core.
        node.set_workers(std::thread::available_parallelism().map_or(1, |n| n.get()));
        // Tests make passes over small folders with a small window.
        if let Some(w) = std::env::var("CAIRN_PULL_WINDOW")
            .ok()
            .and_then(|v| v.parse().ok())
        {
            node.set_pull_window(w);
        }
        let mut addresses = HashMap::new();
        let mut rendezvous = crate::rendezvous::Rendezvous::default();
        for p in &config.peers {
            if let Ok(id) = p.id.parse::<PeerId>() {
                if let Some(secret) = p
                    .rendezvous
                    .as_deref()
                    .and_then(cairn_core::rendezvous::RendezvousSecret::from_hex)
                {
                    rendezvous.add_secret(id, secret);
                }
                // Remembered addresses are dialled as they are; they do not go into the
                // DHT's routing table, which a DHT server hands out to anyone.
                let addrs: Vec<Multiaddr> =
                    p.addresses.iter().filter_map(|a| a.parse().ok()).collect();
                swarm.behaviour_mut().meta.allow(id);
                swarm.behaviour_mut().blocks.allow(id);
                node.add_peer(id, p.name.clone(), DeviceId::from_identity(&id.to_bytes()));
                addresses.insert(id, addrs);
            }
        }
        for d in &config.declined {
            if let Ok(peer) = d.device.parse::<PeerId>() {
                node.decline(&d.folder, peer);
            }
        }
        let (net_tx, net_rx) = mpsc::unbounded_channel();
        let (events_tx, events_rx) = mpsc::unbounded_channel();
        let now = Instant::now();
        let mut local = BTreeMap::new();
        for fc in &config.folders {
            let (l, spec, doc) = load_folder(&index, fc, device, &events_tx)?;
            node.add_folder(now, spec, doc);
            node.restore_requested(now, &fc.id, index.requested(&fc.id)?);
            local.insert(fc.id.clone(), l);
        }
        tracing::info!(peer_id = %local_id, device = %device.short(), folders = local.len(), "daemon_started");
        let mut engine = Engine {
            swarm,
            index,
            versions,
            metrics: Arc::new(Metrics::default()),
            node,
            local,
            addresses,
            meta_pending: HashMap::new(),
            blocks_pending: HashMap::new(),
            net_tx,
            net_rx,
            events_tx,
            events_rx,
            started: (now, SystemTime::now()),
            listen: Vec::new(),
            shutdown: false,
            config: config.clone(),
            config_path,
            device,
            peer_listen: HashMap::new(),
            invitation: None,
            join: None,
            pair_pending: HashMap::new(),
            reconnect_at: HashMap::new(),
            serving: HashMap::new(),
            truncated: Vec::new(),
            connections: HashMap::new(),
            status_tx: tokio::sync::watch::channel(None).0,
            status_at: None,
            status_dirty: true,
            prune_due: false,
            rendezvous,
            reachability: "unknown",
            relayed: HashSet::new(),
            dial_reason: HashMap::new(),
            found_by: HashMap::new(),
            dht_peers: 0,
            private_only,
            relays,
            kept_versions,
            next_version_prune: now + crate::history::FIRST_PRUNE_AFTER,
            recount_versions: false,
            last_version_count: now,
        };
        engine.set_dht_mode();
        Ok(engine)
    }

    /// Whether others can reach this device without a relay: AutoNAT says public, or the
    /// user announced an address (one it says others can reach).
    pub(crate) fn reachable_from_outside(&self) -> bool {
        self.reachability == "public" || !self.config.network.announce.is_empty()
    }

    /// Serves the DHT when told to (`dht_server`), else only where others can reach this
    /// device: kad's own rule would serve on a relayed address too, and put a device
    /// behind NAT in strangers' routing tables.
    pub(crate) fn set_dht_mode(&mut self) {
        let server = self
            .config
            .network
            .dht_server
            .unwrap_or_else(|| self.reachable_from_outside());
        self.swarm.behaviour_mut().kad.set_mode(Some(if server {
            libp2p::kad::Mode::Server
        } else {
            libp2p::kad::Mode::Client
        }));
    }

    /// The status as published after the loop's turns (for the control API).
    pub fn status_feed(&self) -> StatusFeed {
        self.status_tx.subscribe()
    }

    /// Connected DHT servers in the routing table, for the status (the table also holds
    /// peers only heard of, such as the bootstrap list).
    fn count_dht_peers(&mut self) {
        self.dht_peers = self
            .swarm
            .behaviour_mut()
            .kad
            .kbuckets()
            .map(|b| {
                b.iter()
                    .filter(|e| e.status == libp2p::kad::NodeStatus::Connected)
                    .count()
            })
            .sum();
    }

    /// Publishes the status now.
    fn publish_status(&mut self) {
        self.count_dht_peers();
        let status = Arc::new(self.status());
        self.status_tx.send_replace(Some(status));
        self.status_at = Some(Instant::now());
        self.status_dirty = false;
    }

    /// A sender for events from outside the loop (the control API).
    pub fn events(&self) -> mpsc::UnboundedSender<Event> {
        self.events_tx.clone()
    }

    /// Runs until shut down.
    pub async fn run(mut self) {
        self.await_listen_addresses().await;
        // Into the DHT at once (the routing table fills from the bootstrap peers).
        let _ = self.swarm.behaviour_mut().kad.bootstrap();
        let mut tick = tokio::time::interval(TICK);
        let mut publish = tokio::time::interval(STATUS_EVERY);
        publish.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        self.act();
        while !self.shutdown {
            tokio::select! {
                event = self.swarm.select_next_some() => {
                    let t = Instant::now();
                    let what = swarm::kind(&event);
                    self.on_swarm(event);
                    self.turn_took(t, what);
                }
                Some(event) = self.events_rx.recv() => {
                    let t = Instant::now();
                    let what = event.kind();
                    // What a control request changed (a decline, a pause, ...) shows in
                    // the very next status.
                    let control = matches!(&event, Event::Control(r) if !matches!(r, ControlRequest::Status(_) | ControlRequest::Metrics(_)));
                    self.on_event(event);
                    if control {
                        self.status_at = None;
                    }
                    self.turn_took(t, what);
                }
                Some(cmd) = self.net_rx.recv() => {
                    let t = Instant::now();
                    self.on_net_command(cmd);
                    self.turn_took(t, "net_command");
                }
                _ = tick.tick() => {
                    let t = Instant::now();
                    self.on_tick();
                    self.turn_took(t, "tick");
                }
                _ = publish.tick(), if self.status_dirty => self.publish_status(),
            }
        }
        // The version store's database is committed and unlocked before the process ends.
        let versions = self.versions.clone();
        tokio::task::block_in_place(|| versions.shutdown());
        tracing::info!("daemon_stopped");
    }

    /// Holds the first dials until each TCP listener on a wildcard address (`0.0.0.0`, `::`)
    /// has reported an address other than loopback, for at most [`LISTEN_WAIT`].
    ///
    /// libp2p-tcp dials from the listening port (so that a NAT maps both to one public
    /// port) only once the listener has reported its addresses, which for a wildcard comes
    /// from watching the interfaces, a little after the daemon starts. Connections dialled
    /// before that leave from ephemeral ports: the DHT nodes and relays then observe, and
    /// hole punching tries, public ports nothing listens at (after a restart behind NAT,
    /// every round of DCUtR failed on them).
    async fn await_listen_addresses(&mut self) {
        let deadline = tokio::time::sleep(LISTEN_WAIT);
        tokio::pin!(deadline);
        while !tcp_listeners_known(&self.config.network.listen, &self.listen) {
            tokio::select! {
                event = self.swarm.select_next_some() => self.on_swarm(event),
                _ = &mut deadline => {
                    tracing::info!(listening = ?self.listen, "listen_addresses_incomplete");
                    break;
                }
            }
        }
    }

    /// Carries out what the turn that started at `started` made due, and records how long
    /// the whole turn kept the loop (`cairn_loop_stall_seconds`).
    fn turn_took(&mut self, started: Instant, what: &'static str) {
        let handled = started.elapsed();
        self.act();
        let acted = started.elapsed() - handled;
        if self.status_at.is_none_or(|t| t.elapsed() >= STATUS_EVERY) {
            self.publish_status();
        } else {
            self.status_dirty = true;
        }
        let took = started.elapsed();
        self.metrics.loop_stall.observe(took);
        if took >= SLOW_TURN {
            // How long the event took, then the node's actions (persisting, sending).
            tracing::info!(
                what,
                ms = took.as_millis() as u64,
                event_ms = handled.as_millis() as u64,
                actions_ms = acted.as_millis() as u64,
                "slow_turn"
            );
        }
    }

    /// Carries out the node's actions, in order.
    pub(crate) fn act(&mut self) {
        while let Some(action) = self.node.poll_action() {
            match action {
                Action::Scan { folder, paths } => self.start_scan(&folder, paths),
                Action::Pull {
                    folder,
                    tree,
                    scope,
                    window,
                    refused,
                    peers,
                } => self.start_pull(&folder, tree, scope, window, refused, peers),
                Action::Restore { folder } => self.start_restore(&folder),
                Action::SendMeta {
                    peer,
                    folder,
                    request,
                } => {
                    Metrics::add(&self.metrics.meta_bytes_sent, request.len() as u64);
                    let rid = self.swarm.behaviour_mut().meta.send_request(&peer, request);
                    self.meta_pending.insert(rid, (folder, peer));
                }
                Action::Persist {
                    folder,
                    shards,
                    recorded,
                } => {
                    if let Err(e) = self
                        .index
                        .put_folder_shards_recording(&folder, &shards, &recorded)
                    {
                        tracing::error!(folder, error = %e, "persist_failed");
                    } else if !recorded.is_empty() {
                        tracing::info!(folder, changes = recorded.len(), "local_changes_recorded");
                    }
                }
                Action::SaveRequested { folder, requested } => {
                    if let Err(e) = self.index.set_requested(&folder, &requested) {
                        tracing::error!(folder, error = %e, "requested_versions_not_saved");
                    }
                }
                Action::ClearUnrecorded { folder, paths } => {
                    if let Err(e) = self.index.clear_unrecorded(&folder, &paths) {
                        tracing::error!(folder, error = %e, "unrecorded_changes_not_cleared");
                    }
                }
                Action::Dial { peer } => self.dial(peer),
                Action::Disconnect { peer } => {
                    let _ = self.swarm.disconnect_peer_id(peer);
                }
                Action::Violation {
                    peer,
                    paired,
                    kind,
                    reason,
                    banned_for,
                } => {
                    let label = match peer {
                        Some(p) if paired => p.to_string(),
                        _ => "unpaired".to_string(),
                    };
                    self.metrics.violation(&label, kind.as_str());
                    match (peer, banned_for) {
                        (None, _) => tracing::warn!(
                            kind = kind.as_str(),
                            reason,
                            "protocol_violation_by_unpaired_author"
                        ),
                        (Some(p), None) => tracing::warn!(
                            peer = %p,
                            kind = kind.as_str(),
                            reason,
                            "protocol_violation"
                        ),
                        (Some(p), Some(ban)) => tracing::warn!(
                            peer = %p,
                            kind = kind.as_str(),
                            reason,
                            banned_s = ban.as_secs(),
                            "protocol_violation_peer_banned"
                        ),
                    }
                }
                Action::VersionUnavailable {
                    folder,
                    path,
                    content,
                } => {
                    tracing::warn!(folder, path, content = %content.short(), "version_unavailable");
                    Metrics::add(&self.metrics.versions_unavailable, 1);
                }
                Action::PruneRemoteManifests => self.prune_manifests(),
            }
        }
    }

    /// Dials a trusted peer: its remembered addresses and every address Kademlia and mDNS
    /// know (the remembered ones go stale when the peer restarts on a new port); with none
    /// remembered, the DHT is asked where it is (a found address is dialled on the result).
    fn dial(&mut self, peer: PeerId) {
        // Where it says it is now, if they share a rendezvous secret.
        self.rendezvous_lookup(peer);
        // (The transport never dials this device's own addresses: `private_net::Guard`.)
        let addrs = self.addresses.get(&peer).cloned().unwrap_or_default();
        self.dial_reason
            .insert(peer, if addrs.is_empty() { "dht" } else { "address" });
        if addrs.is_empty() {
            self.swarm.behaviour_mut().kad.get_closest_peers(peer);
        } else if let Err(e) = self.swarm.dial(
            DialOpts::peer_id(peer)
                .addresses(addrs)
                .extend_addresses_through_behaviour()
                .build(),
        ) {
            tracing::debug!(peer = %peer, error = %e, "dial_not_made");
        }
    }

    fn on_tick(&mut self) {
        self.pair_tick();
        self.rendezvous_tick();
        self.relay_tick();
        if self.prune_due {
            self.prune_manifests();
        }
        let now = Instant::now();
        self.conduct_tick(now);
        self.versions_tick(now);
        for l in self.local.values_mut() {
            if let Some(p) = &l.progress {
                let done = p.done_bytes.load(Ordering::Relaxed);
                let dt = (now - l.rate.0).as_secs_f64().max(1e-3);
                let instant = done.saturating_sub(l.rate.1) as f64 / dt;
                l.rate = (now, done, 0.5 * l.rate.2 + 0.5 * instant);
            }
        }
        self.node.handle_timeout(now);
    }

    /// When every folder is in sync, manifests learnt from peers are no longer needed
    /// (except those of kept versions): a peer cannot grow the index with them. This
    /// removes one batch, on the loop (so no pull starts in the middle of one); the next
    /// follows a tick later, until none is left or a pull starts (the node asks again
    /// when every folder is in sync again).
    fn prune_manifests(&mut self) {
        self.prune_due = false;
        if self.index.remote_manifest_count().unwrap_or(0) == 0 {
            return;
        }
        match self.index.prune_remote_manifests(PRUNE_BATCH) {
            Ok((n, done)) => {
                if n > 0 {
                    tracing::info!(removed = n, done, "remote_manifests_pruned");
                }
                self.prune_due = !done;
            }
            Err(e) => tracing::warn!(error = %e, "remote_manifest_prune_failed"),
        }
    }

    /// A violation seen by the driver (frames, blocks): the node decides what follows.
    pub(crate) fn violation(
        &mut self,
        peer: PeerId,
        kind: cairn_core::conduct::Violation,
        reason: &str,
    ) {
        self.node
            .handle_violation(Instant::now(), peer, kind, reason);
    }

    fn on_net_command(&mut self, cmd: NetCommand) {
        match cmd {
            NetCommand::Blocks {
                peer,
                request,
                reply,
            } => {
                if !self.node.is_connected(&peer) {
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
        let now = Instant::now();
        // Changes recorded in this turn are dated by the wall clock (history, rewind).
        self.node.set_clock(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as i64),
        );
        match event {
            Event::Requested {
                folder,
                changes,
                done,
            } => self.on_requested(&folder, changes, done),
            Event::ScanDone {
                folder,
                result,
                read_files,
                read_bytes,
            } => {
                Metrics::add(&self.metrics.scan_files, read_files);
                Metrics::add(&self.metrics.scan_bytes, read_bytes);
                if let Err(e) = &result {
                    tracing::warn!(folder, error = %e, "scan_failed");
                }
                self.node.handle_scan_done(now, &folder, result);
            }
            Event::PullDone { folder, outcome } => {
                if let Some(l) = self.local.get_mut(&folder) {
                    l.progress = None;
                }
                if !outcome.planned_nothing {
                    tracing::info!(
                        folder,
                        done = outcome.done,
                        failed = outcome.failed.len(),
                        "pull_finished"
                    );
                }
                self.recount_versions = true;
                self.node.handle_pull_done(now, &folder, outcome);
            }
            Event::RestoreDone { folder, changed } => {
                self.recount_versions = true;
                self.node.handle_restore_done(now, &folder, changed);
            }
            Event::VersionsCounted { kept, bytes } => {
                self.kept_versions = (kept, bytes);
            }
            Event::FsChanged { folder, paths } => {
                let relative: Option<Vec<String>> = self.local.get(&folder).and_then(|l| {
                    paths
                        .iter()
                        .map(|p| {
                            let rel = p.strip_prefix(&l.record.root).ok()?.to_str()?;
                            Some(rel.trim_end_matches('/').to_string())
                        })
                        .collect()
                });
                self.node.handle_fs_changed(now, &folder, relative);
            }
            Event::WatcherFailed { folder, error } => {
                tracing::warn!(folder = %folder, error = %error, "watcher_failed_falling_back_to_rescans");
                Metrics::add(&self.metrics.watcher_fallbacks, 1);
                self.node.handle_watcher_failed(now, &folder);
            }
            Event::BlocksReady {
                channel,
                peer,
                request_id,
                response,
            } => self.blocks_ready(channel, peer, request_id, response),
            Event::Control(req) => self.on_control(req),
        }
    }

    fn on_control(&mut self, req: ControlRequest) {
        match req {
            // A request the control API already answered from the published status
            // (the loop was busy) is not worked out again.
            ControlRequest::Status(reply) if !reply.is_closed() => {
                self.count_dht_peers();
                let _ = reply.send(self.status());
            }
            ControlRequest::Status(_) => {}
            ControlRequest::Metrics(reply) => {
                self.metrics.peers_connected.store(
                    self.node.connected().count() as u64,
                    std::sync::atomic::Ordering::Relaxed,
                );
                self.metrics.remote_manifests.store(
                    self.index.remote_manifest_count().unwrap_or(0),
                    std::sync::atomic::Ordering::Relaxed,
                );
                let _ = reply.send(self.metrics.render());
            }
            ControlRequest::Rescan { folder, reply } => {
                let result = if self.node.rescan(Instant::now(), folder.as_deref()) {
                    Ok(())
                } else {
                    Err(crate::admin::ApiError::NotFound(format!(
                        "no folder {}; `cairn folders` lists them",
                        folder.unwrap_or_default()
                    )))
                };
                let _ = reply.send(result);
            }
            ControlRequest::Shutdown => self.shutdown = true,
            ControlRequest::Admin(req) => self.on_admin(req),
            ControlRequest::Pair(ctl) => self.on_pair_ctl(ctl),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::tcp_listeners_known;

    fn addrs(list: &[&str]) -> Vec<libp2p::Multiaddr> {
        list.iter().map(|a| a.parse().unwrap()).collect()
    }

    #[test]
    fn dials_wait_for_a_wildcard_tcp_listeners_address_other_than_loopback() {
        let wildcard = ["/ip4/0.0.0.0/tcp/21900".to_string()];
        assert!(!tcp_listeners_known(&wildcard, &[]));
        let loopback_only = addrs(&["/ip4/127.0.0.1/tcp/21900"]);
        assert!(!tcp_listeners_known(&wildcard, &loopback_only));
        // QUIC's addresses say nothing of the TCP listener.
        let quic = addrs(&[
            "/ip4/127.0.0.1/tcp/21900",
            "/ip4/10.0.0.2/udp/21900/quic-v1",
        ]);
        assert!(!tcp_listeners_known(&wildcard, &quic));
        let lan = addrs(&["/ip4/127.0.0.1/tcp/21900", "/ip4/10.0.0.2/tcp/21900"]);
        assert!(tcp_listeners_known(&wildcard, &lan));
        // An IPv6 wildcard needs an IPv6 address.
        let both = [wildcard[0].clone(), "/ip6/::/tcp/21900".to_string()];
        assert!(!tcp_listeners_known(&both, &lan));
        let mut lan6 = lan.clone();
        lan6.extend(addrs(&["/ip6/fe80::1/tcp/21900"]));
        assert!(tcp_listeners_known(&both, &lan6));
        // A listener on a given address registers its port as it starts listening.
        assert!(tcp_listeners_known(
            &["/ip4/127.0.0.1/tcp/4001".to_string()],
            &[]
        ));
        assert!(tcp_listeners_known(
            &["/ip4/0.0.0.0/udp/4001/quic-v1".to_string()],
            &[]
        ));
    }
}
