//! Answers peers' blocks requests from the files of one folder and from the versions it
//! keeps (the version store), re-verifying every chunk as it is read (the file may have
//! changed since it was indexed); an edited chunk can go out as a delta from the
//! requester's base.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use cairn_core::wire::{
    BlocksRequest, BlocksResponse, Bytes, MAX_CHUNK_BYTES_PER_RESPONSE, MAX_KEPT_PER_RESPONSE,
};
use cairn_core::{ChunkId, ContentId};

use crate::index::{Index, Stored, history_holder};
use crate::versions::VersionStore;

/// The answer to `req`, which names a folder the peer may see, rooted at `root`.
/// An answer encoded for the wire, with the chunks and chunk bytes it carries (counted
/// for the peer's metrics). Made on the serving thread, so the event loop only sends it.
pub struct Encoded {
    pub frame: Vec<u8>,
    pub chunks: u64,
    pub chunk_bytes: u64,
}

impl From<BlocksResponse> for Encoded {
    fn from(response: BlocksResponse) -> Self {
        let (chunks, chunk_bytes) = match &response {
            BlocksResponse::Chunks(items) => items
                .iter()
                .filter_map(|(_, d)| d.as_ref())
                .fold((0, 0), |(n, b), d| (n + 1, b + d.len() as u64)),
            BlocksResponse::Delta(Some(d)) => (1, d.len() as u64),
            _ => (0, 0),
        };
        Encoded {
            frame: response.encode(),
            chunks,
            chunk_bytes,
        }
    }
}

pub fn answer(
    index: &Index,
    versions: &VersionStore,
    root: &Path,
    req: &BlocksRequest,
) -> BlocksResponse {
    match req {
        BlocksRequest::Manifest { folder, content } => {
            let answer = manifest(index, folder, content);
            if !matches!(answer, BlocksResponse::Manifest(None)) {
                versions.note_asked(content);
            }
            answer
        }
        BlocksRequest::ManifestPage {
            folder,
            content,
            page,
        } => BlocksResponse::Page(
            index
                .stored(content)
                .ok()
                .flatten()
                .filter(|s| in_folder(index, folder, content, s))
                .and_then(|_| index.page(content, *page as usize).ok().flatten())
                .map(|m| m.encode()),
        ),
        BlocksRequest::Kept { folder, after } => {
            let mut contents: Vec<ContentId> = index
                .history(folder)
                .map(|rows| rows.into_iter().map(|(_, _, c)| c).collect())
                .unwrap_or_default();
            contents.sort();
            contents.dedup();
            let from = after.map_or(0, |a| contents.partition_point(|c| *c <= a));
            let rest = &contents[from..];
            let take = rest.len().min(MAX_KEPT_PER_RESPONSE);
            BlocksResponse::Kept {
                contents: rest[..take].to_vec(),
                more: rest.len() > take,
            }
        }
        // A chunk named twice is read and sent once; past the response's byte limit the
        // rest are answered as missing (the requester asks again).
        BlocksRequest::Chunks { folder, chunks } => {
            let mut seen = std::collections::HashSet::new();
            let mut bytes = 0;
            let mut last = None;
            BlocksResponse::Chunks(
                chunks
                    .iter()
                    .filter(|id| seen.insert(**id))
                    .map(|id| {
                        let data = (bytes < MAX_CHUNK_BYTES_PER_RESPONSE)
                            .then(|| {
                                read_chunk(index, versions, root, folder, id, &mut last)
                                    .map(Bytes::from)
                            })
                            .flatten()
                            .filter(|d| bytes + d.len() <= MAX_CHUNK_BYTES_PER_RESPONSE);
                        bytes += data.as_ref().map_or(0, Bytes::len);
                        if data.is_none() {
                            tracing::debug!(folder, chunk = %id.short(), "chunk_not_served");
                        }
                        (*id, data)
                    })
                    .collect(),
            )
        }
        // A signature the delta code refuses, a delta no smaller than the chunk, or too
        // many diffs at once are answered like a missing chunk: the requester then asks
        // for the chunk whole.
        BlocksRequest::Delta {
            folder,
            chunk,
            signature,
        } => BlocksResponse::Delta(DiffPermit::try_take().and_then(|_permit| {
            read_chunk(index, versions, root, folder, chunk, &mut None)
                .and_then(|data| cairn_core::delta::diff(signature, &data).ok().flatten())
        })),
    }
}

/// Whether `content`, whose manifest is `stored`, is held by a file of `folder` (or is the
/// empty file): a peer learns only manifests of what the folder it may see holds. The
/// manifest is decoded once per request, by the caller.
fn in_folder(index: &Index, folder: &str, content: &ContentId, stored: &Stored) -> bool {
    let first = match stored {
        Stored::Whole(m) => m.chunks.first().copied(),
        Stored::Paged(_) => index
            .page(content, 0)
            .ok()
            .flatten()
            .and_then(|p| p.chunks.first().copied()),
    };
    let kept = history_holder(folder);
    first.is_none_or(|c| {
        index
            .find_chunk(&c.id, |l| {
                (l.folder == folder || l.folder == kept).then_some(())
            })
            .is_ok_and(|found| found.is_some())
    })
}

/// The manifest of `content` if the folder has it (its outline if it is paged).
fn manifest(index: &Index, folder: &str, content: &ContentId) -> BlocksResponse {
    match index.stored(content).ok().flatten() {
        Some(s) if !in_folder(index, folder, content, &s) => BlocksResponse::Manifest(None),
        Some(Stored::Whole(m)) => BlocksResponse::Manifest(Some(m.encode())),
        Some(Stored::Paged(o)) => BlocksResponse::Outline(o.encode()),
        None => BlocksResponse::Manifest(None),
    }
}

/// The file a request's last chunk was read from, kept open for the next: the chunks of
/// one request are mostly consecutive chunks of one file (opening it for each was 2% of
/// the sender's CPU on a 1 GiB sync).
type LastFile = Option<(PathBuf, std::fs::File)>;

fn read_chunk(
    index: &Index,
    versions: &VersionStore,
    root: &Path,
    folder: &str,
    id: &ChunkId,
    last: &mut LastFile,
) -> Option<Vec<u8>> {
    let kept = history_holder(folder);
    // The first place that reads back right, a file of the folder or a version it keeps
    // (staged or in the store, verified either way).
    index
        .find_chunk(id, |loc| {
            if loc.folder == kept {
                let content = loc.path.parse().ok()?;
                let chunk = versions
                    .version_chunk(&content, id, loc.offset, loc.len as usize)
                    .ok()?;
                versions.note_served();
                return Some(chunk);
            }
            if loc.folder != folder {
                return None;
            }
            let path = root.join(&loc.path);
            if last.as_ref().is_none_or(|(open, _)| *open != path) {
                *last = Some((path.clone(), crate::open_no_follow(&path).ok()?));
            }
            let (_, file) = last.as_ref()?;
            crate::read_chunk_in(file, loc.offset, loc.len as usize, id)
        })
        .ok()
        .flatten()
}

/// Diffs running at once, across all peers: each costs CPU the requester chose to spend,
/// so at most [`DiffPermit::MAX`] run and the rest are told to fetch whole chunks.
static DIFFS_RUNNING: AtomicUsize = AtomicUsize::new(0);

struct DiffPermit;

impl DiffPermit {
    const MAX: usize = 4;

    fn try_take() -> Option<DiffPermit> {
        DIFFS_RUNNING
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < Self::MAX).then_some(n + 1)
            })
            .ok()
            .map(|_| DiffPermit)
    }
}

impl Drop for DiffPermit {
    fn drop(&mut self) {
        DIFFS_RUNNING.fetch_sub(1, Ordering::AcqRel);
    }
}
