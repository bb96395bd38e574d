//! What `cairn status` shows, assembled from the node's state and the daemon's own
//! (index totals, pull progress, listen addresses).

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::time::{Instant, UNIX_EPOCH};

use serde::Serialize;

use super::Engine;
use crate::config::FolderType;

/// What `cairn status` shows.
#[derive(Clone, Debug, Serialize)]
pub struct Status {
    pub device_id: String,
    pub device_name: String,
    /// Folders trusted peers offered to this device, waiting for `cairn accept`.
    pub offers: Vec<crate::admin::Offer>,
    pub uptime_s: u64,
    pub listen: Vec<String>,
    pub peers: Vec<PeerStatus>,
    pub folders: Vec<FolderStatus>,
    /// The last changes to any folder, newest first (at most [`cairn_core::node::RECENT_MAX`]).
    pub recent: Vec<RecentChange>,
}

/// One change to a folder, made here or received from a peer.
#[derive(Clone, Debug, Serialize)]
pub struct RecentChange {
    /// Seconds since the Unix epoch.
    pub at: u64,
    pub folder: String,
    pub path: String,
    /// "added", "modified", "deleted", "updated", "folder created", "conflict copy".
    pub change: String,
    /// "local" (seen by the scanner) or "remote" (written by the puller).
    pub origin: &'static str,
}

/// One trusted peer.
#[derive(Clone, Debug, Serialize)]
pub struct PeerStatus {
    pub id: String,
    pub name: String,
    pub connected: bool,
    /// Protocol violations counted since the daemon started.
    pub violations: u64,
    /// The last violation's kind and reason.
    pub last_violation: Option<String>,
    /// Seconds the peer is still banned for (no redial, connections refused).
    pub banned_for_s: Option<u64>,
}

/// A path of a folder document that this device refuses to write.
#[derive(Clone, Debug, Serialize)]
pub struct RefusedPath {
    pub path: String,
    /// Why, for people.
    pub reason: String,
    /// The device that wrote the entry (a name for people).
    pub device: String,
}

/// One folder.
#[derive(Clone, Debug, Serialize)]
pub struct FolderStatus {
    pub id: String,
    pub path: PathBuf,
    #[serde(rename = "type")]
    pub kind: FolderType,
    /// idle, scanning, syncing, paused or error
    pub state: String,
    pub in_sync: bool,
    pub files: u64,
    pub bytes: u64,
    pub pull_queue: u64,
    /// Bytes the running pull writes in all.
    pub pull_bytes_total: u64,
    /// Bytes written so far by the running pull.
    pub pull_bytes_done: u64,
    /// Current pull rate, bytes per second.
    pub rate_bytes_per_s: u64,
    pub last_error: Option<String>,
    /// ok, or fallback when the watcher failed and periodic rescans took over
    pub watcher: String,
    /// Files whose version no connected device has yet, and who is expected to have it.
    pub waiting: Vec<WaitingPath>,
    /// Entries of the folder document this device refuses to write (invalid paths,
    /// a claimed size that differs from the manifest).
    pub refused: Vec<RefusedPath>,
}

/// A file waiting for a version that only another device has.
#[derive(Clone, Debug, Serialize)]
pub struct WaitingPath {
    pub path: String,
    /// The device that made the version (a name for people).
    pub device: String,
}

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
                    kind: f.spec.kind,
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
                }
            })
            .collect();
        peers.sort_by(|a, b| a.id.cmp(&b.id));
        let offers = self
            .node
            .offers()
            .map(|o| crate::admin::Offer {
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
            peers,
            folders,
            recent: self
                .node
                .recent()
                .map(|r| RecentChange {
                    at: unix(r.at),
                    folder: r.folder.clone(),
                    path: r.path.clone(),
                    change: r.change.clone(),
                    origin: r.origin.as_str(),
                })
                .collect(),
        }
    }
}
