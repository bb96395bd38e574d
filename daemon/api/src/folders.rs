//! Folders as people manage them through the control API: sharing (`POST /v1/share`),
//! offers and accepting or declining them (`/v1/accept`, `/v1/decline`), pausing and
//! resuming (`/v1/pause`, `/v1/resume`) and rescanning (`/v1/rescan`).

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// How a folder takes part in sync, as in Syncthing.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FolderType {
    /// Local changes are sent, remote changes are applied.
    #[default]
    SendReceive,
    /// Local changes are sent; remote changes are not applied here.
    SendOnly,
    /// Remote changes are applied; local changes are not sent.
    ReceiveOnly,
}

impl FolderType {
    /// The type's name as JSON and `config.toml` spell it (`send-receive`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            FolderType::SendReceive => "send-receive",
            FolderType::SendOnly => "send-only",
            FolderType::ReceiveOnly => "receive-only",
        }
    }
}

/// A folder a trusted peer wants to share with this device.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Offer {
    /// Folder id.
    pub folder: String,
    /// The offering device.
    pub from: String,
    /// Its name.
    pub from_name: String,
}

/// `POST /v1/share`: offer a folder to a paired device, adding it first if it is a new
/// directory.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShareRequest {
    /// A folder id, or an absolute directory (added as a new folder if it is none yet).
    pub folder: String,
    /// The device to offer it to, by name or id; none only adds the folder.
    pub device: Option<String>,
    /// How the folder syncs on this device; unchanged (or send-receive) if left out.
    #[serde(rename = "type")]
    pub kind: Option<FolderType>,
}

/// The answer to `POST /v1/share`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Shared {
    /// The shared folder's id.
    pub folder: String,
}

/// `POST /v1/accept`: take an offered folder into a directory.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AcceptRequest {
    /// The offered folder's id.
    pub folder: String,
    /// Where to put it (absolute).
    pub path: PathBuf,
    /// How the folder syncs on this device; send-receive if left out.
    #[serde(rename = "type")]
    pub kind: Option<FolderType>,
}

/// The answer to `POST /v1/accept`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Accepted {
    /// This device's folders that were at the path and joined the accepted one (retired).
    pub joined: Vec<String>,
    /// Always true.
    pub ok: bool,
}

/// `POST /v1/decline`: decline an offer.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeclineRequest {
    /// The offered folder's id.
    pub folder: String,
}

/// `POST /v1/pause` and `POST /v1/resume`: one folder, or all.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FolderRequest {
    /// Folder id or path; every folder if left out.
    pub folder: Option<String>,
}

/// The answer to `POST /v1/pause` and `POST /v1/resume`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PauseState {
    /// Always true.
    pub ok: bool,
    /// Whether the folders are now paused.
    pub paused: bool,
}

/// The query of `POST /v1/rescan`: one folder (`?folder=ID`), or all.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FolderQuery {
    /// Folder id; every folder if left out.
    pub folder: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folder_types_are_spelled_as_json_spells_them() {
        for t in [
            FolderType::SendReceive,
            FolderType::SendOnly,
            FolderType::ReceiveOnly,
        ] {
            let json = serde_json::to_string(&t).unwrap();
            assert_eq!(json, format!("\"{}\"", t.as_str()));
            assert_eq!(serde_json::from_str::<FolderType>(&json).unwrap(), t);
        }
    }

    #[test]
    fn requests_keep_their_wire_names() {
        let share = ShareRequest {
            folder: "/home/me/docs".into(),
            device: Some("laptop".into()),
            kind: Some(FolderType::ReceiveOnly),
        };
        let json = serde_json::to_value(&share).unwrap();
        assert_eq!(
            json,
            serde_json::json!({ "folder": "/home/me/docs", "device": "laptop", "type": "receive-only" })
        );
        assert_eq!(serde_json::from_value::<ShareRequest>(json).unwrap(), share);
        // Fields a client leaves out are none.
        let accept: AcceptRequest =
            serde_json::from_str(r#"{ "folder": "photos", "path": "/p" }"#).unwrap();
        assert_eq!(accept.kind, None);
        let all: FolderRequest = serde_json::from_str("{}").unwrap();
        assert_eq!(all.folder, None);
    }

    #[test]
    fn answers_keep_their_shape() {
        let accepted = Accepted {
            joined: vec!["sync-1a2b3c".into()],
            ok: true,
        };
        assert_eq!(
            serde_json::to_string(&accepted).unwrap(),
            r#"{"joined":["sync-1a2b3c"],"ok":true}"#
        );
        assert_eq!(
            serde_json::to_string(&PauseState {
                ok: true,
                paused: false
            })
            .unwrap(),
            r#"{"ok":true,"paused":false}"#
        );
    }
}
