//! Writes a large file's fetched chunks past the page cache (`O_DIRECT`), in large aligned
//! blocks.
//!
//! A pull writes each chunk once and fsyncs it soon after (a progress record every 256
//! chunks, the file at its end), so the page cache holds nothing worth keeping: buffered,
//! every byte was copied into fresh page-cache pages and written back by the kernel's
//! flusher threads. On a 1 GiB sync that copy was 12% to 41% of the
//! receiver's samples (`copy_folio_from_iter_atomic`, the share swinging with how fresh the
//! pages the kernel handed out were: in a virtual machine a page the guest has not touched
//! lately costs the host a fault); `dd` on this machine: 1 GiB with `conv=fsync` 0.23-0.26
//! s of system time and 0.8-3.5 s, with `oflag=direct` 0.09-0.10 s and 0.7-0.8 s.
//!
//! Bytes are staged in an aligned buffer and written in whole blocks by a second,
//! `O_DIRECT` descriptor of the same file. What is not a whole aligned block (the head of
//! a run that starts mid-block, the tail left when the run breaks or is flushed) goes
//! through the file's own descriptor, buffered; a block written directly holds only staged
//! bytes, so the two never write the same block, and the kernel keeps the page cache right
//! around a direct write. A file system that does not report an alignment for direct I/O
//! (`statx`: NFS, FUSE, tmpfs) or refuses `O_DIRECT` (at open, or for a write) gets every
//! byte buffered, as before.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

/// Bytes staged before a direct write: large writes, few system calls (a multiple of any
/// alignment [`direct_alignment`] accepts). A fetch smaller than one stage is written
/// buffered.
const STAGE: usize = 8 << 20;

/// Chunks of one file written in file order, through `O_DIRECT` where it can.
pub struct DirectWriter<'a> {
    /// The file's own (buffered) descriptor.
    file: &'a File,
    /// An `O_DIRECT` descriptor of the same file, while direct writes work.
    direct: Option<File>,
    /// The alignment of a direct write's offset, length and memory (0 when there never
    /// was a direct descriptor; then nothing is ever staged).
    align: usize,
    /// Backing memory of the stage; the stage starts at `at`, aligned.
    memory: Vec<u8>,
    at: usize,
    /// File offset of the stage's first byte (aligned) and how many bytes it holds.
    start: u64,
    len: usize,
    /// Counts the bytes written through `direct`.
    direct_bytes: &'a AtomicU64,
}

impl<'a> DirectWriter<'a> {
    /// A writer for `fetch` bytes of `file`, opened at `path`, counting the bytes it
    /// writes directly in `direct_bytes`; buffered when the fetch is smaller than a stage,
    /// its file system does not write `O_DIRECT` past the page cache, or `path` is no
    /// longer `file`.
    pub fn new(path: &Path, file: &'a File, fetch: u64, direct_bytes: &'a AtomicU64) -> Self {
        let align = if fetch >= STAGE as u64 {
            direct_alignment(file).unwrap_or(0)
        } else {
            0
        };
        let direct = (align > 0)
            .then(|| {
                open_direct(path, file)
                    .inspect_err(|e| {
                        tracing::debug!(path = %path.display(), error = %e, "direct_write_unavailable")
                    })
                    .ok()
            })
            .flatten();
        let (memory, at) = match direct {
            Some(_) => {
                let memory = crate::read_buffer(STAGE + align);
                let at = memory.as_ptr().align_offset(align);
                (memory, at)
            }
            None => (Vec::new(), 0),
        };
        DirectWriter {
            file,
            direct,
            align,
            memory,
            at,
            start: 0,
            len: 0,
            direct_bytes,
        }
    }

    /// Writes `data` at `offset`: staged when it continues the staged run, else the run so
    /// far is written and a new one starts here. On disk only after [`Self::flush`].
    pub fn write_at(&mut self, mut data: &[u8], mut offset: u64) -> io::Result<()> {
        if self.direct.is_none() {
            return self.file.write_all_at(data, offset);
        }
        if self.len > 0 && offset != self.start + self.len as u64 {
            self.flush()?;
        }
        if self.len == 0 {
            // Up to the next aligned offset, buffered.
            let head = (offset.next_multiple_of(self.align as u64) - offset).min(data.len() as u64);
            let (now, rest) = data.split_at(head as usize);
            self.file.write_all_at(now, offset)?;
            (data, offset) = (rest, offset + head);
            self.start = offset;
        }
        while !data.is_empty() {
            let n = (STAGE - self.len).min(data.len());
            let at = self.at + self.len;
            self.memory[at..at + n].copy_from_slice(&data[..n]);
            self.len += n;
            data = &data[n..];
            if self.len == STAGE {
                self.write_blocks()?;
            }
        }
        Ok(())
    }

    /// Writes everything staged to the file (whole blocks directly, the rest buffered).
    pub fn flush(&mut self) -> io::Result<()> {
        self.write_blocks()?;
        if self.len > 0 {
            let stage = &self.memory[self.at..self.at + self.len];
            self.file.write_all_at(stage, self.start)?;
            self.start += self.len as u64;
            self.len = 0;
        }
        Ok(())
    }

    /// Writes the stage's whole blocks; what is left of the last block moves to the front.
    fn write_blocks(&mut self) -> io::Result<()> {
        // Nothing staged: also where there never was a direct descriptor (`align` 0).
        if self.len == 0 {
            return Ok(());
        }
        let blocks = self.len / self.align * self.align;
        if blocks == 0 {
            return Ok(());
        }
        let stage = &self.memory[self.at..self.at + blocks];
        let mut done = 0;
        while done < blocks {
            let Some(direct) = &self.direct else { break };
            match direct.write_at(&stage[done..], self.start + done as u64) {
                Ok(n) if n > 0 && n % self.align == 0 => done += n,
                // A short write that is not whole blocks (or none at all): the rest goes
                // buffered.
                Ok(n) => {
                    done += n;
                    self.direct = None;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                // EINVAL: the file system wants another alignment after all, or takes no
                // direct writes; the file gets buffered writes from here on.
                Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                    tracing::debug!(error = %e, "direct_write_refused");
                    self.direct = None;
                }
                Err(e) => return Err(e),
            }
        }
        self.direct_bytes.fetch_add(done as u64, Ordering::Relaxed);
        if done < blocks {
            self.file
                .write_all_at(&stage[done..], self.start + done as u64)?;
        }
        self.memory
            .copy_within(self.at + blocks..self.at + self.len, self.at);
        self.start += blocks as u64;
        self.len -= blocks;
        Ok(())
    }
}

/// The alignment direct writes to `file` need (file offset, length and memory; at least
/// the page size), if its file system writes `O_DIRECT` past the page cache: `statx`
/// reports `STATX_DIOALIGN` (Linux 6.1 and later) for those that do (ext4, xfs, btrfs,
/// f2fs), not for NFS, FUSE or tmpfs, where a direct write would cost round trips or go
/// through the page cache anyway.
#[cfg(target_os = "linux")]
pub fn direct_alignment(file: &File) -> Option<usize> {
    use std::os::fd::AsRawFd;
    // SAFETY: `statx` is plain old data, valid when zeroed.
    let mut stx: libc::statx = unsafe { std::mem::zeroed() };
    // SAFETY: a valid descriptor, an empty path with AT_EMPTY_PATH, a buffer we own.
    let rc = unsafe {
        libc::statx(
            file.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_EMPTY_PATH,
            libc::STATX_DIOALIGN,
            &mut stx,
        )
    };
    if rc != 0 || stx.stx_mask & libc::STATX_DIOALIGN == 0 || stx.stx_dio_offset_align == 0 {
        return None;
    }
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(4096) as usize;
    let align = (stx.stx_dio_offset_align as usize)
        .max(stx.stx_dio_mem_align as usize)
        .max(page);
    (align.is_power_of_two() && align <= 1 << 20).then_some(align)
}

/// Elsewhere every write is buffered.
#[cfg(not(target_os = "linux"))]
pub fn direct_alignment(_: &File) -> Option<usize> {
    None
}

#[cfg(not(target_os = "linux"))]
fn open_direct(_: &Path, _: &File) -> io::Result<File> {
    Err(io::ErrorKind::Unsupported.into())
}

/// An `O_DIRECT` descriptor of `file`, opened at `path` (never through a symlink), if the
/// file system takes one and `path` still names `file`.
#[cfg(target_os = "linux")]
fn open_direct(path: &Path, file: &File) -> io::Result<File> {
    let direct = OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_DIRECT | libc::O_NOFOLLOW)
        .open(path)?;
    let (a, b) = (direct.metadata()?, file.metadata()?);
    if (a.dev(), a.ino()) != (b.dev(), b.ino()) {
        return Err(io::Error::other("the path names another file now"));
    }
    Ok(direct)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, RngCore, SeedableRng, rngs::StdRng};

    /// An empty file of `len` bytes, "f" in a directory of its own.
    fn sized_file(len: usize) -> (tempfile::TempDir, File) {
        let dir = tempfile::tempdir().unwrap();
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(dir.path().join("f"))
            .unwrap();
        file.set_len(len as u64).unwrap();
        (dir, file)
    }

    /// Writes `want[from..]` through `w` in file order, in chunks of 16-256 KiB, calling
    /// `after(w, end)` after each.
    fn write_in_chunks(
        w: &mut DirectWriter<'_>,
        want: &[u8],
        from: usize,
        rng: &mut StdRng,
        mut after: impl FnMut(&mut DirectWriter<'_>, usize),
    ) {
        let mut pos = from;
        while pos < want.len() {
            let n = rng.random_range(16 << 10..256 << 10).min(want.len() - pos);
            w.write_at(&want[pos..pos + n], pos as u64).unwrap();
            pos += n;
            after(w, pos);
        }
    }

    /// Writes a random file (seeded) through a writer as a pull would (one without direct
    /// writes, as a file system without direct I/O or a fetch below a stage gets, unless
    /// `direct`), and returns the file's bytes, what they should be, and the bytes that
    /// went direct.
    fn write_runs(seed: u64, direct: bool) -> (Vec<u8>, Vec<u8>, u64) {
        let mut rng = StdRng::seed_from_u64(seed);
        let size = rng.random_range(1..24 << 20);
        let mut want = vec![0u8; size];
        rng.fill_bytes(&mut want);
        let (dir, file) = sized_file(size);
        let path = dir.path().join("f");
        let counted = AtomicU64::new(0);
        let fetch = if direct { u64::MAX } else { 0 };
        let mut w = DirectWriter::new(&path, &file, fetch, &counted);
        // Chunks of 1 B to 300 KiB in file order; some are written around the writer (as
        // local chunks are), some later (as a chunk named twice is), some flushes between.
        let mut later = Vec::new();
        let mut pos = 0;
        while pos < size {
            let len = rng.random_range(1..300 << 10).min(size - pos);
            let bytes = &want[pos..pos + len];
            match rng.random_range(0..20) {
                0 => file.write_all_at(bytes, pos as u64).unwrap(),
                1 => later.push(pos..pos + len),
                2 => {
                    w.write_at(bytes, pos as u64).unwrap();
                    w.flush().unwrap();
                }
                _ => w.write_at(bytes, pos as u64).unwrap(),
            }
            pos += len;
        }
        for r in later {
            w.write_at(&want[r.clone()], r.start as u64).unwrap();
        }
        w.flush().unwrap();
        drop(w);
        (std::fs::read(&path).unwrap(), want, counted.into_inner())
    }

    /// Whatever the runs, gaps and flushes, the file holds exactly the bytes written, and
    /// most of them went past the page cache where the file system takes `O_DIRECT`.
    #[test]
    fn chunks_written_in_runs_land_whole_and_mostly_direct() {
        let first = std::env::var("CAIRN_TEST_SEED").map_or(1, |s| s.parse().unwrap());
        for seed in first..first + 6 {
            println!("seed {seed} (rerun: CAIRN_TEST_SEED={seed})");
            let (got, want, direct) = write_runs(seed, true);
            assert!(
                got == want,
                "seed {seed}: the file differs from what was written"
            );
            if takes_direct() && want.len() > 4 << 20 {
                assert!(
                    direct > want.len() as u64 / 2,
                    "seed {seed}: only {direct} of {} bytes went direct",
                    want.len()
                );
            }
        }
    }

    /// Whether the test directory's file system writes `O_DIRECT` (ext4 and xfs do).
    fn takes_direct() -> bool {
        let probe = tempfile::NamedTempFile::new().unwrap();
        direct_alignment(probe.as_file()).is_some()
            && open_direct(probe.path(), probe.as_file()).is_ok()
    }

    /// One long run from an unaligned offset fills the stage again and again: all but its
    /// head and tail go direct, and the file holds every byte.
    #[test]
    fn a_long_run_from_an_unaligned_offset_goes_direct_a_stage_at_a_time() {
        let mut rng = StdRng::seed_from_u64(21);
        let (at, len) = (1000usize, 3 * STAGE + 12_345);
        let mut want = vec![0u8; at + len];
        rng.fill_bytes(&mut want[at..]);
        let (dir, file) = sized_file(want.len());
        let path = dir.path().join("f");
        let counted = AtomicU64::new(0);
        let mut w = DirectWriter::new(&path, &file, len as u64, &counted);
        write_in_chunks(&mut w, &want, at, &mut rng, |_, _| {});
        w.flush().unwrap();
        drop(w);
        let direct = counted.into_inner();
        assert!(std::fs::read(&path).unwrap() == want, "the file differs");
        let align = direct_alignment(&file).filter(|_| takes_direct());
        println!("direct I/O alignment of the test directory: {align:?}");
        if let Some(align) = align {
            // Only the head (up to the first block boundary) and the last partial block
            // are written buffered.
            assert!(
                direct + 2 * align as u64 >= len as u64,
                "{direct} of {len} bytes went direct"
            );
        }
    }

    /// Direct writes turned off in the middle of a run (EINVAL from a file system): what
    /// was staged and what comes after still land.
    #[test]
    fn direct_writes_turned_off_mid_run_lose_nothing() {
        let mut rng = StdRng::seed_from_u64(22);
        let mut want = vec![0u8; 2 * STAGE + 777];
        rng.fill_bytes(&mut want);
        let (dir, file) = sized_file(want.len());
        let path = dir.path().join("f");
        let counted = AtomicU64::new(0);
        let mut w = DirectWriter::new(&path, &file, want.len() as u64, &counted);
        write_in_chunks(&mut w, &want, 0, &mut rng, |w, pos| {
            if pos > STAGE + STAGE / 2 {
                w.direct = None;
            }
        });
        w.flush().unwrap();
        drop(w);
        assert!(std::fs::read(&path).unwrap() == want, "the file differs");
    }

    /// Without `O_DIRECT` (a file system without direct I/O, a fetch below a stage) every
    /// byte still lands, flushes included (regression: with no alignment to stage by, a
    /// flush divided by zero).
    #[test]
    fn a_writer_without_direct_writes_everything_buffered() {
        for seed in 10..13 {
            let (got, want, direct) = write_runs(seed, false);
            assert!(
                got == want,
                "seed {seed}: the file differs from what was written"
            );
            assert_eq!(direct, 0);
        }
    }

    /// A path that names another file than the descriptor is not opened for direct writes.
    #[test]
    fn a_path_swapped_for_another_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a"), dir.path().join("b"));
        std::fs::write(&b, b"other").unwrap();
        let file = File::create(&a).unwrap();
        std::fs::rename(&b, &a).unwrap();
        assert!(open_direct(&a, &file).is_err());
    }
}
