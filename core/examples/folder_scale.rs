//! Scale of the folder document: build, save, load, apply changes, full sync.
//!
//! cargo run --release -p cairn-core --example folder_scale -- ENTRIES [SHARDS]
//! Prints one JSON object; bench/folder_scale.sh runs it for 100k and 1M entries.

use std::time::Instant;

use cairn_core::ContentId;
use cairn_core::folder::{DeviceId, FolderDoc, LocalChange};
use cairn_core::scan::EntryKind;

fn rss_mib(field: &str) -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

fn path_of(i: usize) -> String {
    format!(
        "projects/p{:03}/src/module{:03}/file{i:07}.rs",
        i % 997,
        (i / 997) % 211
    )
}

fn content_of(i: usize, version: u64) -> Option<ContentId> {
    Some(ContentId(
        *blake3::hash(&[i.to_le_bytes(), version.to_le_bytes()].concat()).as_bytes(),
    ))
}

fn change(i: usize, version: u64) -> LocalChange {
    let content =
        ContentId(*blake3::hash(&[i.to_le_bytes(), version.to_le_bytes()].concat()).as_bytes());
    LocalChange::Present {
        kind: EntryKind::File,
        content: Some(content),
        size: 1000 + i as u64,
        mtime_ns: 1_700_000_000_000_000_000 + (i as i64) * 1_000_000 + version as i64,
        mode: 0o644,
        link_target: None,
    }
}

fn main() {
    let mut args = std::env::args().skip(1);
    let n: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(100_000);
    let shards: u16 = args
        .next()
        .and_then(|a| a.parse().ok())
        .unwrap_or(cairn_core::folder::doc::DEFAULT_SHARDS);
    let (dev_a, dev_b) = (DeviceId([0xaa; 8]), DeviceId([0xbb; 8]));

    // Build, committing every 1,000 entries as a scanner would.
    let rss0 = rss_mib("VmRSS");
    let t = Instant::now();
    let mut a = FolderDoc::new(dev_a, shards).expect("valid shard count");
    for i in 0..n {
        a.record_local(&path_of(i), &change(i, 0), None);
        if i % 1000 == 999 {
            a.commit();
        }
    }
    a.commit();
    let build_s = t.elapsed().as_secs_f64();
    let build_rss = rss_mib("VmRSS") - rss0;

    let t = Instant::now();
    let saved: Vec<Vec<u8>> = (0..shards as usize).map(|s| a.save_shard(s)).collect();
    let save_s = t.elapsed().as_secs_f64();
    let save_bytes: usize = saved.iter().map(Vec::len).sum();
    drop(a);

    let rss1 = rss_mib("VmRSS");
    let t = Instant::now();
    let mut a = FolderDoc::load(dev_a, &saved).expect("own save loads");
    let load_s = t.elapsed().as_secs_f64();
    let loaded_rss = rss_mib("VmRSS") - rss1;

    // Full sync to an empty replica.
    let t = Instant::now();
    let mut b = FolderDoc::new(dev_b, shards).expect("valid shard count");
    let (mut a_peer, mut b_peer) = (a.new_peer(), b.new_peer());
    let (mut rounds, mut bytes, mut max_msg) = (0, 0usize, 0usize);
    loop {
        let mut quiet = true;
        if let Some(m) = a.generate_sync_message(&mut a_peer) {
            let wire = m.encode();
            bytes += wire.len();
            max_msg = max_msg.max(wire.len());
            b.receive_sync_message(
                &mut b_peer,
                &cairn_core::folder::FolderMessage::decode(&wire).expect("valid"),
            )
            .expect("sync");
            quiet = false;
        }
        if let Some(m) = b.generate_sync_message(&mut b_peer) {
            let wire = m.encode();
            bytes += wire.len();
            max_msg = max_msg.max(wire.len());
            a.receive_sync_message(
                &mut a_peer,
                &cairn_core::folder::FolderMessage::decode(&wire).expect("valid"),
            )
            .expect("sync");
            quiet = false;
        }
        if quiet {
            break;
        }
        rounds += 1;
    }
    let sync_s = t.elapsed().as_secs_f64();
    assert_eq!(a.heads(), b.heads(), "replicas converged");
    drop(b);

    // Apply 1,000 changes made on another replica to the loaded document.
    let mut c = FolderDoc::load(DeviceId([0xcc; 8]), &saved).expect("loads");
    let mut c_peer = c.new_peer();
    let mut a_to_c = a.new_peer();
    // Bring the sync states up to date first (both sides have everything).
    for _ in 0..4 {
        if let Some(m) = a.generate_sync_message(&mut a_to_c) {
            c.receive_sync_message(&mut c_peer, &m).expect("sync");
        }
        if let Some(m) = c.generate_sync_message(&mut c_peer) {
            a.receive_sync_message(&mut a_to_c, &m).expect("sync");
        }
    }
    for i in (0..n).step_by((n / 1000).max(1)).take(1000) {
        c.record_local(&path_of(i), &change(i, 1), content_of(i, 0));
    }
    c.commit();
    let rss2 = rss_mib("VmRSS");
    let t = Instant::now();
    let mut change_bytes = 0;
    for _ in 0..8 {
        let mut quiet = true;
        if let Some(m) = c.generate_sync_message(&mut c_peer) {
            change_bytes += m.len();
            a.receive_sync_message(&mut a_to_c, &m).expect("sync");
            quiet = false;
        }
        if let Some(m) = a.generate_sync_message(&mut a_to_c) {
            change_bytes += m.len();
            c.receive_sync_message(&mut c_peer, &m).expect("sync");
            quiet = false;
        }
        if quiet {
            break;
        }
    }
    let apply_s = t.elapsed().as_secs_f64();
    let apply_rss = rss_mib("VmRSS") - rss2;

    drop(c);
    drop(saved);
    // Only replica `a` is alive now (the allocator may still hold freed memory, so this
    // is an upper bound for one device).
    let one_replica_rss = rss_mib("VmRSS");
    let t = Instant::now();
    let tree = a.tree(Default::default());
    let tree_s = t.elapsed().as_secs_f64();
    let with_tree_rss = rss_mib("VmRSS");
    assert_eq!(
        tree.entries
            .values()
            .filter(|e| e.value.kind == EntryKind::File)
            .count(),
        n
    );

    println!(
        "{{\"entries\":{n},\"shards\":{shards},\"build_s\":{build_s:.2},\"build_rss_mib\":{build_rss:.0},\
\"save_s\":{save_s:.2},\"save_bytes\":{save_bytes},\"load_s\":{load_s:.2},\"loaded_rss_mib\":{loaded_rss:.0},\
\"sync_s\":{sync_s:.2},\"sync_rounds\":{rounds},\"sync_bytes\":{bytes},\"sync_max_message\":{max_msg},\
\"apply_1000_s\":{apply_s:.2},\"apply_1000_bytes\":{change_bytes},\"apply_1000_rss_growth_mib\":{apply_rss:.0},\
\"derive_tree_s\":{tree_s:.2},\"one_replica_rss_mib\":{one_replica_rss:.0},\"one_replica_with_tree_rss_mib\":{with_tree_rss:.0},\"process_peak_rss_mib\":{:.0}}}",
        rss_mib("VmHWM")
    );
}
