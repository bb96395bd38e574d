//! cairn's temp files inside folders: the name of a pull's temp file, and whether a pull
//! in progress will resume one (the scanner removes the others). Shared by the puller,
//! which writes them, and the scanner, which finds them.

use std::path::{Path, PathBuf};

use cairn_core::scan::TEMP_PREFIX;

use crate::index::Index;

/// The temp file beside `full` for the version tagged `tag`: `.cairn-tmp.<name hash>.<tag>`,
/// 36 bytes whatever the name, so every name the path rules accept (up to 255 bytes) has a
/// temp name that fits.
pub fn temp_path(full: &Path, tag: &str) -> PathBuf {
    let name = full
        .file_name()
        .map(|n| n.as_encoded_bytes())
        .unwrap_or_default();
    let hash = blake3::hash(name).to_hex();
    full.with_file_name(format!("{TEMP_PREFIX}{}.{tag}", &hash[..16]))
}

/// Whether the index records progress of a pull of `path` whose temp file is tagged `tag`
/// (the short id of the version being pulled): that temp file is resumed, not removed.
pub(crate) fn resumes(index: &Index, folder: &str, path: &str, tag: &str) -> bool {
    index
        .pull_progress(folder, path)
        .ok()
        .flatten()
        .is_some_and(|(c, _)| c.short() == tag)
}

/// Whether `tmp`, a temp file the scanner found in the folder at `root`, will be resumed by
/// a pull: a pull in progress in the same directory whose name and version give exactly
/// this temp name ([`temp_path`]).
pub(crate) fn temp_resumes(index: &Index, folder: &str, root: &Path, tmp: &Path) -> bool {
    let Ok(pulls) = index.pulls_in_progress(folder) else {
        return false;
    };
    pulls.iter().any(|(path, content)| {
        let full = root.join(path);
        full.parent() == tmp.parent() && temp_path(&full, &content.short()) == tmp
    })
}
