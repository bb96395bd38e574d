//! The engine's side of `crate::relay`: reservations, hole punching and the switch to
//! direct connections, as the loop carries them out over the swarm.

use std::collections::HashSet;
use std::time::Instant;

use libp2p::core::transport::ListenerId;
use libp2p::swarm::ConnectionId;
use libp2p::swarm::dial_opts::{DialOpts, PeerCondition};
use libp2p::{Multiaddr, PeerId, dcutr, relay};

use super::Engine;
use crate::metrics::Metrics;
use crate::private_net::is_loopback;
use crate::relay::*;
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
