//! Cost of recording a directory rename in the folder document.
//!
//! cargo run --release -p cairn-core --example rename_scale -- FILES
//! Builds a document of FILES files under old/, then records old/ -> new/ as a scan
//! reports it (every file deleted at its old path, added at its new one), timing each
//! half, on as many threads as the machine has cores (`WORKERS=N` to choose); prints
//! one JSON object.

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
    // A peer that has the folder, in sync before the rename.
    let mut peer = FolderDoc::new(DeviceId([0xbb; 8]), cairn_core::folder::doc::DEFAULT_SHARDS)
        .expect("valid shard count");
    let (mut to_peer, mut from_doc) = (doc.new_peer(), peer.new_peer());
    exchange(&mut doc, &mut peer, &mut to_peer, &mut from_doc);
    let deleted = LocalChange::Deleted;
    let presents: Vec<LocalChange> = (0..n).map(present).collect();
    let olds: Vec<String> = (0..n).map(|i| path("old", i)).collect();
    let news: Vec<String> = (0..n).map(|i| path("new", i)).collect();
    let gone: Vec<(&str, &LocalChange, Option<ContentId>)> = (0..n)
        .map(|i| {
            let content = match &presents[i] {
                LocalChange::Present { content, .. } => *content,
                LocalChange::Deleted => None,
            };
            (olds[i].as_str(), &deleted, content)
        })
        .collect();
    let arrived: Vec<(&str, &LocalChange, Option<ContentId>)> = (0..n)
        .map(|i| (news[i].as_str(), &presents[i], None))
        .collect();
    // WORKERS=1 records path by path on one thread, as before `record_local_all`.
    let workers: usize = std::env::var("WORKERS")
        .ok()
        .and_then(|w| w.parse().ok())
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    doc.set_workers(workers);
    // What reading the current values costs (every recorded change reads its path first).
    let t = Instant::now();
    let read: usize = olds.iter().map(|p| doc.values(p).len()).sum();
    let read_s = t.elapsed().as_secs_f64();
    assert_eq!(read, n);
    let t = Instant::now();
    doc.record_local_all(&gone);
    let deletes_s = t.elapsed().as_secs_f64();
    let t = Instant::now();
    doc.record_local_all(&arrived);
    let adds_s = t.elapsed().as_secs_f64();
    let t = Instant::now();
    doc.commit();
    let commit_s = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let saved: usize = (0..doc.shard_count() as usize)
        .map(|s| doc.save_shard(s).len())
        .sum();
    let save_s = t.elapsed().as_secs_f64();
    peer.set_workers(workers);
    let (generate_s, receive_s) = exchange(&mut doc, &mut peer, &mut to_peer, &mut from_doc);
    println!(
        "{{\"files\": {n}, \"workers\": {workers}, \"read_values_s\": {read_s:.3}, \"deletes_s\": {deletes_s:.3}, \"adds_s\": {adds_s:.3}, \"commit_s\": {commit_s:.3}, \"save_all_s\": {save_s:.3}, \"saved_bytes\": {saved}, \"generate_s\": {generate_s:.3}, \"peer_receive_s\": {receive_s:.3}, \"us_per_op\": {:.1}}}",
        (deletes_s + adds_s) * 1e6 / (2 * n) as f64
    );
}

/// Syncs `doc` to `peer` until both are quiet; returns the seconds spent generating
/// `doc`'s messages and applying them at `peer`.
fn exchange(
    doc: &mut FolderDoc,
    peer: &mut FolderDoc,
    to_peer: &mut cairn_core::folder::PeerSync,
    from_doc: &mut cairn_core::folder::PeerSync,
) -> (f64, f64) {
    let (mut generate, mut receive) = (0.0, 0.0);
    for _ in 0..100 {
        let t = Instant::now();
        let m = doc.generate_sync_message(to_peer);
        generate += t.elapsed().as_secs_f64();
        let t = Instant::now();
        if let Some(m) = &m {
            peer.receive_sync_message(from_doc, m)
                .expect("valid message");
        }
        receive += t.elapsed().as_secs_f64();
        let back = peer.generate_sync_message(from_doc);
        if let Some(b) = &back {
            doc.receive_sync_message(to_peer, b).expect("valid message");
        }
        if m.is_none() && back.is_none() {
            break;
        }
    }
    (generate, receive)
}
