//! Shared helpers for cairn's end-to-end tests: find (and if needed build) the real
//! binaries, and run them in isolated homes.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// Path of a workspace binary (`cairn`, `cairnd`, `cairn-tray`), built once per test run.
pub fn bin(name: &str) -> PathBuf {
    static BUILT: OnceLock<Result<(), String>> = OnceLock::new();
    let built = BUILT.get_or_init(|| {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = Command::new(cargo)
            .args([
                "build",
                "--quiet",
                "--bins",
                "-p",
                "cairn-cli",
                "-p",
                "cairn-daemon",
            ])
            .current_dir(workspace_root())
            .status()
            .map_err(|e| format!("cannot run cargo build: {e}"))?;
        if status.success() {
            Ok(())
        } else {
            Err(format!("cargo build failed: {status}"))
        }
    });
    if let Err(e) = built {
        panic!("{e}");
    }
    target_dir().join(name)
}

/// The workspace root (parent of this crate).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default()
}

/// The profile directory the tests run from (`target/debug`).
fn target_dir() -> PathBuf {
    // The test binary lives in target/<profile>/deps/.
    let exe = std::env::current_exe().unwrap_or_default();
    exe.parent()
        .and_then(Path::parent)
        .map(Path::to_path_buf)
        .unwrap_or_default()
}

/// A `cairn` command whose state lives under `home` only.
pub fn cairn(home: &Path) -> Command {
    let mut cmd = Command::new(bin("cairn"));
    cmd.env("CAIRN_HOME", home).env_remove("XDG_DATA_HOME");
    cmd
}

/// Deterministic pseudo-random bytes (xorshift), so tests need no rand crate.
pub fn pseudo_random(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407)
        | 1;
    let mut out = Vec::with_capacity(len);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}
