//! The daemon's configuration (`config.toml` in its home directory) and the layout of the
//! home directory.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub use cairn_api::folders::FolderType;

/// Errors reading or writing the configuration.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is not valid configuration: {source}")]
    Parse {
        path: PathBuf,
        source: toml::de::Error,
    },
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

/// The node's view of a folder type (the same three kinds; `cairn-api` cannot depend on
/// core, whose automerge the tray must not link).
pub fn node_kind(t: FolderType) -> cairn_core::node::FolderKind {
    use cairn_core::node::FolderKind;
    match t {
        FolderType::SendReceive => FolderKind::SendReceive,
        FolderType::SendOnly => FolderKind::SendOnly,
        FolderType::ReceiveOnly => FolderKind::ReceiveOnly,
    }
}

/// A node's folder kind as the control API spells it.
pub fn api_kind(k: cairn_core::node::FolderKind) -> FolderType {
    use cairn_core::node::FolderKind;
    match k {
        FolderKind::SendReceive => FolderType::SendReceive,
        FolderKind::SendOnly => FolderType::SendOnly,
        FolderKind::ReceiveOnly => FolderType::ReceiveOnly,
    }
}

/// A folder this device syncs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FolderConfig {
    /// Folder id, the same on every device.
    pub id: String,
    /// Where the folder is on this device.
    pub path: PathBuf,
    /// Peer ids (base58 PeerIds) this folder is shared with.
    #[serde(default)]
    pub peers: Vec<String>,
    /// Send-receive, send-only or receive-only.
    #[serde(default, rename = "type")]
    pub kind: FolderType,
    /// Full rescan interval in seconds, the safety net under the watcher.
    #[serde(default = "default_rescan")]
    pub rescan_interval_s: u64,
    /// Paused folders neither send nor apply changes.
    #[serde(default)]
    pub paused: bool,
}

fn default_rescan() -> u64 {
    3600
}

/// A device this one trusts.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerConfig {
    /// The peer's PeerId (base58).
    pub id: String,
    /// A name for people.
    #[serde(default)]
    pub name: String,
    /// Addresses to dial (multiaddrs), besides what discovery finds.
    #[serde(default)]
    pub addresses: Vec<String>,
}

/// A folder offer the user declined (`cairn decline`): the device's later offers of that
/// folder are not shown again.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeclinedOffer {
    /// Folder id.
    pub folder: String,
    /// The offering device's PeerId (base58).
    pub device: String,
}

/// Network settings.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkConfig {
    /// Listen multiaddrs.
    #[serde(default = "default_listen")]
    pub listen: Vec<String>,
    /// Local discovery with mDNS.
    #[serde(default = "yes")]
    pub mdns: bool,
    /// Kademlia bootstrap peers (multiaddrs ending in /p2p/<id>).
    #[serde(default)]
    pub bootstrap: Vec<String>,
}

fn default_listen() -> Vec<String> {
    vec![
        "/ip4/0.0.0.0/tcp/0".into(),
        "/ip4/0.0.0.0/udp/0/quic-v1".into(),
    ]
}

fn yes() -> bool {
    true
}

impl Default for NetworkConfig {
    fn default() -> Self {
        NetworkConfig {
            listen: default_listen(),
            mdns: true,
            bootstrap: Vec::new(),
        }
    }
}

/// The control API's listen address.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ControlConfig {
    /// `127.0.0.1:PORT`; port 0 picks a free one (written to `control.json`).
    #[serde(default = "default_control")]
    pub listen: String,
}

fn default_control() -> String {
    "127.0.0.1:0".into()
}

impl Default for ControlConfig {
    fn default() -> Self {
        ControlConfig {
            listen: default_control(),
        }
    }
}

/// This device.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceConfig {
    /// A name for people (shown to peers when pairing); the host name if empty.
    #[serde(default)]
    pub name: String,
}

/// The whole configuration.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Config {
    /// This device.
    #[serde(default)]
    pub device: DeviceConfig,
    /// Network settings.
    #[serde(default)]
    pub network: NetworkConfig,
    /// Control API settings.
    #[serde(default)]
    pub control: ControlConfig,
    /// Trusted devices.
    #[serde(default)]
    pub peers: Vec<PeerConfig>,
    /// Synced folders.
    #[serde(default)]
    pub folders: Vec<FolderConfig>,
    /// Folder offers declined, newest last.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub declined: Vec<DeclinedOffer>,
}

impl Config {
    /// The device name: configured, else the host name, else "cairn".
    pub fn device_name(&self) -> String {
        if !self.device.name.is_empty() {
            return self.device.name.clone();
        }
        std::fs::read_to_string("/etc/hostname")
            .ok()
            .map(|h| h.trim().to_string())
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "cairn".into())
    }

    /// Reads `path`, or returns the default configuration if it does not exist.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Config::default()),
            Err(source) => {
                return Err(ConfigError::Read {
                    path: path.into(),
                    source,
                });
            }
        };
        let config: Config = toml::from_str(&text).map_err(|source| ConfigError::Parse {
            path: path.into(),
            source,
        })?;
        config.validate()?;
        Ok(config)
    }

    /// Writes the configuration atomically (temp file, then rename).
    pub fn save(&self, path: &Path) -> Result<(), ConfigError> {
        let text = toml::to_string_pretty(self).map_err(|e| ConfigError::Invalid(e.to_string()))?;
        let tmp = path.with_extension("toml.tmp");
        let write = |p: &Path| ConfigError::Write {
            path: p.into(),
            source: std::io::Error::last_os_error(),
        };
        std::fs::write(&tmp, text).map_err(|source| ConfigError::Write {
            path: tmp.clone(),
            source,
        })?;
        std::fs::rename(&tmp, path).map_err(|_| write(path))
    }

    /// Checks what serde cannot: ids and paths.
    pub fn validate(&self) -> Result<(), ConfigError> {
        for p in &self.peers {
            p.id.parse::<libp2p::PeerId>().map_err(|_| {
                ConfigError::Invalid(format!("peer id {:?} is not a valid PeerId", p.id))
            })?;
        }
        let mut ids = std::collections::HashSet::new();
        for f in &self.folders {
            if f.id.is_empty() || f.id.len() > cairn_core::wire::MAX_FOLDER_ID {
                return Err(ConfigError::Invalid(format!(
                    "folder id {:?} must be 1-64 characters",
                    f.id
                )));
            }
            if !ids.insert(&f.id) {
                return Err(ConfigError::Invalid(format!(
                    "folder id {:?} appears twice",
                    f.id
                )));
            }
            if !f.path.is_absolute() {
                return Err(ConfigError::Invalid(format!(
                    "folder path {} must be absolute",
                    f.path.display()
                )));
            }
        }
        Ok(())
    }
}

/// Files in the daemon's home directory.
#[derive(Clone, Debug)]
pub struct Home {
    /// The directory itself.
    pub dir: PathBuf,
}

impl Home {
    /// The home at `dir`.
    pub fn new(dir: PathBuf) -> Self {
        Home { dir }
    }
    /// `config.toml`.
    pub fn config(&self) -> PathBuf {
        self.dir.join("config.toml")
    }
    /// The device's private key.
    pub fn identity(&self) -> PathBuf {
        self.dir.join("identity.key")
    }
    /// The index database.
    pub fn index(&self) -> PathBuf {
        self.dir.join("index.redb")
    }
    /// Where the running daemon publishes its control address and token.
    pub fn control(&self) -> PathBuf {
        self.dir.join("control.json")
    }
    /// The history store.
    pub fn history(&self) -> PathBuf {
        self.dir.join("history")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_round_trips_and_defaults_fill_in() {
        let text = r#"
            [[peers]]
            id = "12D3KooWDpJ7As7BWAwRMfu1VU2WCqNjvq387JEYKDBj4kx6nXTN"
            [[folders]]
            id = "photos"
            path = "/home/me/Photos"
            peers = ["12D3KooWDpJ7As7BWAwRMfu1VU2WCqNjvq387JEYKDBj4kx6nXTN"]
            type = "receive-only"
        "#;
        let c: Config = toml::from_str(text).unwrap();
        c.validate().unwrap();
        assert!(c.network.mdns);
        assert_eq!(c.folders[0].kind, FolderType::ReceiveOnly);
        assert_eq!(c.folders[0].rescan_interval_s, 3600);
        let again: Config = toml::from_str(&toml::to_string_pretty(&c).unwrap()).unwrap();
        assert_eq!(again, c);
    }

    #[test]
    fn bad_peer_ids_and_relative_paths_are_refused() {
        let mut c = Config::default();
        c.peers.push(PeerConfig {
            id: "not-a-peer".into(),
            name: String::new(),
            addresses: vec![],
        });
        assert!(c.validate().is_err());
        let mut c = Config::default();
        c.folders.push(FolderConfig {
            id: "x".into(),
            path: "relative".into(),
            peers: vec![],
            kind: FolderType::SendReceive,
            rescan_interval_s: 60,
            paused: false,
        });
        assert!(c.validate().is_err());
    }
}
