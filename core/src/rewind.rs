//! Rewind: the changes that put a folder (or a directory of it) back to how it was at a
//! moment of its history.
//!
//! Both states come from the folder document (every value it ever held is still in it),
//! as the concurrent values of each path: "then" at the heads of the moment, "now" at
//! the current heads. The winner of each path is compared (the same rule every device
//! derives its tree with). What differs becomes an ordinary local change of the device
//! that rewinds, with the current winner as the version it replaces, so it supersedes
//! the current state instead of conflicting with it, syncs to every device, and the
//! versions it replaces go to history there like any replaced file.

use std::collections::BTreeMap;

use crate::folder::tree::winner;
use crate::folder::{EntryValue, LocalChange};
use crate::hash::ContentId;
use crate::path;

/// What a rewind does to one path.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StepKind {
    /// The path has other data now: its data of then is put back.
    Restore,
    /// The path was deleted since: it is put back.
    Recreate,
    /// The path was created since and the rewind is exact: it is removed (to history).
    Remove,
    /// The path was created since: it stays (without `--exact`).
    KeepNew,
}

impl StepKind {
    pub fn as_str(self) -> &'static str {
        match self {
            StepKind::Restore => "restore",
            StepKind::Recreate => "recreate",
            StepKind::Remove => "remove",
            StepKind::KeepNew => "keep",
        }
    }
}

/// One path of a rewind.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Step {
    pub path: String,
    pub kind: StepKind,
    /// The winner then (None: the path did not exist or was deleted).
    pub then: Option<EntryValue>,
    /// The winner now (None: the path does not exist or is deleted).
    pub now: Option<EntryValue>,
}

impl Step {
    /// The version this step puts back (a restored or recreated path's value of then).
    pub fn version(&self) -> Option<&EntryValue> {
        match self.kind {
            StepKind::Restore | StepKind::Recreate => self.then.as_ref(),
            StepKind::Remove | StepKind::KeepNew => None,
        }
    }

    /// The local change this step records, with the content it replaces; None for a
    /// step that changes nothing ([`StepKind::KeepNew`]).
    pub fn change(&self) -> Option<(String, LocalChange, Option<ContentId>)> {
        let base = self.now.as_ref().and_then(|v| v.content);
        let change = match self.kind {
            StepKind::KeepNew => return None,
            StepKind::Remove => LocalChange::Deleted,
            StepKind::Restore | StepKind::Recreate => {
                let v = self.version()?;
                LocalChange::Present {
                    kind: v.kind,
                    content: v.content,
                    size: v.size,
                    mtime_ns: v.mtime_ns,
                    mode: v.mode,
                    link_target: v.link_target.clone(),
                }
            }
        };
        Some((self.path.clone(), change, base))
    }
}

/// The live winner of a path's concurrent values.
fn live(values: Option<&Vec<EntryValue>>) -> Option<&EntryValue> {
    values.and_then(|v| winner(v)).filter(|w| !w.deleted)
}

/// Whether two values hold the same data (kind, content, link target, permissions).
fn same(a: &EntryValue, b: &EntryValue) -> bool {
    a.same_data(b) && a.mode == b.mode
}

/// The steps that take the paths of `now` back to `then` (both: path -> concurrent
/// values, as the document holds them, restricted to the rewound range by the caller),
/// in path order (a directory before what lies below it). Paths that are not valid are
/// left alone, as everywhere else.
pub fn plan(
    then: &BTreeMap<String, Vec<EntryValue>>,
    now: &BTreeMap<String, Vec<EntryValue>>,
    exact: bool,
) -> Vec<Step> {
    let mut keys: Vec<&String> = then.keys().chain(now.keys()).collect();
    keys.sort();
    keys.dedup();
    let mut steps = Vec::new();
    for key in keys {
        if path::validate(key).is_err() {
            continue;
        }
        let (was, is) = (live(then.get(key)), live(now.get(key)));
        let kind = match (was, is) {
            (Some(w), Some(i)) if same(w, i) => continue,
            (Some(_), Some(_)) => StepKind::Restore,
            (Some(_), None) => StepKind::Recreate,
            (None, Some(_)) if exact => StepKind::Remove,
            (None, Some(_)) => StepKind::KeepNew,
            (None, None) => continue,
        };
        steps.push(Step {
            path: key.clone(),
            kind,
            then: was.cloned(),
            now: is.cloned(),
        });
    }
    steps
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::folder::{DeviceId, FolderDoc};
    use crate::scan::EntryKind;

    fn content(of: u8) -> Option<ContentId> {
        Some(ContentId([of; 32]))
    }

    fn file(of: u8) -> LocalChange {
        LocalChange::Present {
            kind: EntryKind::File,
            content: content(of),
            size: 1,
            mtime_ns: i64::from(of),
            mode: 0o644,
            link_target: None,
        }
    }

    /// A document with a history: at time 100 `a`, `b` and `d/x`; at 200 `a` edited, `b`
    /// deleted, `c` created. Rewinding to 150 restores `a`, recreates `b` and keeps (or
    /// with exact removes) `c`; applying those steps gives the state of 150 again.
    #[test]
    fn a_rewind_puts_back_edited_and_deleted_paths_and_removes_new_ones_only_when_exact() {
        let me = DeviceId([1; 8]);
        let mut doc = FolderDoc::new(me, 4).unwrap();
        doc.set_clock(100);
        for (p, c) in [("a", 1), ("b", 2), ("d/x", 3)] {
            assert!(doc.record_local(p, &file(c), None));
        }
        doc.commit();
        doc.set_clock(200);
        doc.record_local("a", &file(4), content(1));
        doc.record_local("b", &LocalChange::Deleted, content(2));
        doc.record_local("c", &file(5), None);
        doc.commit();

        let then_heads = doc.heads_at(150);
        let then = doc.recorded_at(Some(&then_heads), None);
        let now = doc.recorded_at(None, None);
        let steps = plan(&then, &now, false);
        let kinds: Vec<(&str, StepKind)> =
            steps.iter().map(|s| (s.path.as_str(), s.kind)).collect();
        assert_eq!(
            kinds,
            vec![
                ("a", StepKind::Restore),
                ("b", StepKind::Recreate),
                ("c", StepKind::KeepNew)
            ]
        );
        let exact = plan(&then, &now, true);
        assert_eq!(exact[2].kind, StepKind::Remove);

        // Applied as local changes, the document's state equals the one of then.
        doc.set_clock(300);
        let changes: Vec<_> = exact.iter().filter_map(Step::change).collect();
        let refs: Vec<_> = changes
            .iter()
            .map(|(p, c, b)| (p.as_str(), c, *b))
            .collect();
        doc.record_local_all(&refs);
        doc.commit();
        let after = doc.recorded_at(None, None);
        assert!(
            plan(&then, &after, true).is_empty(),
            "nothing left to rewind"
        );
        // Only a subtree: the range of `d` holds no change.
        let under_d = doc.recorded_at(Some(&then_heads), Some("d"));
        assert_eq!(under_d.keys().collect::<Vec<_>>(), vec!["d/x"]);
    }

    /// Every value a path had is listed with the time of its change, oldest first, and
    /// the state at a moment before every dated change is the undated one.
    #[test]
    fn versions_of_a_path_come_with_their_times() {
        let me = DeviceId([2; 8]);
        let mut doc = FolderDoc::new(me, 2).unwrap();
        doc.record_local("f", &file(1), None);
        doc.commit();
        doc.set_clock(1_000);
        doc.record_local("f", &file(2), content(1));
        doc.commit();
        doc.set_clock(2_000);
        doc.record_local("f", &LocalChange::Deleted, content(2));
        doc.record_local("g", &file(9), None);
        doc.commit();
        let all = doc.versions(Some("f"), |_| true);
        let f: Vec<(Option<ContentId>, bool, i64)> = all["f"]
            .iter()
            .map(|v| (v.value.content, v.value.deleted, v.time_ms))
            .collect();
        assert_eq!(
            f,
            vec![
                (content(1), false, 0),
                (content(2), false, 1_000),
                (None, true, 2_000)
            ]
        );
        assert!(!all.contains_key("g"), "only the path asked for");
        let early = doc.heads_at(500);
        assert_eq!(doc.values_at("f", Some(&early))[0].content, content(1));
        assert!(doc.values_at("g", Some(&early)).is_empty());
        assert_eq!(doc.versions(None, |p| p == "g")["g"].len(), 1);
    }
}
