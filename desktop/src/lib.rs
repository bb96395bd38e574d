//! cairn-tray's parts: the view-model (status JSON -> what is shown), the worker that
//! talks to the daemon off the UI thread, the tray menu, the status window, the icon and
//! notifications. No sync logic: everything goes through the daemon's control API.

pub mod icon;
pub mod notify;
pub mod tray;
pub mod view;
pub mod window;
pub mod worker;
