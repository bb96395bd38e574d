//! Large batches recorded and applied shard by shard on several threads
//! (`FolderDoc::record_local_all`, `FolderDoc::receive_sync_message` with
//! `set_workers`) give the document that one thread gives, path by path.
//!
//! Each case builds a folder of two devices with concurrent versions at some paths (so
//! recording writes conflict copies, which often live in another shard than their path),
//! then records a batch large enough to run on threads once on each of two copies of the
//! document: one path by path, one as a batch on 4 threads. Then a peer applies the
//! resulting sync message with 1 and with 4 threads. Seeds come from proptest; a failing
//! case prints its inputs and is kept in `batches.proptest-regressions`.

use std::collections::BTreeMap;

use cairn_core::ContentId;
use cairn_core::folder::{DeviceId, EntryValue, FolderDoc, LocalChange};
use cairn_core::scan::EntryKind;
use proptest::prelude::*;

mod sim;
use sim::sync_docs;

/// Enough for both the batch threshold (512 changes) and the message one (64 KiB).
const PATHS: usize = 1200;
const SHARDS: u16 = 8;

fn path(i: usize) -> String {
    format!("d{}/f{i}.txt", i % 7)
}

fn file(c: u32, mtime: i64) -> LocalChange {
    let mut id = [0u8; 32];
    id[..4].copy_from_slice(&c.to_le_bytes());
    LocalChange::Present {
        kind: EntryKind::File,
        content: Some(ContentId(id)),
        size: u64::from(c),
        mtime_ns: 1_700_000_000_000_000_000 + mtime,
        mode: 0o644,
        link_target: None,
    }
}

fn content(c: u32) -> ContentId {
    match file(c, 0) {
        LocalChange::Present { content, .. } => content.unwrap(),
        LocalChange::Deleted => unreachable!(),
    }
}

fn copy(doc: &mut FolderDoc, device: DeviceId) -> FolderDoc {
    let saved: Vec<Vec<u8>> = (0..SHARDS as usize).map(|s| doc.save_shard(s)).collect();
    FolderDoc::load(device, &saved).unwrap()
}

fn recorded(doc: &FolderDoc) -> BTreeMap<String, Vec<EntryValue>> {
    let mut r = doc.recorded().entries;
    for values in r.values_mut() {
        values.sort_by_key(|v| v.encode());
    }
    r
}

#[derive(Clone, Debug)]
enum Op {
    /// A new version; the base is the device's own earlier version, the peer's (never
    /// seen on disk here), or none.
    Write {
        c: u32,
        mtime: i64,
        base: u8,
    },
    Delete {
        base: u8,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (1u32..1000, 0i64..3, 0u8..3).prop_map(|(c, mtime, base)| Op::Write { c, mtime, base }),
        1 => (0u8..3).prop_map(|base| Op::Delete { base }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 12, ..ProptestConfig::default() })]

    #[test]
    fn a_batch_on_threads_records_and_applies_what_one_thread_does(
        theirs in proptest::collection::vec(any::<bool>(), PATHS),
        ops in proptest::collection::vec(op(), PATHS),
    ) {
        let me = DeviceId([1; 8]);
        let peer = DeviceId([2; 8]);
        let mut mine = FolderDoc::new(me, SHARDS).unwrap();
        let mut other = FolderDoc::new(peer, SHARDS).unwrap();
        for (i, theirs) in theirs.iter().enumerate() {
            mine.record_local(&path(i), &file(i as u32 + 1, 0), None);
            if *theirs {
                // A concurrent version: after the sync, the path holds two values.
                other.record_local(&path(i), &file(i as u32 + 5000, 1), None);
            }
        }
        sync_docs(&mut mine, &mut other);
        let conflicted = (0..PATHS).filter(|&i| mine.values(&path(i)).len() > 1).count();
        prop_assert_eq!(conflicted, theirs.iter().filter(|t| **t).count());

        let changes: Vec<(String, LocalChange, Option<ContentId>)> = ops
            .iter()
            .enumerate()
            .map(|(i, op)| {
                let base_of = |b: u8| match b {
                    0 => Some(content(i as u32 + 1)),
                    1 => Some(content(i as u32 + 5000)),
                    _ => None,
                };
                match op {
                    Op::Write { c, mtime, base } => (path(i), file(*c, *mtime), base_of(*base)),
                    Op::Delete { base } => (path(i), LocalChange::Deleted, base_of(*base)),
                }
            })
            .collect();
        let batch: Vec<(&str, &LocalChange, Option<ContentId>)> =
            changes.iter().map(|(p, c, b)| (p.as_str(), c, *b)).collect();

        let mut one = copy(&mut mine, me);
        let mut many = copy(&mut mine, me);
        many.set_workers(4);
        let _ = one.take_changed();
        let _ = many.take_changed();
        let mut touched_one = std::collections::BTreeSet::new();
        for (p, c, b) in &batch {
            if one.record_local(p, c, *b) {
                touched_one.insert(one.shard_of(p));
            }
        }
        let touched_many = many.record_local_all(&batch);
        prop_assert_eq!(recorded(&one), recorded(&many));
        prop_assert_eq!(one.take_changed(), many.take_changed());
        // Conflict copies land in other shards too, so "touched" is at least the shards
        // of the recorded paths; both must name every shard that changed.
        prop_assert!(touched_one.is_subset(&touched_many));
        let mut copies_elsewhere = 0;
        for (p, values) in recorded(&many) {
            if p.contains("sync-conflict") && values.len() == 1 {
                copies_elsewhere += 1;
            }
        }
        prop_assert!(copies_elsewhere > 0 || conflicted == 0);

        // Saving on four threads gives each shard's own bytes.
        many.commit();
        let all: std::collections::BTreeSet<usize> = (0..SHARDS as usize).collect();
        let saved = many.save_shards(&all);
        let one_by_one: Vec<(u16, Vec<u8>)> =
            (0..SHARDS as usize).map(|s| (s as u16, many.save_shard(s))).collect();
        prop_assert_eq!(saved, one_by_one);

        // The peer applies the batch: one thread and four give the same document.
        let mut peer_one = copy(&mut other, peer);
        let mut peer_many = copy(&mut other, peer);
        peer_many.set_workers(4);
        let _ = peer_one.take_changed();
        let _ = peer_many.take_changed();
        let (mut to_one, mut to_many) = (many.new_peer(), many.new_peer());
        let (mut from_one, mut from_many) = (peer_one.new_peer(), peer_many.new_peer());
        let mut largest = 0;
        for _ in 0..50 {
            let a = many.generate_sync_message(&mut to_one);
            let b = many.generate_sync_message(&mut to_many);
            prop_assert_eq!(&a, &b);
            let Some(m) = a else { break };
            largest = largest.max(m.encode().len());
            peer_one.receive_sync_message(&mut from_one, &m).unwrap();
            peer_many.receive_sync_message(&mut from_many, &m).unwrap();
            if let Some(back) = peer_one.generate_sync_message(&mut from_one) {
                many.receive_sync_message(&mut to_one, &back).unwrap();
            }
            if let Some(back) = peer_many.generate_sync_message(&mut from_many) {
                many.receive_sync_message(&mut to_many, &back).unwrap();
            }
        }
        // Large enough that the threads ran.
        prop_assert!(largest >= 64 << 10, "largest message {} bytes", largest);
        prop_assert_eq!(recorded(&peer_one), recorded(&many));
        prop_assert_eq!(recorded(&peer_many), recorded(&many));
        prop_assert_eq!(peer_one.take_changed(), peer_many.take_changed());
    }
}
