//! `GET /v1/status`: the device, its peers, its folders and their sync state, offers and
//! the recent changes: what `cairn status` and the tray show.
//!
//! States and kinds that may grow (a folder's `state`, a change's `origin`) are strings,
//! so a client keeps reading the status of a newer daemon.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::folders::{FolderType, Offer};

/// What `cairn status` shows.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Status {
    /// This device's id (its libp2p PeerId).
    pub device_id: String,
    /// This device's name.
    pub device_name: String,
    /// Folders trusted peers offered to this device, waiting for `cairn accept`.
    pub offers: Vec<Offer>,
    /// Seconds since the daemon started.
    pub uptime_s: u64,
    /// The addresses the daemon listens on.
    pub listen: Vec<String>,
    /// Every trusted peer, by id.
    pub peers: Vec<PeerStatus>,
    /// Every folder of this device.
    pub folders: Vec<FolderStatus>,
    /// The last changes to any folder, newest first (at most 100, kept in memory).
    pub recent: Vec<RecentChange>,
    /// How this device is reachable and how the DHT looks from here.
    #[serde(default)]
    pub network: NetworkStatus,
    /// Kept versions and the store that holds them.
    #[serde(default)]
    pub versions: VersionsStatus,
}

/// Kept versions (all folders) and the version store, as last counted (after pulls and
/// restores that kept versions, at most every 5 s, and after each pruning).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct VersionsStatus {
    /// Versions kept on this device.
    pub kept: usize,
    /// Bytes the version store takes on disk.
    pub store_bytes: u64,
}

/// Reachability and discovery.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkStatus {
    /// "public" (AutoNAT confirmed an address others can dial), "behind NAT" (AutoNAT
    /// says peers cannot), or "unknown" (not probed yet, or no one to probe with).
    pub reachability: String,
    /// Addresses others are told to dial (confirmed, relayed or announced).
    pub external: Vec<String>,
    /// DHT servers in the routing table that are connected now.
    pub dht_peers: usize,
    /// Whether this device serves the DHT to others.
    pub dht_server: bool,
    /// `CAIRN_PRIVATE_NETWORK_ONLY=1`: nothing outside loopback and private space.
    pub private_only: bool,
    /// Relays this device holds a reservation on (its relayed addresses go through them).
    #[serde(default)]
    pub relays: Vec<String>,
}

/// One change to a folder, made here or received from a peer.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecentChange {
    /// Seconds since the Unix epoch.
    pub at: u64,
    /// The folder's id.
    pub folder: String,
    /// The folder-relative path.
    pub path: String,
    /// "added", "modified", "deleted", "updated", "folder created", "conflict copy".
    pub change: String,
    /// "local" (seen by the scanner) or "remote" (written by the puller).
    pub origin: String,
}

/// One trusted peer.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerStatus {
    /// Its device id.
    pub id: String,
    /// Its name.
    pub name: String,
    /// Whether a connection to it is open.
    pub connected: bool,
    /// Protocol violations counted since the daemon started.
    pub violations: u64,
    /// The last violation's kind and reason.
    pub last_violation: Option<String>,
    /// Seconds the peer is still banned for (no redial, connections refused).
    pub banned_for_s: Option<u64>,
    /// While connected: "direct", or "relayed" when every connection goes through a relay.
    #[serde(default)]
    pub path: Option<String>,
    /// How the open connection came about: "inbound" (it dialled us), "mdns", "address"
    /// (a remembered or configured one), "rendezvous" (its DHT record), "dht".
    #[serde(default)]
    pub found_by: Option<String>,
}

/// A path of a folder document that this device refuses to write.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefusedPath {
    /// The folder-relative path.
    pub path: String,
    /// Why, for people.
    pub reason: String,
    /// The device that wrote the entry (a name for people).
    pub device: String,
}

/// One folder.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FolderStatus {
    /// Folder id.
    pub id: String,
    /// Its directory on this device.
    pub path: PathBuf,
    /// How it takes part in sync.
    #[serde(rename = "type")]
    pub kind: FolderType,
    /// idle, scanning, syncing, restoring, waiting, no_space, paused or error
    pub state: String,
    /// Whether it holds what every connected member has, with nothing left to do.
    pub in_sync: bool,
    /// Files indexed.
    pub files: u64,
    /// Bytes of those files.
    pub bytes: u64,
    /// Steps the running pull has left.
    pub pull_queue: u64,
    /// Bytes the running pull writes in all.
    pub pull_bytes_total: u64,
    /// Bytes written so far by the running pull.
    pub pull_bytes_done: u64,
    /// Current pull rate, bytes per second.
    pub rate_bytes_per_s: u64,
    /// The last scan or pull error, for people.
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
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WaitingPath {
    /// The folder-relative path.
    pub path: String,
    /// The device that made the version (a name for people).
    pub device: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Status {
        Status {
            device_id: "12D3KooWdesk".into(),
            device_name: "desk".into(),
            offers: vec![Offer {
                folder: "photos-a1b2c3".into(),
                from: "12D3KooWlaptop".into(),
                from_name: "laptop".into(),
            }],
            uptime_s: 42,
            listen: vec!["/ip4/127.0.0.1/tcp/4001".into()],
            peers: vec![PeerStatus {
                id: "12D3KooWlaptop".into(),
                name: "laptop".into(),
                connected: true,
                violations: 2,
                last_violation: Some("bad_frame: too long".into()),
                banned_for_s: None,
                path: Some("relayed".into()),
                found_by: Some("rendezvous".into()),
            }],
            folders: vec![FolderStatus {
                id: "docs".into(),
                path: "/home/me/docs".into(),
                kind: FolderType::SendOnly,
                state: "waiting".into(),
                files: 3,
                bytes: 12_500_000,
                watcher: "ok".into(),
                waiting: vec![WaitingPath {
                    path: "report.pdf".into(),
                    device: "laptop".into(),
                }],
                refused: vec![RefusedPath {
                    path: "../etc".into(),
                    reason: "not a valid path".into(),
                    device: "1a2b3c4d".into(),
                }],
                ..FolderStatus::default()
            }],
            recent: vec![RecentChange {
                at: 1_764_483_720,
                folder: "docs".into(),
                path: "notes.txt".into(),
                change: "modified".into(),
                origin: "local".into(),
            }],
            network: NetworkStatus {
                reachability: "public".into(),
                external: vec!["/ip4/203.0.113.7/tcp/21900".into()],
                dht_peers: 20,
                dht_server: true,
                private_only: false,
                relays: vec!["12D3KooWRelay".into()],
            },
            versions: VersionsStatus {
                kept: 3,
                store_bytes: 1 << 20,
            },
        }
    }

    #[test]
    fn status_survives_a_json_round_trip() {
        let s = sample();
        let json = serde_json::to_string(&s).unwrap();
        assert_eq!(serde_json::from_str::<Status>(&json).unwrap(), s);
    }

    #[test]
    fn status_keeps_the_field_names_clients_read() {
        let v = serde_json::to_value(sample()).unwrap();
        let f = &v["folders"][0];
        assert_eq!(f["type"], "send-only");
        assert_eq!(f["path"], "/home/me/docs");
        assert_eq!(f["last_error"], serde_json::Value::Null);
        assert_eq!(f["waiting"][0]["device"], "laptop");
        assert_eq!(f["refused"][0]["reason"], "not a valid path");
        assert_eq!(v["peers"][0]["banned_for_s"], serde_json::Value::Null);
        assert_eq!(v["offers"][0]["from_name"], "laptop");
        assert_eq!(v["recent"][0]["origin"], "local");
        let keys: Vec<&String> = f.as_object().unwrap().keys().collect();
        assert_eq!(
            keys,
            [
                "bytes",
                "files",
                "id",
                "in_sync",
                "last_error",
                "path",
                "pull_bytes_done",
                "pull_bytes_total",
                "pull_queue",
                "rate_bytes_per_s",
                "refused",
                "state",
                "type",
                "waiting",
                "watcher"
            ]
        );
    }
}
