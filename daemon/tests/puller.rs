//! The puller against a peer that lies: chunks whose bytes do not match their id are
//! refused and counted, nothing partial reaches the real name, and an honest peer then
//! completes the file. Edited chunks travel as deltas from the old version; a delta that
//! does not rebuild its chunk is never written.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use cairn_core::conduct::Violation;
use cairn_core::folder::{DeviceId, EntryValue};
use cairn_core::planner::{Action, Plan};
use cairn_core::scan::EntryKind;
use cairn_core::wire::{BlocksRequest, BlocksResponse};
use cairn_core::{ChunkRef, Chunker, ChunkerParams, Manifest, Outline};
use cairn_daemon::index::{FolderRecord, Index, Stored};
use cairn_daemon::metrics::Metrics;
use cairn_daemon::puller::{NetCommand, Puller};
use libp2p::PeerId;
use tokio::sync::mpsc;

fn data() -> Vec<u8> {
    pseudo_random(1_500_000, 0x9E3779B97F4A7C15)
}

fn pseudo_random(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// The next blocks request the puller sends a fake peer, with where to answer it; the
/// violations it reports meanwhile go to `violations`.
fn next_request(
    rx: &mut mpsc::UnboundedReceiver<NetCommand>,
    violations: &mut Vec<(PeerId, Violation)>,
) -> Option<(
    BlocksRequest,
    tokio::sync::oneshot::Sender<Result<BlocksResponse, String>>,
)> {
    loop {
        match rx.blocking_recv()? {
            NetCommand::Blocks { request, reply, .. } => return Some((request, reply)),
            NetCommand::Violation { peer, kind, .. } => violations.push((peer, kind)),
        }
    }
}

/// The fake peer's thread; it returns the violations the puller reported.
type FakePeer = std::thread::JoinHandle<Vec<(PeerId, Violation)>>;

/// Answers blocks requests for one file: its first `lies` answers corrupt the chunk or
/// delta, then honestly; a paged manifest comes as its outline and pages (page `forged`
/// altered).
fn fake_peer(
    mut rx: mpsc::UnboundedReceiver<NetCommand>,
    bytes: Vec<u8>,
    manifest: Manifest,
    (lies, forged): (usize, Option<usize>),
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
        while let Some((request, reply)) = next_request(&mut rx, &mut violations) {
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
                            (*id, Some(chunk.into()))
                        })
                        .collect(),
                ),
                BlocksRequest::Manifest { .. } if manifest.is_paged() => {
                    BlocksResponse::Outline(Outline::of(&manifest).encode())
                }
                BlocksRequest::Manifest { .. } => BlocksResponse::Manifest(Some(manifest.encode())),
                BlocksRequest::ManifestPage { page, .. } => {
                    let mut m = manifest.page(page as usize);
                    if forged == Some(page as usize) {
                        m.chunks.swap(0, 1);
                    }
                    BlocksResponse::Page(Some(m.encode()))
                }
                BlocksRequest::Kept { .. } => BlocksResponse::Kept {
                    contents: Vec::new(),
                    more: false,
                },
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

/// The runtime the version store's blocking calls wait on.
static RUNTIME: std::sync::LazyLock<tokio::runtime::Runtime> = std::sync::LazyLock::new(|| {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap()
});

/// A puller of folder "f" at `dir/folder` with one peer, whose requests go to `net`.
fn puller(
    dir: &tempfile::TempDir,
    chunker: Chunker,
    index: Arc<Index>,
    peer: PeerId,
    net: mpsc::UnboundedSender<NetCommand>,
) -> Puller {
    let root = dir.path().join("folder");
    Puller {
        folder: "f".into(),
        root: root.clone(),
        chunker,
        index,
        versions: Arc::new(
            cairn_daemon::versions::VersionStore::open(
                &dir.path().join("versions"),
                &dir.path().join("history"),
                RUNTIME.handle().clone(),
            )
            .unwrap(),
        ),
        roots: HashMap::from([("f".to_string(), root)]),
        peers: vec![peer],
        net,
        metrics: Arc::new(Metrics::default()),
        progress: Arc::new(cairn_daemon::puller::PullProgress::default()),
        dirty_dirs: Default::default(),
        keeps: Default::default(),
        preserving: Default::default(),
        scope: None,
        before_rename: None,
        waited_for_peers: Default::default(),
        prefetched: Default::default(),
    }
}

fn file_value(content: cairn_core::ContentId, size: u64) -> EntryValue {
    EntryValue {
        kind: EntryKind::File,
        deleted: false,
        content: Some(content),
        size,
        mtime_ns: 1_700_000_000_000_000_000,
        mode: 0o644,
        link_target: None,
        device: DeviceId([1; 8]),
        replaces: None,
    }
}

/// A plan that writes `value` at `path`, after fetching its manifest when asked.
fn write_plan(
    path: &str,
    value: EntryValue,
    fetch_manifest: bool,
) -> (Plan, HashMap<String, EntryValue>) {
    let content = value.content.unwrap();
    let mut actions = Vec::new();
    if fetch_manifest {
        actions.push(Action::FetchManifest { content });
    }
    actions.push(Action::WriteFile {
        path: path.into(),
        content,
        size: value.size,
        mtime_ns: value.mtime_ns,
        mode: value.mode,
        conflict_of: None,
    });
    let plan = Plan {
        actions,
        rejected: vec![],
    };
    (plan, HashMap::from([(path.to_string(), value)]))
}

/// A chunker with `params`, and the manifest it cuts `bytes` into.
fn cut(params: ChunkerParams, bytes: &[u8]) -> (Chunker, Manifest) {
    let chunker = Chunker::new(params).unwrap();
    let manifest = Manifest {
        chunks: chunker
            .chunk_slice(bytes)
            .map(|(_, c)| ChunkRef::of(c))
            .collect(),
    };
    (chunker, manifest)
}

/// A temp dir with an index that has folder "f" at `dir/folder`, cut with `params`.
fn folder_index(params: ChunkerParams) -> (tempfile::TempDir, Arc<Index>) {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("folder");
    std::fs::create_dir(&root).unwrap();
    let index = Arc::new(Index::open(&dir.path().join("index.redb")).unwrap());
    index
        .put_folder(&FolderRecord {
            id: "f".into(),
            root,
            chunker: params.to_string(),
        })
        .unwrap();
    (dir, index)
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
    let params = ChunkerParams::V1_DEFAULT;
    let (dir, index) = folder_index(params);
    let bytes = data();
    let (chunker, manifest) = cut(params, &bytes);
    let content = manifest.content_id();
    index
        .put_remote_manifests(&[(content, Stored::Whole(manifest.clone()))])
        .unwrap();
    let (tx, rx) = mpsc::unbounded_channel();
    let peer = PeerId::random();
    let handle = fake_peer(rx, bytes.clone(), manifest.clone(), (lies, None));
    let puller = puller(&dir, chunker, index, peer, tx);
    let (plan, values) = write_plan("got.bin", file_value(content, bytes.len() as u64), false);
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

/// Chunker parameters that cut 16 MB into more than one page of chunks (about 100,000).
const TINY_CHUNKS: ChunkerParams = ChunkerParams {
    version: 1,
    min: 64,
    avg: 128,
    max: 256,
    normalization: 1,
};

fn paged_data() -> Vec<u8> {
    pseudo_random(16_000_000, 0x2545F4914F6CDD1D)
}

fn paged_setup(
    forged: Option<usize>,
) -> (
    tempfile::TempDir,
    Puller,
    Plan,
    HashMap<String, EntryValue>,
    FakePeer,
    Manifest,
) {
    let (dir, index) = folder_index(TINY_CHUNKS);
    let bytes = paged_data();
    let (chunker, manifest) = cut(TINY_CHUNKS, &bytes);
    assert!(manifest.is_paged(), "{} chunks", manifest.chunks.len());
    let content = manifest.content_id();
    let (tx, rx) = mpsc::unbounded_channel();
    let handle = fake_peer(rx, bytes.clone(), manifest.clone(), (0, forged));
    let puller = puller(&dir, chunker, index, PeerId::random(), tx);
    let (plan, values) = write_plan("big.bin", file_value(content, bytes.len() as u64), true);
    (dir, puller, plan, values, handle, manifest)
}

/// A manifest of more than one page arrives as an outline and pages, each verified, and
/// the file is written and recorded with every chunk where it is (the local manifest is
/// copied page by page, never assembled).
#[test]
fn a_paged_manifest_arrives_page_by_page_and_the_file_is_recorded() {
    let (_dir, puller, plan, values, handle, manifest) = paged_setup(None);
    let outcome = puller.run(&plan, &values);
    assert!(outcome.failed.is_empty(), "{:?}", outcome.failed);
    assert_eq!(
        std::fs::read(puller.root.join("big.bin")).unwrap(),
        paged_data()
    );
    let content = manifest.content_id();
    let index = &puller.index;
    assert_eq!(index.manifest(&content).unwrap().as_ref(), Some(&manifest));
    assert_eq!(index.content_size(&content).unwrap(), Some(16_000_000));
    let last = manifest.chunks.last().unwrap();
    let locs = index.chunk_locations(&last.id).unwrap();
    assert!(
        locs.iter()
            .any(|l| l.path == "big.bin" && l.offset == 16_000_000 - u64::from(last.len)),
        "{locs:?}"
    );
    // Removing the file releases its pages too.
    index
        .apply(
            "f",
            &[cairn_daemon::index::Update::Remove {
                path: "big.bin".into(),
            }],
        )
        .unwrap();
    assert_eq!(index.manifest(&content).unwrap(), None);
    assert!(index.chunk_locations(&last.id).unwrap().is_empty());
    drop(puller);
    assert!(handle.join().unwrap().is_empty());
}

/// A page that does not match its root in the outline is refused and counted; nothing
/// reaches the real name.
#[test]
fn a_forged_page_is_refused_and_counted() {
    let (_dir, puller, plan, values, handle, _manifest) = paged_setup(Some(1));
    let outcome = puller.run(&plan, &values);
    assert_eq!(outcome.failed.len(), 1, "{:?}", outcome.failed);
    assert!(!puller.root.join("big.bin").exists());
    drop(puller);
    let violations = handle.join().unwrap();
    assert_eq!(violations.len(), 1, "{violations:?}");
    assert_eq!(violations[0].1, Violation::BadManifest);
}

/// Manifests learnt from peers are pruned in bounded batches (a first sync of
/// 1,000,000 files leaves as many), never one of a kept version.
#[test]
fn remote_manifests_are_pruned_in_batches_and_kept_versions_stay() {
    let params = ChunkerParams::V1_DEFAULT;
    let (_dir, index) = folder_index(params);
    let manifests: Vec<(cairn_core::ContentId, Stored)> = (0..25u64)
        .map(|i| {
            let (_, m) = cut(params, &pseudo_random(1000 + i as usize, i));
            (m.content_id(), Stored::Whole(m))
        })
        .collect();
    index.put_remote_manifests(&manifests).unwrap();
    let (kept, Stored::Whole(kept_manifest)) = &manifests[7] else {
        unreachable!()
    };
    index
        .add_history("f", "kept.bin", kept, kept_manifest)
        .unwrap();
    assert_eq!(index.remote_manifest_count().unwrap(), 25);
    assert_eq!(index.prune_remote_manifests(10).unwrap(), (10, false));
    assert_eq!(index.remote_manifest_count().unwrap(), 15);
    assert_eq!(index.prune_remote_manifests(10).unwrap(), (10, false));
    assert_eq!(index.prune_remote_manifests(10).unwrap(), (4, true));
    assert_eq!(
        index.remote_manifest_count().unwrap(),
        1,
        "the kept version's stays"
    );
    assert_eq!(index.prune_remote_manifests(10).unwrap(), (0, true));
}

/// Makes the same-size edit a user could make to `src` in the moment between the puller's
/// check of a rename's source and the rename.
fn edit_in_place(src: &std::path::Path) {
    let mut bytes = std::fs::read(src).unwrap();
    bytes[0] ^= 0xff;
    // Past the scan's mtime even on a coarse clock.
    std::thread::sleep(std::time::Duration::from_millis(20));
    std::fs::write(src, &bytes).unwrap();
}

#[test]
fn an_edit_racing_a_rename_is_read_by_the_next_scan_not_taken_for_the_renamed_version() {
    let params = ChunkerParams::V1_DEFAULT;
    let (dir, index) = folder_index(params);
    let bytes = data();
    let (chunker, manifest) = cut(params, &bytes);
    let content = manifest.content_id();
    let (tx, _rx) = mpsc::unbounded_channel();
    let mut puller = puller(&dir, chunker, index, PeerId::random(), tx);
    std::fs::write(puller.root.join("old.bin"), &bytes).unwrap();
    let record = puller.index.folders().unwrap().remove(0);
    cairn_daemon::scanner::scan_folder(&puller.index, &record, &|_| {}).unwrap();
    // A peer renamed old.bin to new.bin; here the user edits old.bin just as it moves.
    let value = file_value(content, bytes.len() as u64);
    let plan = Plan {
        actions: vec![Action::Rename {
            from: "old.bin".into(),
            path: "new.bin".into(),
            content,
            size: value.size,
            mtime_ns: value.mtime_ns,
            mode: value.mode,
        }],
        rejected: vec![],
    };
    let values = HashMap::from([("new.bin".to_string(), value)]);
    puller.before_rename = Some(edit_in_place);
    let outcome = puller.run(&plan, &values);
    assert!(outcome.failed.is_empty(), "{:?}", outcome.failed);
    let on_disk = std::fs::read(puller.root.join("new.bin")).unwrap();
    assert_ne!(on_disk, bytes, "the edit went into the moved file");
    // The index must not take the edited file for the renamed version: the next scan
    // reads it and records the edit.
    cairn_daemon::scanner::scan_folder(&puller.index, &record, &|_| {}).unwrap();
    let entry = puller.index.entry("f", "new.bin").unwrap().unwrap();
    assert_ne!(
        entry.content,
        Some(content),
        "the edited file is recorded as the renamed version"
    );
    let (_, edited) = cut(params, &on_disk);
    assert_eq!(entry.content, Some(edited.content_id()));
}

/// A peer deleted a directory of files: the puller keeps every version it removes (staged
/// and recorded together, `delete_run`), removes the files and the directory, and leaves a
/// file written to since its scan where it is (modify beats delete) with the directory
/// holding it.
#[test]
fn a_run_of_deletes_keeps_every_version_and_leaves_a_file_edited_since_its_scan() {
    let params = ChunkerParams::V1_DEFAULT;
    let (dir, index) = folder_index(params);
    let (chunker, _) = cut(params, b"");
    let (tx, _rx) = mpsc::unbounded_channel();
    let puller = puller(&dir, chunker, index, PeerId::random(), tx);
    let files: Vec<(String, Vec<u8>)> = (0..6u64)
        .map(|i| {
            let d = if i < 3 { "a" } else { "b" };
            (
                format!("{d}/f{i}.bin"),
                pseudo_random(20_000 + i as usize, i + 1),
            )
        })
        .collect();
    for d in ["a", "b"] {
        std::fs::create_dir(puller.root.join(d)).unwrap();
    }
    for (path, bytes) in &files {
        std::fs::write(puller.root.join(path), bytes).unwrap();
    }
    let record = puller.index.folders().unwrap().remove(0);
    cairn_daemon::scanner::scan_folder(&puller.index, &record, &|_| {}).unwrap();
    // The user edits b/f4.bin after the scan, before the peer's delete arrives.
    edit_in_place(&puller.root.join("b/f4.bin"));
    let mut deletes: Vec<(String, EntryKind)> = files
        .iter()
        .map(|(p, _)| (p.clone(), EntryKind::File))
        .chain([("a".into(), EntryKind::Dir), ("b".into(), EntryKind::Dir)])
        .collect();
    deletes.sort_by(|x, y| y.0.cmp(&x.0)); // the planner's order: deepest first
    let plan = Plan {
        actions: deletes
            .into_iter()
            .map(|(path, kind)| Action::Delete { path, kind })
            .collect(),
        rejected: vec![],
    };
    let outcome = puller.run(&plan, &HashMap::new());
    assert!(outcome.failed.is_empty(), "{:?}", outcome.failed);
    let kept: HashMap<String, cairn_core::ContentId> = puller
        .index
        .all_history()
        .unwrap()
        .into_iter()
        .map(|(_, path, _, content)| (path, content))
        .collect();
    for (path, bytes) in &files {
        let (_, manifest) = cut(params, bytes);
        if path == "b/f4.bin" {
            assert!(
                puller.root.join(path).exists(),
                "the edited file was removed"
            );
            assert!(puller.index.entry("f", path).unwrap().is_some());
            assert!(!kept.contains_key(path), "{path} kept though not removed");
            continue;
        }
        assert!(!puller.root.join(path).exists(), "{path} not removed");
        assert!(
            puller.index.entry("f", path).unwrap().is_none(),
            "{path} still indexed"
        );
        assert_eq!(
            kept.get(path),
            Some(&manifest.content_id()),
            "{path} not kept"
        );
        assert!(puller.versions.is_staged(&manifest.content_id()));
    }
    assert!(
        !puller.root.join("a").exists(),
        "the emptied directory stays"
    );
    assert!(
        puller.root.join("b").is_dir(),
        "the directory holding the edit went"
    );
}

/// Peers first: a file this device would write from its kept versions waits while a peer
/// that asked for that version is being served from them (the peer is restoring it from
/// here), and is written once the serving has been quiet; without serving, or with serving
/// but no ask for this version, it does not wait, and endless serving holds it only for
/// `peers_first_bound`.
#[test]
fn a_copy_from_kept_versions_waits_while_a_peer_is_served_from_them() {
    let params = ChunkerParams::V1_DEFAULT;
    let (dir, index) = folder_index(params);
    let bytes = pseudo_random(300_000, 7);
    let (chunker, manifest) = cut(params, &bytes);
    let content = manifest.content_id();
    let (tx, _rx) = mpsc::unbounded_channel();
    let puller = puller(&dir, chunker, index, PeerId::random(), tx);
    std::fs::write(puller.root.join("k.bin"), &bytes).unwrap();
    let record = puller.index.folders().unwrap().remove(0);
    cairn_daemon::scanner::scan_folder(&puller.index, &record, &|_| {}).unwrap();
    // A peer's delete: the version is kept, and only the version store holds it now.
    let delete = Plan {
        actions: vec![Action::Delete {
            path: "k.bin".into(),
            kind: EntryKind::File,
        }],
        rejected: vec![],
    };
    let outcome = puller.run(&delete, &HashMap::new());
    assert!(outcome.failed.is_empty(), "{:?}", outcome.failed);
    assert!(
        puller.versions.has(&content).unwrap(),
        "the version was not kept"
    );
    let restore = |name: &str| {
        let (plan, values) = write_plan(name, file_value(content, bytes.len() as u64), false);
        let outcome = puller.run(&plan, &values);
        assert!(outcome.failed.is_empty(), "{:?}", outcome.failed);
        assert_eq!(std::fs::read(puller.root.join(name)).unwrap(), bytes);
    };
    let waited = || *puller.waited_for_peers.lock().unwrap();
    // Serves kept chunks every 100 ms until `stop` (or `until`), while `restore` runs.
    let serving_while = |name: &str, until: Option<Duration>| {
        let stop = std::sync::atomic::AtomicBool::new(false);
        std::thread::scope(|s| {
            let server = s.spawn(|| {
                let start = Instant::now();
                while !stop.load(std::sync::atomic::Ordering::SeqCst)
                    && until.is_none_or(|u| start.elapsed() < u)
                {
                    puller.versions.note_served();
                    std::thread::sleep(Duration::from_millis(100));
                }
                Instant::now()
            });
            std::thread::sleep(Duration::from_millis(200));
            let before = waited();
            restore(name);
            let written = Instant::now();
            stop.store(true, std::sync::atomic::Ordering::SeqCst);
            (server.join().unwrap(), written, waited() - before)
        })
    };
    // No peer is being served: the copy is written at once.
    restore("quiet.bin");
    assert_eq!(waited(), Duration::ZERO);
    // Kept chunks are served, but no peer asked for this version: no wait.
    let (_, _, waited_unasked) = serving_while("unasked.bin", Some(Duration::from_millis(1_500)));
    assert_eq!(
        waited_unasked,
        Duration::ZERO,
        "waited for a fetch of another version"
    );
    // A peer asked for this version and is served for half a second (within the bound
    // below): the copy is written after.
    puller.versions.note_asked(&content);
    let (served_until, written, waited_asked) =
        serving_while("served.bin", Some(Duration::from_millis(500)));
    assert!(
        written >= served_until,
        "the copy was written while the peer was still being served"
    );
    assert!(waited_asked > Duration::ZERO);
    // Serving that does not end: the copy waits only as long as the peer's fetch of a
    // file of this size should take.
    let bound = cairn_daemon::puller::peers_first_bound(bytes.len() as u64);
    let (_, _, waited_endless) = serving_while("endless.bin", None);
    assert!(
        waited_endless >= bound && waited_endless < bound + Duration::from_millis(100),
        "waited {waited_endless:?}, bound {bound:?}"
    );
}

/// A run of small new files: their chunks come many files per request, not one request
/// per file, and a wrong chunk among them is refused, counted and fetched again by its
/// file's own write.
#[test]
fn small_new_files_come_many_per_request_and_a_wrong_chunk_among_them_is_refused() {
    const FILES: usize = 100;
    let params = ChunkerParams::V1_DEFAULT;
    let (dir, index) = folder_index(params);
    let mut chunks: HashMap<cairn_core::ChunkId, Vec<u8>> = HashMap::new();
    let (mut actions, mut values, mut files) = (Vec::new(), HashMap::new(), Vec::new());
    let mut chunker = None;
    for k in 0..FILES {
        let bytes = pseudo_random(1_000 + 37 * k, 100 + k as u64);
        let (c, manifest) = cut(params, &bytes);
        chunker = Some(c);
        for (chunk, at) in manifest.chunks.iter().zip(manifest.offsets()) {
            let at = at as usize;
            chunks.insert(chunk.id, bytes[at..at + chunk.len as usize].to_vec());
        }
        let content = manifest.content_id();
        index
            .put_remote_manifests(&[(content, Stored::Whole(manifest))])
            .unwrap();
        let path = format!("f{k}.bin");
        let (plan, v) = write_plan(&path, file_value(content, bytes.len() as u64), false);
        actions.extend(plan.actions);
        values.extend(v);
        files.push((path, bytes));
    }
    let (tx, mut rx) = mpsc::unbounded_channel();
    let peer = PeerId::random();
    // The peer: answers chunk requests, with the first chunk of its first answer wrong.
    let server = std::thread::spawn(move || {
        let (mut requests, mut violations) = (0usize, Vec::new());
        while let Some((request, reply)) = next_request(&mut rx, &mut violations) {
            let BlocksRequest::Chunks { chunks: ids, .. } = request else {
                panic!("asked for {request:?}");
            };
            requests += 1;
            let items = ids
                .iter()
                .enumerate()
                .map(|(n, id)| {
                    let mut data = chunks[id].clone();
                    if requests == 1 && n == 0 {
                        data[0] ^= 0xff;
                    }
                    (*id, Some(data.into()))
                })
                .collect();
            let _ = reply.send(Ok(BlocksResponse::Chunks(items)));
        }
        (requests, violations)
    });
    let puller = puller(&dir, chunker.unwrap(), index, peer, tx);
    let plan = Plan {
        actions,
        rejected: vec![],
    };
    let outcome = puller.run(&plan, &values);
    assert!(outcome.failed.is_empty(), "{:?}", outcome.failed);
    for (path, bytes) in &files {
        assert_eq!(
            &std::fs::read(puller.root.join(path)).unwrap(),
            bytes,
            "{path}"
        );
    }
    assert!(puller.prefetched.lock().unwrap().is_empty());
    drop(puller);
    let (requests, violations) = server.join().unwrap();
    // 100 single-chunk files, 32 chunks per request: 4 requests, and one more for the
    // chunk that came wrong (one request per file: 100).
    assert_eq!(requests, FILES.div_ceil(32) + 1, "chunk requests");
    assert_eq!(violations, vec![(peer, Violation::BadChunk)]);
}
