//! Where cairn keeps its own files on this device, as every program finds them.

use std::path::PathBuf;

/// cairn's data directory (the daemon's home): `$CAIRN_HOME`, else
/// `$XDG_DATA_HOME/cairn`, else `~/.local/share/cairn`.
pub fn data_dir() -> PathBuf {
    if let Some(home) = std::env::var_os("CAIRN_HOME").filter(|v| !v.is_empty()) {
        return PathBuf::from(home);
    }
    if let Some(xdg) = std::env::var_os("XDG_DATA_HOME").filter(|v| !v.is_empty()) {
        return PathBuf::from(xdg).join("cairn");
    }
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("."));
    home.join(".local/share/cairn")
}
