//! Version history as people use it: listing the versions this device kept and putting one
//! back.
//!
//! A version lands in the history store (`HOME/history/<content id>`, recorded in the
//! index) when a peer's change replaces or deletes a file here. Restoring copies it back
//! into the folder as a local change, so it syncs to every device like an edit; the version
//! it replaces is kept in history first, here and (through the usual pull) on every peer.
//! Nothing is lost by a restore.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use cairn_core::scan::TEMP_PREFIX;
use cairn_core::{Chunker, ContentId, path as folder_path};
use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;

use crate::engine::{Engine, Event};
use crate::index::Index;
use crate::scanner::{FileRead, read_file};

/// One kept version.
#[derive(Clone, Debug, Serialize)]
pub struct Version {
    pub folder: String,
    pub path: String,
    /// When this device kept it, in ns since the epoch.
    pub kept_ns: i64,
    /// Its content id (hex); `cairn restore --version` takes any unique prefix.
    pub content: String,
    pub size: u64,
    /// Whether its bytes are still in the history store.
    pub available: bool,
}

/// What `cairn restore` asks for.
#[derive(Clone, Debug, Deserialize)]
pub struct RestoreRequest {
    /// Folder id; may be left out when only one folder has versions of `path`.
    pub folder: Option<String>,
    /// The folder-relative path the version was kept from.
    pub path: String,
    /// A content id or a unique prefix of one; the newest version if left out.
    pub version: Option<String>,
    /// Where to put it instead of `path` (folder-relative).
    pub to: Option<String>,
}

/// What a restore did.
#[derive(Clone, Debug, Serialize)]
pub struct Restored {
    pub folder: String,
    /// Where the version now is.
    pub path: String,
    pub content: String,
    pub size: u64,
    /// The version that was at `path` before, now kept in history; none if there was none
    /// or it was already this version.
    pub kept_current: Option<String>,
}

impl Engine {
    /// Kept versions, newest first: of one folder or all, of one path (or everything under
    /// it) or all.
    pub(crate) fn history(
        &self,
        folder: Option<&str>,
        path: Option<&str>,
    ) -> Result<Vec<Version>, String> {
        if let Some(id) = folder
            && !self.folders.contains_key(id)
        {
            return Err(format!("no folder {id}; `cairn folders` lists them"));
        }
        let history_dir = self.home.history();
        let mut out = Vec::new();
        for id in self.folders.keys() {
            if folder.is_some_and(|f| f != id) {
                continue;
            }
            for (p, kept_ns, content) in self.index.history(id).map_err(|e| e.to_string())? {
                if path.is_some_and(|want| !is_at_or_under(&p, want)) {
                    continue;
                }
                let size = self
                    .index
                    .any_manifest(&content)
                    .map_err(|e| e.to_string())?
                    .map_or(0, |m| m.size());
                out.push(Version {
                    folder: id.clone(),
                    path: p,
                    kept_ns,
                    content: content.to_hex(),
                    size,
                    available: history_dir.join(content.to_hex()).is_file(),
                });
            }
        }
        out.sort_by(|a, b| b.kept_ns.cmp(&a.kept_ns).then(a.path.cmp(&b.path)));
        Ok(out)
    }

    /// Picks the version, then copies it back on a blocking thread; the reply comes from
    /// there, and the folder is rescanned so the restore syncs.
    pub(crate) fn restore(
        &mut self,
        req: RestoreRequest,
        reply: oneshot::Sender<Result<Restored, String>>,
    ) {
        let picked = self.pick_version(&req);
        let (version, root, chunker) = match picked {
            Ok(p) => p,
            Err(e) => {
                let _ = reply.send(Err(e));
                return;
            }
        };
        let dest = req.to.unwrap_or_else(|| version.path.clone());
        let job = RestoreJob {
            index: self.index.clone(),
            root,
            history_dir: self.home.history(),
            folder: version.folder.clone(),
            dest,
            content: version.content.clone(),
            size: version.size,
            chunker,
        };
        let events = self.events_tx.clone();
        tokio::task::spawn_blocking(move || {
            let result = job.run();
            if result.is_ok() {
                let _ = events.send(Event::FsChanged { folder: job.folder });
            }
            let _ = reply.send(result);
        });
    }

    fn pick_version(&self, req: &RestoreRequest) -> Result<(Version, PathBuf, Chunker), String> {
        folder_path::validate(&req.path).map_err(|e| format!("{}: {e}", req.path))?;
        let versions: Vec<Version> = self
            .history(req.folder.as_deref(), None)?
            .into_iter()
            .filter(|v| v.path == req.path)
            .collect();
        let folders: std::collections::BTreeSet<&str> =
            versions.iter().map(|v| v.folder.as_str()).collect();
        if folders.len() > 1 {
            return Err(format!(
                "{} has versions in several folders ({}); name one with --folder",
                req.path,
                folders.into_iter().collect::<Vec<_>>().join(", ")
            ));
        }
        let matching: Vec<&Version> = match &req.version {
            None => versions.first().into_iter().collect(),
            Some(prefix) => {
                let prefix = prefix.to_ascii_lowercase();
                let mut seen = std::collections::BTreeSet::new();
                versions
                    .iter()
                    .filter(|v| v.content.starts_with(&prefix) && seen.insert(&v.content))
                    .collect()
            }
        };
        let version = match matching.as_slice() {
            [one] => (*one).clone(),
            [] if versions.is_empty() => {
                return Err(format!(
                    "no kept versions of {}; `cairn history` lists them",
                    req.path
                ));
            }
            [] => {
                return Err(format!(
                    "no version of {} starts with {}; `cairn history {}` lists them",
                    req.path,
                    req.version.as_deref().unwrap_or(""),
                    req.path
                ));
            }
            _ => {
                return Err(format!(
                    "{} matches several versions of {}; give more of the id",
                    req.version.as_deref().unwrap_or(""),
                    req.path
                ));
            }
        };
        if !version.available {
            return Err(format!(
                "version {} of {} is no longer in the history store",
                &version.content[..12],
                req.path
            ));
        }
        let folder = self.folders.get(&version.folder).ok_or("folder vanished")?;
        let chunker = folder
            .record
            .chunker_params()
            .map_err(|e| e.to_string())
            .and_then(|p| Chunker::new(p).map_err(|e| e.to_string()))?;
        Ok((version, folder.record.root.clone(), chunker))
    }
}

/// `p` is `dir` or lies under it.
fn is_at_or_under(p: &str, dir: &str) -> bool {
    let dir = dir.trim_end_matches('/');
    p == dir
        || p.strip_prefix(dir)
            .is_some_and(|rest| rest.starts_with('/'))
}

/// The disk side of one restore.
struct RestoreJob {
    index: std::sync::Arc<Index>,
    root: PathBuf,
    history_dir: PathBuf,
    folder: String,
    dest: String,
    content: String,
    size: u64,
    chunker: Chunker,
}

impl RestoreJob {
    fn run(&self) -> Result<Restored, String> {
        folder_path::validate(&self.dest).map_err(|e| format!("{}: {e}", self.dest))?;
        let content: ContentId = self.content.parse().map_err(|_| "bad content id")?;
        let dest = self.root.join(&self.dest);
        // Every existing ancestor inside the folder must be a real directory: restoring
        // through a symlink could write outside the folder.
        for anc in folder_path::ancestors(&self.dest) {
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
        let current = match fs::symlink_metadata(&dest) {
            Ok(m) if m.is_dir() => return Err(format!("{} is a directory", self.dest)),
            Ok(m) if m.is_file() => Some(self.read(&dest)?),
            Ok(_) | Err(_) => None,
        };
        if current.as_ref().is_some_and(|(c, _)| *c == content) {
            return Ok(self.done(None));
        }
        let parent = dest.parent().ok_or("no parent directory")?;
        fs::create_dir_all(parent).map_err(|e| format!("{}: {e}", parent.display()))?;

        // Copy next to the destination under a temp name the scanner ignores, check the
        // copy is the version asked for, then rename it over the name.
        let src = self.history_dir.join(&self.content);
        let tmp = parent.join(format!("{TEMP_PREFIX}restore.{}", &self.content[..16]));
        let staged = fs::copy(&src, &tmp)
            .and_then(|_| fs::File::open(&tmp)?.sync_all())
            .map_err(|e| {
                format!(
                    "copying version {} out of history: {e}",
                    &self.content[..12]
                )
            })
            .and_then(|()| self.read(&tmp));
        match staged {
            Ok((c, _)) if c == content => {}
            Ok(_) => {
                let _ = fs::remove_file(&tmp);
                return Err(format!(
                    "the kept copy of version {} is damaged; nothing was changed",
                    &self.content[..12]
                ));
            }
            Err(e) => {
                let _ = fs::remove_file(&tmp);
                return Err(e);
            }
        }
        let kept_current = match current {
            Some((cur, manifest)) => match self.keep(&dest, &cur, &manifest) {
                Ok(()) => Some(cur.to_hex()),
                Err(e) => {
                    let _ = fs::remove_file(&tmp);
                    return Err(format!(
                        "could not keep the current {} in history, so it was left as it is: {e}",
                        self.dest
                    ));
                }
            },
            None => None,
        };
        fs::rename(&tmp, &dest).map_err(|e| {
            let _ = fs::remove_file(&tmp);
            format!("{}: {e}", self.dest)
        })?;
        if let Ok(dir) = fs::File::open(parent) {
            let _ = dir.sync_all();
        }
        Ok(self.done(kept_current))
    }

    /// Content id and manifest of a file, read now.
    fn read(&self, path: &Path) -> Result<(ContentId, cairn_core::Manifest), String> {
        for _ in 0..3 {
            match read_file(path, &self.chunker, &mut Vec::new()) {
                Ok(FileRead::Stable {
                    content, manifest, ..
                }) => return Ok((content, manifest)),
                Ok(FileRead::ChangedWhileReading) => continue,
                Err(e) => return Err(format!("{}: {e}", path.display())),
            }
        }
        Err(format!("{} keeps changing; try again", path.display()))
    }

    /// Puts the version now at `dest` into the history store and records it.
    fn keep(
        &self,
        dest: &Path,
        content: &ContentId,
        manifest: &cairn_core::Manifest,
    ) -> io::Result<()> {
        fs::create_dir_all(&self.history_dir)?;
        let kept = self.history_dir.join(content.to_hex());
        if !kept.exists() {
            // The rename that follows unlinks the name, not the inode: a hard link keeps it.
            if fs::hard_link(dest, &kept).is_err() {
                let tmp = self
                    .history_dir
                    .join(format!("{TEMP_PREFIX}{}", content.to_hex()));
                fs::copy(dest, &tmp)?;
                fs::rename(&tmp, &kept)?;
            }
        }
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as i64);
        self.index
            .add_history(&self.folder, &self.dest, now, content, manifest)
            .map_err(io::Error::other)
    }

    fn done(&self, kept_current: Option<String>) -> Restored {
        Restored {
            folder: self.folder.clone(),
            path: self.dest.clone(),
            content: self.content.clone(),
            size: self.size,
            kept_current,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::is_at_or_under;

    #[test]
    fn paths_at_or_under_a_directory() {
        assert!(is_at_or_under("docs/a.txt", "docs"));
        assert!(is_at_or_under("docs/a.txt", "docs/"));
        assert!(is_at_or_under("docs", "docs"));
        assert!(!is_at_or_under("docsx/a.txt", "docs"));
        assert!(!is_at_or_under("a.txt", "docs"));
    }
}
