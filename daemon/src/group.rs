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

use cairn_api::history::{Holder, Version};
use cairn_core::conduct::Violation;
use cairn_core::folder::tree::winner;
use cairn_core::folder::{EntryValue, LocalChange};
use cairn_core::scan::EntryKind;
use cairn_core::wire::{BlocksRequest, BlocksResponse};
use cairn_core::{ContentId, path as folder_path};
use libp2p::PeerId;
use tokio::sync::{mpsc, oneshot};

use crate::admin::ApiError;
use crate::index::Index;
use crate::puller::NetCommand;

/// How long a connected peer has to send its list of kept versions (each page).
pub(crate) const KEPT_ANSWER_WITHIN: Duration = Duration::from_secs(5);
/// Most pages of a peer's kept list read (8,192 ids each).
pub(crate) const KEPT_PAGES_MAX: usize = 256;

/// Changes asked for through the control API, recorded on the loop once checked off it.
pub(crate) type Requested = Vec<(String, LocalChange, Option<ContentId>)>;

/// A member of a folder, as holders are named.
#[derive(Clone)]
pub(crate) struct Member {
    pub(crate) peer: PeerId,
    pub(crate) name: String,
    pub(crate) online: bool,
}

/// What a history answer needs from the loop: the folder's members and the versions of
/// the paths asked for, read from its document.
pub(crate) struct FolderHistory {
    pub(crate) id: String,
    pub(crate) members: Vec<Member>,
    pub(crate) paths: Vec<PathHistory>,
}

/// The versions a path had, as its folder's document remembers them.
pub(crate) struct PathHistory {
    pub(crate) path: String,
    /// Oldest first, each content once.
    pub(crate) versions: Vec<PastVersion>,
    /// The path is deleted now.
    pub(crate) deleted: bool,
    /// Its content now (None when deleted).
    pub(crate) current: Option<ContentId>,
}

pub(crate) struct PastVersion {
    pub(crate) content: ContentId,
    /// The latest value recorded with this content (its size, time and mode).
    pub(crate) value: EntryValue,
    /// When the content was first recorded at the path (ms).
    pub(crate) made_ms: i64,
    /// When the next value replaced it (ms; None while it is current).
    pub(crate) replaced_ms: Option<i64>,
    pub(crate) author: String,
}

/// Where a version's bytes can come from now.
#[derive(Clone)]
pub(crate) enum Source {
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
pub(crate) fn is_file(doc: &cairn_core::folder::FolderDoc, path: &str) -> bool {
    winner(&doc.values(path)).is_some_and(|w| w.kind != EntryKind::Dir)
}

/// Device names for "made by".
pub(crate) struct Labels {
    pub(crate) me: cairn_core::folder::DeviceId,
    pub(crate) my_name: String,
    pub(crate) peers: HashMap<cairn_core::folder::DeviceId, String>,
}

/// The versions of `path` (a file, or everything under a directory; everything when
/// None; only the path itself when `exact`) that a folder document remembers, per path,
/// with whether the path is deleted now and its current content. Reads the change log
/// of the shards involved: one for a file, every shard otherwise.
pub(crate) fn past_versions_of(
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
pub(crate) fn refresh_kept(
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
pub(crate) fn sources_of(
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
        if index.holds(c) {
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

pub(crate) fn names(members: &[&Member]) -> String {
    members
        .iter()
        .map(|m| m.name.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

/// Why no connected device can send `content`: the offline members that keep it, or none.
pub(crate) fn not_held(content: &ContentId, offline: &[&Member]) -> String {
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
pub(crate) fn list_folder(
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
            let here = index.holds(&v.content);
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
        let here = index.holds(&content);
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
