//! The view-model: the daemon's answers (`/v1/status`, `/v1/conflicts`) -> what the tray
//! shows. One overall state is picked from a ranked list, as syncthingtray does: the most
//! urgent thing wins the icon.

use cairn_api::conflicts::Conflict;
use cairn_api::status::{FolderStatus, Status};

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

fn folder_words(f: &FolderStatus) -> String {
    match f.state.as_str() {
        "paused" => "paused".into(),
        "error" => format!("error: {}", f.last_error.as_deref().unwrap_or("unknown")),
        "scanning" => "scanning".into(),
        "syncing" => match percent(f) {
            Some(p) => format!("syncing {p}%"),
            None => "syncing".into(),
        },
        "waiting" => match f.waiting.first() {
            Some(w) => format!(
                "waiting for {} ({} files, e.g. {})",
                w.device,
                f.waiting.len(),
                w.path
            ),
            None => "waiting for peers".into(),
        },
        _ if f.in_sync => "up to date".into(),
        _ => "waiting for peers".into(),
    }
}

fn percent(f: &FolderStatus) -> Option<u8> {
    let (total, done) = (f.pull_bytes_total, f.pull_bytes_done);
    (total > 0).then(|| (done.saturating_mul(100) / total).min(100) as u8)
}

/// The view for a status answer (None: the daemon did not answer) and the conflict list.
pub fn view(status: Option<&Status>, conflicts: Option<&[Conflict]>) -> TrayView {
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
    let folders = &s.folders;
    let peers_online = s.peers.iter().filter(|p| p.connected).count();
    let items: Vec<FolderItem> = folders
        .iter()
        .map(|f| FolderItem {
            id: f.id.clone(),
            path: f.path.display().to_string(),
            words: folder_words(f),
            paused: f.state == "paused",
        })
        .collect();
    let all_paused = !folders.is_empty() && folders.iter().all(|f| f.state == "paused");
    let error = folders
        .iter()
        .find(|f| f.state == "error")
        .map(|f| format!("{}: {}", f.id, f.last_error.as_deref().unwrap_or("unknown")));
    let syncing: Vec<&FolderStatus> = folders
        .iter()
        .filter(|f| matches!(f.state.as_str(), "syncing" | "scanning"))
        .collect();
    let overall = if let Some(e) = error {
        Overall::Error(e)
    } else if all_paused {
        Overall::Paused
    } else if !syncing.is_empty() {
        let (done, total) = syncing.iter().fold((0u64, 0u64), |(d, t), f| {
            (
                d.saturating_add(f.pull_bytes_done),
                t.saturating_add(f.pull_bytes_total),
            )
        });
        Overall::Syncing((total > 0).then(|| (done.saturating_mul(100) / total).min(100) as u8))
    } else if !s.peers.is_empty() && peers_online == 0 {
        Overall::Offline
    } else if let Some(f) = folders.iter().find(|f| f.state == "waiting") {
        Overall::Waiting(folder_words(f))
    } else {
        Overall::UpToDate
    };
    TrayView {
        overall,
        folders: items,
        peers_online,
        peers_total: s.peers.len(),
        pause_label: if all_paused { "Resume" } else { "Pause" },
        conflicts: conflicts.map_or(0, <[Conflict]>::len),
        offers: s.offers.len(),
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
    pub fn observe(
        &mut self,
        status: Option<&Status>,
        conflicts: Option<&[Conflict]>,
    ) -> Vec<Notice> {
        let mut out = Vec::new();
        if let Some(list) = conflicts {
            let key = |c: &Conflict| format!("{}/{}", c.folder, c.copy);
            let now: std::collections::HashSet<String> = list.iter().map(key).collect();
            if let Some(before) = &self.conflicts {
                for c in list.iter().filter(|c| !before.contains(&key(c))) {
                    out.push(Notice {
                        summary: format!("Conflict in {}", c.original),
                        body: format!(
                            "Both {} and this device changed it; the other version is kept as {}.",
                            c.copy_device, c.copy
                        ),
                    });
                }
            }
            self.conflicts = Some(now);
        }
        if let Some(peers) = status.map(|s| &s.peers) {
            let now: std::collections::HashSet<String> =
                peers.iter().map(|p| p.id.clone()).collect();
            if let Some(before) = &self.peers {
                for p in peers.iter().filter(|p| !before.contains(&p.id)) {
                    out.push(Notice {
                        summary: format!("Paired with {}", p.name),
                        body: "You can now share folders with it.".into(),
                    });
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
    use cairn_api::folders::Offer;
    use cairn_api::status::{PeerStatus, WaitingPath};

    fn status(folders: Vec<FolderStatus>, peers: Vec<PeerStatus>) -> Status {
        Status {
            device_id: "x".into(),
            device_name: "desk".into(),
            folders,
            peers,
            ..Status::default()
        }
    }

    fn folder(state: &str, in_sync: bool) -> FolderStatus {
        FolderStatus {
            id: "docs".into(),
            path: "/home/me/docs".into(),
            state: state.into(),
            in_sync,
            ..FolderStatus::default()
        }
    }

    fn peer(id: &str, name: &str, connected: bool) -> PeerStatus {
        PeerStatus {
            id: id.into(),
            name: name.into(),
            connected,
            ..PeerStatus::default()
        }
    }

    fn online() -> Vec<PeerStatus> {
        vec![peer("p", "laptop", true)]
    }

    fn conflict(copy: &str) -> Conflict {
        Conflict {
            folder: "docs".into(),
            copy: copy.into(),
            original: "a.txt".into(),
            copy_device: "laptop".into(),
            ..Conflict::default()
        }
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
            Some(&status(vec![folder("idle", true)], online())),
            Some(&[]),
        );
        assert_eq!(v.overall, Overall::UpToDate);
        assert_eq!(v.folders[0].words, "up to date");
        assert_eq!((v.peers_online, v.peers_total), (1, 1));
        assert_eq!(v.pause_label, "Pause");
    }

    #[test]
    fn syncing_shows_the_percentage() {
        let mut f = folder("syncing", false);
        f.pull_bytes_total = 200;
        f.pull_bytes_done = 50;
        let v = view(Some(&status(vec![f], online())), None);
        assert_eq!(v.overall, Overall::Syncing(Some(25)));
        assert_eq!(v.overall.words(), "Syncing… 25%");
        assert_eq!(v.folders[0].words, "syncing 25%");
    }

    #[test]
    fn a_waiting_folder_names_the_device_and_a_file() {
        let mut f = folder("waiting", false);
        let waiting = |path: &str| WaitingPath {
            path: path.into(),
            device: "laptop".into(),
        };
        f.waiting = vec![waiting("report.pdf"), waiting("b.txt")];
        let v = view(Some(&status(vec![f], online())), None);
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
        let v = view(Some(&status(vec![folder("paused", false)], online())), None);
        assert_eq!(v.overall, Overall::Paused);
        assert_eq!(v.pause_label, "Resume");
        assert!(v.folders[0].paused);
    }

    #[test]
    fn an_error_outranks_everything_else() {
        let mut bad = folder("error", false);
        bad.last_error = Some("disk full".into());
        let v = view(
            Some(&status(vec![folder("syncing", false), bad], online())),
            None,
        );
        assert_eq!(v.overall, Overall::Error("docs: disk full".into()));
        assert_eq!(v.overall.icon(), "dialog-error");
    }

    #[test]
    fn no_peer_online_is_offline() {
        let peers = vec![peer("p", "laptop", false)];
        let v = view(Some(&status(vec![folder("idle", true)], peers)), None);
        assert_eq!(v.overall, Overall::Offline);
    }

    #[test]
    fn conflicts_and_offers_are_counted() {
        let mut s = status(vec![folder("idle", true)], online());
        s.offers = vec![Offer {
            folder: "photos".into(),
            from: "p".into(),
            from_name: "laptop".into(),
        }];
        let v = view(
            Some(&s),
            Some(&[conflict("a.sync-conflict-x"), conflict("b.sync-conflict-y")]),
        );
        assert_eq!((v.conflicts, v.offers), (2, 1));
    }

    #[test]
    fn notices_only_for_what_is_new() {
        let mut n = Notifier::default();
        let peers = |ids: &[(&str, &str)]| {
            let list = ids.iter().map(|(id, name)| peer(id, name, true)).collect();
            status(vec![], list)
        };
        // The first answer is the baseline.
        assert!(
            n.observe(
                Some(&peers(&[("p1", "laptop")])),
                Some(&[conflict("a.sync-conflict-1.txt")])
            )
            .is_empty()
        );
        // The daemon being down changes nothing.
        assert!(n.observe(None, None).is_empty());
        let got = n.observe(
            Some(&peers(&[("p1", "laptop"), ("p2", "phone")])),
            Some(&[
                conflict("a.sync-conflict-1.txt"),
                conflict("a.sync-conflict-2.txt"),
            ]),
        );
        assert_eq!(got.len(), 2, "{got:?}");
        assert_eq!(got[0].summary, "Conflict in a.txt");
        assert!(got[0].body.contains("a.sync-conflict-2.txt"));
        assert_eq!(got[1].summary, "Paired with phone");
        // Seen once, never again.
        assert!(
            n.observe(
                Some(&peers(&[("p1", "laptop"), ("p2", "phone")])),
                Some(&[conflict("a.sync-conflict-2.txt")])
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
