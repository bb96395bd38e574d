//! Cost of recording a directory rename in the folder document.
//!
//! cargo run --release -p cairn-core --example rename_scale -- FILES
//! Builds a document of FILES files under old/, then records old/ -> new/ as a scan
//! reports it (every file deleted at its old path, added at its new one), timing each
//! half; prints one JSON object.

use std::time::Instant;

use cairn_core::ContentId;
use cairn_core::folder::{DeviceId, FolderDoc, LocalChange};
use cairn_core::scan::EntryKind;

fn present(i: usize) -> LocalChange {
    LocalChange::Present {
        kind: EntryKind::File,
        content: Some(ContentId(*blake3::hash(&i.to_le_bytes()).as_bytes())),
        size: 1000 + i as u64,
        mtime_ns: 1_700_000_000_000_000_000 + i as i64,
        mode: 0o644,
        link_target: None,
    }
}

fn path(dir: &str, i: usize) -> String {
    format!("{dir}/d{:03}/file{i:06}.bin", i % 100)
}

fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(10_000);
    let mut doc = FolderDoc::new(DeviceId([0xaa; 8]), cairn_core::folder::doc::DEFAULT_SHARDS)
        .expect("valid shard count");
    for i in 0..n {
        doc.record_local(&path("old", i), &present(i), None);
    }
    doc.commit();
    let _ = doc.take_changed();
    let t = Instant::now();
    for i in 0..n {
        let content = match present(i) {
            LocalChange::Present { content, .. } => content,
            LocalChange::Deleted => None,
        };
        doc.record_local(&path("old", i), &LocalChange::Deleted, content);
    }
    let deletes_s = t.elapsed().as_secs_f64();
    let t = Instant::now();
    for i in 0..n {
        doc.record_local(&path("new", i), &present(i), None);
    }
    let adds_s = t.elapsed().as_secs_f64();
    let t = Instant::now();
    doc.commit();
    let commit_s = t.elapsed().as_secs_f64();
    println!(
        "{{\"files\": {n}, \"deletes_s\": {deletes_s:.3}, \"adds_s\": {adds_s:.3}, \"commit_s\": {commit_s:.3}, \"us_per_op\": {:.1}}}",
        (deletes_s + adds_s) * 1e6 / (2 * n) as f64
    );
}
