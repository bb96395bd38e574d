//! cairn-tray's logic without a GUI: what the tray icon, its menu and the status window
//! show for a given answer of the daemon's control API.

pub mod view;
