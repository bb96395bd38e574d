//! Property tests: replicas that apply random histories and exchange sync messages in
//! random orders, with losses and duplicates, converge to one document and one tree, and
//! lose no version.

mod sim;

use std::collections::{BTreeMap, HashSet};

use cairn_core::folder::TreeOptions;
use cairn_core::folder::tree::is_conflict_name;
use cairn_core::scan::EntryKind;
use proptest::prelude::*;
use sim::World;

/// A small universe of paths, so that histories collide often (same path, parent and
/// child, case-only differences).
const PATHS: &[&str] = &[
    "a", "b.txt", "d", "d/x", "d/y.md", "d/e", "d/e/z", "D/x", "B.txt", "l",
];

#[derive(Clone, Debug)]
enum Op {
    Write {
        r: usize,
        path: usize,
        content: u64,
    },
    Delete {
        r: usize,
        path: usize,
    },
    Rename {
        r: usize,
        from: usize,
        to: usize,
    },
    Mkdir {
        r: usize,
        path: usize,
    },
    Symlink {
        r: usize,
        path: usize,
    },
    Sync {
        from: usize,
        to: usize,
        lose: bool,
        duplicate: bool,
    },
    Apply {
        r: usize,
    },
    /// The replica applies only the first `steps` actions of its plan, then crashes.
    Crash {
        r: usize,
        steps: usize,
    },
}

fn op(replicas: usize) -> impl Strategy<Value = Op> {
    let r = 0..replicas;
    let p = 0..PATHS.len();
    prop_oneof![
        4 => (r.clone(), p.clone(), 0u64..1_000_000).prop_map(|(r, path, content)| Op::Write { r, path, content }),
        2 => (r.clone(), p.clone()).prop_map(|(r, path)| Op::Delete { r, path }),
        2 => (r.clone(), p.clone(), p.clone()).prop_map(|(r, from, to)| Op::Rename { r, from, to }),
        1 => (r.clone(), p.clone()).prop_map(|(r, path)| Op::Mkdir { r, path }),
        1 => (r.clone(), p.clone()).prop_map(|(r, path)| Op::Symlink { r, path }),
        5 => (r.clone(), r.clone(), prop::bool::weighted(0.15), prop::bool::weighted(0.15))
            .prop_map(|(from, to, lose, duplicate)| Op::Sync { from, to, lose, duplicate }),
        3 => r.clone().prop_map(|r| Op::Apply { r }),
        1 => (r, 0usize..6).prop_map(|(r, steps)| Op::Crash { r, steps }),
    ]
}

fn history() -> impl Strategy<Value = (usize, bool, Vec<Op>)> {
    (2usize..=5, any::<bool>())
        .prop_flat_map(|(n, ci)| (Just(n), Just(ci), prop::collection::vec(op(n), 1..60)))
}

fn run(n: usize, case_insensitive: bool, ops: &[Op]) -> World {
    let mut w = World::new(n, TreeOptions { case_insensitive });
    for op in ops {
        match *op {
            Op::Write { r, path, content } => w.user_write(r, PATHS[path], content),
            Op::Delete { r, path } => w.user_delete(r, PATHS[path]),
            Op::Rename { r, from, to } => w.user_rename(r, PATHS[from], PATHS[to]),
            Op::Mkdir { r, path } => w.user_mkdir(r, PATHS[path]),
            Op::Symlink { r, path } => w.user_symlink(r, PATHS[path], "target"),
            Op::Sync {
                from,
                to,
                lose,
                duplicate,
            } => {
                w.sync_once(from, to, lose, duplicate);
            }
            Op::Apply { r } => w.apply(r),
            Op::Crash { r, steps } => w.apply_steps(r, steps),
        }
    }
    w.settle();
    w
}

fn check(w: &mut World) -> Result<(), TestCaseError> {
    let options = w.options;
    let heads: Vec<_> = w.replicas.iter_mut().map(|r| r.doc.heads()).collect();
    prop_assert!(heads.windows(2).all(|h| h[0] == h[1]), "documents differ");
    let trees: Vec<_> = w.replicas.iter().map(|r| r.doc.tree(options)).collect();
    for t in &trees[1..] {
        prop_assert_eq!(t.data(), trees[0].data(), "trees differ");
    }
    let tree = &trees[0];
    for (i, r) in w.replicas.iter().enumerate() {
        let disk: BTreeMap<&str, _> = r
            .disk
            .iter()
            .map(|(p, e)| (p.as_str(), (e.kind, e.content, e.link_target.as_deref())))
            .collect();
        prop_assert_eq!(
            &disk,
            &tree.data(),
            "replica {}'s disk differs from the tree",
            i
        );
    }
    // Nothing is lost: every version is in the tree, in some history store, or was
    // superseded or destroyed by a user (which, without timing, may happen before any
    // other replica fetched it).
    let in_tree: HashSet<_> = tree
        .entries
        .values()
        .filter_map(|e| e.value.content)
        .collect();
    let kept: HashSet<_> = w.replicas.iter().flat_map(|r| r.history.iter()).collect();
    for c in &w.written {
        prop_assert!(
            in_tree.contains(c)
                || kept.contains(c)
                || w.superseded.contains(c)
                || w.destroyed_by_user.contains(c),
            "version {:?} was lost",
            c
        );
    }
    // Only versions a user superseded or destroyed are ever dropped as unavailable.
    for c in &w.dropped {
        prop_assert!(
            w.superseded.contains(c) || w.destroyed_by_user.contains(c),
            "{:?} was dropped without being superseded",
            c
        );
    }
    // History holds superseded versions, and versions the puller kept because they were
    // the only copy (a conflict's losing side, written as its copy from there).
    for r in &w.replicas {
        for c in &r.history {
            prop_assert!(
                w.superseded.contains(c) || in_tree.contains(c),
                "{:?} went to history without being superseded",
                c
            );
        }
    }
    // Nothing waits once everyone settled.
    for (i, r) in w.replicas.iter().enumerate() {
        prop_assert!(
            r.waiting.is_empty(),
            "replica {} still waits for {:?}",
            i,
            r.waiting
        );
    }
    // A conflict copy exists once, not once per device.
    let mut copies = HashSet::new();
    for (p, e) in &tree.entries {
        if is_conflict_name(p) && e.value.kind == EntryKind::File {
            let base = p.split(".sync-conflict-").next().unwrap_or(p).to_string();
            prop_assert!(
                copies.insert((base, e.value.content)),
                "duplicate conflict copy {}",
                p
            );
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn replicas_converge_and_lose_nothing((n, ci, ops) in history()) {
        let mut w = run(n, ci, &ops);
        check(&mut w)?;
    }
}
