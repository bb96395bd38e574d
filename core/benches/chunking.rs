//! What one core does per byte when a file is scanned: the FastCDC cut (cairn's and the
//! crate's loop, which cut alike), BLAKE3 of each chunk,
//! and, for comparison, BLAKE3 of the whole buffer the way `b3sum` hashes a file.
//!
//!   cargo bench -p cairn-core --bench chunking
//!
//! A first scan costs at least the cut plus the per-chunk hash of every byte; `bench/scan.sh`
//! puts that floor beside the measured scan and `b3sum`.

use std::hint::black_box;

use cairn_core::{ChunkId, Chunker, ChunkerParams};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

fn data(len: usize) -> Vec<u8> {
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    let mut out = vec![0u8; len];
    for word in out.chunks_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        word.copy_from_slice(&x.to_le_bytes()[..word.len()]);
    }
    out
}

fn chunking(c: &mut Criterion) {
    let data = data(64 << 20);
    let chunker = Chunker::new(ChunkerParams::V1_DEFAULT).unwrap();
    let chunks: Vec<&[u8]> = chunker.chunk_slice(&data).map(|(_, b)| b).collect();
    let mut group = c.benchmark_group("one core, 64 MiB of random data");
    group.throughput(Throughput::Bytes(data.len() as u64));
    group.sample_size(20);
    group.bench_function("fastcdc cut", |b| {
        b.iter(|| chunker.chunk_slice(black_box(&data)).count())
    });
    // The same cuts by the fastcdc crate's own loop, which `Chunker::cut` replaced.
    let p = ChunkerParams::V1_DEFAULT;
    group.bench_function("fastcdc crate's cut (same cuts, one lane)", |b| {
        b.iter(|| {
            fastcdc::v2020::FastCDC::new(
                black_box(&data),
                p.min as usize,
                p.avg as usize,
                p.max as usize,
            )
            .count()
        })
    });
    group.bench_function("blake3 per chunk", |b| {
        b.iter(|| {
            chunks
                .iter()
                .map(|c| ChunkId::of(black_box(c)))
                .fold(0u8, |acc, id| acc ^ id.as_bytes()[0])
        })
    });
    group.bench_function("fastcdc cut + blake3 per chunk", |b| {
        b.iter(|| {
            chunker
                .chunk_slice(black_box(&data))
                .map(|(_, c)| ChunkId::of(c))
                .fold(0u8, |acc, id| acc ^ id.as_bytes()[0])
        })
    });
    group.bench_function("blake3 whole buffer (b3sum, one thread)", |b| {
        b.iter(|| blake3::hash(black_box(&data)))
    });
    group.finish();
}

criterion_group!(benches, chunking);
criterion_main!(benches);
