//! The node: everything a device decides, as a state machine with no I/O (as
//! `quinn-proto` is for QUIC).
//!
//! It owns the folder documents, each peer's sync state, who is trusted and connected,
//! offers of folders, the conduct record of misbehaving peers, the schedule of scans and
//! pulls per folder, and the recent-changes feed. Inputs are `handle_*` calls with the
//! time passed in; outputs are [`Action`]s taken with [`Node::poll_action`]. The daemon
//! carries actions out with real disks, sockets and threads; the simulation in
//! `core/tests` carries them out on simulated ones, so both run the same decisions.
//!
//! Invariants:
//! - Per folder at most one job (scan, pull or restore) runs at a time ([`Busy`]).
//! - A change recorded in a document is persisted ([`Action::Persist`]) before any
//!   message that carries it is sent ([`Action::SendMeta`]): actions are carried out in
//!   the order they are polled.
//! - At most one meta request is in flight per (folder, peer).
//! - Everything a peer sends goes through [`Node::handle_meta_request`] /
//!   [`Node::handle_meta_response`]; a message that does not decode or apply is a
//!   [`Violation`], reported as an action, and its sender disconnected.

mod folder;

use folder::Requested;
pub use folder::{
    Busy, FolderKind, FolderSpec, FolderState, MAX_SCAN_PATHS, Refused, ScanNeed, Waiting,
};

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::fmt::Display;
use std::hash::Hash;
use std::time::{Duration, Instant};

use crate::ContentId;
use crate::conduct::{Conduct, Verdict, Violation};
use crate::folder::doc::Changed;
use crate::folder::tree::ConflictCopyName;
use crate::folder::{
    DeviceId, EntryValue, FolderMessage, LocalChange, PathRange, Tree, TreeOptions,
};
use crate::wire::{MetaRequest, MetaResponse};

/// Redial trusted peers that are not connected this often.
pub const REDIAL: Duration = Duration::from_secs(5);
/// Retry a meta round that failed (lost, timed out) with the peer still connected after
/// this long.
pub const META_RETRY: Duration = Duration::from_secs(2);
/// Retry a pull that failed after this long.
pub const PULL_RETRY: Duration = Duration::from_secs(3);
/// Rescan interval when the watcher does not work.
pub const FALLBACK_RESCAN: Duration = Duration::from_secs(10);
/// Offers of folders remembered per peer.
pub const MAX_OFFERS_PER_PEER: usize = 16;
/// Offers of folders remembered in all.
pub const MAX_OFFERS: usize = 64;
/// An offer not repeated for this long is forgotten (it comes back when the peer offers
/// again).
pub const OFFER_TTL: Duration = Duration::from_secs(3600);
/// Refused paths remembered per folder.
pub const MAX_REFUSED: usize = 1000;

/// At most so many requested versions are remembered per folder with the value they
/// replaced (`FolderState::requested`: a path and an entry value each): past that (a
/// rewind of more files), a requested version that cannot come is dropped as any other.
pub const MAX_REQUESTED: usize = 100_000;
/// How many recent changes the node remembers (a feed, not a log).
pub const RECENT_MAX: usize = 100;
/// A folder with more recorded paths than this is planned in windows of about this many
/// paths when the whole folder is due (see [`Node::set_pull_window`]).
pub const PULL_WINDOW: usize = 50_000;

/// What the node asks its driver to do, in order.
#[derive(Debug)]
pub enum Action<P> {
    /// Scan the folder: only `paths` (and what lies under them), or all of it. Answer with
    /// [`Node::handle_scan_done`].
    Scan {
        folder: String,
        paths: Option<BTreeSet<String>>,
    },
    /// Plan `tree` against the disk and carry the plan out, fetching from `peers`
    /// (connected members, in this order); skip writing the versions in `refused`. Answer
    /// with [`Node::handle_pull_done`]. With a `scope`, `tree` is the part of the tree at
    /// those paths: plan them alone, against the disk there
    /// ([`crate::planner::local_in_scope`]); without one, the whole folder. With a
    /// `window` (one part of a pass over a large folder), the local paths in it that the
    /// scope lacks are reported back as [`PullDone::stray`].
    Pull {
        folder: String,
        tree: Tree,
        scope: Option<BTreeSet<String>>,
        window: Option<PathRange>,
        refused: HashMap<String, ContentId>,
        peers: Vec<P>,
    },
    /// Run the first queued restore of the folder. Answer with
    /// [`Node::handle_restore_done`].
    Restore { folder: String },
    /// Send a meta request (an encoded [`MetaRequest`]); answer with
    /// [`Node::handle_meta_response`] or [`Node::handle_meta_failed`].
    SendMeta {
        peer: P,
        folder: String,
        request: Vec<u8>,
    },
    /// Store these saved shards of the folder's document; `recorded` are scanned paths
    /// whose changes they record (cleared from the unrecorded list in the same write).
    Persist {
        folder: String,
        shards: Vec<(u16, Vec<u8>)>,
        recorded: Vec<String>,
    },
    /// Scanned paths whose changes needed no recording.
    ClearUnrecorded { folder: String, paths: Vec<String> },
    /// Connect to a trusted peer that is not connected.
    Dial { peer: P },
    /// Close every connection of the peer (it broke the protocol).
    Disconnect { peer: P },
    /// A protocol violation was counted: by `peer`, or (None) by the unpaired author of a
    /// document entry. `paired` says whether the offender is a trusted peer.
    Violation {
        peer: Option<P>,
        paired: bool,
        kind: Violation,
        reason: String,
        banned_for: Option<Duration>,
    },
    /// A version this device authored and no longer has was dropped from the document.
    VersionUnavailable {
        folder: String,
        path: String,
        content: ContentId,
    },
    /// Every folder is in sync: manifests learnt from peers are no longer needed.
    PruneRemoteManifests,
    /// Store the folder's requested versions as they are now (replacing what was stored),
    /// each a path, the version asked for and the value it replaced; give them back after
    /// a restart with [`Node::restore_requested`]. Comes before the [`Action::Persist`]
    /// of the change that requested them.
    SaveRequested {
        folder: String,
        requested: Vec<(String, ContentId, EntryValue)>,
    },
}

/// The action that stores the folder's requested versions as they are now.
fn save_requested<P>(id: &str, f: &FolderState<P>) -> Action<P> {
    Action::SaveRequested {
        folder: id.to_string(),
        requested: f
            .requested
            .iter()
            .map(|(path, r)| (path.clone(), r.content, r.prior.clone()))
            .collect(),
    }
}

/// Which round a meta message belongs to: one this device started, or one the peer did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Round {
    Ours,
    Theirs,
}

/// A trusted peer.
#[derive(Clone, Debug)]
pub struct Peer {
    pub name: String,
    pub device: DeviceId,
}

/// A folder a trusted peer offered to this device.
#[derive(Clone, Debug)]
pub struct Offer<P> {
    pub folder: String,
    pub from: P,
    /// When it was last offered.
    pub(crate) at: Instant,
}

/// Where a change came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Origin {
    /// Seen by the scanner.
    Local,
    /// Written by a pull.
    Remote,
}

impl Origin {
    /// The word `cairn status` shows.
    pub fn as_str(self) -> &'static str {
        match self {
            Origin::Local => "local",
            Origin::Remote => "remote",
        }
    }
}

/// One change to a folder, for the recent-changes feed.
#[derive(Clone, Debug)]
pub struct RecentChange {
    pub at: Instant,
    pub folder: String,
    pub path: String,
    /// "added", "modified", "deleted", ...
    pub change: String,
    pub origin: Origin,
}

/// A scanned path whose change the index holds and the document has not recorded.
#[derive(Clone, Debug)]
pub struct Unrecorded {
    pub path: String,
    /// What is there now.
    pub change: LocalChange,
    /// The version it replaced, if any.
    pub previous: Option<ContentId>,
}

/// What a scan found, as the driver reports it.
#[derive(Clone, Debug, Default)]
pub struct ScanDone {
    /// Every change the index holds that the document has not recorded: this scan's,
    /// and any a killed process committed to the index but never recorded.
    pub unrecorded: Vec<Unrecorded>,
    /// The scan's changes for the feed (path, what happened), oldest first.
    pub changes: Vec<(String, String)>,
    /// How many changes the scan saw.
    pub changed: usize,
    /// A problem worth showing (not a file still being written).
    pub problem: Option<String>,
    /// The scan stopped at its budget of reads: the same scope is scanned again at once.
    pub more: bool,
}

/// Why a pull did not write something.
#[derive(Clone, Debug)]
pub enum PullFailure {
    /// No connected peer has what was needed: the folder waits, it is not in error.
    Unavailable,
    /// The disk is too full.
    NoSpace(String),
    /// The version breaks the protocol (a claimed size that differs from its manifest):
    /// never written, its author counted.
    Refused {
        path: String,
        content: ContentId,
        author: DeviceId,
        why: String,
    },
    /// Anything else (I/O, a corrupt write, ...).
    Other(String),
}

/// A file a pull could not write because no connected peer had its version.
#[derive(Clone, Debug)]
pub struct Missing {
    pub path: String,
    pub content: ContentId,
    /// This device has every byte of the version (in a file or in history).
    pub held: bool,
}

/// What a pull did, as the driver reports it.
#[derive(Clone, Debug, Default)]
pub struct PullDone {
    /// The plan was empty: the folder is in sync.
    pub planned_nothing: bool,
    /// Actions carried out.
    pub done: usize,
    pub failed: Vec<PullFailure>,
    /// A local change raced a write (the folder is rescanned).
    pub raced: bool,
    pub missing: Vec<Missing>,
    /// Paths the pull changed (path, what it did), oldest first.
    pub changes: Vec<(String, String)>,
    /// Local paths in the pull's window that its scope did not cover (on the disk, not
    /// recorded in the document): the next pull plans them.
    pub stray: Vec<String>,
}

/// The node of one device.
pub struct Node<P> {
    device: DeviceId,
    name: String,
    options: TreeOptions,
    folders: BTreeMap<String, FolderState<P>>,
    peers: BTreeMap<P, Peer>,
    connected: BTreeSet<P>,
    meta_inflight: BTreeSet<(String, P)>,
    /// Meta rounds that failed while the peer stayed connected, and when to start again.
    meta_retry: BTreeMap<(String, P), Instant>,
    offers: BTreeMap<String, Offer<P>>,
    declined: BTreeSet<(String, P)>,
    conduct: Conduct<P>,
    recent: VecDeque<RecentChange>,
    last_dial: Option<Instant>,
    actions: VecDeque<Action<P>>,
    /// Threads a folder document may use for large batches (see
    /// [`crate::folder::FolderDoc::set_workers`]); 1 keeps everything on the caller's.
    workers: usize,
    /// The wall clock passed in last (ms since the Unix epoch), for new folders.
    clock_ms: i64,
    /// Paths per window of a pass over a large folder (0: never windowed).
    pull_window: usize,
}

impl<P: Copy + Ord + Hash + Display> Node<P> {
    /// A node for device `device`, called `name` for people.
    pub fn new(device: DeviceId, name: String, options: TreeOptions) -> Self {
        Node {
            device,
            name,
            options,
            folders: BTreeMap::new(),
            peers: BTreeMap::new(),
            connected: BTreeSet::new(),
            meta_inflight: BTreeSet::new(),
            meta_retry: BTreeMap::new(),
            offers: BTreeMap::new(),
            declined: BTreeSet::new(),
            conduct: Conduct::default(),
            recent: VecDeque::new(),
            last_dial: None,
            actions: VecDeque::new(),
            workers: 1,
            clock_ms: 0,
            pull_window: PULL_WINDOW,
        }
    }

    /// Lets every folder document record and apply large batches on up to `workers`
    /// threads (the daemon passes its cores; the simulation keeps 1). The result is the
    /// same for any count: shards are independent documents.
    pub fn set_workers(&mut self, workers: usize) {
        self.workers = workers.max(1);
        for f in self.folders.values_mut() {
            f.doc.set_workers(self.workers);
        }
    }

    /// Sets the wall clock (ms since the Unix epoch) that the folders' next changes are
    /// dated with (history and rewind read it). The driver passes it in; the simulation
    /// passes its own.
    pub fn set_clock(&mut self, unix_ms: i64) {
        self.clock_ms = unix_ms;
        for f in self.folders.values_mut() {
            f.doc.set_clock(unix_ms);
        }
    }

    /// When the whole of a folder with more than `paths` recorded paths is due for a
    /// pull (at start, after a full scan, after many changes), it is planned as a pass of
    /// windows of about `paths` paths each, one pull per window, so that no pull holds
    /// the folder's whole tree, plan and index (at 1,000,000 files that is most of a
    /// daemon's memory). Changes that arrive meanwhile go with the next window; a pass
    /// that has to start over (a full scan, a raced pull) goes on from where it is and
    /// wraps around, so no window starves. 0 never windows; the simulation sets a few
    /// paths so passes are tested.
    pub fn set_pull_window(&mut self, paths: usize) {
        self.pull_window = paths;
    }

    /// The next thing to do, if any.
    pub fn poll_action(&mut self) -> Option<Action<P>> {
        self.actions.pop_front()
    }

    // ---- setup ----

    /// Starts syncing a folder (at start, or when one is added or accepted): it is
    /// scanned and pulled, and synced with its connected members.
    pub fn add_folder(
        &mut self,
        now: Instant,
        spec: FolderSpec<P>,
        mut doc: crate::folder::FolderDoc,
    ) {
        doc.set_workers(self.workers);
        doc.set_clock(self.clock_ms);
        let id = spec.id.clone();
        self.offers.remove(&id);
        self.folders
            .insert(id.clone(), FolderState::new(now, spec, doc));
        self.sync_folder(&id);
        self.schedule(now);
    }

    /// Gives a folder back the requested versions it had stored ([`Action::SaveRequested`])
    /// before a restart, after [`Node::add_folder`]: a restore that cannot come after the
    /// restart is still undone, not deleted. Conduct counts from `now` (the restart).
    pub fn restore_requested(
        &mut self,
        now: Instant,
        id: &str,
        requested: Vec<(String, ContentId, EntryValue)>,
    ) {
        let Some(f) = self.folders.get_mut(id) else {
            return;
        };
        for (path, content, prior) in requested.into_iter().take(MAX_REQUESTED) {
            f.requested.insert(
                path,
                Requested {
                    content,
                    prior,
                    at: now,
                },
            );
        }
    }

    /// Stops syncing a folder (retired, or merged into another).
    pub fn remove_folder(&mut self, id: &str) -> Option<FolderState<P>> {
        self.meta_inflight.retain(|(f, _)| f != id);
        self.meta_retry.retain(|(f, _), _| f != id);
        self.folders.remove(id)
    }

    /// Trusts a peer (at start, or once paired): its conduct record starts clean.
    pub fn add_peer(&mut self, peer: P, name: String, device: DeviceId) {
        self.conduct.forget(&peer);
        self.peers.insert(peer, Peer { name, device });
    }

    /// Shares folder `id` with `members`: new connected members are synced at once.
    pub fn set_members(&mut self, now: Instant, id: &str, members: Vec<P>) {
        let Some(f) = self.folders.get_mut(id) else {
            return;
        };
        f.spec.members = members;
        let members = &f.spec.members;
        f.asking.retain(|p, _| members.contains(p));
        f.answering.retain(|p, _| members.contains(p));
        self.sync_folder(id);
        self.schedule(now);
    }

    /// Pauses or resumes a folder; a resumed folder is rescanned, pulled and synced.
    pub fn set_paused(&mut self, now: Instant, id: &str, paused: bool) {
        let Some(f) = self.folders.get_mut(id) else {
            return;
        };
        f.spec.paused = paused;
        if !paused {
            f.scan.all();
            f.needs_pull = true;
            self.sync_folder(id);
        }
        self.schedule(now);
    }

    /// Changes what the device does with a folder.
    pub fn set_kind(&mut self, now: Instant, id: &str, kind: FolderKind) {
        if let Some(f) = self.folders.get_mut(id) {
            f.spec.kind = kind;
            f.needs_pull = true;
        }
        self.schedule(now);
    }

    /// Remembers that the user declined `folder` from `peer`: it is not offered again.
    pub fn decline(&mut self, folder: &str, peer: P) {
        self.offers.remove(folder);
        self.declined.insert((folder.to_string(), peer));
    }

    /// Forgets a declined offer (it was accepted after all).
    pub fn undecline(&mut self, folder: &str) {
        self.declined.retain(|(f, _)| f != folder);
    }

    /// Takes an offer away (accepted or declined).
    pub fn take_offer(&mut self, folder: &str) -> Option<Offer<P>> {
        self.offers.remove(folder)
    }

    // ---- views ----

    /// This device's id.
    pub fn device(&self) -> DeviceId {
        self.device
    }

    /// A folder's state.
    pub fn folder(&self, id: &str) -> Option<&FolderState<P>> {
        self.folders.get(id)
    }

    /// A folder's state, mutable (its document's `heads` need `&mut`; tests and
    /// diagnostics read them).
    pub fn folder_mut(&mut self, id: &str) -> Option<&mut FolderState<P>> {
        self.folders.get_mut(id)
    }

    /// Every folder, by id.
    pub fn folders(&self) -> impl Iterator<Item = (&String, &FolderState<P>)> {
        self.folders.iter()
    }

    /// Trusted peers.
    pub fn peers(&self) -> &BTreeMap<P, Peer> {
        &self.peers
    }

    /// Whether `peer` is connected (and its meta and blocks protocols open).
    pub fn is_connected(&self, peer: &P) -> bool {
        self.connected.contains(peer)
    }

    /// Connected trusted peers.
    pub fn connected(&self) -> impl Iterator<Item = &P> {
        self.connected.iter()
    }

    /// Meta rounds in flight, as (folder, peer).
    pub fn meta_in_flight(&self) -> impl Iterator<Item = &(String, P)> {
        self.meta_inflight.iter()
    }

    /// Offers waiting for `cairn accept`.
    pub fn offers(&self) -> impl Iterator<Item = &Offer<P>> {
        self.offers.values()
    }

    /// The recent-changes feed, newest first.
    pub fn recent(&self) -> impl Iterator<Item = &RecentChange> {
        self.recent.iter()
    }

    /// The conduct record of misbehaving peers.
    pub fn conduct(&self) -> &Conduct<P> {
        &self.conduct
    }

    /// Whether `peer` is banned now.
    pub fn banned(&self, peer: &P, now: Instant) -> bool {
        self.conduct.banned(peer, now)
    }

    /// Whether `peer` is trusted and shares folder `folder`.
    pub fn is_member(&self, folder: &str, peer: &P) -> bool {
        self.peers.contains_key(peer)
            && self.folders.get(folder).is_some_and(|f| f.has_member(peer))
    }

    /// A name for people: "name (this device)", a peer's name, or a short id.
    pub fn device_label(&self, device: DeviceId) -> String {
        if device == self.device {
            return format!("{} (this device)", self.name);
        }
        self.peers
            .values()
            .find(|p| p.device == device)
            .map_or_else(|| device.short(), |p| p.name.clone())
    }

    // ---- inputs: the watcher and the user ----

    /// The watcher saw `paths` (folder-relative) change; None: anything may have.
    pub fn handle_fs_changed(&mut self, now: Instant, id: &str, paths: Option<Vec<String>>) {
        if let Some(f) = self.folders.get_mut(id) {
            match paths {
                Some(p) if !p.is_empty() => f.scan.paths(p),
                _ => f.scan.all(),
            }
        }
        self.schedule(now);
    }

    /// The watcher stopped: periodic rescans take over.
    pub fn handle_watcher_failed(&mut self, now: Instant, id: &str) {
        if let Some(f) = self.folders.get_mut(id) {
            f.spec.watcher_ok = false;
            f.scan.all();
        }
        self.schedule(now);
    }

    /// `cairn rescan`: false if there is no such folder.
    pub fn rescan(&mut self, now: Instant, id: Option<&str>) -> bool {
        let found = match id {
            Some(id) => match self.folders.get_mut(id) {
                Some(f) => {
                    f.scan.all();
                    true
                }
                None => false,
            },
            None => {
                self.folders.values_mut().for_each(|f| f.scan.all());
                true
            }
        };
        self.schedule(now);
        found
    }

    /// Queues a restore; it runs when the folder is idle (also when paused).
    pub fn queue_restore(&mut self, now: Instant, id: &str) {
        if let Some(f) = self.folders.get_mut(id) {
            f.restores += 1;
        }
        self.schedule(now);
    }

    // ---- inputs: jobs ----

    /// A scan ended.
    pub fn handle_scan_done(&mut self, now: Instant, id: &str, result: Result<ScanDone, String>) {
        let Some(f) = self.folders.get_mut(id) else {
            return;
        };
        f.busy = Busy::Idle;
        f.last_scan_took = now.saturating_duration_since(f.scan_started);
        f.scan_done_at = Some(now);
        let scanned = std::mem::take(&mut f.scanning);
        if scanned == ScanNeed::All {
            // The periodic safety net: the next pull plans the whole folder.
            f.dirty = Changed::All;
        }
        let report = match result {
            Ok(r) => r,
            Err(e) => {
                f.last_error = Some(e);
                self.schedule(now);
                return;
            }
        };
        if report.more {
            // The rest of the same scope, without waiting for the gap between scans.
            match scanned {
                ScanNeed::Paths(paths) => f.scan.paths(paths),
                _ => f.scan.all(),
            }
            f.scan_done_at = None;
        }
        f.last_error = report.problem;
        let mut touched = BTreeSet::new();
        if f.spec.kind != FolderKind::ReceiveOnly {
            let changes: Vec<_> = report
                .unrecorded
                .iter()
                .map(|u| (u.path.as_str(), &u.change, u.previous))
                .collect();
            touched = f.doc.record_local_all(&changes);
        }
        let paths: Vec<String> = report.unrecorded.into_iter().map(|u| u.path).collect();
        // Recorded or not (a receive-only folder puts them back), they are planned again.
        f.dirty.add(paths.iter().cloned());
        if report.changed > 0 || !paths.is_empty() {
            // A scan that found nothing new leaves nothing new to pull.
            f.needs_pull = true;
        }
        // The feed keeps the last RECENT_MAX (`remember` drops the oldest).
        self.remember(now, id, report.changes, Origin::Local);
        let Some(f) = self.folders.get_mut(id) else {
            return;
        };
        if !touched.is_empty() {
            f.doc.commit();
            self.persist(id, touched, paths);
            self.sync_folder(id);
        } else if !paths.is_empty() {
            self.actions.push_back(Action::ClearUnrecorded {
                folder: id.to_string(),
                paths,
            });
        }
        self.schedule(now);
    }

    /// A pull ended.
    pub fn handle_pull_done(&mut self, now: Instant, id: &str, outcome: PullDone) {
        let Some(f) = self.folders.get_mut(id) else {
            return;
        };
        f.busy = Busy::Idle;
        let scope = f.pulling.take();
        if outcome.raced {
            f.dirty = Changed::All;
        } else if !outcome.failed.is_empty() || !outcome.missing.is_empty() {
            // What did not happen is planned again.
            match scope {
                Some(paths) => f.dirty.add(paths),
                None => f.dirty = Changed::All,
            }
        }
        // Local paths a window did not cover are planned next, with what changed.
        let stray = !outcome.stray.is_empty();
        f.dirty.add(outcome.stray);
        if outcome.planned_nothing && (stray || !f.pass.is_empty()) {
            // The rest of the pass comes next.
            f.needs_pull = true;
            self.schedule(now);
            return;
        }
        if outcome.planned_nothing {
            self.mark_in_sync(id);
            self.prune_if_all_in_sync();
            self.schedule(now);
            return;
        }
        f.in_sync = false;
        if outcome.raced {
            f.scan.all();
        }
        self.remember(now, id, outcome.changes, Origin::Remote);
        let (waiting, dropped) = self.sort_missing(id, &outcome.missing);
        let Some(f) = self.folders.get_mut(id) else {
            return;
        };
        f.waiting = waiting;
        f.no_space = outcome
            .failed
            .iter()
            .any(|e| matches!(e, PullFailure::NoSpace(_)));
        let error = outcome.failed.iter().find_map(|e| match e {
            PullFailure::NoSpace(m) | PullFailure::Other(m) => Some(m.clone()),
            _ => None,
        });
        let only_refused = !outcome.failed.is_empty()
            && outcome
                .failed
                .iter()
                .all(|e| matches!(e, PullFailure::Refused { .. }));
        f.waiting_only = !outcome.failed.is_empty() && error.is_none();
        if outcome.failed.is_empty() || only_refused {
            f.last_error = None;
            f.needs_pull = outcome.done > 0 || only_refused || stray || !f.pass.is_empty();
        } else {
            // Versions no connected peer has are waiting, not an error.
            f.last_error = error;
            f.retry_pull_at = Some(now + PULL_RETRY);
        }
        if !dropped.is_empty() {
            self.drop_unavailable(id, &dropped);
        }
        for e in outcome.failed {
            if let PullFailure::Refused {
                path,
                content,
                author,
                why,
            } = e
            {
                self.refuse(
                    now,
                    id,
                    &path,
                    Some(content),
                    Some(author),
                    Violation::SizeMismatch,
                    why,
                );
            }
        }
        self.schedule(now);
    }

    /// Records changes the user asked for (versions restored by a rewind or a restore
    /// from the group's history) as this device's local changes: `base` is the content
    /// the change replaces, the one the user saw (the current winner), so it supersedes
    /// it rather than making a conflict. They sync like a scan's, and the folder is
    /// pulled so its disk follows (the versions are written from local chunks, the
    /// version store or peers; what they replace is kept in history first). Returns
    /// whether the document changed. A receive-only folder records nothing.
    pub fn record_requested(
        &mut self,
        now: Instant,
        id: &str,
        changes: &[(String, LocalChange, Option<ContentId>)],
    ) -> bool {
        let Some(f) = self.folders.get_mut(id) else {
            return false;
        };
        if f.spec.kind == FolderKind::ReceiveOnly || changes.is_empty() {
            return false;
        }
        let mut added = false;
        for (path, change, _) in changes {
            if let (LocalChange::Present { content, .. }, [prior]) =
                (change, f.doc.values(path).as_slice())
                && let Some(content) = content
                && f.requested.len() < MAX_REQUESTED
                && !f.requested.contains_key(path)
            {
                f.requested.insert(
                    path.clone(),
                    Requested {
                        content: *content,
                        prior: prior.clone(),
                        at: now,
                    },
                );
                added = true;
            }
        }
        if added {
            self.actions.push_back(save_requested(id, f));
        }
        let refs: Vec<_> = changes
            .iter()
            .map(|(p, c, base)| (p.as_str(), c, *base))
            .collect();
        let touched = f.doc.record_local_all(&refs);
        f.dirty.add(changes.iter().map(|(p, _, _)| p.clone()));
        f.needs_pull = true;
        f.in_sync = false;
        let changed = !touched.is_empty();
        if changed {
            f.doc.commit();
            self.persist(id, touched, Vec::new());
            self.sync_folder(id);
        }
        self.schedule(now);
        changed
    }

    /// A restore ended: the folder is free again, and rescanned so the restore syncs.
    pub fn handle_restore_done(&mut self, now: Instant, id: &str, changed: bool) {
        if let Some(f) = self.folders.get_mut(id) {
            f.busy = Busy::Idle;
            if changed {
                f.scan.all();
            }
        }
        self.schedule(now);
    }

    // ---- inputs: the network ----

    /// A trusted peer is connected with its meta and blocks protocols open: every shared
    /// folder starts a fresh sync with it and is pulled.
    pub fn handle_connected(&mut self, now: Instant, peer: P) {
        if !self.peers.contains_key(&peer) || !self.connected.insert(peer) {
            return;
        }
        let ids: Vec<String> = self
            .folders
            .iter()
            .filter(|(_, f)| f.has_member(&peer))
            .map(|(id, _)| id.clone())
            .collect();
        for id in ids {
            if let Some(f) = self.folders.get_mut(&id) {
                f.asking.insert(peer, f.doc.new_peer());
                f.answering.insert(peer, f.doc.new_peer());
                f.needs_pull = true;
            }
            self.sync_with(&id, peer);
        }
        self.schedule(now);
    }

    /// The peer's last connection closed (or its protocols closed).
    pub fn handle_disconnected(&mut self, peer: P) -> bool {
        self.meta_inflight.retain(|(_, p)| *p != peer);
        // A reconnect starts every round afresh.
        self.meta_retry.retain(|(_, p), _| *p != peer);
        self.connected.remove(&peer)
    }

    /// A meta request from `peer`: the encoded answer to send back. Offers of unknown
    /// folders from trusted peers are remembered; anything malformed is a violation.
    pub fn handle_meta_request(&mut self, now: Instant, peer: P, request: &[u8]) -> Vec<u8> {
        let response = match MetaRequest::decode(request) {
            Err(e) => {
                self.violation(now, peer, Violation::Malformed, &e.to_string());
                MetaResponse::Denied
            }
            Ok(req) if !self.is_member(&req.folder, &peer) => {
                // A paired device offering a folder we do not have: remember the offer
                // for `cairn accept`. The answer is the same Denied.
                self.remember_offer(now, &req.folder, peer);
                MetaResponse::Denied
            }
            Ok(req) => {
                let ok = req
                    .message
                    .as_ref()
                    .is_none_or(|m| self.apply_meta(&req.folder, peer, m, Round::Theirs));
                if ok {
                    let message = self.folders.get_mut(&req.folder).and_then(|f| {
                        let state = f.answering.entry(peer).or_insert_with(|| f.doc.new_peer());
                        f.doc.generate_sync_message(state).map(|m| m.encode())
                    });
                    MetaResponse::Ok { message }
                } else {
                    self.violation(
                        now,
                        peer,
                        Violation::Malformed,
                        "a folder message that does not decode or apply",
                    );
                    MetaResponse::Denied
                }
            }
        };
        self.schedule(now);
        response.encode()
    }

    /// The answer to our meta request about `folder`; true if the peer denied it (it
    /// does not share the folder with this device).
    pub fn handle_meta_response(
        &mut self,
        now: Instant,
        peer: P,
        folder: &str,
        response: &[u8],
    ) -> bool {
        self.meta_inflight.remove(&(folder.to_string(), peer));
        let mut denied = false;
        match MetaResponse::decode(response) {
            Ok(MetaResponse::Ok { message }) => {
                if let Some(m) = message
                    && !self.apply_meta(folder, peer, &m, Round::Ours)
                {
                    self.violation(
                        now,
                        peer,
                        Violation::Malformed,
                        "a folder message that does not decode or apply",
                    );
                } else {
                    self.sync_with(folder, peer);
                }
            }
            Ok(MetaResponse::Denied) => denied = true,
            Err(e) => self.violation(now, peer, Violation::Malformed, &e.to_string()),
        }
        self.schedule(now);
        denied
    }

    /// Our meta request about `folder` got no answer: the message may be lost, so the
    /// sync with this peer starts over, after [`META_RETRY`] if the peer stays connected
    /// (nothing else would start it again before the next local change or reconnect).
    pub fn handle_meta_failed(&mut self, now: Instant, peer: P, folder: &str) {
        self.meta_inflight.remove(&(folder.to_string(), peer));
        if let Some(f) = self.folders.get_mut(folder)
            && let Some(s) = f.asking.get_mut(&peer)
        {
            s.reset();
        }
        self.meta_retry
            .insert((folder.to_string(), peer), now + META_RETRY);
        self.schedule(now);
    }

    /// A violation the driver saw (a frame over its limit, a bad chunk, ...).
    pub fn handle_violation(&mut self, now: Instant, peer: P, kind: Violation, reason: &str) {
        self.violation(now, peer, kind, reason);
    }

    // ---- time ----

    /// Timers: periodic rescans, pull retries, redials, stale offers.
    pub fn handle_timeout(&mut self, now: Instant) {
        for f in self.folders.values_mut() {
            let interval = if f.spec.watcher_ok {
                f.spec.rescan_interval.max(Duration::from_secs(1))
            } else {
                FALLBACK_RESCAN
            };
            if now.saturating_duration_since(f.last_full_scan) >= interval {
                f.scan.all();
            }
            if f.retry_pull_at.is_some_and(|t| now >= t) {
                f.retry_pull_at = None;
                f.needs_pull = true;
            }
        }
        let due: Vec<(String, P)> = self
            .meta_retry
            .iter()
            .filter(|(_, at)| now >= **at)
            .map(|(k, _)| k.clone())
            .collect();
        for (folder, peer) in due {
            self.meta_retry.remove(&(folder.clone(), peer));
            self.sync_with(&folder, peer);
        }
        if self
            .last_dial
            .is_none_or(|t| now.saturating_duration_since(t) >= REDIAL)
        {
            self.last_dial = Some(now);
            self.dial_missing(now);
        }
        self.offers
            .retain(|_, o| now.saturating_duration_since(o.at) < OFFER_TTL);
        self.schedule(now);
    }

    /// When a scan that waits only for the gap between scans of its folder may start: the
    /// driver wakes the node then ([`Self::handle_timeout`]), not at its next periodic tick
    /// (up to 500 ms later, while a peer waits for the files). It may have passed already
    /// (the driver was busy): then at once. Never the same time twice: a timeout at or
    /// after it starts that scan (or a restore), so the folder is no longer idle.
    pub fn scan_wake_at(&self) -> Option<Instant> {
        self.folders
            .values()
            .filter(|f| f.busy == Busy::Idle && !f.spec.paused && f.scan.is_due())
            .filter_map(|f| f.scan_done_at.map(|done| done + 2 * f.last_scan_took))
            .min()
    }

    /// Redial at the next timeout (after a reconnect was forced).
    pub fn redial_soon(&mut self) {
        self.last_dial = None;
    }

    // ---- the schedule ----

    /// Starts what is due on idle folders: a queued restore first, then a scan, then a
    /// pull.
    fn schedule(&mut self, now: Instant) {
        let ids: Vec<String> = self.folders.keys().cloned().collect();
        for id in ids {
            let Some(f) = self.folders.get_mut(&id) else {
                continue;
            };
            if f.busy != Busy::Idle {
                continue;
            }
            // A restore goes first, and also runs in a paused folder (it syncs on resume).
            if f.restores > 0 {
                f.restores -= 1;
                f.busy = Busy::Restoring;
                self.actions.push_back(Action::Restore { folder: id });
                continue;
            }
            if f.spec.paused {
                continue;
            }
            if f.scan.is_due() && f.scan_gap_over(now) {
                let paths = match std::mem::take(&mut f.scan) {
                    ScanNeed::Paths(paths) => Some(paths),
                    _ => {
                        // The periodic rescan counts from the last full one.
                        f.last_full_scan = now;
                        None
                    }
                };
                f.busy = Busy::Scanning;
                f.scan_started = now;
                f.scanning = match &paths {
                    Some(p) => ScanNeed::Paths(p.clone()),
                    None => ScanNeed::All,
                };
                self.actions.push_back(Action::Scan { folder: id, paths });
            } else if f.needs_pull && (f.retry_pull_at.is_none() || f.waiting_only) {
                // A pull that only waits for versions other devices have does not hold
                // back new changes; one that failed otherwise backs off until its retry.
                f.needs_pull = false;
                self.start_pull(now, &id);
            }
        }
    }

    fn start_pull(&mut self, now: Instant, id: &str) {
        let options = self.options;
        let pull_window = self.pull_window;
        let Some(f) = self.folders.get_mut(id) else {
            return;
        };
        let changed = f.doc.take_changed();
        f.dirty.merge(changed);
        // Read path by path, a partial tree costs about 60 µs per changed path (release),
        // the whole tree about 4 µs per path of the folder: many changes in a small folder
        // (a renamed directory) derive the whole tree.
        let cheaper_whole = |paths: &BTreeSet<String>, doc: &crate::folder::FolderDoc| {
            paths.len() > 1000 && paths.len() * 16 > doc.key_count()
        };
        let whole = match (&f.dirty, &f.planned_at) {
            (Changed::Paths(paths), Some(_)) => cheaper_whole(paths, &f.doc),
            _ => true,
        };
        // A large folder is planned in windows (see `set_pull_window`); partial trees
        // need a case-sensitive file system.
        let windowed =
            pull_window > 0 && !options.case_insensitive && f.doc.key_count() > pull_window;
        if whole && windowed {
            // The pass covers every path, so the changes need no plan of their own. A
            // pass under way goes on from its next window and wraps around.
            let resume = f.pass.front().and_then(|w| w.from.clone());
            let mut windows: VecDeque<PathRange> =
                PathRange::split(f.doc.window_bounds(pull_window)).into();
            if let Some(at) = resume {
                let first = windows.iter().position(|w| w.contains(&at)).unwrap_or(0);
                windows.rotate_left(first);
            }
            f.pass = windows;
            f.dirty = Changed::default();
        }
        let dirty = std::mem::take(&mut f.dirty);
        // The part of the tree the changes since the last pull reach, when there is a
        // last pull to compare with (see `derive_partial`).
        let reach = |paths: &BTreeSet<String>, at: &crate::folder::doc::Heads| {
            f.doc
                .partial_tree(paths.iter().map(String::as_str), options, Some(at))
                .map(|before| {
                    paths
                        .iter()
                        .chain(&before.scope)
                        .cloned()
                        .collect::<BTreeSet<String>>()
                })
        };
        let mut window = None;
        let partial = if let Some(w) = f.pass.pop_front() {
            // The next window of a pass, with the changes since the last pull.
            let mut wanted = f.doc.keys_in(&w);
            if let (Changed::Paths(paths), Some(at)) = (&dirty, &f.planned_at) {
                wanted.extend(reach(paths, at).unwrap_or_else(|| paths.clone()));
            }
            window = Some(w);
            f.doc
                .partial_tree(wanted.iter().map(String::as_str), options, None)
        } else if whole {
            None
        } else {
            match (&dirty, &f.planned_at) {
                (Changed::Paths(paths), Some(at)) => reach(paths, at).and_then(|wanted| {
                    f.doc
                        .partial_tree(wanted.iter().map(String::as_str), options, None)
                }),
                _ => None,
            }
        };
        let (tree, scope) = match partial {
            Some(p)
                if p.scope.is_empty()
                    && window.is_none()
                    && f.spec.kind != FolderKind::SendOnly =>
            {
                // Nothing changed since a pull that finished: the disk matches the tree.
                self.mark_in_sync(id);
                self.prune_if_all_in_sync();
                return;
            }
            Some(p) => (p.tree, Some(p.scope)),
            None => (f.doc.tree(options), None),
        };
        f.planned_at = Some(f.doc.heads());
        match &scope {
            None => f.conflicts.clear(),
            Some(paths) => f.conflicts.retain(|p| !paths.contains(p)),
        }
        f.conflicts.extend(
            tree.entries
                .keys()
                .filter(|p| ConflictCopyName::parse(p).is_some())
                .cloned(),
        );
        if f.spec.kind == FolderKind::SendOnly {
            // Only the conflicts are wanted: the rest of a pass follows at once.
            if f.pass.is_empty() {
                f.in_sync = true;
            } else {
                drop((tree, scope));
                self.start_pull(now, id);
            }
            return;
        }
        // Invalid paths in the document are refused once each, and their authors counted.
        let invalid: Vec<(String, String, Option<DeviceId>)> = tree
            .rejected
            .iter()
            .filter(|(path, _)| !f.refused.contains_key(path))
            .map(|(path, why)| {
                let author = f.doc.values(path).first().map(|v| v.device);
                (path.clone(), why.to_string(), author)
            })
            .collect();
        for (path, why, author) in invalid {
            self.refuse(now, id, &path, None, author, Violation::InvalidPath, why);
        }
        let Some(f) = self.folders.get_mut(id) else {
            return;
        };
        let written = match &scope {
            None => f.doc.materialize(&tree),
            Some(_) => f.doc.materialize_partial(&tree),
        };
        if !written.is_empty() {
            let shards: BTreeSet<usize> = written.iter().map(|p| f.doc.shard_of(p)).collect();
            self.persist(id, shards, Vec::new());
            self.sync_folder(id);
        }
        let Some(f) = self.folders.get_mut(id) else {
            return;
        };
        // Versions refused before stay refused (never fetched again) while the document
        // asks for exactly them.
        f.refused.retain(|path, r| {
            r.content.is_none()
                || scope.as_ref().is_some_and(|s| !s.contains(path))
                || tree
                    .entries
                    .get(path)
                    .is_some_and(|e| e.value.content == r.content)
        });
        let refused: HashMap<String, ContentId> = f
            .refused
            .iter()
            .filter_map(|(p, r)| Some((p.clone(), r.content?)))
            .collect();
        let peers: Vec<P> = f
            .spec
            .members
            .iter()
            .filter(|p| self.connected.contains(p))
            .copied()
            .collect();
        f.busy = Busy::Pulling;
        f.pulling = scope.clone();
        self.actions.push_back(Action::Pull {
            folder: id.to_string(),
            tree,
            scope,
            window,
            refused,
            peers,
        });
    }

    fn dial_missing(&mut self, now: Instant) {
        let missing: Vec<P> = self
            .peers
            .keys()
            .filter(|p| !self.connected.contains(p) && !self.conduct.banned(p, now))
            .copied()
            .collect();
        for peer in missing {
            self.actions.push_back(Action::Dial { peer });
        }
    }

    // ---- the meta protocol ----

    /// Sends what `peer` lacks of every folder they share.
    fn sync_folder(&mut self, id: &str) {
        let peers: Vec<P> = self
            .connected
            .iter()
            .filter(|p| self.is_member(id, p))
            .copied()
            .collect();
        for p in peers {
            self.sync_with(id, p);
        }
    }

    fn sync_with(&mut self, id: &str, peer: P) {
        let key = (id.to_string(), peer);
        if self.meta_inflight.contains(&key) || !self.connected.contains(&peer) {
            return;
        }
        let Some(f) = self.folders.get_mut(id) else {
            return;
        };
        if f.spec.paused || !f.has_member(&peer) {
            return;
        }
        let state = f.asking.entry(peer).or_insert_with(|| f.doc.new_peer());
        let Some(msg) = f.doc.generate_sync_message(state) else {
            return;
        };
        let request = MetaRequest {
            folder: id.to_string(),
            message: Some(msg.encode()),
        }
        .encode();
        self.meta_inflight.insert(key);
        self.actions.push_back(Action::SendMeta {
            peer,
            folder: id.to_string(),
            request,
        });
    }

    /// Applies a peer's folder message of one of our rounds or one of theirs; false if it
    /// was malformed. What it changed is persisted, pulled, and passed on to the other
    /// connected members (a device between two that cannot reach each other relays).
    fn apply_meta(&mut self, id: &str, peer: P, bytes: &[u8], round: Round) -> bool {
        let Some(f) = self.folders.get_mut(id) else {
            return false;
        };
        let Ok(msg) = FolderMessage::decode(bytes) else {
            return false;
        };
        let before = f.doc.heads();
        let states = match round {
            Round::Ours => &mut f.asking,
            Round::Theirs => &mut f.answering,
        };
        let state = states.entry(peer).or_insert_with(|| f.doc.new_peer());
        let ok = f.doc.receive_sync_message(state, &msg).is_ok();
        if !ok {
            state.reset();
        }
        // What a refused message changed in its other shards is kept like any change:
        // saved, pulled and passed on (the peer will not send it again).
        let after = f.doc.heads();
        let shards: Vec<usize> = (0..after.len())
            .filter(|&i| before.get(i) != after.get(i))
            .collect();
        if !shards.is_empty() {
            f.needs_pull = true;
            self.persist(id, shards, Vec::new());
            let others: Vec<P> = self
                .connected
                .iter()
                .filter(|p| **p != peer && self.is_member(id, p))
                .copied()
                .collect();
            for p in others {
                self.sync_with(id, p);
            }
        }
        ok
    }

    fn persist(
        &mut self,
        id: &str,
        shards: impl IntoIterator<Item = usize>,
        recorded: Vec<String>,
    ) {
        let Some(f) = self.folders.get_mut(id) else {
            return;
        };
        let unique: BTreeSet<usize> = shards.into_iter().collect();
        let saved = f.doc.save_shards(&unique);
        self.actions.push_back(Action::Persist {
            folder: id.to_string(),
            shards: saved,
            recorded,
        });
    }

    /// The folder's disk matches its tree (see [`FolderState::mark_in_sync`]); requested
    /// versions it forgets are forgotten in storage too.
    fn mark_in_sync(&mut self, id: &str) {
        let Some(f) = self.folders.get_mut(id) else {
            return;
        };
        let had_requested = !f.requested.is_empty();
        f.mark_in_sync();
        if had_requested {
            self.actions.push_back(save_requested(id, f));
        }
    }

    /// Remembers a trusted peer's offer of a folder, within the caps.
    fn remember_offer(&mut self, now: Instant, folder: &str, peer: P) {
        if !self.peers.contains_key(&peer)
            || self.folders.contains_key(folder)
            || self.declined.contains(&(folder.to_string(), peer))
        {
            return;
        }
        if let Some(o) = self.offers.get_mut(folder) {
            if o.from == peer {
                o.at = now;
            }
            return;
        }
        let of_peer = self.offers.values().filter(|o| o.from == peer).count();
        if of_peer >= MAX_OFFERS_PER_PEER || self.offers.len() >= MAX_OFFERS {
            return;
        }
        self.offers.insert(
            folder.to_string(),
            Offer {
                folder: folder.to_string(),
                from: peer,
                at: now,
            },
        );
    }

    // ---- violations, refusals, waiting ----

    /// The one path of every protocol violation: counted (reported as an action), the
    /// peer disconnected, and banned for a while when it keeps doing it.
    fn violation(&mut self, now: Instant, peer: P, kind: Violation, reason: &str) {
        let banned_for = match self.conduct.record(&peer, kind, reason, now) {
            Verdict::Disconnect => None,
            Verdict::Ban { until } => Some(until.saturating_duration_since(now)),
        };
        self.actions.push_back(Action::Violation {
            peer: Some(peer),
            paired: self.peers.contains_key(&peer),
            kind,
            reason: reason.to_string(),
            banned_for,
        });
        self.actions.push_back(Action::Disconnect { peer });
    }

    /// A violation by the device that authored an entry: counted against its peer when it
    /// is paired (connected or not), else against "unpaired".
    fn device_violation(
        &mut self,
        now: Instant,
        author: Option<DeviceId>,
        kind: Violation,
        reason: &str,
    ) {
        let peer = author.and_then(|d| {
            self.peers
                .iter()
                .find(|(_, p)| p.device == d)
                .map(|(id, _)| *id)
        });
        match peer {
            Some(p) => self.violation(now, p, kind, reason),
            None => self.actions.push_back(Action::Violation {
                peer: None,
                paired: false,
                kind,
                reason: reason.to_string(),
                banned_for: None,
            }),
        }
    }

    /// Refuses an entry: listed in the status (never written, and never fetched again
    /// while the document asks for that version), and counted against its author.
    #[allow(clippy::too_many_arguments)]
    fn refuse(
        &mut self,
        now: Instant,
        id: &str,
        path: &str,
        content: Option<ContentId>,
        author: Option<DeviceId>,
        kind: Violation,
        reason: String,
    ) {
        let Some(f) = self.folders.get_mut(id) else {
            return;
        };
        if f.refused.len() >= MAX_REFUSED {
            return;
        }
        let counted = format!("{path}: {reason}");
        f.refused.insert(
            path.to_string(),
            Refused {
                reason,
                author,
                content,
            },
        );
        self.device_violation(now, author, kind, &counted);
    }

    /// Splits files a pull could not get into those waiting for a device, and versions
    /// this device authored but no longer has, which nobody can ever provide.
    fn sort_missing(
        &self,
        id: &str,
        missing: &[Missing],
    ) -> (Vec<Waiting>, Vec<(String, ContentId)>) {
        let Some(f) = self.folders.get(id) else {
            return Default::default();
        };
        let members: Vec<&P> = f
            .spec
            .members
            .iter()
            .filter(|p| self.peers.contains_key(p))
            .collect();
        let all_members_connected = members.iter().all(|p| self.connected.contains(p));
        let mut waiting = Vec::new();
        let mut dropped = Vec::new();
        for m in missing {
            let Some(author) = f
                .doc
                .values(&m.path)
                .into_iter()
                .find(|v| v.content == Some(m.content))
                .map(|v| v.device)
            else {
                continue; // changed meanwhile: the next pull sees what is wanted now
            };
            // Only when every member is connected (and none had it) can nobody have it.
            // For a version this device asked for (a restore), a member cut off for
            // breaking the protocol since (sending wrong chunks for it, say) counts as
            // asked: the restore is undone rather than left waiting on a liar for ever.
            let asked_all = all_members_connected
                || f.requested
                    .get(&m.path)
                    .filter(|r| r.content == m.content)
                    .is_some_and(|r| {
                        members.iter().all(|p| {
                            self.connected.contains(p)
                                || self.conduct.get(p).is_some_and(|c| c.last_at >= r.at)
                        })
                    });
            if author == self.device && asked_all && !m.held {
                dropped.push((m.path.clone(), m.content));
            } else {
                waiting.push(Waiting {
                    path: m.path.clone(),
                    author,
                });
            }
        }
        waiting.sort_by(|a, b| a.path.cmp(&b.path));
        (waiting, dropped)
    }

    /// Drops versions this device authored and no longer has, so no device waits for them
    /// forever (see [`crate::folder::FolderDoc::record_unavailable`]).
    fn drop_unavailable(&mut self, id: &str, dropped: &[(String, ContentId)]) {
        let Some(f) = self.folders.get_mut(id) else {
            return;
        };
        let mut touched = BTreeSet::new();
        let mut forgot = false;
        for (path, content) in dropped {
            // A requested version (a restore) nobody could provide: back to what it
            // replaced, once (that value, if lost too, is dropped as any other).
            let requested = f.requested.remove(path);
            forgot |= requested.is_some();
            let revert_to = requested.filter(|r| r.content == *content).map(|r| r.prior);
            if f.doc.record_unavailable(path, *content, revert_to.as_ref()) {
                touched.insert(f.doc.shard_of(path));
                self.actions.push_back(Action::VersionUnavailable {
                    folder: id.to_string(),
                    path: path.clone(),
                    content: *content,
                });
            }
        }
        if forgot {
            self.actions.push_back(save_requested(id, f));
        }
        if touched.is_empty() {
            return;
        }
        f.doc.commit();
        f.waiting
            .retain(|w| !dropped.iter().any(|(p, _)| p == &w.path));
        f.needs_pull = true;
        f.retry_pull_at = None;
        self.persist(id, touched, Vec::new());
        self.sync_folder(id);
    }

    fn prune_if_all_in_sync(&mut self) {
        if self
            .folders
            .values()
            .all(|f| f.in_sync || f.spec.kind == FolderKind::SendOnly)
        {
            self.actions.push_back(Action::PruneRemoteManifests);
        }
    }

    /// Adds changes (oldest first) to the recent-changes feed.
    fn remember(
        &mut self,
        now: Instant,
        folder: &str,
        changes: impl IntoIterator<Item = (String, String)>,
        origin: Origin,
    ) {
        for (path, change) in changes {
            if self.recent.len() == RECENT_MAX {
                self.recent.pop_back();
            }
            self.recent.push_front(RecentChange {
                at: now,
                folder: folder.to_string(),
                path,
                change,
                origin,
            });
        }
    }
}

#[cfg(test)]
mod tests;
