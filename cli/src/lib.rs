//! The parts of the CLI that other front ends share: the control API client and starting
//! the daemon. `cairn-tray` uses them so it holds no daemon logic of its own.

pub mod client;
pub mod daemon_cmd;
