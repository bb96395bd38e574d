//! Version history through the control API: every version the group knows of, with the
//! devices that hold its bytes (`GET /v1/history`), putting one back from any of them
//! (`POST /v1/restore`), and rewinding a folder to a moment (`POST /v1/rewind`).

use serde::{Deserialize, Serialize};

/// One kept version.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Version {
    /// The folder's id.
    pub folder: String,
    /// The folder-relative path it was kept from.
    pub path: String,
    /// When this device kept it, in ns since the epoch.
    pub kept_ns: i64,
    /// Its content id (hex); `cairn restore --version` takes any unique prefix.
    pub content: String,
    /// Its size in bytes.
    pub size: u64,
    /// Whether this device holds its bytes (in its version store or a file).
    pub available: bool,
    /// When the version was made (its change recorded in the folder), in ns since the
    /// epoch; 0 when not known (recorded by a version of cairn that did not date changes).
    #[serde(default)]
    pub made_ns: i64,
    /// The device that made it (its name), when the folder's history says.
    #[serde(default)]
    pub author: Option<String>,
    /// Devices that hold its bytes, as they last said (this one included).
    #[serde(default)]
    pub holders: Vec<Holder>,
    /// The path is deleted now (this is one of its versions from before).
    #[serde(default)]
    pub deleted: bool,
}

/// A device that holds the bytes of a version.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Holder {
    /// Its name.
    pub name: String,
    /// This device.
    pub this_device: bool,
    /// Connected now (this device always is).
    pub online: bool,
}

/// The query of `GET /v1/history`: which versions to list (all if nothing is given).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryQuery {
    /// Only this folder (id).
    pub folder: Option<String>,
    /// Only versions of this path, or of everything under it (folder-relative).
    pub path: Option<String>,
    /// Only versions of paths that are deleted now.
    #[serde(default)]
    pub deleted: bool,
}

/// What `cairn restore` asks for (`POST /v1/restore`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestoreRequest {
    /// Folder id; may be left out when only one folder has versions of `path`.
    pub folder: Option<String>,
    /// The folder-relative path the version was kept from.
    pub path: String,
    /// A content id or a unique prefix of one; the newest kept version if left out.
    pub version: Option<String>,
    /// Where to put it instead of `path` (folder-relative).
    pub to: Option<String>,
}

/// Who holds a version, for people: "this device, laptop (offline)" ("no device" when
/// none does any more). The CLI and the tray show it the same way.
pub fn held_by(holders: &[Holder]) -> String {
    if holders.is_empty() {
        return "no device".into();
    }
    holders
        .iter()
        .map(|h| {
            if h.online {
                h.name.clone()
            } else {
                format!("{} (offline)", h.name)
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// What `cairn restore --folder F --at TIME [SUBDIR]` asks for (`POST /v1/rewind`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RewindRequest {
    /// Folder id.
    pub folder: String,
    /// The moment, in ns since the epoch.
    pub at_ns: i64,
    /// Only this directory (or file) of the folder, folder-relative.
    pub under: Option<String>,
    /// Also remove (to history) what was created since.
    #[serde(default)]
    pub exact: bool,
    /// Only list what would change.
    #[serde(default)]
    pub dry_run: bool,
}

/// One path of a rewind.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RewindStep {
    /// Folder-relative path.
    pub path: String,
    /// `restore` (other data now), `recreate` (deleted since), `remove` (created since,
    /// with exact) or `keep` (created since, stays).
    pub action: String,
    /// The version put back (hex), if any.
    pub content: Option<String>,
    /// Its size in bytes.
    pub size: u64,
    /// Whether a device that is connected (or this one) holds its bytes.
    pub available: bool,
}

/// What a rewind did (or, on a dry run, would do).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rewound {
    /// The folder's id.
    pub folder: String,
    /// The moment it was rewound to, in ns since the epoch.
    pub at_ns: i64,
    /// Nothing was changed: the steps are what a rewind would do.
    pub dry_run: bool,
    /// Every path that differs from the moment, in path order.
    pub steps: Vec<RewindStep>,
    /// Bytes of restored versions this device does not hold (fetched from peers).
    pub bytes_to_fetch: u64,
    /// Something the user should know.
    pub note: Option<String>,
}

/// What a restore did.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Restored {
    /// The folder's id.
    pub folder: String,
    /// Where the version now is.
    pub path: String,
    /// The restored version's content id (hex).
    pub content: String,
    /// Its size in bytes.
    pub size: u64,
    /// The version that was at `path` before, now kept in history; none if there was none
    /// or it was already this version.
    pub kept_current: Option<String>,
    /// Something the user should know, e.g. that the folder is paused.
    pub note: Option<String>,
}

/// What a pruning run did (`POST /v1/history/prune`, `cairn history --prune`, and the
/// daemon's own runs).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pruned {
    /// Kept versions dropped by the folders' rules.
    pub dropped: usize,
    /// Kept versions left, all folders.
    pub kept: usize,
    /// The version store on disk before, in bytes.
    pub bytes_before: u64,
    /// The version store on disk after, in bytes.
    pub bytes_after: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_and_restores_survive_a_json_round_trip() {
        let v = Version {
            folder: "docs".into(),
            path: "plan.txt".into(),
            kept_ns: 1_764_483_720_000_000_000,
            content: "ab".repeat(32),
            size: 25,
            available: true,
            ..Version::default()
        };
        let json = serde_json::to_string(&vec![v.clone()]).unwrap();
        assert_eq!(serde_json::from_str::<Vec<Version>>(&json).unwrap(), [v]);
        let r = Restored {
            folder: "docs".into(),
            path: "plan.txt".into(),
            content: "ab".repeat(32),
            size: 25,
            kept_current: Some("cd".repeat(32)),
            note: None,
        };
        let json = serde_json::to_string(&r).unwrap();
        assert_eq!(serde_json::from_str::<Restored>(&json).unwrap(), r);
    }

    #[test]
    fn a_restore_request_may_leave_out_all_but_the_path() {
        let r: RestoreRequest = serde_json::from_str(r#"{ "path": "plan.txt" }"#).unwrap();
        assert_eq!(
            r,
            RestoreRequest {
                path: "plan.txt".into(),
                ..RestoreRequest::default()
            }
        );
    }
}
