//! The swarm's side of the driver: connections, meta and blocks requests, serving chunks
//! within each peer's budget, and frames that break the protocol.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use cairn_core::conduct::Violation;
use cairn_core::wire::{BlocksRequest, BlocksResponse};
use libp2p::request_response::{self, InboundRequestId, ResponseChannel};
use libp2p::swarm::dial_opts::DialOpts;
use libp2p::swarm::{ConnectionId, SwarmEvent};
use libp2p::{Multiaddr, PeerId, identify, mdns};

use super::{Engine, Event};
use crate::metrics::Metrics;
use crate::net::{BehaviourEvent, FrameError};

/// A stream that ended inside a frame counts as a violation only if the connection is
/// still up this long after (a peer killed mid-frame is not hostile).
const TRUNCATION_GRACE: Duration = Duration::from_secs(2);
/// Blocks answers being read from disk at once for one peer.
const SERVE_JOBS_PER_PEER: usize = 4;
/// Bytes of blocks answers handed to the network and not yet sent, per peer; past it,
/// further requests of the peer wait their turn.
const SERVE_BYTES_PER_PEER: u64 = 16 << 20;

/// Blocks requests of one peer: answers being made, bytes handed to the network, and
/// requests waiting for their turn.
#[derive(Default)]
pub(crate) struct Serving {
    jobs: usize,
    bytes: u64,
    sent: HashMap<InboundRequestId, u64>,
    queue: std::collections::VecDeque<(InboundRequestId, ResponseChannel<Vec<u8>>, BlocksRequest)>,
}

/// What a swarm event is, for `slow_turn` logs.
pub(super) fn kind(event: &SwarmEvent<BehaviourEvent>) -> &'static str {
    match event {
        SwarmEvent::Behaviour(BehaviourEvent::Meta(request_response::Event::Message {
            message: request_response::Message::Request { .. },
            ..
        })) => "meta_request",
        SwarmEvent::Behaviour(BehaviourEvent::Meta(request_response::Event::Message {
            message: request_response::Message::Response { .. },
            ..
        })) => "meta_response",
        SwarmEvent::Behaviour(BehaviourEvent::Meta(_)) => "meta_other",
        SwarmEvent::Behaviour(BehaviourEvent::Blocks(_)) => "blocks",
        SwarmEvent::Behaviour(_) => "behaviour",
        SwarmEvent::ConnectionEstablished { .. } => "connection_established",
        SwarmEvent::ConnectionClosed { .. } => "connection_closed",
        _ => "swarm_other",
    }
}

impl Engine {
    /// A failed inbound or outbound stream: a refused frame is a violation; one cut
    /// short is, if the connection outlives it ([`TRUNCATION_GRACE`]).
    pub(crate) fn stream_failed(
        &mut self,
        peer: PeerId,
        connection: ConnectionId,
        error: &std::io::Error,
    ) {
        if let Some(refused) = FrameError::of(error) {
            self.frame_refused(peer, connection, refused, error.to_string());
        }
    }

    /// A request the codec refused ([`FrameError::refused_request`]): counted, and not
    /// answered. True if `request` was one.
    pub(crate) fn refused_request(
        &mut self,
        peer: PeerId,
        connection: ConnectionId,
        request: &[u8],
    ) -> bool {
        let Some(refused) = FrameError::refused_request(request) else {
            return false;
        };
        let reason = refused.to_string();
        self.frame_refused(peer, connection, &refused, reason);
        true
    }

    /// A frame over its limit is a violation at once; one cut short only if its connection
    /// outlives it ([`TRUNCATION_GRACE`]).
    fn frame_refused(
        &mut self,
        peer: PeerId,
        connection: ConnectionId,
        refused: &FrameError,
        reason: String,
    ) {
        match refused {
            FrameError::TooLarge { .. } => self.violation(peer, Violation::FrameTooLarge, &reason),
            FrameError::Truncated { .. } if self.truncated.len() < 1024 => {
                self.truncated
                    .push((peer, connection, reason, Instant::now()));
            }
            FrameError::Truncated { .. } => {}
        }
    }

    /// Timers of the conduct policy: truncations whose connection survived, reconnects
    /// after pairing.
    pub(crate) fn conduct_tick(&mut self, now: Instant) {
        let due: Vec<(PeerId, ConnectionId, String)> = self
            .truncated
            .iter()
            .filter(|(.., at)| now - *at >= TRUNCATION_GRACE)
            .map(|(p, c, r, _)| (*p, *c, r.clone()))
            .collect();
        self.truncated
            .retain(|(.., at)| now - *at < TRUNCATION_GRACE);
        for (peer, connection, reason) in due {
            if self
                .connections
                .get(&peer)
                .is_some_and(|c| c.contains(&connection))
            {
                self.violation(peer, Violation::Truncated, &reason);
            }
        }
        let reconnect: Vec<PeerId> = self
            .reconnect_at
            .iter()
            .filter(|(_, t)| now >= **t)
            .map(|(p, _)| *p)
            .collect();
        for peer in reconnect {
            self.reconnect_at.remove(&peer);
            if !self.swarm.behaviour().meta.is_open_to(&peer) {
                tracing::info!(peer = %peer, "reconnecting_after_pairing");
                let _ = self.swarm.disconnect_peer_id(peer);
                self.node.redial_soon();
            }
        }
    }

    fn on_meta(&mut self, event: request_response::Event<Vec<u8>, Vec<u8>>) {
        match event {
            request_response::Event::Message {
                peer,
                message,
                connection_id,
            } => match message {
                request_response::Message::Request {
                    request, channel, ..
                } => {
                    if self.refused_request(peer, connection_id, &request) {
                        return;
                    }
                    Metrics::add(&self.metrics.meta_bytes_received, request.len() as u64);
                    let bytes = self
                        .node
                        .handle_meta_request(Instant::now(), peer, &request);
                    // What the request changed is persisted before the answer goes out.
                    self.act();
                    Metrics::add(&self.metrics.meta_bytes_sent, bytes.len() as u64);
                    let _ = self
                        .swarm
                        .behaviour_mut()
                        .meta
                        .send_response(channel, bytes);
                }
                request_response::Message::Response {
                    request_id,
                    response,
                } => {
                    let Some((id, peer)) = self.meta_pending.remove(&request_id) else {
                        return;
                    };
                    Metrics::add(&self.metrics.meta_bytes_received, response.len() as u64);
                    if self
                        .node
                        .handle_meta_response(Instant::now(), peer, &id, &response)
                    {
                        tracing::info!(folder = %id, peer = %peer, "meta_denied_by_peer");
                    }
                }
            },
            request_response::Event::InboundFailure {
                peer,
                connection_id,
                error: request_response::InboundFailure::Io(e),
                ..
            } => self.stream_failed(peer, connection_id, &e),
            request_response::Event::OutboundFailure {
                request_id,
                peer,
                error,
                connection_id,
            } => {
                if let request_response::OutboundFailure::Io(e) = &error {
                    self.stream_failed(peer, connection_id, e);
                }
                if let Some((id, _)) = self.meta_pending.remove(&request_id) {
                    // The message may be lost: the node starts over with this peer.
                    self.node.handle_meta_failed(Instant::now(), peer, &id);
                    if matches!(
                        error,
                        request_response::OutboundFailure::UnsupportedProtocols
                    ) {
                        // The peer does not serve us meta: it does not trust this device.
                        tracing::info!(folder = %id, peer = %peer, "meta_refused_by_peer");
                    } else {
                        tracing::debug!(peer = %peer, error = %error, "meta_request_failed");
                    }
                }
            }
            _ => {}
        }
    }

    fn on_blocks(&mut self, event: request_response::Event<Vec<u8>, Vec<u8>>) {
        match event {
            request_response::Event::Message {
                peer,
                message,
                connection_id,
            } => match message {
                request_response::Message::Request {
                    request,
                    channel,
                    request_id,
                } => {
                    if self.refused_request(peer, connection_id, &request) {
                        return;
                    }
                    let req = match BlocksRequest::decode(&request) {
                        Ok(r) => r,
                        Err(e) => {
                            self.violation(peer, Violation::Malformed, &e.to_string());
                            let _ = self
                                .swarm
                                .behaviour_mut()
                                .blocks
                                .send_response(channel, BlocksResponse::Denied.encode());
                            return;
                        }
                    };
                    if !self.node.is_member(req.folder(), &peer) {
                        let _ = self
                            .swarm
                            .behaviour_mut()
                            .blocks
                            .send_response(channel, BlocksResponse::Denied.encode());
                        return;
                    }
                    self.serving
                        .entry(peer)
                        .or_default()
                        .queue
                        .push_back((request_id, channel, req));
                    self.serve_next(peer);
                }
                request_response::Message::Response {
                    request_id,
                    response,
                } => {
                    if let Some(reply) = self.blocks_pending.remove(&request_id) {
                        let decoded = BlocksResponse::decode_frame(crate::net::pooled(response))
                            .map_err(|e| e.to_string());
                        if let Err(e) = &decoded {
                            self.violation(peer, Violation::Malformed, e);
                        }
                        let _ = reply.send(decoded);
                    }
                }
            },
            request_response::Event::OutboundFailure {
                request_id,
                error,
                peer,
                connection_id,
            } => {
                if let request_response::OutboundFailure::Io(e) = &error {
                    self.stream_failed(peer, connection_id, e);
                }
                if let Some(reply) = self.blocks_pending.remove(&request_id) {
                    let _ = reply.send(Err(error.to_string()));
                }
            }
            request_response::Event::InboundFailure {
                peer,
                request_id,
                error,
                connection_id,
            } => {
                if let request_response::InboundFailure::Io(e) = &error {
                    self.stream_failed(peer, connection_id, e);
                }
                self.served(peer, request_id);
            }
            request_response::Event::ResponseSent {
                peer, request_id, ..
            } => self.served(peer, request_id),
        }
    }

    /// Starts answering the next waiting blocks requests of `peer`, within its budget: at
    /// most [`SERVE_JOBS_PER_PEER`] answers read at once, and none while more than
    /// [`SERVE_BYTES_PER_PEER`] of its answers wait to be sent. A peer that asks for more
    /// (or reads slowly) only waits longer; its requests hold nothing but a stream.
    fn serve_next(&mut self, peer: PeerId) {
        loop {
            let Some(s) = self.serving.get_mut(&peer) else {
                return;
            };
            if s.jobs >= SERVE_JOBS_PER_PEER || s.bytes >= SERVE_BYTES_PER_PEER {
                return;
            }
            let Some((request_id, channel, req)) = s.queue.pop_front() else {
                if s.jobs == 0 && s.sent.is_empty() {
                    self.serving.remove(&peer);
                }
                return;
            };
            let Some(root) = self.local.get(req.folder()).map(|l| l.record.root.clone()) else {
                let _ = self
                    .swarm
                    .behaviour_mut()
                    .blocks
                    .send_response(channel, BlocksResponse::Denied.encode());
                continue;
            };
            s.jobs += 1;
            let (index, versions, tx) = (
                self.index.clone(),
                self.versions.clone(),
                self.events_tx.clone(),
            );
            tokio::task::spawn_blocking(move || {
                let response = crate::serve::answer(&index, &versions, &root, &req);
                let _ = tx.send(Event::BlocksReady {
                    channel,
                    peer,
                    request_id,
                    response,
                });
            });
        }
    }

    /// An answer to `peer` was sent (or failed): its bytes leave the peer's budget.
    fn served(&mut self, peer: PeerId, request_id: InboundRequestId) {
        if let Some(s) = self.serving.get_mut(&peer)
            && let Some(n) = s.sent.remove(&request_id)
        {
            s.bytes = s.bytes.saturating_sub(n);
        }
        self.serve_next(peer);
    }

    /// An answer to a blocks request was read: it goes out within the peer's budget.
    pub(crate) fn blocks_ready(
        &mut self,
        channel: ResponseChannel<Vec<u8>>,
        peer: PeerId,
        request_id: InboundRequestId,
        response: crate::serve::Encoded,
    ) {
        if response.chunks > 0 && self.node.peers().contains_key(&peer) {
            self.metrics.peer(&peer.to_string(), |c| {
                c.chunks_sent += response.chunks;
                c.bytes_sent += response.chunk_bytes;
            });
        }
        let encoded = response.frame;
        let size = encoded.len() as u64;
        let sent = self
            .swarm
            .behaviour_mut()
            .blocks
            .send_response(channel, encoded)
            .is_ok();
        if let Some(s) = self.serving.get_mut(&peer) {
            s.jobs = s.jobs.saturating_sub(1);
            if sent {
                s.bytes += size;
                s.sent.insert(request_id, size);
            }
        }
        self.serve_next(peer);
    }

    pub(crate) fn on_swarm(&mut self, event: SwarmEvent<BehaviourEvent>) {
        match &event {
            SwarmEvent::ConnectionEstablished {
                peer_id,
                connection_id,
                endpoint,
                ..
            } => {
                // Opened (even if refused below): a rendezvous find may dial again.
                self.rendezvous_dial_ended(peer_id, *connection_id);
                if self.node.banned(peer_id, Instant::now()) {
                    tracing::debug!(peer = %peer_id, "banned_peer_refused");
                    let _ = self.swarm.close_connection(*connection_id);
                    return;
                }
                if endpoint.is_relayed() {
                    self.relayed.insert(*connection_id);
                }
                // How the first connection to it came about (what `cairn peers` shows).
                let how = if endpoint.is_dialer() {
                    self.dial_reason.remove(peer_id).unwrap_or("dht")
                } else {
                    "inbound"
                };
                self.found_by.entry(*peer_id).or_insert(how);
                self.connections
                    .entry(*peer_id)
                    .or_default()
                    .insert(*connection_id);
                self.prefer_direct(*peer_id, *connection_id);
                self.join_connected(*peer_id);
            }
            SwarmEvent::ConnectionClosed {
                peer_id,
                connection_id,
                num_established,
                ..
            } => {
                self.relayed.remove(connection_id);
                if let Some(c) = self.connections.get_mut(peer_id) {
                    c.remove(connection_id);
                    if c.is_empty() {
                        self.connections.remove(peer_id);
                        self.found_by.remove(peer_id);
                        self.relay_peer_gone(peer_id);
                    }
                }
                if *num_established == 0 {
                    self.peer_listen.remove(peer_id);
                    self.serving.remove(peer_id);
                }
            }
            _ => {}
        }
        match event {
            SwarmEvent::NewListenAddr { address, .. } => {
                tracing::info!(address = %address, "listening");
                self.listen.push(address);
            }
            SwarmEvent::ExpiredListenAddr { address, .. } => {
                self.listen.retain(|a| *a != address);
            }
            SwarmEvent::ListenerClosed {
                listener_id,
                reason,
                ..
            } => {
                let why = match &reason {
                    Ok(()) => "closed".to_string(),
                    Err(e) => e.to_string(),
                };
                self.relay_listener_closed(listener_id, &why);
            }
            SwarmEvent::OutgoingConnectionError {
                peer_id: Some(peer),
                connection_id,
                error,
            } if self.node.peers().contains_key(&peer) => {
                tracing::debug!(peer = %peer, error = %error, "dial_failed");
                self.rendezvous_dial_ended(&peer, connection_id);
            }
            SwarmEvent::Behaviour(BehaviourEvent::Relay(e)) => self.on_relay_client(e),
            SwarmEvent::Behaviour(BehaviourEvent::Dcutr(e)) => self.on_dcutr(e),
            SwarmEvent::ConnectionEstablished { peer_id, .. }
                if self.node.peers().contains_key(&peer_id)
                    && !self.node.is_connected(&peer_id)
                    && self.swarm.behaviour().meta.is_open_to(&peer_id) =>
            {
                tracing::info!(peer = %peer_id, "peer_connected");
                self.node.handle_connected(Instant::now(), peer_id);
            }
            SwarmEvent::ConnectionClosed { peer_id, .. }
                if !self.swarm.behaviour().meta.is_open_to(&peer_id)
                    && self.node.handle_disconnected(peer_id) =>
            {
                tracing::info!(peer = %peer_id, "peer_disconnected");
            }
            SwarmEvent::Behaviour(BehaviourEvent::Meta(e)) => self.on_meta(e),
            SwarmEvent::Behaviour(BehaviourEvent::Blocks(e)) => self.on_blocks(e),
            SwarmEvent::Behaviour(BehaviourEvent::Pair(e)) => self.on_pair(e),
            SwarmEvent::Behaviour(BehaviourEvent::Kad(
                libp2p::kad::Event::OutboundQueryProgressed {
                    id,
                    result: libp2p::kad::QueryResult::GetProviders(result),
                    step,
                    ..
                },
            )) => {
                let providers = match result {
                    Ok(libp2p::kad::GetProvidersOk::FoundProviders { providers, .. }) => providers,
                    _ => Default::default(),
                };
                if !self.rendezvous_found(id, &providers, step.last) {
                    for p in providers {
                        self.join_candidate(p);
                    }
                    if step.last {
                        self.join_lookup_done();
                    }
                }
            }
            SwarmEvent::Behaviour(BehaviourEvent::Identify(identify::Event::Received {
                peer_id,
                info,
                ..
            })) => {
                // At most a few addresses of a peer are believed (a stranger could list
                // thousands), and kept only while it is connected.
                let addrs: Vec<Multiaddr> = crate::relay::reachable_addresses(
                    info.listen_addrs.into_iter().take(8).collect(),
                    &info.observed_addr,
                );
                // Only a DHT server goes into the routing table: a server hands out what
                // its table holds to anyone who asks, and a device in client mode (behind
                // NAT, or any paired device) must not be findable by its bare id.
                let serves_dht = info
                    .protocols
                    .iter()
                    .any(|p| p.as_ref() == crate::net::KAD_PROTOCOL);
                if serves_dht {
                    for a in &addrs {
                        self.swarm
                            .behaviour_mut()
                            .kad
                            .add_address(&peer_id, a.clone());
                    }
                }
                self.relay_identified(peer_id, &info.protocols, &addrs);
                if self.connections.contains_key(&peer_id) {
                    self.peer_listen.insert(peer_id, addrs);
                }
            }
            SwarmEvent::Behaviour(BehaviourEvent::Autonat(
                libp2p::autonat::Event::StatusChanged { new, .. },
            )) => {
                self.reachability = match new {
                    libp2p::autonat::NatStatus::Public(_) => "public",
                    libp2p::autonat::NatStatus::Private => "behind NAT",
                    libp2p::autonat::NatStatus::Unknown => "unknown",
                };
                tracing::info!(reachability = self.reachability, "reachability_changed");
                self.set_dht_mode();
            }
            SwarmEvent::Behaviour(BehaviourEvent::Mdns(mdns::Event::Discovered(found))) => {
                let mut by_peer: HashMap<PeerId, Vec<Multiaddr>> = HashMap::new();
                // Not into the DHT's routing table (see identify above): mDNS itself
                // gives the addresses it found to every dial of that peer.
                for (peer, addr) in found {
                    by_peer.entry(peer).or_default().push(addr);
                }
                // A paired device seen on the LAN is dialled at once, with every address it
                // announced in one dial: dials of one address each are dropped while the
                // first (perhaps a loopback address of the other host) is pending. mDNS
                // keeps the addresses for the periodic redial. A device on the LAN may be
                // the inviter a join looks for.
                for peer in by_peer.keys() {
                    self.join_candidate(*peer);
                }
                for (peer, addrs) in by_peer {
                    if self.node.peers().contains_key(&peer)
                        && !self.node.is_connected(&peer)
                        && !self.node.banned(&peer, Instant::now())
                    {
                        self.dial_reason.insert(peer, "mdns");
                        let _ = self
                            .swarm
                            .dial(DialOpts::peer_id(peer).addresses(addrs).build());
                    }
                }
            }
            SwarmEvent::Behaviour(BehaviourEvent::Kad(
                libp2p::kad::Event::OutboundQueryProgressed {
                    result: libp2p::kad::QueryResult::GetClosestPeers(Ok(ok)),
                    ..
                },
            )) => {
                for info in ok.peers {
                    if self.node.peers().contains_key(&info.peer_id)
                        && !self.node.is_connected(&info.peer_id)
                        && !info.addrs.is_empty()
                    {
                        let _ = self.swarm.dial(
                            DialOpts::peer_id(info.peer_id)
                                .addresses(info.addrs)
                                .build(),
                        );
                    }
                }
            }
            _ => {}
        }
    }
}
