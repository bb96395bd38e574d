//! The partial tree (`tree::derive_partial`) against the whole tree (`derive_tree`): what
//! an incremental pull relies on. For random documents before and after a change at some
//! paths:
//! - every entry of a partial tree is the whole tree's entry at that path, and a path of
//!   its scope missing from it is missing from the whole tree;
//! - every path where the whole tree differs before and after is in the scope of the
//!   partial tree after, derived for the changed paths and the scope before;
//! - a disk that matched the tree before matches it after a plan of those paths alone.
//!
//! Paths and values come from small pools (conflict-copy names of pool values included),
//! so conflicts, implied directories, displaced files and copy-name collisions are common.

use std::collections::{BTreeMap, BTreeSet};

use cairn_core::folder::tree::{Tree, conflict_name, derive_partial, derive_tree};
use cairn_core::folder::{DeviceId, EntryValue, TreeOptions};
use cairn_core::path;
use cairn_core::planner::{LocalStore, local_in_scope, plan};
use cairn_core::scan::{EntryKind, IndexedEntry, Stamp};
use cairn_core::{ContentId, planner};
use proptest::prelude::*;

type Recorded = BTreeMap<String, Vec<EntryValue>>;

fn pool() -> Vec<EntryValue> {
    let mut out = Vec::new();
    for kind in [EntryKind::File, EntryKind::Dir, EntryKind::Symlink] {
        for deleted in [false, true] {
            for c in 1..=3u8 {
                for device in 1..=2u8 {
                    let file = kind == EntryKind::File;
                    out.push(EntryValue {
                        kind,
                        deleted,
                        content: (file && !deleted).then_some(ContentId([c; 32])),
                        size: if file { u64::from(c) } else { 0 },
                        mtime_ns: i64::from(c % 2 + 1) * 1_700_000_000_000_000_000,
                        mode: 0o644,
                        link_target: (kind == EntryKind::Symlink && !deleted)
                            .then(|| format!("t{c}")),
                        device: DeviceId([device; 8]),
                        replaces: (c == 3 && file).then_some(ContentId([1; 32])),
                    });
                }
            }
        }
    }
    out
}

fn universe(values: &[EntryValue]) -> Vec<String> {
    let base = ["a", "b", "a/x", "a/y", "b/x", "a/x/z", "a/x/z/w", "c.txt"];
    let mut out: BTreeSet<String> = base.iter().map(|s| s.to_string()).collect();
    for p in ["a", "a/x", "c.txt", "a/x/z"] {
        for v in values
            .iter()
            .filter(|v| v.kind == EntryKind::File && !v.deleted)
        {
            // Not `copy-2`: see derive_partial on copies of two paths competing for one
            // numbered name.
            out.insert(conflict_name(p, v));
        }
    }
    out.into_iter().collect()
}

fn recorded_strategy(n_paths: usize, n_values: usize) -> impl Strategy<Value = Recorded> {
    prop::collection::btree_map(0..n_paths, prop::collection::vec(0..n_values, 1..=3), 0..12)
        .prop_map(move |m| {
            let (paths, values) = (universe(&pool()), pool());
            m.into_iter()
                .map(|(p, vs)| {
                    (
                        paths[p].clone(),
                        vs.into_iter().map(|v| values[v].clone()).collect(),
                    )
                })
                .collect()
        })
}

fn partial(r: &Recorded, paths: &BTreeSet<String>) -> cairn_core::folder::tree::PartialTree {
    let values = |p: &str| r.get(p).cloned().unwrap_or_default();
    let live_below = |dir: &str| {
        let below = format!("{dir}/");
        r.range(below.clone()..)
            .take_while(|(p, _)| p.starts_with(&below))
            .any(|(p, vs)| {
                path::validate(p).is_ok() && cairn_core::folder::tree::winner(vs).is_some()
            })
    };
    derive_partial(
        paths.iter().map(String::as_str),
        &values,
        &live_below,
        TreeOptions::default(),
    )
    .expect("case-sensitive")
}

fn whole(r: &Recorded) -> Tree {
    derive_tree(r.clone(), TreeOptions::default())
}

fn check_agrees(label: &str, whole: &Tree, part: &cairn_core::folder::tree::PartialTree) {
    for (p, e) in &part.tree.entries {
        assert!(
            part.scope.contains(p),
            "{label}: {p} in the tree, not in scope"
        );
        assert_eq!(whole.entries.get(p), Some(e), "{label}: entry at {p}");
    }
    for p in &part.scope {
        if !part.tree.entries.contains_key(p) {
            assert!(
                !whole.entries.contains_key(p),
                "{label}: {p} in scope, missing from the partial tree, but in the whole tree: {:?}",
                whole.entries.get(p)
            );
        }
    }
}

/// The disk as it is when it matches `tree`.
fn disk_of(tree: &Tree) -> BTreeMap<String, IndexedEntry> {
    tree.entries
        .iter()
        .map(|(p, e)| {
            (
                p.clone(),
                IndexedEntry {
                    kind: e.value.kind,
                    content: e.value.content,
                    link_target: e.value.link_target.clone(),
                    stamp: Stamp {
                        size: e.value.size,
                        mtime_ns: e.value.mtime_ns,
                        mode: e.value.mode,
                        ctime_ns: 0,
                        inode: 0,
                    },
                },
            )
        })
        .collect()
}

struct Everything;
impl LocalStore for Everything {
    fn has_manifest(&self, _: &ContentId) -> bool {
        true
    }
}

/// Carries out a plan on a simulated disk (paths only: what is where).
fn execute(disk: &mut BTreeMap<String, IndexedEntry>, actions: &[planner::Action], tree: &Tree) {
    for a in actions {
        match a {
            planner::Action::KeepInHistory { .. } | planner::Action::FetchManifest { .. } => {}
            planner::Action::RenameDir { steps, .. } => execute(disk, steps, tree),
            planner::Action::Delete { path, .. } => {
                disk.remove(path);
            }
            planner::Action::Rename { from, path, .. } => {
                disk.remove(from);
                disk.insert(path.clone(), disk_of(tree)[path].clone());
            }
            planner::Action::MakeDir { path }
            | planner::Action::WriteFile { path, .. }
            | planner::Action::WriteSymlink { path, .. } => {
                disk.insert(path.clone(), disk_of(tree)[path].clone());
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 3000, ..ProptestConfig::default() })]

    #[test]
    fn a_partial_tree_is_the_whole_tree_where_a_change_reaches(
        before in recorded_strategy(universe(&pool()).len(), pool().len()),
        change in recorded_strategy(universe(&pool()).len(), pool().len()),
    ) {
        // The change puts new values at some paths (a path of `before` not named keeps
        // its values).
        let mut after = before.clone();
        for (p, vs) in &change {
            after.insert(p.clone(), vs.clone());
        }
        let changed: BTreeSet<String> = change.keys().cloned().collect();
        let (whole_before, whole_after) = (whole(&before), whole(&after));
        // After the change, the partial tree is derived for what changed and for
        // everything the partial tree before looked at: its scope covers both.
        let part_before = partial(&before, &changed);
        let part_after = partial(&after, &changed.union(&part_before.scope).cloned().collect());
        check_agrees("before", &whole_before, &part_before);
        check_agrees("after", &whole_after, &part_after);
        prop_assert!(part_after.scope.is_superset(&part_before.scope));
        let scope = part_after.scope.clone();
        let paths: BTreeSet<&String> = whole_before.entries.keys().chain(whole_after.entries.keys()).collect();
        for p in paths {
            if whole_before.entries.get(p) != whole_after.entries.get(p) {
                prop_assert!(scope.contains(p), "{} changed but is out of scope", p);
            }
        }
        // A disk that matched the tree before matches it after a plan of the scope alone.
        let mut disk = disk_of(&whole_before);
        let local = local_in_scope(&part_after.tree, &scope, |p| disk.get(p).cloned(), |dir| {
            let below = format!("{dir}/");
            disk.range(below.clone()..)
                .take_while(|(p, _)| p.starts_with(&below))
                .map(|(p, e)| (p.clone(), e.clone()))
                .collect()
        });
        let planned = plan(&part_after.tree, &local, &Everything);
        execute(&mut disk, &planned.actions, &part_after.tree);
        let want: BTreeMap<&String, _> = whole_after.entries.iter().map(|(p, e)| (p, (e.value.kind, e.value.content))).collect();
        let got: BTreeMap<&String, _> = disk.iter().map(|(p, e)| (p, (e.kind, e.content))).collect();
        prop_assert_eq!(got, want);
    }
}
