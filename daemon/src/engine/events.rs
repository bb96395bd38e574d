//! What reaches the loop from outside it: events from threads and tasks, and the
//! control API's requests.

use std::sync::Arc;

use libp2p::PeerId;
use libp2p::request_response::{InboundRequestId, ResponseChannel};
use tokio::sync::oneshot;

use super::Status;

/// Something that happened off the loop.
pub enum Event {
    ScanDone {
        folder: String,
        result: Result<cairn_core::node::ScanDone, String>,
        read_files: u64,
        read_bytes: u64,
    },
    PullDone {
        folder: String,
        outcome: cairn_core::node::PullDone,
    },
    FsChanged {
        folder: String,
        /// Absolute paths that changed; empty when everything must be scanned.
        paths: Vec<std::path::PathBuf>,
    },
    RestoreDone {
        folder: String,
        changed: bool,
    },
    WatcherFailed {
        folder: String,
        error: String,
    },
    BlocksReady {
        channel: ResponseChannel<Vec<u8>>,
        peer: PeerId,
        request_id: InboundRequestId,
        response: crate::serve::Encoded,
    },
    Control(ControlRequest),
    /// Kept versions and the version store's size, counted off the loop.
    VersionsCounted {
        kept: usize,
        bytes: u64,
    },
    /// Changes the user asked for (a restore from the group, a rewind), checked off the
    /// loop: recorded as local changes, then `done` is told whether they were.
    Requested {
        folder: String,
        changes: crate::group::Requested,
        done: Box<dyn FnOnce(bool) + Send>,
    },
}

impl Event {
    /// What the event is, for `slow_turn` logs.
    pub(super) fn kind(&self) -> &'static str {
        match self {
            Event::ScanDone { .. } => "scan_done",
            Event::PullDone { .. } => "pull_done",
            Event::FsChanged { .. } => "fs_changed",
            Event::RestoreDone { .. } => "restore_done",
            Event::WatcherFailed { .. } => "watcher_failed",
            Event::BlocksReady { .. } => "blocks_ready",
            Event::Control(ControlRequest::Status(_)) => "control_status",
            Event::Control(_) => "control",
            Event::VersionsCounted { .. } => "versions_counted",
            Event::Requested { .. } => "requested",
        }
    }
}

/// A question from the control API.
pub enum ControlRequest {
    Status(oneshot::Sender<Status>),
    Metrics(oneshot::Sender<String>),
    Rescan {
        folder: Option<String>,
        reply: oneshot::Sender<Result<(), crate::admin::ApiError>>,
    },
    Shutdown,
    Admin(crate::admin::AdminRequest),
    Pair(crate::pair::PairCtl),
}

/// The last published status: the control API answers `/v1/status` from it without
/// going through the loop, so a long turn (recording 100,000 scanned changes, deriving a
/// large tree) never holds up the answer; it is at most [`STATUS_EVERY`] older than the
/// last turn.
pub type StatusFeed = tokio::sync::watch::Receiver<Option<Arc<Status>>>;
