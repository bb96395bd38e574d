//! How a client reaches the daemon: `control.json` in the daemon's home, and the routes
//! of the control API.

use serde::{Deserialize, Serialize};

/// The file in the daemon's home that says where its control API listens (mode 0600).
pub const CONTROL_FILE: &str = "control.json";

/// What clients read from [`CONTROL_FILE`] to reach the daemon.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ControlInfo {
    /// `127.0.0.1:PORT`.
    pub address: String,
    /// Bearer token.
    pub token: String,
    /// Daemon process id.
    pub pid: u32,
    /// This device's id.
    pub device_id: String,
}

/// The answer of requests that only succeed or fail (`/v1/rescan`, `/v1/shutdown`,
/// `/v1/decline`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ack {
    /// Always true.
    pub ok: bool,
}

/// The paths the daemon serves, one constant per route, for the router and the client.
pub mod routes {
    /// `GET`: [`Status`](crate::status::Status).
    pub const STATUS: &str = "/v1/status";
    /// `POST ?folder=ID`: scan one folder or all now; [`Ack`](super::Ack).
    pub const RESCAN: &str = "/v1/rescan";
    /// `POST`: stop the daemon; [`Ack`](super::Ack).
    pub const SHUTDOWN: &str = "/v1/shutdown";
    /// `GET`: counters in Prometheus text format.
    pub const METRICS: &str = "/metrics";
    /// `POST`: open an invitation; `GET ?wait=S`: where it stands.
    /// [`InviteStatus`](crate::pairing::InviteStatus) both.
    pub const PAIR_INVITE: &str = "/v1/pair/invite";
    /// `POST` [`JoinRequest`](crate::pairing::JoinRequest):
    /// [`Paired`](crate::pairing::Paired).
    pub const PAIR_JOIN: &str = "/v1/pair/join";
    /// `POST` [`ShareRequest`](crate::folders::ShareRequest):
    /// [`Shared`](crate::folders::Shared).
    pub const SHARE: &str = "/v1/share";
    /// `POST` [`AcceptRequest`](crate::folders::AcceptRequest):
    /// [`Accepted`](crate::folders::Accepted).
    pub const ACCEPT: &str = "/v1/accept";
    /// `POST` [`DeclineRequest`](crate::folders::DeclineRequest): [`Ack`](super::Ack).
    pub const DECLINE: &str = "/v1/decline";
    /// `POST` [`FolderRequest`](crate::folders::FolderRequest):
    /// [`PauseState`](crate::folders::PauseState).
    pub const PAUSE: &str = "/v1/pause";
    /// `POST` [`FolderRequest`](crate::folders::FolderRequest):
    /// [`PauseState`](crate::folders::PauseState).
    pub const RESUME: &str = "/v1/resume";
    /// `GET`: [`Conflict`](crate::conflicts::Conflict)s.
    pub const CONFLICTS: &str = "/v1/conflicts";
    /// `POST` [`ResolveRequest`](crate::conflicts::ResolveRequest):
    /// [`Resolved`](crate::conflicts::Resolved).
    pub const RESOLVE: &str = "/v1/resolve";
    /// `GET ?folder=ID&path=P&deleted=true`: [`Version`](crate::history::Version)s of the
    /// group, newest first.
    pub const HISTORY: &str = "/v1/history";
    /// `POST` [`RestoreRequest`](crate::history::RestoreRequest):
    /// [`Restored`](crate::history::Restored).
    pub const RESTORE: &str = "/v1/restore";
    /// `POST`: drops the kept versions the folders' rules no longer keep, now:
    /// [`Pruned`](crate::history::Pruned).
    pub const PRUNE: &str = "/v1/history/prune";
    /// `POST` [`RewindRequest`](crate::history::RewindRequest):
    /// [`Rewound`](crate::history::Rewound).
    pub const REWIND: &str = "/v1/rewind";
}
