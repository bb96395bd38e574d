//! cairn-core: the logic of cairn with no I/O of its own.
//!
//! Chunking, manifests and content ids, and the decisions of a scan are plain functions
//! and types here, so that they can be tested exhaustively and simulated without disks,
//! sockets or clocks. `cairn-daemon` wires them to the real world.

pub mod chunker;
pub mod conduct;
pub mod delta;
pub mod hash;
pub mod manifest;
pub mod scan;

pub use chunker::{Chunker, ChunkerParams, SegmentCuts, stitch};
pub use hash::{ChunkId, ContentId};
pub use manifest::{ChunkRef, ContentIdBuilder, Manifest, Outline};
pub mod folder;
/// Fuzz targets for every decoder a peer reaches (run by `core/fuzz` and `tests/fuzz_smoke.rs`).
pub mod fuzz_targets;
pub mod node;
pub mod pairing;
pub mod path;
pub mod planner;
pub mod rendezvous;
pub mod retention;
pub mod rewind;
pub mod wire;
