//! The engine's side of `crate::admin`: sharing, accepting and declining folders,
//! pause and resume, conflicts and their resolution, as the loop carries them out.

use crate::admin::*;
use crate::config::{DeclinedOffer, FolderConfig, FolderType};
use cairn_core::folder::tree::{ConflictCopyName, winner};
use cairn_core::folder::{DeviceId, EntryValue};
use libp2p::PeerId;
use std::path::PathBuf;
use std::time::Instant;

use super::{Engine, load_folder};

impl Engine {
    /// Handles one admin request.
    pub(crate) fn on_admin(&mut self, req: AdminRequest) {
        match req {
            AdminRequest::Share {
                folder,
                device,
                kind,
                reply,
            } => {
                let _ = reply.send(self.share(&folder, device.as_deref(), kind));
            }
            AdminRequest::Accept {
                folder,
                path,
                kind,
                reply,
            } => {
                let _ = reply.send(self.accept(&folder, path, kind));
            }
            AdminRequest::Decline { folder, reply } => {
                let _ = reply.send(self.decline(&folder));
            }
            AdminRequest::Pause {
                folder,
                paused,
                reply,
            } => {
                let _ = reply.send(self.pause(folder.as_deref(), paused));
            }
            AdminRequest::Conflicts(reply) => {
                let _ = reply.send(self.conflicts());
            }
            AdminRequest::Resolve { path, keep, reply } => {
                let _ = reply.send(self.resolve(&path, keep));
            }
            AdminRequest::History { query, reply } => self.history(query, reply),
            AdminRequest::Rewind { request, reply } => self.rewind(request, reply),
            AdminRequest::Restore { request, reply } => self.restore(request, reply),
            AdminRequest::Prune { reply } => self.prune_versions(Some(reply)),
        }
    }

    pub(crate) fn save_config(&mut self) -> Result<(), String> {
        self.config
            .save(&self.config_path)
            .map_err(|e| e.to_string())
    }

    /// A trusted peer named by id or name.
    pub(crate) fn find_peer(&self, device: &str) -> Result<PeerId, ApiError> {
        let found: Vec<PeerId> = self
            .node
            .peers()
            .iter()
            .filter(|(id, p)| id.to_string() == device || p.name == device)
            .map(|(id, _)| *id)
            .collect();
        match found.as_slice() {
            [one] => Ok(*one),
            [] => Err(ApiError::NotFound(format!(
                "no paired device is called {device:?}; `cairn peers` lists them"
            ))),
            _ => Err(ApiError::Refused(format!(
                "several devices are called {device:?}; use the device id"
            ))),
        }
    }

    /// The folder named by id or by (absolute) path.
    fn find_folder(&self, folder: &str) -> Option<String> {
        if self.local.contains_key(folder) {
            return Some(folder.to_string());
        }
        let path = std::path::Path::new(folder).canonicalize().ok()?;
        self.local
            .values()
            .find(|f| f.record.root == path)
            .map(|f| f.config.id.clone())
    }

    /// This device's folders that a folder at `path` would overlap: the same directory,
    /// one inside it, or one it is inside.
    fn overlapping(&self, path: &std::path::Path) -> Vec<(String, Overlap)> {
        let path = path.canonicalize().unwrap_or_else(|_| path.to_path_buf());
        self.local
            .values()
            .filter_map(|f| {
                let root = &f.record.root;
                let how = if *root == path {
                    Overlap::Same
                } else if root.starts_with(&path) {
                    Overlap::Contains
                } else if path.starts_with(root) {
                    Overlap::Inside
                } else {
                    return None;
                };
                Some((f.config.id.clone(), how))
            })
            .collect()
    }

    /// Refuses a new folder at `path` that overlaps one of this device's folders.
    fn refuse_overlap(&self, path: &std::path::Path) -> Result<(), String> {
        match self.overlapping(path).first() {
            None => Ok(()),
            Some((id, how)) => Err(format!(
                "{} {} folder {id} ({}); a directory can be in one folder only",
                path.display(),
                how.describe(),
                self.local[id].record.root.display()
            )),
        }
    }

    /// Retires a folder of this device: it stops syncing and the index forgets it (its
    /// files stay where they are, its kept versions in history).
    fn retire_folder(&mut self, id: &str) -> Result<(), String> {
        self.local.remove(id);
        self.node.remove_folder(id);
        self.config.folders.retain(|c| c.id != id);
        self.index.remove_folder(id).map_err(|e| e.to_string())?;
        tracing::info!(folder = id, "folder_retired");
        Ok(())
    }

    fn add_folder(&mut self, fc: FolderConfig) -> Result<(), String> {
        let (local, spec, doc) = load_folder(&self.index, &fc, self.device, &self.events_tx)
            .map_err(|e| e.to_string())?;
        self.node.add_folder(Instant::now(), spec, doc);
        self.local.insert(fc.id.clone(), local);
        self.config.folders.push(fc);
        self.save_config()
    }

    fn share(
        &mut self,
        folder: &str,
        device: Option<&str>,
        kind: Option<FolderType>,
    ) -> Result<String, ApiError> {
        let peer = device.map(|d| self.find_peer(d)).transpose()?;
        let id = match self.find_folder(folder) {
            Some(id) => id,
            None => {
                let path = std::path::Path::new(folder);
                if !path.is_absolute() || !path.is_dir() {
                    return Err(ApiError::NotFound(format!(
                        "{folder} is neither a folder id nor an existing absolute directory"
                    )));
                }
                self.refuse_overlap(path)?;
                let base: String = path
                    .file_name()
                    .map(|n| {
                        n.to_string_lossy()
                            .chars()
                            .filter(|c| c.is_ascii_alphanumeric() || *c == '-')
                            .collect()
                    })
                    .unwrap_or_default();
                let mut suffix = [0u8; 3];
                rand::Rng::fill(&mut rand::rng(), &mut suffix);
                let id = format!(
                    "{}-{:02x}{:02x}{:02x}",
                    if base.is_empty() { "folder" } else { &base },
                    suffix[0],
                    suffix[1],
                    suffix[2]
                );
                self.add_folder(FolderConfig {
                    id: id.clone(),
                    path: path.to_path_buf(),
                    peers: vec![],
                    kind: kind.unwrap_or_default(),
                    rescan_interval_s: 3600,
                    paused: false,
                    versions: Default::default(),
                })?;
                id
            }
        };
        let peer_s = peer.map(|p| p.to_string());
        if let Some(f) = self.local.get_mut(&id) {
            if let Some(p) = &peer_s
                && !f.config.peers.contains(p)
            {
                f.config.peers.push(p.clone());
            }
            if let Some(k) = kind {
                f.config.kind = k;
            }
            let fc = f.config.clone();
            let members = fc.peers.iter().filter_map(|p| p.parse().ok()).collect();
            if let Some(c) = self.config.folders.iter_mut().find(|c| c.id == id) {
                *c = fc;
            }
            let now = Instant::now();
            if let Some(k) = kind {
                self.node.set_kind(now, &id, crate::config::node_kind(k));
            }
            self.node.set_members(now, &id, members);
        }
        self.save_config()?;
        Ok(id)
    }

    /// Accepts an offer into `path`. A folder of this device at that path (or inside it)
    /// that no other device shares is joined: it is retired and its files merge into the
    /// accepted folder as local changes (a file that differs becomes a conflict copy).
    /// Returns the retired folders' ids.
    fn accept(
        &mut self,
        folder: &str,
        path: PathBuf,
        kind: Option<FolderType>,
    ) -> Result<Vec<String>, ApiError> {
        // A declined offer can still be accepted: the decline is undone.
        let declined = self
            .config
            .declined
            .iter()
            .rev()
            .find(|d| d.folder == folder)
            .and_then(|d| {
                let peer = d.device.parse::<PeerId>().ok()?;
                self.node.peers().contains_key(&peer).then_some(peer)
            });
        let offered = self
            .node
            .offers()
            .find(|o| o.folder == folder)
            .map(|o| o.from);
        let Some(from) = offered.or(declined) else {
            return Err(no_offer(folder));
        };
        if self.local.contains_key(folder) {
            return Err(format!("folder {folder} is already here").into());
        }
        if !path.is_absolute() {
            return Err(format!("{} must be an absolute path", path.display()).into());
        }
        let overlaps = self.overlapping(&path);
        for (id, how) in &overlaps {
            let shared = &self.local[id].config.peers;
            if *how == Overlap::Inside || !shared.is_empty() {
                let with = match shared.len() {
                    0 => String::new(),
                    n => format!(", shared with {n} device(s)"),
                };
                return Err(ApiError::Refused(format!(
                    "{} {} folder {id} ({}{with}); accept into another path",
                    path.display(),
                    how.describe(),
                    self.local[id].record.root.display()
                )));
            }
        }
        let joined: Vec<String> = overlaps.into_iter().map(|(id, _)| id).collect();
        for id in &joined {
            self.retire_folder(id)?;
        }
        self.add_folder(FolderConfig {
            id: folder.to_string(),
            path,
            peers: vec![from.to_string()],
            kind: kind.unwrap_or_default(),
            rescan_interval_s: 3600,
            paused: false,
            versions: Default::default(),
        })?;
        self.node.take_offer(folder);
        self.node.undecline(folder);
        if self.config.declined.iter().any(|d| d.folder == folder) {
            self.config.declined.retain(|d| d.folder != folder);
            self.save_config()?;
        }
        if !joined.is_empty() {
            tracing::info!(folder, joined = ?joined, "folder_joined_existing");
        }
        Ok(joined)
    }

    /// Declines an offer: it goes, and the device's later offers of the folder are not
    /// shown again (remembered in `config.toml`; `cairn accept` still takes it).
    fn decline(&mut self, folder: &str) -> Result<(), ApiError> {
        let Some(offer) = self.node.take_offer(folder) else {
            return Err(no_offer(folder));
        };
        self.node.decline(folder, offer.from);
        self.config.declined.retain(|d| d.folder != folder);
        self.config.declined.push(DeclinedOffer {
            folder: folder.to_string(),
            device: offer.from.to_string(),
        });
        let over = self.config.declined.len().saturating_sub(MAX_DECLINED);
        self.config.declined.drain(..over);
        tracing::info!(folder, peer = %offer.from, "folder_offer_declined");
        Ok(self.save_config()?)
    }

    fn pause(&mut self, folder: Option<&str>, paused: bool) -> Result<(), ApiError> {
        let ids: Vec<String> = match folder {
            Some(f) => vec![self.find_folder(f).ok_or_else(|| {
                ApiError::NotFound(format!("no folder {f:?}; `cairn folders` lists them"))
            })?],
            None => self.local.keys().cloned().collect(),
        };
        let now = Instant::now();
        for id in &ids {
            if let Some(f) = self.local.get_mut(id) {
                f.config.paused = paused;
            }
            if let Some(c) = self.config.folders.iter_mut().find(|c| &c.id == id) {
                c.paused = paused;
            }
            self.node.set_paused(now, id, paused);
        }
        self.save_config()?;
        Ok(())
    }

    /// A device's name for people: this device, a paired peer, or its short id.
    pub(crate) fn device_label(&self, device: DeviceId) -> String {
        self.node.device_label(device)
    }

    fn value_at(&self, folder: &str, path: &str) -> Option<EntryValue> {
        let f = self.node.folder(folder)?;
        winner(&f.doc.values(path)).cloned()
    }

    /// Whether the disk (as the index last recorded it) holds `value` at `path`: the
    /// pull that carries out a planned change has finished there.
    fn on_disk(&self, folder: &str, path: &str, value: Option<&EntryValue>) -> bool {
        let recorded = self.index.entry(folder, path).ok().flatten();
        match (value, recorded) {
            (None, None) => true,
            (Some(v), None) => v.deleted,
            (Some(v), Some(e)) => !v.deleted && e.kind == v.kind && e.content == v.content,
            (None, Some(_)) => false,
        }
    }

    fn conflicts(&self) -> Vec<Conflict> {
        let mut out = Vec::new();
        // The node keeps each folder's conflict copies up to date (the tree of its last
        // pull), so no folder is decoded per call, however often the tray asks; only the
        // two entries of each conflict are looked up.
        for (id, f) in self.node.folders() {
            let copies = f
                .conflicts
                .iter()
                .filter_map(|p| Some((p, ConflictCopyName::parse(p)?)));
            for (copy, name) in copies {
                let original = name.original;
                let copy_value = self.value_at(id, copy);
                let orig_value = self.value_at(id, &original);
                // A conflict is listed once the pull has put both sides on the disk:
                // resolving it earlier would act on files the pull is about to replace
                // (and the pull would then keep its write as yet another conflict copy).
                if !self.on_disk(id, copy, copy_value.as_ref())
                    || !self.on_disk(id, &original, orig_value.as_ref())
                {
                    continue;
                }
                out.push(Conflict {
                    folder: id.clone(),
                    copy: copy.clone(),
                    original,
                    copy_device: copy_value
                        .as_ref()
                        .map(|v| self.device_label(v.device))
                        .unwrap_or_default(),
                    copy_mtime_ns: copy_value.as_ref().map_or(0, |v| v.mtime_ns),
                    original_device: orig_value.as_ref().map(|v| self.device_label(v.device)),
                    original_mtime_ns: orig_value.map(|v| v.mtime_ns),
                });
            }
        }
        out
    }

    fn resolve(&mut self, path: &str, keep: Keep) -> Result<String, ApiError> {
        let all = self.conflicts();
        let matching: Vec<&Conflict> = all
            .iter()
            .filter(|c| c.copy == path || c.original == path)
            .collect();
        let c = match matching.as_slice() {
            [one] => *one,
            [] => {
                return Err(ApiError::NotFound(format!(
                    "{path} is not in conflict; `cairn conflicts` lists conflicts"
                )));
            }
            _ => {
                return Err(ApiError::Refused(format!(
                    "{path} has several conflict copies; name the copy to resolve"
                )));
            }
        };
        let root = self
            .local
            .get(&c.folder)
            .map(|f| f.record.root.clone())
            .ok_or("folder vanished")?;
        let (copy, original) = (root.join(&c.copy), root.join(&c.original));
        let what = match keep {
            Keep::Local => {
                std::fs::remove_file(&copy).map_err(|e| format!("{}: {e}", copy.display()))?;
                format!("kept {}, removed {}", c.original, c.copy)
            }
            Keep::Remote => {
                std::fs::rename(&copy, &original)
                    .map_err(|e| format!("{}: {e}", copy.display()))?;
                format!("{} now has the version from {}", c.original, c.copy_device)
            }
            Keep::Both => {
                let renamed = ConflictCopyName::parse(&c.copy)
                    .map_or_else(|| format!("{} (kept)", c.copy), |n| n.kept_name());
                std::fs::rename(&copy, root.join(&renamed))
                    .map_err(|e| format!("{}: {e}", copy.display()))?;
                format!("kept both: {} and {renamed}", c.original)
            }
        };
        self.node.rescan(Instant::now(), Some(&c.folder));
        Ok(what)
    }
}
