//! Answers peers' blocks requests from the files of one folder, re-verifying every chunk
//! as it is read (the file may have changed since it was indexed); an edited chunk can
//! go out as a delta from the requester's base.

use std::fs::OpenOptions;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};

use cairn_core::wire::{BlocksRequest, BlocksResponse};
use cairn_core::{ChunkId, Manifest};

use crate::index::Index;

/// The answer to `req`, which names a folder the peer may see, rooted at `root`.
pub fn answer(index: &Index, root: &Path, req: &BlocksRequest) -> BlocksResponse {
    match req {
        BlocksRequest::Manifest { folder, content } => {
            let manifest = index.any_manifest(content).ok().flatten();
            // Only a manifest of content that this folder actually holds.
            let in_folder = |m: &Manifest| {
                m.chunks.first().is_none_or(|c| {
                    index
                        .chunk_locations(&c.id)
                        .is_ok_and(|locs| locs.iter().any(|l| &l.folder == folder))
                })
            };
            BlocksResponse::Manifest(manifest.filter(in_folder).map(|m| m.encode()))
        }
        // A chunk named twice is read and sent once.
        BlocksRequest::Chunks { folder, chunks } => {
            let mut seen = std::collections::HashSet::new();
            BlocksResponse::Chunks(
                chunks
                    .iter()
                    .filter(|id| seen.insert(**id))
                    .map(|id| (*id, read_chunk(index, root, folder, id)))
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
            read_chunk(index, root, folder, chunk)
                .and_then(|data| cairn_core::delta::diff(signature, &data).ok().flatten())
        })),
    }
}

fn read_chunk(index: &Index, root: &Path, folder: &str, id: &ChunkId) -> Option<Vec<u8>> {
    for loc in index.chunk_locations(id).ok()? {
        if loc.folder != folder {
            continue;
        }
        let Ok(f) = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(root.join(&loc.path))
        else {
            continue;
        };
        let mut buf = vec![0u8; loc.len as usize];
        if f.read_exact_at(&mut buf, loc.offset).is_ok() && id.matches(&buf) {
            return Some(buf);
        }
    }
    None
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
