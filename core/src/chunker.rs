//! Content-defined chunking: where a file is cut into chunks.
//!
//! Every device of a folder must cut the same bytes at the same places, or dedup and delta
//! transfer stop working. So the cut rule is a value, [`ChunkerParams`], that is part of a
//! folder's identity and can be compared between peers. The rule is FastCDC v2020 from the
//! `fastcdc` crate; this module adds bounded-memory streaming over any reader and the cut
//! function for callers that chunk regions of a file in parallel.
//!
//! The cut for a chunk that starts at offset `p` depends only on the bytes
//! `[p, min(p + max, len))`. Everything else here relies on that property.

use std::fmt;
use std::io::{self, Read};
use std::str::FromStr;

use fastcdc::v2020::{self, Normalization};

use crate::manifest::ChunkRef;

/// The chunking rule of a folder. Two peers can share a folder only if these are equal.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ChunkerParams {
    /// Version of the cut algorithm; 1 is FastCDC v2020 with the crate's default gear table.
    pub version: u16,
    /// Smallest chunk, except for the last chunk of a file.
    pub min: u32,
    /// Target average chunk size.
    pub avg: u32,
    /// Largest chunk.
    pub max: u32,
    /// FastCDC normalization level (0-3).
    pub normalization: u8,
}

/// Why a [`ChunkerParams`] value cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParamsError {
    #[error("unknown chunker version {0} (this build knows version 1)")]
    UnknownVersion(u16),
    #[error(
        "chunk sizes must satisfy 64 <= min <= avg <= max <= 16 MiB, avg <= 4 MiB, and be even, got {min}/{avg}/{max}"
    )]
    BadSizes { min: u32, avg: u32, max: u32 },
    #[error("normalization level must be 0-3, got {0}")]
    BadNormalization(u8),
    #[error(
        "chunker parameters must look like fastcdc2020:<version>:<min>:<avg>:<max>:<level>, got {0:?}"
    )]
    Malformed(String),
}

impl ChunkerParams {
    /// The parameters new folders get: 16 KiB / 64 KiB / 256 KiB, normalization level 1.
    pub const V1_DEFAULT: ChunkerParams = ChunkerParams {
        version: 1,
        min: 16 * 1024,
        avg: 64 * 1024,
        max: 256 * 1024,
        normalization: 1,
    };

    /// Checks that these parameters can be used to chunk.
    pub fn validate(&self) -> Result<(), ParamsError> {
        if self.version != 1 {
            return Err(ParamsError::UnknownVersion(self.version));
        }
        let (min, avg, max) = (self.min, self.avg, self.max);
        let sizes_ok = (64..=16 * 1024 * 1024).contains(&min)
            && min <= avg
            && avg <= max
            // FastCDC has masks for averages up to 4 MiB (`select_masks` indexes past its
            // table beyond that).
            && avg <= 4 * 1024 * 1024
            && max <= 16 * 1024 * 1024
            && min % 2 == 0
            && avg % 2 == 0
            && max % 2 == 0;
        if !sizes_ok {
            return Err(ParamsError::BadSizes { min, avg, max });
        }
        if self.normalization > 3 {
            return Err(ParamsError::BadNormalization(self.normalization));
        }
        Ok(())
    }
}

impl Default for ChunkerParams {
    fn default() -> Self {
        Self::V1_DEFAULT
    }
}

impl fmt::Display for ChunkerParams {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "fastcdc2020:{}:{}:{}:{}:{}",
            self.version, self.min, self.avg, self.max, self.normalization
        )
    }
}

impl FromStr for ChunkerParams {
    type Err = ParamsError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let malformed = || ParamsError::Malformed(s.to_string());
        let mut parts = s.split(':');
        if parts.next() != Some("fastcdc2020") {
            return Err(malformed());
        }
        let mut num = || -> Result<u32, ParamsError> {
            parts
                .next()
                .and_then(|p| p.parse().ok())
                .ok_or_else(malformed)
        };
        let version = u16::try_from(num()?).map_err(|_| malformed())?;
        let (min, avg, max) = (num()?, num()?, num()?);
        let normalization = u8::try_from(num()?).map_err(|_| malformed())?;
        if parts.next().is_some() {
            return Err(malformed());
        }
        let params = ChunkerParams {
            version,
            min,
            avg,
            max,
            normalization,
        };
        params.validate()?;
        Ok(params)
    }
}

/// A ready-to-use cut rule: [`ChunkerParams`] with its masks precomputed.
#[derive(Clone, Debug)]
pub struct Chunker {
    params: ChunkerParams,
    mask_s: u64,
    mask_l: u64,
}

impl Chunker {
    /// Prepares the cut rule for `params`.
    pub fn new(params: ChunkerParams) -> Result<Self, ParamsError> {
        params.validate()?;
        let level = match params.normalization {
            0 => Normalization::Level0,
            1 => Normalization::Level1,
            2 => Normalization::Level2,
            _ => Normalization::Level3,
        };
        let (mask_s, mask_l) = v2020::select_masks(params.avg as usize, level);
        Ok(Chunker {
            params,
            mask_s,
            mask_l,
        })
    }

    /// The parameters this chunker cuts with.
    pub fn params(&self) -> ChunkerParams {
        self.params
    }

    /// The largest chunk this chunker produces.
    pub fn max_chunk(&self) -> usize {
        self.params.max as usize
    }

    /// Length of the chunk that starts at `window[0]`.
    ///
    /// `window` must hold at least `max_chunk()` bytes, or everything up to the end of the
    /// data: a shorter window that is not the end of the data gives a wrong cut.
    ///
    /// The same cut as `fastcdc::v2020::cut` (a test holds them equal on any data and
    /// parameters), found faster: see [`first_cut`].
    pub fn cut(&self, window: &[u8]) -> usize {
        let p = &self.params;
        let (min, avg, max) = (p.min as usize, p.avg as usize, p.max as usize);
        if window.len() <= min {
            return window.len();
        }
        let remaining = window.len().min(max);
        // The crate tests byte pairs: positions below `center` (rounded down to even) with
        // the small-chunk mask, then up to `remaining` (rounded down) with the large one;
        // an odd last byte is never tested.
        let center = avg.min(remaining) & !1;
        let end = remaining & !1;
        let src = &window[..end];
        first_cut(src, min, min, center, self.mask_s)
            .or_else(|| first_cut(src, min, center, end, self.mask_l))
            .unwrap_or(remaining)
    }

    /// Cuts all of `data` (which ends at the end of the content) and calls `each(offset, chunk)`.
    pub fn chunk_slice<'a>(&self, data: &'a [u8]) -> SliceChunks<'a, '_> {
        SliceChunks {
            chunker: self,
            data,
            pos: 0,
        }
    }

    /// Cuts everything `reader` yields, calling `each(offset, chunk)` in order, with memory
    /// bounded by one read buffer of a few times the largest chunk, whatever the input size.
    ///
    /// Returns the number of bytes read. Stops at the first error of `each` or of the reader.
    pub fn chunk_reader<R: Read, E: From<io::Error>>(
        &self,
        mut reader: R,
        buf: &mut Vec<u8>,
        mut each: impl FnMut(u64, &[u8]) -> Result<(), E>,
    ) -> Result<u64, E> {
        let cap = (4 * self.max_chunk()).max(1 << 20);
        if buf.len() < cap {
            buf.resize(cap, 0);
        }
        let cap = buf.len();
        let (mut start, mut filled, mut offset) = (0usize, 0usize, 0u64);
        let mut eof = false;
        loop {
            // Refill until the window holds a whole maximal chunk or the input ended.
            if !eof && filled - start < self.max_chunk() {
                buf.copy_within(start..filled, 0);
                filled -= start;
                start = 0;
                while filled < cap {
                    match reader.read(&mut buf[filled..]) {
                        Ok(0) => {
                            eof = true;
                            break;
                        }
                        Ok(n) => filled += n,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(e) => return Err(e.into()),
                    }
                }
            }
            if start == filled {
                return Ok(offset);
            }
            let len = self.cut(&buf[start..filled]);
            each(offset, &buf[start..start + len])?;
            start += len;
            offset += len as u64;
        }
    }
}

/// FastCDC v2020's gear table (the crate's, unseeded).
static GEAR: std::sync::LazyLock<[u64; 256]> = std::sync::LazyLock::new(|| {
    let (gear, _) = v2020::get_gear_with_seed(0);
    gear.as_ref()
        .try_into()
        .expect("the gear table has 256 entries")
});

/// Lanes scanned side by side by [`first_cut`], and the bytes each takes per round
/// (measured on an AVX-512 Xeon: 4 x 4 KiB 3.97 GiB/s; 4 x 1 KiB 3.55, 4 x 2 KiB 3.81,
/// 4 x 8 KiB 3.19, 8 x 1 KiB 2.98; the crate's loop 1.77).
const LANES: usize = 4;
const LANE_BYTES: usize = 4096;
/// The gear hash's window: a byte's contribution is shifted out after 64 more bytes.
const GEAR_WINDOW: usize = 64;

/// The first position in `[from, to)` of `src` where FastCDC v2020 cuts with `mask`, the
/// gear hash starting from zero at `origin` (`64 <= origin <= from <= to`).
///
/// The crate's loop is bound by one dependency chain (each byte's hash needs the previous
/// one: the crate's notes find it bound by that chain with `llvm-mca`). But the hash at a
/// position depends only on the 64 bytes before it (and on nothing before `origin`), so
/// [`LANES`] blocks of a round are scanned at once, each lane's hash first rebuilt from the
/// 64 bytes before its block: independent chains the CPU runs in parallel (`cargo bench -p
/// cairn-core --bench chunking`: 2.2 times the crate's speed). The crate steps two bytes at a time and tests the hash after an even
/// byte shifted left once against the mask shifted left once, which would drop the mask's
/// top bit; none of its masks has that bit (a test checks), so one mask serves both.
fn first_cut(src: &[u8], origin: usize, from: usize, to: usize, mask: u64) -> Option<usize> {
    let gear: &[u64; 256] = &GEAR;
    let mut start = from;
    while to - start >= LANES * LANE_BYTES {
        let lane_start: [usize; LANES] = std::array::from_fn(|i| start + i * LANE_BYTES);
        // Rebuild each lane's hash from the (up to) 64 bytes before it, side by side;
        // bytes before `origin` count as nothing.
        let mut h = [0u64; LANES];
        for k in 0..GEAR_WINDOW {
            for i in 0..LANES {
                let at = lane_start[i] - GEAR_WINDOW + k;
                let g = if at >= origin {
                    gear[src[at] as usize]
                } else {
                    0
                };
                h[i] = (h[i] << 1).wrapping_add(g);
            }
        }
        let lanes: [&[u8; LANE_BYTES]; LANES] = std::array::from_fn(|i| {
            let block = &src[lane_start[i]..lane_start[i] + LANE_BYTES];
            block.try_into().expect("a block is LANE_BYTES long")
        });
        for step in 0..LANE_BYTES {
            for i in 0..LANES {
                h[i] = (h[i] << 1).wrapping_add(gear[lanes[i][step] as usize]);
                if h[i] & mask == 0 {
                    return Some(first_of_lanes(src, &h, &lane_start, i, step, mask));
                }
            }
        }
        start += LANES * LANE_BYTES;
    }
    // The rest, fewer bytes than a round: one lane.
    let mut h = 0u64;
    for &b in &src[start.saturating_sub(GEAR_WINDOW).max(origin)..start] {
        h = (h << 1).wrapping_add(gear[b as usize]);
    }
    scan_lane(src, h, start, to, mask)
}

/// Lane `hit` matched at `step` of its block; lanes before it (whose blocks come first)
/// have scanned up to and including `step` without a match. The first match in file order
/// is the earliest one the lanes before `hit` find in the rest of their blocks, else the hit.
fn first_of_lanes(
    src: &[u8],
    h: &[u64; LANES],
    lane_start: &[usize; LANES],
    hit: usize,
    step: usize,
    mask: u64,
) -> usize {
    (0..hit)
        .find_map(|i| {
            let from = lane_start[i] + step + 1;
            scan_lane(src, h[i], from, lane_start[i] + LANE_BYTES, mask)
        })
        .unwrap_or(lane_start[hit] + step)
}

/// The first cut in `[from, to)` of one lane whose hash before `from` is `h`.
fn scan_lane(src: &[u8], mut h: u64, from: usize, to: usize, mask: u64) -> Option<usize> {
    let gear: &[u64; 256] = &GEAR;
    (from..to).find(|&at| {
        h = (h << 1).wrapping_add(gear[src[at] as usize]);
        h & mask == 0
    })
}

/// Iterator over the chunks of an in-memory buffer: `(offset, bytes)`.
pub struct SliceChunks<'a, 'c> {
    chunker: &'c Chunker,
    data: &'a [u8],
    pos: usize,
}

impl<'a> Iterator for SliceChunks<'a, '_> {
    type Item = (usize, &'a [u8]);
    fn next(&mut self) -> Option<Self::Item> {
        if self.pos >= self.data.len() {
            return None;
        }
        let len = self.chunker.cut(&self.data[self.pos..]);
        let item = (self.pos, &self.data[self.pos..self.pos + len]);
        self.pos += len;
        Some(item)
    }
}

/// The chunks of one segment of a file, cut as if a chunk started at the segment's first
/// byte, which need not be a real cut. See [`stitch`].
#[derive(Clone, Debug, Default)]
pub struct SegmentCuts {
    /// Offset of the segment's first byte in the file.
    pub start: u64,
    /// Consecutive chunks from `start` that begin before the segment's end.
    pub chunks: Vec<ChunkRef>,
}

/// Joins the chunks of consecutive segments, each cut on its own (in parallel), into exactly
/// the chunks one pass from offset 0 gives.
///
/// A segment's own cuts are wrong until they meet a real cut: from a shared cut on, both
/// passes see the same bytes and cut alike. So walking from the real end of the previous
/// segment, `chunk_at(offset)` supplies real chunks one at a time until one ends where a
/// chunk of the segment starts; the rest of the segment is then taken as it is. On real data
/// the passes meet within a chunk or two; on data where they never meet, `chunk_at` covers
/// the whole segment and the result is still exact.
///
/// `segments` must be in file order, the first starting at 0 and each starting where the
/// previous one's segment (not its last chunk) ended. `chunk_at` returns the real chunk
/// starting at an offset, or an empty one at the end of the data; an empty chunk stops the
/// walk, so a file that shrank while it was read comes out short, never in an endless loop.
pub fn stitch<E>(
    segments: impl IntoIterator<Item = SegmentCuts>,
    mut chunk_at: impl FnMut(u64) -> Result<ChunkRef, E>,
) -> Result<Vec<ChunkRef>, E> {
    let mut out = Vec::new();
    let mut pos = 0u64;
    for segment in segments {
        let mut offset = segment.start;
        let mut chunks = segment.chunks.into_iter().peekable();
        loop {
            // Drop this segment's chunks that start before the real position.
            while offset < pos {
                match chunks.next() {
                    Some(c) => offset += u64::from(c.len),
                    None => break,
                }
            }
            if chunks.peek().is_none() && offset <= pos {
                // The real chunks already cover this segment.
                break;
            }
            if offset == pos {
                for c in chunks {
                    pos += u64::from(c.len);
                    out.push(c);
                }
                break;
            }
            let c = chunk_at(pos)?;
            if c.len == 0 {
                return Ok(out);
            }
            pos += u64::from(c.len);
            out.push(c);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use rand::{RngCore, SeedableRng, rngs::StdRng};

    fn random_bytes(len: usize, seed: u64) -> Vec<u8> {
        let mut data = vec![0u8; len];
        StdRng::seed_from_u64(seed).fill_bytes(&mut data);
        data
    }

    fn chunker() -> Chunker {
        Chunker::new(ChunkerParams::V1_DEFAULT).unwrap()
    }

    fn cuts(data: &[u8]) -> Vec<(usize, usize)> {
        chunker()
            .chunk_slice(data)
            .map(|(o, c)| (o, c.len()))
            .collect()
    }

    /// A reader that returns at most `step` bytes per call, to exercise refills.
    struct Dribble<'a>(&'a [u8], usize);
    impl Read for Dribble<'_> {
        fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
            let n = self.0.len().min(out.len()).min(self.1);
            out[..n].copy_from_slice(&self.0[..n]);
            self.0 = &self.0[n..];
            Ok(n)
        }
    }

    fn stream_cuts(data: &[u8], step: usize) -> Vec<(usize, usize)> {
        let mut out = Vec::new();
        let mut buf = Vec::new();
        let read = chunker()
            .chunk_reader::<_, io::Error>(Dribble(data, step), &mut buf, |o, c| {
                out.push((o as usize, c.len()));
                Ok(())
            })
            .unwrap();
        assert_eq!(read as usize, data.len());
        out
    }

    #[test]
    fn chunks_concatenate_to_the_input() {
        let data = random_bytes(5_000_000, 1);
        let mut joined = Vec::new();
        for (offset, chunk) in chunker().chunk_slice(&data) {
            assert_eq!(offset, joined.len());
            joined.extend_from_slice(chunk);
        }
        assert_eq!(joined, data);
    }

    #[test]
    fn chunk_sizes_respect_the_parameters() {
        let data = random_bytes(8_000_000, 2);
        let all = cuts(&data);
        let p = ChunkerParams::V1_DEFAULT;
        for (i, &(_, len)) in all.iter().enumerate() {
            assert!(len <= p.max as usize);
            if i + 1 < all.len() {
                assert!(
                    len >= p.min as usize,
                    "chunk {i} of {len} bytes is below min"
                );
            }
        }
        let avg = data.len() / all.len();
        assert!(
            (32 * 1024..=128 * 1024).contains(&avg),
            "average chunk {avg}"
        );
    }

    #[test]
    fn same_input_gives_the_same_chunks() {
        let data = random_bytes(3_000_000, 3);
        assert_eq!(cuts(&data), cuts(&data.clone()));
    }

    #[test]
    fn streaming_matches_whole_buffer_chunking() {
        let data = random_bytes(6_000_000, 4);
        let whole = cuts(&data);
        assert_eq!(stream_cuts(&data, 1 << 20), whole);
        assert_eq!(stream_cuts(&data, 77_777), whole);
    }

    #[test]
    fn matches_the_fastcdc_crate() {
        let data = random_bytes(4_000_000, 5);
        let p = ChunkerParams::V1_DEFAULT;
        let reference: Vec<(usize, usize)> =
            v2020::FastCDC::new(&data, p.min as usize, p.avg as usize, p.max as usize)
                .map(|c| (c.offset, c.length))
                .collect();
        assert_eq!(cuts(&data), reference);
    }

    #[test]
    fn small_insertion_changes_only_nearby_chunks() {
        let data = random_bytes(32 * 1024 * 1024, 6);
        let mut edited = data.clone();
        let at = 17 * 1024 * 1024 + 123;
        edited.splice(at..at, b"a few bytes".iter().copied());
        let ids = |d: &[u8]| -> std::collections::HashSet<crate::ChunkId> {
            chunker()
                .chunk_slice(d)
                .map(|(_, c)| crate::ChunkId::of(c))
                .collect()
        };
        let before = ids(&data);
        let after = ids(&edited);
        let new_chunks = after.difference(&before).count();
        // The chunk holding the insertion changes; boundaries resynchronise at once or
        // within one more chunk. Out of ~500 chunks, at most 2 may be new.
        assert!((1..=2).contains(&new_chunks), "{new_chunks} chunks changed");
        assert!(before.difference(&after).count() <= 2);
    }

    #[test]
    fn empty_input_has_no_chunks_and_tiny_input_one() {
        assert!(cuts(&[]).is_empty());
        assert!(stream_cuts(&[], 10).is_empty());
        assert_eq!(cuts(b"x"), vec![(0, 1)]);
        assert_eq!(stream_cuts(b"tiny", 1), vec![(0, 4)]);
        let below_min = random_bytes(1000, 7);
        assert_eq!(cuts(&below_min), vec![(0, 1000)]);
    }

    #[test]
    fn uniform_data_is_cut_at_max() {
        let zeros = vec![0u8; 1024 * 1024 + 5];
        let all = cuts(&zeros);
        assert_eq!(all.len(), 5);
        assert!(all[..4].iter().all(|&(_, len)| len == 256 * 1024));
        assert_eq!(all[4].1, 5);
    }

    #[test]
    fn params_round_trip_as_text_and_reject_nonsense() {
        let p = ChunkerParams::V1_DEFAULT;
        assert_eq!(p.to_string().parse::<ChunkerParams>().unwrap(), p);
        assert!(
            "fastcdc2020:2:16384:65536:262144:1"
                .parse::<ChunkerParams>()
                .is_err()
        );
        assert!(
            "fastcdc2020:1:65536:16384:262144:1"
                .parse::<ChunkerParams>()
                .is_err()
        );
        assert!(
            "fastcdc2020:1:16384:65536:262144"
                .parse::<ChunkerParams>()
                .is_err()
        );
        assert!(
            "rabin:1:16384:65536:262144:1"
                .parse::<ChunkerParams>()
                .is_err()
        );
        assert_ne!(
            p,
            ChunkerParams {
                avg: 32 * 1024,
                ..p
            },
            "peers must see different parameters as different"
        );
    }

    /// Cuts `data` in segments of `segment` bytes the way a parallel reader does, and stitches.
    fn stitched(data: &[u8], segment: usize) -> Vec<ChunkRef> {
        let c = chunker();
        let segments = (0..data.len().div_ceil(segment)).map(|k| {
            let start = k * segment;
            let end = (start + segment).min(data.len());
            let window = &data[start..(end + c.max_chunk()).min(data.len())];
            SegmentCuts {
                start: start as u64,
                chunks: c
                    .chunk_slice(window)
                    .take_while(|(o, _)| start + o < end)
                    .map(|(_, bytes)| ChunkRef::of(bytes))
                    .collect(),
            }
        });
        stitch::<std::convert::Infallible>(segments, |pos| {
            let rest = &data[pos as usize..];
            Ok(ChunkRef::of(&rest[..c.cut(rest)]))
        })
        .unwrap()
    }

    fn sequential(data: &[u8]) -> Vec<ChunkRef> {
        chunker()
            .chunk_slice(data)
            .map(|(_, b)| ChunkRef::of(b))
            .collect()
    }

    #[test]
    fn stitched_segments_equal_one_pass() {
        let data = random_bytes(6 << 20, 7);
        for segment in [1 << 20, 1_000_003, 300_000, 16_384, 5_000] {
            assert_eq!(
                stitched(&data, segment),
                sequential(&data),
                "segment {segment}"
            );
        }
    }

    #[test]
    fn stitching_is_exact_where_segment_cuts_never_meet_the_real_ones() {
        // Uniform data is cut at max every time; segments offset by an odd amount never meet
        // the real cuts, so the real chunks must be computed across whole segments.
        let mut data = vec![0u8; 3 << 20];
        data[..100_001].copy_from_slice(&random_bytes(100_001, 3));
        assert_eq!(stitched(&data, 777_777), sequential(&data));
    }

    #[test]
    fn stitching_stops_when_the_data_ends_early() {
        let data = random_bytes(2 << 20, 9);
        let c = chunker();
        let segments = vec![
            SegmentCuts {
                start: 0,
                chunks: vec![ChunkRef::of(&data[..c.cut(&data)])],
            },
            SegmentCuts {
                start: 1 << 20,
                chunks: vec![ChunkRef::of(&data[1 << 20..(1 << 20) + 100])],
            },
        ];
        // The file "shrank": every chunk after the first is empty.
        let out = stitch::<std::convert::Infallible>(segments, |_| Ok(ChunkRef::of(b""))).unwrap();
        assert_eq!(out.len(), 1);
    }

    /// The crate's cut, which [`Chunker::cut`] must equal.
    fn crate_cut(c: &Chunker, window: &[u8]) -> usize {
        let p = c.params;
        v2020::cut(
            window,
            p.min as usize,
            p.avg as usize,
            p.max as usize,
            c.mask_s,
            c.mask_l,
            c.mask_s << 1,
            c.mask_l << 1,
        )
        .1
    }

    /// Bytes drawn from the first `alphabet` values: low alphabets make long runs without
    /// a cut (and cuts at the maximum), high ones cut often.
    fn bytes_of(len: usize, alphabet: u16, seed: u64) -> Vec<u8> {
        let mut rng = StdRng::seed_from_u64(seed);
        (0..len)
            .map(|_| (rng.next_u32() % u32::from(alphabet)) as u8)
            .collect()
    }

    /// Walks `data` chunk by chunk and at `probes` other offsets, asserting both cuts agree.
    fn assert_cuts_like_the_crate(c: &Chunker, data: &[u8], probes: &[usize]) {
        let mut pos = 0;
        while pos < data.len() {
            let w = &data[pos..(pos + c.max_chunk()).min(data.len())];
            let (ours, theirs) = (c.cut(w), crate_cut(c, w));
            assert_eq!(ours, theirs, "cut at {pos} with {:?}", c.params);
            pos += ours;
        }
        for &at in probes {
            let w = &data[at.min(data.len())..];
            assert_eq!(c.cut(w), crate_cut(c, w), "cut at {at} with {:?}", c.params);
        }
    }

    #[test]
    fn an_average_fastcdc_has_no_masks_for_is_refused_not_a_panic() {
        for (avg, normalization) in [(16 << 20, 3), (8 << 20, 2), (6 << 20, 3)] {
            let p = ChunkerParams {
                version: 1,
                min: 1 << 20,
                avg,
                max: 16 << 20,
                normalization,
            };
            assert!(matches!(Chunker::new(p), Err(ParamsError::BadSizes { .. })));
        }
        let largest = ChunkerParams {
            version: 1,
            min: 1 << 20,
            avg: 4 << 20,
            max: 16 << 20,
            normalization: 3,
        };
        assert!(Chunker::new(largest).is_ok());
    }

    #[test]
    fn no_mask_has_the_top_bit_the_crate_drops_at_even_positions() {
        // `first_cut` tests every position with one mask; the crate tests even positions
        // without the mask's bit 63. They agree only while no mask has it.
        assert!(v2020::MASKS.iter().all(|m| m >> 63 == 0));
    }

    #[test]
    fn a_cut_right_after_the_minimum_ignores_the_bytes_before_the_chunk() {
        // The first lane of a chunk rebuilds its hash from the 64 bytes before its block;
        // there those are the chunk's own bytes below its minimum, which the crate never
        // hashes, so they must count as nothing. Cuts within 64 bytes of the minimum are
        // rare at real sizes, so find starts that have one.
        let c = Chunker::new(ChunkerParams {
            version: 1,
            min: 64,
            avg: 32 * 1024,
            max: 64 * 1024,
            normalization: 0,
        })
        .unwrap();
        let data = random_bytes(400_000, 12);
        let early: Vec<usize> = (0..data.len() - 64 * 1024)
            .filter(|&at| crate_cut(&c, &data[at..at + 64 + 64]) < 64 + 64)
            .collect();
        assert!(early.len() > 100, "only {} early cuts found", early.len());
        for at in early {
            let w = &data[at..at + 64 * 1024];
            assert_eq!(c.cut(w), crate_cut(&c, w), "cut at {at}");
        }
    }

    #[test]
    fn lanes_that_match_in_the_same_round_give_the_first_match() {
        // Tiny chunks with a loose large-chunk mask: most rounds of four 4 KiB blocks have
        // a match in several lanes, and the earliest must win.
        let c = Chunker::new(ChunkerParams {
            version: 1,
            min: 64,
            avg: 256,
            max: 1 << 20,
            normalization: 3,
        })
        .unwrap();
        for alphabet in [2, 3, 16, 256] {
            let data = bytes_of(2_000_000, alphabet, u64::from(alphabet));
            let probes: Vec<usize> = (0..2_000).map(|k| k * 997).collect();
            assert_cuts_like_the_crate(&c, &data, &probes);
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        #[test]
        fn cuts_like_the_fastcdc_crate_for_any_parameters_and_data(
            min_half in 32u32..4096,
            avg_factor in 1u32..16,
            max_factor in 1u32..8,
            normalization in 0u8..4,
            len in 0usize..700_000,
            alphabet in 1u16..=256,
            seed: u64,
            probes in proptest::collection::vec(0usize..700_000, 16),
        ) {
            let min = 2 * min_half;
            let avg = min * avg_factor;
            let max = (avg * max_factor).min(16 << 20);
            let c = Chunker::new(ChunkerParams { version: 1, min, avg, max, normalization }).unwrap();
            assert_cuts_like_the_crate(&c, &bytes_of(len, alphabet, seed), &probes);
        }

        #[test]
        fn streaming_equals_slicing_for_any_size(len in 0usize..1_500_000, seed: u64, step in 1usize..400_000) {
            let data = random_bytes(len, seed);
            prop_assert_eq!(stream_cuts(&data, step), cuts(&data));
        }

        #[test]
        fn stitched_segments_equal_one_pass_for_any_split(
            len in 0usize..3_000_000,
            seed: u64,
            segment in 1usize..1_500_000,
            zeros in 0usize..600_000,
        ) {
            // Random data with a run of zeros somewhere, where cuts fall at max.
            let mut data = random_bytes(len, seed);
            let at = (seed as usize) % (len + 1);
            let run = zeros.min(len - at);
            data[at..at + run].fill(0);
            prop_assert_eq!(stitched(&data, segment), sequential(&data));
        }
    }
}
