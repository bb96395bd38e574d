//! Chaos: three real daemons in a full mesh, a seeded generator of edits (writes in place
//! and through a temp file, appends, deletes, renames of files and directories, the same
//! name edited on several devices at once, 0 B to 12 MiB), `kill -9` and restart of random
//! daemons, and dropped connections. Afterwards: every version that lived 2 s on a running
//! device is still somewhere (a folder, a conflict copy or a daemon's history), no file
//! holds contents the generator never wrote, no temp file is left, and the three folders
//! converged and say so.
//!
//! The generator works on 13 names (some in subdirectories), on a random device: mostly one
//! whose daemon runs, sometimes one whose daemon is down (the user keeps working). It
//! records every version it makes (device, path, BLAKE3 of the contents, when it was
//! complete, when its own later action on that path ended it) and every content it
//! destroyed itself (read just before), plus when each daemon was down and when its
//! connections were dropped. A version must be found at the end if it lived 2 s while its
//! daemon ran, unless the user destroyed it on every device that had it or could have
//! fetched it (connected for 2 s to a holder), e.g. the same name rewritten on all three:
//! those are printed as "not required".
//!
//! Settings: `CHAOS_SEED` (1), `CHAOS_SECS` (100 s of changes), `CHAOS_OPS_PER_SEC` (about
//! 1.4: ops are 0.2-1.2 s apart), `CHAOS_KILLS_PER_MIN` (3.2, i.e. 8 in 2.5 minutes),
//! `CHAOS_CONVERGE_SECS` (30). One line `chaos seed=... converge_s=...` is always printed;
//! `bench/chaos.sh` runs many seeds and greps it.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use cairn_tests::{Daemon, DaemonSpec, mesh_with, pseudo_random};

/// Directories the generator works in; a directory rename moves one onto a free name.
const DIRS: [&str; 3] = ["dir1", "dir2", "dir3"];
/// Names inside each of `DIRS`: one that sorts after its conflict copies
/// (`x.sync-conflict-….txt` < `x.txt`), one before them (`y.bin`), one without an extension
/// (`sub/z`, also before).
const LEAVES: [&str; 3] = ["x.txt", "y.bin", "sub/z"];
/// Names at the top of the folder.
const TOP: [&str; 4] = ["a.txt", "b.bin", "c.md", "notes"];
/// How long a version must live on a running device to be one nothing may lose.
const MUST_KEEP_SECS: f64 = 2.0;
const TEMP_PREFIX: &str = ".cairn-tmp.";
const CONFLICT_MARKER: &str = ".sync-conflict-";
const GEN_TEMP_PREFIX: &str = ".chaos-tmp-";

fn names() -> Vec<String> {
    let mut out: Vec<String> = TOP.iter().map(|s| s.to_string()).collect();
    for d in DIRS {
        for l in LEAVES {
            out.push(format!("{d}/{l}"));
        }
    }
    out
}

/// SplitMix64: small, deterministic, good enough to drive a test.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        if n == 0 { 0 } else { self.next() % n }
    }
    fn range(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
    fn chance(&mut self, p: f64) -> bool {
        self.range(0.0, 1.0) < p
    }
    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }
}

type Hash = [u8; 32];

fn hash(data: &[u8]) -> Hash {
    let h = *blake3::hash(data).as_bytes();
    let content = content_id(data);
    CONTENT_IDS.lock().unwrap().insert(h, content);
    h
}

/// The content id (as cairn names versions: `cairn history`) of every content hashed:
/// a version kept in a daemon's version store is found by it.
static CONTENT_IDS: std::sync::LazyLock<std::sync::Mutex<HashMap<Hash, cairn_core::ContentId>>> =
    std::sync::LazyLock::new(Default::default);

fn content_id(data: &[u8]) -> cairn_core::ContentId {
    let chunker = cairn_core::Chunker::new(cairn_core::ChunkerParams::V1_DEFAULT).unwrap();
    cairn_core::Manifest {
        chunks: chunker
            .chunk_slice(data)
            .map(|(_, c)| cairn_core::ChunkRef::of(c))
            .collect(),
    }
    .content_id()
}

fn hex(h: &Hash) -> String {
    h[..6].iter().map(|b| format!("{b:02x}")).collect()
}

fn env_f64(name: &str, default: f64) -> f64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// File sizes: mostly small, a few large, up to 12 MiB.
fn pick_size(rng: &mut Rng, max: u64) -> usize {
    let size = match rng.below(1000) {
        0..40 => 0,
        40..650 => 24 + rng.below(4096),
        650..900 => 4096 + rng.below(256 << 10),
        900..970 => (256 << 10) + rng.below(1792 << 10),
        _ => (2 << 20) + rng.below(10 << 20),
    };
    size.min(max) as usize
}

/// Contents unique to (seed, version number): a header, then pseudo-random bytes.
fn make_content(seed: u64, n: u64, len: usize) -> Vec<u8> {
    let mut data = pseudo_random(len, seed.wrapping_mul(0x1000_0000_01B3) ^ (n << 20) ^ n);
    let header = format!("chaos seed={seed} version={n}\n");
    let k = header.len().min(len);
    data[..k].copy_from_slice(&header.as_bytes()[..k]);
    data
}

/// What one write did: when it started destroying the old contents and when the new ones
/// were complete, whether they ended up under the name, and what they replaced.
struct Written {
    t0: f64,
    t1: f64,
    visible: bool,
    replaced: Option<Hash>,
}

/// The hash of the regular file at `path`, if there is one.
fn content_hash(path: &Path) -> Option<Hash> {
    if !fs::symlink_metadata(path).ok()?.is_file() {
        return None;
    }
    fs::read(path).ok().map(|d| hash(&d))
}

/// One version of one path on one device, as the generator made it.
#[derive(Clone, Debug)]
struct Version {
    dev: usize,
    path: String,
    hash: Hash,
    size: u64,
    /// Seconds since the start of the change phase.
    born: f64,
    /// When the generator's own later action on this path on this device ended it.
    ended: Option<f64>,
    how: &'static str,
    /// False when the file was replaced (by sync) before the write finished, so this
    /// version never existed under its name.
    visible: bool,
}

#[derive(Default)]
struct Book {
    versions: Vec<Version>,
    /// Whole-file contents produced by writes and appends.
    written: HashSet<Hash>,
    /// Contents that existed between two steps of one op (a truncated file).
    intermediate: HashSet<Hash>,
    /// Per device: (killed at, running again at).
    downs: Vec<Vec<(f64, Option<f64>)>>,
    /// Per device: when its connections were dropped.
    drops: Vec<Vec<f64>>,
    /// Contents the generator itself destroyed (overwrote, appended to, deleted, renamed
    /// another file over), read just before: hash -> (device, when).
    destroyed: HashMap<Hash, Vec<(usize, f64)>>,
}

impl Book {
    fn end(&mut self, dev: usize, path: &str, t: f64) {
        for v in self.versions.iter_mut() {
            if v.dev == dev && v.ended.is_none() && v.path == path {
                v.ended = Some(t);
            }
        }
    }
    fn end_under(&mut self, dev: usize, dir: &str, t: f64) {
        let prefix = format!("{dir}/");
        for v in self.versions.iter_mut() {
            if v.dev == dev && v.ended.is_none() && v.path.starts_with(&prefix) {
                v.ended = Some(t);
            }
        }
    }
    #[allow(clippy::too_many_arguments)]
    fn add(
        &mut self,
        dev: usize,
        path: &str,
        hash: Hash,
        size: u64,
        born: f64,
        how: &'static str,
        visible: bool,
    ) {
        self.end(dev, path, born);
        self.versions.push(Version {
            dev,
            path: path.to_string(),
            hash,
            size,
            born,
            ended: None,
            how,
            visible,
        });
    }
    fn destroy(&mut self, dev: usize, replaced: Option<Hash>, t: f64) {
        if let Some(h) = replaced {
            self.destroyed.entry(h).or_default().push((dev, t));
        }
    }
    /// Whether `v` lived at least [`MUST_KEEP_SECS`] on end while its device's daemon ran
    /// (the rule: written at t, not changed by the generator and the daemon up
    /// during [t, t + 2 s]; a version written while the daemon was down counts from when
    /// it is running again).
    fn must_keep(&self, v: &Version) -> bool {
        let down: Vec<(f64, f64)> = self.downs[v.dev]
            .iter()
            .map(|&(k, r)| (k, r.unwrap_or(FOREVER)))
            .collect();
        v.visible && clear_stretch(v.born, v.ended.unwrap_or(FOREVER), down) >= MUST_KEEP_SECS
    }

    /// When `dev` could not have exchanged anything with a peer: its daemon down and the
    /// first second after a restart (it dials its peers at start), and [`REDIAL_SECS`]
    /// after its connections were dropped (peers are redialled every 5 s).
    fn cut_off(&self, dev: usize) -> Vec<(f64, f64)> {
        let mut out: Vec<(f64, f64)> = self.downs[dev]
            .iter()
            .map(|&(k, r)| (k, r.map_or(FOREVER, |r| r + 1.0)))
            .collect();
        out.extend(self.drops[dev].iter().map(|&t| (t, t + REDIAL_SECS)));
        out
    }

    /// Whether device `y` was connected for [`MUST_KEEP_SECS`] in a row to a device
    /// holding `h` (as the generator put it there), so it could have fetched it.
    fn had_a_chance(&self, y: usize, h: &Hash) -> bool {
        self.versions
            .iter()
            .filter(|v| v.hash == *h && v.dev != y && v.visible)
            .any(|v| {
                let mut bad = self.cut_off(v.dev);
                bad.extend(self.cut_off(y));
                // The holder's copy may have moved with a synced rename before the user
                // destroyed it elsewhere on that device: the path's record then outlives
                // the content. The first time the generator destroyed this content on the
                // holder after it was written ends the holding (content, not path).
                let destroyed = self
                    .destroyed
                    .get(h)
                    .into_iter()
                    .flatten()
                    .filter(|&&(dev, t)| dev == v.dev && t >= v.born)
                    .map(|&(_, t)| t)
                    .fold(FOREVER, f64::min);
                let end = v.ended.unwrap_or(FOREVER).min(destroyed);
                clear_stretch(v.born, end, bad) >= MUST_KEEP_SECS
            })
    }

    /// Whether `h` is gone by the user's own hand, not cairn's: on every device the
    /// generator destroyed it (overwrote, appended to, deleted, renamed over it) after the
    /// generator last put it there, or the device never had the chance to fetch it and the
    /// generator never put it there. Then no sync tool could have kept it.
    fn gone_by_user(&self, h: &Hash) -> bool {
        let no_destroys = Vec::new();
        let destroys = self.destroyed.get(h).unwrap_or(&no_destroys);
        (0..self.downs.len()).all(|y| {
            let last_put = self
                .versions
                .iter()
                .filter(|v| v.hash == *h && v.dev == y)
                .map(|v| v.born)
                .fold(f64::NEG_INFINITY, f64::max);
            let destroyed_after = destroys.iter().any(|&(dev, t)| dev == y && t >= last_put);
            if last_put > f64::NEG_INFINITY {
                destroyed_after
            } else {
                destroyed_after || !self.had_a_chance(y, h)
            }
        })
    }
}

/// Far in the future (alive at the end, or still down).
const FOREVER: f64 = 1e12;
/// How long after its connections are dropped a daemon may take to reconnect.
const REDIAL_SECS: f64 = 5.5;

/// The longest stretch of [a, b) outside every interval of `bad`.
fn clear_stretch(a: f64, b: f64, mut bad: Vec<(f64, f64)>) -> f64 {
    bad.sort_by(|x, y| x.0.total_cmp(&y.0));
    let (mut cur, mut best) = (a, 0.0f64);
    for (s, e) in bad {
        if e <= cur {
            continue;
        }
        if s >= b {
            break;
        }
        if s > cur {
            best = best.max(s - cur);
        }
        cur = cur.max(e);
    }
    if cur < b {
        best = best.max(b - cur);
    }
    best
}

/// Whether `path` is still the file `f` is open on.
fn same_inode(f: &File, path: &Path) -> bool {
    match (f.metadata(), fs::symlink_metadata(path)) {
        (Ok(a), Ok(b)) => a.ino() == b.ino() && a.dev() == b.dev(),
        _ => false,
    }
}

fn read_all(f: &mut File) -> Option<Vec<u8>> {
    f.seek(SeekFrom::Start(0)).ok()?;
    let mut out = Vec::new();
    f.read_to_end(&mut out).ok()?;
    Some(out)
}

/// Regular files under `root` (relative path, absolute path), symlinks not followed.
fn walk(root: &Path) -> Vec<(String, PathBuf)> {
    let mut out = Vec::new();
    let mut stack = vec![(root.to_path_buf(), 0usize)];
    while let Some((dir, depth)) = stack.pop() {
        if depth > 32 {
            continue;
        }
        for e in fs::read_dir(&dir).into_iter().flatten().flatten() {
            let Ok(ft) = e.file_type() else { continue };
            let p = e.path();
            if ft.is_dir() {
                stack.push((p, depth + 1));
            } else if ft.is_file() {
                let rel = p
                    .strip_prefix(root)
                    .map(|r| r.to_string_lossy().into_owned())
                    .unwrap_or_default();
                out.push((rel, p));
            }
        }
    }
    out
}

fn file_name(rel: &str) -> &str {
    rel.rsplit('/').next().unwrap_or(rel)
}

/// Hashes of files, cached by (inode, size, mtime, ctime).
#[derive(Default)]
struct HashCache(HashMap<PathBuf, (FileKey, Hash)>);

/// (inode, size, mtime s, mtime ns, ctime s, ctime ns)
type FileKey = (u64, u64, i64, i64, i64, i64);

impl HashCache {
    fn get(&mut self, p: &Path) -> Option<Hash> {
        let m = fs::symlink_metadata(p).ok()?;
        let key = (
            m.ino(),
            m.size(),
            m.mtime(),
            m.mtime_nsec(),
            m.ctime(),
            m.ctime_nsec(),
        );
        if let Some((k, h)) = self.0.get(p)
            && *k == key
        {
            return Some(*h);
        }
        let h = hash(&fs::read(p).ok()?);
        self.0.insert(p.to_path_buf(), (key, h));
        Some(h)
    }
}

/// A folder's files (relative path -> hash) without cairn's temp files, and those temp files.
fn tree(cache: &mut HashCache, root: &Path) -> (BTreeMap<String, Hash>, Vec<String>) {
    let mut files = BTreeMap::new();
    let mut temps = Vec::new();
    for (rel, abs) in walk(root) {
        if file_name(&rel).starts_with(TEMP_PREFIX) {
            temps.push(rel);
        } else if let Some(h) = cache.get(&abs) {
            files.insert(rel, h);
        }
    }
    (files, temps)
}

/// Whether `ss -K` can destroy a loopback TCP connection here (kernel support, privileges).
fn can_drop_connections() -> bool {
    let Ok(l) = std::net::TcpListener::bind("127.0.0.1:0") else {
        return false;
    };
    let Ok(port) = l.local_addr().map(|a| a.port()) else {
        return false;
    };
    let Ok(mut c) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let Ok((_s, _)) = l.accept() else {
        return false;
    };
    if drop_connections(port).is_none_or(|n| n == 0) {
        return false;
    }
    let _ = c.set_read_timeout(Some(Duration::from_secs(1)));
    let mut buf = [0u8; 1];
    match c.read(&mut buf) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) => !matches!(
            e.kind(),
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
        ),
    }
}

/// Destroys every established TCP connection to or from 127.0.0.1:`port`; how many.
fn drop_connections(port: u16) -> Option<usize> {
    let ep = format!("127.0.0.1:{port}");
    let out = Command::new("ss")
        .args(["-K", "-t", "-n", "state", "established", "(", "src", &ep])
        .args(["or", "dst", &ep, ")"])
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    let text = String::from_utf8_lossy(&out.stdout);
    Some(
        text.lines()
            .skip(1)
            .filter(|l| !l.trim().is_empty())
            .count(),
    )
}

#[derive(Clone, Copy, Debug)]
enum Op {
    WriteInPlace,
    WriteViaTemp,
    Append,
    Delete,
    Rename,
    RenameDir,
    Concurrent,
    DropConnections,
}

struct Chaos {
    seed: u64,
    rng: Rng,
    book: Book,
    start: Instant,
    /// Counts versions made, for unique contents.
    counter: u64,
    names: Vec<String>,
    ops: u64,
    skipped: u64,
    drops: u64,
    dropped_sockets: usize,
    can_drop: bool,
    orphaned: u64,
    log: Vec<String>,
    last_path: Option<String>,
}

impl Chaos {
    fn now(&self) -> f64 {
        self.start.elapsed().as_secs_f64()
    }

    fn next_content(&mut self, max: u64) -> Vec<u8> {
        self.counter += 1;
        let len = pick_size(&mut self.rng, max);
        make_content(self.seed, self.counter, len)
    }

    /// Records a version the generator wrote (as a whole file after its op).
    #[allow(clippy::too_many_arguments)]
    fn written(
        &mut self,
        dev: usize,
        path: &str,
        h: Hash,
        len: u64,
        t: f64,
        how: &'static str,
        visible: bool,
    ) {
        self.book.add(dev, path, h, len, t, how, visible);
        self.book.written.insert(h);
        if !visible {
            self.orphaned += 1;
        }
    }

    fn note(&mut self, s: String) {
        if std::env::var("CHAOS_VERBOSE").is_ok() {
            println!("{s}");
        }
        self.log.push(s);
    }

    /// Open with truncate, then write: two steps, so a scanner may see the empty file.
    fn write_in_place(
        folder: &Path,
        path: &str,
        data: &[u8],
        pause_ms: u64,
        start: Instant,
    ) -> Option<Written> {
        let abs = folder.join(path);
        let replaced = content_hash(&abs);
        let mut f = None;
        for _ in 0..3 {
            if let Some(parent) = abs.parent() {
                let _ = fs::create_dir_all(parent);
            }
            let t = start.elapsed().as_secs_f64();
            if let Ok(x) = OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .open(&abs)
            {
                f = Some((x, t));
                break;
            }
        }
        let (mut f, t0) = f?;
        if pause_ms > 0 {
            std::thread::sleep(Duration::from_millis(pause_ms));
        }
        // A failed write still truncated the old version: recorded, but never visible.
        let ok = f.write_all(data).is_ok();
        let t1 = start.elapsed().as_secs_f64();
        Some(Written {
            t0,
            t1,
            visible: ok && same_inode(&f, &abs),
            replaced,
        })
    }

    /// A whole new file beside the target, renamed over it (as editors save).
    fn write_via_temp(
        folder: &Path,
        path: &str,
        data: &[u8],
        n: u64,
        start: Instant,
    ) -> Option<Written> {
        let abs = folder.join(path);
        let parent = abs.parent()?.to_path_buf();
        let tmp = parent.join(format!("{GEN_TEMP_PREFIX}{n}"));
        for _ in 0..3 {
            let _ = fs::create_dir_all(&parent);
            let Ok(mut f) = File::create(&tmp) else {
                continue;
            };
            if f.write_all(data).is_err() {
                let _ = fs::remove_file(&tmp);
                return None;
            }
            let replaced = content_hash(&abs);
            let t = start.elapsed().as_secs_f64();
            if fs::rename(&tmp, &abs).is_ok() {
                return Some(Written {
                    t0: t,
                    t1: t,
                    visible: same_inode(&f, &abs),
                    replaced,
                });
            }
            let _ = fs::remove_file(&tmp);
        }
        None
    }

    fn do_write(&mut self, d: &[Daemon], dev: usize, path: &str, via_temp: bool) -> bool {
        let data = self.next_content(12 << 20);
        let n = self.counter;
        let h = hash(&data);
        let res = if via_temp {
            Self::write_via_temp(&d[dev].folder, path, &data, n, self.start)
        } else {
            let pause = if self.rng.chance(0.5) {
                self.rng.below(40)
            } else {
                0
            };
            Self::write_in_place(&d[dev].folder, path, &data, pause, self.start)
        };
        let Some(Written {
            t0,
            t1,
            visible,
            replaced,
        }) = res
        else {
            return false;
        };
        self.book.end(dev, path, t0);
        self.book.destroy(dev, replaced, t0);
        if !via_temp {
            self.book.intermediate.insert(hash(b""));
        }
        let how = if via_temp { "write-temp" } else { "write" };
        self.written(dev, path, h, data.len() as u64, t1, how, visible);
        self.note(format!(
            "{t1:7.2} {} {how} {path} {} {}B{}",
            d[dev].name,
            hex(&h),
            data.len(),
            if visible { "" } else { " (replaced by sync)" }
        ));
        true
    }

    fn do_append(&mut self, d: &[Daemon], dev: usize, path: &str) -> bool {
        let abs = d[dev].folder.join(path);
        let Ok(mut f) = OpenOptions::new().read(true).append(true).open(&abs) else {
            return false;
        };
        self.counter += 1;
        let max = if self.rng.chance(0.9) { 4096 } else { 1 << 20 };
        let len = 1 + self.rng.below(max) as usize;
        let extra = make_content(self.seed, self.counter, len);
        let replaced = read_all(&mut f).map(|b| hash(&b));
        let t0 = self.now();
        if f.write_all(&extra).is_err() {
            return false;
        }
        self.book.destroy(dev, replaced, t0);
        let t1 = self.now();
        let visible = same_inode(&f, &abs);
        let Some(whole) = read_all(&mut f) else {
            return false;
        };
        let h = hash(&whole);
        self.book.end(dev, path, t0);
        self.written(dev, path, h, whole.len() as u64, t1, "append", visible);
        self.note(format!(
            "{t1:7.2} {} append {path} {} {}B",
            d[dev].name,
            hex(&h),
            whole.len()
        ));
        true
    }

    fn do_delete(&mut self, d: &[Daemon], dev: usize, path: &str) -> bool {
        let abs = d[dev].folder.join(path);
        if !abs.is_file() {
            return false;
        }
        let replaced = content_hash(&abs);
        let t = self.now();
        if fs::remove_file(&abs).is_err() {
            return false;
        }
        self.book.end(dev, path, t);
        self.book.destroy(dev, replaced, t);
        self.note(format!("{t:7.2} {} delete {path}", d[dev].name));
        true
    }

    fn do_rename(&mut self, d: &[Daemon], dev: usize, from: &str, to: &str) -> bool {
        let (src, dst) = (d[dev].folder.join(from), d[dev].folder.join(to));
        let Ok(mut f) = File::open(&src) else {
            return false;
        };
        if !f.metadata().is_ok_and(|m| m.is_file()) {
            return false;
        }
        if let Some(parent) = dst.parent() {
            let _ = fs::create_dir_all(parent);
        }
        let replaced = content_hash(&dst);
        let t = self.now();
        if fs::rename(&src, &dst).is_err() {
            return false;
        }
        self.book.end(dev, from, t);
        self.book.end(dev, to, t);
        self.book.destroy(dev, replaced, t);
        let visible = same_inode(&f, &dst);
        if let Some(data) = read_all(&mut f) {
            let h = hash(&data);
            self.book
                .add(dev, to, h, data.len() as u64, t, "rename", visible);
            self.note(format!(
                "{t:7.2} {} rename {from} -> {to} {}",
                d[dev].name,
                hex(&h)
            ));
        }
        true
    }

    fn do_rename_dir(&mut self, d: &[Daemon], dev: usize) -> bool {
        let root = &d[dev].folder;
        let present: Vec<&str> = DIRS
            .iter()
            .copied()
            .filter(|x| root.join(x).is_dir())
            .collect();
        let free: Vec<&str> = DIRS
            .iter()
            .copied()
            .filter(|x| {
                let p = root.join(x);
                !p.exists() || fs::read_dir(&p).is_ok_and(|mut r| r.next().is_none())
            })
            .collect();
        let pairs: Vec<(&str, &str)> = present
            .iter()
            .flat_map(|s| free.iter().map(move |f| (*s, *f)))
            .filter(|(s, f)| s != f)
            .collect();
        if pairs.is_empty() {
            return false;
        }
        let (from, to) = *self.rng.pick(&pairs);
        // Open every file first, so what moved can be read back through the same inode.
        let mut open: Vec<(String, File)> = walk(&root.join(from))
            .into_iter()
            .filter(|(rel, _)| !file_name(rel).starts_with(TEMP_PREFIX))
            .filter_map(|(rel, abs)| File::open(abs).ok().map(|f| (rel, f)))
            .collect();
        let t = self.now();
        if fs::rename(root.join(from), root.join(to)).is_err() {
            return false;
        }
        self.book.end_under(dev, from, t);
        self.book.end_under(dev, to, t);
        let mut moved = 0;
        for (rel, f) in open.iter_mut() {
            let new = format!("{to}/{rel}");
            let visible = same_inode(f, &root.join(&new));
            if let Some(data) = read_all(f) {
                self.book.add(
                    dev,
                    &new,
                    hash(&data),
                    data.len() as u64,
                    t,
                    "rename-dir",
                    visible,
                );
                moved += 1;
            }
        }
        self.note(format!(
            "{t:7.2} {} rename-dir {from} -> {to} ({moved} files)",
            d[dev].name
        ));
        true
    }

    /// The same name written on two or three devices at once (threads behind a barrier).
    fn do_concurrent(
        &mut self,
        d: &[Daemon],
        running: &[usize],
        down: &[usize],
        path: &str,
    ) -> bool {
        if running.is_empty() {
            return false;
        }
        // Mostly devices whose daemons run; a device whose daemon is down joins in too.
        let mut devs = running.to_vec();
        if devs.len() < 2 || self.rng.chance(0.3) {
            devs.extend_from_slice(down);
        }
        if devs.len() < 2 {
            return false;
        }
        if devs.len() > 2 && self.rng.chance(0.5) {
            let drop = self.rng.below(devs.len() as u64) as usize;
            devs.remove(drop);
        }
        let jobs: Vec<(usize, Vec<u8>, bool, u64)> = devs
            .iter()
            .map(|&dev| {
                let data = self.next_content(12 << 20);
                let via_temp = self.rng.chance(0.4);
                (dev, data, via_temp, self.counter)
            })
            .collect();
        let barrier = std::sync::Barrier::new(jobs.len());
        let start = self.start;
        let results: Vec<Option<Written>> = std::thread::scope(|s| {
            let handles: Vec<_> = jobs
                .iter()
                .map(|(dev, data, via_temp, n)| {
                    let folder = d[*dev].folder.clone();
                    let barrier = &barrier;
                    s.spawn(move || {
                        barrier.wait();
                        if *via_temp {
                            Self::write_via_temp(&folder, path, data, *n, start)
                        } else {
                            Self::write_in_place(&folder, path, data, 0, start)
                        }
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().ok().flatten())
                .collect()
        });
        let mut any = false;
        for ((dev, data, via_temp, _), res) in jobs.iter().zip(results) {
            let Some(Written {
                t0,
                t1,
                visible,
                replaced,
            }) = res
            else {
                continue;
            };
            any = true;
            let h = hash(data);
            self.book.end(*dev, path, t0);
            self.book.destroy(*dev, replaced, t0);
            if !via_temp {
                self.book.intermediate.insert(hash(b""));
            }
            self.written(*dev, path, h, data.len() as u64, t1, "concurrent", visible);
            self.note(format!(
                "{t1:7.4} {} concurrent {path} {} {}B{}",
                d[*dev].name,
                hex(&h),
                data.len(),
                if visible { "" } else { " (replaced by sync)" }
            ));
        }
        any
    }

    /// One random op on a random device (mostly one whose daemon runs; sometimes one whose
    /// daemon is down, as a user keeps working while it is off); false if nothing applied.
    fn step(&mut self, d: &[Daemon], up: &[bool]) -> bool {
        let running: Vec<usize> = (0..d.len()).filter(|&i| up[i]).collect();
        let down: Vec<usize> = (0..d.len()).filter(|&i| !up[i]).collect();
        let dev = if !down.is_empty() && self.rng.chance(0.4) {
            *self.rng.pick(&down)
        } else {
            *self.rng.pick(&running)
        };
        let table: [(Op, u64); 8] = [
            (Op::WriteInPlace, 22),
            (Op::WriteViaTemp, 16),
            (Op::Append, 12),
            (Op::Delete, 8),
            (Op::Rename, 9),
            (Op::RenameDir, 4),
            (Op::Concurrent, 8),
            (Op::DropConnections, if self.can_drop { 3 } else { 0 }),
        ];
        let total: u64 = table.iter().map(|x| x.1).sum();
        let mut r = self.rng.below(total);
        let mut op = Op::WriteInPlace;
        for (o, w) in table {
            if r < w {
                op = o;
                break;
            }
            r -= w;
        }
        // Users come back to the file they just edited.
        let path = match &self.last_path {
            Some(p) if self.rng.chance(0.3) => p.clone(),
            _ => self.rng.pick(&self.names).clone(),
        };
        self.last_path = Some(path.clone());
        let existing: Vec<String> = self
            .names
            .iter()
            .filter(|n| d[dev].folder.join(n).is_file())
            .cloned()
            .collect();
        match op {
            Op::WriteInPlace => self.do_write(d, dev, &path, false),
            Op::WriteViaTemp => self.do_write(d, dev, &path, true),
            Op::Append if !existing.is_empty() => {
                let p = self.rng.pick(&existing).clone();
                self.do_append(d, dev, &p)
            }
            Op::Delete if !existing.is_empty() => {
                let p = self.rng.pick(&existing).clone();
                self.do_delete(d, dev, &p)
            }
            Op::Rename if !existing.is_empty() => {
                let from = self.rng.pick(&existing).clone();
                let to = path;
                from != to && self.do_rename(d, dev, &from, &to)
            }
            Op::RenameDir => self.do_rename_dir(d, dev),
            Op::Concurrent => self.do_concurrent(d, &running, &down, &path),
            Op::DropConnections if up[dev] => match drop_connections(d[dev].port) {
                Some(n) => {
                    let t = self.now();
                    self.drops += 1;
                    self.dropped_sockets += n;
                    self.book.drops[dev].push(t);
                    self.note(format!(
                        "{t:7.2} {} drop connections ({n} sockets)",
                        d[dev].name
                    ));
                    true
                }
                None => false,
            },
            _ => false,
        }
    }
}

fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

#[test]
fn chaos_nothing_lost_nothing_torn_no_temp_files_and_converged() {
    let seed: u64 = std::env::var("CHAOS_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1);
    let secs = env_f64("CHAOS_SECS", 100.0).max(1.0);
    let ops_per_sec = env_f64("CHAOS_OPS_PER_SEC", 1.0 / 0.7).max(0.01);
    let kills_per_min = env_f64("CHAOS_KILLS_PER_MIN", 8.0 / 2.5).max(0.0);
    let converge_secs = env_f64("CHAOS_CONVERGE_SECS", 30.0).max(1.0);
    let rerun = format!("CHAOS_SEED={seed} cargo test -p cairn-tests --test chaos -- --nocapture");

    let setup = Instant::now();
    let tmp = tempfile::tempdir().unwrap();
    let keep = std::env::var("CHAOS_KEEP").is_ok_and(|v| !v.is_empty() && v != "0");
    // Retention keeps everything here: the test counts what sync kept, and the default
    // thinning (one version per 30 s in the first hour) would drop versions on purpose.
    let mut d = mesh_with(
        tmp.path(),
        &["a", "b", "c"],
        DaemonSpec::keeping_all_versions,
    );
    let setup_s = setup.elapsed().as_secs_f64();
    let n = d.len();
    let can_drop = can_drop_connections();
    if !can_drop {
        println!("chaos: note: `ss -K` cannot destroy loopback connections here; no drops");
    }

    let mut c = Chaos {
        seed,
        rng: Rng(seed ^ 0xC4A0_5EED),
        book: Book {
            downs: vec![Vec::new(); n],
            drops: vec![Vec::new(); n],
            ..Book::default()
        },
        start: Instant::now(),
        counter: 0,
        names: names(),
        ops: 0,
        skipped: 0,
        drops: 0,
        dropped_sockets: 0,
        can_drop,
        orphaned: 0,
        log: Vec::new(),
        last_path: None,
    };
    let mut kills = 0u64;
    let mut up = vec![true; n];
    // (device, restart at)
    let mut restarts: Vec<(usize, f64)> = Vec::new();
    let op_gap = |rng: &mut Rng| rng.range(0.2 / 0.7, 1.2 / 0.7) / ops_per_sec;
    let kill_gap = |rng: &mut Rng| {
        if kills_per_min <= 0.0 {
            f64::INFINITY
        } else {
            rng.range(0.5, 1.5) * 60.0 / kills_per_min
        }
    };
    let mut next_op = op_gap(&mut c.rng);
    let mut next_kill = kill_gap(&mut c.rng);

    // The change phase.
    let max_iterations = (secs * 200.0) as u64 + 10_000;
    for _ in 0..max_iterations {
        let t = c.now();
        if t >= secs {
            break;
        }
        if let Some(i) = restarts.iter().position(|&(_, at)| at <= t) {
            let (dev, _) = restarts.remove(i);
            d[dev].restart();
            let back = c.now();
            up[dev] = true;
            if let Some(last) = c.book.downs[dev].last_mut() {
                last.1 = Some(back);
            }
            c.note(format!("{back:7.2} {} restarted", d[dev].name));
            continue;
        }
        if t >= next_kill {
            let running: Vec<usize> = (0..n).filter(|&i| up[i]).collect();
            // Leave at least one device running for the generator.
            if running.len() >= 2 {
                let dev = *c.rng.pick(&running);
                let at = c.now();
                c.book.downs[dev].push((at, None));
                d[dev].kill();
                up[dev] = false;
                kills += 1;
                let back = at + c.rng.range(0.5, 3.0);
                restarts.push((dev, back));
                c.note(format!(
                    "{at:7.2} {} kill -9 (restart at {back:.2})",
                    d[dev].name
                ));
            }
            next_kill = t + kill_gap(&mut c.rng);
            continue;
        }
        if t >= next_op {
            let mut done = false;
            for _ in 0..5 {
                if c.step(&d, &up) {
                    done = true;
                    break;
                }
            }
            if done {
                c.ops += 1;
            } else {
                c.skipped += 1;
            }
            next_op = c.now() + op_gap(&mut c.rng);
            continue;
        }
        let wake = restarts
            .iter()
            .map(|r| r.1)
            .fold(next_op.min(next_kill).min(secs), f64::min);
        let nap = (wake - c.now()).clamp(0.0, 0.05);
        std::thread::sleep(Duration::from_secs_f64(nap));
    }
    let change_end = c.now();

    // Every daemon running again.
    for (dev, _) in std::mem::take(&mut restarts) {
        d[dev].restart();
        up[dev] = true;
        let back = c.now();
        if let Some(last) = c.book.downs[dev].last_mut() {
            last.1 = Some(back);
        }
        c.note(format!(
            "{back:7.2} {} restarted (end of changes)",
            d[dev].name
        ));
    }

    // Converge: identical trees, no cairn temp files, every daemon in sync.
    let mut cache = HashCache::default();
    let converge_start = Instant::now();
    let mut converged = false;
    let mut converge_s = converge_secs;
    let mut trees: Vec<BTreeMap<String, Hash>> = Vec::new();
    let mut folder_temps: Vec<Vec<String>> = Vec::new();
    let polls = (converge_secs * 4.0) as u64 + 2;
    for _ in 0..polls {
        let got: Vec<_> = d.iter().map(|x| tree(&mut cache, &x.folder)).collect();
        trees = got.iter().map(|g| g.0.clone()).collect();
        folder_temps = got.into_iter().map(|g| g.1).collect();
        let same = trees.windows(2).all(|w| w[0] == w[1]);
        let clean = folder_temps.iter().all(Vec::is_empty);
        if same
            && clean
            && d.iter()
                .all(|x| x.status()["folders"][0]["in_sync"] == serde_json::Value::Bool(true))
        {
            converged = true;
            converge_s = converge_start.elapsed().as_secs_f64();
            break;
        }
        if converge_start.elapsed().as_secs_f64() >= converge_secs {
            break;
        }
        std::thread::sleep(Duration::from_millis(250));
    }

    // What is left: every file in every folder and every daemon's kept versions.
    let mut found: HashSet<Hash> = HashSet::new();
    let mut kept: HashSet<cairn_core::ContentId> = HashSet::new();
    let mut final_files: Vec<(usize, String, Hash)> = Vec::new();
    let mut temps_left: Vec<String> = Vec::new();
    for (i, x) in d.iter().enumerate() {
        for (rel, abs) in walk(&x.folder) {
            if file_name(&rel).starts_with(TEMP_PREFIX) {
                temps_left.push(format!("{}: folder/{rel}", x.name));
            } else if let Some(h) = cache.get(&abs) {
                found.insert(h);
                final_files.push((i, rel, h));
            }
        }
        let out = cairn_tests::cairn(&x.home)
            .args(["--json", "history"])
            .output()
            .expect("cairn runs");
        assert!(
            out.status.success(),
            "cairn history on {}: {}",
            x.name,
            String::from_utf8_lossy(&out.stderr)
        );
        let list: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
        for v in list.as_array().expect("a list") {
            if v["available"] == serde_json::Value::Bool(true)
                && let Some(c) = v["content"].as_str().and_then(|c| c.parse().ok())
            {
                kept.insert(c);
            }
        }
    }
    {
        let ids = CONTENT_IDS.lock().unwrap();
        for (h, c) in ids.iter() {
            if kept.contains(c) {
                found.insert(*h);
            }
        }
    }

    // 1. Nothing lost.
    let book = &c.book;
    let written: BTreeSet<Hash> = book.written.iter().copied().collect();
    let lived: BTreeSet<Hash> = book
        .versions
        .iter()
        .filter(|v| book.must_keep(v))
        .map(|v| v.hash)
        .collect();
    // A version the user overwrote or deleted on every device that had it is gone by the
    // user's hand, not cairn's: reported, not required.
    let (must_keep, by_user): (BTreeSet<Hash>, BTreeSet<Hash>) =
        lived.iter().partition(|h| !book.gone_by_user(h));
    let lost: Vec<Hash> = must_keep
        .iter()
        .filter(|h| !found.contains(*h))
        .copied()
        .collect();
    let lost_other = written
        .iter()
        .filter(|h| !must_keep.contains(*h) && !found.contains(*h))
        .count();

    // 3. No torn files.
    let torn: Vec<&(usize, String, Hash)> = final_files
        .iter()
        .filter(|(_, _, h)| !book.written.contains(h) && !book.intermediate.contains(h))
        .collect();

    let summary = format!(
        "chaos seed={seed} secs={secs} ops={} kills={kills} versions={} must_keep={} lost={} torn={} temp_left={} converged={} converge_s={converge_s:.2}",
        c.ops,
        written.len(),
        must_keep.len(),
        lost.len(),
        torn.len(),
        temps_left.len(),
        if converged { "yes" } else { "no" },
    );
    let resurrected: Vec<String> = final_files
        .iter()
        .filter(|(_, rel, _)| file_name(rel).starts_with(GEN_TEMP_PREFIX))
        .map(|(i, rel, _)| format!("{}:{rel}", d[*i].name))
        .collect();
    println!(
        "chaos detail: setup_s={setup_s:.1} change_phase_s={change_end:.1} checks_s={:.1} lived_2s_but_gone_by_user={} skipped_ops={} drops={} dropped_sockets={} version_records={} lost_not_must_keep={lost_other} writes_replaced_by_sync_before_done={} generator_temp_files_left={} conflict_copies={}",
        converge_start.elapsed().as_secs_f64() - converge_s,
        by_user.len(),
        c.skipped,
        c.drops,
        c.dropped_sockets,
        book.versions.len(),
        c.orphaned,
        resurrected.len(),
        final_files
            .iter()
            .filter(|(_, rel, _)| file_name(rel).contains(CONFLICT_MARKER))
            .count(),
    );
    for h in &by_user {
        let ds: Vec<String> = book
            .destroyed
            .get(h)
            .into_iter()
            .flatten()
            .map(|(dev, t)| format!("{}@{t:.2}", d[*dev].name))
            .collect();
        let first = book.versions.iter().find(|v| v.hash == *h);
        let missed: Vec<&str> = (0..n)
            .filter(|&y| !book.versions.iter().any(|v| v.hash == *h && v.dev == y))
            .filter(|&y| !book.had_a_chance(y, h))
            .map(|y| d[y].name.as_str())
            .collect();
        println!(
            "chaos: not required: {} ({}, written {:.2}) destroyed by the generator on {}; never reachable from its holders by {}",
            hex(h),
            first.map_or("?".into(), |v| format!("{} {}", d[v.dev].name, v.path)),
            first.map_or(0.0, |v| v.born),
            if ds.is_empty() {
                "-".into()
            } else {
                ds.join(" ")
            },
            if missed.is_empty() {
                "-".into()
            } else {
                missed.join(" ")
            },
        );
    }
    println!("{summary}");

    let mut failures: Vec<String> = Vec::new();
    if !lost.is_empty() {
        let mut s = format!("{} must-keep versions lost:\n", lost.len());
        for h in &lost {
            for v in book.versions.iter().filter(|v| v.hash == *h) {
                s += &format!(
                    "  {} {} {} {}B {} born={:.2} ended={} must_keep={}\n",
                    hex(h),
                    d[v.dev].name,
                    v.path,
                    v.size,
                    v.how,
                    v.born,
                    v.ended.map_or("alive".into(), |e| format!("{e:.2}")),
                    book.must_keep(v)
                );
            }
            for (dev, t) in book.destroyed.get(h).into_iter().flatten() {
                s += &format!(
                    "    destroyed by the generator on {} at {t:.2}\n",
                    d[*dev].name
                );
            }
        }
        failures.push(s);
    }
    if !converged {
        let mut s = format!("not converged within {converge_secs} s\n");
        let paths: BTreeSet<&String> = trees.iter().flat_map(|t| t.keys()).collect();
        for p in paths {
            let hs: Vec<Option<&Hash>> = trees.iter().map(|t| t.get(p)).collect();
            if hs.windows(2).any(|w| w[0] != w[1]) {
                let cols: Vec<String> = d
                    .iter()
                    .zip(&hs)
                    .map(|(x, h)| format!("{}={}", x.name, h.map_or("-".into(), hex)))
                    .collect();
                s += &format!("  {p}: {}\n", cols.join(" "));
            }
        }
        for (x, temps) in d.iter().zip(&folder_temps) {
            s += &format!("  {} temp files: {temps:?}\n", x.name);
        }
        for x in &d {
            s += &format!(
                "--- {} status:\n{}\n--- {} log (last 50 lines):\n{}\n",
                x.name,
                x.status(),
                x.name,
                tail(&x.log(), 50)
            );
        }
        failures.push(s);
    }
    if !torn.is_empty() {
        let mut s = format!(
            "{} files hold contents the generator never wrote:\n",
            torn.len()
        );
        for (i, rel, h) in &torn {
            let size = fs::metadata(d[*i].folder.join(rel)).map_or(0, |m| m.len());
            s += &format!("  {}: {rel} {} {size}B\n", d[*i].name, hex(h));
        }
        failures.push(s);
    }
    if !temps_left.is_empty() {
        failures.push(format!("temp files left: {temps_left:?}\n"));
    }
    if !failures.is_empty() {
        println!("--- generator log ({} entries):", c.log.len());
        for l in &c.log {
            println!("{l}");
        }
        for x in &d {
            let log = x.log();
            let warns: Vec<&str> = log
                .lines()
                .filter(|l| l.contains("WARN") || l.contains("ERROR"))
                .collect();
            println!(
                "--- {} log: {} warn/error lines, last 15:\n{}",
                x.name,
                warns.len(),
                warns[warns.len().saturating_sub(15)..].join("\n")
            );
        }
        println!("{summary}");
    }
    if keep {
        let _ = fs::write(tmp.path().join("generator.log"), c.log.join("\n") + "\n");
        let kept = tmp.keep();
        println!(
            "chaos: homes, folders and generator.log kept in {}",
            kept.display()
        );
    }
    assert!(
        failures.is_empty(),
        "chaos seed={seed} failed; rerun with: {rerun}\n{}",
        failures.join("\n")
    );
}
