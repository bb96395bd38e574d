//! Hashing yields the CPU to the device's user and to the daemon's own answers.
//!
//! rayon's threads, which read and hash every changed file of a scan on all cores, run at
//! nice [`BACKGROUND_NICE`], as Syncthing runs itself by default (`setLowPriority`); the
//! event loop, the network and the control API keep the process's priority, so
//! `/v1/status` and the tray answer while a large folder is hashed. Only those threads:
//! they share no lock with the loop (they send their results over a channel), whereas the
//! scan's own thread and the puller commit to the index, whose one writer the loop may
//! wait for, and a low-priority writer would make that wait longer (priority inversion).
//! Linux keeps a nice value per thread; an unprivileged thread cannot raise it again, so
//! only threads that do nothing else are lowered.

/// The nice value of background threads (Syncthing's `setLowPriority` uses 9).
pub const BACKGROUND_NICE: i32 = 9;

/// Lowers the calling thread to [`BACKGROUND_NICE`], unless it already runs lower. Best
/// effort: where the system refuses, the work runs at the priority it had.
pub fn lower_this_thread() {
    #[cfg(target_os = "linux")]
    {
        let tid = this_thread();
        // SAFETY: getpriority/setpriority on our own thread id only read and set its nice
        // value. errno is cleared first because -1 is a valid nice value.
        unsafe {
            *libc::__errno_location() = 0;
            let now = libc::getpriority(libc::PRIO_PROCESS, tid);
            if *libc::__errno_location() == 0 && now >= BACKGROUND_NICE {
                return;
            }
            if libc::setpriority(libc::PRIO_PROCESS, tid, BACKGROUND_NICE) != 0 {
                tracing::debug!(
                    error = %std::io::Error::last_os_error(),
                    "background priority not set"
                );
            }
        }
    }
}

/// The scheduler slice asked for by threads that answer the user ([`answer_promptly`]).
pub const PROMPT_SLICE_NS: u64 = 100_000;

/// Asks the kernel to run the calling thread in short slices ([`PROMPT_SLICE_NS`], the
/// least Linux accepts), for a thread that mostly sleeps and must answer at once when it
/// wakes: the control API's. Linux's fair scheduler (EEVDF, 6.6 on) gives each thread a
/// virtual deadline one slice after it becomes eligible; a short slice puts a woken
/// thread's deadline ahead of the busy ones, so it preempts them instead of waiting for
/// their slices to end. Its share of the CPU is unchanged (that is the nice value).
/// Unprivileged; kernels before 6.12 ignore the slice of a normal thread. Best effort.
pub fn answer_promptly() {
    #[cfg(target_os = "linux")]
    {
        let Some(mut attr) = SchedAttr::of_this_thread() else {
            return;
        };
        if attr.policy != libc::SCHED_OTHER as u32 {
            return;
        }
        attr.flags = 0;
        attr.runtime = PROMPT_SLICE_NS;
        // SAFETY: sched_setattr on our own thread (pid 0) with a struct whose `size` field
        // is its size; it sets this thread's scheduling attributes only.
        if unsafe { libc::syscall(libc::SYS_sched_setattr, 0, &attr, 0) } != 0 {
            tracing::debug!(
                error = %std::io::Error::last_os_error(),
                "short scheduler slice not set"
            );
        }
    }
}

/// The kernel's `struct sched_attr` (include/uapi/linux/sched/types.h), up to
/// `sched_period` (SCHED_ATTR_SIZE_VER0, which every kernel with the call takes).
#[cfg(target_os = "linux")]
#[repr(C)]
#[derive(Default)]
struct SchedAttr {
    size: u32,
    policy: u32,
    flags: u64,
    nice: i32,
    priority: u32,
    /// For a normal thread, its custom slice in ns (0: none; kernels >= 6.12).
    runtime: u64,
    deadline: u64,
    period: u64,
}

#[cfg(target_os = "linux")]
impl SchedAttr {
    /// The calling thread's scheduling attributes.
    fn of_this_thread() -> Option<SchedAttr> {
        let size = std::mem::size_of::<SchedAttr>() as u32;
        let mut attr = SchedAttr::default();
        // SAFETY: sched_getattr of our own thread (pid 0) into a struct of the size passed.
        let r = unsafe { libc::syscall(libc::SYS_sched_getattr, 0, &mut attr, size, 0) };
        (r == 0).then_some(SchedAttr { size, ..attr })
    }
}

#[cfg(target_os = "linux")]
fn this_thread() -> libc::id_t {
    // SAFETY: gettid has no preconditions.
    unsafe { libc::gettid() as libc::id_t }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    fn this_thread_nice() -> i32 {
        // SAFETY: reads the nice value of our own thread.
        unsafe { libc::getpriority(libc::PRIO_PROCESS, this_thread()) }
    }

    #[test]
    fn a_lowered_thread_and_the_threads_it_starts_run_at_background_nice_others_do_not() {
        let before = this_thread_nice();
        let (own, child) = std::thread::spawn(|| {
            lower_this_thread();
            let child = std::thread::spawn(this_thread_nice).join().unwrap();
            (this_thread_nice(), child)
        })
        .join()
        .unwrap();
        assert_eq!(own, before.max(BACKGROUND_NICE));
        assert_eq!(child, own, "a thread inherits its creator's nice value");
        assert_eq!(
            this_thread_nice(),
            before,
            "only the lowered thread changed"
        );
    }

    /// This thread's custom scheduler slice (ns; 0 when it has none), and whether the
    /// kernel is 6.12 or later, which keeps one for normal threads.
    fn slice_and_kernel() -> (u64, bool) {
        let attr = SchedAttr::of_this_thread().expect("sched_getattr");
        let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap();
        let mut parts = release
            .trim()
            .split(['.', '-'])
            .map(|p| p.parse::<u32>().unwrap_or(0));
        let version = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
        (attr.runtime, version >= (6, 12))
    }

    #[test]
    fn a_prompt_thread_asks_for_the_shortest_slice_and_only_it() {
        let (before, _) = slice_and_kernel();
        let (prompt, new_kernel) = std::thread::spawn(|| {
            answer_promptly();
            slice_and_kernel()
        })
        .join()
        .unwrap();
        if new_kernel {
            assert_eq!(prompt, PROMPT_SLICE_NS);
        }
        assert_eq!(
            slice_and_kernel().0,
            before,
            "only the prompt thread changed"
        );
    }
}
