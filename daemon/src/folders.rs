//! Folders known to this device: finding the record of a folder root, or adding one.

use std::path::Path;

use cairn_core::ChunkerParams;
use rand::Rng;

use crate::index::{FolderRecord, Index, IndexError};

/// Errors when resolving a folder root.
#[derive(Debug, thiserror::Error)]
pub enum FolderError {
    #[error("{path} is not a directory cairn can use: {source}")]
    BadRoot {
        path: String,
        source: std::io::Error,
    },
    #[error("{0} is not a directory")]
    NotADirectory(String),
    #[error(transparent)]
    Index(#[from] IndexError),
}

/// The index record for the folder at `root`, created with default parameters if new.
pub fn folder_for_root(index: &Index, root: &Path) -> Result<FolderRecord, FolderError> {
    let bad = |source| FolderError::BadRoot {
        path: root.display().to_string(),
        source,
    };
    let root = root.canonicalize().map_err(bad)?;
    if !root.metadata().map_err(bad)?.is_dir() {
        return Err(FolderError::NotADirectory(root.display().to_string()));
    }
    if let Some(folder) = index.folder_by_root(&root)? {
        return Ok(folder);
    }
    let folder = FolderRecord {
        id: new_folder_id(),
        root,
        chunker: ChunkerParams::V1_DEFAULT.to_string(),
    };
    index.put_folder(&folder)?;
    Ok(folder)
}

/// A random folder id in Syncthing's readable shape: `abcde-fghij`.
fn new_folder_id() -> String {
    const ALPHABET: &[u8] = b"abcdefghijkmnpqrstuvwxyz23456789";
    let mut rng = rand::rng();
    let mut part = || -> String {
        (0..5)
            .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char)
            .collect()
    };
    format!("{}-{}", part(), part())
}
