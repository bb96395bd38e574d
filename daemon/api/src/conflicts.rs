//! Conflicts through the control API: listing conflict copies (`GET /v1/conflicts`) and
//! resolving one (`POST /v1/resolve`).

use serde::{Deserialize, Serialize};

/// How to resolve a conflict.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Keep {
    /// Keep the version at the name; drop the conflict copy (it stays in history).
    Local,
    /// Put the conflict copy's version at the name.
    Remote,
    /// Keep both: the copy gets an ordinary name.
    Both,
}

/// One conflict copy and the file it conflicts with.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Conflict {
    /// The folder's id.
    pub folder: String,
    /// The conflict copy.
    pub copy: String,
    /// The path it is a copy of.
    pub original: String,
    /// The device whose version the copy holds (a name for people).
    pub copy_device: String,
    /// The copy's modification time, ns since the epoch.
    pub copy_mtime_ns: i64,
    /// The device whose version is at the name; none if the name is gone.
    pub original_device: Option<String>,
    /// That version's modification time, ns since the epoch.
    pub original_mtime_ns: Option<i64>,
}

/// `POST /v1/resolve`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResolveRequest {
    /// The conflict copy, or the file it conflicts with (folder-relative).
    pub path: String,
    /// Which version to keep.
    pub keep: Keep,
}

/// The answer to `POST /v1/resolve`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resolved {
    /// What was done, for people.
    pub resolved: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conflicts_survive_a_json_round_trip() {
        let c = Conflict {
            folder: "docs".into(),
            copy: "a.sync-conflict-20261122-101010-ABCD.txt".into(),
            original: "a.txt".into(),
            copy_device: "laptop".into(),
            copy_mtime_ns: 1_764_483_720_000_000_000,
            original_device: None,
            original_mtime_ns: Some(-5),
        };
        let json = serde_json::to_string(&vec![c.clone()]).unwrap();
        assert_eq!(serde_json::from_str::<Vec<Conflict>>(&json).unwrap(), [c]);
    }

    #[test]
    fn keep_is_spelled_in_lowercase() {
        let r = ResolveRequest {
            path: "a.txt".into(),
            keep: Keep::Both,
        };
        assert_eq!(
            serde_json::to_string(&r).unwrap(),
            r#"{"path":"a.txt","keep":"both"}"#
        );
        for (k, word) in [(Keep::Local, "local"), (Keep::Remote, "remote")] {
            assert_eq!(
                serde_json::from_str::<Keep>(&format!("\"{word}\"")).unwrap(),
                k
            );
        }
    }
}
