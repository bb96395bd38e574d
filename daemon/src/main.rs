//! `cairnd`, the cairn daemon.
//!
//! The networked daemon (watcher, peers, puller, control API) is not built yet. Until it
//! is, this binary says so instead of pretending; `cairn scan <folder>` indexes a folder.

fn main() -> std::process::ExitCode {
    eprintln!(
        "cairnd: the sync daemon is not built yet.\n\
         What works today: `cairn scan <folder>` indexes a folder into {}.",
        cairn_daemon::paths::index_path().display()
    );
    std::process::ExitCode::from(2)
}
