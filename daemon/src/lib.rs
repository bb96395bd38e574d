//! cairn-daemon: everything that touches the real world: the disk, the index database,
//! the network and the control API. The `cairnd` binary is built on it.

pub mod admin;
pub mod config;
pub mod control;
pub mod engine;
pub mod folders;
pub mod history;
pub mod identity;
pub mod index;
pub mod metrics;
pub mod net;
pub mod pair;
pub mod paths;
pub mod peer_limits;
pub mod priority;
pub mod private_net;
pub mod puller;
pub mod relay;
pub mod rendezvous;
pub mod scanner;
pub mod serve;
pub mod watcher;
