//! What a folder document holds in memory after it applies a peer's changes: about what the
//! peer's document that made them holds.
//!
//! automerge 0.12 logs a patch for every op it applies through the sync protocol, into the
//! document's own patch log, whether that log is active or not, and nothing ever empties
//! an inactive log. A receiving daemon kept every op it had ever applied (at 1,000,000
//! files, ~250 MiB more than the sender at rest, and a burst per large message). This test
//! counts live heap bytes with an allocator of its own (this file is its own test binary).

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, Ordering};

use cairn_core::ContentId;
use cairn_core::folder::{DeviceId, FolderDoc, LocalChange};
use cairn_core::scan::EntryKind;

mod sim;
use sim::sync_docs;

struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE.fetch_add(
            new_size as isize - layout.size() as isize,
            Ordering::Relaxed,
        );
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

fn live() -> isize {
    LIVE.load(Ordering::Relaxed)
}

fn file(i: usize) -> LocalChange {
    let mut id = [0u8; 32];
    id[..8].copy_from_slice(&(i as u64).to_le_bytes());
    LocalChange::Present {
        kind: EntryKind::File,
        content: Some(ContentId(id)),
        size: 1000 + i as u64,
        mtime_ns: 1_700_000_000_000_000_000 + i as i64,
        mode: 0o644,
        link_target: None,
    }
}

#[test]
fn a_receiver_holds_about_what_the_sender_of_the_changes_holds() {
    const FILES: usize = 20_000;
    const SHARDS: u16 = 16;
    let mut sender = FolderDoc::new(DeviceId([1; 8]), SHARDS).unwrap();
    let mut receiver = FolderDoc::new(DeviceId([2; 8]), SHARDS).unwrap();
    // The sender records in batches, as scans do; the receiver gets them round by round.
    for batch in 0..4 {
        let changes: Vec<(String, LocalChange)> = (batch * FILES / 4..(batch + 1) * FILES / 4)
            .map(|i| (format!("d{}/file-{i:06}.txt", i % 100), file(i)))
            .collect();
        let refs: Vec<_> = changes.iter().map(|(p, c)| (p.as_str(), c, None)).collect();
        sender.record_local_all(&refs);
        sender.commit();
        sync_docs(&mut sender, &mut receiver);
    }
    assert_eq!(receiver.key_count(), FILES);
    // The changed paths are the node's to plan (it takes them each turn), not the document's.
    receiver.take_changed();
    sender.take_changed();
    let held = |doc: FolderDoc| {
        let before = live();
        drop(doc);
        before - live()
    };
    let (sender, receiver) = (held(sender), held(receiver));
    let mib = |b: isize| b as f64 / 1048576.0;
    println!(
        "sender {:.1} MiB, receiver {:.1} MiB",
        mib(sender),
        mib(receiver)
    );
    // The sender made every change, so it holds what a document of them holds.
    assert!(
        receiver < sender * 5 / 4 + (256 << 10),
        "the receiver holds {receiver} bytes, the sender {sender}"
    );
}
