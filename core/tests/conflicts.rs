//! Each conflict rule of the folder model, by name, through simulated devices.

mod sim;

use cairn_core::folder::tree::{CONFLICT_MARKER, conflict_name, is_conflict_name};
use cairn_core::folder::{DeviceId, EntryValue, FolderDoc, TreeOptions};
use cairn_core::path::PathError;
use cairn_core::planner::{Action, plan};
use cairn_core::scan::EntryKind;
use sim::{World, content};

fn world(n: usize) -> World {
    World::new(n, TreeOptions::default())
}

fn conflict_copies(w: &World, r: usize) -> Vec<(String, Option<cairn_core::ContentId>)> {
    w.replicas[r]
        .disk
        .iter()
        .filter(|(p, _)| is_conflict_name(p))
        .map(|(p, e)| (p.clone(), e.content))
        .collect()
}

#[test]
fn concurrent_modifications_keep_both_versions_with_one_conflict_copy_everywhere() {
    let mut w = world(3);
    w.user_write(0, "notes/plan.txt", 1);
    w.settle();
    w.user_write(0, "notes/plan.txt", 2); // older
    w.user_write(1, "notes/plan.txt", 3); // newer: wins the name
    w.settle();
    for r in 0..3 {
        assert_eq!(
            w.replicas[r].disk["notes/plan.txt"].content,
            Some(content(3)),
            "replica {r}"
        );
        let copies = conflict_copies(&w, r);
        assert_eq!(copies.len(), 1, "replica {r}: {copies:?}");
        assert_eq!(copies[0].1, Some(content(2)));
        assert!(
            copies[0].0.starts_with("notes/plan.sync-conflict-") && copies[0].0.ends_with(".txt")
        );
    }
}

#[test]
fn conflict_copy_names_follow_syncthings_convention() {
    let v = EntryValue {
        kind: EntryKind::File,
        deleted: false,
        content: Some(content(1)),
        size: 1,
        mtime_ns: 1_700_000_001_000_000_000, // 2023-11-14 22:13:21 UTC
        mode: 0o644,
        link_target: None,
        device: DeviceId([0; 8]),
        replaces: None,
    };
    assert_eq!(
        conflict_name("docs/report.pdf", &v),
        "docs/report.sync-conflict-20231114-221321-AAAAAAA.pdf"
    );
    assert_eq!(
        conflict_name("Makefile", &v),
        "Makefile.sync-conflict-20231114-221321-AAAAAAA"
    );
    assert_eq!(
        conflict_name(".bashrc", &v),
        ".bashrc.sync-conflict-20231114-221321-AAAAAAA"
    );
    assert!(conflict_name("a.tar.gz", &v).starts_with(&format!("a.tar{CONFLICT_MARKER}")));
    // The longest names the path rules accept still get a copy name that fits, cut at a
    // character boundary, the extension kept.
    for name in [
        format!("{}.txt", "n".repeat(251)),
        "é".repeat(127),
        "x".repeat(255),
    ] {
        let copy = conflict_name(&format!("d/{name}"), &v);
        let copy_name = copy.strip_prefix("d/").unwrap();
        assert!(copy_name.len() <= 255, "{} bytes", copy_name.len());
        cairn_core::path::validate(&copy).unwrap();
        assert!(is_conflict_name(&copy));
        if name.ends_with(".txt") {
            assert!(copy.ends_with("-AAAAAAA.txt"), "{copy}");
        }
    }
}

#[test]
fn conflict_copy_is_created_once_when_every_device_resolves_it_concurrently() {
    let mut w = world(4);
    w.user_write(0, "f", 1);
    w.settle();
    w.user_write(0, "f", 2);
    w.user_write(1, "f", 3);
    // Everyone hears of both versions, then all resolve at the same time, unsynced.
    for i in 0..4 {
        for j in 0..4 {
            if i != j {
                w.sync_pair(i, j);
            }
        }
    }
    for r in 0..4 {
        w.apply(r);
    }
    w.settle();
    for r in 0..4 {
        assert_eq!(conflict_copies(&w, r).len(), 1, "replica {r}");
    }
}

#[test]
fn modify_beats_delete() {
    let mut w = world(2);
    w.user_write(0, "doc.md", 1);
    w.settle();
    w.user_delete(0, "doc.md");
    w.user_write(1, "doc.md", 2);
    w.settle();
    for r in 0..2 {
        assert_eq!(w.replicas[r].disk["doc.md"].content, Some(content(2)));
        assert!(conflict_copies(&w, r).is_empty());
    }
}

#[test]
fn delete_of_an_unchanged_file_deletes_it_and_keeps_it_in_history() {
    let mut w = world(2);
    w.user_write(0, "old.log", 7);
    w.settle();
    w.user_delete(1, "old.log");
    w.settle();
    assert!(!w.replicas[0].disk.contains_key("old.log"));
    assert!(
        w.replicas[0].history.contains(&content(7)),
        "the deleted version is kept in history"
    );
}

#[test]
fn rename_is_delete_plus_create_and_transfers_nothing() {
    let mut w = world(2);
    w.user_write(0, "big.iso", 5);
    w.settle();
    let fetched = w.replicas[1].fetched_chunks;
    w.user_rename(0, "big.iso", "archive/big.iso");
    w.settle();
    assert!(!w.replicas[1].disk.contains_key("big.iso"));
    assert_eq!(
        w.replicas[1].disk["archive/big.iso"].content,
        Some(content(5))
    );
    assert_eq!(
        w.replicas[1].fetched_chunks, fetched,
        "no chunk fetched for a rename"
    );
    assert!(
        !w.replicas[1].history.contains(&content(5)),
        "a renamed file is not superseded"
    );
}

#[test]
fn directory_deleted_while_a_file_is_added_inside_keeps_the_file_and_its_directories() {
    let mut w = world(2);
    w.user_write(0, "d/e/old", 1);
    w.settle();
    w.user_delete(0, "d");
    w.user_write(1, "d/e/new", 2);
    w.settle();
    for r in 0..2 {
        let disk = &w.replicas[r].disk;
        assert_eq!(disk["d/e/new"].content, Some(content(2)), "replica {r}");
        assert_eq!(disk["d"].kind, EntryKind::Dir);
        assert_eq!(disk["d/e"].kind, EntryKind::Dir);
        assert!(!disk.contains_key("d/e/old"));
    }
}

#[test]
fn file_and_directory_created_concurrently_at_one_path_keep_both() {
    let mut w = world(2);
    w.user_write(0, "x", 1);
    w.user_write(1, "x/inner", 2);
    w.settle();
    for r in 0..2 {
        let disk = &w.replicas[r].disk;
        assert_eq!(disk["x"].kind, EntryKind::Dir);
        assert_eq!(disk["x/inner"].content, Some(content(2)));
        let copies = conflict_copies(&w, r);
        assert_eq!(copies.len(), 1);
        assert_eq!(
            copies[0].1,
            Some(content(1)),
            "the file moved aside, not lost"
        );
    }
}

#[test]
fn case_only_clash_becomes_a_conflict_copy_on_case_insensitive_systems() {
    let mut w = World::new(
        2,
        TreeOptions {
            case_insensitive: true,
        },
    );
    w.user_write(0, "README.md", 1);
    w.user_write(1, "readme.md", 2);
    w.settle();
    for r in 0..2 {
        let disk = &w.replicas[r].disk;
        let plain: Vec<_> = disk
            .keys()
            .filter(|p| p.to_lowercase() == "readme.md")
            .collect();
        assert_eq!(plain.len(), 1, "one name per case-folded path: {plain:?}");
        let copies = conflict_copies(&w, r);
        assert_eq!(copies.len(), 1, "{copies:?}");
        let kept: std::collections::HashSet<_> =
            [disk[plain[0]].content, copies[0].1].into_iter().collect();
        assert_eq!(
            kept,
            [Some(content(1)), Some(content(2))].into_iter().collect()
        );
    }
}

#[test]
fn case_only_difference_is_two_files_on_case_sensitive_systems() {
    let mut w = world(2);
    w.user_write(0, "README.md", 1);
    w.user_write(1, "readme.md", 2);
    w.settle();
    assert_eq!(w.replicas[0].disk["README.md"].content, Some(content(1)));
    assert_eq!(w.replicas[0].disk["readme.md"].content, Some(content(2)));
    assert!(conflict_copies(&w, 0).is_empty());
}

#[test]
fn a_local_edit_of_a_conflicted_path_keeps_the_losing_version() {
    let mut w = world(2);
    w.user_write(0, "f", 1);
    w.user_write(1, "f", 2);
    w.sync_pair(0, 1);
    // Replica 1 edits before it resolved the conflict locally.
    w.user_write(1, "f", 3);
    w.settle();
    let contents: std::collections::HashSet<_> = w.replicas[0]
        .disk
        .values()
        .filter_map(|e| e.content)
        .collect();
    assert!(
        contents.contains(&content(1)) && contents.contains(&content(3)),
        "{contents:?}"
    );
}

#[test]
fn hostile_paths_from_a_peer_never_reach_the_planner() {
    let evil = DeviceId([0xee; 8]);
    let mut attacker = FolderDoc::new(evil, 8).unwrap();
    let file = |n| EntryValue {
        kind: EntryKind::File,
        deleted: false,
        content: Some(content(n)),
        size: 1,
        mtime_ns: 1,
        mode: 0o644,
        link_target: None,
        device: evil,
        replaces: None,
    };
    let hostile = [
        "../outside",
        "/etc/passwd",
        "a/../../x",
        "a//b",
        "./a",
        "a\0b",
        "a\\..\\b",
        ".cairn-tmp.x",
        "CON",
        "",
    ];
    for (i, p) in hostile.iter().enumerate() {
        attacker.put(p, &file(i as u64));
    }
    attacker.put("fine.txt", &file(99));
    attacker.commit();

    let mut victim = FolderDoc::new(DeviceId([1; 8]), 8).unwrap();
    let (mut a, mut v) = (attacker.new_peer(), victim.new_peer());
    for _ in 0..5 {
        if let Some(m) = attacker.generate_sync_message(&mut a) {
            victim.receive_sync_message(&mut v, &m).unwrap();
        }
        if let Some(m) = victim.generate_sync_message(&mut v) {
            attacker.receive_sync_message(&mut a, &m).unwrap();
        }
    }
    let tree = victim.tree(TreeOptions::default());
    assert_eq!(tree.entries.keys().collect::<Vec<_>>(), vec!["fine.txt"]);
    assert_eq!(tree.rejected.len(), hostile.len(), "{:?}", tree.rejected);
    assert!(
        tree.rejected
            .iter()
            .any(|(_, e)| matches!(e, PathError::Parent(_)))
    );
    assert!(
        tree.rejected
            .iter()
            .any(|(_, e)| matches!(e, PathError::Absolute(_)))
    );
    assert!(
        tree.rejected
            .iter()
            .any(|(_, e)| matches!(e, PathError::Reserved(_)))
    );

    struct Nothing;
    impl cairn_core::planner::LocalStore for Nothing {
        fn has_manifest(&self, _: &cairn_core::ContentId) -> bool {
            false
        }
    }
    let p = plan(&tree, &Default::default(), &Nothing);
    for action in &p.actions {
        if let Action::WriteFile { path, .. } = action {
            assert_eq!(path, "fine.txt");
        }
    }
}

#[test]
fn a_local_edit_made_before_a_received_change_was_applied_keeps_both() {
    let mut w = world(2);
    w.user_write(0, "f", 1);
    w.settle();
    w.user_write(0, "f", 2);
    w.sync_pair(0, 1); // replica 1 knows version 2 but has not written it to disk
    w.user_write(1, "f", 3); // the user there edits version 1
    w.settle();
    for r in 0..2 {
        assert_eq!(w.replicas[r].disk["f"].content, Some(content(3)));
        let copies = conflict_copies(&w, r);
        assert_eq!(copies.len(), 1, "{copies:?}");
        assert_eq!(
            copies[0].1,
            Some(content(2)),
            "the unseen version is kept as a copy"
        );
    }
}

#[test]
fn a_local_delete_does_not_delete_a_received_change_not_yet_applied() {
    let mut w = world(2);
    w.user_write(0, "f", 1);
    w.settle();
    w.user_write(0, "f", 2);
    w.sync_pair(0, 1);
    w.user_delete(1, "f");
    w.settle();
    for r in 0..2 {
        assert_eq!(
            w.replicas[r].disk["f"].content,
            Some(content(2)),
            "modify beats delete"
        );
    }
}
