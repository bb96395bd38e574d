//! One folder as the node sees it: its document, the sync state of each peer, and the
//! schedule of its scans and pulls (what is due, what runs, when to retry).

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::{Duration, Instant};

use crate::ContentId;
use crate::folder::doc::{Changed, Heads};
use crate::folder::{DeviceId, EntryValue, FolderDoc, PathRange, PeerSync};

/// Paths (or directories) scanned at most in one partial scan. More changed paths are
/// gathered into their directories, deepest first, until they fit; only when the
/// top-level names do not fit either (or the root itself changed) is it a full scan.
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
    ///
    /// A pull that writes 50,000 files, or a copy of a large tree, reports that many
    /// paths: they are gathered into their directories (see [`MAX_SCAN_PATHS`]), so the
    /// scan reads those directories' entries, not the whole folder's. (Each window of a
    /// pass over a 1,000,000-file folder made a full scan that loaded every index entry,
    /// 465 to 825 MiB, and restarted the pass.)
    pub fn paths(&mut self, paths: impl IntoIterator<Item = String>) {
        match self {
            ScanNeed::All => {}
            ScanNeed::Nothing => *self = ScanNeed::Paths(paths.into_iter().collect()),
            ScanNeed::Paths(set) => set.extend(paths),
        }
        if let ScanNeed::Paths(set) = self
            && (set.contains("") || !gather(set))
        {
            *self = ScanNeed::All;
        }
    }

    /// A scan is due.
    pub fn is_due(&self) -> bool {
        !matches!(self, ScanNeed::Nothing)
    }
}

/// Brings `set` to at most [`MAX_SCAN_PATHS`] paths covering the same subtrees: the
/// deepest paths are replaced by their directories, and paths under another one in the
/// set are dropped, level by level. False if even the top-level names are too many.
fn gather(set: &mut BTreeSet<String>) -> bool {
    let depth = |p: &str| p.bytes().filter(|&b| b == b'/').count();
    while set.len() > MAX_SCAN_PATHS {
        let Some(deepest) = set.iter().map(|p| depth(p)).max() else {
            return true;
        };
        if deepest == 0 {
            return false;
        }
        let lifted: BTreeSet<String> = std::mem::take(set)
            .into_iter()
            .map(|p| match p.rfind('/') {
                Some(cut) if depth(&p) == deepest => p[..cut].to_string(),
                _ => p,
            })
            .collect();
        *set = lifted
            .iter()
            .filter(|p| !ancestors(p).any(|a| lifted.contains(a)))
            .cloned()
            .collect();
    }
    true
}

/// The directories above `path`, nearest first (not the root).
fn ancestors(path: &str) -> impl Iterator<Item = &str> {
    path.rmatch_indices('/').map(move |(cut, _)| &path[..cut])
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

/// A version this device asked for at a path (a restore from the group, a rewind).
#[derive(Clone, Debug)]
pub(crate) struct Requested {
    pub content: ContentId,
    /// The value it replaced.
    pub prior: EntryValue,
    /// When it was asked for.
    pub at: Instant,
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
    /// The version each requested change (a restore from the group, a rewind) asked for
    /// and the value it replaced, by path, until the folder is next in sync: a requested
    /// version that turns out to be lost (no device can provide it) is put back to the
    /// value it replaced, not deleted. Stored by the driver on every change
    /// ([`super::Action::SaveRequested`]) and given back after a restart
    /// ([`super::Node::restore_requested`]).
    pub(crate) requested: BTreeMap<String, Requested>,
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
    /// What the scan running now covers (all, or these paths), scanned again if it
    /// reports more; Nothing when no scan runs.
    pub(crate) scanning: ScanNeed,
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
            requested: BTreeMap::new(),
            conflicts: BTreeSet::new(),
            dirty: Changed::All,
            planned_at: None,
            pulling: None,
            scanning: ScanNeed::Nothing,
            pass: VecDeque::new(),
        }
    }

    /// A pull found the disk matching the tree: nothing is waiting or short of space, and
    /// no requested version needs its prior value any more.
    pub(crate) fn mark_in_sync(&mut self) {
        self.in_sync = true;
        self.requested.clear();
        self.waiting.clear();
        self.no_space = false;
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
        assert_eq!(s, ScanNeed::All, "more top-level names than fit");
        let mut r = ScanNeed::Nothing;
        r.paths(["".to_string()]);
        assert_eq!(r, ScanNeed::All);
        r.paths(["b".to_string()]);
        assert_eq!(r, ScanNeed::All, "a full scan stays full");
    }

    #[test]
    fn many_changed_files_are_gathered_into_their_directories() {
        // A window pull writing 50 directories of 1,000 files each, and one file deeper.
        let mut s = ScanNeed::Nothing;
        s.paths(["top.txt".to_string(), "d7/sub/deep/x".to_string()]);
        for d in 0..50 {
            s.paths((0..1000).map(|i| format!("d{d}/f{i}")));
        }
        let ScanNeed::Paths(set) = &s else {
            panic!("a partial scan was expected, got {s:?}");
        };
        let mut expected: BTreeSet<String> = (0..50).map(|d| format!("d{d}")).collect();
        expected.insert("top.txt".to_string());
        assert_eq!(set, &expected, "d7/sub/deep/x lies under d7");
        // Every changed path stays covered by a scanned path at or above it.
        for p in ["top.txt", "d7/sub/deep/x", "d49/f999"] {
            assert!(
                set.contains(p) || ancestors(p).any(|a| set.contains(a)),
                "{p}"
            );
        }
    }

    #[test]
    fn gathering_lifts_the_deepest_paths_first() {
        let mut set: BTreeSet<String> = (0..MAX_SCAN_PATHS)
            .map(|i| format!("a/b/{i}"))
            .chain(["c/d".to_string(), "e".to_string()])
            .collect();
        assert!(gather(&mut set));
        let expected: BTreeSet<String> = ["a/b", "c/d", "e"].map(String::from).into();
        assert_eq!(
            set, expected,
            "c/d and e were not deepest: they stay as they are"
        );
        // A few changes stay exactly as reported.
        let mut few: BTreeSet<String> = ["a/b/c", "a/b"].map(String::from).into();
        assert!(gather(&mut few));
        assert_eq!(few.len(), 2, "under the limit nothing is gathered");
    }
}
