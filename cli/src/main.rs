//! `cairn`, the command line of cairn.
//!
//! Every command except `scan` will talk to the daemon's control API; `scan` works without
//! a daemon, straight on this device's index.

mod format;
mod scan;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Peer-to-peer folder sync: keep folders identical across your devices, no server.
#[derive(Parser)]
#[command(name = "cairn", version, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Index a folder now and report what it holds and what changed since the last scan.
    ///
    /// The first scan reads every file; later scans read only files whose size, times,
    /// inode or permissions changed. Paths matched by `.cairnignore` files (gitignore
    /// syntax) are left out. Works without a running daemon.
    Scan(scan::ScanArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Scan(args) => scan::run(args),
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

/// The index to use when `--index` is not given.
fn default_index() -> PathBuf {
    cairn_daemon::paths::index_path()
}
