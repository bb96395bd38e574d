//! The folder model: metadata as a CRDT, the tree derived from it, and the conflict rules.

pub mod doc;
pub mod entry;
pub mod tree;

pub use doc::{FolderDoc, FolderMessage, LocalChange, PathRange, PeerSync};
pub use entry::{DeviceId, EntryValue};
pub use tree::{Origin, Tree, TreeEntry, TreeOptions, derive_tree};
