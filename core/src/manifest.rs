//! Manifests: a file's content as the ordered list of its chunks, and the [`ContentId`]
//! that names it.
//!
//! The `ContentId` is the root of an `rs_merkle` tree whose leaves are the chunks (id and
//! length) in order. Leaves and inner nodes are hashed with different one-byte prefixes, so
//! a leaf can never pass for a node (rs_merkle's default does not separate them). A node
//! without a right sibling is promoted unchanged, as rs_merkle does.
//!
//! A manifest that arrives from a peer is trusted only after [`Manifest::verify`] against
//! the `ContentId` from the folder metadata; one chunk can be proven to belong to a file
//! with a [`ChunkProof`] without the whole manifest.
//!
//! A manifest of more than [`PAGE_CHUNKS`] chunks travels and is stored in pages: its
//! [`Outline`] (the chunk count and the Merkle root of each page of `PAGE_CHUNKS` chunks)
//! is verified against the `ContentId` first, then each page against its root in the
//! outline. A page is a perfect subtree of the file's Merkle tree (the last one a left-aligned
//! partial one), so the roots of the pages fold to the content id exactly as the leaves do.
//! A receiver therefore never holds more than one page (2.25 MiB) of a manifest a peer
//! sent, however large the file claims to be.

use rs_merkle::{Hasher, MerkleProof, MerkleTree};

use crate::hash::{ChunkId, ContentId};

const LEAF_PREFIX: u8 = 0x00;
const NODE_PREFIX: u8 = 0x01;
const EMPTY_CONTENT: &[u8] = b"cairn/content/empty/v1";
const ENCODING_VERSION: u8 = 1;
const OUTLINE_VERSION: u8 = 2;
const ENTRY_BYTES: usize = 32 + 4;

/// Chunks in one page of a paged manifest; a manifest of at most this many chunks is sent
/// and stored whole.
pub const PAGE_CHUNKS: usize = 1 << 16;
/// Most pages in one manifest: 2^28 chunks, 16 TiB of 64 KiB chunks.
pub const MAX_PAGES: usize = 1 << 12;
/// Largest encoding of a page or of a whole (unpaged) manifest.
pub const MAX_PAGE_BYTES: usize = 5 + PAGE_CHUNKS * ENTRY_BYTES;
/// Largest encoding of an [`Outline`].
pub const MAX_OUTLINE_BYTES: usize = 13 + MAX_PAGES * 32;

/// One chunk of a file: its id and length in bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ChunkRef {
    /// BLAKE3 of the chunk's bytes.
    pub id: ChunkId,
    /// Length of the chunk in bytes (never 0).
    pub len: u32,
}

impl ChunkRef {
    /// Names `bytes` as a chunk: its BLAKE3 id and length.
    pub fn of(bytes: &[u8]) -> Self {
        ChunkRef {
            id: ChunkId::of(bytes),
            len: bytes.len() as u32,
        }
    }

    /// The Merkle leaf for this chunk: BLAKE3(0x00 || id || len as little-endian u64).
    pub fn leaf(&self) -> [u8; 32] {
        let mut h = blake3::Hasher::new();
        h.update(&[LEAF_PREFIX]);
        h.update(self.id.as_bytes());
        h.update(&u64::from(self.len).to_le_bytes());
        *h.finalize().as_bytes()
    }
}

/// rs_merkle hasher: BLAKE3 with a node prefix; leaves come pre-hashed from [`ChunkRef::leaf`].
#[derive(Clone)]
pub struct MerkleBlake3;

impl Hasher for MerkleBlake3 {
    type Hash = [u8; 32];

    fn hash(data: &[u8]) -> [u8; 32] {
        *blake3::hash(data).as_bytes()
    }

    fn concat_and_hash(left: &[u8; 32], right: Option<&[u8; 32]>) -> [u8; 32] {
        match right {
            Some(right) => node(left, right),
            None => *left,
        }
    }
}

fn node(left: &[u8; 32], right: &[u8; 32]) -> [u8; 32] {
    let mut h = blake3::Hasher::new();
    h.update(&[NODE_PREFIX]);
    h.update(left);
    h.update(right);
    *h.finalize().as_bytes()
}

/// Why a manifest or proof was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ManifestError {
    #[error("manifest does not match content id {expected} (it hashes to {actual})")]
    ContentIdMismatch {
        expected: ContentId,
        actual: ContentId,
    },
    #[error("manifest encoding is malformed: {0}")]
    Malformed(&'static str),
    #[error("chunk {index} has length {len}, outside 1..={max}")]
    BadChunkLength { index: usize, len: u32, max: u32 },
    #[error("chunk {index} repeats an earlier chunk id with another length")]
    InconsistentLength { index: usize },
}

/// A file's content as its ordered chunks.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Manifest {
    /// The chunks in file order.
    pub chunks: Vec<ChunkRef>,
}

impl Manifest {
    /// Where each chunk starts in the content, in order.
    pub fn offsets(&self) -> impl Iterator<Item = u64> + '_ {
        self.chunks.iter().scan(0u64, |at, c| {
            let start = *at;
            *at += u64::from(c.len);
            Some(start)
        })
    }

    /// Whether this manifest travels and is stored in pages (more than [`PAGE_CHUNKS`]).
    pub fn is_paged(&self) -> bool {
        self.chunks.len() > PAGE_CHUNKS
    }

    /// Page `page` (of [`PAGE_CHUNKS`] chunks) as a manifest of its own; empty past the end.
    pub fn page(&self, page: usize) -> Manifest {
        Manifest {
            chunks: self
                .chunks
                .chunks(PAGE_CHUNKS)
                .nth(page)
                .map(<[_]>::to_vec)
                .unwrap_or_default(),
        }
    }

    /// Total size of the content in bytes.
    pub fn size(&self) -> u64 {
        self.chunks.iter().map(|c| u64::from(c.len)).sum()
    }

    /// The name of this content.
    pub fn content_id(&self) -> ContentId {
        let mut b = ContentIdBuilder::default();
        for c in &self.chunks {
            b.push(c);
        }
        b.finish()
    }

    /// Accepts this manifest only if it is the content named by `expected`.
    pub fn verify(&self, expected: &ContentId) -> Result<(), ManifestError> {
        same_content(self.content_id(), expected)
    }

    /// Checks every chunk length is possible under a chunker whose largest chunk is `max`,
    /// and that a chunk id that appears twice has the same length both times (a chunk id
    /// is the hash of the bytes, so anything else is a forged manifest).
    pub fn check_lengths(&self, max: u32) -> Result<(), ManifestError> {
        if let Some(index) = self.chunks.iter().position(|c| c.len == 0 || c.len > max) {
            return Err(ManifestError::BadChunkLength {
                index,
                len: self.chunks[index].len,
                max,
            });
        }
        // Positions sorted by chunk id (4 bytes each, not a hash map of every id: a
        // manifest of 1.8 M chunks checks in 7 MB, not 100): equal ids are neighbours.
        let mut order: Vec<u32> = (0..self.chunks.len() as u32).collect();
        order.sort_unstable_by_key(|&i| (self.chunks[i as usize].id, i));
        let conflict = order
            .windows(2)
            .filter(|w| {
                let (a, b) = (&self.chunks[w[0] as usize], &self.chunks[w[1] as usize]);
                a.id == b.id && a.len != b.len
            })
            .map(|w| w[1] as usize)
            .min();
        match conflict {
            Some(index) => Err(ManifestError::InconsistentLength { index }),
            None => Ok(()),
        }
    }

    /// A proof that chunk `index` belongs to this content at that position.
    pub fn prove(&self, index: usize) -> Option<ChunkProof> {
        if index >= self.chunks.len() {
            return None;
        }
        let leaves: Vec<[u8; 32]> = self.chunks.iter().map(ChunkRef::leaf).collect();
        let tree = MerkleTree::<MerkleBlake3>::from_leaves(&leaves);
        let proof = tree.proof(&[index]);
        Some(ChunkProof {
            index,
            total: self.chunks.len(),
            hashes: proof.proof_hashes().to_vec(),
        })
    }

    /// Compact binary form, as stored in the index and sent to peers.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(5 + self.chunks.len() * ENTRY_BYTES);
        out.push(ENCODING_VERSION);
        out.extend_from_slice(&(self.chunks.len() as u32).to_le_bytes());
        for c in &self.chunks {
            out.extend_from_slice(c.id.as_bytes());
            out.extend_from_slice(&c.len.to_le_bytes());
        }
        out
    }

    /// Parses [`Manifest::encode`] output; lengths are checked, content is not (use `verify`).
    pub fn decode(bytes: &[u8]) -> Result<Self, ManifestError> {
        let (&version, rest) = bytes
            .split_first()
            .ok_or(ManifestError::Malformed("empty"))?;
        if version != ENCODING_VERSION {
            return Err(ManifestError::Malformed("unknown encoding version"));
        }
        if rest.len() < 4 {
            return Err(ManifestError::Malformed("truncated header"));
        }
        let (count, body) = rest.split_at(4);
        let count = u32::from_le_bytes(count.try_into().unwrap_or_default()) as usize;
        if body.len() != count.saturating_mul(ENTRY_BYTES) {
            return Err(ManifestError::Malformed(
                "body length does not match chunk count",
            ));
        }
        let chunks = body
            .chunks_exact(ENTRY_BYTES)
            .map(|e| {
                let mut id = [0u8; 32];
                id.copy_from_slice(&e[..32]);
                let mut len = [0u8; 4];
                len.copy_from_slice(&e[32..]);
                ChunkRef {
                    id: ChunkId(id),
                    len: u32::from_le_bytes(len),
                }
            })
            .collect();
        Ok(Manifest { chunks })
    }
}

/// The top of a paged manifest: how many chunks the file has and the Merkle root of each
/// page of [`PAGE_CHUNKS`] chunks, enough to verify every page on its own.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outline {
    /// Chunks in the whole file.
    pub count: u64,
    /// Merkle root of each page, in order.
    pub roots: Vec<[u8; 32]>,
}

impl Outline {
    /// The outline of `manifest` (any size; a manifest that fits one page has one root).
    pub fn of(manifest: &Manifest) -> Outline {
        Self::with_page(manifest, PAGE_CHUNKS)
    }

    fn with_page(manifest: &Manifest, page: usize) -> Outline {
        Outline {
            count: manifest.chunks.len() as u64,
            roots: manifest
                .chunks
                .chunks(page.max(1))
                .map(|p| subtree_root(p.iter().map(ChunkRef::leaf)))
                .collect(),
        }
    }

    /// Pages in the file.
    pub fn pages(&self) -> usize {
        self.roots.len()
    }

    /// Chunks in page `page` (all but the last hold [`PAGE_CHUNKS`]).
    pub fn page_len(&self, page: usize) -> usize {
        Self::len_with(self.count, page, PAGE_CHUNKS)
    }

    fn len_with(count: u64, page: usize, per_page: usize) -> usize {
        let start = (page as u64).saturating_mul(per_page as u64);
        count.saturating_sub(start).min(per_page as u64) as usize
    }

    /// The content id the page roots fold to.
    pub fn content_id(&self) -> ContentId {
        ContentId(subtree_root(self.roots.iter().copied()))
    }

    /// Accepts this outline only if its pages fold to `expected` and their number fits
    /// the chunk count.
    pub fn verify(&self, expected: &ContentId) -> Result<(), ManifestError> {
        self.verify_with(expected, PAGE_CHUNKS)
    }

    fn verify_with(&self, expected: &ContentId, page: usize) -> Result<(), ManifestError> {
        if self.count == 0 || self.roots.len() as u64 != self.count.div_ceil(page as u64) {
            return Err(ManifestError::Malformed(
                "page count does not fit chunk count",
            ));
        }
        same_content(self.content_id(), expected)
    }

    /// Accepts `chunks` as page `page` of a file with this (verified) outline.
    pub fn check_page(&self, page: usize, chunks: &Manifest) -> Result<(), ManifestError> {
        self.check_page_with(page, chunks, PAGE_CHUNKS)
    }

    fn check_page_with(
        &self,
        page: usize,
        chunks: &Manifest,
        per_page: usize,
    ) -> Result<(), ManifestError> {
        let Some(root) = self.roots.get(page) else {
            return Err(ManifestError::Malformed("no such page"));
        };
        if chunks.chunks.len() != Self::len_with(self.count, page, per_page) {
            return Err(ManifestError::Malformed(
                "page has the wrong number of chunks",
            ));
        }
        let actual = subtree_root(chunks.chunks.iter().map(ChunkRef::leaf));
        if &actual == root {
            Ok(())
        } else {
            Err(ManifestError::Malformed("page does not match its root"))
        }
    }

    /// Compact binary form: version 2, chunk count, page count, roots.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(13 + self.roots.len() * 32);
        out.push(OUTLINE_VERSION);
        out.extend_from_slice(&self.count.to_le_bytes());
        out.extend_from_slice(&(self.roots.len() as u32).to_le_bytes());
        for r in &self.roots {
            out.extend_from_slice(r);
        }
        out
    }

    /// Parses [`Outline::encode`] output: at most [`MAX_PAGES`] pages, exactly as many as
    /// the chunk count needs; not verified (use `verify`).
    pub fn decode(bytes: &[u8]) -> Result<Self, ManifestError> {
        let Some((&OUTLINE_VERSION, rest)) = bytes.split_first() else {
            return Err(ManifestError::Malformed("not an outline"));
        };
        if rest.len() < 12 {
            return Err(ManifestError::Malformed("truncated header"));
        }
        let (head, body) = rest.split_at(12);
        let count = u64::from_le_bytes(head[..8].try_into().unwrap_or_default());
        let pages = u32::from_le_bytes(head[8..].try_into().unwrap_or_default()) as usize;
        if pages > MAX_PAGES || pages as u64 != count.div_ceil(PAGE_CHUNKS as u64) {
            return Err(ManifestError::Malformed(
                "page count does not fit chunk count",
            ));
        }
        if body.len() != pages * 32 {
            return Err(ManifestError::Malformed(
                "body length does not match page count",
            ));
        }
        let roots = body
            .chunks_exact(32)
            .map(|r| {
                let mut a = [0u8; 32];
                a.copy_from_slice(r);
                a
            })
            .collect();
        Ok(Outline { count, roots })
    }
}

fn same_content(actual: ContentId, expected: &ContentId) -> Result<(), ManifestError> {
    if &actual == expected {
        Ok(())
    } else {
        Err(ManifestError::ContentIdMismatch {
            expected: *expected,
            actual,
        })
    }
}

/// The root of a left-aligned subtree over `nodes` (leaf hashes, or roots of perfect
/// subtrees of equal height), as [`ContentIdBuilder`] computes it.
fn subtree_root(nodes: impl Iterator<Item = [u8; 32]>) -> [u8; 32] {
    let mut b = ContentIdBuilder::default();
    for n in nodes {
        b.push_node(n);
    }
    b.finish().0
}

/// Computes a [`ContentId`] chunk by chunk in O(log n) memory, for files of any size.
///
/// Gives the same root as `rs_merkle::MerkleTree::from_leaves` over the same leaves: both
/// reduce the leaves to perfect subtrees of decreasing size and fold them right to left.
#[derive(Clone, Debug, Default)]
pub struct ContentIdBuilder {
    /// Roots of complete subtrees, largest first, with their heights.
    stack: Vec<(u32, [u8; 32])>,
    count: u64,
    size: u64,
}

impl ContentIdBuilder {
    /// Adds the next chunk of the file.
    pub fn push(&mut self, chunk: &ChunkRef) {
        self.push_node(chunk.leaf());
        self.size += u64::from(chunk.len);
    }

    fn push_node(&mut self, hash: [u8; 32]) {
        let mut entry = (0u32, hash);
        while let Some(&(height, left)) = self.stack.last() {
            if height != entry.0 {
                break;
            }
            self.stack.pop();
            entry = (height + 1, node(&left, &entry.1));
        }
        self.stack.push(entry);
        self.count += 1;
    }

    /// Chunks pushed so far.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// Bytes covered by the chunks pushed so far.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The content id of everything pushed.
    pub fn finish(&self) -> ContentId {
        let mut iter = self.stack.iter().rev();
        let Some(&(_, mut acc)) = iter.next() else {
            return ContentId(*blake3::hash(EMPTY_CONTENT).as_bytes());
        };
        for (_, left) in iter {
            acc = node(left, &acc);
        }
        ContentId(acc)
    }
}

/// Evidence that one chunk sits at a given position of the content named by a `ContentId`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChunkProof {
    /// Position of the chunk in the file.
    pub index: usize,
    /// Number of chunks in the file.
    pub total: usize,
    /// Sibling hashes from the leaf to the root.
    pub hashes: Vec<[u8; 32]>,
}

impl ChunkProof {
    /// True when `chunk` is at `self.index` of the content named `content`.
    pub fn verify(&self, content: &ContentId, chunk: &ChunkRef) -> bool {
        if self.index >= self.total {
            return false;
        }
        let proof = MerkleProof::<MerkleBlake3>::new(self.hashes.clone());
        proof.verify(content.0, &[self.index], &[chunk.leaf()], self.total)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn chunk(i: u32) -> ChunkRef {
        ChunkRef {
            id: ChunkId::of(&i.to_le_bytes()),
            len: 1000 + i,
        }
    }

    fn manifest(n: u32) -> Manifest {
        Manifest {
            chunks: (0..n).map(chunk).collect(),
        }
    }

    proptest! {
        /// The page roots of any manifest fold to its content id, whatever the page size
        /// and however the chunk count falls on page boundaries; every page checks against
        /// its root, and a page from elsewhere or of the wrong length does not.
        #[test]
        fn pages_fold_to_the_content_id(n in 1u32..300, shift in 0u32..6) {
            let per_page = 1usize << shift;
            let m = manifest(n);
            let id = m.content_id();
            let outline = Outline::with_page(&m, per_page);
            prop_assert!(outline.verify_with(&id, per_page).is_ok());
            for (p, chunks) in m.chunks.chunks(per_page).enumerate() {
                let page = Manifest { chunks: chunks.to_vec() };
                prop_assert!(outline.check_page_with(p, &page, per_page).is_ok());
                let mut forged = page.clone();
                forged.chunks[0].len += 1;
                prop_assert!(outline.check_page_with(p, &forged, per_page).is_err());
                let mut short = page.clone();
                short.chunks.pop();
                prop_assert!(outline.check_page_with(p, &short, per_page).is_err());
            }
            let mut lying = outline.clone();
            lying.count += per_page as u64;
            prop_assert!(lying.verify_with(&id, per_page).is_err());
            let other = manifest(n + 1).content_id();
            prop_assert!(outline.verify_with(&other, per_page).is_err());
        }
    }

    #[test]
    fn a_large_manifest_is_paged_and_its_outline_round_trips() {
        let m = manifest(PAGE_CHUNKS as u32 * 2 + 3);
        assert!(m.is_paged());
        let outline = Outline::of(&m);
        assert_eq!(outline.pages(), 3);
        assert_eq!(outline.page_len(2), 3);
        assert_eq!(Outline::decode(&outline.encode()).unwrap(), outline);
        outline.verify(&m.content_id()).unwrap();
        outline.check_page(1, &m.page(1)).unwrap();
        assert!(outline.check_page(0, &m.page(1)).is_err());
        let mut bad = outline.encode();
        bad[9] = 9; // page count no longer fits the chunk count
        assert!(Outline::decode(&bad).is_err());
        assert!(Outline::decode(&m.page(0).encode()).is_err());
    }

    #[test]
    fn a_manifest_verifies_against_its_own_content_id() {
        let m = manifest(37);
        assert!(m.verify(&m.content_id()).is_ok());
    }

    #[test]
    fn tampered_chunk_list_fails_verification() {
        let m = manifest(10);
        let id = m.content_id();

        let mut swapped = m.clone();
        swapped.chunks.swap(2, 3);
        assert!(swapped.verify(&id).is_err());

        let mut replaced = m.clone();
        replaced.chunks[7].id = ChunkId::of(b"evil");
        assert!(replaced.verify(&id).is_err());

        let mut dropped = m.clone();
        dropped.chunks.pop();
        assert!(dropped.verify(&id).is_err());

        let mut extended = m.clone();
        extended.chunks.push(chunk(99));
        assert!(extended.verify(&id).is_err());
    }

    #[test]
    fn tampered_length_fails_verification() {
        let m = manifest(5);
        let id = m.content_id();
        let mut t = m.clone();
        t.chunks[1].len += 1;
        assert!(matches!(
            t.verify(&id),
            Err(ManifestError::ContentIdMismatch { .. })
        ));
    }

    #[test]
    fn empty_content_has_a_fixed_id_distinct_from_any_chunk() {
        let empty = Manifest::default();
        assert_eq!(empty.content_id(), Manifest::default().content_id());
        assert_ne!(empty.content_id(), manifest(1).content_id());
        assert_eq!(empty.size(), 0);
    }

    #[test]
    fn a_proof_for_one_chunk_verifies_and_a_forged_one_does_not() {
        let m = manifest(13);
        let id = m.content_id();
        for i in 0..13 {
            let proof = m.prove(i).unwrap();
            assert!(proof.verify(&id, &m.chunks[i]), "chunk {i}");
            let other = m.chunks[(i + 1) % 13];
            assert!(!proof.verify(&id, &other), "foreign chunk at {i} must fail");
        }
        let mut wrong_place = m.prove(4).unwrap();
        wrong_place.index = 5;
        assert!(!wrong_place.verify(&id, &m.chunks[4]));
        assert!(m.prove(13).is_none());
    }

    #[test]
    fn encoding_round_trips_and_rejects_truncation() {
        let m = manifest(9);
        let bytes = m.encode();
        assert_eq!(Manifest::decode(&bytes).unwrap(), m);
        assert!(Manifest::decode(&bytes[..bytes.len() - 1]).is_err());
        assert!(Manifest::decode(&[]).is_err());
        let mut lying_count = bytes.clone();
        lying_count[1] = 200;
        assert!(Manifest::decode(&lying_count).is_err());
        let mut bad_version = bytes;
        bad_version[0] = 9;
        assert!(Manifest::decode(&bad_version).is_err());
    }

    #[test]
    fn lengths_outside_the_chunker_bounds_are_refused() {
        let mut m = manifest(3);
        assert!(m.check_lengths(2000).is_ok());
        m.chunks[2].len = 0;
        assert!(m.check_lengths(2000).is_err());
    }

    #[test]
    fn one_chunk_id_with_two_lengths_is_refused() {
        let mut m = manifest(3);
        m.chunks[2].id = m.chunks[0].id;
        m.chunks[2].len = m.chunks[0].len;
        assert!(m.check_lengths(2000).is_ok(), "a repeated chunk is fine");
        m.chunks[2].len = m.chunks[0].len + 1;
        assert_eq!(
            m.check_lengths(2000),
            Err(ManifestError::InconsistentLength { index: 2 })
        );
    }

    proptest! {
        #[test]
        fn streaming_root_equals_rs_merkle_root(n in 1u32..300) {
            let m = manifest(n);
            let leaves: Vec<[u8; 32]> = m.chunks.iter().map(ChunkRef::leaf).collect();
            let tree = MerkleTree::<MerkleBlake3>::from_leaves(&leaves);
            prop_assert_eq!(Some(m.content_id().0), tree.root());
        }
    }
}
