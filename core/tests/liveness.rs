//! Nothing lost, nothing stuck: the rules that keep every version somewhere and every
//! folder moving when bytes are only where they really are (see `sim`), each found by the
//! multi-device chaos test (`tests/tests/chaos.rs`) and kept here by name.

mod sim;

use cairn_core::folder::TreeOptions;
use cairn_core::folder::tree::is_conflict_name;
use sim::{World, content};

fn world(n: usize) -> World {
    World::new(n, TreeOptions::default())
}

fn has_anywhere(w: &World, c: cairn_core::ContentId) -> bool {
    w.replicas
        .iter()
        .any(|r| r.history.contains(&c) || r.disk.values().any(|e| e.content == Some(c)))
}

/// Before: the puller wrote the winner over the name first, destroying this device's own
/// losing version, and then could not write its conflict copy from anywhere (the folder
/// waited forever on a version no device held).
#[test]
fn a_losing_version_whose_only_copy_is_overwritten_survives_as_its_conflict_copy() {
    let mut w = world(2);
    w.user_write(0, "notes", 1); // older: loses the name
    w.user_write(1, "notes", 2); // newer: wins
    w.sync_pair(0, 1);
    // "notes" sorts before its conflict copy's name, so the winner is written first.
    w.apply(0);
    let a = &w.replicas[0];
    assert_eq!(a.disk["notes"].content, Some(content(2)));
    assert!(a.waiting.is_empty(), "waits for {:?}", a.waiting);
    assert!(
        a.disk
            .iter()
            .any(|(p, e)| is_conflict_name(p) && e.content == Some(content(1))),
        "the losing version is written as its conflict copy from the bytes kept here"
    );
    assert!(
        a.history.contains(&content(1)),
        "kept before it was overwritten"
    );
    w.settle();
    assert!(
        w.replicas[1]
            .disk
            .iter()
            .any(|(p, e)| is_conflict_name(p) && e.content == Some(content(1)))
    );
}

/// A conflict copy names a version that its only holder rewrote in place before anyone
/// fetched it: the author knows it can never come, drops it, and everyone converges.
#[test]
fn a_conflict_copy_whose_only_holder_rewrote_it_is_dropped_and_everyone_converges() {
    let mut w = world(2);
    w.user_write(0, "f.txt", 1);
    w.user_write(1, "f.txt", 2);
    w.sync_pair(0, 1);
    w.user_write(0, "f.txt", 3); // replica 0 rewrites its version in place
    w.apply(1); // replica 1 materializes the copy of version 1 and waits for it
    assert!(
        w.replicas[1].waiting.iter().any(|(_, c)| *c == content(1)),
        "replica 1 waits for version 1: {:?}",
        w.replicas[1].waiting
    );
    w.settle();
    assert!(w.dropped.contains(&content(1)));
    assert!(!has_anywhere(&w, content(1)));
    for r in 0..2 {
        assert!(w.replicas[r].waiting.is_empty());
        let contents: Vec<_> = w.replicas[r].disk.values().map(|e| e.content).collect();
        assert!(contents.contains(&Some(content(2))), "replica {r}");
        assert!(contents.contains(&Some(content(3))), "replica {r}");
    }
}

/// A version only a switched-off device has waits (named, with its author); everything
/// else still syncs; it arrives when that device is back.
#[test]
fn a_version_only_an_absent_device_has_waits_and_the_rest_still_syncs() {
    let mut w = world(3);
    w.user_write(0, "from-a.txt", 1);
    w.user_write(1, "from-b.txt", 2);
    for (i, j) in [(0, 1), (1, 2), (0, 2)] {
        w.sync_pair(i, j);
    }
    w.offline.insert(0);
    w.apply(2);
    let c = &w.replicas[2];
    assert_eq!(c.disk["from-b.txt"].content, Some(content(2)));
    assert!(!c.disk.contains_key("from-a.txt"));
    assert_eq!(c.waiting, vec![("from-a.txt".to_string(), content(1))]);
    assert!(w.dropped.is_empty(), "waiting is not dropping");
    w.offline.clear();
    w.apply(2);
    assert_eq!(w.replicas[2].disk["from-a.txt"].content, Some(content(1)));
    assert!(w.replicas[2].waiting.is_empty());
}

/// A device killed in the middle of a plan (after any step) loses nothing and converges
/// when it runs again.
#[test]
fn a_replica_that_crashes_mid_plan_loses_nothing() {
    for steps in 0..6 {
        let mut w = world(2);
        // "f" sorts before its conflict copy: the winner is written over replica 0's own
        // version before the copy, so a crash between the two must not lose it.
        w.user_write(0, "f", 1);
        w.user_write(1, "f", 2);
        w.user_write(1, "g.txt", 3);
        w.sync_pair(0, 1);
        w.apply_steps(0, steps);
        w.settle();
        for c in [1, 2, 3] {
            assert!(
                has_anywhere(&w, content(c)),
                "crash after {steps} steps lost {c}"
            );
        }
        assert!(w.replicas.iter().all(|r| r.waiting.is_empty()));
    }
}

/// Found by the property test: the author dropped an unavailable conflict copy while the
/// other replicas wrote the same copy again (materializing it) at the same moment; "modify
/// beats delete" brought it back, they waited again, and the group never settled. A delete
/// now supersedes concurrent writes of the very version it replaced.
#[test]
fn a_dropped_copy_that_others_materialize_at_the_same_time_stays_dropped() {
    for _ in 0..20 {
        let mut w = world(3);
        w.user_write(1, "d", 0);
        w.sync_once(1, 0, false, false);
        w.user_symlink(0, "d", "target");
        w.sync_once(0, 1, false, false);
        w.user_delete(1, "d");
        w.settle(); // panics if the group does not settle
        assert!(w.replicas.iter().all(|r| r.waiting.is_empty()));
    }
}
