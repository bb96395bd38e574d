//! The planner: what this device must do to make its disk match the folder's tree.
//!
//! [`plan`] is a pure function of the derived [`Tree`], the local index (what the last scan
//! found on disk) and which manifests the device already stores. Nothing is
//! queued: run it again after any change and it says what is still left, so the work can
//! never drift from the state it was derived from.
//!
//! Actions come in a safe order: superseded versions are kept in history before anything
//! is overwritten or removed; unknown manifests are fetched; new directories and files
//! are written (each write fetches the chunks no local file holds, window by window, as it
//! goes: a plan never lists chunks, so planning costs the same for a file of any size) while
//! the files they may copy chunks from still exist; then removals
//! (deepest first); then whatever had to wait for a removal (a file where a directory was,
//! a directory where a symlink was).

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use crate::folder::tree::{Origin, Tree};
use crate::hash::ContentId;
use crate::path::{self, PathError};
use crate::scan::{EntryKind, IndexedEntry};

/// What the device already has, as far as the planner needs to know.
pub trait LocalStore {
    /// Whether this device knows the manifest of `content` (whole, or the outline of a
    /// paged one).
    fn has_manifest(&self, content: &ContentId) -> bool;
}

/// One step of a plan.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Move the local version at `path` into the history store before it is replaced.
    KeepInHistory { path: String, content: ContentId },
    /// Get the manifest of `content` from a peer (then plan again).
    FetchManifest { content: ContentId },
    /// Create a directory.
    MakeDir { path: String },
    /// Write a file with `content` (via a temp file, verified, renamed into place): its
    /// chunks come from local files where they exist, from peers otherwise.
    WriteFile {
        path: String,
        content: ContentId,
        size: u64,
        mtime_ns: i64,
        mode: u32,
        /// Set when this file is a conflict copy of that path.
        conflict_of: Option<String>,
    },
    /// Move the local file at `from`, which holds `content` and leaves the tree, to `path`
    /// (where nothing is): a rename on a peer, carried out as one here. If `from` changed
    /// since its scan, or something appeared at `path`, it is written as `WriteFile`
    /// instead, and `from` stays.
    Rename {
        from: String,
        path: String,
        content: ContentId,
        size: u64,
        mtime_ns: i64,
        mode: u32,
    },
    /// Move the local directory `from`, which leaves the tree, to `path`, where nothing is:
    /// everything under `from` is in the tree at the same place under `path` with the same
    /// data, so one rename carries the whole directory (a directory renamed on a peer).
    /// `steps` are the same moves one path at a time (`MakeDir`, `Rename`,
    /// `WriteSymlink`, `Delete`, in order): done instead when a file under `from` changed
    /// since its scan or something appeared at `path`.
    RenameDir {
        from: String,
        path: String,
        steps: Vec<Action>,
    },
    /// Create a symlink.
    WriteSymlink { path: String, target: String },
    /// Remove a path (a directory is empty by then).
    Delete { path: String, kind: EntryKind },
}

/// The work for this device.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Plan {
    /// In the order they must run.
    pub actions: Vec<Action>,
    /// Tree paths the plan refuses to write, with why.
    pub rejected: Vec<(String, PathError)>,
}

impl Plan {
    /// True when the disk already matches the tree.
    pub fn is_empty(&self) -> bool {
        self.actions.is_empty()
    }
}

/// Derives the plan that makes `local` (the disk) match `tree`.
pub fn plan(tree: &Tree, local: &BTreeMap<String, IndexedEntry>, store: &dyn LocalStore) -> Plan {
    let in_tree: HashSet<ContentId> = tree
        .entries
        .values()
        .filter_map(|e| e.value.content)
        .collect();
    let mut out = Plan::default();
    let mut history = Vec::new();
    let mut manifests = BTreeSet::new();
    let mut blocked: BTreeSet<String> = BTreeSet::new();
    let mut writes: Vec<(String, Action)> = Vec::new();
    let mut deletes: Vec<(String, EntryKind)> = Vec::new();

    let keep = |history: &mut Vec<Action>, p: &str, l: &IndexedEntry| {
        if l.kind == EntryKind::File
            && let Some(c) = l.content
            && !in_tree.contains(&c)
        {
            history.push(Action::KeepInHistory {
                path: p.to_string(),
                content: c,
            });
        }
    };

    for (p, entry) in &tree.entries {
        let v = &entry.value;
        // Never write through a symlink: every ancestor must be a directory in the tree.
        if let Some(link) =
            path::ancestors(p).find(|a| tree.get(a).is_none_or(|e| e.value.kind != EntryKind::Dir))
        {
            out.rejected.push((
                p.clone(),
                PathError::ThroughSymlink {
                    path: p.clone(),
                    link: link.to_string(),
                },
            ));
            continue;
        }
        let l = local.get(p);
        let up_to_date = match (v.kind, l) {
            (EntryKind::Dir, Some(l)) => l.kind == EntryKind::Dir,
            (EntryKind::File, Some(l)) => l.kind == EntryKind::File && l.content == v.content,
            (EntryKind::Symlink, Some(l)) => {
                l.kind == EntryKind::Symlink && l.link_target == v.link_target
            }
            (_, None) => false,
        };
        if up_to_date {
            continue;
        }
        if let Some(l) = l {
            keep(&mut history, p, l);
            // A directory cannot be overwritten by a file, nor anything by a directory.
            if l.kind == EntryKind::Dir || v.kind == EntryKind::Dir {
                blocked.insert(p.clone());
                deletes.push((p.clone(), l.kind));
            }
        }
        let action = match v.kind {
            EntryKind::Dir => Action::MakeDir { path: p.clone() },
            EntryKind::Symlink => Action::WriteSymlink {
                path: p.clone(),
                target: v.link_target.clone().unwrap_or_default(),
            },
            EntryKind::File => {
                let Some(content) = v.content else { continue };
                if !store.has_manifest(&content) {
                    manifests.insert(content);
                }
                Action::WriteFile {
                    path: p.clone(),
                    content,
                    size: v.size,
                    mtime_ns: v.mtime_ns,
                    mode: v.mode,
                    conflict_of: match &entry.origin {
                        Origin::ConflictCopy { of } => Some(of.clone()),
                        _ => None,
                    },
                }
            }
        };
        writes.push((p.clone(), action));
    }
    for (p, l) in local {
        if !tree.entries.contains_key(p) {
            keep(&mut history, p, l);
            deletes.push((p.clone(), l.kind));
        }
    }

    let is_blocked =
        |p: &str| blocked.contains(p) || path::ancestors(p).any(|a| blocked.contains(a));
    renames(&mut writes, &mut deletes, local, &is_blocked);
    directory_renames(&mut writes, &mut deletes, local, &is_blocked);
    let (later, now): (Vec<_>, Vec<_>) = writes.into_iter().partition(|(p, _)| is_blocked(p));
    // Deepest first, so directories are empty when they go.
    deletes.sort_by(|a, b| b.0.cmp(&a.0));
    deletes.dedup();

    out.actions.extend(history);
    out.actions.extend(
        manifests
            .into_iter()
            .map(|content| Action::FetchManifest { content }),
    );
    out.actions.extend(now.into_iter().map(|(_, a)| a));
    out.actions.extend(
        deletes
            .into_iter()
            .map(|(path, kind)| Action::Delete { path, kind }),
    );
    out.actions.extend(later.into_iter().map(|(_, a)| a));
    out
}

/// What the disk holds where a partial pull plans (see
/// [`crate::folder::tree::derive_partial`]): the local entry at every path of `scope`,
/// and everything under a local directory whose path the tree no longer has as a
/// directory (it goes, with what is in it). `entry` reads one path of the index, `below`
/// every path under `dir/`. The plan of `tree` against this is the plan of the whole
/// tree restricted to the scope (`core/tests/partial.rs` checks it).
pub fn local_in_scope(
    tree: &Tree,
    scope: &BTreeSet<String>,
    entry: impl Fn(&str) -> Option<IndexedEntry>,
    below: impl Fn(&str) -> Vec<(String, IndexedEntry)>,
) -> BTreeMap<String, IndexedEntry> {
    let mut local = BTreeMap::new();
    for p in scope {
        let Some(l) = entry(p) else { continue };
        let still_dir = tree.get(p).is_some_and(|e| e.value.kind == EntryKind::Dir);
        if l.kind == EntryKind::Dir && !still_dir {
            local.extend(below(p));
        }
        local.insert(p.clone(), l);
    }
    local
}

/// Turns a write of new content at a free path into a rename of a local file that leaves
/// the tree with exactly that content (a file or directory renamed on a peer): no bytes
/// are copied, and the delete of the source goes.
fn renames(
    writes: &mut [(String, Action)],
    deletes: &mut Vec<(String, EntryKind)>,
    local: &BTreeMap<String, IndexedEntry>,
    is_blocked: &dyn Fn(&str) -> bool,
) {
    // Sources by content, and by content and name: a file keeps its name when its
    // directory is renamed, so a source of that name is taken first (identical files
    // then move to the same places under the new directory).
    let mut leaving: BTreeMap<ContentId, Vec<String>> = BTreeMap::new();
    let mut leaving_named: HashMap<(ContentId, String), Vec<String>> = HashMap::new();
    for (p, kind) in deletes.iter() {
        if *kind == EntryKind::File
            && let Some(c) = local.get(p).and_then(|l| l.content)
        {
            leaving.entry(c).or_default().push(p.clone());
            leaving_named
                .entry((c, file_name(p).to_string()))
                .or_default()
                .push(p.clone());
        }
    }
    if leaving.is_empty() {
        return;
    }
    let mut moved = HashSet::new();
    let take = |list: Option<&mut Vec<String>>, moved: &HashSet<String>| {
        let list = list?;
        while let Some(p) = list.pop() {
            if !moved.contains(&p) {
                return Some(p);
            }
        }
        None
    };
    for (p, action) in writes.iter_mut() {
        let Action::WriteFile {
            path,
            content,
            size,
            mtime_ns,
            mode,
            conflict_of: None,
        } = action
        else {
            continue;
        };
        if local.contains_key(p.as_str()) || is_blocked(p) {
            continue;
        }
        let named = leaving_named.get_mut(&(*content, file_name(p).to_string()));
        let Some(from) = take(named, &moved).or_else(|| take(leaving.get_mut(content), &moved))
        else {
            continue;
        };
        moved.insert(from.clone());
        *action = Action::Rename {
            from,
            path: std::mem::take(path),
            content: *content,
            size: *size,
            mtime_ns: *mtime_ns,
            mode: *mode,
        };
    }
    deletes.retain(|(p, _)| !moved.contains(p));
}

/// The last component of a path.
fn file_name(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

/// Turns the per-path moves of a directory renamed on a peer into one [`Action::RenameDir`]:
/// a local directory that leaves the tree, every entry under it moved (by [`renames`] for
/// files, a `MakeDir` and a `Delete` for directories, a symlink written and removed) to
/// the same place under a new path that is not on the disk. The moves stay as its steps.
fn directory_renames(
    writes: &mut Vec<(String, Action)>,
    deletes: &mut Vec<(String, EntryKind)>,
    local: &BTreeMap<String, IndexedEntry>,
    is_blocked: &dyn Fn(&str) -> bool,
) {
    let leaving: BTreeSet<&str> = deletes
        .iter()
        .filter(|(_, k)| *k == EntryKind::Dir)
        .map(|(p, _)| p.as_str())
        .collect();
    if leaving.is_empty() {
        return;
    }
    let renamed_from: HashMap<&str, &str> = writes
        .iter()
        .filter_map(|(_, a)| match a {
            Action::Rename { from, path, .. } => Some((from.as_str(), path.as_str())),
            _ => None,
        })
        .collect();
    let write_at: HashMap<&str, usize> = writes
        .iter()
        .enumerate()
        .map(|(i, (p, _))| (p.as_str(), i))
        .collect();
    let deleted: HashSet<(&str, EntryKind)> =
        deletes.iter().map(|(p, k)| (p.as_str(), *k)).collect();
    // (directory, new path, indexes of the writes it takes, deletes it takes)
    let mut found: Vec<(String, String, Vec<usize>, Vec<String>)> = Vec::new();
    let mut taken_dirs: Vec<&str> = Vec::new();
    for &d in &leaving {
        if taken_dirs
            .iter()
            .any(|t| d.strip_prefix(t).is_some_and(|r| r.starts_with('/')))
        {
            continue; // inside a directory that moves as a whole
        }
        let start = format!("{d}/");
        let under: Vec<(&String, &IndexedEntry)> = local
            .range(start.clone()..)
            .take_while(|(p, _)| p.starts_with(&start))
            .collect();
        // Where it goes: from the first file renamed out of it.
        let Some(target) = under.iter().find_map(|(p, _)| {
            let to = renamed_from.get(p.as_str())?;
            let rel = &p[start.len()..];
            let base = to.strip_suffix(rel)?.strip_suffix('/')?;
            Some(base.to_string())
        }) else {
            continue;
        };
        let Some(&mkdir) = write_at.get(target.as_str()) else {
            continue;
        };
        if local.contains_key(&target)
            || is_blocked(&target)
            || !matches!(writes[mkdir].1, Action::MakeDir { .. })
        {
            continue;
        }
        let mut takes = vec![mkdir];
        let mut removes = vec![d.to_string()];
        let all_moved = under.iter().all(|(p, l)| {
            let q = format!("{target}/{}", &p[start.len()..]);
            let Some(&i) = write_at.get(q.as_str()) else {
                return false;
            };
            let moved = match (&writes[i].1, l.kind) {
                (Action::Rename { from, .. }, EntryKind::File) => from == *p,
                (Action::MakeDir { .. }, EntryKind::Dir) => {
                    deleted.contains(&(p.as_str(), EntryKind::Dir))
                }
                (Action::WriteSymlink { target, .. }, EntryKind::Symlink) => {
                    Some(target) == l.link_target.as_ref()
                        && deleted.contains(&(p.as_str(), EntryKind::Symlink))
                }
                _ => false,
            };
            if moved {
                takes.push(i);
                if l.kind != EntryKind::File {
                    removes.push(p.to_string());
                }
            }
            moved
        });
        if all_moved && !under.is_empty() {
            taken_dirs.push(d);
            found.push((d.to_string(), target, takes, removes));
        }
    }
    if found.is_empty() {
        return;
    }
    let mut gone: HashSet<usize> = HashSet::new();
    let mut removed: HashSet<String> = HashSet::new();
    let mut replace: Vec<(usize, Action)> = Vec::new();
    for (from, path, mut takes, mut removes) in found {
        takes.sort_unstable();
        // Deepest first, as the plan removes them.
        removes.sort_by(|a, b| b.cmp(a));
        let mut steps: Vec<Action> = takes.iter().map(|&i| writes[i].1.clone()).collect();
        steps.extend(removes.iter().map(|p| Action::Delete {
            path: p.clone(),
            kind: local.get(p).map_or(EntryKind::Dir, |l| l.kind),
        }));
        replace.push((takes[0], Action::RenameDir { from, path, steps }));
        gone.extend(takes[1..].iter().copied());
        removed.extend(removes);
    }
    for (i, action) in replace {
        writes[i].1 = action;
    }
    let mut i = 0;
    writes.retain(|_| {
        i += 1;
        !gone.contains(&(i - 1))
    });
    deletes.retain(|(p, _)| !removed.contains(p));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::folder::entry::{DeviceId, EntryValue};
    use crate::folder::tree::{TreeEntry, TreeOptions, derive_tree};
    use crate::scan::Stamp;

    /// The manifests this device knows.
    struct Store(HashSet<ContentId>);

    impl LocalStore for Store {
        fn has_manifest(&self, content: &ContentId) -> bool {
            self.0.contains(content)
        }
    }

    fn value(kind: EntryKind, content: Option<ContentId>) -> EntryValue {
        EntryValue {
            kind,
            deleted: false,
            content,
            size: 0,
            mtime_ns: 5,
            mode: 0o644,
            link_target: (kind == EntryKind::Symlink).then(|| "t".to_string()),
            device: DeviceId([1; 8]),
            replaces: None,
        }
    }

    fn tree(entries: &[(&str, EntryValue)]) -> Tree {
        derive_tree(
            entries
                .iter()
                .map(|(p, v)| (p.to_string(), vec![v.clone()])),
            TreeOptions::default(),
        )
    }

    fn local(kind: EntryKind, content: Option<ContentId>) -> IndexedEntry {
        IndexedEntry {
            kind,
            stamp: Stamp {
                size: 0,
                mtime_ns: 0,
                ctime_ns: 0,
                inode: 0,
                mode: 0o644,
            },
            content,
            link_target: (kind == EntryKind::Symlink).then(|| "t".to_string()),
        }
    }

    #[test]
    fn an_edit_keeps_the_old_version_then_writes_the_new() {
        let (old_id, new_id) = (ContentId([1; 32]), ContentId([2; 32]));
        let store = Store([old_id, new_id].into());
        let t = tree(&[("f", value(EntryKind::File, Some(new_id)))]);
        let disk = BTreeMap::from([("f".to_string(), local(EntryKind::File, Some(old_id)))]);
        let p = plan(&t, &disk, &store);
        assert_eq!(
            p.actions,
            vec![
                Action::KeepInHistory {
                    path: "f".into(),
                    content: old_id
                },
                Action::WriteFile {
                    path: "f".into(),
                    content: new_id,
                    size: 0,
                    mtime_ns: 5,
                    mode: 0o644,
                    conflict_of: None,
                }
            ]
        );
    }

    #[test]
    fn identical_files_fetch_their_manifest_once() {
        let id = ContentId([7; 32]);
        let store = Store(HashSet::new());
        let entries: Vec<(String, EntryValue)> = (0..8)
            .map(|i| (format!("copy{i}"), value(EntryKind::File, Some(id))))
            .collect();
        let t = tree(
            &entries
                .iter()
                .map(|(p, v)| (p.as_str(), v.clone()))
                .collect::<Vec<_>>(),
        );
        let p = plan(&t, &BTreeMap::new(), &store);
        assert_eq!(p.actions[0], Action::FetchManifest { content: id });
        assert_eq!(
            p.actions
                .iter()
                .filter(|a| matches!(a, Action::FetchManifest { .. }))
                .count(),
            1
        );
        assert_eq!(
            p.actions
                .iter()
                .filter(|a| matches!(a, Action::WriteFile { .. }))
                .count(),
            8
        );
    }

    #[test]
    fn unknown_manifests_are_fetched_first() {
        let store = Store(HashSet::new());
        let c = ContentId([3; 32]);
        let p = plan(
            &tree(&[("f", value(EntryKind::File, Some(c)))]),
            &BTreeMap::new(),
            &store,
        );
        assert_eq!(p.actions[0], Action::FetchManifest { content: c });
    }

    #[test]
    fn a_path_through_a_symlink_is_rejected() {
        // A tree built by hand, bypassing derive_tree's own protection.
        let mut t = Tree::default();
        t.entries.insert(
            "link".into(),
            TreeEntry {
                value: value(EntryKind::Symlink, None),
                origin: Origin::Recorded,
            },
        );
        t.entries.insert(
            "link/passwd".into(),
            TreeEntry {
                value: value(EntryKind::File, Some(ContentId([1; 32]))),
                origin: Origin::Recorded,
            },
        );
        let store = Store(HashSet::new());
        let p = plan(&t, &BTreeMap::new(), &store);
        assert!(
            matches!(&p.rejected[..], [(path, PathError::ThroughSymlink { link, .. })] if path == "link/passwd" && link == "link")
        );
        assert!(
            !p.actions
                .iter()
                .any(|a| matches!(a, Action::WriteFile { .. }))
        );
    }

    #[test]
    fn a_directory_replaced_by_a_file_is_emptied_first() {
        let id = ContentId([1; 32]);
        let store = Store([id].into());
        let t = tree(&[("x", value(EntryKind::File, Some(id)))]);
        let disk = BTreeMap::from([
            ("x".to_string(), local(EntryKind::Dir, None)),
            (
                "x/a".to_string(),
                local(EntryKind::File, Some(ContentId([5; 32]))),
            ),
        ]);
        let p = plan(&t, &disk, &store);
        let order: Vec<String> = p
            .actions
            .iter()
            .map(|a| match a {
                Action::KeepInHistory { path, .. } => format!("keep {path}"),
                Action::Delete { path, .. } => format!("rm {path}"),
                Action::WriteFile { path, .. } => format!("write {path}"),
                other => format!("{other:?}"),
            })
            .collect();
        assert_eq!(order, vec!["keep x/a", "rm x/a", "rm x", "write x"]);
    }

    /// An action in a few words, for comparing plans.
    fn describe(a: &Action) -> String {
        match a {
            Action::MakeDir { path } => format!("mkdir {path}"),
            Action::Rename { from, path, .. } => format!("mv {from} {path}"),
            Action::Delete { path, .. } => format!("rm {path}"),
            Action::WriteSymlink { path, .. } => format!("symlink {path}"),
            Action::RenameDir { from, path, steps } => format!(
                "mvdir {from} {path} [{}]",
                steps.iter().map(describe).collect::<Vec<_>>().join(", ")
            ),
            other => format!("{other:?}"),
        }
    }

    #[test]
    fn a_renamed_directory_is_carried_out_as_renames() {
        let (c1, c2) = (ContentId([1; 32]), ContentId([2; 32]));
        let t = tree(&[
            ("new", value(EntryKind::Dir, None)),
            ("new/a", value(EntryKind::File, Some(c1))),
            ("new/b", value(EntryKind::File, Some(c2))),
        ]);
        let disk = BTreeMap::from([
            ("old".to_string(), local(EntryKind::Dir, None)),
            ("old/a".to_string(), local(EntryKind::File, Some(c1))),
            ("old/b".to_string(), local(EntryKind::File, Some(c2))),
        ]);
        let p = plan(&t, &disk, &Store([c1, c2].into()));
        assert_eq!(
            p.actions.iter().map(describe).collect::<Vec<_>>(),
            ["mvdir old new [mkdir new, mv old/a new/a, mv old/b new/b, rm old]"]
        );
        // Subdirectories and symlinks move with it; a file that is not moved alike (here:
        // a new version of it) keeps the moves path by path.
        let link = |t: &str| EntryValue {
            link_target: Some(t.into()),
            ..value(EntryKind::Symlink, None)
        };
        let mut disk = disk.clone();
        disk.insert("old/s".into(), local(EntryKind::Dir, None));
        disk.insert("old/s/c".into(), local(EntryKind::File, Some(c2)));
        disk.insert(
            "old/l".into(),
            IndexedEntry {
                link_target: Some("a".into()),
                ..local(EntryKind::Symlink, None)
            },
        );
        let mut moved = vec![
            ("new", value(EntryKind::Dir, None)),
            ("new/a", value(EntryKind::File, Some(c1))),
            ("new/b", value(EntryKind::File, Some(c2))),
            ("new/l", link("a")),
            ("new/s", value(EntryKind::Dir, None)),
            ("new/s/c", value(EntryKind::File, Some(c2))),
        ];
        let p = plan(&tree(&moved), &disk, &Store([c1, c2].into()));
        assert_eq!(
            p.actions.iter().map(describe).collect::<Vec<_>>(),
            [
                "mvdir old new [mkdir new, mv old/a new/a, mv old/b new/b, symlink new/l, \
              mkdir new/s, mv old/s/c new/s/c, rm old/s, rm old/l, rm old]"
            ]
        );
        moved[5].1 = value(EntryKind::File, Some(c1));
        let p = plan(&tree(&moved), &disk, &Store([c1, c2].into()));
        assert!(
            !p.actions
                .iter()
                .any(|a| matches!(a, Action::RenameDir { .. })),
            "{:?}",
            p.actions
        );
        // A path that still exists locally is written, not renamed over.
        let disk = BTreeMap::from([
            ("new".to_string(), local(EntryKind::Dir, None)),
            ("new/a".to_string(), local(EntryKind::File, Some(c2))),
            ("old".to_string(), local(EntryKind::Dir, None)),
            ("old/a".to_string(), local(EntryKind::File, Some(c1))),
        ]);
        let t = tree(&[
            ("new", value(EntryKind::Dir, None)),
            ("new/a", value(EntryKind::File, Some(c1))),
        ]);
        let p = plan(&t, &disk, &Store([c1, c2].into()));
        assert!(
            p.actions
                .iter()
                .any(|a| matches!(a, Action::WriteFile { path, .. } if path == "new/a"))
        );
        assert!(!p.actions.iter().any(|a| matches!(a, Action::Rename { .. })));
    }

    #[test]
    fn a_disk_that_matches_the_tree_needs_nothing() {
        let id = ContentId([4; 32]);
        let t = tree(&[
            ("d", value(EntryKind::Dir, None)),
            ("d/f", value(EntryKind::File, Some(id))),
        ]);
        let disk = BTreeMap::from([
            ("d".to_string(), local(EntryKind::Dir, None)),
            ("d/f".to_string(), local(EntryKind::File, Some(id))),
        ]);
        let store = Store(HashSet::new());
        assert!(plan(&t, &disk, &store).is_empty());
    }
}
