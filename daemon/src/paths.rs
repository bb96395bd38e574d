//! Where cairn keeps its own files on this device: the data directory (shared with
//! clients, in `cairn_api::paths`) and what only the daemon and `cairn scan` open.

use std::path::PathBuf;

pub use cairn_api::paths::data_dir;

/// The index database of this device.
pub fn index_path() -> PathBuf {
    data_dir().join("index.redb")
}

/// The configuration file when no `--home` or `--config` is given:
/// `$XDG_CONFIG_HOME/cairn/config.toml`, else `~/.config/cairn/config.toml`.
pub fn default_config() -> PathBuf {
    if let Some(xdg) = std::env::var_os("XDG_CONFIG_HOME").filter(|v| !v.is_empty()) {
        return PathBuf::from(xdg).join("cairn/config.toml");
    }
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("."));
    home.join(".config/cairn/config.toml")
}
