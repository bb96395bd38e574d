//! Single-thread chunking and hashing speed on random data in memory.
//! Run: cargo run --release -p cairn-core --example chunk_speed -- [MiB]
use std::time::Instant;

use cairn_core::{ChunkId, Chunker, ChunkerParams};
use rand::{RngCore, SeedableRng, rngs::StdRng};

fn main() {
    let mib: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(512);
    let mut data = vec![0u8; mib << 20];
    StdRng::seed_from_u64(1).fill_bytes(&mut data);
    let chunker = Chunker::new(ChunkerParams::V1_DEFAULT).expect("default params are valid");
    let gbs = |t: std::time::Duration| data.len() as f64 / t.as_secs_f64() / 1e9;

    let t = Instant::now();
    let n = chunker.chunk_slice(&data).count();
    println!("cut only:       {:.2} GB/s ({n} chunks)", gbs(t.elapsed()));

    let t = Instant::now();
    let mut x = 0u8;
    for (_, c) in chunker.chunk_slice(&data) {
        x ^= ChunkId::of(c).0[0];
    }
    println!("cut + blake3:   {:.2} GB/s ({x})", gbs(t.elapsed()));

    let t = Instant::now();
    let h = blake3::hash(&data);
    println!(
        "blake3 whole:   {:.2} GB/s ({})",
        gbs(t.elapsed()),
        &h.to_hex()[..8]
    );
}
