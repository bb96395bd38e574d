//! The scanner: walks a folder, reads what changed since the last scan, and records it in
//! the index.
//!
//! A scan is incremental: a path whose stamp (size, mtime, ctime, inode, mode) equals the
//! indexed one is not read. Changed files are chunked and hashed on all cores; results are
//! committed in batches, so a scan that is killed keeps everything committed so far and the
//! next scan picks up where it stopped. Deletions are committed last, only after the walk
//! finished, and never under a directory that could not be read.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::fs::{File, Metadata};
use std::io::{self, Read};
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use cairn_core::folder::PathRange;
use cairn_core::scan::{
    Change, ChangeKind, EntryKind, IGNORE_FILE, IndexedEntry, Stamp, is_internal_name,
};
use cairn_core::{ChunkRef, Chunker, ContentId, ContentIdBuilder, Manifest, SegmentCuts, stitch};
use rayon::prelude::*;
use serde::Serialize;

use crate::index::{FolderRecord, FolderTotals, Index, IndexError, Update};

/// How often a file that keeps changing while it is read is tried again in one scan.
pub(crate) const READ_ATTEMPTS: usize = 3;
/// A batch of results is committed when it holds this many paths...
const BATCH_PATHS: usize = 2_000;
/// ...or this many bytes of newly read content...
const BATCH_BYTES: u64 = 256 << 20;
/// ...or when it is this old.
const BATCH_AGE: Duration = Duration::from_millis(500);

/// A scan that could not run at all.
#[derive(Debug, thiserror::Error)]
pub enum ScanError {
    #[error("folder {root} cannot be read: {source}")]
    Root { root: PathBuf, source: io::Error },
    #[error(transparent)]
    Index(#[from] IndexError),
    #[error("folder {0} has invalid chunker parameters")]
    Params(String),
}

/// A path the scan skipped, and why; the scan goes on without it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ScanIssue {
    /// Folder-relative path ("" for the folder itself).
    pub path: String,
    /// What went wrong, in words.
    pub problem: String,
    /// The file was still changing: not an error, the next scan reads it again.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub changing: bool,
}

impl ScanIssue {
    fn new(path: String, problem: impl Into<String>) -> Self {
        ScanIssue {
            path,
            problem: problem.into(),
            changing: false,
        }
    }

    fn changing(path: String, problem: &str) -> Self {
        ScanIssue {
            changing: true,
            ..ScanIssue::new(path, problem)
        }
    }
}

/// Where a running scan is, for progress bars.
#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct ScanProgress {
    /// Paths found by the walk so far.
    pub walked: u64,
    /// True once the walk is complete and the totals below are final.
    pub walk_done: bool,
    /// Files that need reading.
    pub to_read_files: u64,
    /// Bytes that need reading.
    pub to_read_bytes: u64,
    /// Files read so far.
    pub read_files: u64,
    /// Bytes read so far.
    pub read_bytes: u64,
}

/// What a scan found and did.
#[derive(Clone, Debug, Serialize)]
pub struct ScanReport {
    /// Folder id.
    pub folder: String,
    /// Folder root.
    pub root: PathBuf,
    /// The folder's totals after the scan.
    pub totals: FolderTotals,
    /// Total bytes over the bytes of distinct chunks (1.0 means no duplicate content).
    pub dedup_ratio: f64,
    /// Files read (chunked and hashed) by this scan.
    pub read_files: u64,
    /// Bytes read by this scan.
    pub read_bytes: u64,
    /// Wall time of the scan in seconds.
    pub seconds: f64,
    /// Bytes read per second, in MiB/s.
    pub read_mib_per_s: f64,
    /// Paths added.
    pub added: u64,
    /// Paths modified.
    pub modified: u64,
    /// Paths deleted.
    pub deleted: u64,
    /// Every change, sorted by path.
    pub changes: Vec<Change>,
    /// Paths skipped, and why.
    pub issues: Vec<ScanIssue>,
    /// The scan stopped at its budget of reads ([`SCAN_MAX_READS`]): the next scan of the
    /// same scope goes on.
    pub more: bool,
}

/// What the walk saw at one path.
struct Observed {
    path: String,
    kind: EntryKind,
    stamp: Stamp,
}

/// The outcome of reading one path.
enum ReadOutcome {
    Done {
        path: String,
        entry: IndexedEntry,
        manifest: Option<Manifest>,
        bytes: u64,
    },
    Skipped(ScanIssue),
    /// The file indexed at `from` (as `old`) is now at `path`, unchanged (see the scan).
    Moved {
        from: String,
        old: IndexedEntry,
        path: String,
        entry: IndexedEntry,
    },
}

/// A full scan walks the folder in ranges of about this many indexed paths (in byte
/// order), holding the index entries of one range at a time, not the folder's: at
/// 1,000,000 files, each full scan that loaded them all took the receiver from ~465 to
/// up to 825 MiB (the map of every entry was not measured on its own).
pub const SCAN_RANGE: usize = 50_000;

/// One scan reads at most this many new or changed paths; it then reports `more`, and the
/// next scan (started at once) goes on. Each scan's changes are recorded in the folder
/// document in one turn: a scan that found 592,592 new files of a copy in progress took
/// the sender from 220 to 537 MiB while they were recorded, and the receiver to 500 MiB
/// while it applied them.
pub const SCAN_MAX_READS: usize = 100_000;

/// How much one scan takes on (tests use small limits).
#[derive(Clone, Copy, Debug)]
pub struct ScanLimits {
    /// A full scan walks in ranges of about this many indexed paths.
    pub range_paths: usize,
    /// New or changed paths read at most.
    pub max_reads: usize,
}

impl Default for ScanLimits {
    fn default() -> Self {
        ScanLimits {
            range_paths: SCAN_RANGE,
            max_reads: SCAN_MAX_READS,
        }
    }
}

/// Scans `folder` into `index` and reports what changed. `progress` is called now and then.
pub fn scan_folder(
    index: &Index,
    folder: &FolderRecord,
    progress: &(dyn Fn(&ScanProgress) + Sync),
) -> Result<ScanReport, ScanError> {
    scan_folder_with(index, folder, progress, ScanLimits::default())
}

/// [`scan_folder`] within `limits`.
pub fn scan_folder_with(
    index: &Index,
    folder: &FolderRecord,
    progress: &(dyn Fn(&ScanProgress) + Sync),
    limits: ScanLimits,
) -> Result<ScanReport, ScanError> {
    scan_scoped(
        index,
        folder,
        progress,
        Scope::Ranges(limits.range_paths),
        limits.max_reads,
    )
}

/// Scans only the subtrees of `folder` at `dirs` (folder-relative directories; `""` is the
/// whole folder): what the watcher saw change. The walk still starts at the root, so the
/// ignore files on the way apply as in a full scan, but it descends only into the
/// directories that lead to or lie in those subtrees, and only their entries can be found
/// deleted. A path that is not a directory (any more) is scanned as its parent would be.
pub fn scan_paths(
    index: &Index,
    folder: &FolderRecord,
    dirs: &BTreeSet<String>,
) -> Result<ScanReport, ScanError> {
    scan_scoped(index, folder, &|_| {}, Scope::Dirs(dirs), SCAN_MAX_READS)
}

/// What one scan covers.
#[derive(Clone, Copy)]
enum Scope<'a> {
    /// The whole folder, walked in ranges of about this many indexed paths.
    Ranges(usize),
    /// These subtrees.
    Dirs(&'a BTreeSet<String>),
}

/// Whether `path` lies at or under one of `dirs` (a lookup per directory above it: a
/// partial scan may cover a thousand directories).
fn in_scope(dirs: &BTreeSet<String>, path: &str) -> bool {
    dirs.contains("")
        || dirs.contains(path)
        || path
            .rmatch_indices('/')
            .any(|(cut, _)| dirs.contains(&path[..cut]))
}

/// Whether the walk must enter `path`: in scope, or on the way to a directory in scope.
fn on_the_way(dirs: &BTreeSet<String>, path: &str) -> bool {
    let below = format!("{path}/");
    in_scope(dirs, path)
        || dirs
            .range(below.clone()..)
            .next()
            .is_some_and(|d| d.starts_with(&below))
}

fn scan_scoped(
    index: &Index,
    folder: &FolderRecord,
    progress: &(dyn Fn(&ScanProgress) + Sync),
    scope: Scope<'_>,
    max_reads: usize,
) -> Result<ScanReport, ScanError> {
    let started = Instant::now();
    let params = folder.chunker_params()?;
    let chunker = Chunker::new(params).map_err(|_| ScanError::Params(folder.id.clone()))?;
    std::fs::read_dir(&folder.root).map_err(|source| ScanError::Root {
        root: folder.root.clone(),
        source,
    })?;

    let (dirs, ranges) = match scope {
        Scope::Dirs(dirs) => (Some(dirs), vec![PathRange::default()]),
        Scope::Ranges(every) => (
            None,
            PathRange::split(index.path_bounds(&folder.id, every)?),
        ),
    };
    // What was indexed and either changed (noted in `seen`) or is gone, gathered range
    // by range; unchanged paths are dropped as the walk sees them.
    let mut previous = HashMap::new();
    let mut listed = Duration::ZERO;
    let mut prog = ScanProgress::default();
    let mut issues = Vec::new();
    let mut reported = HashSet::new();
    let mut unreadable_dirs = Vec::new();
    let mut seen = HashSet::new();
    let mut to_read = Vec::new();
    let temps = Arc::new(Mutex::new(Vec::new()));
    for range in &ranges {
        let listing = Instant::now();
        let mut part = match dirs {
            Some(dirs) => index.entries_under(&folder.id, dirs)?,
            None => index.entries_in(&folder.id, range)?,
        };
        listed += listing.elapsed();
        for item in walk(&folder.root, temps.clone(), dirs, range) {
            match item {
                // A directory on the way to the scope, or to paths in the range, is
                // entered, not scanned.
                Ok(obs)
                    if dirs.is_some_and(|dirs| !in_scope(dirs, &obs.path))
                        || !range.contains(&obs.path) => {}
                Ok(obs) => {
                    prog.walked += 1;
                    if prog.walked % 4096 == 0 {
                        progress(&prog);
                    }
                    let unchanged = part
                        .get(&obs.path)
                        .is_some_and(|old| !old.needs_rescan(obs.kind, &obs.stamp));
                    // An unchanged path is done with. So a rescan of an unchanged folder
                    // of 1,000,000 files holds no second set of its paths.
                    if unchanged {
                        part.remove(&obs.path);
                    } else if part.contains_key(&obs.path) {
                        seen.insert(obs.path.clone());
                    }
                    if !unchanged {
                        if obs.kind == EntryKind::File {
                            prog.to_read_files += 1;
                            prog.to_read_bytes += obs.stamp.size;
                        }
                        to_read.push(obs);
                    }
                }
                Err(WalkIssue {
                    path,
                    problem,
                    unreadable_dir,
                }) => {
                    // A directory on a range's edge is listed by both ranges.
                    if unreadable_dir {
                        unreadable_dirs.push(path.clone());
                    }
                    if reported.insert(path.clone()) {
                        issues.push(ScanIssue::new(path, problem));
                    }
                }
            }
        }
        previous.extend(part);
    }
    drop(reported);
    // What was indexed and is gone: not seen by the walk, and not under a directory the
    // walk could not read. Deleted once everything else is committed.
    let mut gone: HashMap<String, IndexedEntry> = previous
        .extract_if(|path, _| {
            !seen.contains(path)
                && !unreadable_dirs
                    .iter()
                    .any(|d| d == path || is_under(path, d))
        })
        .collect();
    drop(seen);
    previous.shrink_to_fit();
    // A file whose full stamp (inode, size, mtime, ctime, mode) is that of a file which
    // left its indexed path in this scan is that file, moved: renaming a directory
    // changes nothing in the stamps of the files inside it. Its content is known; it is
    // recorded at its new path without being read (a 10,000-file directory rename read
    // every file again), and its index entry moves (`Update::Move`) with the removal of
    // the old path in the same transaction. The stamp is the same test that spares an
    // unchanged path. Hard links share a stamp: each old path is taken once.
    let mut moved_from: HashMap<Stamp, Vec<String>> = HashMap::new();
    for (path, old) in &gone {
        if old.kind == EntryKind::File && old.content.is_some() {
            moved_from.entry(old.stamp).or_default().push(path.clone());
        }
    }
    let mut moved = Vec::new();
    let mut read_done = Duration::ZERO;
    if !moved_from.is_empty() {
        to_read.retain(|obs| {
            if obs.kind != EntryKind::File || previous.contains_key(&obs.path) {
                return true;
            }
            let Some(from) = moved_from.get_mut(&obs.stamp).and_then(|paths| paths.pop()) else {
                return true;
            };
            let Some(old) = gone.remove(&from) else {
                return true;
            };
            prog.to_read_files -= 1;
            prog.to_read_bytes -= obs.stamp.size;
            moved.push(ReadOutcome::Moved {
                from,
                entry: IndexedEntry {
                    kind: EntryKind::File,
                    stamp: obs.stamp,
                    content: old.content,
                    link_target: None,
                },
                old,
                path: obs.path.clone(),
            });
            false
        });
    }
    let moved_count = moved.len();
    // Past the budget, the first paths in path order are read now, the rest next time
    // (they stay unindexed, or indexed as they were, so the next scan finds them).
    let more = to_read.len() > max_reads;
    if more {
        to_read.sort_unstable_by(|a, b| a.path.cmp(&b.path));
        to_read.truncate(max_reads);
        prog.to_read_files = to_read.iter().filter(|o| o.kind == EntryKind::File).count() as u64;
        prog.to_read_bytes = to_read
            .iter()
            .filter(|o| o.kind == EntryKind::File)
            .map(|o| o.stamp.size)
            .sum();
    }
    prog.walk_done = true;
    progress(&prog);
    let walked = started.elapsed();
    let temps = std::mem::take(&mut *temps.lock().unwrap_or_else(|e| e.into_inner()));
    remove_stale_temps(index, folder, &temps);

    // Read changed paths in parallel, largest first; commit results in batches here.
    let mut changes = Vec::new();
    let mut order = to_read;
    order.sort_by_key(|o| std::cmp::Reverse(o.stamp.size));
    let root = folder.root.clone();
    let (tx, rx) = mpsc::sync_channel::<ReadOutcome>(256);
    std::thread::scope(|s| -> Result<(), ScanError> {
        s.spawn(|| {
            let chunker = &chunker;
            order.into_par_iter().for_each_init(
                || (tx.clone(), Vec::new()),
                |(tx, buf), obs| {
                    let _ = tx.send(read_path(&root, chunker, obs, buf));
                },
            );
            drop(tx);
        });
        let mut batch = Vec::new();
        let mut batch_bytes = 0u64;
        let mut batch_started = Instant::now();
        let mut committed = 0;
        let mut accept = |outcome: ReadOutcome| -> Result<(), ScanError> {
            match outcome {
                ReadOutcome::Done {
                    path,
                    entry,
                    manifest,
                    bytes,
                } => {
                    match previous.remove(&path) {
                        None => changes.push(Change {
                            path: path.clone(),
                            change: ChangeKind::Added,
                            kind: entry.kind,
                            previous: None,
                        }),
                        Some(old) => {
                            if let Some(change) = old.change_to(&entry) {
                                changes.push(Change {
                                    path: path.clone(),
                                    change,
                                    kind: entry.kind,
                                    previous: old.content,
                                });
                            }
                        }
                    }
                    // A moved file comes with no manifest: it was not read.
                    if entry.kind == EntryKind::File && manifest.is_some() {
                        tracing::debug!(
                            folder = %folder.id,
                            path,
                            content = %entry.content.map(|c| c.short()).unwrap_or_default(),
                            size = entry.stamp.size,
                            ctime_ns = entry.stamp.ctime_ns,
                            "file_read"
                        );
                        prog.read_files += 1;
                        prog.read_bytes += bytes;
                    }
                    batch_bytes += bytes;
                    batch.push(Update::Put {
                        path,
                        entry,
                        manifest,
                    });
                }
                ReadOutcome::Skipped(issue) => {
                    // Keep what the index had: a file we could not read is not deleted.
                    previous.remove(&issue.path);
                    issues.push(issue);
                }
                ReadOutcome::Moved {
                    from,
                    old,
                    path,
                    entry,
                } => {
                    changes.push(Change {
                        path: path.clone(),
                        change: ChangeKind::Added,
                        kind: entry.kind,
                        previous: None,
                    });
                    changes.push(Change {
                        path: from.clone(),
                        change: ChangeKind::Deleted,
                        kind: old.kind,
                        previous: old.content,
                    });
                    batch.push(Update::Move { from, path, entry });
                }
            }
            if batch.len() >= BATCH_PATHS
                || batch_bytes >= BATCH_BYTES
                || batch_started.elapsed() >= BATCH_AGE
            {
                index.apply_scan(&folder.id, &batch, &unrecorded(&changes[committed..]))?;
                committed = changes.len();
                batch.clear();
                batch_bytes = 0;
                batch_started = Instant::now();
                progress(&prog);
            }
            Ok(())
        };
        // A file changed in the last moments may still be being written (truncated, then
        // written; appended to): it is recorded only once it stayed the same for SETTLE.
        let mut settling = Vec::new();
        // A moved file's stamp is the one it was indexed with, after it had settled.
        // In path order, so the index writes neighbouring keys one after another.
        moved.sort_by(|a, b| match (a, b) {
            (ReadOutcome::Moved { path: a, .. }, ReadOutcome::Moved { path: b, .. }) => a.cmp(b),
            _ => std::cmp::Ordering::Equal,
        });
        for outcome in moved {
            accept(outcome)?;
        }
        for outcome in rx {
            settle_or_accept(outcome, &mut settling, &mut accept)?;
        }
        let mut buf = Vec::new();
        for _ in 0..READ_ATTEMPTS {
            if settling.is_empty() {
                break;
            }
            // Zero when the rest of the scan already outlasted the settle time.
            let wait = settling
                .iter()
                .filter_map(|o| match o {
                    ReadOutcome::Done { entry, .. } => settle_left(&entry.stamp),
                    ReadOutcome::Skipped(_) | ReadOutcome::Moved { .. } => None,
                })
                .max()
                .unwrap_or_default();
            std::thread::sleep(wait);
            for outcome in std::mem::take(&mut settling) {
                let ReadOutcome::Done { path, entry, .. } = &outcome else {
                    accept(outcome)?;
                    continue;
                };
                let now = std::fs::symlink_metadata(root.join(path)).map(|m| stamp_of(&m));
                match now {
                    Ok(stamp) if stamp == entry.stamp => accept(outcome)?,
                    Ok(stamp) => {
                        let obs = Observed {
                            path: path.clone(),
                            kind: EntryKind::File,
                            stamp,
                        };
                        settle_or_accept(
                            read_path(&root, &chunker, obs, &mut buf),
                            &mut settling,
                            &mut accept,
                        )?;
                    }
                    Err(_) => accept(ReadOutcome::Skipped(ScanIssue::new(
                        path.clone(),
                        "file vanished while scanning",
                    )))?,
                }
            }
        }
        for outcome in settling {
            if let ReadOutcome::Done { path, .. } = outcome {
                accept(ReadOutcome::Skipped(ScanIssue::changing(
                    path,
                    "file is still being written; it will be scanned again",
                )))?;
            }
        }
        read_done = started.elapsed();
        for (path, old) in &gone {
            changes.push(Change {
                path: path.clone(),
                change: ChangeKind::Deleted,
                kind: old.kind,
                previous: old.content,
            });
            batch.push(Update::Remove { path: path.clone() });
        }
        index.apply_scan(&folder.id, &batch, &unrecorded(&changes[committed..]))?;
        Ok(())
    })?;
    progress(&prog);
    let committed_at = started.elapsed();

    changes.sort_by(|a, b| a.path.cmp(&b.path));
    let count = |k: ChangeKind| changes.iter().filter(|c| c.change == k).count() as u64;
    let totals = index.totals(&folder.id)?;
    let seconds = started.elapsed().as_secs_f64();
    tracing::debug!(
        folder = %folder.id,
        index_ms = listed.as_millis() as u64,
        walk_ms = (walked - listed).as_millis() as u64,
        read_ms = (read_done - walked).as_millis() as u64,
        removals_ms = (committed_at - read_done).as_millis() as u64,
        totals_ms = (started.elapsed() - committed_at).as_millis() as u64,
        moved = moved_count,
        "scan_phases"
    );
    Ok(ScanReport {
        folder: folder.id.clone(),
        root: folder.root.clone(),
        dedup_ratio: if totals.unique_bytes == 0 {
            1.0
        } else {
            totals.bytes as f64 / totals.unique_bytes as f64
        },
        totals,
        read_files: prog.read_files,
        read_bytes: prog.read_bytes,
        seconds,
        read_mib_per_s: prog.read_bytes as f64 / (1024.0 * 1024.0) / seconds.max(1e-9),
        added: count(ChangeKind::Added),
        modified: count(ChangeKind::Modified),
        deleted: count(ChangeKind::Deleted),
        changes,
        issues,
        more,
    })
}

/// Changes as the index remembers them until the folder document records them.
fn unrecorded(changes: &[Change]) -> Vec<(String, Option<ContentId>)> {
    changes
        .iter()
        .map(|c| (c.path.clone(), c.previous))
        .collect()
}

/// How long a file must stay unchanged before a scan records it: the watcher's debounce.
/// A writer's truncate-then-write or burst of appends is microseconds apart, far inside
/// it. At 100 ms (earlier) every event-driven scan slept the difference: a small write
/// reached the peer in 0.115 s instead of 0.075 s (bench/sync.sh latency).
const SETTLE: Duration = crate::watcher::DEBOUNCE;

/// How long a file last changed at `stamp` still has to settle, if at all.
fn settle_left(stamp: &Stamp) -> Option<Duration> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i64);
    let changed = stamp.ctime_ns.min(now);
    let left = changed + SETTLE.as_nanos() as i64 - now;
    (left > 0).then(|| Duration::from_nanos(left as u64))
}

/// Accepts a fresh read of a file unless it changed too recently again.
fn settle_or_accept(
    outcome: ReadOutcome,
    settling: &mut Vec<ReadOutcome>,
    accept: &mut impl FnMut(ReadOutcome) -> Result<(), ScanError>,
) -> Result<(), ScanError> {
    match &outcome {
        ReadOutcome::Done { entry, .. }
            if entry.kind == EntryKind::File && settle_left(&entry.stamp).is_some() =>
        {
            settling.push(outcome);
            Ok(())
        }
        _ => accept(outcome),
    }
}

/// Removes cairn's temp files that no pull will resume: left by a process killed
/// mid-write, or for a version that is no longer wanted. Scans never overlap a pull or a
/// restore of their folder, so no temp file seen here is being written. A temp file is
/// kept only when the index records progress of its pull (a large file resumes).
fn remove_stale_temps(index: &Index, folder: &FolderRecord, temps: &[PathBuf]) {
    for tmp in temps {
        if crate::temps::temp_resumes(index, &folder.id, &folder.root, tmp) {
            continue;
        }
        match std::fs::remove_file(tmp) {
            Ok(()) => {
                tracing::info!(folder = %folder.id, temp = %tmp.display(), "stale_temp_removed")
            }
            Err(e) => {
                tracing::warn!(folder = %folder.id, temp = %tmp.display(), error = %e, "stale_temp_not_removed")
            }
        }
    }
}

fn is_under(path: &str, dir: &str) -> bool {
    dir.is_empty()
        || (path.len() > dir.len() && path.starts_with(dir) && path.as_bytes()[dir.len()] == b'/')
}

/// A problem the walk met at one path.
struct WalkIssue {
    path: String,
    problem: String,
    /// The path is a directory whose contents are unknown this time.
    unreadable_dir: bool,
}

/// Walks `root` without following symlinks, honouring `.cairnignore` files and skipping
/// cairn's own temp files. Yields every path below the root.
/// With `scope`, it enters only what leads to or lies in those subtrees; with a bounded
/// `range`, only directories that can hold paths in it, and files in it.
fn walk<'a>(
    root: &'a Path,
    temps: Arc<Mutex<Vec<PathBuf>>>,
    scope: Option<&BTreeSet<String>>,
    range: &PathRange,
) -> impl Iterator<Item = Result<Observed, WalkIssue>> + 'a {
    let scope = scope.cloned();
    let range = range.clone();
    let base = root.to_path_buf();
    let walker = ignore::WalkBuilder::new(root)
        .standard_filters(false)
        .add_custom_ignore_filename(IGNORE_FILE)
        .follow_links(false)
        .filter_entry(move |e| {
            if e.depth() > 0 {
                let rel = e
                    .path()
                    .strip_prefix(&base)
                    .ok()
                    .and_then(|p| p.to_str())
                    .unwrap_or("");
                if scope.as_ref().is_some_and(|dirs| !on_the_way(dirs, rel)) {
                    return false;
                }
                let dir = e.file_type().is_some_and(|t| t.is_dir());
                let may_hold = range.contains(rel) || (dir && range.meets_subtree(rel));
                if !may_hold {
                    return false;
                }
            }
            let internal = e.file_name().to_str().is_some_and(is_internal_name);
            if internal
                && e.file_type().is_some_and(|t| t.is_file())
                && let Ok(mut t) = temps.lock()
            {
                t.push(e.path().to_path_buf());
            }
            !internal
        })
        .build();
    walker.filter_map(move |item| {
        let entry = match item {
            Ok(entry) => entry,
            Err(err) => {
                let path = error_path(&err)
                    .map(|p| relative(root, p))
                    .unwrap_or_default();
                let unreadable_dir = true;
                return Some(Err(WalkIssue {
                    path,
                    problem: describe(&err),
                    unreadable_dir,
                }));
            }
        };
        if entry.depth() == 0 {
            return None;
        }
        let path = match entry
            .path()
            .strip_prefix(root)
            .ok()
            .and_then(|p| p.to_str())
        {
            Some(p) => p.replace(std::path::MAIN_SEPARATOR, "/"),
            None => {
                return Some(Err(WalkIssue {
                    path: entry.path().to_string_lossy().into_owned(),
                    problem: "name is not valid UTF-8; rename it to sync it".into(),
                    unreadable_dir: false,
                }));
            }
        };
        if let Some(err) = entry.error() {
            return Some(Err(WalkIssue {
                path,
                problem: describe(err),
                unreadable_dir: false,
            }));
        }
        let meta = match entry.metadata() {
            Ok(m) => m,
            Err(err) => {
                // Gone between listing and stat: the next scan sees what is there.
                return Some(Err(WalkIssue {
                    path,
                    problem: describe(&err),
                    unreadable_dir: false,
                }));
            }
        };
        let ft = meta.file_type();
        let kind = if ft.is_symlink() {
            EntryKind::Symlink
        } else if ft.is_dir() {
            EntryKind::Dir
        } else if ft.is_file() {
            EntryKind::File
        } else {
            return Some(Err(WalkIssue {
                path,
                problem:
                    "not a regular file, directory or symlink (device, socket or pipe); skipped"
                        .into(),
                unreadable_dir: false,
            }));
        };
        Some(Ok(Observed {
            path,
            kind,
            stamp: stamp_of(&meta),
        }))
    })
}

fn relative(root: &Path, p: &Path) -> String {
    p.strip_prefix(root)
        .unwrap_or(p)
        .to_string_lossy()
        .replace(std::path::MAIN_SEPARATOR, "/")
}

fn error_path(err: &ignore::Error) -> Option<&Path> {
    match err {
        ignore::Error::WithPath { path, .. } => Some(path),
        ignore::Error::WithDepth { err, .. } | ignore::Error::WithLineNumber { err, .. } => {
            error_path(err)
        }
        ignore::Error::Loop { child, .. } => Some(child),
        _ => None,
    }
}

fn describe(err: &ignore::Error) -> String {
    match err {
        ignore::Error::WithPath { err, .. } | ignore::Error::WithDepth { err, .. } => describe(err),
        other => other.to_string(),
    }
}

/// The stamp of a path from its (not followed) metadata.
pub fn stamp_of(meta: &Metadata) -> Stamp {
    Stamp {
        size: meta.len(),
        mtime_ns: meta.mtime() * 1_000_000_000 + meta.mtime_nsec(),
        ctime_ns: meta.ctime() * 1_000_000_000 + meta.ctime_nsec(),
        inode: meta.ino(),
        mode: meta.mode() & 0o7777,
    }
}

/// Reads one changed path: the content of a file, the target of a symlink.
fn read_path(root: &Path, chunker: &Chunker, obs: Observed, buf: &mut Vec<u8>) -> ReadOutcome {
    let full = root.join(&obs.path);
    let skipped = |problem: String| ReadOutcome::Skipped(ScanIssue::new(obs.path.clone(), problem));
    match obs.kind {
        EntryKind::Dir => ReadOutcome::Done {
            entry: IndexedEntry {
                kind: EntryKind::Dir,
                stamp: obs.stamp,
                content: None,
                link_target: None,
            },
            path: obs.path,
            manifest: None,
            bytes: 0,
        },
        EntryKind::Symlink => match std::fs::read_link(&full) {
            Ok(target) => match target.to_str() {
                Some(t) => ReadOutcome::Done {
                    entry: IndexedEntry {
                        kind: EntryKind::Symlink,
                        stamp: obs.stamp,
                        content: None,
                        link_target: Some(t.to_string()),
                    },
                    path: obs.path,
                    manifest: None,
                    bytes: 0,
                },
                None => skipped("symlink target is not valid UTF-8".into()),
            },
            Err(e) => skipped(format!("cannot read symlink: {e}")),
        },
        EntryKind::File => {
            for _ in 0..READ_ATTEMPTS {
                match read_file(&full, chunker, buf) {
                    Ok(FileRead::Stable {
                        stamp,
                        manifest,
                        content,
                    }) => {
                        let bytes = stamp.size;
                        return ReadOutcome::Done {
                            entry: IndexedEntry {
                                kind: EntryKind::File,
                                stamp,
                                content: Some(content),
                                link_target: None,
                            },
                            path: obs.path,
                            manifest: Some(manifest),
                            bytes,
                        };
                    }
                    Ok(FileRead::ChangedWhileReading) => {}
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {
                        return skipped("file vanished while scanning".into());
                    }
                    Err(e) => return skipped(format!("cannot read file: {e}")),
                }
            }
            ReadOutcome::Skipped(ScanIssue::changing(
                obs.path,
                "file kept changing while it was read; it will be scanned again",
            ))
        }
    }
}

/// The result of one attempt at reading a file.
pub enum FileRead {
    /// The file did not change while it was read: this is its content.
    Stable {
        stamp: Stamp,
        manifest: Manifest,
        content: ContentId,
    },
    /// Its stamp changed between the start and the end of the read.
    ChangedWhileReading,
}

/// Chunks and hashes one file, detecting a change that happens while it is read.
///
/// Symlinks are not followed (`O_NOFOLLOW`), so a file swapped for a link mid-scan is not
/// read through the link.
pub fn read_file(path: &Path, chunker: &Chunker, buf: &mut Vec<u8>) -> io::Result<FileRead> {
    let file = crate::open_no_follow(path)?;
    let before = stamp_of(&file.metadata()?);
    let chunks = chunks_of(&file, before.size, chunker, buf)?;
    let mut builder = ContentIdBuilder::default();
    let mut read = 0u64;
    for chunk in &chunks {
        builder.push(chunk);
        read += u64::from(chunk.len);
    }
    let after = stamp_of(&file.metadata()?);
    if before != after || read != after.size {
        return Ok(FileRead::ChangedWhileReading);
    }
    Ok(FileRead::Stable {
        stamp: after,
        manifest: Manifest { chunks },
        content: builder.finish(),
    })
}

/// The segment a core cuts at once when a file is cut in parallel (at least 16 largest
/// chunks, so the chunks cut twice where segments meet stay a small share). Files of two
/// segments or more are cut in segments on all cores and stitched together, so one large
/// file is not read by a single core while the others idle.
const SEGMENT: u64 = 16 << 20;

/// The chunks of `file`, whose size was `size` when it was opened. A file that changes
/// meanwhile may come out with a different total length; the caller checks.
fn chunks_of(
    file: &File,
    size: u64,
    chunker: &Chunker,
    buf: &mut Vec<u8>,
) -> io::Result<Vec<ChunkRef>> {
    let segment = SEGMENT.max(16 * chunker.max_chunk() as u64);
    if size < 2 * segment {
        let mut chunks = Vec::new();
        chunker.chunk_reader::<&File, io::Error>(file, buf, |_, bytes| {
            chunks.push(ChunkRef::of(bytes));
            Ok(())
        })?;
        return Ok(chunks);
    }
    let segments = (0..size.div_ceil(segment))
        .into_par_iter()
        .map_init(Vec::new, |buf, k| {
            segment_cuts(
                file,
                k * segment,
                ((k + 1) * segment).min(size),
                chunker,
                buf,
            )
        })
        .collect::<io::Result<Vec<_>>>()?;
    buf.resize(buf.len().max(chunker.max_chunk()), 0);
    stitch(segments, |pos| {
        let window = read_at_most(file, &mut buf[..chunker.max_chunk()], pos)?;
        Ok(ChunkRef::of(&window[..chunker.cut(window)]))
    })
}

/// The chunks of `file` from `start` as if a chunk began there, up to the first that begins
/// at or after `end`.
fn segment_cuts(
    file: &File,
    start: u64,
    end: u64,
    chunker: &Chunker,
    buf: &mut Vec<u8>,
) -> io::Result<SegmentCuts> {
    enum Stop {
        Io(io::Error),
        SegmentEnd,
    }
    impl From<io::Error> for Stop {
        fn from(e: io::Error) -> Self {
            Stop::Io(e)
        }
    }
    // A chunk that begins before `end` reaches at most `max_chunk` past it.
    let reader = FileAt { file, pos: start }.take(end - start + chunker.max_chunk() as u64);
    let mut chunks = Vec::new();
    let cut = chunker.chunk_reader::<_, Stop>(reader, buf, |offset, bytes| {
        if start + offset >= end {
            return Err(Stop::SegmentEnd);
        }
        chunks.push(ChunkRef::of(bytes));
        Ok(())
    });
    match cut {
        Ok(_) | Err(Stop::SegmentEnd) => Ok(SegmentCuts { start, chunks }),
        Err(Stop::Io(e)) => Err(e),
    }
}

/// Reads from `pos` until `buf` is full or the file ends; returns what was read.
fn read_at_most<'b>(file: &File, buf: &'b mut [u8], pos: u64) -> io::Result<&'b [u8]> {
    let mut filled = 0;
    while filled < buf.len() {
        match file.read_at(&mut buf[filled..], pos + filled as u64) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(&buf[..filled])
}

/// A reader over `file` from `pos` that uses positioned reads, so several can share a file.
struct FileAt<'a> {
    file: &'a File,
    pos: u64,
}

impl Read for FileAt<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.file.read_at(buf, self.pos)?;
        self.pos += n as u64;
        Ok(n)
    }
}
