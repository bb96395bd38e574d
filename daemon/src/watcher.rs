//! Watches a folder with inotify (through `notify`), debounced, and tells the loop to scan.
//!
//! Overflow and watch-limit errors are reported as `WatcherFailed`: the loop then falls
//! back to frequent periodic rescans and says so in the status.

use std::path::Path;
use std::time::Duration;

use notify::RecursiveMode;
use notify_debouncer_full::{DebounceEventResult, Debouncer, RecommendedCache, new_debouncer};
use tokio::sync::mpsc;

use crate::engine::Event;

/// Debounce window: short, so that changes propagate well under a second.
const DEBOUNCE: Duration = Duration::from_millis(50);

fn is_temp(path: &Path) -> bool {
    path.file_name()
        .and_then(|n| n.to_str())
        .is_some_and(cairn_core::scan::is_internal_name)
}

/// A running watcher; dropping it stops watching.
pub struct Watcher {
    _debouncer: Debouncer<notify::RecommendedWatcher, RecommendedCache>,
}

impl Watcher {
    /// Starts watching `root` recursively.
    pub fn start(
        root: &Path,
        folder: String,
        events: mpsc::UnboundedSender<Event>,
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
                Ok(_) => Event::FsChanged {
                    folder: folder.clone(),
                },
                Err(errors) => Event::WatcherFailed {
                    folder: folder.clone(),
                    error: errors
                        .iter()
                        .map(|e| e.to_string())
                        .collect::<Vec<_>>()
                        .join("; "),
                },
            };
            let _ = events.send(event);
        };
        let mut debouncer = new_debouncer(DEBOUNCE, None, handler)?;
        debouncer.watch(root, RecursiveMode::Recursive)?;
        Ok(Watcher {
            _debouncer: debouncer,
        })
    }
}
