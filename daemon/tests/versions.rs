//! The version store on iroh-blobs: versions that share chunks share their bytes, a file
//! that changed is not kept as the version it no longer is, dropped versions' bytes go
//! with a collector run while shared chunks stay, the old history directory migrates, and
//! pruning follows the folders' rules.

use std::path::Path;
use std::sync::{Arc, LazyLock};

use cairn_core::retention::Retention;
use cairn_core::{ChunkRef, Chunker, ChunkerParams, ContentId, Manifest};
use cairn_daemon::index::{FolderRecord, Index, history_holder};
use cairn_daemon::versions::{self, VersionError, VersionStore};

static RUNTIME: LazyLock<tokio::runtime::Runtime> = LazyLock::new(|| {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap()
});

fn pseudo_random(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn manifest(bytes: &[u8]) -> Manifest {
    let chunker = Chunker::new(ChunkerParams::V1_DEFAULT).unwrap();
    Manifest {
        chunks: chunker
            .chunk_slice(bytes)
            .map(|(_, c)| ChunkRef::of(c))
            .collect(),
    }
}

fn store(dir: &Path) -> VersionStore {
    VersionStore::open(
        &dir.join("versions"),
        &dir.join("history"),
        RUNTIME.handle().clone(),
    )
    .unwrap()
}

/// Writes `bytes` to `dir/name` and returns (content, manifest, path).
fn file(dir: &Path, name: &str, bytes: &[u8]) -> (ContentId, Manifest, std::path::PathBuf) {
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    let m = manifest(bytes);
    (m.content_id(), m, path)
}

/// The bytes of a kept version, read back chunk by chunk.
fn read_back(store: &VersionStore, content: &ContentId) -> Vec<u8> {
    let mut out = Vec::new();
    for id in store.chunks_of(content).unwrap().expect("kept") {
        out.extend(store.chunk_checked(&id).expect("chunk in the store"));
    }
    out
}

fn folder_index(dir: &Path) -> Arc<Index> {
    let index = Arc::new(Index::open(&dir.join("index.redb")).unwrap());
    let root = dir.join("folder");
    std::fs::create_dir_all(&root).unwrap();
    index
        .put_folder(&FolderRecord {
            id: "f".into(),
            root,
            chunker: ChunkerParams::V1_DEFAULT.to_string(),
        })
        .unwrap();
    index
}

#[test]
fn versions_that_share_chunks_share_their_bytes_and_only_unshared_ones_are_collected() {
    let dir = tempfile::tempdir().unwrap();
    let store = store(dir.path());
    let v1 = pseudo_random(4 << 20, 7);
    let mut v2 = v1.clone();
    // A small edit in the middle: one or two chunks differ.
    for b in &mut v2[2_000_000..2_000_100] {
        *b ^= 0x5a;
    }
    let (c1, m1, p1) = file(dir.path(), "v1", &v1);
    let (c2, m2, p2) = file(dir.path(), "v2", &v2);
    store.keep_file(&c1, &m1, &p1).unwrap();
    let one = store.disk_bytes();
    store.keep_file(&c2, &m2, &p2).unwrap();
    let two = store.disk_bytes();
    assert!(store.has(&c1).unwrap() && store.has(&c2).unwrap());
    assert_eq!(read_back(&store, &c1), v1);
    assert_eq!(read_back(&store, &c2), v2);
    println!(
        "store: one version {one} B, two versions {two} B (file {} B)",
        v1.len()
    );
    assert!(
        one >= v1.len() as u64,
        "the first version's bytes are in the store"
    );
    assert!(
        two - one < (v1.len() / 8) as u64,
        "the second version added {} bytes for a 100-byte edit",
        two - one
    );
    // Dropping the first frees only what the second does not share.
    store.drop_version(&c1).unwrap();
    store
        .collect_garbage(std::time::Duration::from_secs(60))
        .unwrap();
    assert!(!store.has(&c1).unwrap());
    assert_eq!(read_back(&store, &c2), v2, "shared chunks stay");
    let only: std::collections::HashSet<_> = m1
        .chunks
        .iter()
        .map(|c| c.id)
        .collect::<std::collections::HashSet<_>>()
        .difference(&m2.chunks.iter().map(|c| c.id).collect())
        .copied()
        .collect();
    assert!(!only.is_empty());
    for id in only {
        assert!(
            store.chunk_checked(&id).is_err(),
            "a chunk only the dropped version had is gone"
        );
    }
    store.shutdown();
}

#[test]
fn a_file_that_no_longer_holds_its_version_is_not_kept_as_it() {
    let dir = tempfile::tempdir().unwrap();
    let store = store(dir.path());
    let bytes = pseudo_random(1 << 20, 11);
    let (content, m, path) = file(dir.path(), "f", &bytes);
    let mut edited = bytes.clone();
    edited[500_000] ^= 1;
    std::fs::write(&path, &edited).unwrap();
    assert!(matches!(
        store.keep_file(&content, &m, &path),
        Err(VersionError::Changed)
    ));
    assert!(!store.has(&content).unwrap());
    store.shutdown();
}

/// Found by the chaos test (seed 1): a file appended to through a descriptor still open
/// holds every chunk of its indexed version unchanged, plus bytes after them. Kept as
/// that version, then replaced, the appended version was gone; the hard link of earlier
/// versions had kept the inode, appends and all.
#[test]
fn an_appended_file_is_not_kept_as_the_version_it_starts_with() {
    let dir = tempfile::tempdir().unwrap();
    let store = store(dir.path());
    let bytes = pseudo_random(1 << 20, 12);
    let (content, m, path) = file(dir.path(), "f", &bytes);
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(&path)
        .unwrap();
    std::io::Write::write_all(&mut f, b"appended").unwrap();
    assert!(matches!(
        store.keep_file(&content, &m, &path),
        Err(VersionError::Changed)
    ));
    assert!(!store.has(&content).unwrap());
    store.shutdown();
}

#[test]
fn the_store_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let bytes = pseudo_random(300_000, 3);
    let (content, m, path) = file(dir.path(), "f", &bytes);
    {
        let s = store(dir.path());
        s.keep_file(&content, &m, &path).unwrap();
        s.shutdown();
    }
    let s = store(dir.path());
    assert_eq!(s.contents().unwrap(), [content]);
    assert_eq!(read_back(&s, &content), bytes);
    s.shutdown();
}

#[test]
fn the_old_history_directory_migrates_into_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let index = folder_index(dir.path());
    let old = dir.path().join("history");
    std::fs::create_dir(&old).unwrap();
    // Kept by an earlier version: a whole file named by its content id, a history row,
    // chunk locations under the one `@history` pseudo-folder.
    let bytes = pseudo_random(700_000, 5);
    let m = manifest(&bytes);
    let content = m.content_id();
    std::fs::write(old.join(content.to_hex()), &bytes).unwrap();
    index.add_history("f", "doc.txt", &content, &m).unwrap();
    // A file no row lists, and one that does not hold the version its name says.
    let stray = pseudo_random(1000, 9);
    std::fs::write(old.join(manifest(&stray).content_id().to_hex()), &stray).unwrap();
    let damaged = pseudo_random(50_000, 13);
    let dm = manifest(&damaged);
    let mut bad = damaged.clone();
    bad[10] ^= 1;
    std::fs::write(old.join(dm.content_id().to_hex()), &bad).unwrap();
    index
        .add_history("f", "bad.txt", &dm.content_id(), &dm)
        .unwrap();

    let store = store(dir.path());
    versions::migrate(&index).unwrap();
    assert_eq!(versions::import_staged(&index, &store).unwrap(), 1);
    assert_eq!(read_back(&store, &content), bytes);
    assert!(
        !old.join(content.to_hex()).exists(),
        "migrated file removed"
    );
    assert!(
        old.join(manifest(&stray).content_id().to_hex()).exists(),
        "unlisted file left"
    );
    assert!(
        old.join(dm.content_id().to_hex()).exists(),
        "damaged file left"
    );
    assert!(!store.imported(&dm.content_id()).unwrap());
    assert!(store.is_staged(&dm.content_id()), "left as it is");
    // Its chunks are now recorded as the folder's kept version's.
    let locs = index.chunk_locations(&m.chunks[0].id).unwrap();
    assert!(locs.iter().any(|l| l.folder == history_holder("f")));
    assert!(!locs.iter().any(|l| l.folder == "@history"));
    // Again: nothing changes.
    versions::migrate(&index).unwrap();
    assert_eq!(versions::import_staged(&index, &store).unwrap(), 0);
    assert_eq!(read_back(&store, &content), bytes);
    store.shutdown();
}

/// A kept version is a hard link first (no copy on the pull's path); it is read from the
/// link until the importer has copied it into the store, then from the store. A staged
/// file written to after it was replaced (an append through a descriptor still open) is
/// no longer its version: the importer leaves it as it is.
#[test]
fn a_staged_version_is_served_from_its_link_until_imported_and_one_written_to_stays_staged() {
    use std::io::Write;
    let dir = tempfile::tempdir().unwrap();
    let index = folder_index(dir.path());
    let store = store(dir.path());
    let bytes = pseudo_random(600_000, 21);
    let (content, m, path) = file(dir.path(), "a.bin", &bytes);
    store.stage(&content, &path).unwrap();
    index.add_history("f", "a.bin", &content, &m).unwrap();
    // The pull renames over the name: the link holds the version alone.
    let incoming = dir.path().join("incoming");
    std::fs::write(&incoming, b"the new version").unwrap();
    std::fs::rename(&incoming, &path).unwrap();
    assert!(store.is_staged(&content) && store.has(&content).unwrap());
    assert!(!store.imported(&content).unwrap());
    let last = m.chunks.len() - 1;
    let at: u64 = m.chunks[..last].iter().map(|c| c.len as u64).sum();
    let chunk = &m.chunks[last];
    let read = store
        .version_chunk(&content, &chunk.id, at, chunk.len as usize)
        .expect("read from the link");
    assert_eq!(read, &bytes[at as usize..]);

    assert_eq!(versions::import_staged(&index, &store).unwrap(), 1);
    assert!(!store.is_staged(&content), "the link is gone once imported");
    assert!(store.imported(&content).unwrap());
    assert_eq!(read_back(&store, &content), bytes);
    let read = store
        .version_chunk(&content, &chunk.id, at, chunk.len as usize)
        .expect("read from the store");
    assert_eq!(read, &bytes[at as usize..]);

    // Staged, then appended to through a descriptor opened before.
    let bytes2 = pseudo_random(300_000, 22);
    let (c2, m2, p2) = file(dir.path(), "b.bin", &bytes2);
    let mut open = std::fs::OpenOptions::new().append(true).open(&p2).unwrap();
    store.stage(&c2, &p2).unwrap();
    index.add_history("f", "b.bin", &c2, &m2).unwrap();
    std::fs::remove_file(&p2).unwrap();
    open.write_all(b"appended later").unwrap();
    drop(open);
    assert_eq!(versions::import_staged(&index, &store).unwrap(), 0);
    assert!(store.is_staged(&c2), "left as it is: it holds a write");
    assert!(!store.imported(&c2).unwrap());
    let staged = std::fs::read(dir.path().join("history").join(c2.to_hex())).unwrap();
    assert_eq!(&staged[..bytes2.len()], &bytes2[..]);
    assert!(
        staged.ends_with(b"appended later"),
        "nothing of the write lost"
    );
    store.shutdown();
}

#[test]
fn pruning_drops_what_the_rules_no_longer_keep_and_the_last_listing_keeps_the_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let index = folder_index(dir.path());
    let store = store(dir.path());
    let a = pseudo_random(200_000, 21);
    let (ca, ma, pa) = file(dir.path(), "a", &a);
    let b = pseudo_random(200_000, 22);
    let (cb, mb, pb) = file(dir.path(), "b", &b);
    store.keep_file(&ca, &ma, &pa).unwrap();
    index.add_history("f", "a.txt", &ca, &ma).unwrap();
    // The same version kept twice (two paths), and another.
    index.add_history("f", "copy-of-a.txt", &ca, &ma).unwrap();
    store.keep_file(&cb, &mb, &pb).unwrap();
    index.add_history("f", "b.txt", &cb, &mb).unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as i64;
    // Nothing is old yet.
    let keep_all = Retention::default();
    let p = versions::prune(&index, &store, &[("f".into(), keep_all)], now).unwrap();
    assert_eq!((p.dropped, p.kept), (0, 3));
    // A day later, with a maximum age of an hour: all go, and their bytes with them.
    let hour = Retention {
        staggered: true,
        max_age_ns: Some(3_600_000_000_000),
        max_bytes: None,
    };
    let day = 86_400_000_000_000;
    let p = versions::prune(&index, &store, &[("f".into(), hour)], now + day).unwrap();
    assert_eq!((p.dropped, p.kept), (3, 0));
    assert!(p.bytes_after < p.bytes_before, "{p:?}");
    assert!(!store.has(&ca).unwrap() && !store.has(&cb).unwrap());
    assert!(store.chunk_checked(&ma.chunks[0].id).is_err());
    let locs = index.chunk_locations(&ma.chunks[0].id).unwrap();
    assert!(locs.is_empty(), "{locs:?}");
    store.shutdown();
}

#[test]
fn versions_in_the_store_that_no_row_lists_are_dropped_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let index = folder_index(dir.path());
    let store = store(dir.path());
    let bytes = pseudo_random(100_000, 31);
    let (c, m, p) = file(dir.path(), "x", &bytes);
    store.keep_file(&c, &m, &p).unwrap();
    // Killed before the index recorded it.
    assert_eq!(versions::drop_unlisted(&index, &store).unwrap(), 1);
    assert!(!store.has(&c).unwrap());
    store.shutdown();
}

/// Versions are staged as whole files and imported when no pull runs; while a large file
/// was edited again and again, pulls never stopped and the staged copies filled the disk
/// (`bench/versions.sh`: 24 GiB). Past the staging limit the importer runs during pulls,
/// down to the limit.
#[test]
fn staged_copies_past_the_limit_are_imported_while_pulls_keep_running() {
    let dir = tempfile::tempdir().unwrap();
    let index = folder_index(dir.path());
    let store = Arc::new(store(dir.path()));
    store.set_staging_limit(1_000_000);
    versions::spawn_importer(index.clone(), store.clone()).unwrap();
    let pull = store.pulling();
    let stage = |name: &str, seed: u64| {
        let bytes = pseudo_random(400_000, seed);
        let (content, m, path) = file(dir.path(), name, &bytes);
        store.stage(&content, &path).unwrap();
        index.add_history("f", name, &content, &m).unwrap();
        std::fs::remove_file(&path).unwrap();
        content
    };
    // Under the limit: staged, and left until the pulls stop.
    let first = stage("a.bin", 31);
    std::thread::sleep(std::time::Duration::from_secs(3));
    assert!(
        store.is_staged(&first),
        "imported while a pull ran, under the limit"
    );
    // Past it (1.2 MB staged): imported down to the limit although the pull still runs.
    let all = [first, stage("b.bin", 34), stage("c.bin", 36)];
    let staged = || all.iter().filter(|c| store.is_staged(c)).count();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while std::time::Instant::now() < deadline && staged() > 2 {
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert!(
        staged() <= 2,
        "3 versions (1.2 MB) still staged while a pull runs"
    );
    // The rest once the pulls stop.
    drop(pull);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while std::time::Instant::now() < deadline && staged() > 0 {
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    for c in all {
        assert!(
            !store.is_staged(&c) && store.imported(&c).unwrap(),
            "{c} still staged"
        );
    }
    store.shutdown();
}
