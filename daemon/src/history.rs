//! Version history as people use it: listing the versions this device kept and putting one
//! back.
//!
//! A version lands in the version store (`versions.rs`, on iroh-blobs; recorded in the
//! index) when a peer's change replaces or deletes a file here. Restoring copies it back
//! into the folder as a local change, so it syncs to every device like an edit; the version
//! it replaces is kept in history first, here and (through the usual pull) on every peer.
//! Nothing is lost by a restore.
//!
//! A restore runs only while its folder neither scans nor pulls (`Busy::Restoring`), so the
//! puller cannot swap the file or a directory under it meanwhile; a user editing the file
//! during the restore is caught by comparing its stamp before anything is replaced.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use cairn_core::scan::{Stamp, TEMP_PREFIX};
use cairn_core::{ChunkId, Chunker, ContentId, Manifest, path as folder_path};
use tokio::sync::oneshot;

use crate::admin::ApiError;
use crate::engine::{Engine, Event};
use crate::group::no_folder;
use crate::index::Index;
use crate::scanner::{FileRead, READ_ATTEMPTS, read_file, stamp_of};
use crate::versions::VersionStore;

pub use cairn_api::history::{RestoreRequest, Restored, Version};

/// The first pruning of kept versions after the daemon starts.
pub(crate) const FIRST_PRUNE_AFTER: Duration = Duration::from_secs(60);
/// Pruning runs this often afterwards (and on `cairn history --prune`).
pub(crate) const PRUNE_EVERY: Duration = Duration::from_secs(3600);
/// Kept versions are counted again at most this often after pulls and restores.
pub(crate) const RECOUNT_EVERY: Duration = Duration::from_secs(5);

/// A restore waiting for its folder to be idle.
pub(crate) struct PendingRestore {
    request: RestoreRequest,
    reply: oneshot::Sender<Result<Restored, ApiError>>,
}

impl Engine {
    /// Prunes kept versions when due, or counts them again after pulls that may have kept
    /// some.
    pub(crate) fn versions_tick(&mut self, now: Instant) {
        if now >= self.next_version_prune {
            self.next_version_prune = now + PRUNE_EVERY;
            self.prune_versions(None);
        } else if self.recount_versions && now - self.last_version_count >= RECOUNT_EVERY {
            self.recount_versions = false;
            self.last_version_count = now;
            let (index, versions, events) = (
                self.index.clone(),
                self.versions.clone(),
                self.events_tx.clone(),
            );
            tokio::task::spawn_blocking(move || {
                let kept = index.all_history().map_or(0, |h| h.len());
                let bytes = versions.disk_bytes();
                let _ = events.send(Event::VersionsCounted { kept, bytes });
            });
        }
    }

    /// Drops the kept versions the folders' rules no longer keep, on a blocking thread;
    /// the reply (if asked for by `cairn history --prune`) comes from there.
    pub(crate) fn prune_versions(
        &mut self,
        reply: Option<oneshot::Sender<Result<crate::versions::Pruned, ApiError>>>,
    ) {
        let folders: Vec<(String, cairn_core::retention::Retention)> = self
            .local
            .iter()
            .map(|(id, l)| (id.clone(), l.config.versions.rules()))
            .collect();
        let (index, versions, events) = (
            self.index.clone(),
            self.versions.clone(),
            self.events_tx.clone(),
        );
        tokio::task::spawn_blocking(move || {
            let now_ns = SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as i64);
            let result = crate::versions::prune(&index, &versions, &folders, now_ns);
            match &result {
                Ok(p) => {
                    if p.dropped > 0 {
                        tracing::info!(
                            dropped = p.dropped,
                            kept = p.kept,
                            bytes_before = p.bytes_before,
                            bytes_after = p.bytes_after,
                            "versions_pruned"
                        );
                    }
                    let _ = events.send(Event::VersionsCounted {
                        kept: p.kept,
                        bytes: p.bytes_after,
                    });
                }
                Err(e) => tracing::warn!(error = %e, "versions_prune_failed"),
            }
            if let Some(reply) = reply {
                let _ = reply.send(result.map_err(|e| ApiError::from(e.to_string())));
            }
        });
    }

    /// Finds the folder with versions of the path and queues the restore there; it runs
    /// when the folder is idle (see [`Engine::start_restore`]).
    pub(crate) fn restore(
        &mut self,
        request: RestoreRequest,
        reply: oneshot::Sender<Result<Restored, ApiError>>,
    ) {
        // A version that only other devices hold is restored through the folder (the
        // pull fetches it); one kept here, from the version store.
        let Some(reply) = self.restore_from_group(&request, reply) else {
            return;
        };
        match self.restore_folder(&request) {
            Ok(id) => {
                if let Some(f) = self.local.get_mut(&id) {
                    f.restores.push_back(PendingRestore { request, reply });
                    self.node.queue_restore(std::time::Instant::now(), &id);
                }
            }
            Err(e) => {
                let _ = reply.send(Err(e));
            }
        }
    }

    fn restore_folder(&self, req: &RestoreRequest) -> Result<String, ApiError> {
        folder_path::validate(&req.path).map_err(|e| e.to_string())?;
        if let Some(to) = &req.to {
            folder_path::validate(to).map_err(|e| e.to_string())?;
        }
        if let Some(id) = &req.folder
            && !self.local.contains_key(id)
        {
            return Err(no_folder(id));
        }
        let mut with_versions = Vec::new();
        for id in self.local.keys() {
            if req.folder.as_ref().is_some_and(|f| f != id) {
                continue;
            }
            if !self
                .index
                .history_of(id, &req.path)
                .map_err(|e| e.to_string())?
                .is_empty()
            {
                with_versions.push(id.clone());
            }
        }
        let id = match with_versions.as_slice() {
            [one] => one.clone(),
            [] => {
                return Err(ApiError::NotFound(format!(
                    "no kept versions of {}; `cairn history` lists them",
                    req.path
                )));
            }
            _ => {
                return Err(format!(
                    "{} has versions in several folders ({}); name one with --folder",
                    req.path,
                    with_versions.join(", ")
                )
                .into());
            }
        };
        self.check_sends(&id)?;
        Ok(id)
    }

    /// Starts the first queued restore of a folder on a blocking thread (the node made
    /// the folder busy with it).
    pub(crate) fn start_restore(&mut self, id: &str) {
        let versions = self.versions.clone();
        let now = std::time::Instant::now();
        let Some(f) = self.local.get_mut(id) else {
            self.node.handle_restore_done(now, id, false);
            return;
        };
        let Some(PendingRestore { request, reply }) = f.restores.pop_front() else {
            self.node.handle_restore_done(now, id, false);
            return;
        };
        let chunker = match f.record.chunker() {
            Ok(c) => c,
            Err(e) => {
                let _ = reply.send(Err(e.to_string().into()));
                self.node.handle_restore_done(now, id, false);
                return;
            }
        };
        let job = RestoreJob {
            index: self.index.clone(),
            root: f.record.root.clone(),
            versions,
            folder: id.to_string(),
            paused: f.config.paused,
            request,
            chunker,
        };
        let events = self.events_tx.clone();
        tokio::task::spawn_blocking(move || {
            let result = job.run();
            let _ = events.send(Event::RestoreDone {
                folder: job.folder,
                changed: result.is_ok(),
            });
            let _ = reply.send(result);
        });
    }
}

fn version(
    index: &Index,
    versions: &VersionStore,
    folder: &str,
    path: String,
    kept_ns: i64,
    content: ContentId,
) -> Result<Version, String> {
    let size = index
        .content_size(&content)
        .map_err(|e| e.to_string())?
        .unwrap_or(0);
    Ok(Version {
        folder: folder.to_string(),
        path,
        kept_ns,
        available: versions.has(&content).map_err(|e| e.to_string())?,
        content: content.to_hex(),
        size,
        ..Version::default()
    })
}

/// Whether the file at a name is still the one read: same inode, size and mtime (a new
/// hard link, which the restore makes itself, changes only the ctime).
fn unchanged_since(read: &Stamp, now: &Stamp) -> bool {
    (read.inode, read.size, read.mtime_ns) == (now.inode, now.size, now.mtime_ns)
}

/// A temp file that is removed unless it was renamed into place.
struct Staged(Option<PathBuf>);

impl Drop for Staged {
    fn drop(&mut self) {
        if let Some(p) = self.0.take() {
            let _ = fs::remove_file(p);
        }
    }
}

/// The disk side of one restore.
struct RestoreJob {
    index: Arc<Index>,
    root: PathBuf,
    versions: Arc<VersionStore>,
    folder: String,
    paused: bool,
    request: RestoreRequest,
    chunker: Chunker,
}

impl RestoreJob {
    fn run(&self) -> Result<Restored, ApiError> {
        let version = self.pick()?;
        Ok(self.put_back(version)?)
    }

    /// Puts `version` back at its path (or `to`), keeping what is there first.
    fn put_back(&self, version: Version) -> Result<Restored, String> {
        let req = &self.request;
        let Version {
            content: hex, size, ..
        } = version;
        let content: ContentId = hex.parse().map_err(|_| "bad content id")?;
        let dest_rel = req.to.clone().unwrap_or_else(|| req.path.clone());
        let dest = self.root.join(&dest_rel);
        let note = self.paused.then(|| {
            format!(
                "folder {} is paused; the restore syncs when it is resumed",
                self.folder
            )
        });
        let done = |kept_current| Restored {
            folder: self.folder.clone(),
            path: dest_rel.clone(),
            content: hex.clone(),
            size,
            kept_current,
            note: note.clone(),
        };
        // Every existing ancestor inside the folder must be a real directory: restoring
        // through a symlink could write outside the folder.
        for anc in folder_path::ancestors(&dest_rel) {
            match fs::symlink_metadata(self.root.join(anc)) {
                Ok(m) if m.file_type().is_symlink() => {
                    return Err(format!(
                        "{anc} is a symlink; cairn restores only into directories"
                    ));
                }
                Ok(m) if !m.is_dir() => return Err(format!("{anc} is not a directory")),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(format!("{anc}: {e}")),
            }
        }
        // What is at the name now: nothing, or a regular file that will be kept first.
        let current = match fs::symlink_metadata(&dest) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => return Err(format!("{dest_rel}: {e}")),
            Ok(m) if m.is_file() => Some(self.read(&dest)?),
            Ok(m) if m.is_dir() => return Err(format!("{dest_rel} is a directory")),
            Ok(_) => {
                return Err(format!(
                    "{dest_rel} is a symlink or special file; move it away first"
                ));
            }
        };
        if current.as_ref().is_some_and(|(c, _, _)| *c == content) {
            return Ok(done(None));
        }
        let parent = dest.parent().ok_or("no parent directory")?;
        fs::create_dir_all(parent).map_err(|e| format!("{}: {e}", parent.display()))?;

        // Copy next to the destination under a fresh temp name the scanner ignores, and
        // check the copy is the version asked for.
        let nanos = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let tmp = parent.join(format!("{TEMP_PREFIX}restore.{}.{nanos}", &hex[..16]));
        let mut staged = Staged(None);
        let copied = (|| -> io::Result<()> {
            // Staged versions are read from their link, imported ones from the store.
            let chunks: Vec<(ChunkId, u64, usize)> = match self
                .index
                .any_manifest(&content)
                .map_err(io::Error::other)?
            {
                Some(m) => {
                    let mut at = 0u64;
                    m.chunks
                        .iter()
                        .map(|c| {
                            let chunk = (c.id, at, c.len as usize);
                            at += c.len as u64;
                            chunk
                        })
                        .collect()
                }
                None => self
                    .versions
                    .chunks_of(&content)
                    .map_err(io::Error::other)?
                    .ok_or_else(|| io::Error::other("not in the version store"))?
                    .into_iter()
                    .map(|id| (id, 0, 0))
                    .collect(),
            };
            let mut out = OpenOptions::new()
                .write(true)
                .create_new(true)
                .custom_flags(libc::O_NOFOLLOW)
                .open(&tmp)?;
            staged.0 = Some(tmp.clone());
            for (id, at, len) in &chunks {
                let bytes = self
                    .versions
                    .version_chunk(&content, id, *at, *len)
                    .map_err(io::Error::other)?;
                out.write_all(&bytes)?;
            }
            out.sync_all()
        })();
        copied.map_err(|e| {
            format!(
                "the kept copy of version {} could not be read ({e}); nothing was changed",
                &hex[..12]
            )
        })?;
        if self.read(&tmp)?.0 != content {
            return Err(format!(
                "the kept copy of version {} is damaged; nothing was changed",
                &hex[..12]
            ));
        }

        // Keep the version at the name (if the user did not change it meanwhile), then
        // rename the copy over the name.
        let unchanged = |seen: &Stamp| {
            fs::symlink_metadata(&dest).is_ok_and(|now| unchanged_since(seen, &stamp_of(&now)))
        };
        // No pruning between keeping the current version and its record (below).
        let _catalog = current.is_some().then(|| self.versions.lock_catalog());
        if let Some((cur, _, seen)) = &current {
            let changed =
                || format!("{dest_rel} changed while restoring; nothing was changed, try again");
            if !unchanged(seen) {
                return Err(changed());
            }
            // Kept before the rename unlinks the name (a staged link to the file; a
            // version kept and then not replaced costs only store space until pruned).
            if let Err(e) = self.versions.stage(cur, &dest) {
                return Err(format!(
                    "could not keep the current {dest_rel} in history, so it was left as it is: {e}"
                ));
            }
            if !unchanged(seen) {
                self.versions.unstage(cur, &dest);
                return Err(changed());
            }
        }
        if let Err(e) = fs::rename(&tmp, &dest) {
            // Not replaced: the version staged for it is not kept (no record will list it).
            if let Some((cur, _, _)) = &current {
                self.versions.unstage(cur, &dest);
            }
            return Err(format!("{dest_rel}: {e}"));
        }
        staged.0 = None;
        if let Ok(dir) = File::open(parent) {
            let _ = dir.sync_all();
        }
        let Some((cur, manifest, _)) = current else {
            return Ok(done(None));
        };
        self.index
            .add_history(&self.folder, &dest_rel, &cur, &manifest)
            .map_err(|e| {
                format!(
                    "{dest_rel} was restored, but recording the version it replaced failed \
                     (its bytes are in the version store as {}): {e}",
                    cur.to_hex()
                )
            })?;
        Ok(done(Some(cur.to_hex())))
    }

    /// The version asked for: by id prefix, or the newest whose bytes are still kept.
    fn pick(&self) -> Result<Version, ApiError> {
        let req = &self.request;
        let mut versions = Vec::new();
        for (kept_ns, content) in self
            .index
            .history_of(&self.folder, &req.path)
            .map_err(|e| e.to_string())?
            .into_iter()
            .rev()
        {
            let v = version(
                &self.index,
                &self.versions,
                &self.folder,
                req.path.clone(),
                kept_ns,
                content,
            )?;
            versions.push(v);
        }
        match &req.version {
            None => versions.into_iter().find(|v| v.available).ok_or_else(|| {
                ApiError::NotFound(format!(
                    "no kept version of {} is left in the history store",
                    req.path
                ))
            }),
            Some(prefix) => {
                let prefix = prefix.to_ascii_lowercase();
                let mut matching: Vec<Version> = versions
                    .into_iter()
                    .filter(|v| v.content.starts_with(&prefix))
                    .collect();
                matching.sort_by(|a, b| a.content.cmp(&b.content));
                matching.dedup_by(|a, b| a.content == b.content);
                match matching.as_slice() {
                    [one] if one.available => Ok(one.clone()),
                    [one] => Err(ApiError::NotFound(format!(
                        "version {} of {} is no longer in the history store",
                        &one.content[..12],
                        req.path
                    ))),
                    [] => Err(ApiError::NotFound(format!(
                        "no version of {} starts with {prefix}; `cairn history {}` lists them",
                        req.path, req.path
                    ))),
                    _ => Err(ApiError::Refused(format!(
                        "{prefix} matches several versions of {}; give more of the id",
                        req.path
                    ))),
                }
            }
        }
    }

    /// Content id, manifest and stamp of a file, read now.
    fn read(&self, path: &Path) -> Result<(ContentId, Manifest, Stamp), String> {
        for _ in 0..READ_ATTEMPTS {
            match read_file(path, &self.chunker, &mut Vec::new()) {
                Ok(FileRead::Stable {
                    content,
                    manifest,
                    stamp,
                }) => return Ok((content, manifest, stamp)),
                Ok(FileRead::ChangedWhileReading) => continue,
                Err(e) => return Err(format!("{}: {e}", path.display())),
            }
        }
        Err(format!("{} keeps changing; try again", path.display()))
    }
}
