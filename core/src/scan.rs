//! What a scan decides, without touching the disk: whether a file must be read again,
//! which names cairn never indexes, and how a change is reported.

use serde::{Deserialize, Serialize};

use crate::hash::ContentId;

/// Prefix of the temp files cairn writes beside their targets; never indexed or synced.
pub const TEMP_PREFIX: &str = ".cairn-tmp.";

/// Name of the per-directory ignore file (gitignore syntax).
pub const IGNORE_FILE: &str = ".cairnignore";

/// True for names cairn creates for itself and must never index or sync.
pub fn is_internal_name(name: &str) -> bool {
    name.starts_with(TEMP_PREFIX)
}

/// What a path is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EntryKind {
    /// A regular file.
    File,
    /// A directory.
    Dir,
    /// A symbolic link, recorded with its target and never followed.
    Symlink,
}

/// What the file system says about a path, enough to tell whether it changed since.
///
/// `ctime` cannot be set by a user, so an edit that keeps the size and restores the mtime
/// is still seen; `inode` changes when a file is replaced by another.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Stamp {
    /// Size in bytes.
    pub size: u64,
    /// Modification time, nanoseconds since the Unix epoch.
    pub mtime_ns: i64,
    /// Status change time, nanoseconds since the Unix epoch.
    pub ctime_ns: i64,
    /// Inode number.
    pub inode: u64,
    /// Permission bits (st_mode & 0o7777).
    pub mode: u32,
}

/// One path as the index remembers it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IndexedEntry {
    /// File, directory or symlink.
    pub kind: EntryKind,
    /// The stamp seen when the content was last read.
    pub stamp: Stamp,
    /// Content of a file (None for directories and symlinks).
    pub content: Option<ContentId>,
    /// Target of a symlink.
    pub link_target: Option<String>,
}

impl IndexedEntry {
    /// Whether a path observed now as `kind` with `stamp` must be read again.
    ///
    /// Any difference in size, mtime, ctime or inode means the content may have changed.
    pub fn needs_rescan(&self, kind: EntryKind, stamp: &Stamp) -> bool {
        if self.kind != kind {
            return true;
        }
        match kind {
            // A directory has no content; its stamp changes with every entry added.
            EntryKind::Dir => false,
            EntryKind::File | EntryKind::Symlink => {
                let s = &self.stamp;
                s.size != stamp.size
                    || s.mtime_ns != stamp.mtime_ns
                    || s.ctime_ns != stamp.ctime_ns
                    || s.inode != stamp.inode
                    || s.mode != stamp.mode
            }
        }
    }

    /// How `new` (read again after [`IndexedEntry::needs_rescan`]) differs from `self`.
    pub fn change_to(&self, new: &IndexedEntry) -> Option<ChangeKind> {
        let different = self.kind != new.kind
            || self.content != new.content
            || self.link_target != new.link_target
            || (self.kind != EntryKind::Dir && self.stamp.mode != new.stamp.mode);
        different.then_some(ChangeKind::Modified)
    }
}

/// How a path changed between two scans.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ChangeKind {
    /// The path is new.
    Added,
    /// Content, kind, link target or permissions changed.
    Modified,
    /// The path is gone.
    Deleted,
}

/// One change found by a scan.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Change {
    /// Folder-relative path with `/` separators.
    pub path: String,
    /// Added, modified or deleted.
    pub change: ChangeKind,
    /// What the path is now (or was, if deleted).
    pub kind: EntryKind,
    /// The content the path had at the previous scan (what a local edit replaced).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub previous: Option<ContentId>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stamp() -> Stamp {
        Stamp {
            size: 10,
            mtime_ns: 1_000,
            ctime_ns: 2_000,
            inode: 7,
            mode: 0o644,
        }
    }

    fn file() -> IndexedEntry {
        IndexedEntry {
            kind: EntryKind::File,
            stamp: stamp(),
            content: Some(ContentId([1; 32])),
            link_target: None,
        }
    }

    #[test]
    fn an_identical_stamp_skips_the_file() {
        assert!(!file().needs_rescan(EntryKind::File, &stamp()));
    }

    #[test]
    fn a_same_size_edit_with_restored_mtime_is_caught_by_ctime() {
        let s = Stamp {
            ctime_ns: 3_000,
            ..stamp()
        };
        assert!(file().needs_rescan(EntryKind::File, &s));
    }

    #[test]
    fn a_replaced_file_is_caught_by_inode() {
        let s = Stamp {
            inode: 8,
            ..stamp()
        };
        assert!(file().needs_rescan(EntryKind::File, &s));
    }

    #[test]
    fn a_kind_change_is_rescanned() {
        assert!(file().needs_rescan(EntryKind::Symlink, &stamp()));
    }

    #[test]
    fn a_touch_without_content_change_is_not_a_modification() {
        let touched = IndexedEntry {
            stamp: Stamp {
                mtime_ns: 5,
                ..stamp()
            },
            ..file()
        };
        assert_eq!(file().change_to(&touched), None);
        let edited = IndexedEntry {
            content: Some(ContentId([2; 32])),
            ..file()
        };
        assert_eq!(file().change_to(&edited), Some(ChangeKind::Modified));
        let chmod = IndexedEntry {
            stamp: Stamp {
                mode: 0o755,
                ..stamp()
            },
            ..file()
        };
        assert_eq!(file().change_to(&chmod), Some(ChangeKind::Modified));
    }

    #[test]
    fn temp_files_are_internal() {
        assert!(is_internal_name(".cairn-tmp.report.pdf.1a2b"));
        assert!(!is_internal_name("report.pdf"));
        assert!(!is_internal_name(".cairnignore"));
    }
}
