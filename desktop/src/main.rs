//! `cairn-tray`, the desktop tray app.
//!
//! The view-model (status -> what the tray shows) is built and tested in `view.rs`; the
//! tray icon, menu and status window are not built yet. Until they are, this binary says
//! so instead of pretending.

fn main() -> std::process::ExitCode {
    eprintln!("cairn-tray: the tray icon and window are not built yet; use `cairn status`.");
    std::process::ExitCode::from(2)
}
