//! The engine's side of `crate::group`: the group's history (versions every device
//! knows of, who holds them) and restores and rewinds through the folder.

use crate::admin::ApiError;
use crate::config::FolderType;
use crate::group::*;
use cairn_api::history::{
    HistoryQuery, RestoreRequest, Restored, RewindRequest, RewindStep, Rewound, Version,
};
use cairn_core::folder::LocalChange;
use cairn_core::rewind;
use cairn_core::scan::EntryKind;
use cairn_core::{ContentId, path as folder_path};
use tokio::sync::oneshot;

use super::{Engine, Event};

impl Engine {
    /// This device's folders, or only `folder` when one is named (none if it is not one of
    /// them).
    pub(crate) fn folders_named(&self, folder: Option<&str>) -> Vec<String> {
        self.local
            .keys()
            .filter(|id| folder.is_none_or(|f| f == id.as_str()))
            .cloned()
            .collect()
    }

    /// The members of a folder with their names and whether they are connected.
    fn members(&self, id: &str) -> Vec<Member> {
        let Some(f) = self.node.folder(id) else {
            return Vec::new();
        };
        f.spec
            .members
            .iter()
            .filter_map(|p| {
                let peer = self.node.peers().get(p)?;
                Some(Member {
                    peer: *p,
                    name: peer.name.clone(),
                    online: self.node.is_connected(p),
                })
            })
            .collect()
    }

    /// `GET /v1/history`: the group's versions (see the module's comment), newest first.
    /// The documents are read on the loop; kept lists are asked for and holders looked
    /// up on a blocking thread, which replies.
    pub(crate) fn history(
        &mut self,
        query: HistoryQuery,
        reply: oneshot::Sender<Result<Vec<Version>, ApiError>>,
    ) {
        if let Some(id) = &query.folder
            && !self.local.contains_key(id)
        {
            let _ = reply.send(Err(no_folder(id)));
            return;
        }
        if let Some(p) = &query.path
            && let Err(e) = folder_path::validate(p.trim_end_matches('/'))
        {
            let _ = reply.send(Err(ApiError::BadRequest(e.to_string())));
            return;
        }
        let ids = self.folders_named(query.folder.as_deref());
        let path: Option<String> = query
            .path
            .as_deref()
            .map(|p| p.trim_end_matches('/').to_string());
        // One file's versions are read from its shard on the loop (under a millisecond);
        // anything wider reads every shard's change log (0.43 s per 200,000 files), so
        // it is read from a copy of the document loaded from the index, off the loop.
        let labels = self.labels();
        let mut folders: Vec<FolderHistory> = Vec::new();
        let mut wide: Vec<(FolderHistory, cairn_core::folder::DeviceId)> = Vec::new();
        for id in &ids {
            let one_file = path
                .as_deref()
                .is_some_and(|p| self.node.folder(id).is_some_and(|f| is_file(&f.doc, p)));
            let f = FolderHistory {
                id: id.clone(),
                members: self.members(id),
                paths: Vec::new(),
            };
            if one_file {
                let paths = self.past_versions(id, path.as_deref(), query.deleted, true);
                folders.push(FolderHistory { paths, ..f });
            } else {
                wide.push((f, self.node.device()));
            }
        }
        let (index, net) = (self.index.clone(), self.net_tx.clone());
        tokio::task::spawn_blocking(move || {
            let mut out = Vec::new();
            for (mut f, device) in wide {
                let doc = index
                    .folder_shards(&f.id)
                    .ok()
                    .flatten()
                    .and_then(|saved| cairn_core::folder::FolderDoc::load(device, &saved).ok());
                if let Some(mut doc) = doc {
                    f.paths =
                        past_versions_of(&mut doc, &labels, path.as_deref(), query.deleted, false);
                }
                folders.push(f);
            }
            for f in folders {
                refresh_kept(&net, &index, &f.id, &f.members);
                match list_folder(&index, &f, path.as_deref(), query.deleted) {
                    Ok(rows) => out.extend(rows),
                    Err(e) => {
                        let _ = reply.send(Err(ApiError::Internal(e)));
                        return;
                    }
                }
            }
            out.sort_by(|a, b| {
                b.kept_ns
                    .cmp(&a.kept_ns)
                    .then(a.path.cmp(&b.path))
                    .then(a.content.cmp(&b.content))
            });
            let _ = reply.send(Ok(out));
        });
    }

    /// Who made a version, by device: names as people see them.
    fn labels(&self) -> Labels {
        Labels {
            me: self.node.device(),
            my_name: self.node.device_label(self.node.device()),
            peers: self
                .node
                .peers()
                .values()
                .map(|p| (p.device, p.name.clone()))
                .collect(),
        }
    }

    /// [`past_versions_of`] this device's document of folder `id`, on the loop.
    fn past_versions(
        &mut self,
        id: &str,
        path: Option<&str>,
        only_deleted: bool,
        exact: bool,
    ) -> Vec<PathHistory> {
        let labels = self.labels();
        match self.node.folder_mut(id) {
            Some(f) => past_versions_of(&mut f.doc, &labels, path, only_deleted, exact),
            None => Vec::new(),
        }
    }

    /// A restore of a version this device does not keep: recorded as a local change once
    /// a connected device (or this one) is known to hold it. None when the version is
    /// kept here (the caller restores it from the version store).
    pub(crate) fn restore_from_group(
        &mut self,
        request: &RestoreRequest,
        reply: oneshot::Sender<Result<Restored, ApiError>>,
    ) -> Option<oneshot::Sender<Result<Restored, ApiError>>> {
        let path = request.path.clone();
        let ids = self.folders_named(request.folder.as_deref());
        let mut found = Vec::new();
        for id in ids {
            let versions = self.past_versions(&id, Some(&path), false, true);
            if let Some(h) = versions.into_iter().find(|h| h.path == path) {
                found.push((id, h.versions, h.current));
            }
        }
        let (id, list, current) = match found.len() {
            0 => return Some(reply),
            1 => found.remove(0),
            _ => {
                let names: Vec<_> = found.iter().map(|(id, ..)| id.as_str()).collect();
                let _ = reply.send(Err(ApiError::Refused(format!(
                    "{path} has versions in several folders ({}); name one with --folder",
                    names.join(", ")
                ))));
                return None;
            }
        };
        // The version asked for: by id prefix, or the newest that is not current.
        let candidates: Vec<&PastVersion> = list
            .iter()
            .rev()
            .filter(|v| Some(v.content) != current)
            .collect();
        let chosen = match &request.version {
            None => candidates.first().copied(),
            Some(prefix) => {
                let prefix = prefix.to_ascii_lowercase();
                let matching: Vec<&PastVersion> = list
                    .iter()
                    .filter(|v| v.content.to_hex().starts_with(&prefix))
                    .collect();
                match matching.as_slice() {
                    [one] => Some(*one),
                    [] => None,
                    _ => {
                        let _ = reply.send(Err(ApiError::Refused(format!(
                            "{prefix} matches several versions of {path}; give more of the id"
                        ))));
                        return None;
                    }
                }
            }
        };
        let Some(version) = chosen else {
            return Some(reply); // the local restore says what is wrong
        };
        // Kept here: the version store restores it (and `--to` works).
        if self
            .index
            .history_of(&id, &path)
            .is_ok_and(|rows| rows.iter().any(|(_, c)| *c == version.content))
        {
            return Some(reply);
        }
        if Some(version.content) == current {
            let _ = reply.send(Ok(Restored {
                folder: id,
                path,
                content: version.content.to_hex(),
                size: version.value.size,
                kept_current: None,
                note: Some("that version is already the current one".into()),
            }));
            return None;
        }
        if request.to.is_some() {
            let _ = reply.send(Err(ApiError::Refused(format!(
                "--to works for versions this device keeps; version {} of {path} is held by \
                 other devices: restore it in place (the current version is kept in history)",
                &version.content.to_hex()[..12]
            ))));
            return None;
        }
        if let Err(e) = self.check_sends(&id) {
            let _ = reply.send(Err(e));
            return None;
        }
        let value = &version.value;
        let change = (
            path.clone(),
            LocalChange::Present {
                kind: EntryKind::File,
                content: value.content,
                size: value.size,
                mtime_ns: value.mtime_ns,
                mode: value.mode,
                link_target: None,
            },
            current,
        );
        let members = self.members(&id);
        let max_chunk = match self.max_chunk(&id) {
            Ok(m) => m,
            Err(e) => {
                let _ = reply.send(Err(e));
                return None;
            }
        };
        let (index, net, events) = (
            self.index.clone(),
            self.net_tx.clone(),
            self.events_tx.clone(),
        );
        let (content, size) = (version.content, version.value.size);
        tokio::task::spawn_blocking(move || {
            refresh_kept(&net, &index, &id, &members);
            let found = sources_of(&net, &index, &id, &members, max_chunk, &[content]);
            let from = match found.get(&content).cloned().unwrap_or(Err(String::new())) {
                Ok(from) => from,
                Err(e) => {
                    let _ = reply.send(Err(ApiError::Refused(format!("{path}: {e}"))));
                    return;
                }
            };
            let folder = id.clone();
            let done = Box::new(move |recorded: bool| {
                let _ = reply.send(if recorded {
                    Ok(Restored {
                        folder: id.clone(),
                        path,
                        content: content.to_hex(),
                        size,
                        kept_current: current.map(|c| c.to_hex()),
                        note: Some(format!(
                            "fetching it from {from}; it syncs to every device, and the \
                             version it replaces is kept in history"
                        )),
                    })
                } else {
                    Err(ApiError::Refused(format!(
                        "folder {id} only receives here or was removed; nothing was restored"
                    )))
                });
            });
            let _ = events.send(Event::Requested {
                folder,
                changes: vec![change],
                done,
            });
        });
        None
    }

    /// `POST /v1/rewind`: the folder (or `under`) back to how it was at `at_ns` (see the
    /// module's comment). The steps are planned and holders checked on a blocking thread;
    /// the changes are recorded back on the loop.
    pub(crate) fn rewind(
        &mut self,
        request: RewindRequest,
        reply: oneshot::Sender<Result<Rewound, ApiError>>,
    ) {
        let id = request.folder.clone();
        if !self.local.contains_key(&id) {
            let _ = reply.send(Err(no_folder(&id)));
            return;
        }
        let under = request
            .under
            .as_deref()
            .map(|u| u.trim_end_matches('/').to_string())
            .filter(|u| !u.is_empty());
        if let Some(u) = &under
            && let Err(e) = folder_path::validate(u)
        {
            let _ = reply.send(Err(ApiError::BadRequest(e.to_string())));
            return;
        }
        if !request.dry_run
            && let Err(e) = self.check_sends(&id)
        {
            let _ = reply.send(Err(e));
            return;
        }
        let device = self.node.device();
        let members = self.members(&id);
        let max_chunk = match self.max_chunk(&id) {
            Ok(m) => m,
            Err(e) => {
                let _ = reply.send(Err(e));
                return;
            }
        };
        let (index, net, events) = (
            self.index.clone(),
            self.net_tx.clone(),
            self.events_tx.clone(),
        );
        tokio::task::spawn_blocking(move || {
            // Planned on a copy of the document loaded from the index, off the loop (the
            // state of a moment alone, `heads_at` and `recorded_at`, took 0.85 s for
            // 200,000 files; the rewind reads that and the state now). A change
            // that arrives meanwhile is not lost: the rewind's change of that path then
            // has an older base and the newer value becomes a conflict copy.
            let doc = index
                .folder_shards(&id)
                .map_err(|e| e.to_string())
                .and_then(|saved| saved.ok_or_else(|| "the folder has no document".to_string()))
                .and_then(|saved| {
                    cairn_core::folder::FolderDoc::load(device, &saved).map_err(|e| e.to_string())
                });
            let mut doc = match doc {
                Ok(doc) => doc,
                Err(e) => {
                    let _ = reply.send(Err(ApiError::Internal(e)));
                    return;
                }
            };
            let at_ms = request.at_ns.div_euclid(1_000_000);
            let heads = doc.heads_at(at_ms);
            let then = doc.recorded_at(Some(&heads), under.as_deref());
            let now = doc.recorded_at(None, under.as_deref());
            drop(doc);
            let steps = rewind::plan(&then, &now, request.exact);
            refresh_kept(&net, &index, &id, &members);
            let mut out = Rewound {
                folder: id.clone(),
                at_ns: request.at_ns,
                dry_run: request.dry_run,
                ..Rewound::default()
            };
            let wanted: Vec<ContentId> = steps
                .iter()
                .filter_map(|s| s.version().and_then(|v| v.content))
                .collect();
            let found = sources_of(&net, &index, &id, &members, max_chunk, &wanted);
            let mut missing: Vec<String> = Vec::new();
            for step in &steps {
                let version = step.version();
                let content = version.and_then(|v| v.content);
                let size = version.map_or(0, |v| v.size);
                let (available, here) = match content.and_then(|c| found.get(&c)) {
                    None => (true, true),
                    Some(Ok(from)) => (true, matches!(from, Source::ThisDevice)),
                    Some(Err(e)) => {
                        missing.push(format!("{}: {e}", step.path));
                        (false, false)
                    }
                };
                if !here {
                    out.bytes_to_fetch += size;
                }
                out.steps.push(RewindStep {
                    path: step.path.clone(),
                    action: step.kind.as_str().into(),
                    content: content.map(|c| c.to_hex()),
                    size,
                    available,
                });
            }
            if request.dry_run {
                if !missing.is_empty() {
                    out.note = Some(format!(
                        "{} versions are held by no connected device now",
                        missing.len()
                    ));
                }
                let _ = reply.send(Ok(out));
                return;
            }
            if !missing.is_empty() {
                let shown: Vec<&str> = missing.iter().take(10).map(String::as_str).collect();
                let _ = reply.send(Err(ApiError::Refused(format!(
                    "nothing was changed: {} of the versions to restore are held by no \
                     connected device ({}{})",
                    missing.len(),
                    shown.join("; "),
                    if missing.len() > shown.len() {
                        "; ..."
                    } else {
                        ""
                    }
                ))));
                return;
            }
            let changes: Requested = steps.iter().filter_map(|s| s.change()).collect();
            if changes.is_empty() {
                out.note = Some("the folder already is as it was then".into());
                let _ = reply.send(Ok(out));
                return;
            }
            let count = changes.len();
            let done = Box::new(move |recorded: bool| {
                let mut out = out;
                let _ = reply.send(if recorded {
                    out.note = Some(format!(
                        "{count} paths are being put back; they sync to every device, and \
                         what they replace is kept in history (`cairn status` shows progress)"
                    ));
                    Ok(out)
                } else {
                    Err(ApiError::Refused(format!(
                        "folder {} only receives here or was removed; nothing was changed",
                        out.folder
                    )))
                });
            });
            let _ = events.send(Event::Requested {
                folder: id,
                changes,
                done,
            });
        });
    }

    /// Records changes checked off the loop (a restore from the group, a rewind).
    pub(crate) fn on_requested(
        &mut self,
        folder: &str,
        changes: Requested,
        done: Box<dyn FnOnce(bool) + Send>,
    ) {
        // The node records nothing in a folder that only receives (or is gone).
        done(
            self.node
                .record_requested(std::time::Instant::now(), folder, &changes),
        );
    }

    /// A restore or rewind changes the folder here and sends the change: refused where
    /// the folder only receives.
    pub(crate) fn check_sends(&self, id: &str) -> Result<(), ApiError> {
        match self.local.get(id) {
            None => Err(no_folder(id)),
            Some(l) if l.config.kind == FolderType::ReceiveOnly => Err(ApiError::Refused(format!(
                "folder {id} only receives on this device, so a restore here would not sync; \
                 restore it on a device that sends"
            ))),
            Some(_) => Ok(()),
        }
    }

    /// The largest chunk the folder's chunker makes (manifests are checked against it).
    fn max_chunk(&self, id: &str) -> Result<u32, ApiError> {
        let l = self.local.get(id).ok_or_else(|| no_folder(id))?;
        l.record
            .chunker()
            .map(|c| c.params().max)
            .map_err(|e| ApiError::Internal(e.to_string()))
    }
}
