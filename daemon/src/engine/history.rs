//! The engine's side of `crate::history`: `cairn history`, `cairn restore` (of a path or
//! a whole folder) and the pruning of kept versions, as the loop carries them out.

use std::time::{Instant, SystemTime};

use cairn_core::path as folder_path;
use tokio::sync::oneshot;

use super::{Engine, Event};
use crate::admin::ApiError;
use crate::group::no_folder;
use crate::history::*;
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
        for id in self.folders_named(req.folder.as_deref()) {
            if !self
                .index
                .history_of(&id, &req.path)
                .map_err(|e| e.to_string())?
                .is_empty()
            {
                with_versions.push(id);
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
