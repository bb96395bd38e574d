//! Starting the daemon: opening the index and the version store, loading the folders,
//! listening, and waiting for the listeners' addresses before the first dials.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use cairn_core::folder::{DeviceId, TreeOptions};
use cairn_core::node::Node;
use futures::StreamExt;
use libp2p::{Multiaddr, PeerId};
use tokio::sync::mpsc;

use super::{Engine, load_folder};
use crate::config::{Config, Home};
use crate::index::Index;
use crate::metrics::Metrics;

/// Errors starting the daemon.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Index(#[from] crate::index::IndexError),
    #[error(transparent)]
    Net(#[from] crate::net::NetError),
    #[error("folder {id}: {why}")]
    Folder { id: String, why: String },
    #[error("cannot listen on {addr}: {why}")]
    Listen { addr: String, why: String },
    #[error(transparent)]
    Versions(#[from] crate::versions::VersionError),
}

/// Whether another socket holds the fixed port of `addr`: a plain bind is tried first,
/// because libp2p listens with SO_REUSEPORT, so a second daemon of the same user would
/// otherwise share the port with the first (the kernel splitting connections between them).
fn port_taken(addr: &Multiaddr) -> Option<std::io::Error> {
    use libp2p::multiaddr::Protocol;
    let mut parts = addr.iter();
    let ip: std::net::IpAddr = match parts.next()? {
        Protocol::Ip4(a) => a.into(),
        Protocol::Ip6(a) => a.into(),
        _ => return None,
    };
    let probe = match parts.next()? {
        Protocol::Tcp(port) if port != 0 => std::net::TcpListener::bind((ip, port)).err(),
        Protocol::Udp(port) if port != 0 => std::net::UdpSocket::bind((ip, port)).err(),
        _ => None,
    };
    probe.filter(|e| e.kind() == std::io::ErrorKind::AddrInUse)
}

/// How long the daemon waits at start for its listeners' addresses before it dials.
const LISTEN_WAIT: Duration = Duration::from_secs(1);

/// Whether every configured TCP listener on a wildcard address has reported an address of
/// its family other than loopback (libp2p-tcp then dials from its port).
fn tcp_listeners_known(configured: &[String], reported: &[Multiaddr]) -> bool {
    use libp2p::multiaddr::Protocol;
    let family = |ma: &Multiaddr| -> Option<(bool, bool, bool)> {
        let mut it = ma.iter();
        let (v4, unspecified, loopback) = match it.next()? {
            Protocol::Ip4(a) => (true, a.is_unspecified(), a.is_loopback()),
            Protocol::Ip6(a) => (false, a.is_unspecified(), a.is_loopback()),
            _ => return None,
        };
        matches!(it.next()?, Protocol::Tcp(_)).then_some((v4, unspecified, loopback))
    };
    configured
        .iter()
        .filter_map(|a| family(&a.parse().ok()?))
        .filter(|(_, unspecified, _)| *unspecified)
        .all(|(v4, _, _)| {
            reported
                .iter()
                .filter_map(family)
                .any(|(rv4, _, loopback)| rv4 == v4 && !loopback)
        })
}

/// Listens on `addr`; a fixed port that is taken (another daemon, another program) falls
/// back to a port the system picks, so the device still starts, and says so.
fn listen(swarm: &mut libp2p::Swarm<crate::net::Behaviour>, addr: Multiaddr) -> Result<(), String> {
    use libp2p::multiaddr::Protocol;
    let tried = match port_taken(&addr) {
        Some(e) => Err(e.to_string()),
        None => swarm.listen_on(addr.clone()).map_err(|e| e.to_string()),
    };
    match tried {
        Ok(_) => Ok(()),
        Err(e) => {
            let fixed = addr
                .iter()
                .any(|p| matches!(p, Protocol::Tcp(n) | Protocol::Udp(n) if n != 0));
            if !fixed {
                return Err(e);
            }
            let any: Multiaddr = addr
                .iter()
                .map(|p| match p {
                    Protocol::Tcp(_) => Protocol::Tcp(0),
                    Protocol::Udp(_) => Protocol::Udp(0),
                    p => p,
                })
                .collect();
            tracing::warn!(address = %addr, error = %e, fallback = %any, "listen_port_taken");
            swarm.listen_on(any).map(|_| ()).map_err(|e| e.to_string())
        }
    }
}

impl Engine {
    /// Opens the index, loads every folder and starts listening.
    pub fn new(
        home: Home,
        config: &Config,
        config_path: PathBuf,
        key: libp2p::identity::Keypair,
    ) -> Result<Self, StartError> {
        let local_id = key.public().to_peer_id();
        let device = DeviceId::from_identity(&local_id.to_bytes());
        let index = Arc::new(Index::open(&home.index())?);
        // Opened and migrated before anything else runs (blocking this worker: the daemon
        // has not started yet).
        let (versions, kept_versions) = tokio::task::block_in_place(|| {
            let store = crate::versions::VersionStore::open(
                &home.versions(),
                &home.history(),
                tokio::runtime::Handle::current(),
            )?;
            crate::versions::migrate(&index)?;
            crate::versions::drop_unlisted(&index, &store)?;
            let kept = index.all_history().map_or(0, |h| h.len());
            let bytes = store.disk_bytes();
            Ok::<_, crate::versions::VersionError>((Arc::new(store), (kept, bytes)))
        })?;
        crate::versions::spawn_importer(index.clone(), versions.clone())
            .map_err(crate::versions::VersionError::Io)?;
        let private_only = crate::private_net::switch_on();
        if private_only {
            tracing::info!("private_network_only: dialling loopback and private addresses only");
        }
        let relays = crate::relay::Relays::new(
            &config.network.relays,
            config
                .peers
                .iter()
                .filter_map(|p| p.id.parse::<PeerId>().ok()),
        );
        let net = crate::net::NetOptions {
            mdns: config.network.mdns,
            private_only,
            relay: if config.network.relay_server {
                crate::net::RelayServe::Group(relays.group.clone())
            } else if config.network.public_relay {
                crate::net::RelayServe::Public
            } else {
                crate::net::RelayServe::Off
            },
        };
        let mut swarm = crate::net::build_swarm(key, &net)?;
        for addr in &config.network.listen {
            let ma: Multiaddr = addr.parse().map_err(|e| StartError::Listen {
                addr: addr.clone(),
                why: format!("{e}"),
            })?;
            listen(&mut swarm, ma).map_err(|why| StartError::Listen {
                addr: addr.clone(),
                why,
            })?;
        }
        for b in config.network.bootstrap_peers() {
            if let Ok(ma) = b.parse::<Multiaddr>()
                && let Some(libp2p::multiaddr::Protocol::P2p(peer)) = ma.iter().last()
            {
                swarm.behaviour_mut().kad.add_address(&peer, ma.clone());
            }
        }
        // Addresses the device says it has (a forwarded port, an address it cannot see).
        for a in &config.network.announce {
            match a.parse::<Multiaddr>() {
                Ok(ma) => swarm.add_external_address(ma),
                Err(e) => tracing::warn!(address = %a, error = %e, "announce_address_invalid"),
            }
        }
        let mut node = Node::new(device, config.device_name(), TreeOptions::default());
        // Large batches of document changes (a directory rename, a big sync message) are
        // recorded and applied shard by shard on every core.
        node.set_workers(std::thread::available_parallelism().map_or(1, |n| n.get()));
        // Tests make passes over small folders with a small window.
        if let Some(w) = std::env::var("CAIRN_PULL_WINDOW")
            .ok()
            .and_then(|v| v.parse().ok())
        {
            node.set_pull_window(w);
        }
        let mut addresses = HashMap::new();
        let mut rendezvous = crate::rendezvous::Rendezvous::default();
        for p in &config.peers {
            if let Ok(id) = p.id.parse::<PeerId>() {
                if let Some(secret) = p
                    .rendezvous
                    .as_deref()
                    .and_then(cairn_core::rendezvous::RendezvousSecret::from_hex)
                {
                    rendezvous.add_secret(id, secret);
                }
                // Remembered addresses are dialled as they are; they do not go into the
                // DHT's routing table, which a DHT server hands out to anyone.
                let addrs: Vec<Multiaddr> =
                    p.addresses.iter().filter_map(|a| a.parse().ok()).collect();
                swarm.behaviour_mut().meta.allow(id);
                swarm.behaviour_mut().blocks.allow(id);
                node.add_peer(id, p.name.clone(), DeviceId::from_identity(&id.to_bytes()));
                addresses.insert(id, addrs);
            }
        }
        for d in &config.declined {
            if let Ok(peer) = d.device.parse::<PeerId>() {
                node.decline(&d.folder, peer);
            }
        }
        let (net_tx, net_rx) = mpsc::unbounded_channel();
        let (events_tx, events_rx) = mpsc::unbounded_channel();
        let now = Instant::now();
        let mut local = BTreeMap::new();
        for fc in &config.folders {
            let (l, spec, doc) = load_folder(&index, fc, device, &events_tx)?;
            node.add_folder(now, spec, doc);
            node.restore_requested(now, &fc.id, index.requested(&fc.id)?);
            local.insert(fc.id.clone(), l);
        }
        tracing::info!(peer_id = %local_id, device = %device.short(), folders = local.len(), "daemon_started");
        let mut engine = Engine {
            swarm,
            index,
            versions,
            metrics: Arc::new(Metrics::default()),
            node,
            local,
            addresses,
            meta_pending: HashMap::new(),
            blocks_pending: HashMap::new(),
            net_tx,
            net_rx,
            events_tx,
            events_rx,
            started: (now, SystemTime::now()),
            listen: Vec::new(),
            shutdown: false,
            config: config.clone(),
            config_path,
            device,
            peer_listen: HashMap::new(),
            invitation: None,
            join: None,
            pair_pending: HashMap::new(),
            reconnect_at: HashMap::new(),
            serving: HashMap::new(),
            truncated: Vec::new(),
            connections: HashMap::new(),
            status_tx: tokio::sync::watch::channel(None).0,
            status_at: None,
            status_dirty: true,
            prune_due: false,
            rendezvous,
            reachability: "unknown",
            relayed: HashSet::new(),
            dial_reason: HashMap::new(),
            found_by: HashMap::new(),
            dht_peers: 0,
            private_only,
            relays,
            kept_versions,
            next_version_prune: now + crate::history::FIRST_PRUNE_AFTER,
            recount_versions: false,
            last_version_count: now,
        };
        engine.set_dht_mode();
        Ok(engine)
    }

    /// Holds the first dials until each TCP listener on a wildcard address (`0.0.0.0`, `::`)
    /// has reported an address other than loopback, for at most [`LISTEN_WAIT`].
    ///
    /// libp2p-tcp dials from the listening port (so that a NAT maps both to one public
    /// port) only once the listener has reported its addresses, which for a wildcard comes
    /// from watching the interfaces, a little after the daemon starts. Connections dialled
    /// before that leave from ephemeral ports: the DHT nodes and relays then observe, and
    /// hole punching tries, public ports nothing listens at (after a restart behind NAT,
    /// every round of DCUtR failed on them).
    pub(super) async fn await_listen_addresses(&mut self) {
        let deadline = tokio::time::sleep(LISTEN_WAIT);
        tokio::pin!(deadline);
        while !tcp_listeners_known(&self.config.network.listen, &self.listen) {
            tokio::select! {
                event = self.swarm.select_next_some() => self.on_swarm(event),
                _ = &mut deadline => {
                    tracing::info!(listening = ?self.listen, "listen_addresses_incomplete");
                    break;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::tcp_listeners_known;

    fn addrs(list: &[&str]) -> Vec<libp2p::Multiaddr> {
        list.iter().map(|a| a.parse().unwrap()).collect()
    }

    #[test]
    fn dials_wait_for_a_wildcard_tcp_listeners_address_other_than_loopback() {
        let wildcard = ["/ip4/0.0.0.0/tcp/21900".to_string()];
        assert!(!tcp_listeners_known(&wildcard, &[]));
        let loopback_only = addrs(&["/ip4/127.0.0.1/tcp/21900"]);
        assert!(!tcp_listeners_known(&wildcard, &loopback_only));
        // QUIC's addresses say nothing of the TCP listener.
        let quic = addrs(&[
            "/ip4/127.0.0.1/tcp/21900",
            "/ip4/10.0.0.2/udp/21900/quic-v1",
        ]);
        assert!(!tcp_listeners_known(&wildcard, &quic));
        let lan = addrs(&["/ip4/127.0.0.1/tcp/21900", "/ip4/10.0.0.2/tcp/21900"]);
        assert!(tcp_listeners_known(&wildcard, &lan));
        // An IPv6 wildcard needs an IPv6 address.
        let both = [wildcard[0].clone(), "/ip6/::/tcp/21900".to_string()];
        assert!(!tcp_listeners_known(&both, &lan));
        let mut lan6 = lan.clone();
        lan6.extend(addrs(&["/ip6/fe80::1/tcp/21900"]));
        assert!(tcp_listeners_known(&both, &lan6));
        // A listener on a given address registers its port as it starts listening.
        assert!(tcp_listeners_known(
            &["/ip4/127.0.0.1/tcp/4001".to_string()],
            &[]
        ));
        assert!(tcp_listeners_known(
            &["/ip4/0.0.0.0/udp/4001/quic-v1".to_string()],
            &[]
        ));
    }
}
