//! The daemon's driver: one task owns the swarm and the [`Node`] (every decision, sans
//! I/O, in `cairn_core::node`), feeds it what happens (swarm events, watcher events, job
//! results, control requests, the clock) and carries out the actions it polls: scans and
//! pulls on worker threads, meta requests on the swarm, writes of folder documents to the
//! index, dials and disconnects.
//!
//! Submodules by role: `start` (opening the stores, loading folders, listening), `events`
//! (what reaches the loop), `swarm` (network events, serving blocks, frame violations),
//! `jobs` (scans and pulls off the loop, folder loading), `status` (what `cairn status`
//! shows).

mod admin;
mod events;
mod group;
mod history;
mod jobs;
mod pair;
mod relay;
mod rendezvous;
mod start;
mod status;
mod swarm;

pub use events::{ControlRequest, Event, StatusFeed};
pub use start::StartError;
pub use status::{FolderStatus, PeerStatus, RecentChange, RefusedPath, Status, WaitingPath};

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant, SystemTime};

use cairn_core::folder::DeviceId;
use cairn_core::node::{Action, Node};
use cairn_core::wire::BlocksResponse;
use futures::StreamExt;
use libp2p::request_response::OutboundRequestId;
use libp2p::swarm::ConnectionId;
use libp2p::swarm::dial_opts::DialOpts;
use libp2p::{Multiaddr, PeerId, Swarm};
use tokio::sync::{mpsc, oneshot};

use crate::config::{Config, FolderConfig};
use crate::index::{FolderRecord, Index};
use crate::metrics::Metrics;
use crate::net::Behaviour;
use crate::puller::{NetCommand, PullProgress};
use crate::watcher::Watcher;

pub(crate) use jobs::load_folder;
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

impl Engine {
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
            // A scan waiting out the gap between scans starts when the gap ends (at once if
            // that has passed).
            let wake = self.node.scan_wake_at();
            let scan_wake = tokio::time::sleep_until(tokio::time::Instant::from_std(
                wake.unwrap_or_else(Instant::now),
            ));
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
                _ = scan_wake, if wake.is_some() => {
                    let t = Instant::now();
                    self.node.handle_timeout(t);
                    self.turn_took(t, "scan_wake");
                }
                _ = publish.tick(), if self.status_dirty => self.publish_status(),
            }
        }
        // The version store's database is committed and unlocked before the process ends.
        let versions = self.versions.clone();
        tokio::task::block_in_place(|| versions.shutdown());
        tracing::info!("daemon_stopped");
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
        crate::net::release_idle_frames(now);
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
