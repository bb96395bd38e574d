//! The engine's side of `crate::pair`: invitations and joins by pairing code, as the
//! loop carries them out over the swarm.

use std::collections::{HashSet, VecDeque};
use std::time::{Duration, Instant};

use cairn_core::pairing::{INVITATION_TTL_S, Inviter, Joiner, PairCode, PairRequest, PairResponse};
use cairn_core::rendezvous::RendezvousSecret;
use libp2p::PeerId;
use libp2p::request_response::{self, Message};
use libp2p::swarm::dial_opts::DialOpts;

use super::Engine;
use crate::config::PeerConfig;
use crate::pair::*;
impl Engine {
    /// Handles one pairing request from the control API.
    pub(crate) fn on_pair_ctl(&mut self, ctl: PairCtl) {
        match ctl {
            PairCtl::Invite(reply) => {
                if let Some(old) = self.invitation.take() {
                    self.swarm
                        .behaviour_mut()
                        .kad
                        .stop_providing(&key(old.code.nameplate));
                }
                let mut random = [0u8; 4];
                rand::Rng::fill(&mut rand::rng(), &mut random);
                let code = PairCode::from_random(random);
                let _ = self
                    .swarm
                    .behaviour_mut()
                    .kad
                    .start_providing(key(code.nameplate));
                // CAIRN_PAIR_TTL_S can only shorten the lifetime (tests of expiry).
                let ttl = std::env::var("CAIRN_PAIR_TTL_S")
                    .ok()
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(INVITATION_TTL_S)
                    .min(INVITATION_TTL_S);
                let status = InviteStatus::Waiting {
                    code: code.to_string(),
                    expires_in_s: ttl,
                };
                self.invitation = Some(Invitation {
                    code,
                    expires: Instant::now() + Duration::from_secs(ttl),
                    status: status.clone(),
                    attempts: Attempts::default(),
                    published: self.swarm.external_addresses().cloned().collect(),
                });
                tracing::info!("pair_invitation_created");
                let _ = reply.send(status);
            }
            PairCtl::InviteStatus(reply) => {
                let _ = reply.send(self.invite_status());
            }
            PairCtl::Join { code, reply } => {
                let code = match PairCode::parse(&code) {
                    Ok(c) => c,
                    Err(e) => {
                        let _ = reply.send(Err(e.to_string()));
                        return;
                    }
                };
                if let Some(mut old) = self.join.take()
                    && let Some(r) = old.reply.take()
                {
                    let _ = r.send(Err("replaced by a newer join".into()));
                }
                self.swarm
                    .behaviour_mut()
                    .kad
                    .get_providers(key(code.nameplate));
                // Devices connected now and those mDNS found on the LAN; the DHT lookup
                // adds the providers of the nameplate.
                let mut candidates: VecDeque<PeerId> = self.connections.keys().copied().collect();
                if let Some(mdns) = self.swarm.behaviour().mdns.as_ref() {
                    for p in mdns.discovered_nodes() {
                        if !candidates.contains(p) {
                            candidates.push_back(*p);
                        }
                    }
                }
                self.join = Some(Join {
                    code,
                    candidates,
                    tried: HashSet::new(),
                    current: None,
                    deadline: Instant::now() + JOIN_TIMEOUT,
                    reply: Some(reply),
                    secret: None,
                    mismatched: 0,
                    started: Instant::now(),
                    lookup_again: None,
                });
                self.advance_join();
            }
        }
    }

    fn invite_status(&mut self) -> InviteStatus {
        match &mut self.invitation {
            None => InviteStatus::None,
            Some(inv) => {
                if let InviteStatus::Waiting { expires_in_s, .. } = &mut inv.status {
                    let left = inv
                        .expires
                        .saturating_duration_since(Instant::now())
                        .as_secs();
                    if left == 0 {
                        inv.status = InviteStatus::Expired;
                    } else {
                        *expires_in_s = left;
                    }
                }
                inv.status.clone()
            }
        }
    }

    /// Adds a candidate inviter for the current join (from mDNS or the DHT).
    pub(crate) fn join_candidate(&mut self, peer: PeerId) {
        let Some(join) = &mut self.join else { return };
        if peer != *self.swarm.local_peer_id()
            && !join.tried.contains(&peer)
            && !join.candidates.contains(&peer)
        {
            join.candidates.push_back(peer);
        }
        self.advance_join();
    }

    /// The DHT lookup for the join's nameplate has finished.
    pub(crate) fn join_lookup_done(&mut self) {
        // With mDNS on, a device on the LAN may still be found by the next query.
        let grace = if self.swarm.behaviour().mdns.is_enabled() {
            crate::net::MDNS_QUERY_INTERVAL + Duration::from_secs(2)
        } else {
            Duration::from_secs(3)
        };
        if let Some(join) = &mut self.join
            && join.current.is_none()
            && join.candidates.is_empty()
        {
            let now = Instant::now();
            join.deadline = join.deadline.min(now + grace);
            join.look_again(now);
        }
    }

    /// A connection came up: a join may have been waiting for it.
    pub(crate) fn join_connected(&mut self, peer: PeerId) {
        let waiting = self
            .join
            .as_ref()
            .is_some_and(|j| matches!(&j.current, Some((p, None)) if *p == peer));
        if waiting {
            self.send_hello(peer);
        }
    }

    fn advance_join(&mut self) {
        let Some(join) = &mut self.join else { return };
        if join.current.is_some() {
            return;
        }
        let Some(peer) = join.candidates.pop_front() else {
            return;
        };
        join.tried.insert(peer);
        join.current = Some((peer, None));
        if self.connections.contains_key(&peer) {
            self.send_hello(peer);
        } else {
            let _ = self.swarm.dial(DialOpts::peer_id(peer).build());
        }
    }

    fn send_hello(&mut self, peer: PeerId) {
        let local = self.swarm.local_peer_id().to_bytes();
        let Some(join) = &mut self.join else { return };
        let (joiner, spake) = Joiner::start(&join.code, &local, &peer.to_bytes());
        join.current = Some((peer, Some(joiner)));
        let req = PairRequest::Hello {
            nameplate: join.code.nameplate,
            spake,
        }
        .encode();
        let rid = self.swarm.behaviour_mut().pair.send_request(&peer, req);
        self.pair_pending.insert(rid, peer);
    }

    /// The device a join is asking now, if any.
    fn join_asking(&self) -> Option<PeerId> {
        self.join
            .as_ref()
            .and_then(|j| j.current.as_ref())
            .map(|(p, _)| *p)
    }

    fn next_candidate(&mut self) {
        if let Some(join) = &mut self.join {
            join.current = None;
            // Every device found so far said no: wait a little for more, not the full timeout.
            if join.candidates.is_empty() {
                let now = Instant::now();
                join.deadline = join.deadline.min(now + Duration::from_secs(4));
                join.look_again(now);
            }
        }
        self.advance_join();
    }

    fn finish_join(&mut self, result: Result<Paired, String>) {
        if let Some(mut join) = self.join.take() {
            match &result {
                Ok(p) => tracing::info!(peer = %p.peer, "paired_as_joiner"),
                Err(e) => tracing::warn!(error = %e, "pair_join_failed"),
            }
            if let Some(r) = join.reply.take() {
                let _ = r.send(result);
            }
        }
    }

    /// Timeouts of joins and invitations.
    pub(crate) fn pair_tick(&mut self) {
        let now = Instant::now();
        // The invitation's record carries the addresses it was published with: published
        // again when they change (a relay reservation taken or replaced), since a record
        // without addresses is dropped from answers and an old one leads nowhere.
        let external: Vec<libp2p::Multiaddr> = self.swarm.external_addresses().cloned().collect();
        if let Some(inv) = &mut self.invitation
            && matches!(inv.status, InviteStatus::Waiting { .. })
            && !external.is_empty()
            && inv.published != external
        {
            inv.published = external;
            let nameplate = inv.code.nameplate;
            if let Err(e) = self
                .swarm
                .behaviour_mut()
                .kad
                .start_providing(key(nameplate))
            {
                tracing::warn!(error = ?e, "pair_republish_failed");
            }
        }
        if let Some(join) = &mut self.join
            && join.lookup_again.is_some_and(|t| now >= t)
        {
            join.lookup_again = None;
            let nameplate = join.code.nameplate;
            self.swarm.behaviour_mut().kad.get_providers(key(nameplate));
        }
        if let Some(j) = self.join.as_ref().filter(|j| now >= j.deadline) {
            if j.mismatched > 0 {
                let n = j.mismatched;
                self.finish_join(Err(format!(
                    "the code is wrong: {} inviting with its number {} another code; nothing was paired, and the invitation still stands (check the words and try again)",
                    if n == 1 { "the device" } else { "every device" },
                    if n == 1 { "has" } else { "have" }
                )));
                return;
            }
            // Whether any device was found at all tells a network that does not carry
            // mDNS or the DHT from a code that no device (any more) invites with.
            let found = match j.tried.len() {
                0 => "no device was found on the LAN (mDNS) or the DHT".to_string(),
                1 => "the one device found did not".to_string(),
                n => format!("none of the {n} devices found did"),
            };
            self.finish_join(Err(format!(
                "no device answered with an invitation for this code ({found}): is `cairn pair` still running on the other device? (codes expire after 10 minutes)"
            )));
        }
        if let Some(inv) = &mut self.invitation
            && matches!(inv.status, InviteStatus::Waiting { .. })
            && now >= inv.expires
        {
            inv.status = InviteStatus::Expired;
            let nameplate = inv.code.nameplate;
            self.swarm
                .behaviour_mut()
                .kad
                .stop_providing(&key(nameplate));
        }
    }

    /// Trusts `peer` from now on, and remembers it in the configuration.
    fn trust(&mut self, peer: PeerId, name: &str, rendezvous: Option<RendezvousSecret>) {
        let addresses: Vec<libp2p::Multiaddr> = self
            .peer_listen
            .get(&peer)
            .cloned()
            .unwrap_or_default()
            .into_iter()
            .filter(|a| !a.to_string().contains("/p2p-circuit"))
            .collect();
        let id = peer.to_string();
        self.config.peers.retain(|p| p.id != id);
        self.config.peers.push(PeerConfig {
            id: id.clone(),
            name: name.to_string(),
            addresses: addresses.iter().map(|a| a.to_string()).collect(),
            rendezvous: rendezvous.map(|s| s.to_hex()),
        });
        if let Some(secret) = rendezvous {
            self.rendezvous.add_secret(peer, secret);
        }
        self.addresses.insert(peer, addresses);
        self.node.add_peer(
            peer,
            name.to_string(),
            cairn_core::folder::DeviceId::from_identity(&peer.to_bytes()),
        );
        self.swarm.behaviour_mut().meta.allow(peer);
        self.swarm.behaviour_mut().blocks.allow(peer);
        self.relays.trust(peer);
        if let Err(e) = self.save_config() {
            tracing::error!(error = %e, "config_save_failed");
        }
        // The connection pairing ran on serves neither meta nor blocks (`net::Gated`):
        // reconnect once the last pairing message is out.
        if self.connections.contains_key(&peer) {
            self.reconnect_at.insert(
                peer,
                Instant::now() + crate::engine::RECONNECT_AFTER_PAIRING,
            );
        }
    }

    /// Pair protocol events.
    pub(crate) fn on_pair(&mut self, event: request_response::Event<Vec<u8>, Vec<u8>>) {
        match event {
            request_response::Event::Message {
                peer,
                message:
                    Message::Request {
                        request, channel, ..
                    },
                connection_id,
            } => {
                if self.refused_request(peer, connection_id, &request) {
                    return;
                }
                let response = match PairRequest::decode(&request) {
                    Err(e) => {
                        self.violation(
                            peer,
                            cairn_core::conduct::Violation::Malformed,
                            &e.to_string(),
                        );
                        PairResponse::Failed
                    }
                    Ok(req) => self.answer_pair(peer, req),
                };
                let _ = self
                    .swarm
                    .behaviour_mut()
                    .pair
                    .send_response(channel, response.encode());
            }
            request_response::Event::Message {
                peer,
                message:
                    Message::Response {
                        request_id,
                        response,
                    },
                ..
            } => {
                self.pair_pending.remove(&request_id);
                if self.join_asking() != Some(peer) {
                    return;
                }
                match PairResponse::decode(&response) {
                    Ok(PairResponse::Hello { spake, proof }) => {
                        let name = self.config.device_name();
                        let Some(join) = &mut self.join else { return };
                        let Some((_, Some(joiner))) = &mut join.current else {
                            return;
                        };
                        match joiner.finish(&spake, &proof) {
                            Ok((mine, secret)) => {
                                join.secret = Some(secret);
                                let req = PairRequest::Finish { proof: mine, name }.encode();
                                let rid = self.swarm.behaviour_mut().pair.send_request(&peer, req);
                                self.pair_pending.insert(rid, peer);
                            }
                            Err(_) => {
                                // Its proof says its code is not ours: a wrong code, or
                                // another device inviting with the same nameplate. Nothing
                                // more is sent, so its invitation is not spent by us; the
                                // next device found is asked.
                                tracing::info!(peer = %peer, "pair_code_mismatch");
                                join.mismatched += 1;
                                self.next_candidate();
                            }
                        }
                    }
                    Ok(PairResponse::Done { name }) => {
                        let secret = self.join.as_ref().and_then(|j| j.secret);
                        self.trust(peer, &name, secret);
                        self.finish_join(Ok(Paired {
                            peer: peer.to_string(),
                            name,
                        }));
                    }
                    Ok(PairResponse::Failed) => {
                        self.finish_join(Err(
                            "the code is wrong (the other device says so); nothing was paired"
                                .into(),
                        ));
                    }
                    Ok(PairResponse::NoInvitation) | Err(_) => self.next_candidate(),
                }
            }
            request_response::Event::OutboundFailure {
                request_id, peer, ..
            } => {
                self.pair_pending.remove(&request_id);
                if self.join_asking() == Some(peer) {
                    self.next_candidate();
                }
            }
            request_response::Event::InboundFailure {
                peer,
                connection_id,
                error: request_response::InboundFailure::Io(e),
                ..
            } => self.stream_failed(peer, connection_id, &e),
            _ => {}
        }
    }

    fn answer_pair(&mut self, peer: PeerId, req: PairRequest) -> PairResponse {
        let local = self.swarm.local_peer_id().to_bytes();
        let Some(inv) = &mut self.invitation else {
            return PairResponse::NoInvitation;
        };
        let waiting =
            matches!(inv.status, InviteStatus::Waiting { .. }) && Instant::now() < inv.expires;
        match req {
            PairRequest::Hello { nameplate, spake } => {
                if !waiting || nameplate != inv.code.nameplate {
                    return PairResponse::NoInvitation;
                }
                match inv.attempts.admit(peer, Instant::now()) {
                    Admit::Yes => {}
                    Admit::Busy => return PairResponse::NoInvitation,
                    Admit::Spent => {
                        tracing::warn!(peer = %peer, "pair_invitation_spent");
                        inv.status = InviteStatus::Failed {
                            error: format!(
                                "{MAX_UNFINISHED} attempts with a code that did not match; the invitation is spent"
                            ),
                        };
                        let nameplate = inv.code.nameplate;
                        self.swarm
                            .behaviour_mut()
                            .kad
                            .stop_providing(&key(nameplate));
                        return PairResponse::NoInvitation;
                    }
                }
                match Inviter::answer(&inv.code, &peer.to_bytes(), &local, &spake) {
                    Ok((inviter, spake, proof)) => {
                        inv.attempts.current = Some((peer, inviter, Instant::now()));
                        PairResponse::Hello { spake, proof }
                    }
                    Err(_) => PairResponse::Failed,
                }
            }
            PairRequest::Finish { proof, name } => {
                let Some((attempt_peer, inviter, _)) = inv.attempts.current.take() else {
                    return PairResponse::Failed;
                };
                if attempt_peer != peer || !waiting {
                    return PairResponse::Failed;
                }
                let nameplate = inv.code.nameplate;
                // A finished attempt ends the invitation, right or wrong (a joiner of an
                // earlier version sends its proof even when the codes did not match).
                let result = inviter.verify(&proof);
                inv.status = match &result {
                    Ok(_) => InviteStatus::Paired {
                        peer: peer.to_string(),
                        name: name.clone(),
                    },
                    Err(e) => InviteStatus::Failed {
                        error: e.to_string(),
                    },
                };
                self.swarm
                    .behaviour_mut()
                    .kad
                    .stop_providing(&key(nameplate));
                match result {
                    Ok(secret) => {
                        tracing::info!(peer = %peer, "paired_as_inviter");
                        self.trust(peer, &name, Some(secret));
                        PairResponse::Done {
                            name: self.config.device_name(),
                        }
                    }
                    Err(_) => {
                        tracing::warn!(peer = %peer, "pair_wrong_code");
                        PairResponse::Failed
                    }
                }
            }
        }
    }
}
