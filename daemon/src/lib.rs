//! cairn-daemon: everything that touches the real world — the disk, the index database,
//! and (in time) the network and the control API. The `cairnd` binary is built on it.

pub mod folders;
pub mod index;
pub mod paths;
pub mod scanner;
