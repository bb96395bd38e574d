//! Watches a folder with inotify (through `notify`), debounced, and tells the loop which
//! paths changed, so that it scans only those.
//!
//! Overflow and watch-limit errors are reported as `WatcherFailed`: the loop then falls
//! back to frequent periodic rescans and says so in the status.

use std::path::{Path, PathBuf};
use std::time::Duration;

use notify::RecursiveMode;
use notify_debouncer_full::{DebounceEventResult, Debouncer, RecommendedCache, new_debouncer};

/// Debounce window: short, so that changes propagate well under a second. The scanner's
/// settle time is the same, so a scan the watcher started waits only for a file written
/// again after its event.
pub const DEBOUNCE: Duration = Duration::from_millis(50);

/// How often the debouncer looks for events older than [`DEBOUNCE`]: an event waits up to
/// one tick more. notify's default is a quarter of the window (12.5 ms, 6 ms on average);
/// 5 ms makes it 2.5 ms for 200 wake-ups a second per watched folder (each a few µs).
const TICK: Duration = Duration::from_millis(5);

fn is_temp(path: &Path) -> bool {
    path.file_name()
        .and_then(|n| n.to_str())
        .is_some_and(cairn_core::scan::is_internal_name)
}

/// What the watcher reports (the loop turns it into `Event::FsChanged` / `WatcherFailed`).
#[derive(Debug)]
pub enum Change {
    /// These absolute paths changed; none when everything must be scanned (the kernel
    /// dropped events, or an event names no path).
    Paths(Vec<PathBuf>),
    /// The watch broke (overflow, watch limit): rescans must stand in for it.
    Failed(String),
}

/// A running watcher; dropping it stops watching.
pub struct Watcher {
    _debouncer: Debouncer<notify::RecommendedWatcher, RecommendedCache>,
}

impl Watcher {
    /// Starts watching `root` recursively; `report` is called on notify's thread.
    pub fn start(
        root: &Path,
        report: impl Fn(Change) + Send + 'static,
    ) -> Result<Self, notify::Error> {
        let handler = move |result: DebounceEventResult| {
            let event = match result {
                // Opening or reading a file or directory (the scanner itself, serving
                // chunks, `ls`) is not a change; reacting to it would rescan forever.
                // Nor is the puller writing its own temp files (`.cairn-tmp.*`): a pull that
                // waits would otherwise retrigger a scan, and the scan a pull, forever.
                Ok(events)
                    if events.iter().all(|e| {
                        matches!(e.kind, notify::EventKind::Access(_))
                            || (!e.paths.is_empty() && e.paths.iter().all(|p| is_temp(p)))
                    }) =>
                {
                    return;
                }
                // The paths that changed, so that only they are scanned; none (a full
                // scan) when the kernel dropped events or an event names no path.
                Ok(events) => Change::Paths(
                    if events.iter().any(|e| e.need_rescan() || e.paths.is_empty()) {
                        Vec::new()
                    } else {
                        events
                            .iter()
                            .filter(|e| !matches!(e.kind, notify::EventKind::Access(_)))
                            .flat_map(|e| e.paths.iter().cloned())
                            .collect()
                    },
                ),
                Err(errors) => Change::Failed(
                    errors
                        .iter()
                        .map(|e| e.to_string())
                        .collect::<Vec<_>>()
                        .join("; "),
                ),
            };
            report(event);
        };
        let mut debouncer = new_debouncer(DEBOUNCE, Some(TICK), handler)?;
        debouncer.watch(root, RecursiveMode::Recursive)?;
        Ok(Watcher {
            _debouncer: debouncer,
        })
    }
}
