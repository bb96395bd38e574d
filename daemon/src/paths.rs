//! Where cairn keeps its own files on this device.

use std::path::PathBuf;

/// cairn's data directory: `$CAIRN_HOME`, else `$XDG_DATA_HOME/cairn`, else
/// `~/.local/share/cairn`.
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
