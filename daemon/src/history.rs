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
use std::time::{Duration, SystemTime};

use cairn_core::scan::{Stamp, TEMP_PREFIX};
use cairn_core::{
    ChunkId, ChunkRef, Chunker, ContentId, ContentIdBuilder, Manifest, path as folder_path,
};
use tokio::sync::oneshot;

use crate::index::Index;
use crate::scanner::{FileRead, READ_ATTEMPTS, read_file, stamp_of};
use crate::versions::VersionStore;
use cairn_api::error::ApiError;

pub use cairn_api::history::{RestoreRequest, Restored, Version};

/// The first pruning of kept versions after the daemon starts.
pub(crate) const FIRST_PRUNE_AFTER: Duration = Duration::from_secs(60);
/// Pruning runs this often afterwards (and on `cairn history --prune`).
pub(crate) const PRUNE_EVERY: Duration = Duration::from_secs(3600);
/// Kept versions are counted again at most this often after pulls and restores.
pub(crate) const RECOUNT_EVERY: Duration = Duration::from_secs(5);

/// A restore waiting for its folder to be idle.
pub(crate) struct PendingRestore {
    pub(crate) request: RestoreRequest,
    pub(crate) reply: oneshot::Sender<Result<Restored, ApiError>>,
}

pub(crate) fn version(
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
pub(crate) fn unchanged_since(read: &Stamp, now: &Stamp) -> bool {
    (read.inode, read.size, read.mtime_ns) == (now.inode, now.size, now.mtime_ns)
}

/// A temp file that is removed unless it was renamed into place.
pub(crate) struct Staged(Option<PathBuf>);

impl Drop for Staged {
    fn drop(&mut self) {
        if let Some(p) = self.0.take() {
            let _ = fs::remove_file(p);
        }
    }
}

/// The disk side of one restore.
pub(crate) struct RestoreJob {
    pub(crate) index: Arc<Index>,
    pub(crate) root: PathBuf,
    pub(crate) versions: Arc<VersionStore>,
    pub(crate) folder: String,
    pub(crate) paused: bool,
    pub(crate) request: RestoreRequest,
    pub(crate) chunker: Chunker,
}

impl RestoreJob {
    pub(crate) fn run(&self) -> Result<Restored, ApiError> {
        let version = self.pick()?;
        Ok(self.put_back(version)?)
    }

    /// Puts `version` back at its path (or `to`), keeping what is there first.
    pub(crate) fn put_back(&self, version: Version) -> Result<Restored, String> {
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
        // check the copy is the version asked for: every chunk is checked against its id
        // as it is read, and the content id is rebuilt from those chunks, so a wrong chunk
        // list is caught without reading the copy back (as the puller writes a file).
        let nanos = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let tmp = parent.join(format!("{TEMP_PREFIX}restore.{}.{nanos}", &hex[..16]));
        let mut staged = Staged(None);
        let mut copy_id = ContentIdBuilder::default();
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
                let len = u32::try_from(bytes.len()).map_err(io::Error::other)?;
                copy_id.push(&ChunkRef { id: *id, len });
            }
            out.sync_all()
        })();
        copied.map_err(|e| {
            format!(
                "the kept copy of version {} could not be read ({e}); nothing was changed",
                &hex[..12]
            )
        })?;
        if copy_id.finish() != content {
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
    pub(crate) fn pick(&self) -> Result<Version, ApiError> {
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
    pub(crate) fn read(&self, path: &Path) -> Result<(ContentId, Manifest, Stamp), String> {
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
