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
}
