//! The node's jobs, off the loop: scans and pulls run on worker threads and report back
//! as [`Event`]s in the node's terms ([`ScanDone`], [`PullDone`]); every index read they
//! need (unrecorded changes, whether a version's bytes are here) happens there too.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Instant;

use cairn_core::ContentId;
use cairn_core::folder::doc::DEFAULT_SHARDS;
use cairn_core::folder::{DeviceId, EntryValue, FolderDoc, LocalChange, PathRange, Tree};
use cairn_core::node::{FolderSpec, Missing, PullDone, PullFailure, ScanDone, Unrecorded};
use cairn_core::planner::{LocalStore, local_in_scope, plan};
use libp2p::PeerId;
use tokio::sync::mpsc;

use super::{Engine, Event, Local, StartError};
use crate::config::FolderConfig;
use crate::index::{FolderRecord, Index};
use crate::puller::{PullError, PullOutcome, Puller};
use crate::scanner::{ScanReport, scan_folder, scan_paths};
use crate::watcher::{Change, Watcher};

/// The device's stores, as the planner sees them.
struct IndexStore<'a>(&'a Index);

impl LocalStore for IndexStore<'_> {
    fn has_manifest(&self, content: &ContentId) -> bool {
        self.0.has_manifest(content).unwrap_or(false)
    }
}

impl Engine {
    /// Scans folder `id`: only `scope` (what the watcher saw change), or all of it.
    pub(crate) fn start_scan(&mut self, id: &str, scope: Option<BTreeSet<String>>) {
        let Some(l) = self.local.get(id) else {
            self.node
                .handle_scan_done(Instant::now(), id, Err("no such folder".into()));
            return;
        };
        let (index, record, tx, folder) = (
            self.index.clone(),
            l.record.clone(),
            self.events_tx.clone(),
            id.to_string(),
        );
        tracing::debug!(folder = id, scope = ?scope, "scan_started");
        tokio::task::spawn_blocking(move || {
            let report = match &scope {
                Some(paths) => scan_paths(&index, &record, paths),
                None => scan_folder(&index, &record, &|_| {}),
            };
            let (read_files, read_bytes) = report
                .as_ref()
                .map_or((0, 0), |r| (r.read_files, r.read_bytes));
            let result = report
                .map(|r| scan_done(&index, &folder, r))
                .map_err(|e| e.to_string());
            let _ = tx.send(Event::ScanDone {
                folder,
                result,
                read_files,
                read_bytes,
            });
        });
    }

    /// Plans `tree` against the index and carries the plan out, on the puller's thread.
    pub(crate) fn start_pull(
        &mut self,
        id: &str,
        tree: Tree,
        scope: Option<BTreeSet<String>>,
        window: Option<PathRange>,
        refused: HashMap<String, ContentId>,
        peers: Vec<PeerId>,
    ) {
        // Manifests learnt from peers are needed again.
        self.prune_due = false;
        let roots: HashMap<String, std::path::PathBuf> = self
            .local
            .iter()
            .map(|(k, l)| (k.clone(), l.record.root.clone()))
            .collect();
        let chunker = self.local.get(id).map(|l| l.record.chunker());
        let (Some(l), Some(Ok(chunker))) = (self.local.get_mut(id), chunker) else {
            let failed = vec![PullFailure::Other(format!("folder {id}: no chunker"))];
            self.node.handle_pull_done(
                Instant::now(),
                id,
                PullDone {
                    failed,
                    ..PullDone::default()
                },
            );
            return;
        };
        let puller = Puller {
            folder: id.to_string(),
            root: l.record.root.clone(),
            chunker,
            index: self.index.clone(),
            versions: self.versions.clone(),
            roots,
            peers,
            net: self.net_tx.clone(),
            metrics: self.metrics.clone(),
            progress: Arc::new(crate::puller::PullProgress::default()),
            dirty_dirs: Default::default(),
            keeps: Default::default(),
            preserving: Default::default(),
            scope,
            before_rename: None,
            waited_for_peers: Default::default(),
            prefetched: Default::default(),
        };
        l.progress = Some(puller.progress.clone());
        l.rate = (Instant::now(), 0, 0.0);
        let (tx, folder) = (self.events_tx.clone(), id.to_string());
        if let Some(w) = &window {
            tracing::info!(
                folder = id,
                from = w.from.as_deref().unwrap_or(""),
                to = w.to.as_deref().unwrap_or(""),
                paths = puller.scope.as_ref().map_or(0, BTreeSet::len),
                "pull_window"
            );
        }
        // Planning reads the whole index and every manifest the tree names: it runs on
        // the puller's thread, never on the loop (the control API stays responsive
        // whatever the size of a pull).
        std::thread::spawn(move || {
            // Local paths in a window that its scope missed: the node plans them next.
            let stray = match (&window, &puller.scope) {
                (Some(w), Some(scope)) => puller
                    .index
                    .paths_in(&puller.folder, w, scope)
                    .unwrap_or_else(|e| {
                        tracing::warn!(folder, error = %e, "window_paths_unreadable");
                        Vec::new()
                    }),
                _ => Vec::new(),
            };
            let mut outcome = match plan_pull(&puller, &tree, puller.scope.as_ref(), &refused) {
                Ok(Some(plan)) => {
                    tracing::debug!(folder, actions = ?plan.actions, "pull_started");
                    let values: HashMap<String, EntryValue> = tree
                        .entries
                        .into_iter()
                        .map(|(p, e)| (p, e.value))
                        .collect();
                    drop(refused);
                    pull_done(&puller.index, puller.run(&plan, &values))
                }
                Ok(None) => PullDone {
                    planned_nothing: true,
                    ..PullDone::default()
                },
                Err(e) => PullDone {
                    failed: vec![failure(e)],
                    ..PullDone::default()
                },
            };
            outcome.stray = stray;
            let _ = tx.send(Event::PullDone { folder, outcome });
        });
    }
}

/// A scan's report in the node's terms: every change the index holds that the document
/// has not recorded (this scan's, and any a killed process committed but never recorded).
fn scan_done(index: &Index, folder: &str, report: ScanReport) -> ScanDone {
    let unrecorded = index.unrecorded(folder).unwrap_or_else(|e| {
        tracing::error!(folder, error = %e, "unrecorded_changes_unreadable");
        report
            .changes
            .iter()
            .map(|c| (c.path.clone(), c.previous))
            .collect()
    });
    let unrecorded = unrecorded
        .into_iter()
        .filter_map(|(path, previous)| {
            let change = LocalChange::of(index.entry(folder, &path).ok()?.as_ref());
            Some(Unrecorded {
                path,
                change,
                previous,
            })
        })
        .collect();
    let recent = cairn_core::node::RECENT_MAX;
    let skip = report.changes.len().saturating_sub(recent);
    ScanDone {
        unrecorded,
        changes: report
            .changes
            .iter()
            .skip(skip)
            .map(|c| (c.path.clone(), format!("{:?}", c.change).to_lowercase()))
            .collect(),
        changed: report.changes.len(),
        more: report.more,
        // A file still being written is normal, not an error: it is scanned again.
        problem: report
            .issues
            .iter()
            .find(|i| !i.changing)
            .map(|i| format!("{}: {}", i.path, i.problem)),
    }
}

/// A puller's outcome in the node's terms; whether a missing version's bytes are here
/// is read from the index now, off the loop.
fn pull_done(index: &Index, outcome: PullOutcome) -> PullDone {
    PullDone {
        planned_nothing: outcome.planned_nothing,
        done: outcome.done,
        raced: !outcome.raced.is_empty(),
        missing: outcome
            .waiting
            .into_iter()
            .map(|(path, content)| Missing {
                held: index.holds(&content),
                path,
                content,
            })
            .collect(),
        changes: outcome
            .recent
            .into_iter()
            .map(|(p, w)| (p, w.to_string()))
            .collect(),
        failed: outcome.failed.into_iter().map(failure).collect(),
        stray: Vec::new(),
    }
}

fn failure(e: PullError) -> PullFailure {
    match e {
        PullError::Unavailable(_) => PullFailure::Unavailable,
        e @ PullError::NoSpace { .. } => PullFailure::NoSpace(e.to_string()),
        PullError::Refused {
            path,
            content,
            author,
            why,
        } => PullFailure::Refused {
            path,
            content,
            author,
            why,
        },
        e => PullFailure::Other(e.to_string()),
    }
}

/// Plans a pull of `tree` against the index (on the puller's thread): None when there is
/// nothing to do (abandoned pulls are then forgotten). With a `scope`, `tree` is the
/// partial tree of those paths, planned against the index entries there alone.
fn plan_pull(
    puller: &Puller,
    tree: &Tree,
    scope: Option<&BTreeSet<String>>,
    refused: &HashMap<String, ContentId>,
) -> Result<Option<cairn_core::planner::Plan>, PullError> {
    let (index, folder) = (&puller.index, puller.folder.as_str());
    let local: BTreeMap<_, _> = match scope {
        None => index.entries(folder)?.into_iter().collect(),
        Some(scope) => {
            let here = index.entries_at(folder, scope)?;
            let failed = std::cell::RefCell::new(None);
            let local = local_in_scope(
                tree,
                scope,
                |p| here.get(p).cloned(),
                |dir| match index.entries_under(folder, &BTreeSet::from([dir.to_string()])) {
                    Ok(entries) => entries.into_iter().collect(),
                    Err(e) => {
                        failed.borrow_mut().get_or_insert(e);
                        Vec::new()
                    }
                },
            );
            if let Some(e) = failed.into_inner() {
                return Err(e.into());
            }
            local
        }
    };
    let mut plan = plan(tree, &local, &IndexStore(index));
    drop(local);
    plan.actions.retain(|a| match a {
        cairn_core::planner::Action::WriteFile { path, content, .. } => {
            refused.get(path) != Some(content)
        }
        _ => true,
    });
    for (path, why) in &plan.rejected {
        tracing::warn!(folder, path = %path, error = %why, "path_rejected");
    }
    if plan.is_empty() {
        crate::puller::forget_abandoned_pulls(index, folder, &puller.root, &plan, scope);
        return Ok(None);
    }
    Ok(Some(plan))
}

/// Opens a folder: its index record, its saved document (a new one for a new folder) and
/// its watcher; what the node needs to know of it is the [`FolderSpec`].
pub(crate) fn load_folder(
    index: &Index,
    fc: &FolderConfig,
    device: DeviceId,
    events: &mpsc::UnboundedSender<Event>,
) -> Result<(Local, FolderSpec<PeerId>, FolderDoc), StartError> {
    let err = |why: String| StartError::Folder {
        id: fc.id.clone(),
        why,
    };
    std::fs::create_dir_all(&fc.path)
        .map_err(|e| err(format!("cannot create {}: {e}", fc.path.display())))?;
    let root = fc.path.canonicalize().map_err(|e| err(e.to_string()))?;
    let record = match index.folders()?.into_iter().find(|f| f.id == fc.id) {
        Some(r) if r.root == root => r,
        _ => {
            let r = FolderRecord {
                id: fc.id.clone(),
                root: root.clone(),
                chunker: cairn_core::ChunkerParams::V1_DEFAULT.to_string(),
            };
            index.put_folder(&r)?;
            r
        }
    };
    let doc = match index.folder_shards(&fc.id)? {
        Some(saved) => FolderDoc::load(device, &saved).map_err(|e| err(e.to_string()))?,
        None => {
            let mut doc = FolderDoc::new(device, DEFAULT_SHARDS).map_err(|e| err(e.to_string()))?;
            let saved: Vec<(u16, Vec<u8>)> = (0..DEFAULT_SHARDS as usize)
                .map(|s| (s as u16, doc.save_shard(s)))
                .collect();
            index.put_folder_shards(&fc.id, &saved)?;
            doc
        }
    };
    let report = {
        let (folder, events) = (fc.id.clone(), events.clone());
        move |change| {
            let _ = events.send(match change {
                Change::Paths(paths) => Event::FsChanged {
                    folder: folder.clone(),
                    paths,
                },
                Change::Failed(error) => Event::WatcherFailed {
                    folder: folder.clone(),
                    error,
                },
            });
        }
    };
    let watcher = match Watcher::start(&root, report) {
        Ok(w) => Some(w),
        Err(e) => {
            tracing::warn!(folder = %fc.id, error = %e, "watcher_unavailable_falling_back_to_rescans");
            None
        }
    };
    let spec = FolderSpec {
        id: fc.id.clone(),
        kind: crate::config::node_kind(fc.kind),
        paused: fc.paused,
        members: fc.peers.iter().filter_map(|p| p.parse().ok()).collect(),
        rescan_interval: std::time::Duration::from_secs(fc.rescan_interval_s),
        watcher_ok: watcher.is_some(),
    };
    let local = Local {
        config: fc.clone(),
        record,
        _watcher: watcher,
        progress: None,
        rate: (Instant::now(), 0, 0.0),
        restores: Default::default(),
    };
    Ok((local, spec, doc))
}
