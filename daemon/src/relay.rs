//! NAT traversal: relay reservations while this device is not known to be reachable, hole
//! punching (DCUtR) over relayed connections, and the direct path preferred once it exists.
//!
//! - A connected peer whose identify lists the relay protocol (`/libp2p/circuit/relay/0.2.0/hop`)
//!   offers to relay. A relay only lists it once it has a confirmed external address, so an
//!   offer comes from a device others can reach.
//! - While AutoNAT has not said "public", this device holds reservations on up to
//!   [`MAX_RESERVATIONS`] relays. Paired devices that relay (`relay_server = true`, no
//!   limits) are taken first, and when one offers, only those: the relayed addresses that
//!   rendezvous records publish then lead through the group's own relay, which sync may go
//!   through. Otherwise configured relays (`[network] relays`), then any relay met (public
//!   relays are limited to 2 minutes and 128 KiB a circuit: enough to pair and punch holes).
//!   The relay client confirms each reserved address as external, so it is published.
//! - Once AutoNAT says public, the reservations are given up.
//! - A relayed connection is upgraded by DCUtR (both sides run it). When a direct connection
//!   to a peer opens, its relayed connections are closed, so requests go the direct way.
//! - DCUtR runs once per relayed connection (three attempts). A paired device reached only
//!   through a relay is dialled through the relay again now and then ([`Punch`]): the new
//!   relayed connection runs DCUtR again. Without this, one unlucky round (a NAT mapping
//!   not yet open, a lost packet) left the data going through the group's relay for as
//!   long as the connection lasted.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use libp2p::core::transport::ListenerId;
use libp2p::multiaddr::Protocol;
use libp2p::swarm::ConnectionId;
use libp2p::{Multiaddr, PeerId};

use crate::private_net::is_loopback;

/// Relays this device holds reservations on at most.
pub const MAX_RESERVATIONS: usize = 2;
/// Configured relays that are not connected are dialled again this often.
pub(crate) const REDIAL_CONFIGURED: Duration = Duration::from_secs(30);

/// What the daemon keeps for relaying.
#[derive(Default)]
pub struct Relays {
    /// Paired devices: whom this device's relay server (`relay_server = true`) serves.
    pub group: Arc<Mutex<HashSet<PeerId>>>,
    /// Connected peers that offer to relay, with an address they were reached at.
    pub(crate) offered: HashMap<PeerId, Multiaddr>,
    /// Reservations asked for or held, by relay.
    pub(crate) reservations: HashMap<PeerId, ListenerId>,
    /// Relays that accepted a reservation (until its listener closes).
    pub reserved: HashSet<PeerId>,
    /// `[network] relays`: (relay, address).
    pub(crate) configured: Vec<(PeerId, Multiaddr)>,
    pub(crate) configured_dialled: Option<Instant>,
    /// Relayed connections to close once a direct one took over, and when.
    pub(crate) replaced: Vec<(PeerId, ConnectionId, Instant)>,
    /// Paired devices reached only through a relay: when to try hole punching again.
    pub(crate) punches: HashMap<PeerId, Punch>,
}

/// Hole punching with a device reached only through a relay is tried again this long
/// after the connection opened, then twice as long each time, up to [`PUNCH_AGAIN_MAX`].
const PUNCH_AGAIN_FIRST: Duration = Duration::from_secs(30);
const PUNCH_AGAIN_MAX: Duration = Duration::from_secs(600);

/// The schedule of hole punching tried again with one device (while it is reached only
/// through a relay; forgotten once a direct connection opens or the device is gone).
#[derive(Debug)]
pub(crate) struct Punch {
    pub(crate) wait: Duration,
    pub(crate) next: Instant,
    /// The relayed connection the last try opened (closed when that try fails, or when the
    /// next one starts, unless it is the only connection left).
    pub(crate) tried: Option<ConnectionId>,
}

impl Punch {
    pub(crate) fn new(now: Instant) -> Punch {
        Punch {
            wait: PUNCH_AGAIN_FIRST,
            next: now + PUNCH_AGAIN_FIRST,
            tried: None,
        }
    }

    pub(crate) fn due(&self, now: Instant) -> bool {
        now >= self.next
    }

    /// A try started on connection `c`: the next one waits twice as long.
    pub(crate) fn tried(&mut self, now: Instant, c: ConnectionId) -> Option<ConnectionId> {
        self.next = now + self.wait;
        self.wait = (self.wait * 2).min(PUNCH_AGAIN_MAX);
        self.tried.replace(c)
    }
}

/// A relayed connection that a direct one replaces is closed this long after, so that
/// requests under way on it (the last message of a pairing) are answered first.
pub(crate) const REPLACED_GRACE: Duration = Duration::from_secs(3);

impl Relays {
    /// Relays from `[network] relays` (entries without a /p2p/ id are logged and skipped).
    pub fn new(configured: &[String], group: impl IntoIterator<Item = PeerId>) -> Relays {
        let configured = configured
            .iter()
            .filter_map(|a| match a.parse::<Multiaddr>() {
                Ok(ma) => match ma.iter().last() {
                    Some(Protocol::P2p(peer)) => Some((peer, ma)),
                    _ => {
                        tracing::warn!(address = %a, "relay_address_without_peer_id");
                        None
                    }
                },
                Err(e) => {
                    tracing::warn!(address = %a, error = %e, "relay_address_invalid");
                    None
                }
            })
            .collect();
        Relays {
            group: Arc::new(Mutex::new(group.into_iter().collect())),
            configured,
            ..Relays::default()
        }
    }

    /// Adds a paired device to those this device relays for.
    pub fn trust(&self, peer: PeerId) {
        if let Ok(mut g) = self.group.lock() {
            g.insert(peer);
        }
    }

    /// The relays to reserve on now, best first: `trusted` tells paired devices. When a
    /// paired device offers, only paired devices are chosen.
    pub(crate) fn choose(&self, trusted: impl Fn(&PeerId) -> bool) -> Vec<PeerId> {
        let rank = |p: &PeerId| {
            if trusted(p) {
                0
            } else if self.configured.iter().any(|(c, _)| c == p) {
                1
            } else {
                2
            }
        };
        let mut offered: Vec<PeerId> = self.offered.keys().copied().collect();
        offered.sort_by_key(|p| (rank(p), p.to_bytes()));
        if offered.first().is_some_and(|p| rank(p) == 0) {
            offered.retain(|p| rank(p) == 0);
        }
        offered.truncate(MAX_RESERVATIONS);
        offered
    }
}

/// The addresses a peer listed (identify) that can lead to it from here: its loopback
/// addresses only when it is on this host (it saw this device at a loopback address).
/// Elsewhere they lead back to this host: with the default port the same on every device,
/// a dial of a peer's 127.0.0.1:21900 reached this device itself, and the whole dial
/// failed on the wrong peer id, whatever other addresses it had.
pub fn reachable_addresses(listed: Vec<Multiaddr>, observed: &Multiaddr) -> Vec<Multiaddr> {
    // Over a relayed connection, the observed address is the relay's, wherever it is.
    if is_loopback(observed) && !is_circuit(observed) {
        return listed;
    }
    listed.into_iter().filter(|a| !is_loopback(a)).collect()
}

/// Whether `addr` leads through a relay (a circuit address).
pub(crate) fn is_circuit(addr: &Multiaddr) -> bool {
    addr.iter().any(|p| p == Protocol::P2pCircuit)
}

/// The address of a reservation on `relay` reached at `addr`.
pub(crate) fn circuit(addr: &Multiaddr, relay: PeerId) -> Multiaddr {
    let mut a: Multiaddr = addr
        .iter()
        .filter(|p| !matches!(p, Protocol::P2p(_)))
        .collect();
    a.push(Protocol::P2p(relay));
    a.push(Protocol::P2pCircuit);
    a
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer() -> PeerId {
        PeerId::random()
    }

    #[test]
    fn paired_relays_come_first_and_alone_then_configured_then_any() {
        let (paired, conf, any1, any2) = (peer(), peer(), peer(), peer());
        let addr: Multiaddr = "/ip4/10.0.0.1/tcp/21900".parse().unwrap();
        let conf_addr: Multiaddr = format!("/ip4/10.0.0.2/tcp/21900/p2p/{conf}")
            .parse()
            .unwrap();
        let mut r = Relays::new(&[conf_addr.to_string(), "/ip4/1.2.3.4/tcp/1".into()], []);
        assert_eq!(r.configured.len(), 1, "an entry without /p2p/ is skipped");
        assert!(r.choose(|_| false).is_empty(), "nothing offered");
        for p in [any1, any2, conf] {
            r.offered.insert(p, addr.clone());
        }
        let got = r.choose(|p| *p == paired);
        assert_eq!(got.len(), MAX_RESERVATIONS);
        assert_eq!(got[0], conf, "a configured relay before any other");
        r.offered.insert(paired, addr.clone());
        assert_eq!(
            r.choose(|p| *p == paired),
            vec![paired],
            "a paired relay alone"
        );
    }

    #[test]
    fn a_remote_peers_loopback_addresses_are_not_kept() {
        let listed: Vec<Multiaddr> = [
            "/ip4/127.0.0.1/tcp/21900",
            "/ip4/192.168.1.2/tcp/21900",
            "/ip6/::1/udp/21900/quic-v1",
        ]
        .iter()
        .map(|a| a.parse().unwrap())
        .collect();
        let far: Multiaddr = "/ip4/10.200.0.11/tcp/21900".parse().unwrap();
        let near: Multiaddr = "/ip4/127.0.0.1/tcp/40000".parse().unwrap();
        assert_eq!(
            reachable_addresses(listed.clone(), &far),
            vec![listed[1].clone()]
        );
        assert_eq!(reachable_addresses(listed.clone(), &near), listed);
        let relayed: Multiaddr = format!("/ip4/127.0.0.1/tcp/21900/p2p/{}/p2p-circuit", peer())
            .parse()
            .unwrap();
        assert_eq!(
            reachable_addresses(listed.clone(), &relayed),
            vec![listed[1].clone()],
            "a relay's loopback address says nothing of where the peer is"
        );
    }

    #[test]
    fn hole_punching_is_tried_again_later_each_time_up_to_a_limit() {
        let t0 = Instant::now();
        let mut p = Punch::new(t0);
        assert!(!p.due(t0), "not while the first round runs");
        assert!(p.due(t0 + PUNCH_AGAIN_FIRST));
        let mut at = t0 + PUNCH_AGAIN_FIRST;
        let mut waits = Vec::new();
        for i in 0..8 {
            let c = ConnectionId::new_unchecked(i);
            let previous = p.tried(at, c);
            assert_eq!(
                previous,
                (i > 0).then(|| ConnectionId::new_unchecked(i - 1))
            );
            assert!(!p.due(at));
            let next = p.next;
            waits.push((next - at).as_secs());
            at = next;
            assert!(p.due(at));
        }
        assert_eq!(waits, [30, 60, 120, 240, 480, 600, 600, 600]);
    }

    #[test]
    fn a_circuit_address_leads_through_a_relay() {
        let relayed: Multiaddr = format!("/ip4/10.0.0.1/tcp/1/p2p/{}/p2p-circuit", peer())
            .parse()
            .unwrap();
        assert!(is_circuit(&relayed));
        assert!(!is_circuit(&"/ip4/10.0.0.1/tcp/1".parse().unwrap()));
    }

    #[test]
    fn a_reservation_address_ends_in_the_relay_and_the_circuit() {
        let relay = peer();
        let a = circuit(&"/ip4/10.0.0.1/udp/21900/quic-v1".parse().unwrap(), relay);
        assert_eq!(
            a.to_string(),
            format!("/ip4/10.0.0.1/udp/21900/quic-v1/p2p/{relay}/p2p-circuit")
        );
        let again = circuit(&a.iter().take(4).collect(), relay);
        assert_eq!(again, a, "an address that names the relay names it once");
    }
}
