//! The view-model: daemon status JSON (`/v1/status`, `/v1/conflicts`) -> what the tray
//! shows. One overall state is picked from a ranked list, as syncthingtray does: the most
//! urgent thing wins the icon.

use serde_json::Value;

/// The one state the icon shows, most urgent first.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Overall {
    /// The daemon does not answer.
    DaemonDown,
    /// A folder has an error.
    Error(String),
    /// Every folder is paused.
    Paused,
    /// Something is being scanned or pulled; percent when known.
    Syncing(Option<u8>),
    /// Paired devices exist but none is online.
    Offline,
    /// Files wait for a version that only a device that is not connected has.
    Waiting(String),
    /// Everything is in sync.
    UpToDate,
}

impl Overall {
    /// Freedesktop icon name for the state.
    pub fn icon(&self) -> &'static str {
        match self {
            Overall::DaemonDown => "network-offline",
            Overall::Error(_) => "dialog-error",
            Overall::Paused => "media-playback-pause",
            Overall::Syncing(_) => "emblem-synchronizing",
            Overall::Offline => "network-idle",
            Overall::Waiting(_) => "network-idle",
            Overall::UpToDate => "emblem-default",
        }
    }

    /// The colour of the state's dot (icon and window): green, blue, grey, red.
    pub fn rgb(&self) -> [u8; 3] {
        match self {
            Overall::DaemonDown => [110, 110, 110],
            Overall::Error(_) => [210, 45, 45],
            Overall::Paused => [150, 150, 150],
            Overall::Syncing(_) => [40, 120, 220],
            Overall::Offline => [200, 150, 40],
            Overall::Waiting(_) => [200, 150, 40],
            Overall::UpToDate => [40, 170, 80],
        }
    }

    /// The state in words, for the first menu line and the tooltip.
    pub fn words(&self) -> String {
        match self {
            Overall::DaemonDown => "cairn is not running".into(),
            Overall::Error(e) => format!("Error: {e}"),
            Overall::Paused => "Paused".into(),
            Overall::Syncing(Some(p)) => format!("Syncing… {p}%"),
            Overall::Syncing(None) => "Syncing…".into(),
            Overall::Offline => "No device online".into(),
            Overall::Waiting(w) => format!("Waiting: {w}"),
            Overall::UpToDate => "Up to date".into(),
        }
    }
}

/// One folder line of the menu and window.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FolderItem {
    pub id: String,
    pub path: String,
    pub words: String,
    pub paused: bool,
}

/// Everything the tray shows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TrayView {
    pub overall: Overall,
    pub folders: Vec<FolderItem>,
    pub peers_online: usize,
    pub peers_total: usize,
    /// "Pause" when anything runs, "Resume" when everything is paused.
    pub pause_label: &'static str,
    pub conflicts: usize,
    pub offers: usize,
}

fn folder_words(f: &Value) -> String {
    match f["state"].as_str().unwrap_or("") {
        "paused" => "paused".into(),
        "error" => format!("error: {}", f["last_error"].as_str().unwrap_or("unknown")),
        "scanning" => "scanning".into(),
        "syncing" => match percent(f) {
            Some(p) => format!("syncing {p}%"),
            None => "syncing".into(),
        },
        "waiting" => {
            let waiting = f["waiting"].as_array().cloned().unwrap_or_default();
            match waiting.first() {
                Some(w) => format!(
                    "waiting for {} ({} files, e.g. {})",
                    w["device"].as_str().unwrap_or("another device"),
                    waiting.len(),
                    w["path"].as_str().unwrap_or("?")
                ),
                None => "waiting for peers".into(),
            }
        }
        _ if f["in_sync"] == true => "up to date".into(),
        _ => "waiting for peers".into(),
    }
}

fn percent(f: &Value) -> Option<u8> {
    let total = f["pull_bytes_total"].as_u64()?;
    let done = f["pull_bytes_done"].as_u64()?;
    (total > 0).then(|| (done.saturating_mul(100) / total).min(100) as u8)
}

/// The view for a status answer (None: the daemon did not answer) and the conflict list.
pub fn view(status: Option<&Value>, conflicts: Option<&Value>) -> TrayView {
    let Some(s) = status else {
        return TrayView {
            overall: Overall::DaemonDown,
            folders: vec![],
            peers_online: 0,
            peers_total: 0,
            pause_label: "Pause",
            conflicts: 0,
            offers: 0,
        };
    };
    let folders: Vec<&Value> = s["folders"]
        .as_array()
        .map(|a| a.iter().collect())
        .unwrap_or_default();
    let peers: Vec<&Value> = s["peers"]
        .as_array()
        .map(|a| a.iter().collect())
        .unwrap_or_default();
    let peers_online = peers.iter().filter(|p| p["connected"] == true).count();
    let items: Vec<FolderItem> = folders
        .iter()
        .map(|f| FolderItem {
            id: f["id"].as_str().unwrap_or("").into(),
            path: f["path"].as_str().unwrap_or("").into(),
            words: folder_words(f),
            paused: f["state"] == "paused",
        })
        .collect();
    let all_paused = !folders.is_empty() && folders.iter().all(|f| f["state"] == "paused");
    let error = folders.iter().find(|f| f["state"] == "error").map(|f| {
        format!(
            "{}: {}",
            f["id"].as_str().unwrap_or(""),
            f["last_error"].as_str().unwrap_or("unknown")
        )
    });
    let syncing: Vec<&&Value> = folders
        .iter()
        .filter(|f| matches!(f["state"].as_str(), Some("syncing" | "scanning")))
        .collect();
    let overall = if let Some(e) = error {
        Overall::Error(e)
    } else if all_paused {
        Overall::Paused
    } else if !syncing.is_empty() {
        let (done, total) = syncing.iter().fold((0u64, 0u64), |(d, t), f| {
            (
                d + f["pull_bytes_done"].as_u64().unwrap_or(0),
                t + f["pull_bytes_total"].as_u64().unwrap_or(0),
            )
        });
        Overall::Syncing((total > 0).then(|| (done * 100 / total).min(100) as u8))
    } else if !peers.is_empty() && peers_online == 0 {
        Overall::Offline
    } else if let Some(f) = folders.iter().find(|f| f["state"] == "waiting") {
        Overall::Waiting(folder_words(f))
    } else {
        Overall::UpToDate
    };
    TrayView {
        overall,
        folders: items,
        peers_online,
        peers_total: peers.len(),
        pause_label: if all_paused { "Resume" } else { "Pause" },
        conflicts: conflicts.and_then(|c| c.as_array()).map_or(0, Vec::len),
        offers: s["offers"].as_array().map_or(0, Vec::len),
    }
}

/// A desktop notification to show.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Notice {
    pub summary: String,
    pub body: String,
}

/// Turns successive daemon answers into notifications: a conflict copy that was not there
/// before, a device that was not paired before. What exists when the tray first sees the
/// daemon is the baseline, so starting the tray never floods the desktop.
#[derive(Debug, Default)]
pub struct Notifier {
    conflicts: Option<std::collections::HashSet<String>>,
    peers: Option<std::collections::HashSet<String>>,
}

impl Notifier {
    /// The notifications `status` and `conflicts` call for (None: not answered, which
    /// changes nothing).
    pub fn observe(&mut self, status: Option<&Value>, conflicts: Option<&Value>) -> Vec<Notice> {
        let mut out = Vec::new();
        if let Some(list) = conflicts.and_then(Value::as_array) {
            let now: std::collections::HashSet<String> = list
                .iter()
                .filter_map(|c| Some(format!("{}/{}", c["folder"].as_str()?, c["copy"].as_str()?)))
                .collect();
            if let Some(before) = &self.conflicts {
                for c in list {
                    let key = format!(
                        "{}/{}",
                        c["folder"].as_str().unwrap_or(""),
                        c["copy"].as_str().unwrap_or("")
                    );
                    if !before.contains(&key) {
                        out.push(Notice {
                            summary: format!(
                                "Conflict in {}",
                                c["original"].as_str().unwrap_or("a file")
                            ),
                            body: format!(
                                "Both {} and this device changed it; the other version is kept as {}.",
                                c["copy_device"].as_str().unwrap_or("another device"),
                                c["copy"].as_str().unwrap_or("a conflict copy")
                            ),
                        });
                    }
                }
            }
            self.conflicts = Some(now);
        }
        if let Some(peers) = status.and_then(|s| s["peers"].as_array()) {
            let now: std::collections::HashSet<String> = peers
                .iter()
                .filter_map(|p| p["id"].as_str().map(str::to_string))
                .collect();
            if let Some(before) = &self.peers {
                for p in peers {
                    if p["id"].as_str().is_some_and(|id| !before.contains(id)) {
                        out.push(Notice {
                            summary: format!(
                                "Paired with {}",
                                p["name"].as_str().unwrap_or("a new device")
                            ),
                            body: "You can now share folders with it.".into(),
                        });
                    }
                }
            }
            self.peers = Some(now);
        }
        out
    }
}

/// "12.5 MB" for a byte count.
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "kB", "MB", "GB", "TB"];
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1000.0 && unit < UNITS.len() - 1 {
        v /= 1000.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn status(folders: Value, peers: Value) -> Value {
        json!({ "device_id": "x", "device_name": "desk", "folders": folders, "peers": peers, "offers": [] })
    }

    fn folder(state: &str, in_sync: bool) -> Value {
        json!({ "id": "docs", "path": "/home/me/docs", "state": state, "in_sync": in_sync,
                "pull_bytes_total": 0, "pull_bytes_done": 0, "last_error": null })
    }

    fn online() -> Value {
        json!([{ "id": "p", "name": "laptop", "connected": true }])
    }

    #[test]
    fn no_answer_means_the_daemon_is_down() {
        let v = view(None, None);
        assert_eq!(v.overall, Overall::DaemonDown);
        assert_eq!(v.overall.words(), "cairn is not running");
    }

    #[test]
    fn everything_in_sync_is_up_to_date() {
        let v = view(
            Some(&status(json!([folder("idle", true)]), online())),
            Some(&json!([])),
        );
        assert_eq!(v.overall, Overall::UpToDate);
        assert_eq!(v.folders[0].words, "up to date");
        assert_eq!((v.peers_online, v.peers_total), (1, 1));
        assert_eq!(v.pause_label, "Pause");
    }

    #[test]
    fn syncing_shows_the_percentage() {
        let mut f = folder("syncing", false);
        f["pull_bytes_total"] = json!(200);
        f["pull_bytes_done"] = json!(50);
        let v = view(Some(&status(json!([f]), online())), None);
        assert_eq!(v.overall, Overall::Syncing(Some(25)));
        assert_eq!(v.overall.words(), "Syncing… 25%");
        assert_eq!(v.folders[0].words, "syncing 25%");
    }

    #[test]
    fn a_waiting_folder_names_the_device_and_a_file() {
        let mut f = folder("waiting", false);
        f["waiting"] = json!([{ "path": "report.pdf", "device": "laptop" },
                              { "path": "b.txt", "device": "laptop" }]);
        let v = view(Some(&status(json!([f]), online())), None);
        assert_eq!(
            v.folders[0].words,
            "waiting for laptop (2 files, e.g. report.pdf)"
        );
        assert!(
            !matches!(v.overall, Overall::Error(_)),
            "waiting is not an error"
        );
    }

    #[test]
    fn all_folders_paused_is_paused_and_offers_resume() {
        let v = view(
            Some(&status(json!([folder("paused", false)]), online())),
            None,
        );
        assert_eq!(v.overall, Overall::Paused);
        assert_eq!(v.pause_label, "Resume");
        assert!(v.folders[0].paused);
    }

    #[test]
    fn an_error_outranks_everything_else() {
        let mut bad = folder("error", false);
        bad["last_error"] = json!("disk full");
        let v = view(
            Some(&status(json!([folder("syncing", false), bad]), online())),
            None,
        );
        assert_eq!(v.overall, Overall::Error("docs: disk full".into()));
        assert_eq!(v.overall.icon(), "dialog-error");
    }

    #[test]
    fn no_peer_online_is_offline() {
        let peers = json!([{ "id": "p", "name": "laptop", "connected": false }]);
        let v = view(Some(&status(json!([folder("idle", true)]), peers)), None);
        assert_eq!(v.overall, Overall::Offline);
    }

    #[test]
    fn conflicts_and_offers_are_counted() {
        let mut s = status(json!([folder("idle", true)]), online());
        s["offers"] = json!([{ "folder": "photos", "from": "p", "from_name": "laptop" }]);
        let v = view(
            Some(&s),
            Some(&json!([{ "copy": "a.sync-conflict-x" }, { "copy": "b.sync-conflict-y" }])),
        );
        assert_eq!((v.conflicts, v.offers), (2, 1));
    }

    #[test]
    fn notices_only_for_what_is_new() {
        let mut n = Notifier::default();
        let peers = |ids: &[(&str, &str)]| {
            let list: Vec<Value> = ids
                .iter()
                .map(|(id, name)| json!({ "id": id, "name": name, "connected": true }))
                .collect();
            status(json!([]), json!(list))
        };
        let conflict = |copy: &str| json!({ "folder": "docs", "copy": copy, "original": "a.txt", "copy_device": "laptop" });
        // The first answer is the baseline.
        assert!(
            n.observe(
                Some(&peers(&[("p1", "laptop")])),
                Some(&json!([conflict("a.sync-conflict-1.txt")]))
            )
            .is_empty()
        );
        // The daemon being down changes nothing.
        assert!(n.observe(None, None).is_empty());
        let got = n.observe(
            Some(&peers(&[("p1", "laptop"), ("p2", "phone")])),
            Some(&json!([
                conflict("a.sync-conflict-1.txt"),
                conflict("a.sync-conflict-2.txt")
            ])),
        );
        assert_eq!(got.len(), 2, "{got:?}");
        assert_eq!(got[0].summary, "Conflict in a.txt");
        assert!(got[0].body.contains("a.sync-conflict-2.txt"));
        assert_eq!(got[1].summary, "Paired with phone");
        // Seen once, never again.
        assert!(
            n.observe(
                Some(&peers(&[("p1", "laptop"), ("p2", "phone")])),
                Some(&json!([conflict("a.sync-conflict-2.txt")]))
            )
            .is_empty()
        );
    }

    #[test]
    fn byte_counts_read_well() {
        assert_eq!(bytes(999), "999 B");
        assert_eq!(bytes(12_500_000), "12.5 MB");
    }
}
