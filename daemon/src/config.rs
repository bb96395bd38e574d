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
    /// Which kept versions stay (`cairn_core::retention`).
    #[serde(default)]
    pub versions: VersionsConfig,
}

/// A folder's rules for kept versions: `[folders.versions]` in the config.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct VersionsConfig {
    /// Thin versions out as Syncthing's staggered versioning does: one per 30 s for the
    /// first hour, per hour for a day, per day for 30 days, then per week.
    pub staggered: bool,
    /// Versions older than this many days go (0: no limit).
    pub max_age_days: u64,
    /// What the folder's kept versions hold stays under this many MiB, each chunk counted
    /// once (0: no limit); the oldest go first.
    pub max_size_mib: u64,
}

impl Default for VersionsConfig {
    fn default() -> Self {
        VersionsConfig {
            staggered: true,
            max_age_days: 365,
            max_size_mib: 0,
        }
    }
}

impl VersionsConfig {
    /// The rules as the pruning applies them.
    pub fn rules(&self) -> cairn_core::retention::Retention {
        const DAY_NS: i64 = 86_400_000_000_000;
        cairn_core::retention::Retention {
            staggered: self.staggered,
            max_age_ns: (self.max_age_days > 0)
                .then(|| (self.max_age_days as i64).saturating_mul(DAY_NS)),
            max_bytes: (self.max_size_mib > 0).then(|| self.max_size_mib.saturating_mul(1 << 20)),
        }
    }
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
    /// The rendezvous secret agreed at pairing (hex): the two devices find each other on
    /// the public DHT under keys derived from it (`cairn_core::rendezvous`). Devices paired
    /// by an older version, or configured by hand, have none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rendezvous: Option<String>,
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
    /// Listen multiaddrs. By default every interface on [`DEFAULT_PORT`] (TCP and QUIC),
    /// so a restarted device is found at the address its peers remember; a port that is
    /// taken falls back to one the system picks (logged as `listen_port_taken`).
    #[serde(default = "default_listen")]
    pub listen: Vec<String>,
    /// Local discovery with mDNS.
    #[serde(default = "yes")]
    pub mdns: bool,
    /// Join the public DHT (the IPFS Amino DHT) through its well-known bootstrap nodes
    /// ([`PUBLIC_BOOTSTRAP`]) when `bootstrap` is not given.
    #[serde(default = "yes")]
    pub public_dht: bool,
    /// DHT bootstrap peers (multiaddrs ending in /p2p/<id>): replaces the public list
    /// (`[]`: none at all).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bootstrap: Option<Vec<String>>,
    /// Serve the DHT to others: true always (an always-on node of your own), false never;
    /// unset, once the device is known to be reachable from outside.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dht_server: Option<bool>,
    /// Addresses this device can be reached at that it cannot see itself (a forwarded
    /// port, a public address): published for paired devices with what AutoNAT confirms.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub announce: Vec<String>,
    /// Relay for paired devices (reservations and circuits from them only, no byte or time
    /// limit), once this device is reachable from outside: their sync goes through it when
    /// their NATs defeat hole punching.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub relay_server: bool,
    /// Relay for anyone with libp2p's limits (2 minutes, 128 KiB a circuit): enough for
    /// others to pair and punch holes through, never to sync through.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub public_relay: bool,
    /// Relays to reserve a slot on while this device is not known to be reachable
    /// (multiaddrs ending in /p2p/<id>), besides paired devices that relay and relays met
    /// on the DHT.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub relays: Vec<String>,
}

/// The listen port a device uses unless told otherwise (TCP and QUIC).
pub const DEFAULT_PORT: u16 = 21900;

/// The public DHT's bootstrap nodes (the IPFS Amino DHT, as kubo lists them).
pub const PUBLIC_BOOTSTRAP: &[&str] = &[
    "/dnsaddr/bootstrap.libp2p.io/p2p/QmNnooDu7bfjPFoTZYxMNLWUQJyrVwtbZg5gBMjTezGAJN",
    "/dnsaddr/bootstrap.libp2p.io/p2p/QmQCU2EcMqAqQPR2i9bChDtGNJchTbq5TbXJJ16u19uLTa",
    "/dnsaddr/bootstrap.libp2p.io/p2p/QmbLHAnMoJPWSCR5Zhtx6BHJX9KiKNN6tpvbUcqanj75Nb",
    "/dnsaddr/bootstrap.libp2p.io/p2p/QmcZf59bWwK5XFi76CZX8cbJ4BhTzzA3gU1ZjYZcYW3dwt",
    "/ip4/104.131.131.82/tcp/4001/p2p/QmaCpDMGvV2BGHeYERUEnRQAwe3N8SzbUtfsmvsqQLuvuJ",
    "/ip4/104.131.131.82/udp/4001/quic-v1/p2p/QmaCpDMGvV2BGHeYERUEnRQAwe3N8SzbUtfsmvsqQLuvuJ",
];

impl NetworkConfig {
    /// The bootstrap peers to use: the configured list, else the public one if the
    /// public DHT is on, else none.
    pub fn bootstrap_peers(&self) -> Vec<String> {
        match (&self.bootstrap, self.public_dht) {
            (Some(list), _) => list.clone(),
            (None, true) => PUBLIC_BOOTSTRAP.iter().map(|s| s.to_string()).collect(),
            (None, false) => Vec::new(),
        }
    }
}

fn default_listen() -> Vec<String> {
    vec![
        format!("/ip4/0.0.0.0/tcp/{DEFAULT_PORT}"),
        format!("/ip4/0.0.0.0/udp/{DEFAULT_PORT}/quic-v1"),
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
            public_dht: true,
            bootstrap: None,
            dht_server: None,
            announce: Vec::new(),
            relay_server: false,
            public_relay: false,
            relays: Vec::new(),
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
        // 0600: it holds the rendezvous secrets of the paired devices.
        let written = {
            use std::io::Write;
            use std::os::unix::fs::OpenOptionsExt;
            std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&tmp)
                .and_then(|mut f| f.write_all(text.as_bytes()))
        };
        written.map_err(|source| ConfigError::Write {
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
    /// Versions kept as hard links (whole files named by content id), imported into
    /// [`Home::versions`] in the background (`versions.rs`); earlier versions kept their
    /// history here.
    pub fn history(&self) -> PathBuf {
        self.dir.join("history")
    }
    /// The version store (iroh-blobs), `versions.rs`.
    pub fn versions(&self) -> PathBuf {
        self.dir.join("versions")
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
        assert_eq!(c.network.bootstrap_peers().len(), PUBLIC_BOOTSTRAP.len());
        assert!(c.network.listen[0].ends_with(&format!("/tcp/{DEFAULT_PORT}")));
        assert_eq!(c.folders[0].kind, FolderType::ReceiveOnly);
        assert_eq!(c.folders[0].rescan_interval_s, 3600);
        let again: Config = toml::from_str(&toml::to_string_pretty(&c).unwrap()).unwrap();
        assert_eq!(again, c);
    }

    #[test]
    fn a_bootstrap_list_replaces_the_public_one_and_public_dht_false_turns_it_off() {
        let net = |text: &str| toml::from_str::<Config>(text).unwrap().network;
        let own = net(
            "[network]\nbootstrap = [\"/ip4/10.0.0.1/tcp/1/p2p/12D3KooWDpJ7As7BWAwRMfu1VU2WCqNjvq387JEYKDBj4kx6nXTN\"]\n",
        );
        assert_eq!(own.bootstrap_peers().len(), 1);
        assert!(
            net("[network]\nbootstrap = []\n")
                .bootstrap_peers()
                .is_empty()
        );
        assert!(
            net("[network]\npublic_dht = false\n")
                .bootstrap_peers()
                .is_empty()
        );
        for b in PUBLIC_BOOTSTRAP {
            let addr: libp2p::Multiaddr = b.parse().unwrap();
            assert!(matches!(
                addr.iter().last(),
                Some(libp2p::multiaddr::Protocol::P2p(_))
            ));
        }
    }

    #[test]
    fn bad_peer_ids_and_relative_paths_are_refused() {
        let mut c = Config::default();
        c.peers.push(PeerConfig {
            id: "not-a-peer".into(),
            name: String::new(),
            addresses: vec![],
            rendezvous: None,
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
            versions: Default::default(),
        });
        assert!(c.validate().is_err());
    }
}
