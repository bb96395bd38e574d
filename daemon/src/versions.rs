//! The version store: the bytes of kept versions, on iroh-blobs (`HOME/versions`).
//!
//! A chunk id is the BLAKE3 hash of the chunk's bytes, which is exactly an iroh-blobs
//! [`Hash`], so each chunk of a kept version is a blob as it is, and the version is a
//! hash sequence of its chunks (in file order) under the tag `c/<content id>`. Versions
//! that share chunks share their blobs: a hundred versions of a large file that differ in
//! a few places cost little more than one. Only the store is used, not iroh-blobs'
//! transfer protocol: chunks of kept versions travel to peers like any other chunk
//! (cairn's blocks protocol over libp2p, verified on arrival).
//!
//! What a version *is* (its folder, path, time and manifest) stays in the index; the store
//! holds bytes. Dropping a version deletes its tag; the store's garbage collector then
//! removes the blobs no tag reaches, when [`VersionStore::collect_garbage`] asks for a run.
//!
//! Keeping a version is a hard link first: right before the puller (or a restore) renames
//! over a file, the file is linked into the staging directory (`HOME/history/<content
//! id>`, the directory earlier versions kept whole files in), which costs no copy however
//! large the file, and the version is recorded. A background importer
//! ([`import_staged`], on a thread of its own at background priority) later copies the
//! staged file's chunks into the store, each checked against the manifest, and removes the
//! link. Until then a staged version is read from its link, verified chunk by chunk like
//! any other. A staged file written to after it was replaced (an append through a
//! descriptor still open) no longer holds its version: it is left staged, as it is, and
//! nothing of it is lost.
//!
//! The store's API is async and runs on a runtime of its own. These methods block: call
//! them from blocking threads (the puller's, restores', `spawn_blocking`), never from the
//! event loop.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::SeqCst};
use std::time::{Duration, Instant};

use cairn_core::retention::{self, KeptVersion, Retention};
use cairn_core::scan::TEMP_PREFIX;
use cairn_core::{ChunkId, ContentId, Manifest};
use futures::StreamExt;
use iroh_blobs::api::blobs::AddBytesOptions;
use iroh_blobs::hashseq::HashSeq;
use iroh_blobs::store::fs::FsStore;
use iroh_blobs::store::fs::options::Options;
use iroh_blobs::store::{GcConfig, ProtectCb, ProtectOutcome};
use iroh_blobs::{BlobFormat, Hash};
use tokio::runtime::Handle;

use crate::index::Index;

/// The prefix of the tags that keep versions: `c/<content id hex>`.
const VERSION_TAG: &str = "c/";

/// How often the store's collector wakes to see whether a run was asked for.
const GC_POLL: Duration = Duration::from_millis(200);

/// How long one collector run may take before pruning gives up on it.
const GC_TIMEOUT: Duration = Duration::from_secs(120);
/// Requests to the store in flight at once while a version is kept.
const STORE_IN_FLIGHT: usize = 64;

/// Why keeping or reading a version failed.
#[derive(Debug, thiserror::Error)]
pub enum VersionError {
    #[error("version store: {0}")]
    Store(String),
    #[error("reading the version: {0}")]
    Io(#[from] std::io::Error),
    /// The file no longer holds the version the index says it holds.
    #[error("the file changed while its version was being kept")]
    Changed,
}

fn store_err(e: impl std::fmt::Display) -> VersionError {
    VersionError::Store(e.to_string())
}

type Result<T> = std::result::Result<T, VersionError>;

/// Lets the store's collector run only when asked: iroh-blobs 0.104 runs its collector on
/// a timer and has no public "run now", so the timer is short and the protect callback
/// aborts every run nobody asked for.
#[derive(Default)]
struct GcGate {
    requested: AtomicBool,
    entered: AtomicU64,
    started: AtomicU64,
}

impl GcGate {
    fn callback(self: &Arc<Self>) -> ProtectCb {
        let gate = self.clone();
        Arc::new(move |_live: &mut HashSet<Hash>| {
            gate.entered.fetch_add(1, SeqCst);
            let go = gate.requested.swap(false, SeqCst);
            if go {
                gate.started.fetch_add(1, SeqCst);
            }
            Box::pin(async move {
                if go {
                    ProtectOutcome::Continue
                } else {
                    ProtectOutcome::Abort
                }
            })
        })
    }
}

/// The store of kept versions' bytes.
pub struct VersionStore {
    store: FsStore,
    /// Where the store keeps its files (a large blob is a plain file of its bytes).
    paths: iroh_blobs::store::fs::options::PathOptions,
    rt: Handle,
    gc: Arc<GcGate>,
    /// Keeps take it shared, a collector run alone: a chunk a keep found in the store
    /// must not be collected before the keep's tag protects it.
    collecting: std::sync::RwLock<()>,
    /// Held across "is it kept? keep it, record it" (the puller, restores) and across
    /// pruning's "forget it, drop its bytes", so neither sees the other half done.
    catalog: std::sync::Mutex<()>,
    dir: PathBuf,
    /// Versions kept as hard links, not yet imported (`HOME/history`).
    staging: PathBuf,
    /// Set when a version was staged, cleared by the importer when it starts a pass.
    pending: AtomicBool,
    /// Set by [`VersionStore::shutdown`]: the importer stops.
    stopping: AtomicBool,
    /// Held by the importer while it works on one staged file, and by shutdown.
    importing: std::sync::Mutex<()>,
    /// Pulls running now ([`VersionStore::pulling`]): the importer waits for none.
    pulls: AtomicUsize,
    /// Staged bytes past which the importer runs even while pulls run.
    staging_limit: AtomicU64,
    /// When a version was last staged, in ms since the store opened.
    staged_at_ms: AtomicU64,
    /// When a peer was last served chunks from the kept versions, in ms since the store
    /// opened, plus one (0: never).
    served_at_ms: AtomicU64,
    /// Contents whose manifest a peer asked for within [`ASKED_RECENTLY`] (or a little
    /// longer), with when: peers first waits only for a version a peer is fetching.
    asked: std::sync::Mutex<Asked>,
    opened: Instant,
}

/// How long a peer's ask for a manifest counts as that peer fetching the version.
pub const ASKED_RECENTLY: Duration = Duration::from_secs(60);

/// Contents asked for -> when (ms since the store opened). Entries older than
/// [`ASKED_RECENTLY`] are dropped whenever the map has doubled since the last drop, so
/// one ask costs O(1) however many files a first sync asks for.
#[derive(Default)]
struct Asked {
    at: HashMap<ContentId, u64>,
    prune_at: usize,
}

/// Counts a running pull for as long as it lives.
pub struct Pulling<'a>(&'a AtomicUsize);

impl Drop for Pulling<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, SeqCst);
    }
}

impl VersionStore {
    /// Opens (or creates) the store in `dir`, staging versions in `staging`. `rt` is a
    /// runtime the blocking calls wait on.
    pub fn open(dir: &Path, staging: &Path, rt: Handle) -> Result<Self> {
        std::fs::create_dir_all(dir)?;
        let gc = Arc::new(GcGate::default());
        let mut options = Options::new(dir);
        options.gc = Some(GcConfig {
            interval: GC_POLL,
            add_protected: Some(gc.callback()),
        });
        let db = dir.join("blobs.db");
        let paths = options.path.clone();
        let store = block(&rt, FsStore::load_with_opts(db, options)).map_err(store_err)?;
        Ok(VersionStore {
            store,
            paths,
            rt,
            gc,
            collecting: std::sync::RwLock::new(()),
            catalog: std::sync::Mutex::new(()),
            dir: dir.to_path_buf(),
            staging: staging.to_path_buf(),
            // Files an earlier run staged (or an older version's history) are imported
            // by the first pass.
            pending: AtomicBool::new(true),
            stopping: AtomicBool::new(false),
            importing: std::sync::Mutex::new(()),
            pulls: AtomicUsize::new(0),
            staging_limit: AtomicU64::new(STAGING_LIMIT),
            staged_at_ms: AtomicU64::new(0),
            served_at_ms: AtomicU64::new(0),
            asked: Default::default(),
            opened: Instant::now(),
        })
    }

    fn staged_path(&self, content: &ContentId) -> PathBuf {
        self.staging.join(content.to_hex())
    }

    /// Whether `content` is staged (kept as a hard link, not yet imported).
    pub fn is_staged(&self, content: &ContentId) -> bool {
        std::fs::symlink_metadata(self.staged_path(content)).is_ok_and(|m| m.is_file())
    }

    /// Keeps the version `content`, which the file at `file` holds (the caller checked
    /// it against its scan), by a hard link into the staging directory (a copy where the
    /// two are on different file systems), durable when this returns. The caller then
    /// renames over (or removes) `file` and records the version.
    pub fn stage(&self, content: &ContentId, file: &Path) -> std::io::Result<()> {
        self.stage_unsynced(content, file)?;
        self.sync_staging()
    }

    /// Makes every link [`Self::stage_unsynced`] made durable (one fsync of the staging
    /// directory for any number of them).
    pub fn sync_staging(&self) -> std::io::Result<()> {
        std::fs::File::open(&self.staging)?.sync_all()
    }

    /// [`Self::stage`] without making the link durable: the caller stages a batch, then
    /// calls [`Self::sync_staging`] once before it removes or replaces any of the files.
    pub fn stage_unsynced(&self, content: &ContentId, file: &Path) -> std::io::Result<()> {
        use std::os::unix::fs::MetadataExt;
        std::fs::create_dir_all(&self.staging)?;
        let kept = self.staged_path(content);
        let src = std::fs::metadata(file)?;
        match std::fs::symlink_metadata(&kept) {
            // Already staged: this very file (a link made before a kill), or another copy
            // of the same size (one of another folder, say; the importer verifies it).
            Ok(m) if m.ino() == src.ino() && m.dev() == src.dev() => return Ok(()),
            Ok(m) if m.is_file() && m.len() == src.len() => return Ok(()),
            // Not that version any more (written to after it was staged): moved aside under
            // a name the importer leaves alone, never deleted.
            Ok(_) => {
                let nanos = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_nanos());
                let aside = format!("{}.changed-{nanos}", content.to_hex());
                std::fs::rename(&kept, self.staging.join(aside))?;
            }
            Err(_) => {}
        }
        if std::fs::hard_link(file, &kept).is_err() {
            let tmp = self
                .staging
                .join(format!("{TEMP_PREFIX}{}", content.to_hex()));
            std::fs::copy(file, &tmp)?;
            std::fs::File::open(&tmp)?.sync_all()?;
            std::fs::rename(&tmp, &kept)?;
        }
        self.staged_at_ms.store(self.now_ms(), SeqCst);
        self.pending.store(true, SeqCst);
        Ok(())
    }

    /// Milliseconds since the store opened: the clock of `staged_at_ms` and `served_at_ms`.
    fn now_ms(&self) -> u64 {
        self.opened.elapsed().as_millis() as u64
    }

    /// A peer was served chunks from the kept versions just now (`serve.rs`): it may be
    /// restoring one of them from this device.
    pub fn note_served(&self) {
        self.served_at_ms.store(self.now_ms() + 1, SeqCst);
    }

    /// Whether a peer was served from the kept versions within `within`.
    pub fn served_within(&self, within: Duration) -> bool {
        let at = self.served_at_ms.load(SeqCst);
        at != 0 && (self.now_ms() + 1).saturating_sub(at) < within.as_millis() as u64
    }

    /// A peer asked for the manifest of `content` just now (`serve.rs`): it is about to
    /// fetch that version, perhaps from the kept versions here.
    pub fn note_asked(&self, content: &ContentId) {
        const FLOOR: usize = 1024;
        let now = self.now_ms();
        let mut asked = self.asked.lock().unwrap_or_else(|e| e.into_inner());
        asked.at.insert(*content, now);
        if asked.at.len() > asked.prune_at.max(FLOOR) {
            let horizon = ASKED_RECENTLY.as_millis() as u64;
            asked.at.retain(|_, at| now.saturating_sub(*at) < horizon);
            asked.prune_at = 2 * asked.at.len();
        }
    }

    /// Whether a peer asked for the manifest of `content` within `within` (which counts
    /// up to [`ASKED_RECENTLY`]).
    pub fn asked_within(&self, content: &ContentId, within: Duration) -> bool {
        let asked = self.asked.lock().unwrap_or_else(|e| e.into_inner());
        asked.at.get(content).is_some_and(|at| {
            self.now_ms().saturating_sub(*at) < within.min(ASKED_RECENTLY).as_millis() as u64
        })
    }

    /// Marks a pull as running until the guard drops: the importer, whose copying competes
    /// with the pull for the disk, waits until no pull runs.
    pub fn pulling(&self) -> Pulling<'_> {
        self.pulls.fetch_add(1, SeqCst);
        Pulling(&self.pulls)
    }

    /// Whether the importer should run now: something was staged, and either no pull
    /// runs and the last stage is [`IMPORT_QUIET`] old (edits often come in bursts), or
    /// the staged copies take more than the staging limit.
    fn import_due(&self) -> bool {
        let since = self.now_ms().saturating_sub(self.staged_at_ms.load(SeqCst));
        self.pending.load(SeqCst)
            && ((self.pulls.load(SeqCst) == 0 && since >= IMPORT_QUIET.as_millis() as u64)
                || self.staging_full())
    }

    /// Whether the staged copies take more than the staging limit ([`STAGING_LIMIT`]).
    fn staging_full(&self) -> bool {
        self.over_staging_limit(disk_usage(&self.staging))
    }

    fn over_staging_limit(&self, staged_bytes: u64) -> bool {
        staged_bytes > self.staging_limit.load(SeqCst)
    }

    /// Sets the staging limit (tests use a small one).
    pub fn set_staging_limit(&self, bytes: u64) {
        self.staging_limit.store(bytes, SeqCst);
    }

    /// Takes back a [`VersionStore::stage`] whose file turned out not to hold the version:
    /// removes the staged link if it is `file`'s inode.
    pub fn unstage(&self, content: &ContentId, file: &Path) {
        use std::os::unix::fs::MetadataExt;
        let kept = self.staged_path(content);
        if let (Ok(a), Ok(b)) = (std::fs::symlink_metadata(&kept), std::fs::metadata(file))
            && a.ino() == b.ino()
            && a.dev() == b.dev()
        {
            let _ = std::fs::remove_file(kept);
        }
    }

    /// One chunk of the kept version `content`, at `offset` in it: read from its staged
    /// link when it has one (and it still holds those bytes), else from the store. Always
    /// verified against `id`; the error says what is wrong.
    pub fn version_chunk(
        &self,
        content: &ContentId,
        id: &ChunkId,
        offset: u64,
        len: usize,
    ) -> std::result::Result<Vec<u8>, String> {
        match crate::read_chunk_at(&self.staged_path(content), offset, len, id) {
            Some(buf) => Ok(buf),
            None => self.chunk_checked(id),
        }
    }

    /// The catalog lock (see the field): hold it from "is this version kept?" to its
    /// record in the index.
    pub fn lock_catalog(&self) -> std::sync::MutexGuard<'_, ()> {
        self.catalog.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether `content` is kept: staged, or in the store (its tag is there).
    pub fn has(&self, content: &ContentId) -> Result<bool> {
        if self.is_staged(content) {
            return Ok(true);
        }
        self.imported(content)
    }

    /// Whether the store itself holds `content` (its tag is there).
    pub fn imported(&self, content: &ContentId) -> Result<bool> {
        let tag = block(&self.rt, self.store.tags().get(tag_of(content))).map_err(store_err)?;
        Ok(tag.is_some())
    }

    /// Keeps the version `content` of the file at `file`, whose chunks `manifest` lists.
    /// Every chunk read is checked against its id (the store hashes what it adds, and that
    /// hash is compared): if the file no longer holds that version, nothing is kept and
    /// [`VersionError::Changed`] says so. Chunks the store already has are not read. Durable
    /// when this returns (the store's database is committed; a kill afterwards loses
    /// nothing).
    pub fn keep_file(&self, content: &ContentId, manifest: &Manifest, file: &Path) -> Result<()> {
        use std::os::unix::fs::FileExt;
        let f = crate::open_no_follow(file)?;
        // Every chunk matching says nothing of bytes past the last one (an append).
        if f.metadata()?.len() != manifest.size() {
            return Err(VersionError::Changed);
        }
        let store = &self.store;
        let _shared = self.collecting.read().unwrap_or_else(|e| e.into_inner());
        block(&self.rt, async {
            // The batch's temp tags protect the chunks until the version's tag does.
            use futures::{StreamExt, TryStreamExt};
            let batch = store.batch().await.map_err(store_err)?;
            let mut seen = HashSet::new();
            let mut at = 0u64;
            let mut unique = Vec::new();
            for c in &manifest.chunks {
                let offset = at;
                at += c.len as u64;
                if seen.insert(c.id) {
                    unique.push((Hash::from_bytes(*c.id.as_bytes()), offset, c.len));
                }
            }
            // Which chunks the store has, and temp tags for those, asked STORE_IN_FLIGHT
            // at a time: one round trip after another to the store's actor made keeping
            // a 256 MiB version whose chunks were all stored take 1.4 s.
            let stored: Vec<bool> =
                futures::stream::iter(unique.iter().map(|(h, ..)| store.has(*h)))
                    .buffered(STORE_IN_FLIGHT)
                    .try_collect()
                    .await
                    .map_err(store_err)?;
            let (have, lack): (Vec<_>, Vec<_>) =
                unique.into_iter().zip(stored).partition(|(_, has)| *has);
            let mut held: Vec<_> =
                futures::stream::iter(have.iter().map(|((h, ..), _)| batch.temp_tag(*h)))
                    .buffered(STORE_IN_FLIGHT)
                    .try_collect()
                    .await
                    .map_err(store_err)?;
            for ((hash, offset, len), _) in lack {
                let mut buf = crate::read_buffer(len as usize);
                f.read_exact_at(&mut buf, offset)?;
                let tag = batch.add_bytes(buf).await.map_err(store_err)?;
                if tag.hash() != hash {
                    return Err(VersionError::Changed);
                }
                held.push(tag);
            }
            let seq: HashSeq = manifest
                .chunks
                .iter()
                .map(|c| Hash::from_bytes(*c.id.as_bytes()))
                .collect();
            store
                .add_bytes_with_opts(AddBytesOptions {
                    data: seq.into(),
                    format: BlobFormat::HashSeq,
                })
                .with_named_tag(tag_of(content))
                .await
                .map_err(store_err)?;
            store.sync_db().await.map_err(store_err)?;
            drop(held);
            drop(batch);
            Ok::<_, VersionError>(())
        })?;
        if f.metadata()?.len() != manifest.size() {
            // Kept as it was; the caller must not take the file for that version now.
            return Err(VersionError::Changed);
        }
        Ok(())
    }

    /// The bytes of one chunk of a kept version, or why not: missing from the store, or
    /// damaged (what the store holds does not hash to `id`).
    pub fn chunk_checked(&self, id: &ChunkId) -> std::result::Result<Vec<u8>, String> {
        let hash = Hash::from_bytes(*id.as_bytes());
        // The store keeps a blob larger than its inline limit as a plain file of its
        // bytes: read it directly when it is there and hashes to `id` (its API streams a
        // blob in 1 KiB messages, which made serving kept versions 1.5x slower than
        // serving files). Anything else (an inlined small chunk, a file being written or
        // collected) goes through the API below.
        if let Ok(bytes) = std::fs::read(self.paths.data_path(&hash))
            && id.matches(&bytes)
        {
            return Ok(bytes);
        }
        // Read first, and only when that fails ask whether the store has it at all (for
        // the message): one round trip to the store for a chunk that is there.
        let read = block(&self.rt, self.store.get_bytes(hash));
        if let Ok(bytes) = &read
            && id.matches(bytes)
        {
            return Ok(bytes.to_vec());
        }
        if !block(&self.rt, self.store.has(hash)).map_err(|e| e.to_string())? {
            return Err(format!(
                "chunk {} is missing from the version store",
                id.short()
            ));
        }
        Err(match read {
            Err(e) => format!("chunk {} is damaged or unreadable: {e}", id.short()),
            Ok(_) => format!(
                "chunk {} is damaged (its bytes do not match its id)",
                id.short()
            ),
        })
    }

    /// The chunk ids of a kept version, in file order.
    pub fn chunks_of(&self, content: &ContentId) -> Result<Option<Vec<ChunkId>>> {
        block(&self.rt, async {
            let Some(tag) = self
                .store
                .tags()
                .get(tag_of(content))
                .await
                .map_err(store_err)?
            else {
                return Ok(None);
            };
            let bytes = self.store.get_bytes(tag.hash).await.map_err(store_err)?;
            let seq = HashSeq::new(bytes)
                .ok_or_else(|| VersionError::Store("a version's chunk list is damaged".into()))?;
            Ok(Some(seq.iter().map(|h| ChunkId(*h.as_bytes())).collect()))
        })
    }

    /// Every version the store keeps.
    pub fn contents(&self) -> Result<Vec<ContentId>> {
        block(&self.rt, async {
            let tags = self
                .store
                .tags()
                .list_prefix(VERSION_TAG)
                .await
                .map_err(store_err)?;
            let mut tags = std::pin::pin!(tags);
            let mut out = Vec::new();
            while let Some(t) = tags.next().await {
                let t = t.map_err(store_err)?;
                let name = String::from_utf8_lossy(t.name.as_ref()).into_owned();
                if let Some(c) = name.strip_prefix(VERSION_TAG).and_then(|h| h.parse().ok()) {
                    out.push(c);
                }
            }
            Ok(out)
        })
    }

    /// Stops keeping `content`: its staged link goes now, its blobs with the next
    /// collector run unless another version shares them.
    pub fn drop_version(&self, content: &ContentId) -> Result<()> {
        match std::fs::remove_file(self.staged_path(content)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e.into()),
            _ => {}
        }
        block(&self.rt, async {
            self.store
                .tags()
                .delete(tag_of(content))
                .await
                .map_err(store_err)?;
            self.store.sync_db().await.map_err(store_err)
        })
    }

    /// Runs the store's collector once and waits for it (bounded by `timeout`).
    pub fn collect_garbage(&self, timeout: Duration) -> Result<()> {
        let _alone = self.collecting.write().unwrap_or_else(|e| e.into_inner());
        let gate = &self.gc;
        block(&self.rt, async {
            let started = gate.started.load(SeqCst);
            gate.requested.store(true, SeqCst);
            tokio::time::timeout(timeout, async {
                while gate.started.load(SeqCst) == started {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                // The callback is entered again only after the run and one interval.
                let entered = gate.entered.load(SeqCst);
                while gate.entered.load(SeqCst) == entered {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            })
            .await
            .map_err(|_| VersionError::Store("the collector did not finish".into()))
        })
    }

    /// Bytes the store takes on disk (its database, blobs and temp files, and the staged
    /// versions, counted whole until imported).
    pub fn disk_bytes(&self) -> u64 {
        disk_usage(&self.dir) + disk_usage(&self.staging)
    }

    /// Closes the store cleanly (its database is unlocked when this returns), after the
    /// importer's current file.
    pub fn shutdown(&self) {
        self.stopping.store(true, SeqCst);
        let _importer = self.importing.lock().unwrap_or_else(|e| e.into_inner());
        let _ = block(&self.rt, self.store.shutdown());
    }
}

/// Waits for `fut` from a blocking thread.
fn block<F: std::future::Future>(rt: &Handle, fut: F) -> F::Output {
    rt.block_on(fut)
}

fn tag_of(content: &ContentId) -> String {
    format!("{VERSION_TAG}{}", content.to_hex())
}

/// Bytes in blocks of the files under `dir`.
fn disk_usage(dir: &Path) -> u64 {
    let mut total = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let Ok(m) = e.metadata() else { continue };
            if m.is_dir() {
                stack.push(e.path());
            } else {
                total += disk_bytes(&m);
            }
        }
    }
    total
}

/// The bytes a file takes on disk (its blocks, not its length).
fn disk_bytes(m: &std::fs::Metadata) -> u64 {
    use std::os::unix::fs::MetadataExt;
    m.blocks() * 512
}

/// Brings the history of earlier versions into this layout at start: their chunk
/// locations move from the one `@history` pseudo-folder to `@history/<folder>`, and their
/// whole files in `HOME/history/<content id>` are staged versions as they are, imported
/// by the importer like any other. Idempotent.
pub fn migrate(index: &Index) -> Result<usize> {
    let moved = index.migrate_history_locations().map_err(store_err)?;
    if moved > 0 {
        tracing::info!(locations = moved, "history_locations_migrated");
    }
    Ok(moved)
}

/// One pass of the importer: copies each staged version into the store (every chunk
/// checked against the manifest on the way; chunks the store has are not written again)
/// and removes its link. A staged file that no longer holds its version (written to
/// after it was replaced) and one no kept version lists stay as they are, logged: nothing
/// is deleted unread. Returns how many were imported. Blocking; the catalog lock is held
/// only around each removal, so keeps and pruning are not held up by a long copy.
pub fn import_staged(index: &Index, store: &VersionStore) -> Result<usize> {
    store.pending.store(false, SeqCst);
    let started = std::time::Instant::now();
    let Ok(entries) = std::fs::read_dir(&store.staging) else {
        return Ok(0);
    };
    // What the index lists, read once per pass; checked again under the catalog lock
    // before a link goes (pruning may have dropped it meanwhile).
    let listed = listed_contents(index)?;
    // The staged bytes, walked once per pass and counted down as links go.
    let mut staged_bytes = disk_usage(&store.staging);
    let mut imported = 0;
    for e in entries.flatten() {
        let _one = store.importing.lock().unwrap_or_else(|e| e.into_inner());
        if store.stopping.load(SeqCst) {
            break;
        }
        if store.pulls.load(SeqCst) > 0 && !store.over_staging_limit(staged_bytes) {
            // A pull started: the rest waits for the next quiet moment.
            store.pending.store(true, SeqCst);
            break;
        }
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with(TEMP_PREFIX) {
            // A copy a stage was making when the daemon stopped.
            let _ = std::fs::remove_file(e.path());
            continue;
        }
        let Ok(content) = name.parse::<ContentId>() else {
            continue;
        };
        if !listed.contains(&content) {
            tracing::debug!(file = %e.path().display(), "staged_version_unlisted");
            continue;
        }
        if !store.imported(&content)? {
            let Some(manifest) = index.any_manifest(&content).map_err(store_err)? else {
                continue;
            };
            match store.keep_file(&content, &manifest, &e.path()) {
                Ok(()) => {}
                Err(VersionError::Changed) => {
                    tracing::warn!(file = %e.path().display(), "staged_version_changed_left_as_is");
                    continue;
                }
                Err(err) => return Err(err),
            }
        }
        let _catalog = store.lock_catalog();
        if index.history_of_content(&content).map_err(store_err)? {
            let bytes = e.metadata().map_or(0, |m| disk_bytes(&m));
            std::fs::remove_file(e.path())?;
            staged_bytes = staged_bytes.saturating_sub(bytes);
            imported += 1;
        } else {
            // Pruned while it was being imported.
            store.drop_version(&content)?;
        }
    }
    if imported > 0 {
        tracing::info!(
            versions = imported,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "staged_versions_imported"
        );
    }
    Ok(imported)
}

/// Staged bytes past which the importer runs even while pulls run (and without waiting
/// for [`IMPORT_QUIET`]): a version is staged as a whole file, so a large file edited
/// again and again held a whole copy per edit until the edits stopped (`bench/versions.sh`,
/// 100 edits of a 256 MiB file about 1.3 s apart, filled the 24 GiB left on a disk).
pub const STAGING_LIMIT: u64 = 1 << 30;

/// How often the importer looks whether versions were staged.
const IMPORT_POLL: Duration = Duration::from_millis(500);

/// How long after the last stage (and with no pull running) the importer starts: it copies
/// what it imports, which would compete with a pull for the disk.
const IMPORT_QUIET: Duration = Duration::from_secs(2);

/// Starts the importer: a thread of its own, at background priority (it reads and hashes
/// whole files, as the scanner's threads do), that runs [`import_staged`] whenever
/// versions were staged, until the store shuts down.
pub fn spawn_importer(index: Arc<Index>, store: Arc<VersionStore>) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name("cairn-versions".into())
        .spawn(move || {
            crate::priority::lower_this_thread();
            while !store.stopping.load(SeqCst) {
                if store.import_due()
                    && let Err(e) = import_staged(&index, &store)
                {
                    tracing::warn!(error = %e, "staged_versions_import_failed");
                    store.pending.store(true, SeqCst);
                }
                std::thread::sleep(IMPORT_POLL);
            }
        })?;
    Ok(())
}

/// What a pruning run did.
pub use cairn_api::history::Pruned;

/// Drops the kept versions each folder's rules no longer keep (`cairn_core::retention`):
/// their rows leave the index, and the bytes of a content no kept version of any folder
/// still lists leave the store (one collector run at the end). Runs under the store's
/// catalog lock, so no keep of the same content interleaves.
pub fn prune(
    index: &Index,
    store: &VersionStore,
    folders: &[(String, Retention)],
    now_ns: i64,
) -> Result<Pruned> {
    let _catalog = store.lock_catalog();
    let bytes_before = store.disk_bytes();
    let mut dropped = 0;
    let mut unkept = Vec::new();
    for (folder, rules) in folders {
        let rows = index.history(folder).map_err(store_err)?;
        let mut versions = Vec::with_capacity(rows.len());
        for (path, kept_ns, content) in &rows {
            let chunks = match rules.max_bytes {
                Some(_) => index
                    .any_manifest(content)
                    .map_err(store_err)?
                    .map(|m| m.chunks.iter().map(|c| (c.id, c.len)).collect())
                    .unwrap_or_default(),
                None => Vec::new(),
            };
            versions.push(KeptVersion {
                path: path.clone(),
                kept_ns: *kept_ns,
                chunks,
            });
        }
        for i in retention::to_drop(now_ns, &versions, rules) {
            let (path, kept_ns, _) = &rows[i];
            if let Some(r) = index
                .remove_history(folder, path, *kept_ns)
                .map_err(store_err)?
            {
                dropped += 1;
                if !r.still_kept {
                    unkept.push(r.content);
                }
            }
        }
    }
    for content in &unkept {
        store.drop_version(content)?;
    }
    if !unkept.is_empty() {
        store.collect_garbage(GC_TIMEOUT)?;
    }
    let kept = index.all_history().map_err(store_err)?.len();
    Ok(Pruned {
        dropped,
        kept,
        bytes_before,
        bytes_after: store.disk_bytes(),
    })
}

/// The contents of every kept version the index lists, all folders.
fn listed_contents(index: &Index) -> Result<HashSet<ContentId>> {
    Ok(index
        .all_history()
        .map_err(store_err)?
        .into_iter()
        .map(|(_, _, _, c)| c)
        .collect())
}

/// Drops the store's versions no kept version of the index lists (a kill between keeping
/// the bytes and recording them). Only at start, before any pull can keep a version.
pub fn drop_unlisted(index: &Index, store: &VersionStore) -> Result<usize> {
    let listed = listed_contents(index)?;
    let mut n = 0;
    for c in store.contents()? {
        if !listed.contains(&c) {
            store.drop_version(&c)?;
            n += 1;
        }
    }
    if n > 0 {
        store.collect_garbage(GC_TIMEOUT)?;
        tracing::info!(versions = n, "unlisted_versions_dropped");
    }
    Ok(n)
}
