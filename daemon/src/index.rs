//! The device's local index in redb: folders, what each path looked like when it was last
//! read, the manifests of file contents, and where every chunk can be found on disk.
//!
//! Architecture invariant: every change to a path is one transaction that updates its
//! entry, the manifest reference counts, the chunk locations and the folder totals
//! together, so a crash at any moment leaves an index that agrees with itself.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use cairn_core::folder::{EntryValue, PathRange};
use cairn_core::manifest::PAGE_CHUNKS;
use cairn_core::scan::{EntryKind, IndexedEntry};
use cairn_core::{ChunkId, ChunkRef, ChunkerParams, ContentId, Manifest, Outline};
use redb::{
    Database, MultimapTableDefinition, ReadableDatabase, ReadableMultimapTable, ReadableTable,
    ReadableTableMetadata, TableDefinition,
};
use serde::{Deserialize, Serialize};

/// folder id -> FolderRecord (postcard)
const FOLDERS: TableDefinition<&str, &[u8]> = TableDefinition::new("folders");
/// (folder id, path) -> IndexedEntry (postcard)
const ENTRIES: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("entries");
/// content id -> (paths referring to it, encoded manifest, or the outline of a paged one)
const MANIFESTS: TableDefinition<&[u8; 32], (u64, &[u8])> = TableDefinition::new("manifests");
/// (content id, page) -> encoded page of a paged manifest in MANIFESTS
const MANIFEST_PAGES: TableDefinition<(&[u8; 32], u32), &[u8]> =
    TableDefinition::new("manifest_pages");
/// chunk id -> encoded ChunkLocation, one per place the chunk occurs in a folder's files
const CHUNK_LOCATIONS: MultimapTableDefinition<&[u8; 32], &[u8]> =
    MultimapTableDefinition::new("chunk_locations");
/// chunk id -> encoded ChunkLocation in a kept version (under [`history_holder`]), one
/// per version holding the chunk. Apart from the files' locations: a chunk that 100 kept
/// versions share has 100 of these, and in the same multimap they made every file write
/// of that chunk (a restore, a pull of the current version) update a subtree of ~10 KB
/// per chunk instead of a leaf entry.
const KEPT_LOCATIONS: MultimapTableDefinition<&[u8; 32], &[u8]> =
    MultimapTableDefinition::new("kept_locations");
/// (folder id, chunk id) -> occurrences of the chunk in the folder's current files
const FOLDER_CHUNKS: TableDefinition<(&str, &[u8; 32]), u64> =
    TableDefinition::new("folder_chunks");
/// folder id -> FolderTotals (postcard)
const FOLDER_TOTALS: TableDefinition<&str, &[u8]> = TableDefinition::new("folder_totals");
/// (folder id, shard) -> saved automerge document of that shard
const FOLDER_SHARDS: TableDefinition<(&str, u16), &[u8]> = TableDefinition::new("folder_shards");
/// content id -> encoded manifest (or outline) learnt from a peer, verified before it is
/// stored
const REMOTE_MANIFESTS: TableDefinition<&[u8; 32], &[u8]> =
    TableDefinition::new("remote_manifests");
/// (content id, page) -> encoded page of a paged manifest in REMOTE_MANIFESTS, verified
/// against its outline; a paged manifest's pages arrive one by one as the pull needs them
const REMOTE_PAGES: TableDefinition<(&[u8; 32], u32), &[u8]> =
    TableDefinition::new("remote_manifest_pages");
/// (folder id, path) -> (content id being pulled, chunks already written in order)
const PULL_PROGRESS: TableDefinition<(&str, &str), (&[u8; 32], u64)> =
    TableDefinition::new("pull_progress");
/// (folder id, path, time ns) -> content id of a version kept in the history store
const HISTORY: TableDefinition<(&str, &str, i64), &[u8; 32]> = TableDefinition::new("history");

/// (folder id, path) -> content the path had before a change the scanner committed to the
/// index but the folder document has not recorded yet (empty: none). Written in the same
/// transaction as the change, cleared once the document is saved: a process killed in
/// between records the change on restart instead of forgetting it.
const UNRECORDED: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("unrecorded");
/// (folder, peer id) -> the contents of the folder's versions that peer keeps (sorted
/// 32-byte ids, as it last told us): group history names holders that are offline.
const PEER_KEPT: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("peer_kept");
/// (folder, path) -> a version this device asked for (a restore, a rewind) and not yet
/// received: its content id (32 bytes), then the encoded value it replaced
/// (`cairn_core::node::Action::SaveRequested`), so a restart still undoes it if it cannot
/// come.
const REQUESTED: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("requested");

/// The pseudo-folder under which earlier versions recorded chunk locations of the old
/// history directory (`HOME/history/<content id>`); [`Index::migrate_history_locations`]
/// moves them under [`history_holder`].
pub const HISTORY_FOLDER: &str = "@history";

/// The pseudo-folder under which the chunk locations of `folder`'s kept versions are
/// recorded: the location's path is the content id, its bytes are in the version store
/// (`versions.rs`). A peer of `folder` may be sent these chunks; peers of other folders
/// may not.
pub fn history_holder(folder: &str) -> String {
    format!("{HISTORY_FOLDER}/{folder}")
}

/// Whether a chunk location is one of a kept version (in the version store).
pub fn is_history_holder(holder: &str) -> bool {
    holder
        .strip_prefix(HISTORY_FOLDER)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
}

/// What [`Index::remove_history`] left behind.
#[derive(Debug, PartialEq, Eq)]
pub struct HistoryRemoved {
    pub content: ContentId,
    /// Another kept version of any folder has the same content: its bytes stay.
    pub still_kept: bool,
}

/// Errors of the local index, with what the user can do about them.
#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    #[error(
        "the index {path} is in use by another cairn process (is cairnd running? then use the daemon)"
    )]
    InUse { path: PathBuf },
    #[error("cannot open the index {path}: {source}")]
    Open {
        path: PathBuf,
        source: redb::DatabaseError,
    },
    #[error("index storage error: {0}")]
    Storage(#[from] redb::Error),
    #[error("index record {what} is corrupt: {detail}")]
    Corrupt { what: String, detail: String },
    #[error("folder {0} is not in the index")]
    UnknownFolder(String),
}

impl IndexError {
    fn storage(e: impl Into<redb::Error>) -> Self {
        IndexError::Storage(e.into())
    }
}

macro_rules! storage_from {
    ($($t:ty),*) => {$(
        impl From<$t> for IndexError {
            fn from(e: $t) -> Self {
                IndexError::storage(e)
            }
        }
    )*};
}
storage_from!(
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError
);

type Result<T> = std::result::Result<T, IndexError>;

/// A folder this device indexes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FolderRecord {
    /// Stable id of the folder, shared by all its devices.
    pub id: String,
    /// Absolute path of the folder on this device.
    pub root: PathBuf,
    /// How this folder's files are cut into chunks (text form of [`ChunkerParams`]).
    pub chunker: String,
}

impl FolderRecord {
    /// The folder's chunker parameters.
    pub fn chunker_params(&self) -> Result<ChunkerParams> {
        self.chunker
            .parse()
            .map_err(|e: cairn_core::chunker::ParamsError| IndexError::Corrupt {
                what: format!("folder {}", self.id),
                detail: e.to_string(),
            })
    }

    /// The folder's cut rule, ready to use.
    pub fn chunker(&self) -> Result<cairn_core::Chunker> {
        cairn_core::Chunker::new(self.chunker_params()?).map_err(|e| IndexError::Corrupt {
            what: format!("folder {}", self.id),
            detail: e.to_string(),
        })
    }
}

/// Running totals of a folder's current content, kept up to date by every change.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FolderTotals {
    /// Regular files.
    pub files: u64,
    /// Directories.
    pub dirs: u64,
    /// Symbolic links.
    pub symlinks: u64,
    /// Bytes in regular files.
    pub bytes: u64,
    /// Chunks over all files, counting repeats.
    pub chunks: u64,
    /// Distinct chunks.
    pub unique_chunks: u64,
    /// Bytes of the distinct chunks: what the folder costs to transfer.
    pub unique_bytes: u64,
}

/// One place on disk where a chunk's bytes are.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChunkLocation {
    /// Folder id.
    pub folder: String,
    /// Folder-relative path.
    pub path: String,
    /// Byte offset in the file.
    pub offset: u64,
    /// Length of the chunk.
    pub len: u32,
}

impl ChunkLocation {
    fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(14 + self.folder.len() + self.path.len());
        out.extend_from_slice(&self.offset.to_be_bytes());
        out.extend_from_slice(&self.len.to_be_bytes());
        out.extend_from_slice(&(self.folder.len() as u16).to_be_bytes());
        out.extend_from_slice(self.folder.as_bytes());
        out.extend_from_slice(self.path.as_bytes());
        out
    }

    fn decode(bytes: &[u8]) -> Option<Self> {
        let offset = u64::from_be_bytes(bytes.get(..8)?.try_into().ok()?);
        let len = u32::from_be_bytes(bytes.get(8..12)?.try_into().ok()?);
        let flen = u16::from_be_bytes(bytes.get(12..14)?.try_into().ok()?) as usize;
        let folder = std::str::from_utf8(bytes.get(14..14 + flen)?)
            .ok()?
            .to_string();
        let path = std::str::from_utf8(bytes.get(14 + flen..)?)
            .ok()?
            .to_string();
        Some(ChunkLocation {
            folder,
            path,
            offset,
            len,
        })
    }
}

/// Where each chunk of `manifest` lies in the file `path` of `folder`.
fn locations_in<'m>(
    folder: &str,
    path: &str,
    manifest: &'m Manifest,
) -> impl Iterator<Item = (&'m cairn_core::ChunkRef, ChunkLocation)> + 'm {
    let (folder, path) = (folder.to_string(), path.to_string());
    manifest
        .chunks
        .iter()
        .zip(manifest.offsets())
        .map(move |(c, offset)| {
            let loc = ChunkLocation {
                folder: folder.clone(),
                path: path.clone(),
                offset,
                len: c.len,
            };
            (c, loc)
        })
}

/// A manifest as the index stores it: whole, or (more than [`PAGE_CHUNKS`] chunks) its
/// outline, with the pages in a table of their own, so that no reader or writer holds
/// more than one page of a large manifest at a time.
#[derive(Clone, Debug)]
pub enum Stored {
    Whole(Manifest),
    Paged(Outline),
}

impl Stored {
    fn decode(content: &ContentId, bytes: &[u8]) -> Result<Stored> {
        let stored = match bytes.first() {
            Some(2) => Outline::decode(bytes).map(Stored::Paged),
            _ => Manifest::decode(bytes).map(Stored::Whole),
        };
        stored.map_err(|e| IndexError::Corrupt {
            what: format!("manifest {content}"),
            detail: e.to_string(),
        })
    }

    /// Chunks in the content.
    pub fn count(&self) -> u64 {
        match self {
            Stored::Whole(m) => m.chunks.len() as u64,
            Stored::Paged(o) => o.count,
        }
    }
}

/// Encodes `manifest` for a manifests table; a paged one's pages go to `pages` and its
/// outline is returned.
fn store_manifest(
    pages: &mut redb::Table<(&'static [u8; 32], u32), &'static [u8]>,
    content: &ContentId,
    manifest: &Manifest,
) -> Result<Vec<u8>> {
    if !manifest.is_paged() {
        return Ok(manifest.encode());
    }
    for (p, chunks) in manifest.chunks.chunks(PAGE_CHUNKS).enumerate() {
        let page = Manifest {
            chunks: chunks.to_vec(),
        };
        pages.insert((content.as_bytes(), p as u32), page.encode().as_slice())?;
    }
    Ok(Outline::of(manifest).encode())
}

fn read_page(
    pages: &impl ReadableTable<(&'static [u8; 32], u32), &'static [u8]>,
    content: &ContentId,
    page: usize,
) -> Result<Option<Manifest>> {
    let Some(v) = pages.get((content.as_bytes(), page as u32))? else {
        return Ok(None);
    };
    Manifest::decode(v.value())
        .map(Some)
        .map_err(|e| IndexError::Corrupt {
            what: format!("page {page} of manifest {content}"),
            detail: e.to_string(),
        })
}

/// Calls `f` with each page of `stored` (a whole manifest is one page) and the offset of
/// its first chunk in the content; stops early when `f` says so. A missing page is an error.
fn each_page(
    pages: &impl ReadableTable<(&'static [u8; 32], u32), &'static [u8]>,
    content: &ContentId,
    stored: &Stored,
    mut f: impl FnMut(&Manifest, u64) -> Result<bool>,
) -> Result<()> {
    match stored {
        Stored::Whole(m) => {
            f(m, 0)?;
        }
        Stored::Paged(o) => {
            let mut offset = 0;
            for p in 0..o.pages() {
                let page = read_page(pages, content, p)?.ok_or_else(|| IndexError::Corrupt {
                    what: format!("manifest {content}"),
                    detail: format!("page {p} is missing"),
                })?;
                if !f(&page, offset)? {
                    break;
                }
                offset += page.size();
            }
        }
    }
    Ok(())
}

/// Commits `txn` without an fsync: a crash may lose it, never corrupt the index.
fn not_durable(txn: &mut redb::WriteTransaction) -> Result<()> {
    txn.set_durability(redb::Durability::None)
        .map_err(|e| IndexError::Corrupt {
            what: "durability".into(),
            detail: e.to_string(),
        })
}

/// A manifests-pages table, read-only.
type PagesRead = redb::ReadOnlyTable<(&'static [u8; 32], u32), &'static [u8]>;

/// Where the manifest of `content` is: this device's own (with its pages table), else one
/// learnt from a peer.
fn locate(txn: &redb::ReadTransaction, content: &ContentId) -> Result<Option<(Stored, PagesRead)>> {
    if let Some(v) = txn.open_table(MANIFESTS)?.get(content.as_bytes())? {
        let stored = Stored::decode(content, v.value().1)?;
        return Ok(Some((stored, txn.open_table(MANIFEST_PAGES)?)));
    }
    match txn.open_table(REMOTE_MANIFESTS)?.get(content.as_bytes())? {
        Some(v) => {
            let stored = Stored::decode(content, v.value())?;
            Ok(Some((stored, txn.open_table(REMOTE_PAGES)?)))
        }
        None => Ok(None),
    }
}

fn remove_pages(
    pages: &mut redb::Table<(&'static [u8; 32], u32), &'static [u8]>,
    content: &ContentId,
    stored: &Stored,
) -> Result<()> {
    if let Stored::Paged(o) = stored {
        for p in 0..o.pages() {
            pages.remove((content.as_bytes(), p as u32))?;
        }
    }
    Ok(())
}

/// One change to a path, applied by [`Index::apply`].
#[derive(Clone, Debug)]
pub enum Update {
    /// The path now is `entry`; for a file with new content, `manifest` is its content.
    Put {
        path: String,
        entry: IndexedEntry,
        manifest: Option<Manifest>,
    },
    /// The path is gone.
    Remove { path: String },
    /// The file or directory at `from` is now at `path` as `entry` (renamed, same
    /// content): its index entry and chunk locations move, and nothing is counted twice
    /// or released in between. Anything else at `path` is replaced. When `from` is not
    /// indexed with that content, this is a put of `entry` at `path` (the content's
    /// manifest must be known) and a removal of `from`.
    Move {
        from: String,
        path: String,
        entry: IndexedEntry,
    },
}

/// The device's index database.
pub struct Index {
    db: Database,
    path: PathBuf,
}

fn decode<T: for<'de> Deserialize<'de>>(bytes: &[u8], what: impl FnOnce() -> String) -> Result<T> {
    postcard::from_bytes(bytes).map_err(|e| IndexError::Corrupt {
        what: what(),
        detail: e.to_string(),
    })
}

fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    // Serialising our own plain structs into a Vec cannot fail.
    postcard::to_allocvec(value).unwrap_or_default()
}

/// redb's page cache. Its default (1 GiB) would grow with the index (~1.5 KiB per file
/// of a 100,000-file folder) and dominate the daemon's memory; the OS page cache still
/// holds the file, so a miss here costs a copy, not a disk read.
const CACHE_BYTES: usize = 32 << 20;

impl Index {
    /// Opens (or creates) the index at `path`.
    pub fn open(path: &Path) -> Result<Self> {
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(|e| IndexError::Open {
                path: path.to_path_buf(),
                source: redb::DatabaseError::Storage(redb::StorageError::Io(e)),
            })?;
        }
        let db = Database::builder()
            .set_cache_size(CACHE_BYTES)
            .create(path)
            .map_err(|e| match e {
                redb::DatabaseError::DatabaseAlreadyOpen => IndexError::InUse { path: path.into() },
                other => IndexError::Open {
                    path: path.into(),
                    source: other,
                },
            })?;
        let txn = db.begin_write()?;
        txn.open_table(FOLDERS)?;
        txn.open_table(ENTRIES)?;
        txn.open_table(MANIFESTS)?;
        txn.open_table(MANIFEST_PAGES)?;
        txn.open_table(REMOTE_PAGES)?;
        txn.open_multimap_table(CHUNK_LOCATIONS)?;
        txn.open_multimap_table(KEPT_LOCATIONS)?;
        txn.open_table(FOLDER_CHUNKS)?;
        txn.open_table(FOLDER_TOTALS)?;
        txn.open_table(FOLDER_SHARDS)?;
        txn.open_table(REMOTE_MANIFESTS)?;
        txn.open_table(PULL_PROGRESS)?;
        txn.open_table(HISTORY)?;
        txn.open_table(UNRECORDED)?;
        txn.open_table(PEER_KEPT)?;
        txn.open_table(REQUESTED)?;
        txn.commit()?;
        Ok(Index {
            db,
            path: path.to_path_buf(),
        })
    }

    /// Where the database file is.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// All folders in the index.
    pub fn folders(&self) -> Result<Vec<FolderRecord>> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(FOLDERS)?;
        let mut out = Vec::new();
        for row in table.iter()? {
            let (id, value) = row?;
            out.push(decode(value.value(), || format!("folder {}", id.value()))?);
        }
        Ok(out)
    }

    /// The folder whose root is `root`, if indexed.
    pub fn folder_by_root(&self, root: &Path) -> Result<Option<FolderRecord>> {
        Ok(self.folders()?.into_iter().find(|f| f.root == root))
    }

    /// Adds a folder (or replaces the record with the same id).
    pub fn put_folder(&self, folder: &FolderRecord) -> Result<()> {
        let txn = self.db.begin_write()?;
        txn.open_table(FOLDERS)?
            .insert(folder.id.as_str(), encode(folder).as_slice())?;
        txn.commit()?;
        Ok(())
    }

    /// Every indexed path of `folder` with its entry.
    pub fn entries(&self, folder: &str) -> Result<HashMap<String, IndexedEntry>> {
        self.entries_in(folder, &PathRange::default())
    }

    /// The indexed paths of `folder` in `range` with their entries, read into the map
    /// directly (a list first held every entry twice).
    pub fn entries_in(
        &self,
        folder: &str,
        range: &PathRange,
    ) -> Result<HashMap<String, IndexedEntry>> {
        let mut out = HashMap::new();
        self.each_entry_in(folder, range, |path, bytes| {
            let entry = decode(bytes, || format!("entry {folder}/{path}"))?;
            out.insert(path.to_string(), entry);
            Ok(())
        })?;
        Ok(out)
    }

    /// Calls `row` with each indexed path of `folder` in `range` and its encoded entry, in
    /// order, in one read transaction.
    fn each_entry_in(
        &self,
        folder: &str,
        range: &PathRange,
        mut row: impl FnMut(&str, &[u8]) -> Result<()>,
    ) -> Result<()> {
        let txn = self.db.begin_read()?;
        let t = txn.open_table(ENTRIES)?;
        let from = range.from.as_deref().unwrap_or("");
        for item in t.range((folder, from)..)? {
            let (k, v) = item?;
            let (f, path) = k.value();
            if f != folder || !range.contains(path) {
                break;
            }
            row(path, v.value())?;
        }
        Ok(())
    }

    /// Every `every`-th indexed path of `folder`, in order: the bounds of ranges of about
    /// `every` paths (keys only, nothing held but the bounds).
    pub fn path_bounds(&self, folder: &str, every: usize) -> Result<Vec<String>> {
        let txn = self.db.begin_read()?;
        let t = txn.open_table(ENTRIES)?;
        let mut out = Vec::new();
        for (i, item) in t.range((folder, "")..)?.enumerate() {
            let (k, _) = item?;
            let (f, path) = k.value();
            if f != folder {
                break;
            }
            if i > 0 && i % every.max(1) == 0 {
                out.push(path.to_string());
            }
        }
        Ok(out)
    }

    /// The entries of `folder` at `paths` (those that have one), in one read.
    pub fn entries_at(
        &self,
        folder: &str,
        paths: &std::collections::BTreeSet<String>,
    ) -> Result<HashMap<String, IndexedEntry>> {
        let txn = self.db.begin_read()?;
        let t = txn.open_table(ENTRIES)?;
        let mut out = HashMap::new();
        for path in paths {
            if let Some(v) = t.get((folder, path.as_str()))? {
                let entry = decode(v.value(), || format!("entry {folder}/{path}"))?;
                out.insert(path.clone(), entry);
            }
        }
        Ok(out)
    }

    /// The entries of `folder` at or under any of `dirs` (folder-relative; `""` is the
    /// whole folder), read by key range, not by loading the folder.
    pub fn entries_under(
        &self,
        folder: &str,
        dirs: &std::collections::BTreeSet<String>,
    ) -> Result<HashMap<String, IndexedEntry>> {
        if dirs.contains("") {
            return self.entries(folder);
        }
        let txn = self.db.begin_read()?;
        let t = txn.open_table(ENTRIES)?;
        let mut out = HashMap::new();
        for dir in dirs {
            // `dir` itself, then everything from `dir/` up to `dir0` ('0' follows '/').
            let below = format!("{dir}/");
            let after = format!("{dir}0");
            let exact = t.get((folder, dir.as_str()))?.map(|v| v.value().to_vec());
            if let Some(bytes) = exact {
                out.insert(
                    dir.clone(),
                    decode(&bytes, || format!("entry {folder}/{dir}"))?,
                );
            }
            for item in t.range((folder, below.as_str())..(folder, after.as_str()))? {
                let (k, v) = item?;
                let path = k.value().1.to_string();
                let entry = decode(v.value(), || format!("entry {folder}/{path}"))?;
                out.insert(path, entry);
            }
        }
        Ok(out)
    }

    /// The paths of `folder` in `range` that are not in `except` (keys only: a window of
    /// a pass over a large folder asks which local paths its scope missed).
    pub fn paths_in(
        &self,
        folder: &str,
        range: &PathRange,
        except: &std::collections::BTreeSet<String>,
    ) -> Result<Vec<String>> {
        let mut out = Vec::new();
        self.each_entry_in(folder, range, |path, _| {
            if !except.contains(path) {
                out.push(path.to_string());
            }
            Ok(())
        })?;
        Ok(out)
    }

    /// Every row of a `(folder, path)`-keyed table for `folder`, mapped by `row`.
    fn rows_of<V: redb::Value + 'static, T>(
        &self,
        table: TableDefinition<(&str, &str), V>,
        folder: &str,
        mut row: impl FnMut(&str, V::SelfType<'_>) -> Result<T>,
    ) -> Result<Vec<T>> {
        let txn = self.db.begin_read()?;
        let t = txn.open_table(table)?;
        let mut out = Vec::new();
        for item in t.range((folder, "")..)? {
            let (k, v) = item?;
            let (f, path) = k.value();
            if f != folder {
                break;
            }
            out.push(row(path, v.value())?);
        }
        Ok(out)
    }

    /// The entry of one path.
    pub fn entry(&self, folder: &str, path: &str) -> Result<Option<IndexedEntry>> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(ENTRIES)?;
        match table.get((folder, path))? {
            Some(v) => Ok(Some(decode(v.value(), || {
                format!("entry {folder}/{path}")
            })?)),
            None => Ok(None),
        }
    }

    /// The manifest of a content, if some indexed file has it.
    pub fn manifest(&self, content: &ContentId) -> Result<Option<Manifest>> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(MANIFESTS)?;
        let Some(v) = table.get(content.as_bytes())? else {
            return Ok(None);
        };
        let stored = Stored::decode(content, v.value().1)?;
        let mut chunks = Vec::new();
        each_page(
            &txn.open_table(MANIFEST_PAGES)?,
            content,
            &stored,
            |m, _| {
                chunks.extend_from_slice(&m.chunks);
                Ok(true)
            },
        )?;
        Ok(Some(Manifest { chunks }))
    }

    /// Every place on this device where `chunk` is known to be.
    pub fn chunk_locations(&self, chunk: &ChunkId) -> Result<Vec<ChunkLocation>> {
        let mut out = Vec::new();
        self.find_chunk(chunk, |loc| {
            out.push(loc);
            None::<()>
        })?;
        Ok(out)
    }

    /// The first `find` answer for the places holding `chunk`, visited in the table's
    /// order and no further: a chunk every kept version of a file shares has a place per
    /// version, and reading them all for each chunk served or copied made a 256 MiB
    /// file with 100 kept versions slower to restore than to sync.
    pub fn find_chunk<T>(
        &self,
        chunk: &ChunkId,
        mut find: impl FnMut(ChunkLocation) -> Option<T>,
    ) -> Result<Option<T>> {
        let txn = self.db.begin_read()?;
        // The folders' files first, then kept versions.
        for def in [CHUNK_LOCATIONS, KEPT_LOCATIONS] {
            let table = txn.open_multimap_table(def)?;
            for v in table.get(chunk.as_bytes())? {
                let v = v?;
                let loc = ChunkLocation::decode(v.value()).ok_or_else(|| IndexError::Corrupt {
                    what: format!("location of chunk {chunk}"),
                    detail: "undecodable".into(),
                })?;
                if let Some(found) = find(loc) {
                    return Ok(Some(found));
                }
            }
        }
        Ok(None)
    }

    /// Whether this device has every chunk of `content` (in a file or in history). When
    /// the index cannot tell (a read fails), true: the caller keeps waiting for the
    /// version rather than dropping it.
    pub fn holds(&self, content: &ContentId) -> bool {
        let mut all = true;
        let known = self.each_page(content, |m, _| {
            all = m
                .chunks
                .iter()
                .all(|c| self.has_chunk(&c.id).unwrap_or(true));
            all
        });
        match known {
            Ok(known) => known && all,
            Err(_) => true,
        }
    }

    /// The running totals of a folder.
    pub fn totals(&self, folder: &str) -> Result<FolderTotals> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(FOLDER_TOTALS)?;
        match table.get(folder)? {
            Some(v) => decode(v.value(), || format!("totals of {folder}")),
            None => Ok(FolderTotals::default()),
        }
    }

    /// Makes every earlier non-durable commit durable.
    pub fn flush(&self) -> Result<()> {
        let txn = self.db.begin_write()?;
        txn.commit()?;
        Ok(())
    }

    /// The saved shards of a folder's document, or None if it has none yet.
    pub fn folder_shards(&self, folder: &str) -> Result<Option<Vec<Vec<u8>>>> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(FOLDER_SHARDS)?;
        let mut out = Vec::new();
        for row in table.range((folder, 0u16)..=(folder, u16::MAX))? {
            let (k, v) = row?;
            if k.value().1 as usize != out.len() {
                return Err(IndexError::Corrupt {
                    what: format!("shards of {folder}"),
                    detail: "gap".into(),
                });
            }
            out.push(v.value().to_vec());
        }
        Ok((!out.is_empty()).then_some(out))
    }

    /// Stores saved shards of a folder's document.
    pub fn put_folder_shards(&self, folder: &str, shards: &[(u16, Vec<u8>)]) -> Result<()> {
        self.put_folder_shards_recording(folder, shards, &[])
    }

    /// Stores saved shards of a folder's document that record the scan changes of `paths`,
    /// and forgets those as unrecorded, in one transaction: either the document has them
    /// or they stay to be recorded again.
    pub fn put_folder_shards_recording(
        &self,
        folder: &str,
        shards: &[(u16, Vec<u8>)],
        paths: &[String],
    ) -> Result<()> {
        let txn = self.db.begin_write()?;
        {
            let mut t = txn.open_table(FOLDER_SHARDS)?;
            for (i, bytes) in shards {
                t.insert((folder, *i), bytes.as_slice())?;
            }
            let mut u = txn.open_table(UNRECORDED)?;
            for p in paths {
                u.remove((folder, p.as_str()))?;
            }
        }
        txn.commit()?;
        Ok(())
    }

    /// A manifest this device knows, as stored: from its own files, or verified from a
    /// peer (a paged one's outline).
    pub fn stored(&self, content: &ContentId) -> Result<Option<Stored>> {
        let txn = self.db.begin_read()?;
        Ok(locate(&txn, content)?.map(|(stored, _)| stored))
    }

    /// Whether this device knows the manifest of `content` (a paged one's outline is
    /// enough: its pages come as the pull needs them). Nothing is decoded.
    pub fn has_manifest(&self, content: &ContentId) -> Result<bool> {
        let txn = self.db.begin_read()?;
        Ok(txn
            .open_table(MANIFESTS)?
            .get(content.as_bytes())?
            .is_some()
            || txn
                .open_table(REMOTE_MANIFESTS)?
                .get(content.as_bytes())?
                .is_some())
    }

    /// Page `page` of the paged manifest of `content`, if this device has it.
    pub fn page(&self, content: &ContentId, page: usize) -> Result<Option<Manifest>> {
        let txn = self.db.begin_read()?;
        match locate(&txn, content)? {
            Some((_, pages)) => read_page(&pages, content, page),
            None => Ok(None),
        }
    }

    /// Calls `f` with each page of the manifest of `content` (a whole one is one page) and
    /// the offset of its first chunk, holding one page at a time; false when this device
    /// does not have all of it.
    pub fn each_page(
        &self,
        content: &ContentId,
        mut f: impl FnMut(&Manifest, u64) -> bool,
    ) -> Result<bool> {
        let txn = self.db.begin_read()?;
        let Some((stored, pages)) = locate(&txn, content)? else {
            return Ok(false);
        };
        match each_page(&pages, content, &stored, |m, at| Ok(f(m, at))) {
            Ok(()) => Ok(true),
            Err(IndexError::Corrupt { .. }) if matches!(stored, Stored::Paged(_)) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// A manifest this device knows, whole (a paged one assembled from all its pages;
    /// for local work on files this device holds, never for what a peer sent).
    pub fn any_manifest(&self, content: &ContentId) -> Result<Option<Manifest>> {
        let mut chunks = Vec::new();
        let complete = self.each_page(content, |m, _| {
            chunks.extend_from_slice(&m.chunks);
            true
        })?;
        Ok(complete.then_some(Manifest { chunks }))
    }

    /// The size of `content` in bytes, if this device knows all of its manifest.
    pub fn content_size(&self, content: &ContentId) -> Result<Option<u64>> {
        let mut size = 0;
        let complete = self.each_page(content, |m, _| {
            size += m.size();
            true
        })?;
        Ok(complete.then_some(size))
    }

    /// The first chunk of `content`, if this device knows its manifest.
    pub fn first_chunk(&self, content: &ContentId) -> Result<Option<ChunkRef>> {
        let mut first = None;
        self.each_page(content, |m, _| {
            first = m.chunks.first().copied();
            false
        })?;
        Ok(first)
    }

    /// Stores page `page` of a paged manifest learnt from a peer; the caller has verified
    /// it against the stored outline.
    pub fn put_remote_page(
        &self,
        content: &ContentId,
        page: usize,
        chunks: &Manifest,
    ) -> Result<()> {
        let mut txn = self.db.begin_write()?;
        not_durable(&mut txn)?;
        txn.open_table(REMOTE_PAGES)?.insert(
            (content.as_bytes(), page as u32),
            chunks.encode().as_slice(),
        )?;
        txn.commit()?;
        Ok(())
    }

    /// Stores manifests learnt from peers in one transaction, each verified against its
    /// content id by the caller: whole, or a paged one's outline (its pages follow with
    /// [`Index::put_remote_page`]).
    pub fn put_remote_manifests(&self, manifests: &[(ContentId, Stored)]) -> Result<()> {
        if manifests.is_empty() {
            return Ok(());
        }
        let txn = self.db.begin_write()?;
        {
            let mut t = txn.open_table(REMOTE_MANIFESTS)?;
            let mut pages = txn.open_table(REMOTE_PAGES)?;
            for (content, stored) in manifests {
                let bytes = match stored {
                    Stored::Whole(m) => store_manifest(&mut pages, content, m)?,
                    Stored::Paged(o) => o.encode(),
                };
                t.insert(content.as_bytes(), bytes.as_slice())?;
            }
        }
        txn.commit()?;
        Ok(())
    }

    /// Removes the manifests learnt from peers that nothing needs any more: every one not
    /// of a version kept in history. Called when every folder is in sync (each file then
    /// has its own manifest), so a peer cannot grow the index with manifests of versions
    /// that came and went. Removes at most `limit` in one transaction (a redb
    /// transaction holds what it changes until it commits, and a first sync of 1,000,000
    /// files leaves as many manifests); returns how many it removed and whether none is
    /// left.
    pub fn prune_remote_manifests(&self, limit: usize) -> Result<(usize, bool)> {
        let txn = self.db.begin_write()?;
        let (removed, done) = {
            let kept: std::collections::HashSet<[u8; 32]> = txn
                .open_table(HISTORY)?
                .iter()?
                .map(|r| r.map(|(_, v)| *v.value()))
                .collect::<std::result::Result<_, _>>()?;
            let mut t = txn.open_table(REMOTE_MANIFESTS)?;
            let mut pages = txn.open_table(REMOTE_PAGES)?;
            let stale: Vec<[u8; 32]> = t
                .iter()?
                .filter_map(|r| r.ok().map(|(k, _)| *k.value()))
                .filter(|k| !kept.contains(k))
                .take(limit)
                .collect();
            let done = stale.len() < limit;
            for k in &stale {
                let content = ContentId(*k);
                let stored = t
                    .remove(k)?
                    .map(|v| Stored::decode(&content, v.value()))
                    .transpose()?;
                if let Some(stored) = stored {
                    remove_pages(&mut pages, &content, &stored)?;
                }
            }
            // Pages whose outline is gone (a kill between the two writes), once the
            // outlines are.
            if done {
                let orphans: Vec<([u8; 32], u32)> = pages
                    .iter()?
                    .filter_map(|r| r.ok().map(|(k, _)| (*k.value().0, k.value().1)))
                    .filter(|(c, _)| !kept.contains(c))
                    .take(limit)
                    .collect();
                for (c, p) in &orphans {
                    pages.remove((c, *p))?;
                }
            }
            (stale.len(), done)
        };
        txn.commit()?;
        Ok((removed, done))
    }

    /// Manifests learnt from peers, stored now.
    pub fn remote_manifest_count(&self) -> Result<u64> {
        let txn = self.db.begin_read()?;
        Ok(txn.open_table(REMOTE_MANIFESTS)?.len()?)
    }

    /// Forgets a folder: its entries (releasing their manifests and chunk locations), its
    /// saved document, totals, pulls in progress and unrecorded changes. Kept versions stay
    /// in history.
    pub fn remove_folder(&self, folder: &str) -> Result<()> {
        let updates: Vec<Update> = self
            .entries(folder)?
            .into_keys()
            .map(|path| Update::Remove { path })
            .collect();
        self.apply(folder, &updates)?;
        let txn = self.db.begin_write()?;
        {
            txn.open_table(FOLDERS)?.remove(folder)?;
            txn.open_table(FOLDER_TOTALS)?.remove(folder)?;
            txn.open_table(FOLDER_SHARDS)?
                .retain(|(f, _), _| f != folder)?;
            txn.open_table(PULL_PROGRESS)?
                .retain(|(f, _), _| f != folder)?;
            txn.open_table(UNRECORDED)?
                .retain(|(f, _), _| f != folder)?;
            txn.open_table(ENTRIES)?.retain(|(f, _), _| f != folder)?;
            txn.open_table(FOLDER_CHUNKS)?
                .retain(|(f, _), _| f != folder)?;
            txn.open_table(PEER_KEPT)?.retain(|(f, _), _| f != folder)?;
            txn.open_table(REQUESTED)?.retain(|(f, _), _| f != folder)?;
        }
        txn.commit()?;
        Ok(())
    }

    /// Whether any local file or the history store holds `chunk`.
    pub fn has_chunk(&self, chunk: &ChunkId) -> Result<bool> {
        Ok(self.find_chunk(chunk, |_| Some(()))?.is_some())
    }

    /// Progress of a pull into a temp file: the content and how many chunks are written.
    pub fn pull_progress(&self, folder: &str, path: &str) -> Result<Option<(ContentId, u64)>> {
        let txn = self.db.begin_read()?;
        let t = txn.open_table(PULL_PROGRESS)?;
        Ok(t.get((folder, path))?.map(|v| {
            let (c, n) = v.value();
            (ContentId(*c), n)
        }))
    }

    /// Every pull of `folder` with recorded progress: (path, content being pulled).
    pub fn pulls_in_progress(&self, folder: &str) -> Result<Vec<(String, ContentId)>> {
        self.rows_of(PULL_PROGRESS, folder, |path, (content, _)| {
            Ok((path.to_string(), ContentId(*content)))
        })
    }

    /// Records (Some) or clears (None) the progress of a pull.
    pub fn set_pull_progress(
        &self,
        folder: &str,
        path: &str,
        progress: Option<(ContentId, u64)>,
    ) -> Result<()> {
        let txn = self.db.begin_write()?;
        {
            let mut t = txn.open_table(PULL_PROGRESS)?;
            match progress {
                Some((c, n)) => {
                    t.insert((folder, path), (c.as_bytes(), n))?;
                }
                None => {
                    t.remove((folder, path))?;
                }
            }
        }
        txn.commit()?;
        Ok(())
    }

    /// Records that the version `content` of `path` was kept in the history store now,
    /// keeps its manifest, and makes its chunks available for dedup and for peers.
    pub fn add_history(
        &self,
        folder: &str,
        path: &str,
        content: &ContentId,
        manifest: &Manifest,
    ) -> Result<()> {
        self.add_history_many(folder, [(path, content, manifest)])
    }

    /// [`Self::add_history`] for many versions in one durable transaction.
    pub fn add_history_many<'a>(
        &self,
        folder: &str,
        kept: impl IntoIterator<Item = (&'a str, &'a ContentId, &'a Manifest)>,
    ) -> Result<()> {
        let time_ns = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as i64);
        let txn = self.db.begin_write()?;
        {
            let mut history = txn.open_table(HISTORY)?;
            let mut pages = txn.open_table(REMOTE_PAGES)?;
            let mut manifests = txn.open_table(REMOTE_MANIFESTS)?;
            let mut locs = txn.open_multimap_table(KEPT_LOCATIONS)?;
            for (path, content, manifest) in kept {
                history.insert((folder, path, time_ns), content.as_bytes())?;
                // The folder's own manifest goes when no path holds that content any
                // more; a kept version needs its manifest for as long as it is kept
                // (size, serving).
                let bytes = store_manifest(&mut pages, content, manifest)?;
                manifests.insert(content.as_bytes(), bytes.as_slice())?;
                for (c, loc) in locations_in(&history_holder(folder), &content.to_hex(), manifest) {
                    locs.insert(c.id.as_bytes(), loc.encode().as_slice())?;
                }
            }
        }
        txn.commit()?;
        Ok(())
    }

    /// Every kept version of every folder: (folder, path, time ns, content).
    pub fn all_history(&self) -> Result<Vec<(String, String, i64, ContentId)>> {
        let txn = self.db.begin_read()?;
        let t = txn.open_table(HISTORY)?;
        let mut out = Vec::new();
        for row in t.iter()? {
            let (k, v) = row?;
            let (f, path, time) = k.value();
            out.push((f.to_string(), path.to_string(), time, ContentId(*v.value())));
        }
        Ok(out)
    }

    /// Forgets the kept version of `path` at `time_ns`. When no other kept version of the
    /// folder has its content, its chunk locations go too (peers of the folder are no
    /// longer sent them); the caller drops its bytes from the version store when no kept
    /// version of any folder has that content (`still_kept`). None: no such row.
    pub fn remove_history(
        &self,
        folder: &str,
        path: &str,
        time_ns: i64,
    ) -> Result<Option<HistoryRemoved>> {
        let manifest_of = |c: &ContentId| self.any_manifest(c);
        let txn = self.db.begin_write()?;
        let removed = {
            let mut t = txn.open_table(HISTORY)?;
            let Some(content) = t
                .remove((folder, path, time_ns))?
                .map(|v| ContentId(*v.value()))
            else {
                return Ok(None);
            };
            let (mut in_folder, mut anywhere) = (false, false);
            for row in t.iter()? {
                let (k, v) = row?;
                if *v.value() == content.0 {
                    anywhere = true;
                    if k.value().0 == folder {
                        in_folder = true;
                        break;
                    }
                }
            }
            if !in_folder && let Some(m) = manifest_of(&content)? {
                let mut locs = txn.open_multimap_table(KEPT_LOCATIONS)?;
                for (c, loc) in locations_in(&history_holder(folder), &content.to_hex(), &m) {
                    locs.remove(c.id.as_bytes(), loc.encode().as_slice())?;
                }
            }
            HistoryRemoved {
                content,
                still_kept: anywhere,
            }
        };
        txn.commit()?;
        Ok(Some(removed))
    }

    /// Moves the chunk locations of kept versions recorded by earlier versions under the
    /// one `@history` pseudo-folder to the folder of each kept version, and those recorded
    /// among the files' locations to [`KEPT_LOCATIONS`]. Idempotent, and one transaction,
    /// committed only when something moved (it runs at every start).
    pub fn migrate_history_locations(&self) -> Result<usize> {
        // The old layout recorded one set of locations per content, whichever folders
        // kept it: each of those folders gets its own.
        let mut folders_of: HashMap<ContentId, Vec<String>> = HashMap::new();
        for (folder, _, _, content) in self.all_history()? {
            folders_of.entry(content).or_default().push(folder);
        }
        let mut moved = 0;
        let txn = self.db.begin_write()?;
        {
            let mut locs = txn.open_multimap_table(CHUNK_LOCATIONS)?;
            let mut kept = txn.open_multimap_table(KEPT_LOCATIONS)?;
            for (content, folders) in &folders_of {
                // Each set of locations moved in one transaction, so its first chunk's
                // place says whether it still has to: the whole manifest is read (and
                // every place touched) only then, not for every kept version at every
                // start.
                let Some(first) = self.first_chunk(content)? else {
                    continue;
                };
                let hex = content.to_hex();
                let first_place = |holder: &str| {
                    ChunkLocation {
                        folder: holder.to_string(),
                        path: hex.clone(),
                        offset: 0,
                        len: first.len,
                    }
                    .encode()
                };
                let old = first_place(HISTORY_FOLDER);
                // Recorded among the files' locations by the releases before
                // KEPT_LOCATIONS.
                let mut holders: Vec<(String, Vec<u8>, bool)> = folders
                    .iter()
                    .map(|f| {
                        let holder = history_holder(f);
                        let place = first_place(&holder);
                        (holder, place, false)
                    })
                    .collect();
                let mut in_old = false;
                for v in locs.get(first.id.as_bytes())? {
                    let v = v?;
                    in_old |= v.value() == old.as_slice();
                    for (_, place, among_files) in &mut holders {
                        *among_files |= v.value() == place.as_slice();
                    }
                }
                if !in_old && holders.iter().all(|(_, _, among)| !among) {
                    continue;
                }
                let Some(m) = self.any_manifest(content)? else {
                    continue;
                };
                if in_old {
                    for (c, loc) in locations_in(HISTORY_FOLDER, &hex, &m) {
                        if locs.remove(c.id.as_bytes(), loc.encode().as_slice())? {
                            moved += 1;
                        }
                    }
                }
                for (holder, _, among_files) in &holders {
                    if !in_old && !among_files {
                        continue;
                    }
                    for (c, loc) in locations_in(holder, &hex, &m) {
                        let value = loc.encode();
                        if locs.remove(c.id.as_bytes(), value.as_slice())? {
                            moved += 1;
                        }
                        kept.insert(c.id.as_bytes(), value.as_slice())?;
                    }
                }
            }
        }
        if moved > 0 {
            txn.commit()?;
        } else {
            txn.abort()?;
        }
        Ok(moved)
    }

    /// Whether any kept version of any folder has `content`.
    pub fn history_of_content(&self, content: &ContentId) -> Result<bool> {
        let txn = self.db.begin_read()?;
        let t = txn.open_table(HISTORY)?;
        for row in t.iter()? {
            if *row?.1.value() == content.0 {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Versions of `folder` kept in history: (path, time ns, content), oldest first.
    pub fn history(&self, folder: &str) -> Result<Vec<(String, i64, ContentId)>> {
        let txn = self.db.begin_read()?;
        let t = txn.open_table(HISTORY)?;
        let mut out = Vec::new();
        for row in t.range((folder, "", i64::MIN)..)? {
            let (k, v) = row?;
            let (f, path, time) = k.value();
            if f != folder {
                break;
            }
            out.push((path.to_string(), time, ContentId(*v.value())));
        }
        Ok(out)
    }

    /// Remembers the contents of `folder`'s versions that `peer` keeps (what it answered
    /// last).
    pub fn set_peer_kept(&self, folder: &str, peer: &str, contents: &[ContentId]) -> Result<()> {
        let mut sorted: Vec<[u8; 32]> = contents.iter().map(|c| c.0).collect();
        sorted.sort();
        sorted.dedup();
        let txn = self.db.begin_write()?;
        {
            let mut t = txn.open_table(PEER_KEPT)?;
            t.insert((folder, peer), sorted.concat().as_slice())?;
        }
        txn.commit()?;
        Ok(())
    }

    /// The peers that last said they keep a version of `folder` with `content`.
    pub fn peers_keeping(&self, folder: &str, content: &ContentId) -> Result<Vec<String>> {
        let txn = self.db.begin_read()?;
        let t = txn.open_table(PEER_KEPT)?;
        let mut out = Vec::new();
        for row in t.range((folder, "")..)? {
            let (k, v) = row?;
            let (f, peer) = k.value();
            if f != folder {
                break;
            }
            let (ids, _) = v.value().as_chunks::<32>();
            if ids.binary_search(&content.0).is_ok() {
                out.push(peer.to_string());
            }
        }
        Ok(out)
    }

    /// Stores the folder's requested versions (path, version, the value it replaced),
    /// replacing those stored before.
    pub fn set_requested(
        &self,
        folder: &str,
        requested: &[(String, ContentId, EntryValue)],
    ) -> Result<()> {
        let txn = self.db.begin_write()?;
        {
            let mut t = txn.open_table(REQUESTED)?;
            t.retain(|(f, _), _| f != folder)?;
            for (path, content, prior) in requested {
                let mut bytes = content.as_bytes().to_vec();
                bytes.extend(prior.encode());
                t.insert((folder, path.as_str()), bytes.as_slice())?;
            }
        }
        txn.commit()?;
        Ok(())
    }

    /// The folder's stored requested versions ([`Self::set_requested`]); rows that do not
    /// decode are skipped (such a version, if lost, is dropped as any other).
    pub fn requested(&self, folder: &str) -> Result<Vec<(String, ContentId, EntryValue)>> {
        let rows = self.rows_of(REQUESTED, folder, |path, bytes: &[u8]| {
            Ok(match (bytes.get(..32), bytes.get(32..)) {
                (Some(id), Some(prior)) => <[u8; 32]>::try_from(id)
                    .ok()
                    .zip(EntryValue::decode(prior).ok())
                    .map(|(id, prior)| (path.to_string(), ContentId(id), prior)),
                _ => None,
            })
        })?;
        Ok(rows.into_iter().flatten().collect())
    }

    /// Versions of one path of `folder` kept in history: (time ns, content), oldest first.
    pub fn history_of(&self, folder: &str, path: &str) -> Result<Vec<(i64, ContentId)>> {
        let txn = self.db.begin_read()?;
        let t = txn.open_table(HISTORY)?;
        let mut out = Vec::new();
        for row in t.range((folder, path, i64::MIN)..=(folder, path, i64::MAX))? {
            let (k, v) = row?;
            out.push((k.value().2, ContentId(*v.value())));
        }
        Ok(out)
    }

    /// Applies `updates` to `folder` in one transaction: all of them, or none.
    pub fn apply(&self, folder: &str, updates: &[Update]) -> Result<()> {
        self.apply_with(folder, updates, true)
    }

    /// Like [`Index::apply`]; a non-durable commit is atomic and visible at once but reaches
    /// the disk only with the next durable one ([`Index::flush`]). The puller uses it for
    /// each file it writes: after a crash the index may lag the disk, which the next scan
    /// repairs (the files' stamps no longer match), never the reverse.
    pub fn apply_with(&self, folder: &str, updates: &[Update], durable: bool) -> Result<()> {
        self.apply_txn(folder, updates, durable, &[])
    }

    /// Like [`Index::apply`], for a scan: also remembers `changes` (path, content before)
    /// as not yet recorded in the folder document, in the same transaction.
    pub fn apply_scan(
        &self,
        folder: &str,
        updates: &[Update],
        changes: &[(String, Option<ContentId>)],
    ) -> Result<()> {
        self.apply_txn(folder, updates, true, changes)
    }

    /// Changes the scanner committed that the folder document may not have recorded yet:
    /// (path, content before the first of them).
    pub fn unrecorded(&self, folder: &str) -> Result<Vec<(String, Option<ContentId>)>> {
        self.rows_of(UNRECORDED, folder, |path, before| {
            let before = <[u8; 32]>::try_from(before).ok().map(ContentId);
            Ok((path.to_string(), before))
        })
    }

    /// Forgets unrecorded changes once the folder document that records them is saved.
    pub fn clear_unrecorded(&self, folder: &str, paths: &[String]) -> Result<()> {
        if paths.is_empty() {
            return Ok(());
        }
        let txn = self.db.begin_write()?;
        {
            let mut t = txn.open_table(UNRECORDED)?;
            for p in paths {
                t.remove((folder, p.as_str()))?;
            }
        }
        txn.commit()?;
        Ok(())
    }

    fn apply_txn(
        &self,
        folder: &str,
        updates: &[Update],
        durable: bool,
        changes: &[(String, Option<ContentId>)],
    ) -> Result<()> {
        if updates.is_empty() && changes.is_empty() {
            return Ok(());
        }
        let mut txn = self.db.begin_write()?;
        if !durable {
            not_durable(&mut txn)?;
        }
        {
            if txn.open_table(FOLDERS)?.get(folder)?.is_none() {
                return Err(IndexError::UnknownFolder(folder.to_string()));
            }
            let mut w = Writer {
                folder,
                entries: txn.open_table(ENTRIES)?,
                manifests: txn.open_table(MANIFESTS)?,
                pages: txn.open_table(MANIFEST_PAGES)?,
                remote: txn.open_table(REMOTE_MANIFESTS)?,
                remote_pages: txn.open_table(REMOTE_PAGES)?,
                locations: txn.open_multimap_table(CHUNK_LOCATIONS)?,
                folder_chunks: txn.open_table(FOLDER_CHUNKS)?,
                totals: {
                    let t = txn.open_table(FOLDER_TOTALS)?;
                    let v = t.get(folder)?.map(|v| v.value().to_vec());
                    match v {
                        Some(bytes) => decode(&bytes, || format!("totals of {folder}"))?,
                        None => FolderTotals::default(),
                    }
                },
            };
            for update in updates {
                match update {
                    Update::Put {
                        path,
                        entry,
                        manifest,
                    } => w.put(path, entry, manifest.as_ref())?,
                    Update::Remove { path } => w.remove(path)?,
                    Update::Move { from, path, entry } => w.move_entry(from, path, entry)?,
                }
            }
            let totals = encode(&w.totals);
            txn.open_table(FOLDER_TOTALS)?
                .insert(folder, totals.as_slice())?;
            let mut unrecorded = txn.open_table(UNRECORDED)?;
            for (path, before) in changes {
                // The content before the first unrecorded change is what the document knew.
                if unrecorded.get((folder, path.as_str()))?.is_none() {
                    let bytes = before.map(|c| c.0.to_vec()).unwrap_or_default();
                    unrecorded.insert((folder, path.as_str()), bytes.as_slice())?;
                }
            }
        }
        txn.commit()?;
        Ok(())
    }
}

/// The tables of one write transaction, and the folder totals being updated.
struct Writer<'t> {
    folder: &'t str,
    entries: redb::Table<'t, (&'static str, &'static str), &'static [u8]>,
    manifests: redb::Table<'t, &'static [u8; 32], (u64, &'static [u8])>,
    pages: redb::Table<'t, (&'static [u8; 32], u32), &'static [u8]>,
    remote: redb::Table<'t, &'static [u8; 32], &'static [u8]>,
    remote_pages: redb::Table<'t, (&'static [u8; 32], u32), &'static [u8]>,
    locations: redb::MultimapTable<'t, &'static [u8; 32], &'static [u8]>,
    folder_chunks: redb::Table<'t, (&'static str, &'static [u8; 32]), u64>,
    totals: FolderTotals,
}

impl Writer<'_> {
    fn put(&mut self, path: &str, entry: &IndexedEntry, manifest: Option<&Manifest>) -> Result<()> {
        let old = self.take_entry(path)?;
        let same_content = old
            .as_ref()
            .is_some_and(|o| o.kind == entry.kind && o.content == entry.content);
        if let Some(old) = &old {
            self.count(old, false);
            if !same_content {
                self.release_content(path, old)?;
            }
        }
        self.count(entry, true);
        if !same_content && let Some(content) = &entry.content {
            self.add_content(path, content, manifest)?;
        }
        self.entries
            .insert((self.folder, path), encode(entry).as_slice())?;
        Ok(())
    }

    fn move_entry(&mut self, from: &str, to: &str, entry: &IndexedEntry) -> Result<()> {
        if from == to {
            return self.put(to, entry, None);
        }
        let old = self.take_entry(from)?;
        let moved_as_is = old
            .as_ref()
            .is_some_and(|o| o.kind == entry.kind && o.content == entry.content)
            && self.entries.get((self.folder, to))?.is_none();
        let old = match old {
            Some(old) if moved_as_is => old,
            old => {
                // The new path takes the content before the old one lets go of it.
                self.put(to, entry, None)?;
                if let Some(old) = old {
                    self.count(&old, false);
                    self.release_content(from, &old)?;
                }
                return Ok(());
            }
        };
        self.count(&old, false);
        self.count(entry, true);
        if let Some(content) = &entry.content {
            let bytes = self
                .manifests
                .get(content.as_bytes())?
                .map(|v| v.value().1.to_vec());
            if let Some(bytes) = bytes {
                let stored = Stored::decode(content, &bytes)?;
                let (folder, locations) = (self.folder, &mut self.locations);
                each_page(&self.pages, content, &stored, |page, start| {
                    for (c, mut loc) in locations_in(folder, from, page) {
                        loc.offset += start;
                        locations.remove(c.id.as_bytes(), loc.encode().as_slice())?;
                    }
                    for (c, mut loc) in locations_in(folder, to, page) {
                        loc.offset += start;
                        locations.insert(c.id.as_bytes(), loc.encode().as_slice())?;
                    }
                    Ok(true)
                })?;
            }
        }
        self.entries
            .insert((self.folder, to), encode(entry).as_slice())?;
        Ok(())
    }

    fn remove(&mut self, path: &str) -> Result<()> {
        if let Some(old) = self.take_entry(path)? {
            self.count(&old, false);
            self.release_content(path, &old)?;
        }
        Ok(())
    }

    fn take_entry(&mut self, path: &str) -> Result<Option<IndexedEntry>> {
        let old = self
            .entries
            .remove((self.folder, path))?
            .map(|v| v.value().to_vec());
        old.map(|bytes| decode(&bytes, || format!("entry {}/{path}", self.folder)))
            .transpose()
    }

    fn count(&mut self, entry: &IndexedEntry, add: bool) {
        let t = &mut self.totals;
        let (field, bytes) = match entry.kind {
            EntryKind::File => (&mut t.files, entry.stamp.size),
            EntryKind::Dir => (&mut t.dirs, 0),
            EntryKind::Symlink => (&mut t.symlinks, 0),
        };
        if add {
            *field += 1;
            t.bytes += bytes;
        } else {
            *field = field.saturating_sub(1);
            t.bytes = t.bytes.saturating_sub(bytes);
        }
    }

    fn add_content(
        &mut self,
        path: &str,
        content: &ContentId,
        manifest: Option<&Manifest>,
    ) -> Result<()> {
        let existing = self.manifests.get(content.as_bytes())?.map(|v| {
            let (refs, bytes) = v.value();
            (refs, bytes.to_vec())
        });
        let (refs, bytes) = match (existing, manifest) {
            (Some((refs, bytes)), _) => (refs, bytes),
            (None, Some(m)) => (0, store_manifest(&mut self.pages, content, m)?),
            (None, None) => (0, self.adopt_remote(path, content)?),
        };
        self.manifests
            .insert(content.as_bytes(), (refs + 1, bytes.as_slice()))?;
        let stored = Stored::decode(content, &bytes)?;
        self.locations_of(path, content, &stored, true)
    }

    /// Copies the manifest of `content` learnt from a peer (whole, or outline and pages)
    /// to this device's own: a pulled file whose manifest is paged is recorded without
    /// ever holding the whole manifest.
    fn adopt_remote(&mut self, path: &str, content: &ContentId) -> Result<Vec<u8>> {
        let Some(bytes) = self
            .remote
            .get(content.as_bytes())?
            .map(|v| v.value().to_vec())
        else {
            return Err(IndexError::Corrupt {
                what: format!("entry {}/{path}", self.folder),
                detail: format!("content {content} has no manifest"),
            });
        };
        if let Stored::Paged(o) = Stored::decode(content, &bytes)? {
            for p in 0..o.pages() {
                let page = read_page(&self.remote_pages, content, p)?.ok_or_else(|| {
                    IndexError::Corrupt {
                        what: format!("manifest {content}"),
                        detail: format!("page {p} is missing"),
                    }
                })?;
                self.pages
                    .insert((content.as_bytes(), p as u32), page.encode().as_slice())?;
            }
        }
        Ok(bytes)
    }

    fn release_content(&mut self, path: &str, old: &IndexedEntry) -> Result<()> {
        let Some(content) = &old.content else {
            return Ok(());
        };
        let Some((refs, bytes)) = self.manifests.get(content.as_bytes())?.map(|v| {
            let (refs, bytes) = v.value();
            (refs, bytes.to_vec())
        }) else {
            return Ok(());
        };
        let stored = Stored::decode(content, &bytes)?;
        self.locations_of(path, content, &stored, false)?;
        if refs <= 1 {
            self.manifests.remove(content.as_bytes())?;
            remove_pages(&mut self.pages, content, &stored)?;
        } else {
            self.manifests
                .insert(content.as_bytes(), (refs - 1, bytes.as_slice()))?;
        }
        Ok(())
    }

    /// Adds (or removes) the locations of every chunk of `content` at `path`, and the
    /// folder's chunk counts, one page at a time.
    fn locations_of(
        &mut self,
        path: &str,
        content: &ContentId,
        stored: &Stored,
        add: bool,
    ) -> Result<()> {
        let folder = self.folder;
        let (locations, folder_chunks, totals) = (
            &mut self.locations,
            &mut self.folder_chunks,
            &mut self.totals,
        );
        each_page(&self.pages, content, stored, |page, start| {
            for (c, mut loc) in locations_in(folder, path, page) {
                loc.offset += start;
                let key = (folder, c.id.as_bytes());
                let n = folder_chunks.get(key)?.map_or(0, |v| v.value());
                if add {
                    locations.insert(c.id.as_bytes(), loc.encode().as_slice())?;
                    folder_chunks.insert(key, n + 1)?;
                    totals.chunks += 1;
                    if n == 0 {
                        totals.unique_chunks += 1;
                        totals.unique_bytes += u64::from(c.len);
                    }
                    continue;
                }
                locations.remove(c.id.as_bytes(), loc.encode().as_slice())?;
                totals.chunks = totals.chunks.saturating_sub(1);
                if n <= 1 {
                    folder_chunks.remove(key)?;
                    totals.unique_chunks = totals.unique_chunks.saturating_sub(1);
                    totals.unique_bytes = totals.unique_bytes.saturating_sub(u64::from(c.len));
                } else {
                    folder_chunks.insert(key, n - 1)?;
                }
            }
            Ok(true)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cairn_core::ChunkRef;

    fn manifest(seed: u8, chunks: usize) -> Manifest {
        Manifest {
            chunks: (0..chunks)
                .map(|i| ChunkRef {
                    id: ChunkId([seed.wrapping_add(i as u8); 32]),
                    len: 1000,
                })
                .collect(),
        }
    }

    /// Kept versions' chunk locations live apart from the files' (`KEPT_LOCATIONS`);
    /// those an earlier release recorded among the files' move there on start, once, and
    /// are found as before.
    #[test]
    fn kept_locations_recorded_among_the_files_move_to_their_own_table_once() {
        let dir = tempfile::tempdir().unwrap();
        let index = Index::open(&dir.path().join("index.redb")).unwrap();
        let (old, new) = (manifest(1, 3), manifest(50, 2));
        let (old_c, new_c) = (old.content_id(), new.content_id());
        // The earlier layout: the history row, and the locations among the files'.
        let txn = index.db.begin_write().unwrap();
        {
            txn.open_table(HISTORY)
                .unwrap()
                .insert(("f", "a.txt", 1i64), old_c.as_bytes())
                .unwrap();
            let mut pages = txn.open_table(REMOTE_PAGES).unwrap();
            let bytes = store_manifest(&mut pages, &old_c, &old).unwrap();
            txn.open_table(REMOTE_MANIFESTS)
                .unwrap()
                .insert(old_c.as_bytes(), bytes.as_slice())
                .unwrap();
            let mut locs = txn.open_multimap_table(CHUNK_LOCATIONS).unwrap();
            for (c, loc) in locations_in(&history_holder("f"), &old_c.to_hex(), &old) {
                locs.insert(c.id.as_bytes(), loc.encode().as_slice())
                    .unwrap();
            }
        }
        txn.commit().unwrap();
        // This release's layout.
        index.add_history("f", "b.txt", &new_c, &new).unwrap();

        assert_eq!(index.migrate_history_locations().unwrap(), 3);
        let read = index.db.begin_read().unwrap();
        let files = read.open_multimap_table(CHUNK_LOCATIONS).unwrap();
        let kept = read.open_multimap_table(KEPT_LOCATIONS).unwrap();
        for c in old.chunks.iter().chain(&new.chunks) {
            assert!(files.get(c.id.as_bytes()).unwrap().next().is_none());
            assert_eq!(kept.get(c.id.as_bytes()).unwrap().count(), 1);
            let found = index.chunk_locations(&c.id).unwrap();
            assert_eq!(found.len(), 1);
            assert_eq!(found[0].folder, history_holder("f"));
            assert!(index.has_chunk(&c.id).unwrap());
        }
        assert_eq!(index.migrate_history_locations().unwrap(), 0, "moved twice");
    }
}
