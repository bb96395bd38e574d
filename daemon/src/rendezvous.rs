//! Finding paired devices on the DHT under rendezvous keys (`cairn_core::rendezvous`).
//!
//! For every paired device with a rendezvous secret, this device provides the key of
//! (secret, its own id, epoch) for the epochs `publish_epochs` names, and stops providing
//! keys of past epochs. A provider record carries the device's external addresses (what
//! AutoNAT confirmed, relayed addresses, and `[network] announce`). When a paired device
//! must be dialled and is not connected, its key is looked up (at most every
//! [`LOOKUP_EVERY`]); a provider found under it that is that device is dialled at once,
//! while the lookup still holds the addresses it learnt.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant, SystemTime};

use cairn_core::rendezvous::RendezvousSecret;
use libp2p::swarm::ConnectionId;
use libp2p::{Multiaddr, PeerId, kad};

/// A paired device's key is looked up at most this often.
pub const LOOKUP_EVERY: Duration = Duration::from_secs(20);
/// Provider records are published again this often (and when the addresses change).
pub const PUBLISH_EVERY: Duration = Duration::from_secs(30 * 60);

/// What the daemon keeps for rendezvous.
#[derive(Default)]
pub struct Rendezvous {
    /// The secret shared with each paired device that has one.
    pub(crate) secrets: HashMap<PeerId, RendezvousSecret>,
    /// The keys to provide for these epochs (hashed once per epoch, not every tick).
    pub(crate) wanted: Option<(Vec<u64>, HashSet<kad::RecordKey>)>,
    /// Keys this device provides now.
    pub(crate) provided: HashSet<kad::RecordKey>,
    /// When the records were last published, and with which external addresses.
    pub(crate) published: Option<(Instant, Vec<Multiaddr>)>,
    /// Lookups running, and whose keys they look up.
    pub(crate) lookups: HashMap<kad::QueryId, PeerId>,
    pub(crate) last_lookup: HashMap<PeerId, Instant>,
    /// The dial made on a rendezvous find, per device, while it is under way: a device
    /// found again meanwhile is not dialled again. Several DHT nodes answer a lookup
    /// (and within an hour of an epoch's end it asks for two keys), and a dial on every
    /// answer opened as many relayed connections at once (four in the NAT lab), the
    /// per-peer limit (`peer_limits.rs`), so the connection a later hole punching try
    /// needed was refused.
    pub(crate) dialling: HashMap<PeerId, ConnectionId>,
}

impl Rendezvous {
    /// The secret shared with `peer` (a new pairing replaces the old one).
    pub fn add_secret(&mut self, peer: PeerId, secret: RendezvousSecret) {
        self.secrets.insert(peer, secret);
        self.wanted = None;
    }

    /// The keys this device provides in `epochs`, under its id `own`.
    pub(crate) fn wanted(&mut self, own: &[u8], epochs: Vec<u64>) -> HashSet<kad::RecordKey> {
        match &self.wanted {
            Some((at, keys)) if *at == epochs => keys.clone(),
            _ => {
                let keys: HashSet<kad::RecordKey> = self
                    .secrets
                    .values()
                    .flat_map(|s| epochs.iter().map(|e| kad::RecordKey::new(&s.key(own, *e))))
                    .collect();
                self.wanted = Some((epochs, keys.clone()));
                keys
            }
        }
    }
}

pub(crate) fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
