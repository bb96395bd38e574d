//! History as a property of the group: every version the folder's document remembers,
//! with the devices that hold its bytes; a version restored from whichever device holds
//! it; a folder (or a directory of it) rewound to a moment.
//!
//! The folder document keeps every value a path ever had, each change dated by the clock
//! of the device that made it (`FolderDoc::versions`, `heads_at`). Which devices hold the
//! bytes of a past version: this one when its chunks are here (version store or files);
//! a peer when its list of kept versions says so (`BlocksRequest::Kept`, asked of every
//! connected member before an answer and remembered in the index, so a device that is
//! offline now is still named).
//!
//! A restore of a version this device does not keep, and every rewind, is recorded as a
//! local change of this device (`Node::record_requested`): the pull then writes the
//! versions from local chunks or from peers (verified chunk by chunk against the
//! manifest, which is verified against the content id, as every pull), keeps what they
//! replace in history first, and every other device does the same. Before anything is
//! recorded, every version needed must be held here or by a connected device; otherwise
//! the answer says which devices hold it and that they are offline, and nothing changes.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use cairn_api::history::{
    HistoryQuery, Holder, RestoreRequest, Restored, RewindRequest, RewindStep, Rewound, Version,
};
use cairn_core::conduct::Violation;
use cairn_core::folder::tree::winner;
use cairn_core::folder::{EntryValue, LocalChange};
use cairn_core::rewind;
use cairn_core::scan::EntryKind;
use cairn_core::wire::{BlocksRequest, BlocksResponse};
use cairn_core::{ContentId, path as folder_path};
use libp2p::PeerId;
use tokio::sync::{mpsc, oneshot};

use crate::admin::ApiError;
use crate::config::FolderType;
use crate::engine::{Engine, Event};
use crate::index::Index;
use crate::puller::NetCommand;

/// How long a connected peer has to send its list of kept versions (each page).
const KEPT_ANSWER_WITHIN: Duration = Duration::from_secs(5);
/// Most pages of a peer's kept list read (8,192 ids each).
const KEPT_PAGES_MAX: usize = 256;

/// Changes asked for through the control API, recorded on the loop once checked off it.
pub(crate) type Requested = Vec<(String, LocalChange, Option<ContentId>)>;

/// A member of a folder, as holders are named.
#[derive(Clone)]
struct Member {
    peer: PeerId,
    name: String,
    online: bool,
}

/// What a history answer needs from the loop: the folder's members and the versions of
/// the paths asked for, read from its document.
struct FolderHistory {
    id: String,
    members: Vec<Member>,
    paths: Vec<PathHistory>,
}

/// The versions a path had, as its folder's document remembers them.
struct PathHistory {
    path: String,
    /// Oldest first, each content once.
    versions: Vec<PastVersion>,
    /// The path is deleted now.
    deleted: bool,
    /// Its content now (None when deleted).
    current: Option<ContentId>,
}

struct PastVersion {
    content: ContentId,
    /// The latest value recorded with this content (its size, time and mode).
    value: EntryValue,
    /// When the content was first recorded at the path (ms).
    made_ms: i64,
    /// When the next value replaced it (ms; None while it is current).
    replaced_ms: Option<i64>,
    author: String,
}

/// Where a version's bytes can come from now.
#[derive(Clone)]
enum Source {
    ThisDevice,
    /// A connected member that sent the version's manifest when asked.
    Peer(String),
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Source::ThisDevice => f.write_str("this device"),
            Source::Peer(name) => f.write_str(name),
        }
    }
}

/// Whether `path` is a file (or symlink) in the document, not a directory or unknown.
fn is_file(doc: &cairn_core::folder::FolderDoc, path: &str) -> bool {
    winner(&doc.values(path)).is_some_and(|w| w.kind != EntryKind::Dir)
}

impl Engine {
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
        let ids: Vec<String> = self
            .local
            .keys()
            .filter(|id| query.folder.as_ref().is_none_or(|f| f == *id))
            .cloned()
            .collect();
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
        let ids: Vec<String> = self
            .local
            .keys()
            .filter(|id| request.folder.as_ref().is_none_or(|f| f == *id))
            .cloned()
            .collect();
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

/// Device names for "made by".
struct Labels {
    me: cairn_core::folder::DeviceId,
    my_name: String,
    peers: HashMap<cairn_core::folder::DeviceId, String>,
}

/// The versions of `path` (a file, or everything under a directory; everything when
/// None; only the path itself when `exact`) that a folder document remembers, per path,
/// with whether the path is deleted now and its current content. Reads the change log
/// of the shards involved: one for a file, every shard otherwise.
fn past_versions_of(
    doc: &mut cairn_core::folder::FolderDoc,
    labels: &Labels,
    path: Option<&str>,
    only_deleted: bool,
    exact: bool,
) -> Vec<PathHistory> {
    let one_file = path.is_some_and(|p| exact || is_file(doc, p));
    let all = match path {
        Some(p) if one_file => doc.versions(Some(p), |_| true),
        Some(p) => doc.versions(None, |k| is_at_or_under(k, p)),
        None => doc.versions(None, |_| true),
    };
    let mut out = Vec::new();
    for (key, values) in all {
        let now = winner(&doc.values(&key)).cloned();
        let deleted = now.as_ref().is_none_or(|w| w.deleted);
        if only_deleted && !deleted {
            continue;
        }
        let current = now.as_ref().filter(|w| !w.deleted).and_then(|w| w.content);
        let mut versions: Vec<PastVersion> = Vec::new();
        for (i, v) in values.iter().enumerate() {
            let EntryValue {
                kind: EntryKind::File,
                deleted: false,
                content: Some(content),
                ..
            } = v.value
            else {
                continue;
            };
            if let Some(seen) = versions.iter_mut().find(|p| p.content == content) {
                // The same data again (a touch, a restore): listed once, with its latest
                // value.
                seen.value = v.value.clone();
                continue;
            }
            let author = if v.value.device == labels.me {
                labels.my_name.clone()
            } else {
                labels
                    .peers
                    .get(&v.value.device)
                    .cloned()
                    .unwrap_or_else(|| v.value.device.short())
            };
            versions.push(PastVersion {
                content,
                value: v.value.clone(),
                made_ms: v.time_ms,
                replaced_ms: values.get(i + 1).map(|next| next.time_ms),
                author,
            });
        }
        if !versions.is_empty() {
            out.push(PathHistory {
                path: key,
                versions,
                deleted,
                current,
            });
        }
    }
    out
}

pub(crate) fn no_folder(id: &str) -> ApiError {
    ApiError::NotFound(format!("no folder {id}; `cairn folders` lists them"))
}

/// `p` is `dir` or lies under it.
pub(crate) fn is_at_or_under(p: &str, dir: &str) -> bool {
    let dir = dir.trim_end_matches('/');
    p == dir || folder_path::ancestors(p).any(|a| a == dir)
}

/// Asks every connected member for its list of kept versions of `folder` and remembers
/// the answers (a member that does not answer keeps what it said last). Blocking.
fn refresh_kept(
    net: &mpsc::UnboundedSender<NetCommand>,
    index: &Index,
    folder: &str,
    members: &[Member],
) {
    let Ok(rt) = tokio::runtime::Handle::try_current() else {
        return;
    };
    // Every member's first page at once, then the rest of each in turn.
    let ask = |peer: PeerId, after: Option<ContentId>| {
        let (reply, rx) = oneshot::channel();
        let _ = net.send(NetCommand::Blocks {
            peer,
            request: BlocksRequest::Kept {
                folder: folder.to_string(),
                after,
            },
            reply,
        });
        rx
    };
    let first: Vec<_> = members
        .iter()
        .filter(|m| m.online)
        .map(|m| (m.peer, ask(m.peer, None)))
        .collect();
    for (peer, mut rx) in first {
        let mut all: Vec<ContentId> = Vec::new();
        let mut complete = false;
        for _ in 0..KEPT_PAGES_MAX {
            let answer = rt.block_on(tokio::time::timeout(KEPT_ANSWER_WITHIN, rx));
            let Ok(Ok(Ok(BlocksResponse::Kept { contents, more }))) = answer else {
                break;
            };
            // In id order, each after the last: anything else is not believed.
            let last = all.last().copied();
            let ordered = contents.windows(2).all(|w| w[0] < w[1])
                && contents.first().is_none_or(|c| last.is_none_or(|l| *c > l));
            if !ordered {
                break;
            }
            all.extend(contents);
            if !more {
                complete = true;
                break;
            }
            rx = ask(peer, all.last().copied());
        }
        if complete && let Err(e) = index.set_peer_kept(folder, &peer.to_string(), &all) {
            tracing::warn!(error = %e, "peer_kept_store_failed");
        }
    }
}

/// Where the bytes of each of `contents` can come from now: "this device" when it has
/// every chunk, else the first connected member that keeps it *and* sends its manifest
/// when asked (a kept list is only a claim: the manifest is checked against the content
/// id, and stored for the pull that follows). An error names the members that keep it
/// and are offline, or says that none does. Blocking.
fn sources_of(
    net: &mpsc::UnboundedSender<NetCommand>,
    index: &Index,
    folder: &str,
    members: &[Member],
    max_chunk: u32,
    contents: &[ContentId],
) -> HashMap<ContentId, Result<Source, String>> {
    const IN_FLIGHT: usize = 64;
    let mut out = HashMap::new();
    let mut to_confirm: Vec<(ContentId, Vec<&Member>)> = Vec::new();
    for c in contents {
        if out.contains_key(c) || to_confirm.iter().any(|(x, _)| x == c) {
            continue;
        }
        if crate::engine::holds(index, c) {
            out.insert(*c, Ok(Source::ThisDevice));
            continue;
        }
        let keeping = match index.peers_keeping(folder, c) {
            Ok(k) => k,
            Err(e) => {
                out.insert(*c, Err(e.to_string()));
                continue;
            }
        };
        let (online, offline): (Vec<&Member>, Vec<&Member>) = members
            .iter()
            .filter(|m| keeping.contains(&m.peer.to_string()))
            .partition(|m| m.online);
        if online.is_empty() {
            out.insert(*c, Err(not_held(c, &offline)));
        } else {
            to_confirm.push((*c, online));
        }
    }
    let Ok(rt) = tokio::runtime::Handle::try_current() else {
        return out;
    };
    // The first claimer of each, then the next for those it did not send.
    let mut turn = 0;
    while !to_confirm.is_empty() {
        let mut next = Vec::new();
        let mut stored = Vec::new();
        for wave in to_confirm.chunks(IN_FLIGHT) {
            let pending: Vec<_> = wave
                .iter()
                .map(|(c, claimers)| {
                    let (reply, rx) = oneshot::channel();
                    let _ = net.send(NetCommand::Blocks {
                        peer: claimers[turn].peer,
                        request: BlocksRequest::Manifest {
                            folder: folder.to_string(),
                            content: *c,
                        },
                        reply,
                    });
                    (c, claimers, rx)
                })
                .collect();
            for (c, claimers, rx) in pending {
                let answer = rt.block_on(tokio::time::timeout(KEPT_ANSWER_WITHIN, rx));
                let verified = match answer {
                    Ok(Ok(Ok(
                        a @ (BlocksResponse::Manifest(Some(_)) | BlocksResponse::Outline(_)),
                    ))) => {
                        let v = crate::puller::verified_manifest(a, c, max_chunk);
                        if v.is_none() {
                            // It sent a manifest, and not one of this version: a lie.
                            let _ = net.send(NetCommand::Violation {
                                peer: claimers[turn].peer,
                                kind: Violation::BadManifest,
                                reason: format!("manifest of kept version {c} does not match it"),
                            });
                        }
                        v
                    }
                    _ => None,
                };
                match verified {
                    Some(m) => {
                        stored.push((*c, m));
                        out.insert(*c, Ok(Source::Peer(claimers[turn].name.clone())));
                    }
                    None if turn + 1 < claimers.len() => next.push((*c, claimers.clone())),
                    None => {
                        out.insert(
                            *c,
                            Err(format!(
                                "version {} is listed as kept by {}, but {} did not send it \
                                 when asked (pruned since?)",
                                &c.to_hex()[..12],
                                names(claimers),
                                if claimers.len() == 1 { "it" } else { "none" }
                            )),
                        );
                    }
                }
            }
        }
        if let Err(e) = index.put_remote_manifests(&stored) {
            tracing::warn!(error = %e, "manifest_store_failed");
        }
        to_confirm = next;
        turn += 1;
    }
    out
}

fn names(members: &[&Member]) -> String {
    members
        .iter()
        .map(|m| m.name.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

/// Why no connected device can send `content`: the offline members that keep it, or none.
fn not_held(content: &ContentId, offline: &[&Member]) -> String {
    let short = &content.to_hex()[..12];
    if offline.is_empty() {
        return format!(
            "no device is known to hold version {short} (its bytes may have been pruned \
             everywhere)"
        );
    }
    format!(
        "version {short} is held only by {}, which {} offline; start cairn there (or \
         connect it) and try again",
        names(offline),
        if offline.len() == 1 { "is" } else { "are" }
    )
}

/// The rows of one folder's history: every past version (not the current one) with
/// its holders, and the versions this device keeps that the document does not list.
fn list_folder(
    index: &Index,
    f: &FolderHistory,
    path: Option<&str>,
    only_deleted: bool,
) -> Result<Vec<Version>, String> {
    let by_peer: HashMap<String, &Member> =
        f.members.iter().map(|m| (m.peer.to_string(), m)).collect();
    let holders = |content: &ContentId, here: bool| -> Result<Vec<Holder>, String> {
        let mut out = Vec::new();
        if here {
            out.push(Holder {
                name: "this device".into(),
                this_device: true,
                online: true,
            });
        }
        for peer in index
            .peers_keeping(&f.id, content)
            .map_err(|e| e.to_string())?
        {
            if let Some(m) = by_peer.get(&peer) {
                out.push(Holder {
                    name: m.name.clone(),
                    this_device: false,
                    online: m.online,
                });
            }
        }
        Ok(out)
    };
    let mut rows: BTreeMap<(String, ContentId), Version> = BTreeMap::new();
    for h in &f.paths {
        let key = &h.path;
        for v in &h.versions {
            if Some(v.content) == h.current {
                continue;
            }
            let here = crate::engine::holds(index, &v.content);
            rows.insert(
                (key.clone(), v.content),
                Version {
                    folder: f.id.clone(),
                    path: key.clone(),
                    kept_ns: v.replaced_ms.unwrap_or(v.made_ms).saturating_mul(1_000_000),
                    content: v.content.to_hex(),
                    size: v.value.size,
                    available: here,
                    made_ns: v.made_ms.saturating_mul(1_000_000),
                    author: Some(v.author.clone()),
                    holders: holders(&v.content, here)?,
                    deleted: h.deleted,
                },
            );
        }
    }
    // Versions kept here that the document does not list (a restore's, a conflict's).
    let deleted_paths: HashMap<&str, bool> = f
        .paths
        .iter()
        .map(|h| (h.path.as_str(), h.deleted))
        .collect();
    for (p, kept_ns, content) in index.history(&f.id).map_err(|e| e.to_string())? {
        if path.is_some_and(|want| !is_at_or_under(&p, want)) {
            continue;
        }
        if only_deleted && !deleted_paths.get(p.as_str()).copied().unwrap_or(false) {
            continue;
        }
        if let Some(row) = rows.get_mut(&(p.clone(), content)) {
            row.kept_ns = row.kept_ns.max(kept_ns);
            continue;
        }
        let here = crate::engine::holds(index, &content);
        let size = index
            .content_size(&content)
            .map_err(|e| e.to_string())?
            .unwrap_or(0);
        rows.insert(
            (p.clone(), content),
            Version {
                folder: f.id.clone(),
                path: p.clone(),
                kept_ns,
                content: content.to_hex(),
                size,
                available: here,
                holders: holders(&content, here)?,
                deleted: deleted_paths.get(p.as_str()).copied().unwrap_or(false),
                ..Version::default()
            },
        );
    }
    Ok(rows.into_values().collect())
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
