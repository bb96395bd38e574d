//! Fuzz targets: every decoder a peer reaches, as a `fn(&[u8])` that panics when an
//! invariant breaks.
//!
//! Each target takes hostile bytes where the daemon takes them. Where they decode, it
//! encodes the value again and asserts the round trip (the wire encodings are canonical:
//! re-encoding gives back the very bytes); where the daemon goes on (applies a sync
//! message, derives the tree, diffs against a peer's signature, applies a peer's delta),
//! the target goes on too and asserts what must hold there. A panic is a bug, in core or in
//! the target. [`TARGETS`] lists them for `core/fuzz` (AFL++ on the stable toolchain, run
//! by `bench/fuzz.sh`) and for the smoke test `core/tests/fuzz_smoke.rs`; [`seeds`] makes
//! their starting corpus from real encodings. No I/O, as everywhere in core.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::sync::OnceLock;

use crate::chunker::ChunkerParams;
use crate::delta::{self, BLOCK_SIZE, MAX_SIGNATURE_BLOCKS};
use crate::folder::tree::conflict_name;
use crate::folder::{DeviceId, EntryValue, FolderDoc, FolderMessage, Tree, TreeOptions};
use crate::hash::{ChunkId, ContentId};
use crate::manifest::{ChunkRef, Manifest, Outline};
use crate::pairing::{Inviter, Joiner, PairCode, PairRequest, PairResponse};
use crate::path::{self, RelPath, case_key};
use crate::scan::EntryKind;
use crate::wire::{self, BlocksRequest, BlocksResponse, MetaRequest, MetaResponse};

/// A fuzz target: takes any bytes, panics only when an invariant breaks.
pub type Target = fn(&[u8]);

/// Every target by name, as `core/fuzz` and the smoke test run them.
pub const TARGETS: &[(&str, Target)] = &[
    ("meta_request", meta_request),
    ("meta_response", meta_response),
    ("blocks_request", blocks_request),
    ("blocks_response", blocks_response),
    ("folder_message", folder_message),
    ("folder_sync", folder_sync),
    ("folder_tree", folder_tree),
    ("entry_value", entry_value),
    ("manifest", manifest),
    ("outline", outline),
    ("delta_anchors", delta_anchors),
    ("delta_diff", delta_diff),
    ("delta_apply", delta_apply),
    ("pair_request", pair_request),
    ("pair_response", pair_response),
    ("path", path),
];

/// Shards of the document a [`folder_sync`] input is applied to (and its seeds come from).
pub const SYNC_SHARDS: u16 = 4;

/// The largest chunk a manifest may name, as the daemon checks it (default chunker).
const MAX_CHUNK: u32 = ChunkerParams::V1_DEFAULT.max;

/// Asserts that `data` is the one encoding of `value`.
fn assert_canonical<T: Debug>(data: &[u8], value: &T, encoded: &[u8]) {
    assert!(
        encoded == data,
        "{value:?} decodes from {} but encodes to {}",
        hex(data),
        hex(encoded)
    );
}

/// Lower-case hex of `bytes`, for messages and for pasting into regression tests.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// `wire::MetaRequest::decode`, the first thing a peer's meta request meets.
pub fn meta_request(data: &[u8]) {
    if let Ok(m) = MetaRequest::decode(data) {
        assert!(m.folder.len() <= wire::MAX_FOLDER_ID);
        assert!(
            m.message
                .as_ref()
                .is_none_or(|b| b.len() <= wire::MAX_META_BYTES)
        );
        assert_canonical(data, &m, &m.encode());
    }
}

/// `wire::MetaResponse::decode`: a peer's answer to our meta request.
pub fn meta_response(data: &[u8]) {
    if let Ok(m) = MetaResponse::decode(data) {
        assert_canonical(data, &m, &m.encode());
    }
}

/// `wire::BlocksRequest::decode`: manifest, chunk and delta requests from a peer.
pub fn blocks_request(data: &[u8]) {
    if let Ok(r) = BlocksRequest::decode(data) {
        match &r {
            BlocksRequest::Chunks { chunks, .. } => {
                assert!(chunks.len() <= wire::MAX_CHUNKS_PER_REQUEST)
            }
            BlocksRequest::Delta { signature, .. } => {
                assert!(signature.len() <= wire::MAX_SIGNATURE_BYTES)
            }
            BlocksRequest::Manifest { .. }
            | BlocksRequest::ManifestPage { .. }
            | BlocksRequest::Kept { .. } => {}
        }
        assert!(r.folder().len() <= wire::MAX_FOLDER_ID);
        assert_canonical(data, &r, &r.encode());
    }
}

/// `wire::BlocksResponse::decode`: manifests, chunks and deltas from a peer.
pub fn blocks_response(data: &[u8]) {
    if let Ok(r) = BlocksResponse::decode(data) {
        match &r {
            BlocksResponse::Chunks(chunks) => {
                assert!(chunks.len() <= wire::MAX_CHUNKS_PER_REQUEST)
            }
            BlocksResponse::Kept { contents, .. } => {
                assert!(contents.len() <= wire::MAX_KEPT_PER_RESPONSE)
            }
            _ => {}
        }
        assert_canonical(data, &r, &r.encode());
    }
}

/// `FolderMessage::decode`: the payload of a meta request or response.
pub fn folder_message(data: &[u8]) {
    if let Ok(m) = FolderMessage::decode(data) {
        assert_eq!(m.len(), data.len());
        assert_canonical(data, &m, &m.encode());
    }
}

/// A peer's `FolderMessage` applied to a fresh document as the daemon's `apply_meta` does
/// (a fresh peer state, reset on error), then everything the daemon does with the result:
/// answer, derive the tree, save and load the shards, materialize.
pub fn folder_sync(data: &[u8]) {
    let Ok(message) = FolderMessage::decode(data) else {
        return;
    };
    let mut doc = FolderDoc::new(DeviceId([0xd0; 8]), SYNC_SHARDS).expect("a valid shard count");
    let mut peer = doc.new_peer();
    if doc.receive_sync_message(&mut peer, &message).is_err() {
        // Shards before the bad one may have changed: the rest still has to hold.
        peer.reset();
    }
    let _answer = doc.generate_sync_message(&mut peer);
    let recorded = doc.recorded();
    for options in [
        TreeOptions::default(),
        TreeOptions {
            case_insensitive: true,
        },
    ] {
        check_tree(&recorded.entries, &doc.tree(options), options);
    }
    let saved: Vec<Vec<u8>> = (0..usize::from(SYNC_SHARDS))
        .map(|s| doc.save_shard(s))
        .collect();
    let mut loaded = FolderDoc::load(doc.device(), &saved)
        .unwrap_or_else(|e| panic!("a document this device saved does not load: {e}"));
    assert_eq!(
        loaded.heads(),
        doc.heads(),
        "saved and loaded shards differ"
    );
    let tree = doc.tree(TreeOptions::default());
    doc.materialize(&tree);
    let again = doc.tree(TreeOptions::default());
    assert_eq!(
        again.data(),
        tree.data(),
        "materializing the tree changed it"
    );
}

/// `derive_tree` over values a peer recorded, straight from bytes (the document's keys and
/// values without automerge around them). Input: records of `[u16 path length][path]
/// [u16 value length][encoded EntryValue]`; undecodable values are skipped, as the
/// document skips them.
pub fn folder_tree(data: &[u8]) {
    let mut input = Input(data);
    let mut recorded: BTreeMap<String, Vec<EntryValue>> = BTreeMap::new();
    while let (Some(p), Some(v)) = (input.field(), input.field()) {
        let (Ok(p), Ok(v)) = (std::str::from_utf8(p), EntryValue::decode(v)) else {
            continue;
        };
        recorded.entry(p.to_string()).or_default().push(v);
    }
    for options in [
        TreeOptions::default(),
        TreeOptions {
            case_insensitive: true,
        },
    ] {
        let tree = crate::folder::derive_tree(recorded.clone(), options);
        check_tree(&recorded, &tree, options);
        assert_eq!(
            crate::folder::derive_tree(recorded.clone(), options),
            tree,
            "the tree is not a function of the recorded values"
        );
    }
}

/// What every derived tree must be: only live, valid paths, whose ancestors are all
/// directories (nothing is written through a symlink), no case clash where case folds, and
/// no live version of a valid path lost unless a concurrent value replaced it.
fn check_tree(recorded: &BTreeMap<String, Vec<EntryValue>>, tree: &Tree, options: TreeOptions) {
    for (p, e) in &tree.entries {
        assert!(!e.value.deleted, "a tombstone is live at {p:?}");
        if let Err(err) = path::validate(p) {
            panic!(
                "the tree holds the invalid path {p:?} ({err}), origin {:?}",
                e.origin
            );
        }
        for a in path::ancestors(p) {
            assert!(
                tree.get(a).is_some_and(|d| d.value.kind == EntryKind::Dir),
                "{p:?} is in the tree but its ancestor {a:?} is not a directory"
            );
        }
    }
    if options.case_insensitive {
        let mut groups: BTreeMap<String, Vec<EntryKind>> = BTreeMap::new();
        for (p, e) in &tree.entries {
            groups.entry(case_key(p)).or_default().push(e.value.kind);
        }
        for (key, kinds) in groups {
            assert!(
                kinds.len() == 1 || kinds.iter().all(|k| *k == EntryKind::Dir),
                "paths that fold to {key:?} clash: {kinds:?}"
            );
        }
    }
    for (p, values) in recorded {
        if path::validate(p).is_err() {
            assert!(
                tree.rejected.iter().any(|(r, _)| r == p),
                "{p:?} not rejected"
            );
            continue;
        }
        for v in values
            .iter()
            .filter(|v| !v.deleted && v.kind != EntryKind::Dir)
        {
            let superseded = v.content.is_some()
                && values
                    .iter()
                    .any(|w| w.replaces == v.content && w.content != v.content);
            assert!(
                superseded || tree.entries.values().any(|e| e.value.same_data(v)),
                "the version {v:?} of {p:?} is lost from the tree"
            );
        }
    }
}

/// `EntryValue::decode`: one value of the folder document, written by any member.
pub fn entry_value(data: &[u8]) {
    let Ok(v) = EntryValue::decode(data) else {
        return;
    };
    let encoded = v.encode();
    assert_eq!(EntryValue::decode(&encoded).as_ref(), Ok(&v), "round trip");
    // Varints may be longer than needed on the wire; never shorter.
    assert!(encoded.len() <= data.len());
    // A losing version is named after its own mtime and device, both the peer's choice.
    let copy = conflict_name("dir/name.txt", &v);
    assert!(path::validate(&copy).is_ok(), "bad conflict name {copy:?}");
}

/// `Manifest::decode`, then what the puller does: verify against the content id from the
/// folder metadata and check the chunk lengths; then proofs of single chunks.
pub fn manifest(data: &[u8]) {
    let Ok(m) = Manifest::decode(data) else {
        return;
    };
    assert_canonical(data, &m, &m.encode());
    let id = m.content_id();
    assert!(
        m.verify(&id).is_ok(),
        "a manifest must verify against its own id"
    );
    let other = ContentId(*blake3::hash(data).as_bytes());
    assert_eq!(m.verify(&other).is_ok(), other == id);
    if m.check_lengths(MAX_CHUNK).is_err() {
        return;
    }
    assert!(m.size() <= m.chunks.len() as u64 * u64::from(MAX_CHUNK));
    let n = m.chunks.len();
    if (1..=1024).contains(&n) {
        for i in [0, n / 2, n - 1] {
            let proof = m.prove(i).expect("an index below the count");
            assert!(proof.verify(&id, &m.chunks[i]), "proof of chunk {i} of {n}");
        }
    }
}

/// `Outline::decode`, then what the puller does with a paged manifest: verify the outline
/// against the content id, then pages against it. Input: an outline, or (after a 0xff
/// byte) a one-page manifest whose outline is made from it and checked page by page.
pub fn outline(data: &[u8]) {
    if let Some((&0xff, page)) = data.split_first() {
        let Ok(m) = Manifest::decode(page) else {
            return;
        };
        if m.chunks.is_empty() {
            return;
        }
        let o = Outline::of(&m);
        assert!(o.verify(&m.content_id()).is_ok(), "outline of a manifest");
        assert!(o.check_page(0, &m.page(0)).is_ok(), "its only page");
        assert!(o.check_page(1, &m).is_err(), "a page past the end");
        return;
    }
    let Ok(o) = Outline::decode(data) else {
        return;
    };
    assert_canonical(data, &o, &o.encode());
    assert!(o.pages() <= crate::manifest::MAX_PAGES);
    assert!(o.verify(&o.content_id()).is_ok());
    let other = ContentId(*blake3::hash(data).as_bytes());
    assert_eq!(o.verify(&other).is_ok(), other == o.content_id());
    assert!(o.check_page(o.pages(), &Manifest::default()).is_err());
    assert!(o.page_len(0) <= crate::manifest::PAGE_CHUNKS);
}

/// `delta::anchors` and `base_window` over a new manifest from a peer (verified against
/// its content id, which the peer chose too) and the old version this device has, as the
/// puller calls them. Input: `[old count]`, then 3 bytes per chunk, old ones first:
/// `[id byte][u16 length in 4-byte units - 1]` (ids are 32 copies of the id byte, so the
/// two versions share chunks easily). Both manifests pass `check_lengths` first.
pub fn delta_anchors(data: &[u8]) {
    let Some((&n_old, rest)) = data.split_first() else {
        return;
    };
    let chunks: Vec<ChunkRef> = rest
        .chunks_exact(3)
        .map(|c| ChunkRef {
            id: ChunkId([c[0]; 32]),
            len: (u32::from(u16::from_le_bytes([c[1], c[2]])) + 1) * 4,
        })
        .collect();
    let split = usize::from(n_old).min(chunks.len());
    let old = Manifest {
        chunks: chunks[..split].to_vec(),
    };
    let new = Manifest {
        chunks: chunks[split..].to_vec(),
    };
    if old.check_lengths(MAX_CHUNK).is_err() || new.check_lengths(MAX_CHUNK).is_err() {
        return;
    }
    let anchors = delta::anchors(&old, &new);
    let largest = (MAX_SIGNATURE_BLOCKS as u64 - 1) * u64::from(BLOCK_SIZE);
    for (i, c) in new.chunks.iter().enumerate() {
        if !anchors.at_edge(i) {
            continue;
        }
        if let Some(w) = anchors.base_window(i, c.len) {
            assert!(
                w.start < w.end && w.end <= old.size() && w.end - w.start <= largest,
                "base window {w:?} of chunk {i}, old size {}",
                old.size()
            );
        }
    }
}

fn noise(n: usize, seed: u64) -> Vec<u8> {
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

/// The base this device holds and the chunk it wants, for the delta targets.
fn delta_pair() -> &'static (Vec<u8>, Vec<u8>, ChunkRef) {
    static PAIR: OnceLock<(Vec<u8>, Vec<u8>, ChunkRef)> = OnceLock::new();
    PAIR.get_or_init(|| {
        let base = noise(6000, 1);
        let mut chunk = base[500..5000].to_vec();
        chunk.splice(2000..2000, noise(40, 2));
        let r = ChunkRef::of(&chunk);
        (base, chunk, r)
    })
}

/// `delta::diff` with a peer's signature (as `serve.rs` answers a delta request), and the
/// diff/apply round trip. Input: `[u16 signature length][signature][chunk]`.
pub fn delta_diff(data: &[u8]) {
    let mut input = Input(data);
    let (Some(signature), chunk) = (input.field(), input.0) else {
        return;
    };
    if let Ok(Some(d)) = delta::diff(signature, chunk) {
        assert!(
            d.len() < chunk.len(),
            "a delta must be smaller than its chunk"
        );
    }
    // The first field as this device's base: what diff makes of its signature, apply undoes.
    let base = signature;
    if let Ok(Some(d)) = delta::diff(&delta::signature(base), chunk) {
        let rebuilt = delta::apply(base, &d, &ChunkRef::of(chunk));
        assert_eq!(
            rebuilt.as_deref(),
            Ok(chunk),
            "apply(diff) is not the chunk"
        );
    }
}

/// `delta::apply` with a peer's delta, as the puller applies it to its own base. Input:
/// `[u32 claimed chunk length][delta]`; the chunk id is the wanted chunk's, so the only
/// acceptable result is that chunk.
pub fn delta_apply(data: &[u8]) {
    let (base, chunk, wanted) = delta_pair();
    let Some((len, d)) = data.split_first_chunk::<4>() else {
        return;
    };
    let len = u32::from_le_bytes(*len);
    if len == 0 || len > MAX_CHUNK {
        return; // `check_lengths` refuses such a manifest before any delta is asked for
    }
    let claimed = ChunkRef { id: wanted.id, len };
    if let Ok(out) = delta::apply(base, d, &claimed) {
        assert_eq!(
            &out, chunk,
            "a delta rebuilt something that is not the chunk"
        );
    }
}

fn pair_code() -> PairCode {
    PairCode::parse("7-guitar-ginger").expect("a valid code")
}

/// `PairRequest::decode`, then the inviter's side with the joiner's SPAKE2 message and
/// proof.
pub fn pair_request(data: &[u8]) {
    let Ok(r) = PairRequest::decode(data) else {
        return;
    };
    assert_canonical(data, &r, &r.encode());
    match &r {
        PairRequest::Hello { spake, .. } => {
            let _ = Inviter::answer(&pair_code(), b"joiner", b"inviter", spake);
        }
        PairRequest::Finish { proof, .. } => {
            static INVITER: OnceLock<Inviter> = OnceLock::new();
            let inviter = INVITER.get_or_init(|| {
                let (_, hello) = Joiner::start(&pair_code(), b"joiner", b"inviter");
                Inviter::answer(&pair_code(), b"joiner", b"inviter", &hello)
                    .expect("a joiner's own message")
                    .0
            });
            assert!(inviter.verify(proof).is_err(), "a forged proof passed");
        }
    }
}

/// `PairResponse::decode`, then the joiner's side with the inviter's message and proof.
pub fn pair_response(data: &[u8]) {
    let Ok(r) = PairResponse::decode(data) else {
        return;
    };
    assert_canonical(data, &r, &r.encode());
    if let PairResponse::Hello { spake, proof } = &r {
        let (mut joiner, _) = Joiner::start(&pair_code(), b"joiner", b"inviter");
        assert!(
            joiner.finish(spake, proof).is_err(),
            "a forged proof passed"
        );
    }
}

/// `path::validate` of a peer's path (a key of the folder document), checked against the
/// rules it promises.
pub fn path(data: &[u8]) {
    let Ok(p) = std::str::from_utf8(data) else {
        return; // document keys are strings
    };
    let _ = case_key(p);
    let valid = path::validate(p).is_ok();
    assert_eq!(RelPath::new(p).is_ok(), valid);
    if !valid {
        return;
    }
    assert!(p.len() <= path::MAX_PATH_BYTES && !p.starts_with('/'));
    assert!(!p.contains('\0') && !p.contains('\\'));
    for name in p.split('/') {
        assert!(!matches!(name, "" | "." | ".."), "{p:?}");
        assert!(name.len() <= path::MAX_NAME_BYTES && !path::is_reserved_name(name));
    }
    for a in path::ancestors(p) {
        assert!(
            path::validate(a).is_ok(),
            "{p:?} is valid, its ancestor {a:?} not"
        );
    }
}

/// Splits fuzz input into length-prefixed fields.
struct Input<'a>(&'a [u8]);

impl<'a> Input<'a> {
    /// The next `[u16 length][bytes]` field (cut short at the end of the input).
    fn field(&mut self) -> Option<&'a [u8]> {
        let (len, rest) = self.0.split_first_chunk::<2>()?;
        let len = usize::from(u16::from_le_bytes(*len)).min(rest.len());
        let (field, rest) = rest.split_at(len);
        self.0 = rest;
        Some(field)
    }
}

fn field(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(&(bytes.len() as u16).to_le_bytes());
    out.extend_from_slice(bytes);
}

fn value(kind: EntryKind, content: u8, mtime_ns: i64, device: u8) -> EntryValue {
    EntryValue {
        kind,
        deleted: false,
        content: (kind == EntryKind::File).then_some(ContentId([content; 32])),
        size: u64::from(content) * 100,
        mtime_ns,
        mode: if kind == EntryKind::Dir { 0o755 } else { 0o644 },
        link_target: (kind == EntryKind::Symlink).then(|| "../target".to_string()),
        device: DeviceId([device; 8]),
        replaces: None,
    }
}

/// Folder messages of a real sync round: a device with files, a directory, a symlink, a
/// tombstone and a concurrent edit, synced to a new device ([`SYNC_SHARDS`] shards).
fn sync_messages() -> Vec<FolderMessage> {
    use crate::folder::LocalChange;
    let present = |kind, content: u8, mtime_ns| LocalChange::Present {
        kind,
        content: (kind == EntryKind::File).then_some(ContentId([content; 32])),
        size: 10,
        mtime_ns,
        mode: 0o644,
        link_target: (kind == EntryKind::Symlink).then(|| "docs/a.txt".to_string()),
    };
    let mut a = FolderDoc::new(DeviceId([1; 8]), SYNC_SHARDS).expect("shards");
    let mut b = FolderDoc::new(DeviceId([2; 8]), SYNC_SHARDS).expect("shards");
    a.record_local("docs/a.txt", &present(EntryKind::File, 1, 1_000), None);
    a.record_local("docs", &present(EntryKind::Dir, 0, 1_000), None);
    a.record_local("link", &present(EntryKind::Symlink, 0, 2_000), None);
    a.record_local("gone.txt", &present(EntryKind::File, 2, 1_000), None);
    a.record_local("gone.txt", &LocalChange::Deleted, Some(ContentId([2; 32])));
    b.record_local("docs/a.txt", &present(EntryKind::File, 3, 5_000), None);
    b.record_local("Docs/A.TXT", &present(EntryKind::File, 4, 5_000), None);
    let mut out = Vec::new();
    let (mut to_b, mut to_a) = (a.new_peer(), b.new_peer());
    for _ in 0..10 {
        let there = a.generate_sync_message(&mut to_b);
        if let Some(m) = &there {
            b.receive_sync_message(&mut to_a, m)
                .expect("a real message");
            out.push(m.clone());
        }
        let back = b.generate_sync_message(&mut to_a);
        if let Some(m) = &back {
            a.receive_sync_message(&mut to_b, m)
                .expect("a real message");
            out.push(m.clone());
        }
        if there.is_none() && back.is_none() {
            break;
        }
    }
    out
}

/// Real encodings to start fuzzing `target` from (empty for an unknown name).
pub fn seeds(target: &str) -> Vec<Vec<u8>> {
    let (base, chunk, _) = delta_pair();
    let folder_message = || sync_messages().iter().map(FolderMessage::encode).collect();
    let manifest = Manifest {
        chunks: vec![
            ChunkRef::of(b"one"),
            ChunkRef::of(b"two"),
            ChunkRef::of(b"one"),
        ],
    };
    let signature = delta::signature(base);
    let spake: Vec<u8> = [0x41, 0x58].into_iter().chain([0x66; 31]).collect();
    match target {
        "meta_request" => [Some(vec![1, 0, 0, 0, 0]), None]
            .into_iter()
            .map(|message| {
                MetaRequest {
                    folder: "abcde-fghij".into(),
                    message,
                }
                .encode()
            })
            .collect(),
        "meta_response" => vec![
            MetaResponse::Ok {
                message: Some(vec![1, 0, 0, 0, 0]),
            }
            .encode(),
            MetaResponse::Ok { message: None }.encode(),
            MetaResponse::Denied.encode(),
        ],
        "blocks_request" => vec![
            BlocksRequest::Manifest {
                folder: "abcde-fghij".into(),
                content: manifest.content_id(),
            }
            .encode(),
            BlocksRequest::Chunks {
                folder: "f".into(),
                chunks: vec![ChunkId([1; 32]), ChunkId([2; 32])],
            }
            .encode(),
            BlocksRequest::Delta {
                folder: "f".into(),
                chunk: ChunkId::of(chunk),
                signature,
            }
            .encode(),
            BlocksRequest::ManifestPage {
                folder: "f".into(),
                content: manifest.content_id(),
                page: 1,
            }
            .encode(),
        ],
        "blocks_response" => vec![
            BlocksResponse::Manifest(Some(manifest.encode())).encode(),
            BlocksResponse::Manifest(None).encode(),
            BlocksResponse::Chunks(vec![
                (ChunkId::of(b"one"), Some(b"one".to_vec().into())),
                (ChunkId([2; 32]), None),
            ])
            .encode(),
            BlocksResponse::Delta(Some(vec![0x72, 0x73, 0x02, 0x36, 0])).encode(),
            BlocksResponse::Delta(None).encode(),
            BlocksResponse::Denied.encode(),
            BlocksResponse::Outline(Outline::of(&manifest).encode()).encode(),
            BlocksResponse::Page(Some(manifest.encode())).encode(),
            BlocksResponse::Page(None).encode(),
        ],
        "folder_message" | "folder_sync" => folder_message(),
        "folder_tree" => {
            let long = "n".repeat(200);
            let records = [
                ("a.txt", value(EntryKind::File, 1, 1_000, 1)),
                ("a.txt", value(EntryKind::File, 2, 2_000, 2)),
                ("A.TXT", value(EntryKind::File, 3, 2_000, 3)),
                ("d", value(EntryKind::File, 4, 1_000, 1)),
                ("d/x", value(EntryKind::Symlink, 0, 1_000, 2)),
                ("e", value(EntryKind::Dir, 0, 1_000, 1)),
                (long.as_str(), value(EntryKind::File, 5, 1_000, 1)),
                (long.as_str(), value(EntryKind::File, 6, 3_000, 2)),
            ];
            let mut tombstone = value(EntryKind::File, 1, 3_000, 3).deleted_by(DeviceId([3; 8]));
            tombstone.replaces = Some(ContentId([1; 32]));
            let mut all = Vec::new();
            let mut out = Vec::new();
            for (p, v) in records.into_iter().chain([("a.txt", tombstone)]) {
                let mut one = Vec::new();
                field(&mut one, p.as_bytes());
                field(&mut one, &v.encode());
                all.extend_from_slice(&one);
                if out.len() < 2 {
                    out.push(all.clone());
                }
            }
            out.push(all);
            out
        }
        "entry_value" => {
            let mut tombstone = value(EntryKind::File, 1, -5, 1).deleted_by(DeviceId([9; 8]));
            tombstone.replaces = Some(ContentId([1; 32]));
            [
                value(EntryKind::File, 7, 1_700_000_000_123_456_789, 1),
                value(EntryKind::Dir, 0, 0, 2),
                value(EntryKind::Symlink, 0, 1, 3),
                tombstone,
            ]
            .iter()
            .map(EntryValue::encode)
            .collect()
        }
        "manifest" => vec![
            manifest.encode(),
            Manifest::default().encode(),
            Manifest {
                chunks: (0..5u32).map(|i| ChunkRef::of(&i.to_le_bytes())).collect(),
            }
            .encode(),
        ],
        "outline" => {
            let big = Outline {
                count: crate::manifest::PAGE_CHUNKS as u64 + 2,
                roots: vec![[1; 32], [2; 32]],
            };
            vec![
                big.encode(),
                Outline::of(&manifest).encode(),
                [&[0xff][..], &manifest.encode()].concat(),
            ]
        }
        "delta_anchors" => {
            // [old count] then (id, length) per chunk: an edit, an insertion, a deletion.
            let chunks =
                |ids: &[u8]| -> Vec<u8> { ids.iter().flat_map(|&id| [id, 0x00, 0x40]).collect() };
            [
                (&[1, 2, 3, 4][..], &[1, 9, 3, 4][..]),
                (&[1, 2, 3], &[1, 2, 8, 9, 3]),
                (&[1, 2, 3, 4], &[1, 4]),
            ]
            .into_iter()
            .map(|(old, new)| {
                let mut s = vec![old.len() as u8];
                s.extend(chunks(old));
                s.extend(chunks(new));
                s
            })
            .collect()
        }
        "delta_diff" => {
            let mut with_base = Vec::new();
            field(&mut with_base, &delta::signature(base));
            with_base.extend_from_slice(chunk);
            let mut small = Vec::new();
            field(&mut small, &chunk[..1500]);
            small.extend_from_slice(&base[..1200]);
            vec![with_base, small]
        }
        "delta_apply" => {
            let d = delta::diff(&delta::signature(base), chunk)
                .ok()
                .flatten()
                .unwrap_or_default();
            let mut out = (chunk.len() as u32).to_le_bytes().to_vec();
            out.extend_from_slice(&d);
            vec![out]
        }
        "pair_request" => vec![
            PairRequest::Hello {
                nameplate: 7,
                spake: spake.clone(),
            }
            .encode(),
            PairRequest::Finish {
                proof: [3; 32],
                name: "laptop".into(),
            }
            .encode(),
        ],
        "pair_response" => vec![
            PairResponse::Hello {
                spake: [0x42]
                    .into_iter()
                    .chain(spake[1..].iter().copied())
                    .collect(),
                proof: [4; 32],
            }
            .encode(),
            PairResponse::Done {
                name: "desk".into(),
            }
            .encode(),
            PairResponse::NoInvitation.encode(),
            PairResponse::Failed.encode(),
        ],
        "path" => [
            "a/b/c.txt",
            "My Documents/Report 10:30.pdf",
            "ünïcode/名前",
            "../etc/passwd",
            "dir/nul.txt",
            ".cairn-tmp.x.1",
            "a//b",
        ]
        .iter()
        .map(|p| p.as_bytes().to_vec())
        .chain([vec![b'n'; 255]])
        .collect(),
        _ => Vec::new(),
    }
}
