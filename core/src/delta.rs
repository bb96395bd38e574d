//! Sub-chunk deltas: an edited chunk sent as the difference from bytes the receiver
//! already has, rsync-style, instead of whole.
//!
//! Content-defined chunking keeps an edit local to the chunks it touches, but each of
//! those still costs a whole chunk (64 KiB on average) on the wire, even for a 100-byte
//! insertion. When a device replaces its own older version of a file, the old bytes at
//! about the same place are a good *base*: the receiver sends a [`signature`] of that
//! base, the peer answers with a [`diff`] of the chunk against it, and the receiver
//! [`apply`]s it and accepts the result only if its BLAKE3 matches the chunk id. The
//! delta format is librsync's (the `fast_rsync` crate); its MD4 block hashes only find
//! matches, the chunk id decides.
//!
//! Every edited chunk has a base, not only those at the edge of an edited run: scattered
//! page writes (databases, VM images, mailboxes) change a few pages in almost every chunk,
//! so a run of edited chunks can span the whole file while each chunk differs from its
//! old bytes by a few pages. [`Anchors::base_window`] picks the base: the old file's bytes
//! aligned by the nearest unchanged chunk before the missing one ([`anchors`]; at the
//! same offset when none is), with some slack on both sides so that insertions and
//! deletions inside the chunk still line up, and never more than a signature may cover
//! ([`MAX_SIGNATURE_BLOCKS`]), which is what keeps a delta request cheap for the server.

use std::collections::HashMap;
use std::ops::Range;

use fast_rsync::{Signature, SignatureOptions};

use crate::hash::ChunkId;
use crate::manifest::{ChunkRef, Manifest};

/// Block size of the base signature: small enough that a small edit costs little
/// literal data, large enough that a signature is ~2.5% of its base.
pub const BLOCK_SIZE: u32 = 512;
/// Bytes of MD4 per block in the signature (with the 4-byte rolling checksum).
pub const HASH_BYTES: u32 = 8;
/// Bytes of old data taken on each side of the aligned position.
pub const SLACK: u64 = 4096;
/// Most blocks in a signature: a base of the largest chunk (256 KiB) plus slack both sides.
pub const MAX_SIGNATURE_BLOCKS: usize =
    ((256 << 10) + 2 * SLACK as usize) / BLOCK_SIZE as usize + 1;

/// Why a delta could not be made or used.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DeltaError {
    #[error("invalid base signature")]
    BadSignature,
    #[error("the delta does not apply: {0}")]
    BadDelta(String),
    #[error("the delta does not rebuild chunk {0}")]
    Mismatch(ChunkId),
}

/// The signature of `base`, sent to the peer that has the wanted chunk.
pub fn signature(base: &[u8]) -> Vec<u8> {
    Signature::calculate(
        base,
        SignatureOptions {
            block_size: BLOCK_SIZE,
            crypto_hash_size: HASH_BYTES,
        },
    )
    .into_serialized()
}

/// The delta that turns the base behind `signature` (untrusted, from a peer) into `chunk`.
///
/// Only signatures this crate makes are accepted ([`BLOCK_SIZE`], [`HASH_BYTES`], at most
/// [`MAX_SIGNATURE_BLOCKS`] blocks): the diff hashes one block per rolling-checksum match,
/// so a peer free to pick a large block size could make one small request cost seconds
/// of CPU. Returns `None` when the delta would not be smaller than the chunk.
pub fn diff(signature: &[u8], chunk: &[u8]) -> Result<Option<Vec<u8>>, DeltaError> {
    let field = |at: usize| {
        signature
            .get(at..at + 4)
            .and_then(|b| b.try_into().ok())
            .map(u32::from_be_bytes)
            .ok_or(DeltaError::BadSignature)
    };
    let (block, hash) = (field(4)?, field(8)?);
    let blocks = signature.len().saturating_sub(12) / (4 + HASH_BYTES as usize);
    if block != BLOCK_SIZE || hash != HASH_BYTES || blocks > MAX_SIGNATURE_BLOCKS {
        return Err(DeltaError::BadSignature);
    }
    let sig = Signature::deserialize(signature.to_vec()).map_err(|_| DeltaError::BadSignature)?;
    let mut out = Vec::with_capacity(chunk.len() / 8 + 64);
    fast_rsync::diff(&sig.index(), chunk, &mut out).map_err(|_| DeltaError::BadSignature)?;
    Ok((out.len() < chunk.len()).then_some(out))
}

/// Rebuilds `chunk` from `base` and a peer's `delta`; the result is checked against the
/// chunk's length and id, so a wrong or hostile delta can only fail.
pub fn apply(base: &[u8], delta: &[u8], chunk: &ChunkRef) -> Result<Vec<u8>, DeltaError> {
    let mut out = Vec::with_capacity(chunk.len as usize);
    fast_rsync::apply_limited(base, delta, &mut out, chunk.len as usize)
        .map_err(|e| DeltaError::BadDelta(e.to_string()))?;
    if out.len() != chunk.len as usize || !chunk.id.matches(&out) {
        return Err(DeltaError::Mismatch(chunk.id));
    }
    Ok(out)
}

/// Where each chunk of `new` starts in `new`, and, for chunks that `old` also has, where
/// it starts in `old`: the anchors that line the two versions up.
pub struct Anchors {
    new_offsets: Vec<u64>,
    old_offset: Vec<Option<u64>>,
    old_size: u64,
}

/// Lines `new` up against `old` by the chunks they share.
pub fn anchors(old: &Manifest, new: &Manifest) -> Anchors {
    let mut in_old: HashMap<ChunkId, u64> = HashMap::with_capacity(old.chunks.len());
    for (c, at) in old.chunks.iter().zip(old.offsets()) {
        in_old.entry(c.id).or_insert(at);
    }
    let new_offsets = new.offsets().collect();
    Anchors {
        new_offsets,
        old_offset: new
            .chunks
            .iter()
            .map(|c| in_old.get(&c.id).copied())
            .collect(),
        old_size: old.size(),
    }
}

impl Anchors {
    /// Whether chunk `i` of the new version sits next to a chunk both versions share: the
    /// edge of an edited region, where a delta almost always pays. Inside a run a delta
    /// pays when the run was edited in place and not when it was rewritten; the puller
    /// tries those until several in a row save little.
    pub fn at_edge(&self, i: usize) -> bool {
        let shared = |k: Option<usize>| {
            k.and_then(|k| self.old_offset.get(k))
                .is_some_and(Option::is_some)
        };
        self.old_offset.get(i).is_some_and(Option::is_none)
            && (shared(i.checked_sub(1)) || shared(i.checked_add(1)))
    }

    /// The range of the old version to use as the base for chunk `i` (of `len` bytes) of
    /// the new version: aligned by the nearest shared chunk before it (or after it, for
    /// an edit at the start), widened by [`SLACK`] on each side; None when there is no
    /// old byte there or the window is larger than a signature may cover.
    pub fn base_window(&self, i: usize, len: u32) -> Option<Range<u64>> {
        let new_at = *self.new_offsets.get(i)?;
        let before = (0..i)
            .rev()
            .find_map(|k| self.old_offset[k].map(|o| (k, o)));
        let after = (i + 1..self.old_offset.len()).find_map(|k| self.old_offset[k].map(|o| (k, o)));
        // old position = new position + (old - new) of the anchor
        // Line up on the shared neighbour next to this chunk: after an insertion before
        // the chunk, only the chunk after it still knows where the old bytes are.
        let next_is_shared = self.old_offset.get(i + 1).is_some_and(Option::is_some);
        let prev_is_shared = i > 0 && self.old_offset[i - 1].is_some();
        let old_at = match (before, after) {
            (_, Some((k, o))) if next_is_shared && !prev_is_shared => {
                (new_at + o).saturating_sub(self.new_offsets[k])
            }
            (Some((k, o)), _) => (new_at + o).checked_sub(self.new_offsets[k])?,
            (None, Some((k, o))) => (new_at + o).saturating_sub(self.new_offsets[k]),
            (None, None) => new_at,
        };
        let start = old_at.saturating_sub(SLACK);
        let end = (old_at + u64::from(len) + SLACK).min(self.old_size);
        // A base whose signature a peer would refuse is no base. (`start` is past `end`
        // when a peer's manifest gives a shared chunk another length than the old one.)
        let fits =
            end.saturating_sub(start) <= (MAX_SIGNATURE_BLOCKS as u64 - 1) * u64::from(BLOCK_SIZE);
        (start < end && fits).then_some(start..end)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chunker::{Chunker, ChunkerParams};

    fn random(n: usize, seed: u64) -> Vec<u8> {
        let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
    }

    /// The new version's manifest, its anchors against the old, and the chunks it changed.
    fn changed_chunks(old: &[u8], new: &[u8]) -> (Manifest, Anchors, Vec<usize>) {
        let nm = manifest_of(new);
        let a = anchors(&manifest_of(old), &nm);
        let changed = (0..nm.chunks.len())
            .filter(|&i| a.old_offset[i].is_none())
            .collect();
        (nm, a, changed)
    }

    /// Chunk `i` of `new` as a delta from its base in `old`: checks that the delta rebuilds
    /// the chunk and returns the bytes of its signature and of the delta.
    fn round_trip(old: &[u8], new: &[u8], nm: &Manifest, a: &Anchors, i: usize) -> (usize, usize) {
        let c = nm.chunks[i];
        let w = a.base_window(i, c.len).expect("the chunk has a base");
        let base = &old[w.start as usize..w.end as usize];
        let at = a.new_offsets[i] as usize;
        let chunk = &new[at..at + c.len as usize];
        let sig = signature(base);
        let delta = diff(&sig, chunk)
            .unwrap()
            .expect("a delta smaller than the chunk");
        assert_eq!(apply(base, &delta, &c).unwrap(), chunk);
        (sig.len(), delta.len())
    }

    fn manifest_of(data: &[u8]) -> Manifest {
        let chunker = Chunker::new(ChunkerParams::default()).unwrap();
        let chunks = chunker
            .chunk_slice(data)
            .map(|(_, c)| ChunkRef::of(c))
            .collect();
        Manifest { chunks }
    }

    #[test]
    fn a_small_insertion_costs_a_small_delta() {
        let old = random(1 << 20, 1);
        let mut new = old.clone();
        new.splice(300_000..300_000, random(100, 2));
        let (nm, a, changed) = changed_chunks(&old, &new);
        assert!(!changed.is_empty() && changed.len() <= 2, "{changed:?}");
        let mut total = 0;
        for &i in &changed {
            assert!(a.at_edge(i));
            let (sig, delta) = round_trip(&old, &new, &nm, &a, i);
            total += sig + delta;
        }
        // A whole chunk is 16-256 KiB; signature + delta of an edit stay a few KiB.
        assert!(total < 8 * 1024, "{total} bytes for a 100-byte insertion");
    }

    #[test]
    fn a_long_insertion_is_lined_up_from_both_sides() {
        let old = random(1 << 20, 11);
        let mut new = old.clone();
        let inserted = 20_000;
        new.splice(400_000..400_000, random(inserted, 12));
        let (nm, a, _) = changed_chunks(&old, &new);
        let mut sent = 0;
        for i in (0..nm.chunks.len()).filter(|&i| a.at_edge(i)) {
            sent += round_trip(&old, &new, &nm, &a, i).1;
        }
        // The new bytes must travel; the old bytes around them must not.
        assert!(
            sent < inserted + 8192,
            "{sent} bytes for a {inserted}-byte insertion"
        );
    }

    #[test]
    fn a_wrong_delta_or_base_is_refused_not_trusted() {
        let base = random(70_000, 3);
        let mut chunk = base[1000..66_000].to_vec();
        chunk[30_000] ^= 1;
        let c = ChunkRef::of(&chunk);
        let delta = diff(&signature(&base), &chunk).unwrap().unwrap();
        assert_eq!(apply(&base, &delta, &c).unwrap(), chunk);
        // The same delta against other claims: length and id are checked.
        let other = ChunkRef {
            id: ChunkId::of(b"something else"),
            len: c.len,
        };
        assert_eq!(
            apply(&base, &delta, &other),
            Err(DeltaError::Mismatch(other.id))
        );
        let shorter = ChunkRef {
            id: c.id,
            len: c.len - 1,
        };
        assert!(apply(&base, &delta, &shorter).is_err());
        // Garbage is an error, never a panic.
        assert!(apply(&base, b"\x72\x73\x02\x36\xff\xff", &c).is_err());
        assert!(apply(&base, &[], &c).is_err());
    }

    #[test]
    fn hostile_signatures_are_refused() {
        let chunk = random(10_000, 5);
        let mut sig = signature(&random(4096, 6));
        assert!(diff(&sig, &chunk).is_ok());
        sig[4..8].copy_from_slice(&0u32.to_be_bytes()); // block size 0 would loop forever
        assert_eq!(diff(&sig, &chunk), Err(DeltaError::BadSignature));
        // A large block size would make every checksum match hash 64 KiB.
        let mut sig = signature(&random(4096, 6));
        sig[4..8].copy_from_slice(&65_536u32.to_be_bytes());
        assert_eq!(diff(&sig, &chunk), Err(DeltaError::BadSignature));
        // More blocks than any real base needs.
        let big = signature(&random(MAX_SIGNATURE_BLOCKS * BLOCK_SIZE as usize + 1, 7));
        assert_eq!(diff(&big, &chunk), Err(DeltaError::BadSignature));
        let mut sig = signature(&random(4096, 6));
        sig[8..12].copy_from_slice(&17u32.to_be_bytes());
        assert_eq!(diff(&sig, &chunk), Err(DeltaError::BadSignature));
        assert_eq!(diff(b"abc", &chunk), Err(DeltaError::BadSignature));
        assert_eq!(diff(&[0; 12], &chunk), Err(DeltaError::BadSignature));
    }

    #[test]
    fn a_rewritten_middle_is_not_an_edge() {
        let old = random(2 << 20, 7);
        let mut new = old.clone();
        new[600_000..600_000 + (1 << 20)].copy_from_slice(&random(1 << 20, 8));
        let (_, a, changed) = changed_chunks(&old, &new);
        let edges = changed.iter().filter(|&&i| a.at_edge(i)).count();
        assert!(changed.len() > 4, "{changed:?}");
        assert_eq!(edges, 2, "only the first and last changed chunk are edges");
    }

    /// Issue #16: 4 KiB pages rewritten at random places (as a database writes) leave
    /// almost no chunk unchanged, and only the edges of runs had a base. Every changed
    /// chunk's window holds its old bytes, so signature and delta together cost about the
    /// pages that changed.
    #[test]
    fn scattered_page_writes_cost_about_the_pages_that_changed() {
        const PAGE: usize = 4096;
        let old = random(8 << 20, 21);
        let mut new = old.clone();
        let pages = old.len() / PAGE;
        let mut x = 0x2545_F491_4F6C_DD1Du64;
        let mut changed_pages = std::collections::BTreeSet::new();
        while changed_pages.len() < pages / 8 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            changed_pages.insert(x as usize % pages);
        }
        for (n, &p) in changed_pages.iter().enumerate() {
            // Some pages rewritten whole, most with a few records changed.
            let (at, len) = if n % 4 == 0 {
                (0, PAGE)
            } else {
                (n * 37 % 3000, 200)
            };
            let start = p * PAGE + at;
            new[start..start + len].copy_from_slice(&random(len, n as u64 + 100));
        }
        let (nm, a, changed) = changed_chunks(&old, &new);
        let edges = changed.iter().filter(|&&i| a.at_edge(i)).count();
        let whole: u64 = changed.iter().map(|&i| u64::from(nm.chunks[i].len)).sum();
        let mut cost = 0u64;
        for &i in &changed {
            let (sig, delta) = round_trip(&old, &new, &nm, &a, i);
            cost += (sig + delta) as u64;
        }
        let page_bytes = (changed_pages.len() * PAGE) as u64;
        assert!(
            edges * 2 < changed.len(),
            "{edges} of {} changed chunks are edges: not the case this test is about",
            changed.len()
        );
        assert!(
            cost <= 2 * page_bytes,
            "{cost} bytes of signatures and deltas for {page_bytes} bytes of changed pages \
             ({whole} bytes of changed chunks)"
        );
    }

    proptest::proptest! {
        #[test]
        fn diff_and_apply_never_panic_on_garbage(
            sig in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..300),
            delta in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..300),
        ) {
            let chunk = random(3000, 9);
            let _ = diff(&sig, &chunk);
            let c = ChunkRef::of(&chunk);
            let _ = apply(&chunk, &delta, &c);
        }
    }
}
