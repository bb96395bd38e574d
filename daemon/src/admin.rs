//! What people change through the control API: sharing folders, accepting offers,
//! pausing, resolving conflicts, and (in `history.rs`) listing and restoring kept versions.
//! Every configuration change is saved to `config.toml`.

use std::path::PathBuf;

use tokio::sync::oneshot;

use crate::config::FolderType;
use crate::history::{RestoreRequest, Restored, Version};

pub use cairn_api::conflicts::{Conflict, Keep};
pub use cairn_api::error::ApiError;
pub use cairn_api::folders::Offer;

/// Declined offers remembered; the oldest are forgotten past this.
pub(crate) const MAX_DECLINED: usize = 256;

/// How a new folder's directory relates to an existing folder's.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Overlap {
    Same,
    /// The existing folder is inside the new one.
    Contains,
    /// The new folder would be inside the existing one.
    Inside,
}

impl Overlap {
    pub(crate) fn describe(self) -> &'static str {
        match self {
            Overlap::Same => "already is",
            Overlap::Contains => "contains",
            Overlap::Inside => "is inside",
        }
    }
}

pub(crate) fn no_offer(folder: &str) -> ApiError {
    ApiError::NotFound(format!(
        "no device offered a folder {folder:?}; `cairn status` lists offers"
    ))
}

/// Requests that change or list configuration and folder state.
pub enum AdminRequest {
    Share {
        folder: String,
        device: Option<String>,
        kind: Option<FolderType>,
        reply: oneshot::Sender<Result<String, ApiError>>,
    },
    Accept {
        folder: String,
        path: PathBuf,
        kind: Option<FolderType>,
        /// The ids of this device's folders that the accepted one joined (retired).
        reply: oneshot::Sender<Result<Vec<String>, ApiError>>,
    },
    Decline {
        folder: String,
        reply: oneshot::Sender<Result<(), ApiError>>,
    },
    Pause {
        folder: Option<String>,
        paused: bool,
        reply: oneshot::Sender<Result<(), ApiError>>,
    },
    Conflicts(oneshot::Sender<Vec<Conflict>>),
    Resolve {
        path: String,
        keep: Keep,
        reply: oneshot::Sender<Result<String, ApiError>>,
    },
    History {
        query: cairn_api::history::HistoryQuery,
        reply: oneshot::Sender<Result<Vec<Version>, ApiError>>,
    },
    Rewind {
        request: cairn_api::history::RewindRequest,
        reply: oneshot::Sender<Result<cairn_api::history::Rewound, ApiError>>,
    },
    Restore {
        request: RestoreRequest,
        reply: oneshot::Sender<Result<Restored, ApiError>>,
    },
    Prune {
        reply: oneshot::Sender<Result<crate::versions::Pruned, ApiError>>,
    },
}
