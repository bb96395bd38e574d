//! cairn-daemon: everything that touches the real world: the disk, the index database,
//! the network and the control API. The `cairnd` binary is built on it.

pub mod admin;
pub mod config;
pub mod control;
pub mod direct;
pub mod engine;
pub mod folders;
pub mod group;
pub mod history;
pub mod identity;
pub mod index;
pub mod metrics;
pub mod net;
pub mod pair;
pub mod paths;
pub mod peer_limits;
pub mod priority;
pub mod private_net;
pub mod puller;
pub mod relay;
pub mod rendezvous;
pub mod scanner;
pub mod serve;
pub mod temps;
pub mod tls;
pub mod versions;
pub mod watcher;

/// A zero-filled buffer of `len` bytes for data about to be read into it, taken with
/// `malloc` and filled, not with `calloc` (`vec![0; len]`): jemalloc zeroes a reused
/// extent for `calloc` by handing its pages back to the kernel (`madvise`), so every
/// chunk-sized or frame-sized buffer faulted in fresh pages and shot down other cores'
/// TLB entries. A 256 MiB transfer took ~130,000 page faults on the receiver this way
/// (~45,000 with this), and the first sync of the file 0.3 s longer.
#[allow(clippy::slow_vector_initialization)] // the point: not `vec![0; len]`
pub fn read_buffer(len: usize) -> Vec<u8> {
    let mut buf = Vec::with_capacity(len);
    buf.resize(len, 0);
    buf
}

/// The `len` bytes at `offset` of the file at `path` (never through a symlink at `path`)
/// when they are the chunk `id`: how a chunk is read from a folder's file or a staged
/// version, verified against its id.
pub fn read_chunk_at(
    path: &std::path::Path,
    offset: u64,
    len: usize,
    id: &cairn_core::ChunkId,
) -> Option<Vec<u8>> {
    let mut buf = Vec::new();
    append_chunk_at(&open_no_follow(path).ok()?, &mut buf, len, offset, id).then_some(buf)
}

/// Appends the `len` bytes at `offset` of `f` to `out` when they are the chunk `id`; true
/// if so, else `out` is as it was.
pub fn append_chunk_at(
    f: &std::fs::File,
    out: &mut Vec<u8>,
    len: usize,
    offset: u64,
    id: &cairn_core::ChunkId,
) -> bool {
    let start = out.len();
    if read_append_at(f, out, len, offset) && id.matches(&out[start..]) {
        return true;
    }
    out.truncate(start);
    false
}

/// Appends the `len` bytes at `offset` of `f` to `out`, read straight into its spare
/// capacity, not zeroed first (with chunks served this way the sender's `memset` fell
/// from 3.4% of its samples to under 1% on a 1 GiB sync); true when all of them were
/// read, else `out` is as it was.
pub fn read_append_at(f: &std::fs::File, out: &mut Vec<u8>, len: usize, offset: u64) -> bool {
    use std::os::fd::AsRawFd;
    out.reserve(len);
    let start = out.len();
    let mut got = 0;
    while got < len {
        let spare = &mut out.spare_capacity_mut()[got..len];
        // SAFETY: `pread` writes at most `spare.len()` bytes into memory `out` owns.
        let n = unsafe {
            libc::pread(
                f.as_raw_fd(),
                spare.as_mut_ptr().cast(),
                spare.len(),
                (offset + got as u64) as libc::off_t,
            )
        };
        match n {
            n if n > 0 => got += n as usize,
            n if n < 0
                && std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted => {}
            _ => return false,
        }
    }
    // SAFETY: the `len` bytes after `start` were written by `pread` above.
    unsafe { out.set_len(start + len) };
    true
}

/// The file at `path` opened for reading, never through a symlink at `path`.
pub fn open_no_follow(path: &std::path::Path) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
}

#[cfg(test)]
mod read_tests {
    /// Bytes are appended after what `out` holds; a read past the end of the file leaves
    /// `out` as it was.
    #[test]
    fn read_append_at_appends_or_leaves_the_buffer_alone() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, b"0123456789").unwrap();
        let f = std::fs::File::open(&path).unwrap();
        let mut out = b"ab".to_vec();
        assert!(super::read_append_at(&f, &mut out, 4, 3));
        assert_eq!(out, b"ab3456");
        assert!(!super::read_append_at(&f, &mut out, 5, 8));
        assert_eq!(out, b"ab3456");
        assert!(super::read_append_at(&f, &mut out, 0, 100));
        assert_eq!(out, b"ab3456");
    }
}
