//! `FolderDoc`: one folder's metadata as automerge documents, and their sync protocol.
//!
//! The folder is split into a fixed number of shards by a hash of the path; each shard is
//! one automerge document whose root map holds `path -> encoded EntryValue`. Small
//! documents keep loading, merging and memory cheap at a million paths (see
//! ARCHITECTURE.md for the measurements behind this). Peers sync shard by shard with
//! automerge's sync protocol; one [`FolderMessage`] carries the messages of every shard
//! that has something to say.

use std::collections::{BTreeMap, BTreeSet, HashSet};

use automerge::sync::{self, SyncDoc};
use automerge::transaction::CommitOptions;
use automerge::transaction::Transactable;
use automerge::{AutoCommit, PatchLog, ROOT, ReadDoc, ScalarValue, Value};

use crate::folder::entry::{DeviceId, EntryValue};
use crate::folder::tree::{
    Origin, PartialTree, Tree, TreeOptions, derive_partial, derive_tree, winner,
};
use crate::hash::ContentId;
use crate::path;
use crate::scan::EntryKind;

/// Shards of a new folder. Part of the folder's identity, like the chunker parameters.
pub const DEFAULT_SHARDS: u16 = 256;

/// Largest encoded [`FolderMessage`] accepted from a peer.
pub const MAX_MESSAGE_BYTES: usize = 64 << 20;

/// A generated message stops taking more shards once it is this large; the rest follow
/// in the next rounds. Keeps messages (and a peer's memory per message) bounded.
pub const MESSAGE_BUDGET: usize = 8 << 20;

const MESSAGE_VERSION: u8 = 1;

/// Errors of the folder document.
#[derive(Debug, thiserror::Error)]
pub enum FolderError {
    #[error("folder message is malformed: {0}")]
    BadMessage(&'static str),
    #[error("folder message names shard {shard}, but the folder has {shards}")]
    NoSuchShard { shard: u16, shards: u16 },
    #[error("automerge rejected a sync message for shard {shard}: {source}")]
    Sync {
        shard: u16,
        source: automerge::AutomergeError,
    },
    #[error("shard {shard} cannot be loaded: {source}")]
    Load {
        shard: u16,
        source: automerge::AutomergeError,
    },
    #[error("a folder needs 1 to 4096 shards, got {0}")]
    BadShardCount(usize),
}

/// What a scan says happened to one path on this device.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LocalChange {
    /// The path exists with this state.
    Present {
        kind: EntryKind,
        content: Option<ContentId>,
        size: u64,
        mtime_ns: i64,
        mode: u32,
        link_target: Option<String>,
    },
    /// The path is gone.
    Deleted,
}

impl LocalChange {
    /// What the index says of a path now: its entry, or gone.
    pub fn of(entry: Option<&crate::scan::IndexedEntry>) -> Self {
        match entry {
            Some(e) => LocalChange::Present {
                kind: e.kind,
                content: e.content,
                size: e.stamp.size,
                mtime_ns: e.stamp.mtime_ns,
                mode: e.stamp.mode,
                link_target: e.link_target.clone(),
            },
            None => LocalChange::Deleted,
        }
    }
}

/// The automerge sync state with one peer, one per shard.
pub struct PeerSync {
    states: Vec<sync::State>,
}

impl PeerSync {
    /// Forgets what the peer is known to have (after a lost message), and tells the peer
    /// to do the same with its next message (automerge's `SYNC_RESET`; a peer not known to
    /// understand it is sent empty heads, which has the same effect), so the peer does not
    /// go on counting changes from a lost answer as delivered. Added when one sync state
    /// served both directions and seed 1050088998 of `core/tests/nodes.rs` looped forever;
    /// with a state per direction (the node's `asking` / `answering`), 1,000 seeds pass
    /// without it too, so no test depends on it now: it is kept as the protocol's own
    /// recovery from a lost message.
    pub fn reset(&mut self) {
        for s in &mut self.states {
            let mut fresh = sync::State::new();
            fresh.their_capabilities = s.their_capabilities.take();
            fresh.needs_reset = true;
            *s = fresh;
        }
    }
}

/// One round of the sync protocol for a folder: automerge messages of some shards.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FolderMessage {
    /// (shard, encoded automerge sync message)
    pub shards: Vec<(u16, Vec<u8>)>,
}

impl FolderMessage {
    /// Wire form.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = vec![MESSAGE_VERSION];
        out.extend_from_slice(&(self.shards.len() as u32).to_le_bytes());
        for (shard, bytes) in &self.shards {
            out.extend_from_slice(&shard.to_le_bytes());
            out.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
            out.extend_from_slice(bytes);
        }
        out
    }

    /// Parses the wire form, refusing anything malformed or larger than `MAX_MESSAGE_BYTES`.
    pub fn decode(bytes: &[u8]) -> Result<Self, FolderError> {
        if bytes.len() > MAX_MESSAGE_BYTES {
            return Err(FolderError::BadMessage("too large"));
        }
        let bad = FolderError::BadMessage;
        let (&version, mut rest) = bytes.split_first().ok_or(bad("empty"))?;
        if version != MESSAGE_VERSION {
            return Err(bad("unknown version"));
        }
        let mut take = |n: usize| -> Result<&[u8], FolderError> {
            if rest.len() < n {
                return Err(bad("truncated"));
            }
            let (head, tail) = rest.split_at(n);
            rest = tail;
            Ok(head)
        };
        let count = u32::from_le_bytes(take(4)?.try_into().map_err(|_| bad("truncated"))?);
        let mut shards = Vec::new();
        for _ in 0..count {
            let shard = u16::from_le_bytes(take(2)?.try_into().map_err(|_| bad("truncated"))?);
            let len = u32::from_le_bytes(take(4)?.try_into().map_err(|_| bad("truncated"))?);
            shards.push((shard, take(len as usize)?.to_vec()));
        }
        if !rest.is_empty() {
            return Err(bad("trailing bytes"));
        }
        Ok(FolderMessage { shards })
    }

    /// Bytes on the wire.
    pub fn len(&self) -> usize {
        5 + self.shards.iter().map(|(_, b)| 6 + b.len()).sum::<usize>()
    }

    /// True when the message carries nothing.
    pub fn is_empty(&self) -> bool {
        self.shards.is_empty()
    }
}

/// The values recorded in the document, per path, as read for deriving the tree.
pub struct Recorded {
    /// path -> every concurrent value (usually one).
    pub entries: BTreeMap<String, Vec<EntryValue>>,
    /// Paths with a value that is not a valid entry (sent by a buggy or hostile peer).
    pub undecodable: Vec<String>,
}

/// More changed paths than this are not listed one by one (see [`Changed`]).
pub const CHANGED_MAX: usize = 50_000;

/// The heads of every shard: a moment of the folder's history.
pub type Heads = Vec<Vec<automerge::ChangeHash>>;

/// A value a path had at some moment of the folder's history.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PastValue {
    pub value: EntryValue,
    /// When its change was committed, ms since the Unix epoch by the recording device's
    /// clock (0: recorded by a version of cairn that did not date changes).
    pub time_ms: i64,
}

/// Which paths the document changed at since they were last taken.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Changed {
    /// These paths (at most [`CHANGED_MAX`]).
    Paths(BTreeSet<String>),
    /// Too many to list (a first sync, a large merge), or not known: all of them.
    All,
}

impl Default for Changed {
    fn default() -> Self {
        Changed::Paths(BTreeSet::new())
    }
}

impl Changed {
    /// Adds paths; past [`CHANGED_MAX`] it becomes [`Changed::All`].
    pub fn add(&mut self, paths: impl IntoIterator<Item = String>) {
        if let Changed::Paths(set) = self {
            set.extend(paths);
            if set.len() > CHANGED_MAX {
                *self = Changed::All;
            }
        }
    }

    /// Adds what `other` holds.
    pub fn merge(&mut self, other: Changed) {
        match other {
            Changed::All => *self = Changed::All,
            Changed::Paths(p) => self.add(p),
        }
    }

    /// True when no path changed.
    pub fn is_empty(&self) -> bool {
        matches!(self, Changed::Paths(p) if p.is_empty())
    }
}

/// The paths from `from` (included) up to `to` (excluded), in byte order; None is open.
/// A pass over a large folder plans one such window at a time (see
/// [`FolderDoc::window_bounds`]).
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct PathRange {
    pub from: Option<String>,
    pub to: Option<String>,
}

impl PathRange {
    /// Whether `path` lies in the range.
    pub fn contains(&self, path: &str) -> bool {
        self.from.as_deref().is_none_or(|f| path >= f)
            && self.to.as_deref().is_none_or(|t| path < t)
    }

    /// Whether `dir` or any path under it can lie in the range: every such path sorts
    /// from `dir` up to `dir0` ('0' follows '/'). A walk in ranges skips the rest.
    pub fn meets_subtree(&self, dir: &str) -> bool {
        self.to.as_deref().is_none_or(|t| dir < t)
            && self
                .from
                .as_deref()
                .is_none_or(|f| f.as_bytes() < [dir.as_bytes(), b"0"].concat().as_slice())
    }

    /// The windows between consecutive `bounds` (sorted, distinct), covering every path.
    pub fn split(bounds: Vec<String>) -> Vec<PathRange> {
        let mut out = Vec::with_capacity(bounds.len() + 1);
        let mut from = None;
        for b in bounds {
            out.push(PathRange {
                from: from.take(),
                to: Some(b.clone()),
            });
            from = Some(b);
        }
        out.push(PathRange { from, to: None });
        out
    }

    fn bounds(&self) -> (std::ops::Bound<String>, std::ops::Bound<String>) {
        use std::ops::Bound::{Excluded, Included, Unbounded};
        (
            self.from.clone().map_or(Unbounded, Included),
            self.to.clone().map_or(Unbounded, Excluded),
        )
    }
}

/// One folder's metadata.
pub struct FolderDoc {
    device: DeviceId,
    shards: Vec<AutoCommit>,
    /// Every directory with a path recorded under it (keys are never removed, so this
    /// only grows): most paths are not, which spares a look under them in every shard.
    dirs: HashSet<String>,
    /// Paths changed since [`FolderDoc::take_changed`].
    changed: Changed,
    /// Threads that record and apply changes of separate shards side by side.
    workers: usize,
    /// The wall clock the driver passed in last (ms since the Unix epoch), stamped on
    /// every change this device commits: history lists versions by it and a rewind
    /// finds the folder's state at a moment by it. 0 until set (changes of earlier
    /// versions of cairn carry 0: "before any dated change").
    clock_ms: i64,
}

impl FolderDoc {
    /// A new, empty folder as seen by `device`.
    pub fn new(device: DeviceId, shards: u16) -> Result<Self, FolderError> {
        if shards == 0 || shards > 4096 {
            return Err(FolderError::BadShardCount(shards as usize));
        }
        Ok(FolderDoc {
            device,
            shards: (0..shards).map(|_| AutoCommit::new()).collect(),
            dirs: HashSet::new(),
            changed: Changed::default(),
            workers: 1,
            clock_ms: 0,
        })
    }

    /// Loads a folder from its saved shards (as returned by [`FolderDoc::save_shard`]).
    pub fn load(device: DeviceId, saved: &[Vec<u8>]) -> Result<Self, FolderError> {
        if saved.is_empty() || saved.len() > 4096 {
            return Err(FolderError::BadShardCount(saved.len()));
        }
        let shards = saved
            .iter()
            .enumerate()
            .map(|(i, bytes)| {
                AutoCommit::load(bytes).map_err(|source| FolderError::Load {
                    shard: i as u16,
                    source,
                })
            })
            .collect::<Result<Vec<AutoCommit>, _>>()?;
        let mut dirs = HashSet::new();
        for doc in &shards {
            for item in doc.map_range(ROOT, ..) {
                note_dirs(&mut dirs, &item.key);
            }
        }
        Ok(FolderDoc {
            device,
            shards,
            dirs,
            changed: Changed::All,
            workers: 1,
            clock_ms: 0,
        })
    }

    /// This device's id.
    pub fn device(&self) -> DeviceId {
        self.device
    }

    /// Number of shards.
    pub fn shard_count(&self) -> u16 {
        self.shards.len() as u16
    }

    /// The shard that holds `path`.
    pub fn shard_of(&self, path: &str) -> usize {
        shard_index(path, self.shards.len())
    }

    /// Saves one shard (compacted).
    pub fn save_shard(&mut self, shard: usize) -> Vec<u8> {
        self.shards[shard].save()
    }

    /// Saves the shards `which` (each compacted), side by side on up to
    /// [`FolderDoc::set_workers`] threads when there are many.
    pub fn save_shards(&mut self, which: &BTreeSet<usize>) -> Vec<(u16, Vec<u8>)> {
        let docs: Vec<(usize, &mut AutoCommit)> = self
            .shards
            .iter_mut()
            .enumerate()
            .filter(|(i, _)| which.contains(i))
            .collect();
        let workers = if docs.len() < 4 { 1 } else { self.workers };
        on_workers(docs, workers, |(i, doc)| (i as u16, doc.save()))
    }

    /// How many paths the document has recorded (tombstones included).
    pub fn key_count(&self) -> usize {
        self.shards.iter().map(|d| d.length(ROOT)).sum()
    }

    /// Bounds that cut the folder's paths into windows of about `per_window` recorded
    /// paths each, without listing them all: a path's shard is a hash of it, so the keys
    /// of one shard are an even sample of the whole folder's, in the same order.
    /// Windows smaller than the shard count sample as many shards as it takes.
    pub fn window_bounds(&self, per_window: usize) -> Vec<String> {
        let shards = self.shards.len();
        let per_window = per_window.max(1);
        let sampled = shards.div_ceil(per_window).clamp(1, shards);
        let step = (per_window * sampled / shards).max(1);
        let mut sample: Vec<String> = self.shards[..sampled]
            .iter()
            .flat_map(|doc| doc.keys(ROOT))
            .collect();
        sample.sort_unstable();
        sample.into_iter().skip(step).step_by(step).collect()
    }

    /// Every path recorded in `range` (live or not), sorted.
    pub fn keys_in(&self, range: &PathRange) -> BTreeSet<String> {
        self.shards
            .iter()
            .flat_map(|doc| {
                doc.map_range(ROOT, range.bounds())
                    .map(|item| item.key.to_string())
            })
            .collect()
    }

    /// The heads of every shard: equal heads mean equal documents.
    pub fn heads(&mut self) -> Vec<Vec<automerge::ChangeHash>> {
        self.shards.iter_mut().map(|s| s.get_heads()).collect()
    }

    /// Every concurrent value recorded at `path`, skipping undecodable ones.
    pub fn values(&self, path: &str) -> Vec<EntryValue> {
        let doc = &self.shards[self.shard_of(path)];
        doc.get_all(ROOT, path)
            .unwrap_or_default()
            .into_iter()
            .filter_map(|(v, _)| decode_value(&v))
            .collect()
    }

    /// Everything recorded, per path.
    pub fn recorded(&self) -> Recorded {
        let mut entries = BTreeMap::new();
        let mut undecodable = Vec::new();
        for (path, values, all_decoded) in self.iter_recorded() {
            if !all_decoded {
                undecodable.push(path.clone());
            }
            if !values.is_empty() {
                entries.insert(path, values);
            }
        }
        Recorded {
            entries,
            undecodable,
        }
    }

    /// Every recorded path with its decodable values, shard by shard (not sorted), and
    /// whether every value decoded.
    fn iter_recorded(&self) -> impl Iterator<Item = (String, Vec<EntryValue>, bool)> + '_ {
        self.shards.iter().flat_map(|doc| {
            doc.map_range(ROOT, ..).map(move |item| {
                let key = item.key.to_string();
                let values: Vec<Value<'_>> = if item.conflict {
                    doc.get_all(ROOT, key.as_str())
                        .unwrap_or_default()
                        .into_iter()
                        .map(|(v, _)| v)
                        .collect()
                } else {
                    vec![item.value.into()]
                };
                let decoded: Vec<EntryValue> = values.iter().filter_map(decode_value).collect();
                let all = decoded.len() == values.len();
                (key, decoded, all)
            })
        })
    }

    /// The tree every device converges to (see [`crate::folder::tree`]).
    pub fn tree(&self, options: TreeOptions) -> Tree {
        derive_tree(
            self.iter_recorded().map(|(path, values, _)| (path, values)),
            options,
        )
    }

    /// Records what a scan found at `path` on this device. `base` is the content the path
    /// had on this disk before the change (what the user actually edited or deleted).
    /// Returns false when nothing changed in the document.
    ///
    /// A peer's version that this device received but had not written to disk yet (the
    /// document's value differs from `base`) was never seen by the user: a local edit does
    /// not supersede it (it is kept as a conflict copy), and a local delete does not
    /// delete it (modify beats delete).
    pub fn record_local(
        &mut self,
        path: &str,
        change: &LocalChange,
        base: Option<ContentId>,
    ) -> bool {
        let shard = self.shard_of(path);
        let count = self.shards.len();
        let mut writer = ShardWriter::new(shard, count, &mut self.shards[shard], self.device);
        let recorded = writer.record(path, change, base);
        let written = writer.finish();
        self.absorb(vec![written]);
        recorded
    }

    /// Records many scanned changes at once, as [`FolderDoc::record_local`] would one by
    /// one, on up to [`FolderDoc::set_workers`] threads: each shard is an independent
    /// document, so shards are recorded side by side (a 10,000-file directory rename is
    /// 20,000 changes, ~40 µs each in automerge). A conflict copy that lives in another
    /// shard is written after all shards are done, which is the result of recording the
    /// paths in an order where the copy's own path came first. Returns the shards that
    /// changed.
    pub fn record_local_all(
        &mut self,
        changes: &[(&str, &LocalChange, Option<ContentId>)],
    ) -> BTreeSet<usize> {
        let count = self.shards.len();
        let mut by_shard: Vec<Vec<usize>> = vec![Vec::new(); count];
        for (i, (path, _, _)) in changes.iter().enumerate() {
            by_shard[shard_index(path, count)].push(i);
        }
        let device = self.device;
        let docs: Vec<(usize, &mut AutoCommit)> = self
            .shards
            .iter_mut()
            .enumerate()
            .filter(|(i, _)| !by_shard[*i].is_empty())
            .collect();
        let workers = if changes.len() < PARALLEL_MIN {
            1
        } else {
            self.workers
        };
        let written = on_workers(docs, workers, |(shard, doc)| {
            let mut writer = ShardWriter::new(shard, count, doc, device);
            for &i in &by_shard[shard] {
                let (path, change, base) = changes[i];
                writer.record(path, change, base);
            }
            writer.finish()
        });
        self.absorb(written)
    }

    /// Takes what shard writers did into the document: their paths into `dirs` and
    /// `changed`, and the conflict copies they left for other shards. Returns the shards
    /// that changed.
    fn absorb(&mut self, written: Vec<Written>) -> BTreeSet<usize> {
        let mut touched = BTreeSet::new();
        let mut deferred = Vec::new();
        for w in written {
            if !w.paths.is_empty() {
                touched.insert(w.shard);
            }
            for path in &w.paths {
                note_dirs(&mut self.dirs, path);
            }
            self.changed.add(w.paths);
            deferred.extend(w.deferred);
        }
        for (path, value) in deferred {
            touched.insert(self.shard_of(&path));
            self.put(&path, &value);
        }
        touched
    }

    /// How many threads [`FolderDoc::record_local_all`] and
    /// [`FolderDoc::receive_sync_message`] may use (1, the default, runs everything on
    /// the caller's thread, as the simulation does).
    pub fn set_workers(&mut self, workers: usize) {
        self.workers = workers.max(1);
    }

    /// Drops the version `content` at `path` that this device authored but no longer has
    /// anywhere (it was rewritten or removed before any peer fetched it), so no device
    /// waits for it forever: a tombstone that replaces it, which every device derives the
    /// same way, or, for a version this device asked for (a restore of a version another
    /// device said it held), `revert_to`, the value it replaced, written again by this
    /// device (a restore that cannot happen leaves the file as it was, not deleted).
    /// Only when it is the path's one value (after `materialize`), so no concurrent
    /// version is touched. Returns whether the document changed.
    pub fn record_unavailable(
        &mut self,
        path: &str,
        content: ContentId,
        revert_to: Option<&EntryValue>,
    ) -> bool {
        let doc = &self.shards[self.shard_of(path)];
        if doc.get_all(ROOT, path).map_or(0, |all| all.len()) != 1 {
            return false; // concurrent values, undecodable ones included: not touched
        }
        let current = self.values(path);
        let [v] = current.as_slice() else {
            return false;
        };
        if v.deleted || v.content != Some(content) || v.device != self.device {
            return false;
        }
        let replacement = match revert_to {
            Some(prior) if !prior.deleted && prior.content != Some(content) => EntryValue {
                device: self.device,
                replaces: Some(content),
                ..prior.clone()
            },
            _ => v.deleted_by(self.device),
        };
        self.put(path, &replacement);
        true
    }

    /// Writes the tree's conflict resolutions into the document, so that conflict copies
    /// become ordinary paths everyone can edit, delete or resolve. Every device writes the
    /// same bytes, so devices that do this concurrently agree. Returns the paths written.
    pub fn materialize(&mut self, tree: &Tree) -> Vec<String> {
        // Only keys automerge flags as conflicted can hold several values: look at those
        // alone rather than decoding the whole folder (100,000 paths: ~50 MB at once).
        let mut conflicted: Vec<String> = self
            .shards
            .iter()
            .flat_map(|doc| {
                doc.map_range(ROOT, ..)
                    .filter(|item| item.conflict)
                    .map(|item| item.key.to_string())
            })
            .collect();
        conflicted.sort_unstable();
        self.materialize_with(tree, conflicted)
    }

    /// [`FolderDoc::materialize`] of a partial tree: only its paths are looked at.
    pub fn materialize_partial(&mut self, tree: &Tree) -> Vec<String> {
        let conflicted: Vec<String> = tree
            .entries
            .iter()
            .filter(|(p, e)| {
                e.origin == Origin::Recorded
                    && self.shards[self.shard_of(p)]
                        .get_all(ROOT, p.as_str())
                        .is_ok_and(|all| all.len() > 1)
            })
            .map(|(p, _)| p.clone())
            .collect();
        self.materialize_with(tree, conflicted)
    }

    fn materialize_with(&mut self, tree: &Tree, conflicted: Vec<String>) -> Vec<String> {
        let mut written = Vec::new();
        for path in conflicted {
            if self.values(&path).len() > 1
                && let Some(entry) = tree.get(&path)
                && entry.origin == Origin::Recorded
            {
                self.put(&path, &entry.value);
                written.push(path);
            }
        }
        for (path, entry) in &tree.entries {
            let moved_from = match &entry.origin {
                Origin::ConflictCopy { .. } => None,
                Origin::Displaced { of } | Origin::CaseClash { of } => Some(of),
                Origin::Recorded | Origin::ImpliedDir => continue,
            };
            self.put(path, &entry.value);
            written.push(path.clone());
            if let Some(of) = moved_from {
                let tombstone = EntryValue {
                    deleted: true,
                    content: None,
                    link_target: None,
                    replaces: None,
                    size: 0,
                    ..entry.value.clone()
                };
                self.put(of, &tombstone);
                written.push(of.clone());
            }
        }
        self.commit();
        written
    }

    /// Writes `value` at `path` as this device.
    pub fn put(&mut self, path: &str, value: &EntryValue) {
        note_dirs(&mut self.dirs, path);
        self.changed.add([path.to_string()]);
        let shard = self.shard_of(path);
        // Putting a scalar on the root map of a document we own cannot fail.
        let _ = self.shards[shard].put(ROOT, path, ScalarValue::Bytes(value.encode()));
    }

    /// Ends the current batch of local changes (one automerge change per touched shard),
    /// dated by [`FolderDoc::set_clock`].
    pub fn commit(&mut self) {
        let time = self.clock_ms;
        for s in &mut self.shards {
            s.commit_with(CommitOptions::default().with_time(time));
        }
    }

    /// Sets the wall clock (ms since the Unix epoch) the next commits are dated with.
    /// Sans-IO: the driver passes the time in.
    pub fn set_clock(&mut self, unix_ms: i64) {
        self.clock_ms = unix_ms;
    }

    /// Every value ever recorded at a path `wanted` accepts, per path, in the order of
    /// the document's changes (causal order: a value comes after the values it
    /// superseded), each with the time its change was committed. Reads the whole history
    /// of the shards involved (only the path's shard when `only` names one path): for
    /// listing history, not for the sync path.
    pub fn versions(
        &mut self,
        only: Option<&str>,
        wanted: impl Fn(&str) -> bool,
    ) -> BTreeMap<String, Vec<PastValue>> {
        use automerge::legacy::{Key, ObjectId, OpType};
        let shards: Vec<usize> = match only {
            Some(p) => vec![self.shard_of(p)],
            None => (0..self.shards.len()).collect(),
        };
        let mut out: BTreeMap<String, Vec<PastValue>> = BTreeMap::new();
        for i in shards {
            for change in self.shards[i].get_changes(&[]) {
                let time_ms = change.timestamp();
                for op in change.decode().operations {
                    let (ObjectId::Root, Key::Map(key), OpType::Put(v)) =
                        (&op.obj, &op.key, &op.action)
                    else {
                        continue;
                    };
                    if only.is_some_and(|p| p != key.as_str()) || !wanted(key) {
                        continue;
                    }
                    let ScalarValue::Bytes(b) = v else { continue };
                    if let Ok(value) = EntryValue::decode(b) {
                        out.entry(key.to_string())
                            .or_default()
                            .push(PastValue { value, time_ms });
                    }
                }
            }
        }
        out
    }

    /// The folder as it was at `unix_ms`: in every shard, the changes committed at or
    /// before then (with everything they depend on; undated changes count as early).
    /// Clocks of devices differ, so "then" is as each device's clock said.
    pub fn heads_at(&mut self, unix_ms: i64) -> Heads {
        self.shards
            .iter_mut()
            .map(|doc| {
                let mut taken: HashSet<automerge::ChangeHash> = HashSet::new();
                let mut depended: HashSet<automerge::ChangeHash> = HashSet::new();
                // In causal order: a change's dependencies come before it.
                for meta in doc.get_changes_meta(&[]) {
                    if meta.timestamp <= unix_ms && meta.deps.iter().all(|d| taken.contains(d)) {
                        depended.extend(meta.deps.iter().copied());
                        taken.insert(meta.hash);
                    }
                }
                let mut heads: Vec<_> = taken.difference(&depended).copied().collect();
                heads.sort();
                heads
            })
            .collect()
    }

    /// Every path with its concurrent values at the moment `at` (now when None), in the
    /// range `under` (a directory and everything below it; the whole folder when None),
    /// sorted.
    pub fn recorded_at(
        &self,
        at: Option<&Heads>,
        under: Option<&str>,
    ) -> BTreeMap<String, Vec<EntryValue>> {
        use std::ops::Bound;
        let range: (Bound<String>, Bound<String>) = match under {
            // '0' follows '/': the directory and everything below it.
            Some(dir) => (
                Bound::Included(dir.to_string()),
                Bound::Excluded(format!("{dir}0")),
            ),
            None => (Bound::Unbounded, Bound::Unbounded),
        };
        let mut out = BTreeMap::new();
        for (i, doc) in self.shards.iter().enumerate() {
            let keys: Vec<String> = match at {
                None => doc
                    .map_range(ROOT, range.clone())
                    .map(|item| item.key.to_string())
                    .collect(),
                Some(heads) => doc
                    .map_range_at(ROOT, range.clone(), &heads[i])
                    .map(|item| item.key.to_string())
                    .collect(),
            };
            for key in keys {
                // The range also holds siblings such as `dir-x` ('-' sorts between the
                // end of `dir` and '/').
                let inside = |d: &str| {
                    key.strip_prefix(d)
                        .is_some_and(|r| r.is_empty() || r.starts_with('/'))
                };
                if under.is_some_and(|d| !inside(d)) {
                    continue;
                }
                let values = self.values_at(&key, at);
                if !values.is_empty() {
                    out.insert(key, values);
                }
            }
        }
        out
    }

    /// Sync state for a peer we have not talked to yet.
    pub fn new_peer(&self) -> PeerSync {
        PeerSync {
            states: (0..self.shards.len()).map(|_| sync::State::new()).collect(),
        }
    }

    /// The next message for `peer`, or None when the peer has everything we know of.
    pub fn generate_sync_message(&mut self, peer: &mut PeerSync) -> Option<FolderMessage> {
        self.commit();
        let mut shards = Vec::new();
        let mut size = 0;
        for (i, (doc, state)) in self.shards.iter_mut().zip(&mut peer.states).enumerate() {
            if size >= MESSAGE_BUDGET {
                break;
            }
            if let Some(msg) = doc.sync().generate_sync_message(state) {
                let bytes = msg.encode();
                size += bytes.len() + 6;
                shards.push((i as u16, bytes));
            }
        }
        (!shards.is_empty()).then_some(FolderMessage { shards })
    }

    /// Applies a message from `peer`. A message that names a shard the folder does not
    /// have, or carries an undecodable part, changes nothing and is an error. When
    /// automerge refuses a part, the parts before it for that shard and the parts for
    /// every other shard stay applied, and the error names the shard (the caller keeps
    /// what changed: see `Node::apply_meta`). Shards are applied side by side on up to
    /// [`FolderDoc::set_workers`] threads when the message is large.
    pub fn receive_sync_message(
        &mut self,
        peer: &mut PeerSync,
        message: &FolderMessage,
    ) -> Result<(), FolderError> {
        self.commit();
        let n = self.shards.len();
        let mut by_shard: Vec<Vec<sync::Message>> = (0..n).map(|_| Vec::new()).collect();
        let mut bytes_total = 0;
        for (shard, bytes) in &message.shards {
            if *shard as usize >= n {
                return Err(FolderError::NoSuchShard {
                    shard: *shard,
                    shards: n as u16,
                });
            }
            let msg = sync::Message::decode(bytes)
                .map_err(|_| FolderError::BadMessage("bad automerge sync message"))?;
            if !msg.have.iter().all(|h| usable_bloom(&h.bloom)) {
                return Err(FolderError::BadMessage(
                    "unusable Bloom filter in a sync message",
                ));
            }
            bytes_total += bytes.len();
            by_shard[*shard as usize].push(msg);
        }
        let work: Vec<_> = self
            .shards
            .iter_mut()
            .zip(peer.states.iter_mut())
            .zip(by_shard)
            .enumerate()
            .filter(|(_, (_, msgs))| !msgs.is_empty())
            .collect();
        let workers = if bytes_total < PARALLEL_MIN_BYTES {
            1
        } else {
            self.workers
        };
        let received = on_workers(work, workers, |(shard, ((doc, state), msgs))| {
            receive_shard(shard, doc, state, msgs)
        });
        let mut first_error = None;
        for r in received {
            match r.keys {
                ChangedKeys::None => {}
                ChangedKeys::Listed(keys) => {
                    let listed = match &self.changed {
                        Changed::Paths(p) => p.len(),
                        Changed::All => CHANGED_MAX,
                    };
                    if listed + keys.len() > CHANGED_MAX {
                        self.all_changed_in(r.shard);
                    } else {
                        for key in &keys {
                            note_dirs(&mut self.dirs, key);
                        }
                        self.changed.add(keys);
                    }
                }
                ChangedKeys::TooMany => self.all_changed_in(r.shard),
            }
            if first_error.is_none() {
                first_error = r.result.err();
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    /// Too many changes to list: every path is looked at anyway, so the directories are
    /// read from the keys of shard `i`, not from each change.
    fn all_changed_in(&mut self, i: usize) {
        self.changed = Changed::All;
        for item in self.shards[i].map_range(ROOT, ..) {
            note_dirs(&mut self.dirs, &item.key);
        }
    }

    /// The paths changed since the last call (every path, the first time after a load),
    /// by this device or by a peer's message.
    pub fn take_changed(&mut self) -> Changed {
        std::mem::take(&mut self.changed)
    }

    /// Every concurrent value recorded at `path` at the moment `at` (now when None).
    pub fn values_at(&self, path: &str, at: Option<&Heads>) -> Vec<EntryValue> {
        let shard = self.shard_of(path);
        let doc = &self.shards[shard];
        let all = match at {
            None => doc.get_all(ROOT, path),
            Some(heads) => doc.get_all_at(ROOT, path, &heads[shard]),
        };
        all.unwrap_or_default()
            .into_iter()
            .filter_map(|(v, _)| decode_value(&v))
            .collect()
    }

    /// Whether a valid path under `dir/` had a live value at the moment `at` (now when
    /// None).
    pub fn live_below(&self, dir: &str, at: Option<&Heads>) -> bool {
        if !self.dirs.contains(dir) {
            return false;
        }
        let range = format!("{dir}/")..format!("{dir}0"); // '0' follows '/'
        self.shards.iter().enumerate().any(|(i, doc)| {
            let items = match at {
                None => doc.map_range(ROOT, range.clone()),
                Some(heads) => doc.map_range_at(ROOT, range.clone(), &heads[i]),
            };
            items.into_iter().any(|item| {
                path::validate(&item.key).is_ok()
                    && winner(&self.values_at(&item.key, at)).is_some()
            })
        })
    }

    /// The part of the tree that changes at `paths` can reach, as it was at `at` (now
    /// when None); None on a case-insensitive file system (see [`derive_partial`]).
    pub fn partial_tree<'a>(
        &self,
        paths: impl IntoIterator<Item = &'a str>,
        options: TreeOptions,
        at: Option<&Heads>,
    ) -> Option<PartialTree> {
        derive_partial(
            paths,
            &|p| self.values_at(p, at),
            &|d| self.live_below(d, at),
            options,
        )
    }
}

/// Most bits per entry and probes accepted in a peer's Bloom filter (automerge writes 10
/// and 7).
const MAX_BLOOM_PARAMETER: u64 = 64;

/// Whether automerge can use a peer's Bloom filter safely. automerge 0.12 takes every
/// probe modulo the filter's bit count and computes one u32 per probe for each change it
/// checks (`sync/bloom.rs`, `get_probes`), when it next generates a message: a filter with
/// entries but 0 bits per entry panics (division by zero), one of 2^32 probes costs 16 GiB
/// per change.
fn usable_bloom(bloom: &sync::BloomFilter) -> bool {
    // Wire form: LEB128 entries, bits per entry, probes, then the bits; empty when the
    // filter has no entries (it is never probed then).
    let bytes = bloom.to_bytes();
    let mut rest = bytes.as_slice();
    let mut leb128 = || -> Option<u64> {
        let mut v = 0u64;
        for shift in (0..35).step_by(7) {
            let (&b, tail) = rest.split_first()?;
            rest = tail;
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Some(v);
            }
        }
        None
    };
    if bytes.is_empty() {
        return true;
    }
    let (Some(_entries), Some(bits), Some(probes)) = (leb128(), leb128(), leb128()) else {
        return false;
    };
    (1..=MAX_BLOOM_PARAMETER).contains(&bits) && (1..=MAX_BLOOM_PARAMETER).contains(&probes)
}

/// Below this many changes, recording on other threads costs more than it saves.
const PARALLEL_MIN: usize = 512;

/// The shard of `path` among `count`.
fn shard_index(path: &str, count: usize) -> usize {
    let h = blake3::hash(path.as_bytes());
    let n = u16::from_le_bytes([h.as_bytes()[0], h.as_bytes()[1]]);
    n as usize % count
}

/// `f` of every item, in order, with the items split into `workers` runs that go to
/// scoped threads (all on the caller's thread when `workers` is 1). Used for shards,
/// which are independent documents.
fn on_workers<T: Send, R: Send>(
    items: Vec<T>,
    workers: usize,
    f: impl Fn(T) -> R + Sync,
) -> Vec<R> {
    if workers <= 1 || items.len() <= 1 {
        return items.into_iter().map(f).collect();
    }
    let per = items.len().div_ceil(workers);
    let mut runs: Vec<Vec<T>> = Vec::new();
    let mut rest = items.into_iter().peekable();
    while rest.peek().is_some() {
        runs.push(rest.by_ref().take(per).collect());
    }
    let f = &f;
    std::thread::scope(|s| {
        let handles: Vec<_> = runs
            .into_iter()
            .map(|run| s.spawn(move || run.into_iter().map(f).collect::<Vec<R>>()))
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().expect("a shard worker panicked"))
            .collect()
    })
}

/// Below this many bytes, a sync message is applied on the caller's thread.
const PARALLEL_MIN_BYTES: usize = 64 << 10;

/// Which keys a received message wrote in one shard.
enum ChangedKeys {
    None,
    /// Keys written (with repeats), at most [`CHANGED_MAX`].
    Listed(Vec<String>),
    /// More than [`CHANGED_MAX`] ops.
    TooMany,
}

/// What applying a peer's messages to one shard did.
struct Received {
    shard: usize,
    keys: ChangedKeys,
    result: Result<(), FolderError>,
}

/// Applies a peer's messages for one shard and notes which keys they wrote.
fn receive_shard(
    shard: usize,
    doc: &mut AutoCommit,
    state: &mut sync::State,
    msgs: Vec<sync::Message>,
) -> Received {
    let before = doc.get_heads();
    let mut result = Ok(());
    for msg in msgs {
        // A log of our own, dropped at once: automerge 0.12 logs a patch per applied op
        // into the document's log even while that log is inactive, and never empties it
        // (a receiver kept every op it ever applied; `core/tests/memory.rs`).
        let mut patches = PatchLog::null();
        if let Err(source) = doc
            .sync()
            .receive_sync_message_log_patches(state, msg, &mut patches)
        {
            result = Err(FolderError::Sync {
                shard: shard as u16,
                source,
            });
            break;
        }
    }
    let keys = if doc.get_heads() == before {
        ChangedKeys::None
    } else {
        let changes = doc.get_changes(&before);
        let ops: usize = changes.iter().map(|c| c.len()).sum();
        if ops > CHANGED_MAX {
            ChangedKeys::TooMany
        } else {
            let mut keys = Vec::with_capacity(ops);
            for change in changes {
                for op in change.decode().operations {
                    if let automerge::legacy::Key::Map(key) = op.key {
                        keys.push(key.to_string());
                    }
                }
            }
            ChangedKeys::Listed(keys)
        }
    };
    Received {
        shard,
        keys,
        result,
    }
}

/// What one [`ShardWriter`] did.
struct Written {
    shard: usize,
    /// Paths written in the shard.
    paths: Vec<String>,
    /// Conflict copies that live in other shards, to be written there afterwards.
    deferred: Vec<(String, EntryValue)>,
}

/// Records local changes of paths of one shard, touching only that shard, so shards can
/// be recorded on separate threads.
struct ShardWriter<'a> {
    shard: usize,
    count: usize,
    doc: &'a mut AutoCommit,
    device: DeviceId,
    paths: Vec<String>,
    deferred: Vec<(String, EntryValue)>,
}

impl<'a> ShardWriter<'a> {
    fn new(shard: usize, count: usize, doc: &'a mut AutoCommit, device: DeviceId) -> Self {
        ShardWriter {
            shard,
            count,
            doc,
            device,
            paths: Vec::new(),
            deferred: Vec::new(),
        }
    }

    fn values(&self, path: &str) -> Vec<EntryValue> {
        debug_assert_eq!(shard_index(path, self.count), self.shard);
        self.doc
            .get_all(ROOT, path)
            .unwrap_or_default()
            .into_iter()
            .filter_map(|(v, _)| decode_value(&v))
            .collect()
    }

    fn put(&mut self, path: &str, value: &EntryValue) {
        if shard_index(path, self.count) != self.shard {
            self.deferred.push((path.to_string(), value.clone()));
            return;
        }
        // Putting a scalar on the root map of a document we own cannot fail.
        let _ = self.doc.put(ROOT, path, ScalarValue::Bytes(value.encode()));
        self.paths.push(path.to_string());
    }

    /// [`FolderDoc::record_local`] of a path of this shard.
    fn record(&mut self, path: &str, change: &LocalChange, base: Option<ContentId>) -> bool {
        let current = self.values(path);
        if current.len() > 1 {
            // Writing the key collapses its concurrent values: first give every losing
            // version its conflict copy, so that none is lost.
            let here = derive_tree(
                [(path.to_string(), current.clone())],
                TreeOptions::default(),
            );
            for (copy, entry) in &here.entries {
                // The version this device had on disk was seen and replaced by the user
                // here: the new value supersedes it, it is not a conflict.
                if matches!(entry.origin, Origin::ConflictCopy { .. })
                    && (base.is_none() || entry.value.content != base)
                {
                    self.put(copy, &entry.value);
                }
            }
        }
        let winner = winner(&current).cloned();
        let unseen = winner
            .clone()
            .filter(|w| w.content.is_some() && w.content != base);
        let value = match change {
            LocalChange::Present {
                kind,
                content,
                size,
                mtime_ns,
                mode,
                link_target,
            } => {
                let value = EntryValue {
                    kind: *kind,
                    deleted: false,
                    content: *content,
                    size: if *kind == EntryKind::File { *size } else { 0 },
                    mtime_ns: *mtime_ns,
                    mode: *mode,
                    link_target: link_target.clone(),
                    device: self.device,
                    replaces: base.filter(|b| Some(*b) != *content),
                };
                if current.len() == 1
                    && current[0].same_data(&value)
                    && current[0].mode == value.mode
                    && current[0].mtime_ns == value.mtime_ns
                {
                    return false;
                }
                if let Some(w) = unseen.filter(|w| w.content != *content) {
                    self.put(&crate::folder::tree::conflict_name(path, &w), &w);
                }
                value
            }
            LocalChange::Deleted => {
                let Some(w) = winner else { return false };
                if unseen.is_some() {
                    return false;
                }
                w.deleted_by(self.device)
            }
        };
        self.put(path, &value);
        true
    }

    fn finish(self) -> Written {
        Written {
            shard: self.shard,
            paths: self.paths,
            deferred: self.deferred,
        }
    }
}

/// Adds every ancestor directory of `path` to `dirs`.
fn note_dirs(dirs: &mut HashSet<String>, path: &str) {
    for a in path::ancestors(path) {
        if dirs.contains(a) {
            break; // its ancestors were added with it
        }
        dirs.insert(a.to_string());
    }
}

fn decode_value(v: &Value<'_>) -> Option<EntryValue> {
    match v {
        Value::Scalar(s) => match s.as_ref() {
            ScalarValue::Bytes(b) => EntryValue::decode(b).ok(),
            _ => None,
        },
        Value::Object(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn values_that_are_not_entries_are_skipped_and_reported() {
        let mut doc = FolderDoc::new(DeviceId([1; 8]), 2).unwrap();
        let shard = doc.shard_of("junk");
        doc.shards[shard]
            .put(ROOT, "junk", "a string, not an entry")
            .unwrap();
        let shard = doc.shard_of("bytes");
        doc.shards[shard]
            .put(ROOT, "bytes", ScalarValue::Bytes(vec![1, 2, 3]))
            .unwrap();
        let recorded = doc.recorded();
        assert!(recorded.entries.is_empty());
        let mut bad = recorded.undecodable;
        bad.sort();
        assert_eq!(bad, vec!["bytes", "junk"]);
    }

    #[test]
    fn window_bounds_cut_a_folder_into_windows_of_about_the_size_asked() {
        let mut doc = FolderDoc::new(DeviceId([1; 8]), DEFAULT_SHARDS).unwrap();
        let paths: Vec<String> = (0..20_000)
            .map(|i| format!("d{:02}/s{}/f{i:05}", i % 37, i % 5))
            .collect();
        let changes: Vec<_> = paths.iter().map(|p| (p.as_str(), file(1), None)).collect();
        let refs: Vec<_> = changes.iter().map(|(p, c, b)| (*p, c, *b)).collect();
        doc.record_local_all(&refs);
        doc.commit();
        for per_window in [16, 300, 2_000] {
            let windows = PathRange::split(doc.window_bounds(per_window));
            let sizes: Vec<usize> = windows.iter().map(|w| doc.keys_in(w).len()).collect();
            // Every path in exactly one window.
            assert_eq!(sizes.iter().sum::<usize>(), paths.len());
            for p in paths.iter().step_by(97) {
                assert_eq!(windows.iter().filter(|w| w.contains(p)).count(), 1);
            }
            let expected = paths.len() / per_window;
            assert!(
                windows.len() > expected / 2 && windows.len() < expected * 2,
                "{per_window} per window: {} windows, {expected} expected",
                windows.len()
            );
            let largest = sizes.iter().max().copied().unwrap_or(0);
            assert!(
                largest < per_window * 8,
                "{per_window}: a window of {largest}"
            );
        }
        // A folder smaller than a window is one window.
        let small = FolderDoc::new(DeviceId([1; 8]), DEFAULT_SHARDS).unwrap();
        assert_eq!(PathRange::split(small.window_bounds(50_000)).len(), 1);
    }

    #[test]
    fn a_range_meets_a_subtree_when_the_directory_or_a_path_under_it_lies_in_it() {
        let names = ["a", "a.txt", "a/b", "a/b/c", "a0", "a-", "b", "b/a", "ab/c"];
        let mut bounds: Vec<Option<&str>> = names.iter().map(|n| Some(*n)).collect();
        bounds.extend([None, Some("a/"), Some("a/c"), Some("a/b0")]);
        for from in &bounds {
            for to in &bounds {
                let range = PathRange {
                    from: from.map(String::from),
                    to: to.map(String::from),
                };
                for dir in ["a", "a/b", "b", "ab"] {
                    let under = |p: &str| p == dir || p.starts_with(&format!("{dir}/"));
                    let any = names.iter().any(|p| under(p) && range.contains(p));
                    // Never skips a subtree with a path in the range.
                    if any {
                        assert!(range.meets_subtree(dir), "{range:?} {dir}");
                    }
                }
            }
        }
        let range = |f: &str, t: &str| PathRange {
            from: Some(f.into()),
            to: Some(t.into()),
        };
        assert!(
            !range("a0", "b").meets_subtree("a"),
            "a/... sorts before a0"
        );
        assert!(!range("a-", "a/").meets_subtree("a/b"));
        assert!(!range("b", "c").meets_subtree("a"));
        assert!(range("a/b/z", "b").meets_subtree("a/b"));
        assert!(!range("a", "a/b").meets_subtree("a/b"), "`to` is excluded");
    }

    fn file(content: u8) -> LocalChange {
        LocalChange::Present {
            kind: EntryKind::File,
            content: Some(ContentId([content; 32])),
            size: 10,
            mtime_ns: 1_000,
            mode: 0o644,
            link_target: None,
        }
    }

    /// Syncs `from` into `to` until neither has anything to say (bounded).
    fn sync(from: &mut FolderDoc, to: &mut FolderDoc) {
        let (mut a, mut b) = (from.new_peer(), to.new_peer());
        for _ in 0..20 {
            let there = from.generate_sync_message(&mut a);
            if let Some(m) = &there {
                to.receive_sync_message(&mut b, m).unwrap();
            }
            let back = to.generate_sync_message(&mut b);
            if let Some(m) = &back {
                from.receive_sync_message(&mut a, m).unwrap();
            }
            if there.is_none() && back.is_none() {
                return;
            }
        }
        panic!("sync did not settle");
    }

    #[test]
    fn an_unavailable_version_is_dropped_only_by_its_author_and_only_alone() {
        let mut mine = FolderDoc::new(DeviceId([1; 8]), 4).unwrap();
        let mut theirs = FolderDoc::new(DeviceId([2; 8]), 4).unwrap();
        mine.record_local("a.txt", &file(7), None);
        theirs.record_local("b.txt", &file(8), None);
        theirs.record_local("c.txt", &file(5), None);
        mine.record_local("c.txt", &file(6), None);
        sync(&mut theirs, &mut mine);
        // Another device's version: never dropped here.
        assert!(!mine.record_unavailable("b.txt", ContentId([8; 32]), None));
        // Concurrent versions at the path: not touched.
        assert_eq!(mine.values("c.txt").len(), 2);
        assert!(!mine.record_unavailable("c.txt", ContentId([6; 32]), None));
        // Not the version recorded there: nothing happens.
        assert!(!mine.record_unavailable("a.txt", ContentId([9; 32]), None));
        // Its own, sole version: a tombstone that replaces it.
        assert!(mine.record_unavailable("a.txt", ContentId([7; 32]), None));
        let v = mine.values("a.txt");
        assert!(v[0].deleted && v[0].replaces == Some(ContentId([7; 32])));
        assert!(mine.tree(TreeOptions::default()).get("a.txt").is_none());
        assert!(
            !mine.record_unavailable("a.txt", ContentId([7; 32]), None),
            "once"
        );
    }

    #[test]
    fn malformed_sync_messages_are_errors_not_panics() {
        let mut doc = FolderDoc::new(DeviceId([1; 8]), 4).unwrap();
        let mut peer = doc.new_peer();
        let garbage = FolderMessage {
            shards: vec![(0, vec![0x42, 1, 2, 3])],
        };
        assert!(doc.receive_sync_message(&mut peer, &garbage).is_err());
        let out_of_range = FolderMessage {
            shards: vec![(9, vec![])],
        };
        assert!(matches!(
            doc.receive_sync_message(&mut peer, &out_of_range),
            Err(FolderError::NoSuchShard {
                shard: 9,
                shards: 4
            })
        ));
    }

    #[test]
    fn a_saved_folder_loads_with_the_same_content() {
        let mut doc = FolderDoc::new(DeviceId([1; 8]), 4).unwrap();
        let change = LocalChange::Present {
            kind: EntryKind::File,
            content: Some(ContentId([9; 32])),
            size: 3,
            mtime_ns: 10,
            mode: 0o600,
            link_target: None,
        };
        assert!(doc.record_local("a/b", &change, None));
        assert!(
            !doc.record_local("a/b", &change, Some(ContentId([9; 32]))),
            "recording the same state again changes nothing"
        );
        doc.commit();
        let saved: Vec<Vec<u8>> = (0..4).map(|s| doc.save_shard(s)).collect();
        let loaded = FolderDoc::load(DeviceId([1; 8]), &saved).unwrap();
        assert_eq!(loaded.values("a/b"), doc.values("a/b"));
        assert!(FolderDoc::load(DeviceId([1; 8]), &[vec![1, 2, 3]]).is_err());
    }

    proptest! {
        #[test]
        fn message_decoding_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = FolderMessage::decode(&bytes);
        }

        #[test]
        fn messages_round_trip(shards in proptest::collection::vec((any::<u16>(), proptest::collection::vec(any::<u8>(), 0..50)), 0..5)) {
            let m = FolderMessage { shards };
            prop_assert_eq!(FolderMessage::decode(&m.encode()).unwrap(), m.clone());
            prop_assert_eq!(m.encode().len(), m.len());
        }
    }
}
