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
use libp2p::swarm::dial_opts::{DialOpts, PeerCondition};
use libp2p::{Multiaddr, PeerId, dcutr, relay};

use crate::engine::Engine;
use crate::metrics::Metrics;
use crate::private_net::is_loopback;

/// Relays this device holds reservations on at most.
pub const MAX_RESERVATIONS: usize = 2;
/// Configured relays that are not connected are dialled again this often.
const REDIAL_CONFIGURED: Duration = Duration::from_secs(30);

/// What the daemon keeps for relaying.
#[derive(Default)]
pub struct Relays {
    /// Paired devices: whom this device's relay server (`relay_server = true`) serves.
    pub group: Arc<Mutex<HashSet<PeerId>>>,
    /// Connected peers that offer to relay, with an address they were reached at.
    offered: HashMap<PeerId, Multiaddr>,
    /// Reservations asked for or held, by relay.
    reservations: HashMap<PeerId, ListenerId>,
    /// Relays that accepted a reservation (until its listener closes).
    pub reserved: HashSet<PeerId>,
    /// `[network] relays`: (relay, address).
    configured: Vec<(PeerId, Multiaddr)>,
    configured_dialled: Option<Instant>,
    /// Relayed connections to close once a direct one took over, and when.
    replaced: Vec<(PeerId, ConnectionId, Instant)>,
    /// Paired devices reached only through a relay: when to try hole punching again.
    punches: HashMap<PeerId, Punch>,
}

/// Hole punching with a device reached only through a relay is tried again this long
/// after the connection opened, then twice as long each time, up to [`PUNCH_AGAIN_MAX`].
const PUNCH_AGAIN_FIRST: Duration = Duration::from_secs(30);
const PUNCH_AGAIN_MAX: Duration = Duration::from_secs(600);

/// The schedule of hole punching tried again with one device (while it is reached only
/// through a relay; forgotten once a direct connection opens or the device is gone).
#[derive(Debug)]
struct Punch {
    wait: Duration,
    next: Instant,
    /// The relayed connection the last try opened (closed when that try fails, or when the
    /// next one starts, unless it is the only connection left).
    tried: Option<ConnectionId>,
}

impl Punch {
    fn new(now: Instant) -> Punch {
        Punch {
            wait: PUNCH_AGAIN_FIRST,
            next: now + PUNCH_AGAIN_FIRST,
            tried: None,
        }
    }

    fn due(&self, now: Instant) -> bool {
        now >= self.next
    }

    /// A try started on connection `c`: the next one waits twice as long.
    fn tried(&mut self, now: Instant, c: ConnectionId) -> Option<ConnectionId> {
        self.next = now + self.wait;
        self.wait = (self.wait * 2).min(PUNCH_AGAIN_MAX);
        self.tried.replace(c)
    }
}

/// A relayed connection that a direct one replaces is closed this long after, so that
/// requests under way on it (the last message of a pairing) are answered first.
const REPLACED_GRACE: Duration = Duration::from_secs(3);

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
    fn choose(&self, trusted: impl Fn(&PeerId) -> bool) -> Vec<PeerId> {
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
fn circuit(addr: &Multiaddr, relay: PeerId) -> Multiaddr {
    let mut a: Multiaddr = addr
        .iter()
        .filter(|p| !matches!(p, Protocol::P2p(_)))
        .collect();
    a.push(Protocol::P2p(relay));
    a.push(Protocol::P2pCircuit);
    a
}

impl Engine {
    /// A connected peer told what it runs (identify): whether it offers to relay.
    pub(crate) fn relay_identified(
        &mut self,
        peer: PeerId,
        protocols: &[libp2p::StreamProtocol],
        listen: &[Multiaddr],
    ) {
        let offers = protocols.contains(&relay::HOP_PROTOCOL_NAME);
        let direct = self.connections.contains_key(&peer) && !self.relayed_only(&peer);
        // Where to reach it if the connection drops: not through a relay, and not at a
        // loopback address unless it has nothing else (the reservation itself goes over
        // the open connection).
        let not_relayed = |a: &&Multiaddr| !is_circuit(a);
        let addr = listen
            .iter()
            .filter(not_relayed)
            .find(|a| !is_loopback(a))
            .or_else(|| listen.iter().find(not_relayed))
            .cloned();
        match (offers && direct, addr) {
            (true, Some(addr)) => {
                if self.relays.offered.insert(peer, addr).is_none() {
                    tracing::info!(relay = %peer, "relay_offered");
                }
            }
            _ => {
                self.relays.offered.remove(&peer);
            }
        }
    }

    /// Takes or gives up reservations (every tick), and dials configured relays.
    pub(crate) fn relay_tick(&mut self) {
        self.close_replaced();
        self.punch_again();
        let public = self.reachable_from_outside();
        if !public
            && !self.relays.configured.is_empty()
            && self
                .relays
                .configured_dialled
                .is_none_or(|t| t.elapsed() >= REDIAL_CONFIGURED)
        {
            self.relays.configured_dialled = Some(Instant::now());
            for (peer, addr) in self.relays.configured.clone() {
                if !self.connections.contains_key(&peer) {
                    let _ = self.swarm.dial(addr);
                }
            }
        }
        let wanted: Vec<PeerId> = if public {
            Vec::new()
        } else {
            let peers = self.node.peers();
            self.relays.choose(|p| peers.contains_key(p))
        };
        // A reservation no longer wanted is given up once a wanted one is held (so this
        // device is never without one while it switches), or at once when public.
        let switched = public || wanted.iter().any(|w| self.relays.reserved.contains(w));
        let drop: Vec<PeerId> = self
            .relays
            .reservations
            .keys()
            .filter(|r| switched && !wanted.contains(r))
            .copied()
            .collect();
        for relay in drop {
            if let Some(id) = self.relays.reservations.remove(&relay) {
                tracing::info!(relay = %relay, public, "relay_released");
                self.swarm.remove_listener(id);
                self.relays.reserved.remove(&relay);
            }
        }
        for relay in wanted {
            if self.relays.reservations.contains_key(&relay) {
                continue;
            }
            let Some(addr) = self.relays.offered.get(&relay) else {
                continue;
            };
            let at = circuit(addr, relay);
            match self.swarm.listen_on(at.clone()) {
                Ok(id) => {
                    tracing::info!(relay = %relay, address = %at, "relay_reserving");
                    self.relays.reservations.insert(relay, id);
                }
                Err(e) => tracing::warn!(relay = %relay, error = %e, "relay_reserve_failed"),
            }
        }
    }

    /// A listener closed: if it was a reservation, it is taken again when still wanted.
    pub(crate) fn relay_listener_closed(&mut self, id: ListenerId, why: &str) {
        let relay = self
            .relays
            .reservations
            .iter()
            .find(|(_, l)| **l == id)
            .map(|(r, _)| *r);
        if let Some(relay) = relay {
            tracing::info!(relay = %relay, why, "relay_reservation_closed");
            self.relays.reservations.remove(&relay);
            self.relays.reserved.remove(&relay);
        }
    }

    /// The last connection to `peer` closed.
    pub(crate) fn relay_peer_gone(&mut self, peer: &PeerId) {
        self.relays.offered.remove(peer);
    }

    pub(crate) fn on_relay_client(&mut self, event: relay::client::Event) {
        match event {
            relay::client::Event::ReservationReqAccepted {
                relay_peer_id,
                renewal,
                ..
            } => {
                if !renewal {
                    tracing::info!(relay = %relay_peer_id, "relay_reserved");
                }
                self.relays.reserved.insert(relay_peer_id);
            }
            relay::client::Event::OutboundCircuitEstablished { relay_peer_id, .. } => {
                tracing::debug!(relay = %relay_peer_id, "relay_circuit_out");
            }
            relay::client::Event::InboundCircuitEstablished { src_peer_id, .. } => {
                tracing::debug!(peer = %src_peer_id, "relay_circuit_in");
            }
        }
    }

    pub(crate) fn on_dcutr(&mut self, event: dcutr::Event) {
        let peer = event.remote_peer_id;
        match event.result {
            Ok(_) => {
                tracing::info!(peer = %peer, "hole_punched");
                Metrics::add(&self.metrics.hole_punches, 1);
            }
            Err(e) => {
                tracing::info!(peer = %peer, error = %e, "hole_punch_failed");
                Metrics::add(&self.metrics.hole_punch_failures, 1);
                // The connection a try opened has done its job.
                if let Some(c) = self
                    .relays
                    .punches
                    .get_mut(&peer)
                    .and_then(|p| p.tried.take())
                {
                    self.close_extra(peer, c);
                }
            }
        }
    }

    /// Closes connection `c` to `peer` unless it is the only one.
    fn close_extra(&mut self, peer: PeerId, c: ConnectionId) {
        let open = self.connections.get(&peer);
        if open.is_some_and(|o| o.contains(&c) && o.len() > 1) {
            self.swarm.close_connection(c);
        }
    }

    /// Whether `peer` is connected through relays only.
    pub(crate) fn relayed_only(&self, peer: &PeerId) -> bool {
        self.connections
            .get(peer)
            .is_some_and(|c| !c.is_empty() && c.iter().all(|id| self.relayed.contains(id)))
    }

    /// Tries hole punching again with paired devices reached only through a relay, when
    /// their [`Punch`] is due: this device dials the other through its relay (a new relayed
    /// connection, on which DCUtR runs again). One side dials: the one with the smaller id,
    /// or the one that holds no reservation (it cannot be dialled through a relay).
    fn punch_again(&mut self) {
        let now = Instant::now();
        let me = *self.swarm.local_peer_id();
        let relayed: HashSet<PeerId> = self
            .node
            .peers()
            .keys()
            .filter(|p| self.relayed_only(p))
            .copied()
            .collect();
        self.relays.punches.retain(|p, _| relayed.contains(p));
        let dialled_through_me = !self.relays.reserved.is_empty();
        for peer in relayed {
            let punch = self
                .relays
                .punches
                .entry(peer)
                .or_insert_with(|| Punch::new(now));
            if !punch.due(now) {
                continue;
            }
            let circuits: Vec<Multiaddr> = self
                .peer_listen
                .get(&peer)
                .into_iter()
                .flatten()
                .filter(|a| is_circuit(a))
                .cloned()
                .collect();
            if circuits.is_empty() || (dialled_through_me && me > peer) {
                // The other side dials (or nothing leads to it through a relay yet).
                punch.next = now + punch.wait;
                continue;
            }
            let opts = DialOpts::peer_id(peer)
                .addresses(circuits)
                .condition(PeerCondition::Always)
                .build();
            let c = opts.connection_id();
            let wait = punch.wait;
            let previous = punch.tried(now, c);
            tracing::info!(peer = %peer, next_in = ?wait, "hole_punch_again");
            if let Some(old) = previous {
                self.close_extra(peer, old);
            }
            if let Err(e) = self.swarm.dial(opts) {
                tracing::debug!(peer = %peer, error = %e, "hole_punch_again_not_dialled");
            }
        }
    }

    /// A connection to `peer` opened: when it is direct, its relayed connections are
    /// closed a moment later (requests then go the direct way; a relay's bandwidth is for
    /// when there is no other, and a public relay's circuits are short).
    pub(crate) fn prefer_direct(&mut self, peer: PeerId, opened: ConnectionId) {
        if self.relayed.contains(&opened) {
            return;
        }
        let at = Instant::now() + REPLACED_GRACE;
        for c in self.connections.get(&peer).into_iter().flatten() {
            if self.relayed.contains(c) {
                self.relays.replaced.push((peer, *c, at));
            }
        }
    }

    /// Closes the relayed connections whose grace ran out, if a direct one is still open.
    fn close_replaced(&mut self) {
        let now = Instant::now();
        let (due, later): (Vec<_>, Vec<_>) = std::mem::take(&mut self.relays.replaced)
            .into_iter()
            .partition(|(.., at)| *at <= now);
        self.relays.replaced = later;
        for (peer, c, _) in due {
            let Some(open) = self.connections.get(&peer) else {
                continue;
            };
            if open.contains(&c) && open.iter().any(|o| !self.relayed.contains(o)) {
                tracing::info!(peer = %peer, "relayed_connection_replaced_by_direct");
                self.swarm.close_connection(c);
            }
        }
    }
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
