//! One folder as the node sees it: its document, the sync state of each peer, and the
//! schedule of its scans and pulls (what is due, what runs, when to retry).

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::{Duration, Instant};

use crate::ContentId;
use crate::folder::doc::{Changed, Heads};
use crate::folder::{DeviceId, FolderDoc, PathRange, PeerSync};

/// Paths scanned at most in one partial scan; more changes make it a full scan.
pub const MAX_SCAN_PATHS: usize = 1000;

/// What a device does with a folder.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FolderKind {
    /// Local changes go out, peers' changes come in.
    #[default]
    SendReceive,
    /// Local changes go out; peers' changes are not written here.
    SendOnly,
    /// Peers' changes are written here; local changes are not sent.
    ReceiveOnly,
}

/// What the folder is doing now; at most one job runs per folder, so a scan never sees a
/// half-applied pull.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Busy {
    Idle,
    Scanning,
    Pulling,
    /// Copying a kept version back.
    Restoring,
}

/// What the next scan of a folder must cover.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum ScanNeed {
    #[default]
    Nothing,
    /// Only these folder-relative paths (and what lies under them) changed.
    Paths(BTreeSet<String>),
    /// Everything (start, periodic safety net, resume, a lost watcher event, ...).
    All,
}

impl ScanNeed {
    /// The whole folder must be scanned.
    pub fn all(&mut self) {
        *self = ScanNeed::All;
    }

    /// `paths` changed; a partial scan covers them unless a full one is due anyway.
    pub fn paths(&mut self, paths: impl IntoIterator<Item = String>) {
        match self {
            ScanNeed::All => {}
            ScanNeed::Nothing => *self = ScanNeed::Paths(paths.into_iter().collect()),
            ScanNeed::Paths(set) => set.extend(paths),
        }
        if let ScanNeed::Paths(set) = self
            && (set.len() > MAX_SCAN_PATHS || set.contains(""))
        {
            *self = ScanNeed::All;
        }
    }

    /// A scan is due.
    pub fn is_due(&self) -> bool {
        !matches!(self, ScanNeed::Nothing)
    }
}

/// A path this device refuses to write, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refused {
    /// Why, for people.
    pub reason: String,
    /// The device that wrote the entry.
    pub author: Option<DeviceId>,
    /// The refused version (None: the path itself is refused).
    pub content: Option<ContentId>,
}

/// A file waiting for a version that only another device has.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Waiting {
    pub path: String,
    /// The device that made the version.
    pub author: DeviceId,
}

/// How a folder is set up (from the device's configuration).
#[derive(Clone, Debug)]
pub struct FolderSpec<P> {
    pub id: String,
    pub kind: FolderKind,
    pub paused: bool,
    /// Devices the folder is shared with.
    pub members: Vec<P>,
    /// The periodic full rescan (the safety net under the watcher).
    pub rescan_interval: Duration,
    /// The watcher runs; without it the folder is rescanned every [`super::FALLBACK_RESCAN`].
    pub watcher_ok: bool,
}

/// One folder's state in the node.
pub struct FolderState<P> {
    pub spec: FolderSpec<P>,
    pub doc: FolderDoc,
    /// Sync state of the rounds this device starts with each connected member (our
    /// requests, their answers). Rounds a peer starts have their own state
    /// ([`FolderState::answering`]): automerge's sync protocol needs the messages of one
    /// state in order, and requests and answers of the two directions cross on the wire
    /// (sharing one state, two devices could exchange messages forever with neither sending
    /// the changes the other needs; the node simulation found it).
    pub(crate) asking: BTreeMap<P, PeerSync>,
    /// Sync state of the rounds each member starts with this device.
    pub(crate) answering: BTreeMap<P, PeerSync>,
    pub busy: Busy,
    pub scan: ScanNeed,
    pub needs_pull: bool,
    /// The last pull planned nothing.
    pub in_sync: bool,
    /// When the last full scan started (the periodic rescan counts from it).
    pub(crate) last_full_scan: Instant,
    /// When the scan running now (or the last one) started, full or partial.
    pub(crate) scan_started: Instant,
    pub(crate) last_scan_took: Duration,
    pub(crate) scan_done_at: Option<Instant>,
    pub(crate) retry_pull_at: Option<Instant>,
    pub last_error: Option<String>,
    /// Files the last pull could not get because no connected peer has their version.
    pub waiting: Vec<Waiting>,
    /// The last pull failed only for versions no connected peer has.
    pub(crate) waiting_only: bool,
    /// Entries refused, by path (never retried while they stay as they are).
    pub refused: BTreeMap<String, Refused>,
    /// The last pull stopped for lack of disk space.
    pub no_space: bool,
    /// `cairn restore` requests waiting for the folder to be idle.
    pub(crate) restores: usize,
    /// Conflict copies in the folder's tree, as of the last time it was derived (each
    /// pull): what `cairn conflicts` lists, without reading the index.
    pub conflicts: BTreeSet<String>,
    /// Paths the next pull must plan: what the document changed at since the last pull,
    /// what a scan found unrecorded, and the scope of a pull that did not finish. All of
    /// them at start, after every full scan and after a pull raced a local change.
    pub(crate) dirty: Changed,
    /// When the last pull's tree was derived: the partial tree of the next pull is
    /// compared with the tree of that moment.
    pub(crate) planned_at: Option<Heads>,
    /// The scope of the pull running now (None: the whole folder).
    pub(crate) pulling: Option<BTreeSet<String>>,
    /// The scan running now covers the whole folder.
    pub(crate) scanning_all: bool,
    /// Windows of a pass over the whole folder still to plan, in order (a large folder
    /// is planned window by window, so no pull holds its whole tree; see
    /// [`super::Node::set_pull_window`]).
    pub(crate) pass: VecDeque<PathRange>,
}

impl<P: Ord> FolderState<P> {
    pub(crate) fn new(now: Instant, spec: FolderSpec<P>, doc: FolderDoc) -> Self {
        FolderState {
            spec,
            doc,
            asking: BTreeMap::new(),
            answering: BTreeMap::new(),
            busy: Busy::Idle,
            scan: ScanNeed::All,
            needs_pull: true,
            in_sync: false,
            last_full_scan: now,
            scan_started: now,
            last_scan_took: Duration::ZERO,
            scan_done_at: None,
            retry_pull_at: None,
            last_error: None,
            waiting: Vec::new(),
            waiting_only: false,
            refused: BTreeMap::new(),
            no_space: false,
            restores: 0,
            conflicts: BTreeSet::new(),
            dirty: Changed::All,
            planned_at: None,
            pulling: None,
            scanning_all: false,
            pass: VecDeque::new(),
        }
    }

    /// Nothing to do and nothing running: what `in_sync` means to a user.
    pub fn settled(&self) -> bool {
        self.in_sync && self.busy == Busy::Idle && !self.needs_pull && !self.scan.is_due()
    }

    /// Whether `peer` shares this folder.
    pub fn has_member(&self, peer: &P) -> bool {
        self.spec.members.contains(peer)
    }

    /// The state word `cairn status` shows.
    pub fn state_word(&self) -> &'static str {
        if self.spec.paused {
            return "paused";
        }
        match self.busy {
            Busy::Scanning => "scanning",
            Busy::Pulling => "syncing",
            Busy::Restoring => "restoring",
            Busy::Idle if self.no_space => "no_space",
            Busy::Idle if self.last_error.is_some() => "error",
            Busy::Idle if !self.waiting.is_empty() => "waiting",
            Busy::Idle => "idle",
        }
    }

    /// The next scan is allowed now: while changes keep coming (a big copy), at least twice
    /// the last scan's duration passes between scans, so scanning takes at most a third of
    /// the time instead of walking a growing folder back to back. A lone change is scanned
    /// at once.
    pub(crate) fn scan_gap_over(&self, now: Instant) -> bool {
        self.scan_done_at
            .is_none_or(|done| now.saturating_duration_since(done) >= 2 * self.last_scan_took)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn many_changed_paths_or_the_root_make_a_full_scan() {
        let mut s = ScanNeed::Nothing;
        s.paths(["a".to_string()]);
        assert_eq!(s, ScanNeed::Paths(["a".to_string()].into()));
        s.paths((0..MAX_SCAN_PATHS).map(|i| i.to_string()));
        assert_eq!(s, ScanNeed::All);
        let mut r = ScanNeed::Nothing;
        r.paths(["".to_string()]);
        assert_eq!(r, ScanNeed::All);
        r.paths(["b".to_string()]);
        assert_eq!(r, ScanNeed::All, "a full scan stays full");
    }
}
