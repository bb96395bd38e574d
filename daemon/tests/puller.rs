//! The puller against a peer that lies: chunks whose bytes do not match their id are
//! refused and counted, nothing partial reaches the real name, and an honest peer then
//! completes the file. Edited chunks travel as deltas from the old version; a delta that
//! does not rebuild its chunk is never written.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use cairn_core::conduct::Violation;
use cairn_core::folder::{DeviceId, EntryValue};
use cairn_core::planner::{Action, Plan};
use cairn_core::scan::EntryKind;
use cairn_core::wire::{BlocksRequest, BlocksResponse};
use cairn_core::{ChunkRef, Chunker, ChunkerParams, Manifest};
use cairn_daemon::index::{FolderRecord, Index};
use cairn_daemon::metrics::Metrics;
use cairn_daemon::puller::{NetCommand, Puller};
use libp2p::PeerId;
use tokio::sync::mpsc;

fn data() -> Vec<u8> {
    let mut x = 0x9E3779B97F4A7C15u64;
    (0..1_500_000)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// Answers blocks requests: with corrupted bytes while `lying`, then honestly.
/// The fake peer's thread; it returns the violations the puller reported.
type FakePeer = std::thread::JoinHandle<Vec<(PeerId, Violation)>>;

fn fake_peer(
    mut rx: mpsc::UnboundedReceiver<NetCommand>,
    bytes: Vec<u8>,
    manifest: Manifest,
    lies: usize,
) -> FakePeer {
    std::thread::spawn(move || {
        let mut violations = Vec::new();
        let mut offsets = HashMap::new();
        let mut at = 0usize;
        for c in &manifest.chunks {
            offsets.insert(c.id, (at, c.len as usize));
            at += c.len as usize;
        }
        let mut answered = 0;
        while let Some(cmd) = rx.blocking_recv() {
            let (request, reply) = match cmd {
                NetCommand::Blocks { request, reply, .. } => (request, reply),
                NetCommand::Violation { peer, kind, .. } => {
                    violations.push((peer, kind));
                    continue;
                }
            };
            let response = match request {
                BlocksRequest::Chunks { chunks, .. } => BlocksResponse::Chunks(
                    chunks
                        .iter()
                        .map(|id| {
                            let (o, l) = offsets[id];
                            let mut chunk = bytes[o..o + l].to_vec();
                            if answered < lies {
                                chunk[0] ^= 0xff; // the lie
                            }
                            (*id, Some(chunk))
                        })
                        .collect(),
                ),
                BlocksRequest::Manifest { .. } => BlocksResponse::Manifest(Some(manifest.encode())),
                BlocksRequest::Delta {
                    chunk, signature, ..
                } => {
                    let (o, l) = offsets[&chunk];
                    let mut wanted = bytes[o..o + l].to_vec();
                    if answered < lies {
                        wanted[l / 2] ^= 0xff; // a well-formed delta to the wrong bytes
                    }
                    BlocksResponse::Delta(
                        cairn_core::delta::diff(&signature, &wanted).ok().flatten(),
                    )
                }
            };
            answered += 1;
            let _ = reply.send(Ok(response));
        }
        violations
    })
}

fn setup(
    lies: usize,
) -> (
    tempfile::TempDir,
    Puller,
    Plan,
    HashMap<String, EntryValue>,
    FakePeer,
    PeerId,
) {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("folder");
    std::fs::create_dir(&root).unwrap();
    let index = Arc::new(Index::open(&dir.path().join("index.redb")).unwrap());
    let params = ChunkerParams::V1_DEFAULT;
    index
        .put_folder(&FolderRecord {
            id: "f".into(),
            root: root.clone(),
            chunker: params.to_string(),
        })
        .unwrap();
    let bytes = data();
    let chunker = Chunker::new(params).unwrap();
    let manifest = Manifest {
        chunks: chunker
            .chunk_slice(&bytes)
            .map(|(_, c)| ChunkRef::of(c))
            .collect(),
    };
    let content = manifest.content_id();
    index.put_remote_manifest(&content, &manifest).unwrap();
    let (tx, rx) = mpsc::unbounded_channel();
    let peer = PeerId::random();
    let handle = fake_peer(rx, bytes.clone(), manifest.clone(), lies);
    let puller = Puller {
        folder: "f".into(),
        root: root.clone(),
        chunker,
        index,
        history_dir: dir.path().join("history"),
        roots: HashMap::from([("f".to_string(), root.clone())]),
        peers: vec![peer],
        net: tx,
        metrics: Arc::new(Metrics::default()),
        progress: Arc::new(cairn_daemon::puller::PullProgress::default()),
        dirty_dirs: Default::default(),
        keeps: Default::default(),
        preserving: Default::default(),
    };
    let value = EntryValue {
        kind: EntryKind::File,
        deleted: false,
        content: Some(content),
        size: bytes.len() as u64,
        mtime_ns: 1_700_000_000_000_000_000,
        mode: 0o644,
        link_target: None,
        device: DeviceId([1; 8]),
        replaces: None,
    };
    let plan = Plan {
        actions: vec![Action::WriteFile {
            path: "got.bin".into(),
            content,
            size: value.size,
            mtime_ns: value.mtime_ns,
            mode: value.mode,
            conflict_of: None,
        }],
        rejected: vec![],
    };
    let values = HashMap::from([("got.bin".to_string(), value)]);
    (dir, puller, plan, values, handle, peer)
}

#[test]
fn corrupt_chunks_are_refused_counted_and_fetched_again() {
    let (_dir, puller, plan, values, handle, peer) = setup(2);
    let outcome = puller.run(&plan, &values);
    assert!(outcome.failed.is_empty(), "{:?}", outcome.failed);
    assert_eq!(std::fs::read(puller.root.join("got.bin")).unwrap(), data());
    drop(puller);
    let violations = handle.join().unwrap();
    assert!(!violations.is_empty());
    assert!(
        violations.iter().all(|v| *v == (peer, Violation::BadChunk)),
        "{violations:?}"
    );
}

#[test]
fn a_peer_that_always_lies_leaves_no_file_under_the_real_name() {
    let (_dir, puller, plan, values, handle, peer) = setup(usize::MAX);
    let outcome = puller.run(&plan, &values);
    assert_eq!(outcome.failed.len(), 1);
    assert!(!puller.root.join("got.bin").exists());
    drop(puller);
    let violations = handle.join().unwrap();
    assert!(!violations.is_empty());
    assert!(
        violations.iter().all(|v| *v == (peer, Violation::BadChunk)),
        "{violations:?}"
    );
}

#[test]
fn a_local_edit_that_races_the_write_keeps_the_name_and_the_incoming_version_becomes_a_conflict_copy()
 {
    let (_dir, puller, plan, values, handle, _peer) = setup(0);
    // The user created the file after the last scan: the index does not know it.
    std::fs::write(puller.root.join("got.bin"), b"my local edit").unwrap();
    let outcome = puller.run(&plan, &values);
    assert!(outcome.failed.is_empty(), "{:?}", outcome.failed);
    assert_eq!(
        std::fs::read(puller.root.join("got.bin")).unwrap(),
        b"my local edit"
    );
    assert_eq!(outcome.raced.len(), 1);
    assert!(
        outcome.raced[0].starts_with("got.sync-conflict-") && outcome.raced[0].ends_with(".bin")
    );
    assert_eq!(
        std::fs::read(puller.root.join(&outcome.raced[0])).unwrap(),
        data()
    );
    drop(puller);
    handle.join().unwrap();
}

/// Puts an older version of `got.bin` (100 bytes differ in the middle) on the disk and in
/// the index, as a scan would have; returns how many chunks of the new version it lacks.
fn old_version_on_disk(puller: &Puller) -> usize {
    let mut old = data();
    old[700_000..700_100].copy_from_slice(&[0x55; 100]);
    std::fs::write(puller.root.join("got.bin"), &old).unwrap();
    let record = puller.index.folders().unwrap().remove(0);
    cairn_daemon::scanner::scan_folder(&puller.index, &record, &|_| {}).unwrap();
    let new = data();
    puller
        .chunker
        .chunk_slice(&new)
        .filter(|(_, c)| !puller.index.has_chunk(&cairn_core::ChunkId::of(c)).unwrap())
        .count()
}

#[test]
fn edited_chunks_arrive_as_small_deltas_from_the_old_version() {
    let (_dir, puller, plan, values, handle, peer) = setup(0);
    let changed = old_version_on_disk(&puller);
    assert!(changed >= 1);
    let outcome = puller.run(&plan, &values);
    assert!(outcome.failed.is_empty(), "{:?}", outcome.failed);
    assert_eq!(std::fs::read(puller.root.join("got.bin")).unwrap(), data());
    let m = &puller.metrics;
    assert_eq!(m.delta_chunks.load(Ordering::Relaxed), changed as u64);
    // Whole chunks are at least 16 KiB; a 100-byte edit's delta is a few hundred bytes.
    let received = m.peer_counters(&peer.to_string()).bytes_received;
    assert!(
        received < 4096 * changed as u64,
        "{received} bytes received"
    );
    drop(puller);
    handle.join().unwrap();
}

#[test]
fn a_delta_that_does_not_rebuild_its_chunk_is_refused_and_the_chunk_fetched_whole() {
    let (_dir, puller, plan, values, handle, _peer) = setup(1);
    let changed = old_version_on_disk(&puller);
    let outcome = puller.run(&plan, &values);
    assert!(outcome.failed.is_empty(), "{:?}", outcome.failed);
    assert_eq!(std::fs::read(puller.root.join("got.bin")).unwrap(), data());
    // The first delta lied: that chunk came whole, any other by an honest delta.
    assert_eq!(
        puller.metrics.delta_chunks.load(Ordering::Relaxed),
        changed as u64 - 1
    );
    drop(puller);
    handle.join().unwrap();
}
