//! Answers peers' blocks requests from the files of one folder and from the versions it
//! keeps (the version store), re-verifying every chunk as it is read (the file may have
//! changed since it was indexed); an edited chunk can go out as a delta from the
//! requester's base.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use cairn_core::wire::{
    BlocksRequest, BlocksResponse, ChunksFrame, MAX_CHUNK_BYTES_PER_RESPONSE, MAX_KEPT_PER_RESPONSE,
};
use cairn_core::{ChunkId, ContentId};

use crate::index::{ChunkLocation, Index, Stored, history_holder};
use crate::versions::VersionStore;

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

/// The answer to `req`, which names a folder the peer may see, rooted at `root`.
pub fn answer(index: &Index, versions: &VersionStore, root: &Path, req: &BlocksRequest) -> Encoded {
    let response = match req {
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
        BlocksRequest::Chunks { folder, chunks } => {
            return chunks_answer(index, versions, root, folder, chunks);
        }
        // A signature the delta code refuses, a delta no smaller than the chunk, or too
        // many diffs at once are answered like a missing chunk: the requester then asks
        // for the chunk whole.
        BlocksRequest::Delta {
            folder,
            chunk,
            signature,
        } => BlocksResponse::Delta(DiffPermit::try_take().and_then(|_permit| {
            read_chunk(index, versions, root, folder, chunk)
                .and_then(|data| cairn_core::delta::diff(signature, &data).ok().flatten())
        })),
    };
    response.into()
}

/// The chunks `ids` of `folder`, each read and verified straight into the answer's
/// frame. A chunk named twice is read and sent once; past the response's byte limit the
/// rest are answered as missing (the requester asks again).
fn chunks_answer(
    index: &Index,
    versions: &VersionStore,
    root: &Path,
    folder: &str,
    ids: &[ChunkId],
) -> Encoded {
    let mut seen = std::collections::HashSet::new();
    let ids: Vec<&ChunkId> = ids.iter().filter(|id| seen.insert(**id)).collect();
    // Where each chunk is, first, so the frame is allocated once at its size.
    let places: Vec<Vec<ChunkLocation>> =
        ids.iter().map(|id| locations(index, folder, id)).collect();
    let fits = |bytes: usize, loc: Option<&ChunkLocation>| {
        loc.map(|l| l.len as usize)
            .filter(|len| bytes + len <= MAX_CHUNK_BYTES_PER_RESPONSE)
    };
    let room = places
        .iter()
        .fold(0, |bytes, p| bytes + fits(bytes, p.first()).unwrap_or(0));
    let mut frame = ChunksFrame::with_capacity(ChunksFrame::size(ids.len(), room));
    let mut last = None;
    for (id, places) in ids.into_iter().zip(&places) {
        let bytes = frame.carried().1 as usize;
        let served = match fits(bytes, places.first()) {
            Some(len) => frame.chunk(id, len, |buf| {
                places
                    .iter()
                    .any(|loc| read_into(versions, root, folder, loc, id, buf, &mut last))
            }),
            None => {
                frame.missing(id);
                false
            }
        };
        if !served {
            tracing::debug!(folder, chunk = %id.short(), "chunk_not_served");
        }
    }
    let (chunks, chunk_bytes) = frame.carried();
    Encoded {
        frame: frame.finish(),
        chunks,
        chunk_bytes,
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

/// The places of the chunk `id` that may serve `folder`: its files, then the versions it
/// keeps; at most [`MAX_PLACES`] (a chunk common to many files need not list them all).
fn locations(index: &Index, folder: &str, id: &ChunkId) -> Vec<ChunkLocation> {
    let kept = history_holder(folder);
    let mut out = Vec::new();
    let _ = index.find_chunk(id, |loc| {
        if loc.folder == folder || loc.folder == kept {
            out.push(loc);
        }
        (out.len() >= MAX_PLACES).then_some(())
    });
    out
}

/// Most places of one chunk tried before it is answered as missing.
const MAX_PLACES: usize = 16;

/// The chunk `id` of `folder`, from the first place that reads back right.
fn read_chunk(
    index: &Index,
    versions: &VersionStore,
    root: &Path,
    folder: &str,
    id: &ChunkId,
) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    let mut last = None;
    locations(index, folder, id)
        .iter()
        .any(|loc| read_into(versions, root, folder, loc, id, &mut out, &mut last))
        .then_some(out)
}

/// Appends the chunk `id` at `loc`, one of [`locations`] (a file of `folder` under
/// `root`, or a version it keeps, staged or in the store), to `out`; true when it read
/// back right, else `out` is as it was.
fn read_into(
    versions: &VersionStore,
    root: &Path,
    folder: &str,
    loc: &ChunkLocation,
    id: &ChunkId,
    out: &mut Vec<u8>,
    last: &mut LastFile,
) -> bool {
    let len = loc.len as usize;
    if loc.folder != folder {
        // The versions' holder: `locations` gives no other.
        let Ok(content) = loc.path.parse() else {
            return false;
        };
        return match versions.version_chunk(&content, id, loc.offset, len) {
            Ok(chunk) if chunk.len() == len => {
                out.extend_from_slice(&chunk);
                versions.note_served();
                true
            }
            _ => false,
        };
    }
    let path = root.join(&loc.path);
    if last.as_ref().is_none_or(|(open, _)| *open != path) {
        match crate::open_no_follow(&path) {
            Ok(file) => *last = Some((path, file)),
            Err(_) => return false,
        }
    }
    last.as_ref()
        .is_some_and(|(_, file)| crate::append_chunk_at(file, out, len, loc.offset, id))
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::index::Update;
    use cairn_core::scan::{EntryKind, IndexedEntry, Stamp};
    use cairn_core::wire::Bytes;
    use cairn_core::{ChunkRef, Manifest};

    /// A chunks answer read in place: a chunk named twice travels once, a chunk whose
    /// bytes changed since the scan and an unknown one are answered as missing, and the
    /// byte limit skips a chunk that would pass it but not a smaller one after it.
    #[test]
    fn chunks_are_read_into_the_frame_verified_and_within_the_limit() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        std::fs::create_dir_all(&root).unwrap();
        let rt = tokio::runtime::Runtime::new().unwrap();
        let versions = VersionStore::open(
            &dir.path().join("v"),
            &dir.path().join("s"),
            rt.handle().clone(),
        )
        .unwrap();
        let index = Index::open(&dir.path().join("index.redb")).unwrap();
        index
            .put_folder(&crate::index::FolderRecord {
                id: "f".into(),
                root: root.clone(),
                chunker: cairn_core::ChunkerParams::V1_DEFAULT.to_string(),
            })
            .unwrap();
        // Pieces: two 9 MiB chunks (both cannot fit in one answer) and small ones.
        let pieces: Vec<Vec<u8>> = [9 << 20, 1000, 9 << 20, 2000, 3000]
            .iter()
            .enumerate()
            .map(|(i, &len)| (0..len).map(|j| (j * 7 + i * 13) as u8).collect())
            .collect();
        let manifest = Manifest {
            chunks: pieces
                .iter()
                .map(|p| ChunkRef {
                    id: ChunkId::of(p),
                    len: p.len() as u32,
                })
                .collect(),
        };
        let ids: Vec<ChunkId> = manifest.chunks.iter().map(|c| c.id).collect();
        std::fs::write(root.join("a"), pieces.concat()).unwrap();
        let entry = IndexedEntry {
            kind: EntryKind::File,
            stamp: Stamp {
                size: 0,
                mtime_ns: 0,
                ctime_ns: 0,
                inode: 0,
                mode: 0o644,
            },
            content: Some(manifest.content_id()),
            link_target: None,
        };
        index
            .apply(
                "f",
                &[Update::Put {
                    path: "a".into(),
                    entry,
                    manifest: Some(manifest.clone()),
                }],
            )
            .unwrap();
        // The last chunk's bytes change after the scan.
        let mut changed = pieces.concat();
        *changed.last_mut().unwrap() ^= 1;
        std::fs::write(root.join("a"), &changed).unwrap();

        let unknown = ChunkId([9; 32]);
        let asked = vec![ids[0], ids[1], ids[0], ids[2], unknown, ids[3], ids[4]];
        let req = BlocksRequest::Chunks {
            folder: "f".into(),
            chunks: asked,
        };
        let answer = super::answer(&index, &versions, &root, &req);
        let got = BlocksResponse::decode(&answer.frame).unwrap();
        let want = |i: usize| Some(Bytes::from(pieces[i].clone()));
        assert_eq!(
            got,
            BlocksResponse::Chunks(vec![
                (ids[0], want(0)),
                (ids[1], want(1)),
                (ids[2], None),
                (unknown, None),
                (ids[3], want(3)),
                (ids[4], None),
            ])
        );
        assert_eq!(answer.chunks, 3);
        assert_eq!(answer.chunk_bytes, (9 << 20) + 1000 + 2000);
        // A delta's base is read the same way.
        assert_eq!(
            read_chunk(&index, &versions, &root, "f", &ids[1]),
            Some(pieces[1].clone())
        );
        assert_eq!(read_chunk(&index, &versions, &root, "f", &ids[4]), None);
        assert_eq!(read_chunk(&index, &versions, &root, "other", &ids[1]), None);
    }
}
