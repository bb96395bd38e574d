//! The folder's tree: what every device must converge to, derived from the document.
//!
//! [`derive_tree`] is a pure function of the values recorded per path (several when
//! devices changed a path concurrently), so devices with the same document derive the same
//! tree. The conflict rules (see ARCHITECTURE.md) live here:
//!
//! - concurrent modifications keep both versions: the winner (newest mtime, then highest
//!   device id) keeps the name, every other version becomes a conflict copy named
//!   `name.sync-conflict-YYYYMMDD-HHMMSS-<device>.ext` from its own mtime and device, so the
//!   name is the same on every device and the copy exists once;
//! - modify beats delete: tombstones lose against any live value of other content;
//! - a value whose content another concurrent value (a rewrite or a delete) explicitly
//!   replaced is superseded, not a conflict;
//! - a path that is needed as a directory (something lives below it) is one: a file or
//!   symlink there is moved to a conflict copy, and missing parents are implied, so a
//!   directory deleted on one side keeps a file added inside it on the other;
//! - on case-insensitive file systems, paths that differ only by case are conflicts too.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use crate::folder::entry::{DeviceId, EntryValue};
use crate::path::{self, PathError, case_key};
use crate::scan::EntryKind;

/// Marker inside conflict copy names, as in Syncthing.
pub const CONFLICT_MARKER: &str = ".sync-conflict-";

/// Options of the device deriving the tree.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TreeOptions {
    /// The local file system folds case (macOS, Windows): case-only differences clash.
    pub case_insensitive: bool,
}

/// Why an entry is in the tree.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Origin {
    /// Recorded at this path in the document (and won any conflict there).
    Recorded,
    /// A losing concurrent version of `of`.
    ConflictCopy { of: String },
    /// A file or symlink at `of`, moved because `of` must be a directory.
    Displaced { of: String },
    /// A path that clashes with another only by case, moved away from `of`.
    CaseClash { of: String },
    /// A directory nobody recorded, needed because something lives below it.
    ImpliedDir,
}

/// One path of the tree.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TreeEntry {
    /// What must be at this path.
    pub value: EntryValue,
    /// Why it is here.
    pub origin: Origin,
}

/// The derived tree of a folder.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Tree {
    /// Live paths, sorted (parents before children).
    pub entries: BTreeMap<String, TreeEntry>,
    /// Paths in the document that are not valid, with why; they never reach the planner.
    pub rejected: Vec<(String, PathError)>,
}

impl Tree {
    /// The entry at `path`.
    pub fn get(&self, path: &str) -> Option<&TreeEntry> {
        self.entries.get(path)
    }

    /// The tree's paths with what is at them, ignoring why (for comparing trees).
    pub fn data(&self) -> BTreeMap<&str, (EntryKind, Option<crate::ContentId>, Option<&str>)> {
        self.entries
            .iter()
            .map(|(p, e)| {
                (
                    p.as_str(),
                    (
                        e.value.kind,
                        e.value.content,
                        e.value.link_target.as_deref(),
                    ),
                )
            })
            .collect()
    }
}

/// True when `path` names a conflict copy.
pub fn is_conflict_name(path: &str) -> bool {
    path.rsplit('/')
        .next()
        .is_some_and(|name| name.contains(CONFLICT_MARKER))
}

/// A conflict copy's name taken apart: what [`conflict_name`] put together (the one place
/// that parses it).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConflictCopyName {
    /// The path it is a copy of. A name that was shortened to fit gives the shortened
    /// stem: the name alone cannot say more.
    pub original: String,
    /// `YYYYMMDD-HHMMSS` (UTC) of the copy's version.
    pub stamp: String,
    /// The short id of the device that wrote the copy's version.
    pub device: String,
}

impl ConflictCopyName {
    /// Takes a conflict copy's path apart; None when it is not one.
    pub fn parse(copy: &str) -> Option<ConflictCopyName> {
        let start = copy.rfind('/').map_or(0, |i| i + 1);
        let (dir, name) = copy.split_at(start);
        let i = name.rfind(CONFLICT_MARKER)?;
        let (mut stem, rest) = (&name[..i], &name[i + CONFLICT_MARKER.len()..]);
        let (stamp, device) = (rest.get(..15)?, rest.get(16..23)?);
        let stamp_ok = stamp.bytes().enumerate().all(|(k, b)| {
            if k == 8 {
                b == b'-'
            } else {
                b.is_ascii_digit()
            }
        });
        if !stamp_ok || rest.as_bytes()[15] != b'-' {
            return None;
        }
        // What follows is the extension, and a `-n` that made the name unique.
        let mut ext = &rest[23..];
        if let Some(j) = ext.rfind('-')
            && j + 1 < ext.len()
            && ext[j + 1..].bytes().all(|b| b.is_ascii_digit())
        {
            ext = &ext[..j];
        }
        // `_` was put before a copy's name that cairn would keep for itself.
        if let Some(unprefixed) = stem.strip_prefix('_')
            && path::is_reserved_name(&name[1..])
        {
            stem = unprefixed;
        }
        Some(ConflictCopyName {
            original: format!("{dir}{stem}{ext}"),
            stamp: stamp.to_string(),
            device: device.to_string(),
        })
    }

    /// The name the copy gets when the user keeps both versions:
    /// `plan (AAAAAAA 20231114-221321).txt` beside `plan.txt`.
    pub fn kept_name(&self) -> String {
        let start = self.original.rfind('/').map_or(0, |i| i + 1);
        let name = &self.original[start..];
        let (stem, ext) = match name.rfind('.') {
            Some(i) if i > 0 && name.len() - i <= 32 => (&name[..i], &name[i..]),
            _ => (name, ""),
        };
        format!(
            "{}{stem} ({} {}){ext}",
            &self.original[..start],
            self.device,
            self.stamp
        )
    }
}

/// The version of a path every device shows: among `values` (a path's concurrent
/// values), the live ones not superseded by another, ranked by [`rank`]. The one rule for
/// the winner, used by the tree, the document and the control API.
pub fn winner(values: &[EntryValue]) -> Option<&EntryValue> {
    ranked(values).into_iter().next()
}

/// The live values of a path that no concurrent value superseded, best first.
fn ranked(values: &[EntryValue]) -> Vec<&EntryValue> {
    // A version that another concurrent value explicitly replaced is superseded: by a
    // rewrite, or by a delete (whose device saw exactly that version). A concurrent
    // write of the *same* version (a device materializing a conflict copy while its
    // author dropped it, or a touch) must not bring back what was deleted knowingly;
    // a concurrent write of other content still beats the delete.
    let superseded = |v: &EntryValue| {
        v.content.is_some()
            && values
                .iter()
                .any(|w| w.replaces == v.content && w.content != v.content)
    };
    let mut live: Vec<&EntryValue> = values
        .iter()
        .filter(|v| !v.deleted && !superseded(v))
        .collect();
    live.sort_by(|a, b| rank(a, b));
    live
}

/// The conflict copy name of `value`, a losing version of `path`.
pub fn conflict_name(path: &str, value: &EntryValue) -> String {
    let (dir, name) = match path.rfind('/') {
        Some(i) => (&path[..=i], &path[i + 1..]),
        None => ("", path),
    };
    let (stem, ext) = match name.rfind('.') {
        Some(i) if i > 0 && name.len() - i <= 32 => (&name[..i], &name[i..]),
        _ => (name, ""),
    };
    let suffix = format!(
        "{CONFLICT_MARKER}{}-{}",
        utc_stamp(value.mtime_ns),
        value.device.short()
    );
    // A stem such as `.cairn-tmp` would give a name cairn keeps for itself (its temp
    // files), which every device refuses: such a copy's name starts with `_`.
    let prefix = if path::is_reserved_name(&format!("{stem}{suffix}{ext}")) {
        "_"
    } else {
        ""
    };
    // A long name is shortened (at a character boundary) so that the copy's name still
    // fits in a file name, and its path in a path.
    let fixed = prefix.len() + suffix.len() + ext.len();
    let room = path::MAX_NAME_BYTES
        .min(path::MAX_PATH_BYTES.saturating_sub(dir.len()))
        .saturating_sub(fixed);
    let mut cut = stem.len().min(room);
    while !stem.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{dir}{prefix}{}{suffix}{ext}", &stem[..cut])
}

/// `name` with `-n` appended, its file name shortened first if it would not fit.
fn numbered(name: &str, n: u32) -> String {
    let tag = format!("-{n}");
    let start = name.rfind('/').map_or(0, |i| i + 1);
    let limit = (start + path::MAX_NAME_BYTES).min(path::MAX_PATH_BYTES);
    let mut cut = name.len().min(limit.saturating_sub(tag.len()));
    while !name.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}{tag}", &name[..cut])
}

/// `YYYYMMDD-HHMMSS` in UTC for a time in ns since the epoch.
fn utc_stamp(ns: i64) -> String {
    let t = UtcTime::from_ns(ns);
    format!(
        "{:04}{:02}{:02}-{:02}{:02}{:02}",
        t.year, t.month, t.day, t.hour, t.minute, t.second
    )
}

/// A UTC calendar time, for names and messages people read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UtcTime {
    pub year: i64,
    pub month: i64,
    pub day: i64,
    pub hour: i64,
    pub minute: i64,
    pub second: i64,
}

impl UtcTime {
    /// The calendar time of `ns` nanoseconds since the Unix epoch (Howard Hinnant's
    /// civil_from_days).
    pub fn from_ns(ns: i64) -> Self {
        let secs = ns.div_euclid(1_000_000_000);
        let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
        let z = days + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z.rem_euclid(146_097);
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let day = doy - (153 * mp + 2) / 5 + 1;
        let month = if mp < 10 { mp + 3 } else { mp - 9 };
        let year = yoe + era * 400 + i64::from(month <= 2);
        UtcTime {
            year,
            month,
            day,
            hour: rem / 3600,
            minute: rem % 3600 / 60,
            second: rem % 60,
        }
    }
}

/// Ranks concurrent live values: directories first (they merge and keep their children),
/// then the newest mtime, then the highest device id, then the encoding, so that every
/// device picks the same winner.
fn rank(a: &EntryValue, b: &EntryValue) -> std::cmp::Ordering {
    let dir = |v: &EntryValue| v.kind == EntryKind::Dir;
    dir(b)
        .cmp(&dir(a))
        .then(b.mtime_ns.cmp(&a.mtime_ns))
        .then(b.device.cmp(&a.device))
        .then_with(|| b.encode().cmp(&a.encode()))
}

fn implied_dir() -> TreeEntry {
    TreeEntry {
        value: EntryValue {
            kind: EntryKind::Dir,
            deleted: false,
            content: None,
            size: 0,
            mtime_ns: 0,
            mode: 0o755,
            link_target: None,
            device: DeviceId([0; 8]),
            replaces: None,
        },
        origin: Origin::ImpliedDir,
    }
}

/// Puts the winner of `p`'s `values` at `p` and queues a conflict copy for every other
/// live version with different data (directories never get copies).
fn add_recorded(
    entries: &mut BTreeMap<String, TreeEntry>,
    copies: &mut Vec<(String, TreeEntry)>,
    p: String,
    values: &[EntryValue],
) {
    let live = ranked(values);
    if live.is_empty() {
        return;
    }
    let winner = live[0].clone();
    let mut kept: Vec<&EntryValue> = vec![live[0]];
    for v in &live[1..] {
        if v.kind == EntryKind::Dir || kept.iter().any(|k| k.same_data(v)) {
            continue;
        }
        kept.push(v);
        copies.push((
            conflict_name(&p, v),
            TreeEntry {
                value: (*v).clone(),
                origin: Origin::ConflictCopy { of: p.clone() },
            },
        ));
    }
    entries.insert(
        p,
        TreeEntry {
            value: winner,
            origin: Origin::Recorded,
        },
    );
}

/// Derives the tree from every path's concurrent values.
pub fn derive_tree(
    recorded: impl IntoIterator<Item = (String, Vec<EntryValue>)>,
    options: TreeOptions,
) -> Tree {
    let mut tree = Tree::default();
    let mut copies: Vec<(String, TreeEntry)> = Vec::new();
    for (p, values) in recorded {
        if let Err(e) = path::validate(&p) {
            tree.rejected.push((p, e));
            continue;
        }
        add_recorded(&mut tree.entries, &mut copies, p, &values);
    }
    for (name, entry) in copies {
        insert_unique(&mut tree.entries, name, entry, options);
    }
    make_parents_directories(&mut tree.entries, options);
    if options.case_insensitive {
        separate_case_clashes(&mut tree.entries, options);
        make_parents_directories(&mut tree.entries, options);
    }
    tree
}

/// Inserts `entry` at `name`, or at `name-2`, `name-3`... if a different entry is there.
/// The part of the tree that changes at some paths can reach, derived as
/// [`derive_tree`] derives it, from those paths alone.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PartialTree {
    /// Entries of the whole tree at paths in `scope` (a path of `scope` missing here is
    /// not in the tree).
    pub tree: Tree,
    /// Every path looked at: the paths asked for, their ancestors, the originals of
    /// conflict copies among them and the names their copies took or tried.
    pub scope: BTreeSet<String>,
}

/// The entries of the tree that a change at any of `paths` can alter, each exactly as
/// [`derive_tree`] over the whole folder has it: every path, its conflict copies, its
/// ancestors (a directory, implied or displacing a file) and, for a conflict copy, its
/// original. So when the document changes only at `paths`, the tree before and after
/// differs only at paths in the scope of the partial tree before or after: a pull can
/// plan those paths alone (issue #13: a million-path folder is not derived per edit).
///
/// `values(path)` reads a path's recorded values; `live_below(dir)` says whether a valid
/// path under `dir/` has a live value. None on a case-insensitive file system, where a
/// path can clash with any other: derive the whole tree.
///
/// One case is not exact: conflict copies of two different paths competing for one
/// numbered name (`x.txt-2` beside `x.txt`, both in conflict, versions from one device in
/// the same second). Which gets `-2` depends on the order of the whole folder; the full
/// pull after every full scan settles it.
pub fn derive_partial<'a>(
    paths: impl IntoIterator<Item = &'a str>,
    values: &dyn Fn(&str) -> Vec<EntryValue>,
    live_below: &dyn Fn(&str) -> bool,
    options: TreeOptions,
) -> Option<PartialTree> {
    if options.case_insensitive {
        return None;
    }
    let mut out = PartialTree::default();
    let mut wanted = BTreeSet::new();
    for p in paths {
        if let Err(e) = path::validate(p) {
            if !values(p).is_empty() {
                out.tree.rejected.push((p.to_string(), e));
            }
            continue;
        }
        wanted.insert(p.to_string());
        if let Some(c) = ConflictCopyName::parse(p)
            && path::validate(&c.original).is_ok()
        {
            wanted.insert(c.original);
        }
    }
    let ancestors: Vec<String> = wanted
        .iter()
        .flat_map(|p| path::ancestors(p).map(str::to_string))
        .collect();
    wanted.extend(ancestors);
    let mut entries = BTreeMap::new();
    let mut copies = Vec::new();
    for p in &wanted {
        add_recorded(&mut entries, &mut copies, p.clone(), &values(p));
    }
    let mut scope = wanted;
    // A name a copy takes or tries may be recorded itself: that entry comes first, as in
    // the whole tree (recorded paths before every copy).
    let look =
        |entries: &mut BTreeMap<String, TreeEntry>, scope: &mut BTreeSet<String>, name: &str| {
            if scope.insert(name.to_string()) && path::validate(name).is_ok() {
                add_recorded(entries, &mut Vec::new(), name.to_string(), &values(name));
            }
        };
    for (name, entry) in copies {
        insert_unique_with(&mut entries, name, entry, options, &mut |e, n| {
            look(e, &mut scope, n)
        });
    }
    // Paths needed as directories, then what was looked at for the copies they displace.
    let mut done = BTreeSet::new();
    loop {
        let todo: Vec<String> = scope.difference(&done).cloned().collect();
        if todo.is_empty() {
            break;
        }
        for a in todo {
            done.insert(a.clone());
            if !live_below(&a) {
                continue;
            }
            if let Some(old) = entries.insert(a.clone(), implied_dir()) {
                if old.value.kind == EntryKind::Dir {
                    entries.insert(a, old);
                    continue;
                }
                let name = conflict_name(&a, &old.value);
                let moved = TreeEntry {
                    value: old.value,
                    origin: Origin::Displaced { of: a },
                };
                insert_unique_with(&mut entries, name, moved, options, &mut |e, n| {
                    look(e, &mut scope, n)
                });
            }
        }
    }
    scope.extend(entries.keys().cloned());
    out.tree.entries = entries;
    out.scope = scope;
    Some(out)
}

fn insert_unique(
    entries: &mut BTreeMap<String, TreeEntry>,
    name: String,
    entry: TreeEntry,
    options: TreeOptions,
) {
    insert_unique_with(entries, name, entry, options, &mut |_, _| {});
}

/// Inserts a copy at `name`, or at `name-2`, `name-3`, ... when another version holds
/// the name; `look` is told each name before it is checked.
fn insert_unique_with(
    entries: &mut BTreeMap<String, TreeEntry>,
    name: String,
    entry: TreeEntry,
    options: TreeOptions,
    look: &mut dyn FnMut(&mut BTreeMap<String, TreeEntry>, &str),
) {
    let taken = |entries: &BTreeMap<String, TreeEntry>, n: &str| -> Option<bool> {
        let existing = if options.case_insensitive {
            let key = case_key(n);
            entries
                .iter()
                .find(|(p, _)| case_key(p) == key)
                .map(|(_, e)| e)
        } else {
            entries.get(n)
        };
        existing.map(|e| e.value.same_data(&entry.value))
    };
    let mut candidate = name.clone();
    for n in 2.. {
        look(entries, &candidate);
        match taken(entries, &candidate) {
            None => break,
            Some(true) => return, // the same version is already there
            Some(false) => candidate = numbered(&name, n),
        }
    }
    entries.insert(candidate, entry);
}

fn make_parents_directories(entries: &mut BTreeMap<String, TreeEntry>, options: TreeOptions) {
    loop {
        let mut needed: Vec<String> = Vec::new();
        for p in entries.keys() {
            for a in path::ancestors(p) {
                match entries.get(a) {
                    Some(e) if e.value.kind == EntryKind::Dir => {}
                    _ => needed.push(a.to_string()),
                }
            }
        }
        if needed.is_empty() {
            return;
        }
        needed.sort();
        needed.dedup();
        for a in needed {
            if let Some(old) = entries.insert(a.clone(), implied_dir()) {
                let name = conflict_name(&a, &old.value);
                let moved = TreeEntry {
                    value: old.value,
                    origin: Origin::Displaced { of: a },
                };
                insert_unique(entries, name, moved, options);
            }
        }
    }
}

/// On a case-insensitive file system, keeps one of each set of paths that differ only by
/// case (directories merge) and moves the others to conflict copies.
fn separate_case_clashes(entries: &mut BTreeMap<String, TreeEntry>, options: TreeOptions) {
    let mut groups: HashMap<String, Vec<String>> = HashMap::new();
    for p in entries.keys() {
        groups.entry(case_key(p)).or_default().push(p.clone());
    }
    let mut clashes: Vec<Vec<String>> = groups.into_values().filter(|g| g.len() > 1).collect();
    clashes.sort();
    for mut group in clashes {
        group.sort_by(|a, b| rank(&entries[a].value, &entries[b].value).then_with(|| b.cmp(a)));
        let has_dir = entries[&group[0]].value.kind == EntryKind::Dir;
        for (i, p) in group.iter().enumerate() {
            let keep = if has_dir {
                entries[p].value.kind == EntryKind::Dir
            } else {
                i == 0
            };
            if keep {
                continue;
            }
            if let Some(old) = entries.remove(p) {
                let name = conflict_name(p, &old.value);
                let moved = TreeEntry {
                    value: old.value,
                    origin: Origin::CaseClash { of: p.clone() },
                };
                insert_unique(entries, name, moved, options);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hash::ContentId;

    fn value(kind: EntryKind, mtime_ns: i64, device: u8) -> EntryValue {
        EntryValue {
            kind,
            deleted: false,
            content: (kind == EntryKind::File).then_some(ContentId([device; 32])),
            size: 0,
            mtime_ns,
            mode: 0o644,
            link_target: None,
            device: DeviceId([device; 8]),
            replaces: None,
        }
    }

    #[test]
    fn conflict_copy_names_parse_back_to_their_original() {
        let v = value(EntryKind::File, 1_700_000_000_000_000_000, 7);
        for original in [
            "docs/plan.txt",
            "Makefile",
            "a/b/archive.tar.gz",
            ".hidden",
            "dir.with.dots/x",
            "x-2.txt",
        ] {
            let copy = conflict_name(original, &v);
            let parsed = ConflictCopyName::parse(&copy).expect(&copy);
            assert_eq!(parsed.original, original, "{copy}");
            assert_eq!(parsed.device, v.device.short());
            assert_eq!(parsed.stamp, utc_stamp(v.mtime_ns));
            // A second copy of the same name is numbered: still the same original.
            let second = numbered(&copy, 2);
            assert_eq!(
                ConflictCopyName::parse(&second).unwrap().original,
                original,
                "{second}"
            );
        }
        // A name cairn keeps for itself gets a `_` before it; parsing takes it off.
        let copy = conflict_name(".cairn-tmp", &v);
        assert!(copy.starts_with('_'), "{copy}");
        assert_eq!(
            ConflictCopyName::parse(&copy).unwrap().original,
            ".cairn-tmp"
        );
        assert_eq!(
            ConflictCopyName::parse("plan.sync-conflict-20231114-221321-AAAAAAA.txt")
                .unwrap()
                .kept_name(),
            "plan (AAAAAAA 20231114-221321).txt"
        );
        for not_a_copy in [
            "plan.txt",
            "a.sync-conflict-2023.txt",
            "a.sync-conflict-x/y",
        ] {
            assert_eq!(ConflictCopyName::parse(not_a_copy), None, "{not_a_copy}");
        }
    }

    #[test]
    fn one_winner_rule_for_tree_document_and_api() {
        let newer = value(EntryKind::File, 20, 1);
        let older_higher_device = value(EntryKind::File, 10, 9);
        let dir = value(EntryKind::Dir, 5, 2);
        let values = vec![older_higher_device, newer.clone()];
        assert_eq!(winner(&values), Some(&newer));
        let tree = derive_tree([("p".to_string(), values)], TreeOptions::default());
        assert_eq!(tree.get("p").unwrap().value, newer);
        // A directory beats any file (it keeps its children).
        assert_eq!(winner(&[newer.clone(), dir.clone()]), Some(&dir));
        // A superseded version never wins, however new.
        let mut rewrite = value(EntryKind::File, 1, 3);
        rewrite.replaces = newer.content;
        assert_eq!(winner(&[newer, rewrite.clone()]), Some(&rewrite));
    }
}
