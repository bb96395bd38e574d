//! `cairn-tray`, the desktop tray app.
//!
//! Not built yet: it needs the daemon's control API, which does not exist yet. Until then
//! this binary says so instead of pretending.

fn main() -> std::process::ExitCode {
    eprintln!(
        "cairn-tray: the desktop tray app is not built yet; use `cairn scan <folder>` for now."
    );
    std::process::ExitCode::from(2)
}
