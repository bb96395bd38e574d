//! What `cairn status` shows, assembled from the node's state and the daemon's own
//! (index totals, pull progress, listen addresses).

use std::sync::atomic::Ordering;
use std::time::{Instant, UNIX_EPOCH};

pub use cairn_api::status::{
    FolderStatus, NetworkStatus, PeerStatus, RecentChange, RefusedPath, Status, WaitingPath,
};

use super::Engine;
use crate::config::api_kind;

impl Engine {
    pub(crate) fn status(&self) -> Status {
        let now = Instant::now();
        let (started, wall) = self.started;
        let unix = |at: Instant| {
            (wall + at.saturating_duration_since(started))
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs())
        };
        let folders = self
            .node
            .folders()
            .filter_map(|(id, f)| {
                let l = self.local.get(id)?;
                let totals = self.index.totals(id).unwrap_or_default();
                let progress = |get: fn(&crate::puller::PullProgress) -> u64| {
                    l.progress.as_ref().map_or(0, |p| get(p))
                };
                Some(FolderStatus {
                    id: id.clone(),
                    path: l.config.path.clone(),
                    kind: api_kind(f.spec.kind),
                    state: f.state_word().to_string(),
                    in_sync: f.settled(),
                    files: totals.files,
                    bytes: totals.bytes,
                    pull_queue: progress(|p| p.actions_left.load(Ordering::Relaxed)),
                    pull_bytes_total: progress(|p| p.total_bytes.load(Ordering::Relaxed)),
                    pull_bytes_done: progress(|p| p.done_bytes.load(Ordering::Relaxed)),
                    rate_bytes_per_s: if l.progress.is_some() {
                        l.rate.2 as u64
                    } else {
                        0
                    },
                    last_error: f.last_error.clone(),
                    watcher: if f.spec.watcher_ok { "ok" } else { "fallback" }.into(),
                    waiting: f
                        .waiting
                        .iter()
                        .map(|w| WaitingPath {
                            path: w.path.clone(),
                            device: self.node.device_label(w.author),
                        })
                        .collect(),
                    refused: f
                        .refused
                        .iter()
                        .map(|(path, r)| RefusedPath {
                            path: path.clone(),
                            reason: r.reason.clone(),
                            device: r.author.map(|d| d.short()).unwrap_or_default(),
                        })
                        .collect(),
                })
            })
            .collect();
        let conduct = self.node.conduct();
        let mut peers: Vec<PeerStatus> = self
            .node
            .peers()
            .iter()
            .map(|(id, p)| {
                let record = conduct.get(id);
                PeerStatus {
                    id: id.to_string(),
                    name: p.name.clone(),
                    connected: self.node.is_connected(id),
                    violations: self.metrics.violations_of(&id.to_string()),
                    last_violation: record.map(|r| format!("{}: {}", r.last.0.as_str(), r.last.1)),
                    banned_for_s: record
                        .and_then(|r| r.banned_until)
                        .filter(|t| *t > now)
                        .map(|t| (t - now).as_secs().max(1)),
                    path: self.connections.contains_key(id).then(|| {
                        if self.relayed_only(id) {
                            "relayed"
                        } else {
                            "direct"
                        }
                        .into()
                    }),
                    found_by: self.found_by.get(id).map(|s| s.to_string()),
                }
            })
            .collect();
        peers.sort_by(|a, b| a.id.cmp(&b.id));
        let offers = self
            .node
            .offers()
            .map(|o| cairn_api::folders::Offer {
                folder: o.folder.clone(),
                from: o.from.to_string(),
                from_name: self
                    .node
                    .peers()
                    .get(&o.from)
                    .map(|p| p.name.clone())
                    .unwrap_or_default(),
            })
            .collect();
        Status {
            device_id: self.swarm.local_peer_id().to_string(),
            device_name: self.config.device_name(),
            offers,
            uptime_s: now.saturating_duration_since(started).as_secs(),
            listen: self.listen.iter().map(|a| a.to_string()).collect(),
            network: NetworkStatus {
                reachability: self.reachability.into(),
                external: self
                    .swarm
                    .external_addresses()
                    .map(|a| a.to_string())
                    .collect(),
                dht_peers: self.dht_peers,
                dht_server: self.swarm.behaviour().kad.mode() == libp2p::kad::Mode::Server,
                private_only: self.private_only,
                relays: self.relays.reserved.iter().map(|p| p.to_string()).collect(),
            },
            peers,
            folders,
            versions: cairn_api::status::VersionsStatus {
                kept: self.kept_versions.0,
                store_bytes: self.kept_versions.1,
            },
            recent: self
                .node
                .recent()
                .map(|r| RecentChange {
                    at: unix(r.at),
                    folder: r.folder.clone(),
                    path: r.path.clone(),
                    change: r.change.clone(),
                    origin: r.origin.as_str().into(),
                })
                .collect(),
        }
    }
}
