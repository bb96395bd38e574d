//! What recording a large file in the index costs when kept versions share its chunks: a
//! 256 MiB file (4,096 chunks) put into the index and removed again, with 3 and with 100
//! kept versions of it in history (each holding the same chunks).
//!
//!   cargo bench -p cairn-daemon --bench record
//!
//! A pull records every file it writes this way (a restore, the next edit of a file with
//! many kept versions), so this is on the path of every such write.

use cairn_core::scan::{EntryKind, IndexedEntry, Stamp};
use cairn_core::{ChunkId, ChunkRef, ChunkerParams, Manifest};
use cairn_daemon::index::{FolderRecord, Index, Update};
use criterion::{Criterion, criterion_group, criterion_main};

const CHUNKS: usize = 4096;

/// A manifest of CHUNKS chunks; versions differ in their first chunk only.
fn manifest(version: u8) -> Manifest {
    Manifest {
        chunks: (0..CHUNKS)
            .map(|i| {
                let mut id = [0u8; 32];
                id[..8].copy_from_slice(&(i as u64).to_le_bytes());
                if i == 0 {
                    id[31] = version;
                }
                ChunkRef {
                    id: ChunkId(id),
                    len: 65_536,
                }
            })
            .collect(),
    }
}

fn record(c: &mut Criterion) {
    let mut group = c.benchmark_group("record a 4,096-chunk file in the index and remove it");
    group.sample_size(20);
    for versions in [3u8, 100] {
        let dir = tempfile::tempdir().unwrap();
        let index = Index::open(&dir.path().join("index.redb")).unwrap();
        index
            .put_folder(&FolderRecord {
                id: "f".into(),
                root: dir.path().into(),
                chunker: ChunkerParams::V1_DEFAULT.to_string(),
            })
            .unwrap();
        for v in 1..=versions {
            let m = manifest(v);
            index
                .add_history("f", "big.bin", &m.content_id(), &m)
                .unwrap();
        }
        let current = manifest(0);
        let entry = IndexedEntry {
            kind: EntryKind::File,
            stamp: Stamp {
                size: (CHUNKS * 65_536) as u64,
                mtime_ns: 0,
                ctime_ns: 0,
                inode: 1,
                mode: 0o644,
            },
            content: Some(current.content_id()),
            link_target: None,
        };
        group.bench_function(format!("{versions} kept versions"), |b| {
            b.iter(|| {
                let put = Update::Put {
                    path: "big.bin".into(),
                    entry: entry.clone(),
                    manifest: Some(current.clone()),
                };
                index.apply_with("f", &[put], false).unwrap();
                let remove = Update::Remove {
                    path: "big.bin".into(),
                };
                index.apply_with("f", &[remove], false).unwrap();
            })
        });
    }
    group.finish();
}

criterion_group!(benches, record);
criterion_main!(benches);
