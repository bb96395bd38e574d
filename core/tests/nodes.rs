//! Many real [`Node`]s over a simulated network, disk and clock: the scheduler, the meta
//! protocol, retries, crashes and restarts are the daemon's own code; only the I/O is
//! simulated. Messages are lost, duplicated and reordered, links are cut and healed,
//! devices are killed at any point (also in the middle of a pull) and restarted from what
//! they persisted. At the end the network heals and every property must hold: the devices
//! converge, every disk matches the tree, nothing waits, nothing a user wrote is lost, and
//! no honest device was ever counted as violating the protocol.
//!
//! Each run prints its seed; rerun one with `CAIRN_SIM_SEED=<seed> cargo test -p
//! cairn-core --test nodes -- --nocapture`. `CAIRN_SIM_RUNS` sets how many seeds run.

mod sim;

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::time::{Duration, Instant};

use cairn_core::folder::{DeviceId, FolderDoc, LocalChange, TreeOptions};
use cairn_core::node::{
    Action, FolderKind, FolderSpec, Missing, Node, PullDone, PullFailure, ScanDone, Unrecorded,
};
use cairn_core::planner::{LocalStore, local_in_scope, plan};
use cairn_core::scan::{EntryKind, IndexedEntry};
use cairn_core::{ChunkId, ContentId};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use sim::{Store, content, entry};

const FOLDER: &str = "f";
const SHARDS: u16 = 4;
const PATHS: &[&str] = &["a", "b", "d/x", "d/y", "d/e/z", "c"];

/// A message between two nodes.
#[derive(Clone, Debug)]
enum Msg {
    Request { id: u64, bytes: Vec<u8> },
    Response { id: u64, bytes: Vec<u8> },
}

struct Wire {
    from: usize,
    to: usize,
    msg: Msg,
}

/// A job the driver started and that reports back later.
enum Job {
    Scan(Result<ScanDone, String>),
    Pull(PullDone),
    Restore,
}

struct Device {
    node: Option<Node<usize>>,
    disk: BTreeMap<String, IndexedEntry>,
    index: BTreeMap<String, IndexedEntry>,
    /// Index changes not yet recorded in the document, with the version each replaced.
    unrecorded: BTreeMap<String, Option<ContentId>>,
    history: HashSet<ContentId>,
    saved: BTreeMap<u16, Vec<u8>>,
    fetched: usize,
    jobs: Vec<Job>,
    /// Our meta requests waiting for an answer: id -> (peer, folder).
    pending: BTreeMap<u64, usize>,
}

impl LocalStore for Device {
    fn has_manifest(&self, _: &ContentId) -> bool {
        true
    }
}

struct Net {
    rng: StdRng,
    seed: u64,
    start: Instant,
    now: Instant,
    devices: Vec<Device>,
    wire: Vec<Wire>,
    /// Links that are cut (i < j).
    cut: BTreeSet<(usize, usize)>,
    next_id: u64,
    written: HashSet<ContentId>,
    destroyed_by_user: HashSet<ContentId>,
    violations: Vec<String>,
    log: Vec<String>,
    loss: f64,
    duplication: f64,
    /// Chance that a device dies in the middle of a pull.
    crash_in_pull: f64,
    /// Paths per window of a pass over the whole folder (0: none): half of the seeds
    /// plan the folder in windows of one or two paths, as a large folder is planned.
    pull_window: usize,
    /// Pulls of one window of a pass, and local paths they found outside their scope.
    windows: usize,
    strays: usize,
}

fn dev(i: usize) -> DeviceId {
    DeviceId([i as u8 + 1; 8])
}

fn link(a: usize, b: usize) -> (usize, usize) {
    (a.min(b), a.max(b))
}

impl Net {
    fn new(seed: u64, n: usize) -> Self {
        let start = Instant::now();
        let mut net = Net {
            rng: StdRng::seed_from_u64(seed),
            seed,
            start,
            now: start,
            devices: Vec::new(),
            wire: Vec::new(),
            cut: BTreeSet::new(),
            next_id: 0,
            written: HashSet::new(),
            destroyed_by_user: HashSet::new(),
            violations: Vec::new(),
            log: Vec::new(),
            loss: 0.1,
            duplication: 0.1,
            crash_in_pull: 0.05,
            pull_window: match seed % 4 {
                0 => 1,
                2 => 2,
                _ => 0,
            },
            windows: 0,
            strays: 0,
        };
        for i in 0..n {
            let mut doc = FolderDoc::new(dev(i), SHARDS).unwrap();
            let saved = (0..SHARDS)
                .map(|s| (s, doc.save_shard(s as usize)))
                .collect();
            net.devices.push(Device {
                node: None,
                disk: BTreeMap::new(),
                index: BTreeMap::new(),
                unrecorded: BTreeMap::new(),
                history: HashSet::new(),
                saved,
                fetched: 0,
                jobs: Vec::new(),
                pending: BTreeMap::new(),
            });
        }
        for i in 0..n {
            net.boot(i);
        }
        net
    }

    fn reachable(&self, a: usize, b: usize) -> bool {
        a != b
            && self.devices[a].node.is_some()
            && self.devices[b].node.is_some()
            && !self.cut.contains(&link(a, b))
    }

    /// Starts device `i` from what it persisted, and connects it to whoever it reaches.
    fn boot(&mut self, i: usize) {
        let n = self.devices.len();
        let saved: Vec<Vec<u8>> = self.devices[i].saved.values().cloned().collect();
        let doc = FolderDoc::load(dev(i), &saved).unwrap();
        let mut node = Node::new(dev(i), format!("dev{i}"), TreeOptions::default());
        node.set_pull_window(self.pull_window);
        let members: Vec<usize> = (0..n).filter(|p| *p != i).collect();
        for p in &members {
            node.add_peer(*p, format!("dev{p}"), dev(*p));
        }
        let spec = FolderSpec {
            id: FOLDER.into(),
            kind: FolderKind::SendReceive,
            paused: false,
            members,
            rescan_interval: Duration::from_secs(60),
            watcher_ok: true,
        };
        node.add_folder(self.now, spec, doc);
        self.devices[i].node = Some(node);
        self.devices[i].jobs.clear();
        self.devices[i].pending.clear();
        self.act(i);
        for p in 0..n {
            if self.reachable(i, p) {
                self.connect(i, p);
            }
        }
    }

    fn connect(&mut self, a: usize, b: usize) {
        let now = self.now;
        for (x, y) in [(a, b), (b, a)] {
            // One side may have died meanwhile (in the middle of a pull it started).
            if !self.reachable(x, y) {
                return;
            }
            if let Some(node) = &mut self.devices[x].node {
                node.handle_connected(now, y);
            }
            self.act(x);
        }
    }

    fn disconnect(&mut self, a: usize, b: usize) {
        let now = self.now;
        // In-flight messages on the link are gone; requests waiting for them fail.
        self.wire.retain(|w| link(w.from, w.to) != link(a, b));
        for (x, y) in [(a, b), (b, a)] {
            let lost: Vec<u64> = self.devices[x]
                .pending
                .iter()
                .filter(|(_, p)| **p == y)
                .map(|(id, _)| *id)
                .collect();
            for id in lost {
                self.devices[x].pending.remove(&id);
                if let Some(node) = &mut self.devices[x].node {
                    node.handle_meta_failed(now, y, FOLDER);
                }
            }
            if let Some(node) = &mut self.devices[x].node {
                node.handle_disconnected(y);
            }
            self.act(x);
        }
    }

    /// Kills device `i` (kill -9): its node, jobs and in-flight messages are gone; disk,
    /// index and persisted shards stay.
    fn crash(&mut self, i: usize) {
        if self.devices[i].node.is_none() {
            return;
        }
        for p in 0..self.devices.len() {
            if p != i && self.devices[p].node.is_some() && !self.cut.contains(&link(i, p)) {
                self.disconnect(i, p);
            }
        }
        self.wire.retain(|w| w.from != i && w.to != i);
        let d = &mut self.devices[i];
        d.node = None;
        d.jobs.clear();
        d.pending.clear();
        self.log.push(format!("crash {i}"));
    }

    /// Carries out device `i`'s actions.
    fn act(&mut self, i: usize) {
        loop {
            let Some(action) = self.devices[i].node.as_mut().and_then(|n| n.poll_action()) else {
                return;
            };
            match action {
                Action::Scan { paths, .. } => {
                    let done = self.scan(i, paths.as_ref());
                    self.devices[i].jobs.push(Job::Scan(Ok(done)));
                }
                Action::Pull {
                    tree,
                    scope,
                    window,
                    refused,
                    ..
                } => {
                    assert!(refused.is_empty(), "honest devices refuse nothing");
                    // Sometimes the device dies in the middle of a pull.
                    let steps = if self.rng.random_bool(self.crash_in_pull) {
                        self.rng.random_range(0..4)
                    } else {
                        usize::MAX
                    };
                    let mut outcome = self.pull(i, &tree, scope.as_ref(), steps);
                    if let (Some(w), Some(scope)) = (window, &scope) {
                        self.windows += 1;
                        // As the daemon reads its index: local paths the window holds
                        // and the scope missed.
                        outcome.stray = self.devices[i]
                            .index
                            .keys()
                            .filter(|p| w.contains(p) && !scope.contains(*p))
                            .cloned()
                            .collect();
                        self.strays += outcome.stray.len();
                    }
                    if steps != usize::MAX {
                        self.crash(i);
                        return;
                    }
                    self.log.push(format!("{i} pull job queued"));
                    self.devices[i].jobs.push(Job::Pull(outcome));
                }
                Action::Restore { .. } => self.devices[i].jobs.push(Job::Restore),
                Action::SendMeta { peer, request, .. } => {
                    self.next_id += 1;
                    let id = self.next_id;
                    self.devices[i].pending.insert(id, peer);
                    self.wire.push(Wire {
                        from: i,
                        to: peer,
                        msg: Msg::Request { id, bytes: request },
                    });
                }
                Action::Persist {
                    shards, recorded, ..
                } => {
                    let d = &mut self.devices[i];
                    d.saved.extend(shards);
                    for p in recorded {
                        d.unrecorded.remove(&p);
                    }
                }
                Action::ClearUnrecorded { paths, .. } => {
                    for p in paths {
                        self.devices[i].unrecorded.remove(&p);
                    }
                }
                Action::Dial { peer } => {
                    if self.reachable(i, peer)
                        && !self.devices[i].node.as_ref().unwrap().is_connected(&peer)
                    {
                        self.connect(i, peer);
                    }
                }
                Action::Disconnect { peer } => {
                    self.violations.push(format!("{i} disconnects {peer}"));
                }
                Action::Violation {
                    peer, kind, reason, ..
                } => {
                    self.violations
                        .push(format!("{i} counts {peer:?}: {kind:?} {reason}"));
                }
                Action::VersionUnavailable { path, content, .. } => {
                    self.log
                        .push(format!("{i} drops {path} {}", content.short()));
                }
                // The simulation's devices make no restores or rewinds.
                Action::PruneRemoteManifests | Action::SaveRequested { .. } => {}
            }
        }
    }

    /// The scanner: what differs between the disk and the index under `scope` goes into
    /// the index as an unrecorded change; the report lists every unrecorded change.
    fn scan(&mut self, i: usize, scope: Option<&BTreeSet<String>>) -> ScanDone {
        let d = &mut self.devices[i];
        let within = |p: &str| {
            scope.is_none_or(|s| s.iter().any(|x| p == x || p.starts_with(&format!("{x}/"))))
        };
        let paths: BTreeSet<String> = d
            .disk
            .keys()
            .chain(d.index.keys())
            .filter(|p| within(p))
            .cloned()
            .collect();
        let mut changes = Vec::new();
        for p in paths {
            let (now, before) = (d.disk.get(&p).cloned(), d.index.get(&p).cloned());
            if now == before {
                continue;
            }
            let previous = before.as_ref().and_then(|e| e.content);
            d.unrecorded.entry(p.clone()).or_insert(previous);
            match now {
                Some(e) => d.index.insert(p.clone(), e),
                None => d.index.remove(&p),
            };
            changes.push((p, "changed".to_string()));
        }
        let unrecorded = d
            .unrecorded
            .iter()
            .map(|(p, previous)| Unrecorded {
                path: p.clone(),
                change: LocalChange::of(d.index.get(p)),
                previous: *previous,
            })
            .collect();
        ScanDone {
            unrecorded,
            changed: changes.len(),
            changes,
            problem: None,
            more: false,
        }
    }

    /// The puller: plans against the index, carries the plan out on the disk with chunks
    /// from devices the puller reaches (connected now), and reports.
    fn pull(
        &mut self,
        i: usize,
        tree: &cairn_core::folder::Tree,
        scope: Option<&BTreeSet<String>>,
        steps: usize,
    ) -> PullDone {
        let elsewhere: HashSet<ChunkId> = (0..self.devices.len())
            .filter(|p| self.reachable(i, *p))
            .flat_map(|p| {
                let o = &self.devices[p];
                o.disk
                    .values()
                    .filter_map(|e| e.content)
                    .chain(o.history.iter().copied())
                    .map(|c| ChunkId(c.0))
                    .collect::<Vec<_>>()
            })
            .collect();
        let d = &mut self.devices[i];
        // A partial pull plans its scope alone, as the daemon does.
        let p = match scope {
            None => plan(tree, &d.index, &*d),
            Some(scope) => {
                let local = local_in_scope(
                    tree,
                    scope,
                    |p| d.index.get(p).cloned(),
                    |dir| sim::below(&d.index, dir),
                );
                plan(tree, &local, &*d)
            }
        };
        assert!(p.rejected.is_empty(), "{:?}", p.rejected);
        if p.is_empty() {
            return PullDone {
                planned_nothing: true,
                ..PullDone::default()
            };
        }
        let executed = Store {
            disk: &mut d.disk,
            history: &mut d.history,
            index: Some(&mut d.index),
            fetched_chunks: &mut d.fetched,
        }
        .execute(p.actions, &elsewhere, steps);
        let missing: Vec<Missing> = executed
            .missing
            .iter()
            .map(|(path, c)| Missing {
                path: path.clone(),
                content: *c,
                held: sim::holds(&d.disk, &d.history, &ChunkId(c.0)),
            })
            .collect();
        PullDone {
            planned_nothing: false,
            done: executed.done,
            failed: if missing.is_empty() {
                vec![]
            } else {
                vec![PullFailure::Unavailable]
            },
            raced: executed.raced,
            missing,
            changes: vec![],
            stray: vec![],
        }
    }

    /// Finishes one job of device `i` (the oldest).
    fn finish_job(&mut self, i: usize) {
        if self.devices[i].jobs.is_empty() {
            return;
        }
        let job = self.devices[i].jobs.remove(0);
        let now = self.now;
        let Some(node) = &mut self.devices[i].node else {
            return;
        };
        match job {
            Job::Scan(r) => node.handle_scan_done(now, FOLDER, r),
            Job::Pull(p) => {
                node.handle_pull_done(now, FOLDER, p);
                self.log.push(format!("{i} pull job done"));
            }
            Job::Restore => node.handle_restore_done(now, FOLDER, false),
        }
        self.act(i);
    }

    /// Delivers one message in flight (a random one: the network reorders).
    fn deliver(&mut self) {
        if self.wire.is_empty() {
            return;
        }
        let k = self.rng.random_range(0..self.wire.len());
        let w = self.wire.remove(k);
        let lose = self.rng.random_bool(self.loss);
        let twice = !lose && self.rng.random_bool(self.duplication);
        let now = self.now;
        match w.msg {
            Msg::Request { id, bytes } => {
                // A request to a device that died is lost too (the requester's stream fails).
                if lose || self.devices[w.to].node.is_none() {
                    // The stream failed: the requester learns it, the peer saw nothing.
                    if self.devices[w.from].pending.remove(&id).is_some()
                        && let Some(node) = &mut self.devices[w.from].node
                    {
                        node.handle_meta_failed(now, w.to, FOLDER);
                    }
                    self.act(w.from);
                    return;
                }
                for _ in 0..if twice { 2 } else { 1 } {
                    let Some(node) = &mut self.devices[w.to].node else {
                        return;
                    };
                    let answer = node.handle_meta_request(now, w.from, &bytes);
                    self.act(w.to);
                    self.wire.push(Wire {
                        from: w.to,
                        to: w.from,
                        msg: Msg::Response { id, bytes: answer },
                    });
                }
            }
            Msg::Response { id, bytes } => {
                // A duplicate answer finds no pending request and is dropped, as in the
                // daemon (request ids are matched once).
                if self.devices[w.to].pending.remove(&id).is_none() {
                    return;
                }
                let node = self.devices[w.to].node.as_mut().unwrap();
                if lose {
                    node.handle_meta_failed(now, w.from, FOLDER);
                } else {
                    node.handle_meta_response(now, w.from, FOLDER, &bytes);
                }
                self.act(w.to);
            }
        }
    }

    fn tick(&mut self, ms: u64) {
        self.now += Duration::from_millis(ms);
        let now = self.now;
        for i in 0..self.devices.len() {
            if let Some(node) = &mut self.devices[i].node {
                node.handle_timeout(now);
                // A driver wakes the node at this time (at once if past): one already
                // reached would wake it again and again.
                assert!(
                    node.scan_wake_at().is_none_or(|at| at > now),
                    "device {i} asks to be woken at a time already handled"
                );
            }
            self.act(i);
        }
    }

    // ---- what users do ----

    fn mkdirs(&mut self, i: usize, path: &str) -> bool {
        let Some(missing) = sim::missing_dirs(&self.devices[i].disk, path) else {
            return false;
        };
        let t = self.mtime();
        for a in missing {
            self.devices[i]
                .disk
                .insert(a, entry(EntryKind::Dir, None, None, t));
        }
        true
    }

    fn mtime(&self) -> i64 {
        1_700_000_000_000_000_000 + (self.now - self.start).as_nanos() as i64
    }

    fn user_write(&mut self, i: usize, path: &str, n: u64) {
        if matches!(
            self.devices[i].disk.get(path).map(|e| e.kind),
            Some(EntryKind::Dir)
        ) || !self.mkdirs(i, path)
        {
            return;
        }
        let c = content(n);
        let t = self.mtime();
        let d = &mut self.devices[i];
        if let Some(old) = d.disk.get(path).and_then(|e| e.content) {
            self.destroyed_by_user.insert(old);
        }
        d.disk
            .insert(path.to_string(), entry(EntryKind::File, Some(c), None, t));
        self.written.insert(c);
        self.log.push(format!("{i} writes {path} = {}", c.short()));
        self.notify(i, path);
    }

    fn user_delete(&mut self, i: usize, path: &str) {
        let prefix = format!("{path}/");
        let d = &mut self.devices[i];
        let doomed: Vec<String> = d
            .disk
            .keys()
            .filter(|k| *k == path || k.starts_with(&prefix))
            .cloned()
            .collect();
        if doomed.is_empty() {
            return;
        }
        for p in &doomed {
            if let Some(c) = d.disk.remove(p).and_then(|e| e.content) {
                self.destroyed_by_user.insert(c);
            }
        }
        self.log.push(format!("{i} deletes {path}"));
        self.notify(i, path);
    }

    fn user_rename(&mut self, i: usize, from: &str, to: &str) {
        let Some(e) = self.devices[i].disk.get(from).cloned() else {
            return;
        };
        if e.kind != EntryKind::File
            || from == to
            || self.devices[i].disk.contains_key(to)
            || !self.mkdirs(i, to)
        {
            return;
        }
        let d = &mut self.devices[i];
        d.disk.remove(from);
        d.disk.insert(to.to_string(), e);
        self.log.push(format!("{i} renames {from} -> {to}"));
        self.notify(i, from);
        self.notify(i, to);
    }

    /// The watcher tells the node (and sometimes loses the event: the periodic rescan
    /// must catch it).
    fn notify(&mut self, i: usize, path: &str) {
        if self.rng.random_bool(0.1) {
            return;
        }
        let now = self.now;
        if let Some(node) = &mut self.devices[i].node {
            node.handle_fs_changed(now, FOLDER, Some(vec![path.to_string()]));
        }
        self.act(i);
    }

    // ---- the run ----

    fn step(&mut self) {
        let n = self.devices.len();
        let r = self.rng.random_range(0..100);
        let i = self.rng.random_range(0..n);
        match r {
            0..12 => {
                let p = PATHS[self.rng.random_range(0..PATHS.len())];
                let c = self.rng.random_range(0..1_000_000);
                self.user_write(i, p, c);
            }
            12..16 => {
                let p = PATHS[self.rng.random_range(0..PATHS.len())];
                self.user_delete(i, p);
            }
            16..20 => {
                let a = PATHS[self.rng.random_range(0..PATHS.len())];
                let b = PATHS[self.rng.random_range(0..PATHS.len())];
                self.user_rename(i, a, b);
            }
            20..55 => self.deliver(),
            55..80 => self.finish_job(i),
            80..92 => {
                let ms = self.rng.random_range(1..3000);
                self.tick(ms);
            }
            92..95 => {
                let j = self.rng.random_range(0..n);
                if i != j {
                    let l = link(i, j);
                    if self.cut.insert(l) {
                        self.log.push(format!("cut {i}-{j}"));
                        if self.devices[i].node.is_some() && self.devices[j].node.is_some() {
                            self.disconnect(i, j);
                        }
                    } else {
                        self.cut.remove(&l);
                        self.log.push(format!("heal {i}-{j}"));
                    }
                }
            }
            95..98 => {
                if self.devices[i].node.is_some() {
                    self.crash(i);
                } else {
                    self.log.push(format!("boot {i}"));
                    self.boot(i);
                }
            }
            _ => {
                if self.devices[i].node.is_some() {
                    self.crash(i);
                    self.log.push(format!("boot {i}"));
                    self.boot(i);
                }
            }
        }
    }

    /// Heals the network, starts every device, and runs with no loss until nothing
    /// happens any more.
    fn settle(&mut self) {
        self.cut.clear();
        self.loss = 0.0;
        self.duplication = 0.0;
        self.crash_in_pull = 0.0;
        for i in 0..self.devices.len() {
            if self.devices[i].node.is_none() {
                self.boot(i);
            }
        }
        // Redials reconnect the healed links; the periodic rescan (the safety net under a
        // watcher that lost events) comes round.
        self.tick(61_000);
        for _ in 0..20_000 {
            let busy = !self.wire.is_empty() || self.devices.iter().any(|d| !d.jobs.is_empty());
            if busy {
                // Jobs and messages take time (a due scan waits twice the last one's
                // duration while changes keep coming).
                self.now += Duration::from_millis(100);
                if !self.wire.is_empty() {
                    self.deliver();
                }
                for i in 0..self.devices.len() {
                    self.finish_job(i);
                }
            } else if self.quiet() {
                return;
            } else {
                self.tick(4000);
            }
        }
        let state: Vec<String> = self
            .devices
            .iter_mut()
            .enumerate()
            .map(|(i, d)| {
                let node = d.node.as_mut().unwrap();
                let links = format!(
                    "connected {:?} in flight {:?} pending {:?}",
                    node.connected().collect::<Vec<_>>(),
                    node.meta_in_flight().collect::<Vec<_>>(),
                    d.pending
                );
                let f = node.folder_mut(FOLDER).unwrap();
                format!(
                    "{i}: {links} busy {:?} scan {:?} needs_pull {} in_sync {} waiting {:?} error {:?} heads {:?} disk {:?}",
                    f.busy,
                    f.scan,
                    f.needs_pull,
                    f.in_sync,
                    f.waiting,
                    f.last_error,
                    f.doc.heads().len(),
                    d.disk.iter().map(|(p, e)| (p.clone(), e.content.map(|c| c.short()))).collect::<Vec<_>>()
                )
            })
            .collect();
        panic!("{}\n{state:#?}", self.report("did not settle"));
    }

    fn quiet(&mut self) -> bool {
        let heads: Vec<_> = self
            .devices
            .iter_mut()
            .map(|d| {
                d.node
                    .as_mut()
                    .unwrap()
                    .folder_mut(FOLDER)
                    .unwrap()
                    .doc
                    .heads()
            })
            .collect();
        heads.windows(2).all(|h| h[0] == h[1])
            && self
                .devices
                .iter()
                .all(|d| d.node.as_ref().unwrap().folder(FOLDER).unwrap().settled())
    }

    fn report(&self, what: &str) -> String {
        let tail: Vec<&String> = self.log.iter().rev().take(40).collect();
        format!(
            "seed {} {what}; rerun with CAIRN_SIM_SEED={} cargo test -p cairn-core --test nodes -- --nocapture\nlast events (newest first): {tail:#?}",
            self.seed, self.seed
        )
    }

    fn check(&mut self) {
        let options = TreeOptions::default();
        let seed = self.seed;
        let trees: Vec<_> = self
            .devices
            .iter()
            .map(|d| {
                d.node
                    .as_ref()
                    .unwrap()
                    .folder(FOLDER)
                    .unwrap()
                    .doc
                    .tree(options)
            })
            .collect();
        for t in &trees[1..] {
            assert_eq!(t.data(), trees[0].data(), "{}", self.report("trees differ"));
        }
        let tree = &trees[0];
        for (i, d) in self.devices.iter().enumerate() {
            let disk: BTreeMap<&str, _> = d
                .disk
                .iter()
                .map(|(p, e)| (p.as_str(), (e.kind, e.content, e.link_target.as_deref())))
                .collect();
            assert_eq!(
                disk,
                tree.data(),
                "{}",
                self.report(&format!("disk {i} differs from the tree"))
            );
            let f = d.node.as_ref().unwrap().folder(FOLDER).unwrap();
            assert!(
                f.waiting.is_empty(),
                "{}",
                self.report(&format!("{i} waits for {:?}", f.waiting))
            );
            assert!(
                d.unrecorded.is_empty(),
                "{}",
                self.report(&format!("{i} left changes unrecorded"))
            );
        }
        let in_tree: HashSet<ContentId> = tree
            .entries
            .values()
            .filter_map(|e| e.value.content)
            .collect();
        let kept: HashSet<ContentId> = self
            .devices
            .iter()
            .flat_map(|d| d.history.iter().copied())
            .collect();
        for c in &self.written {
            assert!(
                in_tree.contains(c) || kept.contains(c) || self.destroyed_by_user.contains(c),
                "{}",
                self.report(&format!("version {} was lost", c.short()))
            );
        }
        assert!(
            self.violations.is_empty(),
            "seed {seed}: honest devices were counted as violating the protocol: {:?}",
            self.violations
        );
    }
}

fn run(seed: u64, steps: usize) -> Net {
    let n = 2 + (seed % 3) as usize;
    let mut net = Net::new(seed, n);
    for _ in 0..steps {
        net.step();
    }
    net.settle();
    net.check();
    net
}

#[test]
fn nodes_converge_and_lose_nothing_through_loss_partitions_and_crashes() {
    let runs: u64 = std::env::var("CAIRN_SIM_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100);
    let seeds: Vec<u64> = match std::env::var("CAIRN_SIM_SEED") {
        Ok(s) => vec![s.parse().expect("CAIRN_SIM_SEED is a number")],
        Err(_) => {
            let base: u64 = rand::random::<u32>() as u64;
            (base..base + runs).collect()
        }
    };
    println!(
        "node simulation: seeds {}..={} (rerun one with CAIRN_SIM_SEED=<seed>)",
        seeds[0],
        seeds[seeds.len() - 1]
    );
    let (mut fetched, mut crashes, mut windows, mut strays) = (0, 0, 0, 0);
    for seed in seeds {
        let Ok(net) = std::panic::catch_unwind(|| run(seed, 400)) else {
            panic!(
                "seed {seed} failed; rerun with CAIRN_SIM_SEED={seed} cargo test -p cairn-core --test nodes -- --nocapture"
            );
        };
        fetched += net.devices.iter().map(|d| d.fetched).sum::<usize>();
        crashes += net.log.iter().filter(|l| l.starts_with("crash")).count();
        windows += net.windows;
        strays += net.strays;
    }
    println!("node simulation: {windows} window pulls, {strays} stray local paths");
    // The runs did something: data moved between devices, devices died, folders were
    // planned window by window.
    assert!(
        fetched > 0 && crashes > 0 && windows > 0,
        "fetched {fetched} crashes {crashes} windows {windows}"
    );
}

/// Seeds that found bugs, kept by name (each fails without its fix).
///
/// 2262927327: both devices started rounds at once, and their requests and answers crossed
/// on the wire while one automerge sync state served both directions; each side then
/// needed a change the other believed it had already sent, and they exchanged empty
/// messages forever. Each side now keeps one state for the rounds it starts and one for
/// the rounds the peer starts.
#[test]
fn regression_crossing_rounds_no_longer_make_an_endless_meta_ping_pong() {
    run(2262927327, 400);
}
