//! cairn-api: the daemon's control API as its clients see it.
//!
//! `cairnd` serves HTTP + JSON on 127.0.0.1 (see `cairn-daemon`'s `control.rs`); this crate
//! holds what both sides must agree on: the request and answer types of every route
//! ([`status`], [`folders`], [`conflicts`], [`history`], [`pairing`], [`control`]), the one
//! error enum with its HTTP status and CLI exit code ([`error`]), where cairn keeps its
//! files ([`paths`]), a blocking client ([`client`]) and starting the daemon ([`launch`]).
//! The daemon answers with these types and the `cairn` CLI and `cairn-tray` read them, so
//! no client indexes JSON by string keys and a front end links neither the daemon nor the
//! sync engine.
//!
//! **Architecture invariant:** this crate depends on serde, serde_json and thiserror only,
//! never on cairn-core or cairn-daemon; what only the daemon needs stays in the daemon.

#![warn(missing_docs)]

pub mod client;
pub mod conflicts;
pub mod control;
pub mod error;
pub mod folders;
pub mod history;
pub mod launch;
pub mod pairing;
pub mod paths;
pub mod status;
pub mod time;

pub use client::{Client, ClientError};
pub use error::{ApiError, exit};
