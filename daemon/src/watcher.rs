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
                Ok(events)
                    if events
                        .iter()
                        .all(|e| matches!(e.kind, notify::EventKind::Access(_))) =>
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
