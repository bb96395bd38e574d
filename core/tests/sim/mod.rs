//! A simulated group of devices: each has a folder document, a disk (a map of what the
//! scanner would index), a history store and a chunk store. User edits are recorded in
//! the document as a scan would; sync messages travel between replicas (and can be lost
//! or duplicated); `apply` runs the planner and carries out its actions on the disk.
//!
//! Bytes are where they are in reality: a replica holds a content only while its disk or
//! its history store has it, and fetches chunks only from replicas that hold them at that
//! moment. The executor keeps the rules the daemon's puller keeps: a version about to be
//! replaced or removed goes to history when the plan asks or when no other path holds it;
//! a write whose version no replica holds waits; a version the replica authored and no
//! longer has is dropped from the document (`FolderDoc::record_unavailable`).

#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap, HashSet};

use cairn_core::folder::{DeviceId, FolderDoc, LocalChange, PeerSync, TreeOptions};
use cairn_core::manifest::{ChunkRef, Manifest};
use cairn_core::path::case_key;
use cairn_core::planner::{Action, LocalStore, plan};
use cairn_core::scan::{EntryKind, IndexedEntry, Stamp};
use cairn_core::{ChunkId, ContentId};

pub const SHARDS: u16 = 4;

/// Two documents outside a [`Sim`]: syncs `from` into `to` until neither has anything to say (bounded).
pub fn sync_docs(from: &mut FolderDoc, to: &mut FolderDoc) {
    let (mut a, mut b) = (from.new_peer(), to.new_peer());
    for _ in 0..50 {
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

/// Content `n` of the simulation.
pub fn content(n: u64) -> ContentId {
    ContentId(*blake3::hash(format!("content-{n}").as_bytes()).as_bytes())
}

/// Every content is one chunk in the simulation, named after the content.
fn manifest_of(c: &ContentId) -> Manifest {
    Manifest {
        chunks: vec![ChunkRef {
            id: ChunkId(c.0),
            len: 1000,
        }],
    }
}

pub struct Replica {
    pub doc: FolderDoc,
    pub disk: BTreeMap<String, IndexedEntry>,
    pub history: HashSet<ContentId>,
    pub peers: Vec<PeerSync>,
    pub fetched_chunks: usize,
    /// Files the last apply could not write: no replica held their version.
    pub waiting: Vec<(String, ContentId)>,
}

impl Replica {
    /// Whether this replica has the bytes of `chunk` (one chunk per content here).
    pub fn holds(&self, chunk: &ChunkId) -> bool {
        holds(&self.disk, &self.history, chunk)
    }
}

/// The directories a user must create before writing `path` on `disk`, outermost first;
/// None when a parent is a file or symlink (the write is not possible).
pub fn missing_dirs(disk: &BTreeMap<String, IndexedEntry>, path: &str) -> Option<Vec<String>> {
    let mut missing = Vec::new();
    let parents: Vec<&str> = cairn_core::path::ancestors(path).collect();
    for a in parents.into_iter().rev() {
        match disk.get(a).map(|e| e.kind) {
            Some(EntryKind::Dir) => {}
            Some(_) => return None,
            None => missing.push(a.to_string()),
        }
    }
    Some(missing)
}

/// Every entry under `dir/`, as an index read by key range gives it.
pub fn below(index: &BTreeMap<String, IndexedEntry>, dir: &str) -> Vec<(String, IndexedEntry)> {
    let start = format!("{dir}/");
    index
        .range(start.clone()..)
        .take_while(|(p, _)| p.starts_with(&start))
        .map(|(p, e)| (p.clone(), e.clone()))
        .collect()
}

/// Whether a disk or history store has the bytes of `chunk` (one chunk per content here).
pub fn holds(
    disk: &BTreeMap<String, IndexedEntry>,
    history: &HashSet<ContentId>,
    chunk: &ChunkId,
) -> bool {
    disk.values()
        .any(|e| e.content.is_some_and(|c| c.0 == chunk.0))
        || history.iter().any(|c| c.0 == chunk.0)
}

/// The puller's rule before a version is replaced or removed (see `Puller::preserve`).
fn preserve(
    disk: &BTreeMap<String, IndexedEntry>,
    history: &mut HashSet<ContentId>,
    path: &str,
    keeps: &mut HashMap<String, ContentId>,
) {
    let Some(c) = disk
        .get(path)
        .filter(|e| e.kind == EntryKind::File)
        .and_then(|e| e.content)
    else {
        return;
    };
    let asked = keeps.remove(path) == Some(c);
    let elsewhere = disk.iter().any(|(p, e)| p != path && e.content == Some(c));
    if asked || !elsewhere {
        history.insert(c);
    }
}

/// What carrying out a plan did.
#[derive(Debug, Default)]
pub struct Executed {
    /// Actions carried out.
    pub done: usize,
    /// Files not written: no reachable replica held their version.
    pub missing: Vec<(String, ContentId)>,
    /// An action was skipped because the disk no longer matched the index there (a user
    /// change the scanner has not seen yet).
    pub raced: bool,
}

/// A replica's disk, history store and (for a node) index, as the puller sees them.
pub struct Store<'a> {
    pub disk: &'a mut BTreeMap<String, IndexedEntry>,
    pub history: &'a mut HashSet<ContentId>,
    /// What the scanner last saw; None when the disk is the index (the model-only world,
    /// where every change is recorded as it happens).
    pub index: Option<&'a mut BTreeMap<String, IndexedEntry>>,
    pub fetched_chunks: &'a mut usize,
}

impl Store<'_> {
    /// The disk at `path` is as the index says (a write there would not lose a change the
    /// scanner has not seen).
    fn unchanged(&self, path: &str) -> bool {
        match &self.index {
            None => true,
            Some(index) => index.get(path) == self.disk.get(path),
        }
    }

    fn parents_ok(&self, path: &str) -> bool {
        let ok = cairn_core::path::ancestors(path)
            .all(|a| self.disk.get(a).map(|e| e.kind) == Some(EntryKind::Dir));
        if self.index.is_none() {
            parents_are_dirs(self.disk, path);
        }
        ok
    }

    /// The index follows what the puller wrote.
    fn mirror(&mut self, path: &str) {
        if let Some(index) = &mut self.index {
            match self.disk.get(path) {
                Some(e) => index.insert(path.to_string(), e.clone()),
                None => index.remove(path),
            };
        }
    }

    /// Carries out the first `steps` actions of a plan with the puller's rules: a version
    /// about to be replaced or removed goes to history when the plan asks or when no other
    /// path holds it; a write whose version no reachable replica (`elsewhere`) holds waits;
    /// a path the user changed since the last scan is skipped (raced).
    pub fn execute(
        &mut self,
        actions: Vec<Action>,
        elsewhere: &HashSet<ChunkId>,
        steps: usize,
    ) -> Executed {
        let mut out = Executed::default();
        let mut keeps: HashMap<String, ContentId> = HashMap::new();
        for action in actions.into_iter().take(steps) {
            match action {
                Action::KeepInHistory { path, content } => {
                    keeps.insert(path, content);
                }
                Action::FetchManifest { .. } => {}
                Action::MakeDir { path } => {
                    if !self.unchanged(&path) || !self.parents_ok(&path) {
                        out.raced = true;
                        continue;
                    }
                    assert!(!self.disk.contains_key(&path), "mkdir over {path}");
                    self.disk
                        .insert(path.clone(), entry(EntryKind::Dir, None, None, 0));
                    self.mirror(&path);
                }
                Action::WriteFile {
                    path,
                    content,
                    mtime_ns,
                    ..
                } => {
                    // What no local file holds comes from a reachable peer (a content is
                    // one chunk here), or the path waits.
                    let chunk = ChunkId(content.0);
                    if !holds(self.disk, self.history, &chunk) {
                        if !elsewhere.contains(&chunk) {
                            out.missing.push((path, content));
                            continue;
                        }
                        *self.fetched_chunks += 1;
                    }
                    if !self.unchanged(&path) || !self.parents_ok(&path) {
                        out.raced = true;
                        continue;
                    }
                    assert!(
                        self.disk
                            .get(&path)
                            .is_none_or(|e| e.kind != EntryKind::Dir),
                        "file written over directory {path}"
                    );
                    preserve(self.disk, self.history, &path, &mut keeps);
                    self.disk.insert(
                        path.clone(),
                        entry(EntryKind::File, Some(content), None, mtime_ns),
                    );
                    self.mirror(&path);
                }
                // The daemon moves the directory at once when nothing in it changed, else
                // runs the steps: the same outcome; the steps are what can race.
                Action::RenameDir { steps, .. } => {
                    let sub = self.execute(steps, elsewhere, usize::MAX);
                    out.done += sub.done;
                    out.missing.extend(sub.missing);
                    out.raced |= sub.raced;
                    continue;
                }
                Action::Rename {
                    from,
                    path,
                    content,
                    mtime_ns,
                    ..
                } => {
                    // The source must still hold the content, the target be free;
                    // otherwise it is an ordinary write (here: from the source).
                    if !self.unchanged(&path) || !self.unchanged(&from) || !self.parents_ok(&path) {
                        out.raced = true;
                        continue;
                    }
                    let source = self.disk.get(&from).and_then(|e| e.content);
                    assert!(!self.disk.contains_key(&path), "rename over {path}");
                    if source == Some(content) {
                        self.disk.remove(&from);
                        self.mirror(&from);
                    } else {
                        // An ordinary write: the bytes come from here or a reachable peer.
                        let chunk = ChunkId(content.0);
                        if !holds(self.disk, self.history, &chunk) {
                            if !elsewhere.contains(&chunk) {
                                out.missing.push((path, content));
                                continue;
                            }
                            *self.fetched_chunks += 1;
                        }
                    }
                    self.disk.insert(
                        path.clone(),
                        entry(EntryKind::File, Some(content), None, mtime_ns),
                    );
                    self.mirror(&path);
                }
                Action::WriteSymlink { path, target } => {
                    if !self.unchanged(&path) || !self.parents_ok(&path) {
                        out.raced = true;
                        continue;
                    }
                    preserve(self.disk, self.history, &path, &mut keeps);
                    self.disk.insert(
                        path.clone(),
                        entry(EntryKind::Symlink, None, Some(target), 0),
                    );
                    self.mirror(&path);
                }
                Action::Delete { path, .. } => {
                    if !self.unchanged(&path) {
                        out.raced = true;
                        continue;
                    }
                    let prefix = format!("{path}/");
                    if self.disk.keys().any(|k| k.starts_with(&prefix)) {
                        assert!(self.index.is_some(), "rmdir of non-empty {path}");
                        out.raced = true;
                        continue;
                    }
                    preserve(self.disk, self.history, &path, &mut keeps);
                    self.disk.remove(&path);
                    self.mirror(&path);
                }
            }
            out.done += 1;
        }
        out
    }
}

impl LocalStore for Replica {
    fn has_manifest(&self, _: &ContentId) -> bool {
        true
    }
}

pub struct World {
    pub replicas: Vec<Replica>,
    pub options: TreeOptions,
    pub clock: i64,
    /// Every content a user wrote.
    pub written: HashSet<ContentId>,
    /// Every content some recorded change marked as superseded (`replaces`).
    pub superseded: HashSet<ContentId>,
    /// Versions dropped because their author no longer had them.
    pub dropped: HashSet<ContentId>,
    /// Versions a user overwrote or deleted on a replica (gone there, by the user's hand;
    /// without timing in the simulation, maybe before any other replica fetched them).
    pub destroyed_by_user: HashSet<ContentId>,
    /// Replicas that are switched off: nothing can be fetched from them.
    pub offline: HashSet<usize>,
}

pub fn entry(
    kind: EntryKind,
    content: Option<ContentId>,
    target: Option<String>,
    mtime: i64,
) -> IndexedEntry {
    IndexedEntry {
        kind,
        stamp: Stamp {
            size: 1000,
            mtime_ns: mtime,
            ctime_ns: mtime,
            inode: 0,
            mode: 0o644,
        },
        content,
        link_target: target,
    }
}

impl World {
    pub fn new(n: usize, options: TreeOptions) -> Self {
        let replicas = (0..n)
            .map(|i| {
                let doc = FolderDoc::new(DeviceId([i as u8 + 1; 8]), SHARDS).unwrap();
                let peers = (0..n).map(|_| doc.new_peer()).collect();
                Replica {
                    doc,
                    disk: BTreeMap::new(),
                    history: HashSet::new(),
                    peers,
                    fetched_chunks: 0,
                    waiting: Vec::new(),
                }
            })
            .collect();
        World {
            replicas,
            options,
            clock: 1_700_000_000_000_000_000,
            written: HashSet::new(),
            superseded: HashSet::new(),
            dropped: HashSet::new(),
            destroyed_by_user: HashSet::new(),
            offline: HashSet::new(),
        }
    }

    fn tick(&mut self) -> i64 {
        self.clock += 1_000_000_000;
        self.clock
    }

    /// On a case-insensitive disk, a user naming `p` reaches the existing path that folds
    /// to the same key.
    fn on_disk_name(&self, r: usize, p: &str) -> String {
        if !self.options.case_insensitive {
            return p.to_string();
        }
        let key = case_key(p);
        let mut out = String::new();
        for (i, comp) in p.split('/').enumerate() {
            let prefix = if i == 0 {
                comp.to_string()
            } else {
                format!("{out}/{comp}")
            };
            let pk = case_key(&prefix);
            let found = self.replicas[r]
                .disk
                .keys()
                .find(|k| case_key(k) == pk)
                .cloned();
            out = found.unwrap_or(prefix);
        }
        let _ = key;
        out
    }

    /// Records a disk change of replica `r` into its document, as a scan would.
    fn record(&mut self, r: usize, path: &str, base: Option<ContentId>) {
        let change = LocalChange::of(self.replicas[r].disk.get(path));
        let doc = &mut self.replicas[r].doc;
        let before = doc.values(path);
        doc.record_local(path, &change, base);
        for v in doc.values(path) {
            if !before.contains(&v)
                && let Some(x) = v.replaces
            {
                self.superseded.insert(x);
            }
        }
    }

    fn mkdirs(&mut self, r: usize, path: &str) -> bool {
        let Some(missing) = missing_dirs(&self.replicas[r].disk, path) else {
            return false;
        };
        for a in missing {
            let t = self.tick();
            self.replicas[r]
                .disk
                .insert(a.clone(), entry(EntryKind::Dir, None, None, t));
            self.record(r, &a, None);
        }
        true
    }

    pub fn user_write(&mut self, r: usize, path: &str, n: u64) {
        let path = self.on_disk_name(r, path);
        if matches!(
            self.replicas[r].disk.get(&path).map(|e| e.kind),
            Some(EntryKind::Dir)
        ) || !self.mkdirs(r, &path)
        {
            return;
        }
        let c = content(n);
        let t = self.tick();
        let rep = &mut self.replicas[r];
        let base = rep.disk.get(&path).and_then(|e| e.content);
        self.destroyed_by_user.extend(base);
        rep.disk
            .insert(path.clone(), entry(EntryKind::File, Some(c), None, t));
        self.written.insert(c);
        self.record(r, &path, base);
        self.replicas[r].doc.commit();
    }

    pub fn user_symlink(&mut self, r: usize, path: &str, target: &str) {
        let path = self.on_disk_name(r, path);
        if self.replicas[r].disk.contains_key(&path) || !self.mkdirs(r, &path) {
            return;
        }
        let t = self.tick();
        self.replicas[r].disk.insert(
            path.clone(),
            entry(EntryKind::Symlink, None, Some(target.into()), t),
        );
        self.record(r, &path, None);
        self.replicas[r].doc.commit();
    }

    pub fn user_mkdir(&mut self, r: usize, path: &str) {
        let path = self.on_disk_name(r, path);
        if self.replicas[r].disk.contains_key(&path) || !self.mkdirs(r, &path) {
            return;
        }
        let t = self.tick();
        self.replicas[r]
            .disk
            .insert(path.clone(), entry(EntryKind::Dir, None, None, t));
        self.record(r, &path, None);
        self.replicas[r].doc.commit();
    }

    /// Deletes a path, and everything below it for a directory.
    pub fn user_delete(&mut self, r: usize, path: &str) {
        let path = self.on_disk_name(r, path);
        let prefix = format!("{path}/");
        let doomed: Vec<String> = self.replicas[r]
            .disk
            .keys()
            .filter(|k| **k == path || k.starts_with(&prefix))
            .cloned()
            .collect();
        let bases: Vec<Option<ContentId>> = doomed
            .iter()
            .map(|p| self.replicas[r].disk.get(p).and_then(|e| e.content))
            .collect();
        for p in &doomed {
            self.replicas[r].disk.remove(p);
        }
        self.destroyed_by_user.extend(bases.iter().flatten());
        for (p, base) in doomed.iter().zip(bases) {
            self.record(r, p, base);
        }
        self.replicas[r].doc.commit();
    }

    /// Renames a file (replacing a file at the target, as rename(2) does).
    pub fn user_rename(&mut self, r: usize, from: &str, to: &str) {
        let from = self.on_disk_name(r, from);
        let to = self.on_disk_name(r, to);
        let Some(e) = self.replicas[r].disk.get(&from).cloned() else {
            return;
        };
        if e.kind != EntryKind::File || from == to || to.starts_with(&format!("{from}/")) {
            return;
        }
        if matches!(
            self.replicas[r].disk.get(&to).map(|e| e.kind),
            Some(EntryKind::Dir)
        ) || !self.mkdirs(r, &to)
        {
            return;
        }
        // rename(2) keeps the mtime and changes the ctime.
        let to_base = self.replicas[r].disk.get(&to).and_then(|x| x.content);
        self.destroyed_by_user.extend(to_base);
        self.replicas[r].disk.remove(&from);
        self.replicas[r].disk.insert(to.clone(), e.clone());
        self.record(r, &from, e.content);
        self.record(r, &to, to_base);
        self.replicas[r].doc.commit();
    }

    /// One sync message from `from` to `to`. A lost message resets both sides' sync state,
    /// as a reconnect does; a duplicated one is delivered twice.
    pub fn sync_once(&mut self, from: usize, to: usize, lose: bool, duplicate: bool) -> bool {
        if from == to {
            return false;
        }
        let (a, b) = two(&mut self.replicas, from, to);
        let Some(msg) = a.doc.generate_sync_message(&mut a.peers[to]) else {
            return false;
        };
        if lose {
            a.peers[to].reset();
            b.peers[from].reset();
            return true;
        }
        let wire = msg.encode();
        let decoded = cairn_core::folder::FolderMessage::decode(&wire).unwrap();
        b.doc
            .receive_sync_message(&mut b.peers[from], &decoded)
            .unwrap();
        if duplicate {
            b.doc
                .receive_sync_message(&mut b.peers[from], &decoded)
                .unwrap();
        }
        true
    }

    /// Syncs two replicas until neither has anything to say.
    pub fn sync_pair(&mut self, i: usize, j: usize) {
        for _ in 0..20 {
            let a = self.sync_once(i, j, false, false);
            let b = self.sync_once(j, i, false, false);
            if !a && !b {
                return;
            }
        }
        panic!("sync between {i} and {j} did not settle");
    }

    /// Runs the planner on replica `r` and carries out its actions on the disk.
    pub fn apply(&mut self, r: usize) {
        self.apply_steps(r, usize::MAX);
    }

    /// Like `apply`, but the replica crashes after `steps` actions (the rest never run;
    /// nothing of the plan is remembered, as in the daemon).
    pub fn apply_steps(&mut self, r: usize, steps: usize) {
        let options = self.options;
        // What the other replicas hold right now: the only place chunks can come from.
        let elsewhere: HashSet<ChunkId> = self
            .replicas
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != r && !self.offline.contains(i))
            .flat_map(|(_, o)| {
                o.disk
                    .values()
                    .filter_map(|e| e.content)
                    .chain(o.history.iter().copied())
                    .map(|c| ChunkId(c.0))
                    .collect::<Vec<_>>()
            })
            .collect();
        let rep = &mut self.replicas[r];
        let tree = rep.doc.tree(options);
        rep.doc.materialize(&tree);
        let tree = rep.doc.tree(options);
        let plan = plan(&tree, &rep.disk, &*rep);
        assert!(
            plan.rejected.is_empty(),
            "derived trees never pass through symlinks: {:?}",
            plan.rejected
        );
        let missing = Store {
            disk: &mut rep.disk,
            history: &mut rep.history,
            index: None,
            fetched_chunks: &mut rep.fetched_chunks,
        }
        .execute(plan.actions, &elsewhere, steps)
        .missing;
        // A version this replica made and no longer has can never come: drop it, as the
        // daemon does after a pull. Others wait for whoever has theirs.
        let me = rep.doc.device();
        let mut dropped = false;
        rep.waiting.clear();
        for (path, content) in missing {
            let mine = tree
                .get(&path)
                .is_some_and(|e| e.value.device == me && e.value.content == Some(content));
            if mine && !rep.holds(&ChunkId(content.0)) {
                assert!(
                    !elsewhere.contains(&ChunkId(content.0)) || !self.offline.is_empty(),
                    "a version another replica still holds was declared unavailable"
                );
                if rep.doc.record_unavailable(&path, content, None) {
                    self.dropped.insert(content);
                    dropped = true;
                }
            } else {
                rep.waiting.push((path, content));
            }
        }
        if dropped {
            rep.doc.commit();
        }
    }

    /// Syncs everyone with everyone and applies, until nothing changes any more.
    pub fn settle(&mut self) {
        let n = self.replicas.len();
        for r in &mut self.replicas {
            for p in &mut r.peers {
                p.reset();
            }
        }
        for _ in 0..10 {
            for i in 0..n {
                for j in 0..n {
                    if i != j {
                        self.sync_pair(i, j);
                    }
                }
            }
            let before: Vec<_> = self.replicas.iter_mut().map(|r| r.doc.heads()).collect();
            for r in 0..n {
                self.apply(r);
            }
            let after: Vec<_> = self.replicas.iter_mut().map(|r| r.doc.heads()).collect();
            let converged = after.windows(2).all(|w| w[0] == w[1]);
            if before == after && converged {
                return;
            }
        }
        let state: Vec<String> = self
            .replicas
            .iter()
            .map(|r| {
                let rec: Vec<String> = r
                    .doc
                    .recorded()
                    .entries
                    .iter()
                    .map(|(p, vs)| format!("{p}={vs:?}"))
                    .collect();
                format!(
                    "disk {:?}\n waiting {:?}\n history {:?}\n doc {rec:#?}",
                    r.disk.keys().collect::<Vec<_>>(),
                    r.waiting,
                    r.history
                )
            })
            .collect();
        panic!(
            "replicas did not settle in 10 rounds:\n{}",
            state.join("\n")
        );
    }
}

fn parents_are_dirs(disk: &BTreeMap<String, IndexedEntry>, path: &str) {
    for a in cairn_core::path::ancestors(path) {
        assert_eq!(
            disk.get(a).map(|e| e.kind),
            Some(EntryKind::Dir),
            "parent {a} of {path} is not a directory"
        );
    }
}

fn two<T>(v: &mut [T], i: usize, j: usize) -> (&mut T, &mut T) {
    assert_ne!(i, j);
    if i < j {
        let (l, r) = v.split_at_mut(j);
        (&mut l[i], &mut r[0])
    } else {
        let (l, r) = v.split_at_mut(i);
        (&mut r[0], &mut l[j])
    }
}
