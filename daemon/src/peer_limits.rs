//! Connections per peer, direct and relayed counted apart.
//!
//! libp2p's `connection_limits` counts every connection to a peer against one limit. Two
//! devices that meet through relays can hold several relayed connections at once (both
//! dial, through two relays each, while a pairing's connection is replaced). With the
//! limit reached by relayed ones, the direct connections that hole punching opened were
//! refused: DCUtR had already reported success (it sees the connection before the limit
//! does), tried twice more and gave up, and the devices stayed relayed (the NAT lab hit
//! this once in six runs). Counted apart, relayed connections never crowd out a direct
//! one; both counts stay bounded for a peer that opens connections on purpose.

use std::collections::{HashMap, HashSet};
use std::convert::Infallible;
use std::task::{Context, Poll};

use libp2p::core::Endpoint;
use libp2p::core::transport::PortUse;
use libp2p::swarm::{
    ConnectionDenied, ConnectionId, FromSwarm, NetworkBehaviour, THandler, THandlerInEvent,
    THandlerOutEvent, ToSwarm, dummy,
};
use libp2p::{Multiaddr, PeerId};

use crate::relay::is_circuit;

/// Too many connections of one kind to one peer.
#[derive(Debug, thiserror::Error)]
#[error("{kind} connections to {peer}: at most {max}")]
pub struct TooMany {
    peer: PeerId,
    kind: &'static str,
    max: usize,
}

/// The connections open to each peer, by kind.
#[derive(Debug, Default)]
struct Counts {
    open: HashMap<PeerId, HashSet<(ConnectionId, bool)>>,
}

impl Counts {
    fn count(&self, peer: &PeerId, relayed: bool) -> usize {
        self.open
            .get(peer)
            .map_or(0, |c| c.iter().filter(|(_, r)| *r == relayed).count())
    }

    fn add(&mut self, peer: PeerId, id: ConnectionId, relayed: bool) {
        self.open.entry(peer).or_default().insert((id, relayed));
    }

    fn remove(&mut self, peer: &PeerId, id: ConnectionId) {
        if let Some(c) = self.open.get_mut(peer) {
            c.retain(|(i, _)| *i != id);
            if c.is_empty() {
                self.open.remove(peer);
            }
        }
    }
}

/// At most `max` direct and `max` relayed connections to each peer.
pub struct PeerLimits {
    max: usize,
    counts: Counts,
}

impl PeerLimits {
    pub fn new(max: usize) -> PeerLimits {
        PeerLimits {
            max,
            counts: Counts::default(),
        }
    }

    fn check(&self, peer: PeerId, relayed: bool) -> Result<(), ConnectionDenied> {
        if self.counts.count(&peer, relayed) >= self.max {
            let kind = if relayed { "relayed" } else { "direct" };
            return Err(ConnectionDenied::new(TooMany {
                peer,
                kind,
                max: self.max,
            }));
        }
        Ok(())
    }
}

impl NetworkBehaviour for PeerLimits {
    type ConnectionHandler = dummy::ConnectionHandler;
    type ToSwarm = Infallible;

    fn handle_established_inbound_connection(
        &mut self,
        _id: ConnectionId,
        peer: PeerId,
        local_addr: &Multiaddr,
        _remote_addr: &Multiaddr,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        self.check(peer, is_circuit(local_addr))?;
        Ok(dummy::ConnectionHandler)
    }

    fn handle_established_outbound_connection(
        &mut self,
        _id: ConnectionId,
        peer: PeerId,
        addr: &Multiaddr,
        _role_override: Endpoint,
        _port_use: PortUse,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        self.check(peer, is_circuit(addr))?;
        Ok(dummy::ConnectionHandler)
    }

    fn on_swarm_event(&mut self, event: FromSwarm) {
        // Counted once established (a connection another behaviour refused never is).
        match event {
            FromSwarm::ConnectionEstablished(e) => {
                self.counts
                    .add(e.peer_id, e.connection_id, e.endpoint.is_relayed());
            }
            FromSwarm::ConnectionClosed(e) => self.counts.remove(&e.peer_id, e.connection_id),
            _ => {}
        }
    }

    fn on_connection_handler_event(
        &mut self,
        _peer: PeerId,
        _id: ConnectionId,
        event: THandlerOutEvent<Self>,
    ) {
        match event {}
    }

    fn poll(
        &mut self,
        _cx: &mut Context<'_>,
    ) -> Poll<ToSwarm<Self::ToSwarm, THandlerInEvent<Self>>> {
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relayed_connections_do_not_crowd_out_a_direct_one() {
        let peer = PeerId::random();
        let mut limits = PeerLimits::new(4);
        for i in 0..4 {
            assert!(limits.check(peer, true).is_ok());
            limits
                .counts
                .add(peer, ConnectionId::new_unchecked(i), true);
        }
        assert!(limits.check(peer, true).is_err(), "a fifth relayed one");
        assert!(
            limits.check(peer, false).is_ok(),
            "a direct one beside four relayed"
        );
        for i in 4..8 {
            limits
                .counts
                .add(peer, ConnectionId::new_unchecked(i), false);
        }
        assert!(limits.check(peer, false).is_err(), "a fifth direct one");
        assert!(
            limits.check(PeerId::random(), false).is_ok(),
            "another peer"
        );
        limits.counts.remove(&peer, ConnectionId::new_unchecked(5));
        assert!(
            limits.check(peer, false).is_ok(),
            "one closed, one more allowed"
        );
        for i in 0..8 {
            limits.counts.remove(&peer, ConnectionId::new_unchecked(i));
        }
        assert!(
            limits.counts.open.is_empty(),
            "nothing kept for a peer with none open"
        );
    }
}
