//! Wire messages of cairn's protocols, and their strict binary encoding.
//!
//! - `/cairn/meta/1`: [`MetaRequest`] / [`MetaResponse`]: automerge sync rounds for one folder.
//! - `/cairn/blocks/1`: [`BlocksRequest`] / [`BlocksResponse`]: manifests and chunks by hash.
//!
//! Everything here is decoded from untrusted peers: every length is bounded, every tag is
//! checked, and trailing bytes are an error. A peer that is not allowed to see a folder
//! gets [`MetaResponse::Denied`] / [`BlocksResponse::Denied`], the same answer whether the
//! folder exists or not.

use crate::hash::{ChunkId, ContentId};
pub use bytes::Bytes;

/// Protocol name of folder metadata sync.
pub const META_PROTOCOL: &str = "/cairn/meta/1";
/// Protocol name of manifest and chunk exchange.
pub const BLOCKS_PROTOCOL: &str = "/cairn/blocks/1";
/// Protocol name of pairing by short code (messages in [`crate::pairing`]).
pub const PAIR_PROTOCOL: &str = "/cairn/pair/1";
/// Largest meta request or response on the wire (a folder message plus framing).
pub const MAX_META_BYTES: usize = crate::folder::doc::MAX_MESSAGE_BYTES + 1024;
/// Most chunks asked for in one blocks request.
pub const MAX_CHUNKS_PER_REQUEST: usize = 32;
/// Most chunk bytes in one blocks response (one maximal chunk, or 64 default ones): a
/// requester batches its chunks to fit, a responder answers the rest as missing.
pub const MAX_CHUNK_BYTES_PER_RESPONSE: usize = 16 << 20;
/// Largest blocks response: a full batch of chunks plus framing.
pub const MAX_BLOCKS_BYTES: usize = MAX_CHUNK_BYTES_PER_RESPONSE + (64 << 10);
/// Largest manifest (or page of a manifest) in a response: [`PAGE_CHUNKS`] chunks; a
/// larger manifest travels as an [`Outline`] and its pages.
///
/// [`PAGE_CHUNKS`]: crate::manifest::PAGE_CHUNKS
/// [`Outline`]: crate::manifest::Outline
pub const MAX_MANIFEST_BYTES: usize = crate::manifest::MAX_PAGE_BYTES;
/// Largest base signature in a delta request (a base of over 1 MiB at 512-byte blocks).
pub const MAX_SIGNATURE_BYTES: usize = 32 << 10;
/// Largest delta in a response: a maximal chunk sent as literals, plus framing.
pub const MAX_DELTA_BYTES: usize = (256 << 10) + 4096;
/// Longest folder id accepted.
pub const MAX_FOLDER_ID: usize = 64;
/// Most content ids in one answer to [`BlocksRequest::Kept`] (256 KiB of ids).
pub const MAX_KEPT_PER_RESPONSE: usize = 8192;

/// A message that could not be decoded.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("malformed wire message: {0}")]
pub struct WireError(pub &'static str);

/// One automerge sync round for a folder.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MetaRequest {
    /// Folder id.
    pub folder: String,
    /// An encoded [`crate::folder::FolderMessage`], if the sender has something to say.
    pub message: Option<Vec<u8>>,
}

/// The answer to a [`MetaRequest`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MetaResponse {
    /// The responder's next message for this folder, if it has one.
    Ok { message: Option<Vec<u8>> },
    /// Not paired, not a member, or no such folder: indistinguishable on purpose.
    Denied,
}

/// What a blocks request asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BlocksRequest {
    /// The manifest of a content of the folder (its outline if it is paged).
    Manifest { folder: String, content: ContentId },
    /// One page of a paged manifest.
    ManifestPage {
        folder: String,
        content: ContentId,
        page: u32,
    },
    /// Chunks of the folder's files.
    Chunks {
        folder: String,
        chunks: Vec<ChunkId>,
    },
    /// One chunk as a delta from a base the requester has ([`crate::delta`]).
    Delta {
        folder: String,
        chunk: ChunkId,
        signature: Vec<u8>,
    },
    /// The contents of the folder's versions the responder keeps in its history, in id
    /// order, after `after` (from the first when None): what group history lists as
    /// held by that device, remembered while it is offline.
    Kept {
        folder: String,
        after: Option<ContentId>,
    },
}

/// The answer to a [`BlocksRequest`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BlocksResponse {
    /// The encoded manifest, or None if the responder does not have it.
    Manifest(Option<Vec<u8>>),
    /// The encoded [`crate::manifest::Outline`] of a manifest too large to send whole.
    Outline(Vec<u8>),
    /// One encoded page of a paged manifest, or None if the responder does not have it.
    Page(Option<Vec<u8>>),
    /// Each requested chunk's bytes, or None where the responder does not have it. The
    /// bytes are slices of the received frame ([`BlocksResponse::decode_frame`]): a 16 MiB
    /// answer is not copied chunk by chunk on the event loop.
    Chunks(Vec<(ChunkId, Option<Bytes>)>),
    /// The chunk as a delta from the requester's base, or None if the responder does not
    /// have the chunk or cannot use the signature.
    Delta(Option<Vec<u8>>),
    /// Not paired, not a member, or no such folder.
    Denied,
    /// Kept contents in id order (at most [`MAX_KEPT_PER_RESPONSE`]); `more` when the
    /// list goes on after the last.
    Kept {
        contents: Vec<ContentId>,
        more: bool,
    },
}

struct W(Vec<u8>);

impl W {
    fn new(tag: u8) -> Self {
        W(vec![tag])
    }
    fn bytes(&mut self, b: &[u8]) {
        self.0.extend_from_slice(&(b.len() as u32).to_le_bytes());
        self.0.extend_from_slice(b);
    }
    fn opt(&mut self, b: Option<&[u8]>) {
        match b {
            Some(b) => {
                self.0.push(1);
                self.bytes(b);
            }
            None => self.0.push(0),
        }
    }
    fn hash(&mut self, h: &[u8; 32]) {
        self.0.extend_from_slice(h);
    }
    fn count(&mut self, n: usize) {
        self.0.extend_from_slice(&(n as u32).to_le_bytes());
    }
}

/// A [`BlocksResponse::Chunks`] answer encoded as it is built: each chunk's bytes are
/// read by the caller straight into the frame, not into a buffer of their own that
/// [`BlocksResponse::encode`] then copies (that copy was half of the sender's `memmove`
/// on a 1 GiB sync). The frame is byte for byte what `encode` makes of the same answer.
pub struct ChunksFrame {
    frame: Vec<u8>,
    count: u32,
    chunks: u64,
    chunk_bytes: u64,
}

impl ChunksFrame {
    /// An empty answer, with room for `capacity` bytes of frame (see
    /// [`ChunksFrame::size`]).
    pub fn with_capacity(capacity: usize) -> Self {
        let mut frame = Vec::with_capacity(capacity.max(5));
        frame.push(2);
        frame.extend_from_slice(&0u32.to_le_bytes());
        ChunksFrame {
            frame,
            count: 0,
            chunks: 0,
            chunk_bytes: 0,
        }
    }

    /// Room for an answer naming `ids` chunks and carrying `bytes` bytes of them (exact
    /// when every chunk is carried; 4 bytes over for each one answered as missing).
    pub fn size(ids: usize, bytes: usize) -> usize {
        5 + ids * (32 + 1) + bytes + 4 * ids
    }

    /// Answers `id` as missing.
    pub fn missing(&mut self, id: &ChunkId) {
        self.frame.extend_from_slice(id.as_bytes());
        self.frame.push(0);
        self.count += 1;
    }

    /// Answers `id` with the `len` bytes `fill` appends to the frame (to the end of the
    /// vector it is given; no bytes are zeroed first). When `fill` says it could not
    /// (returns false) or appended any other number of bytes, `id` is answered as missing
    /// instead. Returns whether the chunk went in.
    pub fn chunk(
        &mut self,
        id: &ChunkId,
        len: usize,
        fill: impl FnOnce(&mut Vec<u8>) -> bool,
    ) -> bool {
        let Ok(wire_len) = u32::try_from(len) else {
            self.missing(id);
            return false;
        };
        let start = self.frame.len();
        self.frame.extend_from_slice(id.as_bytes());
        self.frame.push(1);
        self.frame.extend_from_slice(&wire_len.to_le_bytes());
        let data = self.frame.len();
        self.frame.reserve(len);
        // What `fill` appended, and nothing before it touched.
        if fill(&mut self.frame)
            && self.frame.len() == data + len
            && self.frame[start..data].starts_with(id.as_bytes())
        {
            self.count += 1;
            self.chunks += 1;
            self.chunk_bytes += len as u64;
            true
        } else {
            self.frame.truncate(start);
            self.missing(id);
            false
        }
    }

    /// The chunks answered with their bytes, and those bytes.
    pub fn carried(&self) -> (u64, u64) {
        (self.chunks, self.chunk_bytes)
    }

    /// The encoded frame.
    pub fn finish(mut self) -> Vec<u8> {
        self.frame[1..5].copy_from_slice(&self.count.to_le_bytes());
        self.frame
    }
}

struct R<'a>(&'a [u8]);

impl<'a> R<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], WireError> {
        if self.0.len() < n {
            return Err(WireError("truncated"));
        }
        let (h, t) = self.0.split_at(n);
        self.0 = t;
        Ok(h)
    }
    fn u8(&mut self) -> Result<u8, WireError> {
        Ok(self.take(1)?[0])
    }
    fn u32(&mut self) -> Result<u32, WireError> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn bytes(&mut self, max: usize) -> Result<&'a [u8], WireError> {
        let n = self.u32()? as usize;
        if n > max {
            return Err(WireError("field too long"));
        }
        self.take(n)
    }
    fn opt(&mut self, max: usize) -> Result<Option<Vec<u8>>, WireError> {
        Ok(self.opt_ref(max)?.map(<[u8]>::to_vec))
    }
    fn opt_ref(&mut self, max: usize) -> Result<Option<&'a [u8]>, WireError> {
        match self.u8()? {
            0 => Ok(None),
            1 => Ok(Some(self.bytes(max)?)),
            _ => Err(WireError("bad option tag")),
        }
    }
    fn folder(&mut self) -> Result<String, WireError> {
        let b = self.bytes(MAX_FOLDER_ID)?;
        String::from_utf8(b.to_vec()).map_err(|_| WireError("folder id not UTF-8"))
    }
    fn hash(&mut self) -> Result<[u8; 32], WireError> {
        let mut h = [0u8; 32];
        h.copy_from_slice(self.take(32)?);
        Ok(h)
    }
    fn end(self) -> Result<(), WireError> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(WireError("trailing bytes"))
        }
    }
}

impl MetaRequest {
    /// Wire form.
    pub fn encode(&self) -> Vec<u8> {
        let mut w = W::new(1);
        w.bytes(self.folder.as_bytes());
        w.opt(self.message.as_deref());
        w.0
    }
    /// Parses the wire form.
    pub fn decode(b: &[u8]) -> Result<Self, WireError> {
        let mut r = R(b);
        if r.u8()? != 1 {
            return Err(WireError("not a meta request"));
        }
        let folder = r.folder()?;
        let message = r.opt(MAX_META_BYTES)?;
        r.end()?;
        Ok(MetaRequest { folder, message })
    }
}

impl MetaResponse {
    /// Wire form.
    pub fn encode(&self) -> Vec<u8> {
        match self {
            MetaResponse::Ok { message } => {
                let mut w = W::new(1);
                w.opt(message.as_deref());
                w.0
            }
            MetaResponse::Denied => vec![2],
        }
    }
    /// Parses the wire form.
    pub fn decode(b: &[u8]) -> Result<Self, WireError> {
        let mut r = R(b);
        let out = match r.u8()? {
            1 => MetaResponse::Ok {
                message: r.opt(MAX_META_BYTES)?,
            },
            2 => MetaResponse::Denied,
            _ => return Err(WireError("not a meta response")),
        };
        r.end()?;
        Ok(out)
    }
}

impl BlocksRequest {
    /// The folder the request is about.
    pub fn folder(&self) -> &str {
        match self {
            BlocksRequest::Manifest { folder, .. }
            | BlocksRequest::Chunks { folder, .. }
            | BlocksRequest::Delta { folder, .. }
            | BlocksRequest::ManifestPage { folder, .. }
            | BlocksRequest::Kept { folder, .. } => folder,
        }
    }
    /// Wire form.
    pub fn encode(&self) -> Vec<u8> {
        match self {
            BlocksRequest::Manifest { folder, content } => {
                let mut w = W::new(1);
                w.bytes(folder.as_bytes());
                w.hash(content.as_bytes());
                w.0
            }
            BlocksRequest::Chunks { folder, chunks } => {
                let mut w = W::new(2);
                w.bytes(folder.as_bytes());
                w.count(chunks.len());
                for c in chunks {
                    w.hash(c.as_bytes());
                }
                w.0
            }
            BlocksRequest::Delta {
                folder,
                chunk,
                signature,
            } => {
                let mut w = W::new(3);
                w.bytes(folder.as_bytes());
                w.hash(chunk.as_bytes());
                w.bytes(signature);
                w.0
            }
            BlocksRequest::ManifestPage {
                folder,
                content,
                page,
            } => {
                let mut w = W::new(4);
                w.bytes(folder.as_bytes());
                w.hash(content.as_bytes());
                w.0.extend_from_slice(&page.to_le_bytes());
                w.0
            }
            BlocksRequest::Kept { folder, after } => {
                let mut w = W::new(5);
                w.bytes(folder.as_bytes());
                w.opt(after.as_ref().map(|c| &c.as_bytes()[..]));
                w.0
            }
        }
    }
    /// Parses the wire form.
    pub fn decode(b: &[u8]) -> Result<Self, WireError> {
        let mut r = R(b);
        let out = match r.u8()? {
            1 => BlocksRequest::Manifest {
                folder: r.folder()?,
                content: ContentId(r.hash()?),
            },
            2 => {
                let folder = r.folder()?;
                let n = r.u32()? as usize;
                if n > MAX_CHUNKS_PER_REQUEST {
                    return Err(WireError("too many chunks in one request"));
                }
                let chunks = (0..n)
                    .map(|_| r.hash().map(ChunkId))
                    .collect::<Result<_, _>>()?;
                BlocksRequest::Chunks { folder, chunks }
            }
            3 => BlocksRequest::Delta {
                folder: r.folder()?,
                chunk: ChunkId(r.hash()?),
                signature: r.bytes(MAX_SIGNATURE_BYTES)?.to_vec(),
            },
            4 => BlocksRequest::ManifestPage {
                folder: r.folder()?,
                content: ContentId(r.hash()?),
                page: r.u32()?,
            },
            5 => {
                let folder = r.folder()?;
                let after = match r.opt_ref(32)? {
                    None => None,
                    Some(b) if b.len() == 32 => Some(ContentId(b.try_into().expect("32 bytes"))),
                    Some(_) => return Err(WireError("content id not 32 bytes")),
                };
                BlocksRequest::Kept { folder, after }
            }
            _ => return Err(WireError("not a blocks request")),
        };
        r.end()?;
        Ok(out)
    }
}

impl BlocksResponse {
    /// Wire form.
    pub fn encode(&self) -> Vec<u8> {
        match self {
            BlocksResponse::Manifest(m) => {
                let mut w = W::new(1);
                w.opt(m.as_deref());
                w.0
            }
            BlocksResponse::Chunks(chunks) => {
                // Sized exactly: growing a 16 MiB answer by doubling copied it ~twice.
                let len = 1
                    + 4
                    + chunks
                        .iter()
                        .map(|(_, d)| 32 + 1 + d.as_ref().map_or(0, |d| 4 + d.len()))
                        .sum::<usize>();
                let mut w = W(Vec::with_capacity(len));
                w.0.push(2);
                w.count(chunks.len());
                for (id, data) in chunks {
                    w.hash(id.as_bytes());
                    w.opt(data.as_deref());
                }
                w.0
            }
            BlocksResponse::Denied => vec![3],
            BlocksResponse::Delta(d) => {
                let mut w = W::new(4);
                w.opt(d.as_deref());
                w.0
            }
            BlocksResponse::Outline(o) => {
                let mut w = W::new(5);
                w.bytes(o);
                w.0
            }
            BlocksResponse::Page(p) => {
                let mut w = W::new(6);
                w.opt(p.as_deref());
                w.0
            }
            BlocksResponse::Kept { contents, more } => {
                let mut w = W(Vec::with_capacity(6 + 32 * contents.len()));
                w.0.push(7);
                w.0.push(u8::from(*more));
                w.count(contents.len());
                for c in contents {
                    w.hash(c.as_bytes());
                }
                w.0
            }
        }
    }
    /// Parses the wire form (copying it: [`BlocksResponse::decode_frame`] does not).
    pub fn decode(b: &[u8]) -> Result<Self, WireError> {
        Self::decode_frame(Bytes::copy_from_slice(b))
    }
    /// Parses a received frame; chunks are slices of it.
    pub fn decode_frame(frame: Bytes) -> Result<Self, WireError> {
        let mut r = R(&frame);
        let out = match r.u8()? {
            1 => BlocksResponse::Manifest(r.opt(MAX_MANIFEST_BYTES)?),
            2 => {
                let n = r.u32()? as usize;
                if n > MAX_CHUNKS_PER_REQUEST {
                    return Err(WireError("too many chunks in one response"));
                }
                let mut chunks = Vec::with_capacity(n);
                for _ in 0..n {
                    let id = ChunkId(r.hash()?);
                    let data = r.opt_ref(MAX_CHUNK_BYTES_PER_RESPONSE)?;
                    chunks.push((id, data.map(|d| frame.slice_ref(d))));
                }
                BlocksResponse::Chunks(chunks)
            }
            3 => BlocksResponse::Denied,
            4 => BlocksResponse::Delta(r.opt(MAX_DELTA_BYTES)?),
            5 => BlocksResponse::Outline(r.bytes(crate::manifest::MAX_OUTLINE_BYTES)?.to_vec()),
            6 => BlocksResponse::Page(r.opt(MAX_MANIFEST_BYTES)?),
            7 => {
                let more = match r.u8()? {
                    0 => false,
                    1 => true,
                    _ => return Err(WireError("bad flag")),
                };
                let n = r.u32()? as usize;
                if n > MAX_KEPT_PER_RESPONSE {
                    return Err(WireError("too many kept contents in one response"));
                }
                let contents = (0..n)
                    .map(|_| r.hash().map(ContentId))
                    .collect::<Result<_, _>>()?;
                BlocksResponse::Kept { contents, more }
            }
            _ => return Err(WireError("not a blocks response")),
        };
        r.end()?;
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn received_chunks_are_slices_of_the_frame() {
        let r = BlocksResponse::Chunks(vec![
            (ChunkId([1; 32]), Some(vec![5; 1000].into())),
            (ChunkId([2; 32]), None),
            (ChunkId([3; 32]), Some(vec![6; 7].into())),
        ]);
        let frame = Bytes::from(r.encode());
        let within = frame.as_ptr_range();
        let decoded = BlocksResponse::decode_frame(frame.clone()).unwrap();
        assert_eq!(decoded, r);
        let BlocksResponse::Chunks(items) = decoded else {
            unreachable!()
        };
        for d in items.iter().filter_map(|(_, d)| d.as_ref()) {
            assert!(
                within.contains(&d.as_ptr()),
                "a chunk was copied out of the frame"
            );
        }
    }

    #[test]
    fn messages_round_trip() {
        let m = MetaRequest {
            folder: "abcde-fghij".into(),
            message: Some(vec![1, 2, 3]),
        };
        assert_eq!(MetaRequest::decode(&m.encode()).unwrap(), m);
        for r in [
            MetaResponse::Ok { message: None },
            MetaResponse::Ok {
                message: Some(vec![9]),
            },
            MetaResponse::Denied,
        ] {
            assert_eq!(MetaResponse::decode(&r.encode()).unwrap(), r);
        }
        let b = BlocksRequest::Chunks {
            folder: "f".into(),
            chunks: vec![ChunkId([1; 32]), ChunkId([2; 32])],
        };
        assert_eq!(BlocksRequest::decode(&b.encode()).unwrap(), b);
        let b = BlocksRequest::Manifest {
            folder: "f".into(),
            content: ContentId([3; 32]),
        };
        assert_eq!(BlocksRequest::decode(&b.encode()).unwrap(), b);
        let r = BlocksResponse::Chunks(vec![
            (ChunkId([1; 32]), Some(vec![5; 10].into())),
            (ChunkId([2; 32]), None),
        ]);
        assert_eq!(BlocksResponse::decode(&r.encode()).unwrap(), r);
        let encoded = r.encode();
        assert_eq!(encoded.capacity(), encoded.len(), "sized exactly");
        let b = BlocksRequest::Delta {
            folder: "f".into(),
            chunk: ChunkId([4; 32]),
            signature: vec![7; 40],
        };
        assert_eq!(BlocksRequest::decode(&b.encode()).unwrap(), b);
        let b = BlocksRequest::ManifestPage {
            folder: "f".into(),
            content: ContentId([5; 32]),
            page: 7,
        };
        assert_eq!(BlocksRequest::decode(&b.encode()).unwrap(), b);
        for after in [None, Some(ContentId([6; 32]))] {
            let b = BlocksRequest::Kept {
                folder: "f".into(),
                after,
            };
            assert_eq!(BlocksRequest::decode(&b.encode()).unwrap(), b);
        }
        for r in [
            BlocksResponse::Kept {
                contents: vec![ContentId([1; 32]), ContentId([2; 32])],
                more: true,
            },
            BlocksResponse::Kept {
                contents: vec![],
                more: false,
            },
            BlocksResponse::Delta(Some(vec![1, 2])),
            BlocksResponse::Delta(None),
            BlocksResponse::Outline(vec![2, 3]),
            BlocksResponse::Page(Some(vec![1])),
            BlocksResponse::Page(None),
        ] {
            assert_eq!(BlocksResponse::decode(&r.encode()).unwrap(), r);
        }
    }

    #[test]
    fn oversized_and_trailing_input_is_refused() {
        let too_many = BlocksRequest::Chunks {
            folder: "f".into(),
            chunks: vec![ChunkId([0; 32]); MAX_CHUNKS_PER_REQUEST + 1],
        };
        assert!(BlocksRequest::decode(&too_many.encode()).is_err());
        let mut trailing = MetaResponse::Denied.encode();
        trailing.push(0);
        assert!(MetaResponse::decode(&trailing).is_err());
        let long_folder = MetaRequest {
            folder: "x".repeat(MAX_FOLDER_ID + 1),
            message: None,
        };
        assert!(MetaRequest::decode(&long_folder.encode()).is_err());
        let long_signature = BlocksRequest::Delta {
            folder: "f".into(),
            chunk: ChunkId([0; 32]),
            signature: vec![0; MAX_SIGNATURE_BYTES + 1],
        };
        assert!(BlocksRequest::decode(&long_signature.encode()).is_err());
        let long_delta = BlocksResponse::Delta(Some(vec![0; MAX_DELTA_BYTES + 1]));
        assert!(BlocksResponse::decode(&long_delta.encode()).is_err());
        let too_many_kept = BlocksResponse::Kept {
            contents: vec![ContentId([0; 32]); MAX_KEPT_PER_RESPONSE + 1],
            more: false,
        };
        assert!(BlocksResponse::decode(&too_many_kept.encode()).is_err());
    }

    proptest! {
        #[test]
        fn decoders_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = MetaRequest::decode(&bytes);
            let _ = MetaResponse::decode(&bytes);
            let _ = BlocksRequest::decode(&bytes);
            let _ = BlocksResponse::decode(&bytes);
        }
    }

    /// A frame built in place is what `encode` makes of the same answer, and decodes back
    /// to it; a chunk whose bytes could not be read is answered as missing.
    #[test]
    fn chunks_frame_encodes_as_encode_does() {
        let ids: Vec<ChunkId> = (0..4u8).map(|i| ChunkId([i; 32])).collect();
        let data: Vec<Vec<u8>> = vec![vec![7; 300], vec![], vec![9; 5]];
        let mut built = ChunksFrame::with_capacity(ChunksFrame::size(4, 305));
        assert!(built.chunk(&ids[0], 300, |b| {
            b.extend_from_slice(&data[0]);
            true
        }));
        built.missing(&ids[1]);
        assert!(!built.chunk(&ids[2], 64, |b| {
            b.push(1);
            false
        }));
        // Too few bytes appended: missing, whatever `fill` says.
        assert!(!built.chunk(&ids[2], 64, |b| {
            b.extend_from_slice(&[1; 63]);
            true
        }));
        assert!(built.chunk(&ids[3], 5, |b| {
            b.extend_from_slice(&data[2]);
            true
        }));
        assert_eq!(built.carried(), (2, 305));
        let frame = built.finish();
        let expected = BlocksResponse::Chunks(vec![
            (ids[0], Some(Bytes::from(data[0].clone()))),
            (ids[1], None),
            (ids[2], None),
            (ids[2], None),
            (ids[3], Some(Bytes::from(data[2].clone()))),
        ]);
        assert_eq!(frame, expected.encode());
        assert_eq!(frame.len(), ChunksFrame::size(5, 305) - 3 * 4);
        assert_eq!(BlocksResponse::decode(&frame).unwrap(), expected);
        assert_eq!(
            ChunksFrame::with_capacity(0).finish(),
            BlocksResponse::Chunks(vec![]).encode()
        );
    }
}
