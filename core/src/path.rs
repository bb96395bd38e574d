//! Folder-relative paths, validated: everything a peer sends is hostile until it passes here.
//!
//! A valid path is `/`-separated UTF-8, relative, with no empty, `.` or `..` components,
//! no NUL or backslash, no component over 255 bytes, at most 4096 bytes in all, and no
//! reserved name (cairn's own temp files, Windows device names). Whether a path passes
//! through a symlink depends on the rest of the folder and is checked where the folder's
//! tree is derived ([`crate::folder::tree`]).

use std::fmt;

/// Longest path accepted, in bytes.
pub const MAX_PATH_BYTES: usize = 4096;
/// Longest name (one component) accepted, in bytes.
pub const MAX_NAME_BYTES: usize = 255;

/// Why a path was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    #[error("empty path")]
    Empty,
    #[error("absolute path {0:?}")]
    Absolute(String),
    #[error("path {0:?} has a `..` component")]
    Parent(String),
    #[error("path {0:?} has a `.` component")]
    Dot(String),
    #[error("path {0:?} has an empty component")]
    EmptyComponent(String),
    #[error("path {0:?} contains NUL")]
    Nul(String),
    #[error("path {0:?} contains a backslash, which is a separator on Windows")]
    Backslash(String),
    #[error("path of {0} bytes is longer than {MAX_PATH_BYTES}")]
    TooLong(usize),
    #[error("name {0:?} is longer than {MAX_NAME_BYTES} bytes")]
    NameTooLong(String),
    #[error("name {0:?} is reserved")]
    Reserved(String),
    #[error("path {path:?} passes through the symlink {link:?}")]
    ThroughSymlink { path: String, link: String },
}

/// A validated folder-relative path.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RelPath(String);

impl RelPath {
    /// Validates `path`.
    pub fn new(path: &str) -> Result<Self, PathError> {
        validate(path)?;
        Ok(RelPath(path.to_string()))
    }

    /// The path as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The proper ancestors of this path, nearest first: `a/b/c` gives `a/b`, `a`.
    pub fn ancestors(&self) -> impl Iterator<Item = &str> {
        ancestors(&self.0)
    }
}

impl fmt::Debug for RelPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

impl fmt::Display for RelPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The proper ancestors of `path`, nearest first.
pub fn ancestors(path: &str) -> impl Iterator<Item = &str> {
    let mut rest = path;
    std::iter::from_fn(move || {
        let cut = rest.rfind('/')?;
        rest = &rest[..cut];
        Some(rest)
    })
}

/// Checks `path` against every rule in the module doc.
pub fn validate(path: &str) -> Result<(), PathError> {
    let owned = || path.to_string();
    if path.is_empty() {
        return Err(PathError::Empty);
    }
    if path.len() > MAX_PATH_BYTES {
        return Err(PathError::TooLong(path.len()));
    }
    if path.starts_with('/') {
        return Err(PathError::Absolute(owned()));
    }
    if path.contains('\0') {
        return Err(PathError::Nul(owned()));
    }
    if path.contains('\\') {
        return Err(PathError::Backslash(owned()));
    }
    for name in path.split('/') {
        match name {
            "" => return Err(PathError::EmptyComponent(owned())),
            "." => return Err(PathError::Dot(owned())),
            ".." => return Err(PathError::Parent(owned())),
            _ => {}
        }
        if name.len() > MAX_NAME_BYTES {
            return Err(PathError::NameTooLong(name.to_string()));
        }
        if is_reserved_name(name) {
            return Err(PathError::Reserved(name.to_string()));
        }
    }
    Ok(())
}

/// cairn's own temp files and the Windows device names (with any extension).
pub fn is_reserved_name(name: &str) -> bool {
    if crate::scan::is_internal_name(name) {
        return true;
    }
    let stem = name
        .split('.')
        .next()
        .unwrap_or(name)
        .trim_end_matches(' ')
        .to_ascii_uppercase();
    matches!(stem.as_str(), "CON" | "PRN" | "AUX" | "NUL")
        || ((stem.starts_with("COM") || stem.starts_with("LPT"))
            && stem.len() == 4
            && stem.as_bytes()[3].is_ascii_digit())
}

/// The key under which two paths collide on a case-insensitive file system.
pub fn case_key(path: &str) -> String {
    path.to_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(p: &str) -> PathError {
        validate(p).expect_err(p)
    }

    #[test]
    fn ordinary_paths_pass() {
        for p in [
            "a",
            "a/b/c.txt",
            "My Documents/Report 10:30.pdf",
            ".hidden/.x",
            "ünïcode/名前",
        ] {
            assert!(validate(p).is_ok(), "{p}");
        }
    }

    #[test]
    fn absolute_paths_are_rejected() {
        assert!(matches!(err("/etc/passwd"), PathError::Absolute(_)));
    }

    #[test]
    fn parent_components_are_rejected() {
        assert!(matches!(err(".."), PathError::Parent(_)));
        assert!(matches!(err("a/../../etc"), PathError::Parent(_)));
        assert!(matches!(err("a/.."), PathError::Parent(_)));
    }

    #[test]
    fn empty_and_dot_components_are_rejected() {
        assert_eq!(err(""), PathError::Empty);
        assert!(matches!(err("a//b"), PathError::EmptyComponent(_)));
        assert!(matches!(err("a/"), PathError::EmptyComponent(_)));
        assert!(matches!(err("./a"), PathError::Dot(_)));
        assert!(matches!(err("a/./b"), PathError::Dot(_)));
    }

    #[test]
    fn nul_is_rejected() {
        assert!(matches!(err("a\0b"), PathError::Nul(_)));
    }

    #[test]
    fn backslash_is_rejected() {
        assert!(matches!(err("a\\..\\b"), PathError::Backslash(_)));
    }

    #[test]
    fn over_long_names_and_paths_are_rejected() {
        assert!(matches!(err(&"n".repeat(256)), PathError::NameTooLong(_)));
        assert!(validate(&"n".repeat(255)).is_ok());
        let long = vec!["d".repeat(200); 21].join("/");
        assert!(matches!(err(&long), PathError::TooLong(_)));
    }

    #[test]
    fn reserved_names_are_rejected() {
        for p in [
            "CON",
            "dir/nul.txt",
            "aux",
            "COM1",
            "lpt9.log",
            ".cairn-tmp.x.1234",
        ] {
            assert!(matches!(err(p), PathError::Reserved(_)), "{p}");
        }
        for p in ["CONSOLE", "com10", "nullable"] {
            assert!(validate(p).is_ok(), "{p}");
        }
    }

    #[test]
    fn ancestors_are_listed_nearest_first() {
        let p = RelPath::new("a/b/c").unwrap();
        assert_eq!(p.ancestors().collect::<Vec<_>>(), vec!["a/b", "a"]);
        assert_eq!(ancestors("top").count(), 0);
    }

    #[test]
    fn case_keys_collide_for_case_only_differences() {
        assert_eq!(case_key("Docs/README.md"), case_key("docs/readme.md"));
        assert_ne!(case_key("a"), case_key("b"));
    }
}
