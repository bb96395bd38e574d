//! The engine's side of `crate::rendezvous`: publishing and looking up the rendezvous
//! keys of paired devices on the DHT.

use std::collections::HashSet;
use std::time::Instant;

use cairn_core::rendezvous::{lookup_epochs, publish_epochs};
use libp2p::swarm::ConnectionId;
use libp2p::swarm::dial_opts::DialOpts;
use libp2p::{Multiaddr, PeerId, kad};

use super::Engine;
use crate::rendezvous::*;
impl Engine {
    /// Publishes this device's records when due: keys of new epochs, again every
    /// [`PUBLISH_EVERY`] or when the external addresses changed; drops keys of past epochs.
    pub(crate) fn rendezvous_tick(&mut self) {
        if self.rendezvous.secrets.is_empty() {
            return;
        }
        let own = self.swarm.local_peer_id().to_bytes();
        let wanted = self.rendezvous.wanted(&own, publish_epochs(unix_now()));
        let kad = &mut self.swarm.behaviour_mut().kad;
        for old in self.rendezvous.provided.difference(&wanted) {
            kad.stop_providing(old);
        }
        let routable = kad.kbuckets().any(|b| b.num_entries() > 0);
        let external: Vec<Multiaddr> = self.swarm.external_addresses().cloned().collect();
        let due = match &self.rendezvous.published {
            None => true,
            Some((at, addrs)) => at.elapsed() >= PUBLISH_EVERY || *addrs != external,
        };
        let fresh: Vec<kad::RecordKey> = wanted
            .iter()
            .filter(|k| due || !self.rendezvous.provided.contains(*k))
            .cloned()
            .collect();
        // Publishing into an empty routing table reaches nobody: wait for the bootstrap.
        // A record without addresses leads nowhere: wait for one (a confirmed address, a
        // relay reservation, an announced one).
        if fresh.is_empty() || !routable || external.is_empty() {
            self.rendezvous.provided.retain(|k| wanted.contains(k));
            return;
        }
        for key in &fresh {
            if let Err(e) = self.swarm.behaviour_mut().kad.start_providing(key.clone()) {
                tracing::warn!(error = ?e, "rendezvous_publish_failed");
            }
        }
        tracing::info!(
            keys = fresh.len(),
            addresses = external.len(),
            "rendezvous_published"
        );
        self.rendezvous.provided = wanted;
        self.rendezvous.published = Some((Instant::now(), external));
        // New addresses: a paired device that restarted meanwhile may have published its
        // own since it was last looked up, so the next dial looks again at once.
        self.rendezvous.last_lookup.clear();
    }

    /// Looks up where a paired device said it can be reached (if it has a secret and was
    /// not looked up in the last [`LOOKUP_EVERY`]).
    pub(crate) fn rendezvous_lookup(&mut self, peer: PeerId) {
        let Some(secret) = self.rendezvous.secrets.get(&peer).copied() else {
            return;
        };
        let now = Instant::now();
        if self
            .rendezvous
            .last_lookup
            .get(&peer)
            .is_some_and(|t| now.duration_since(*t) < LOOKUP_EVERY)
        {
            return;
        }
        self.rendezvous.last_lookup.insert(peer, now);
        let id = peer.to_bytes();
        for e in lookup_epochs(unix_now()) {
            let key = kad::RecordKey::new(&secret.key(&id, e));
            let query = self.swarm.behaviour_mut().kad.get_providers(key);
            self.rendezvous.lookups.insert(query, peer);
        }
    }

    /// Providers found by `query` (`last`: it ended): true if it was a rendezvous lookup
    /// (the device is dialled if it is among them; anything else found there is ignored).
    pub(crate) fn rendezvous_found(
        &mut self,
        query: kad::QueryId,
        providers: &HashSet<PeerId>,
        last: bool,
    ) -> bool {
        let Some(peer) = self.rendezvous.lookups.get(&query).copied() else {
            return false;
        };
        if last {
            self.rendezvous.lookups.remove(&query);
        }
        if providers.contains(&peer)
            && !self.connections.contains_key(&peer)
            && !self.rendezvous.dialling.contains_key(&peer)
        {
            tracing::info!(peer = %peer, "found_by_rendezvous");
            self.dial_reason.insert(peer, "rendezvous");
            // Dialled now, while the lookup still holds the addresses it was given, even if
            // a dial of stale remembered addresses is still waiting for an answer.
            let opts = DialOpts::peer_id(peer)
                .condition(libp2p::swarm::dial_opts::PeerCondition::Disconnected)
                .build();
            let id = opts.connection_id();
            match self.swarm.dial(opts) {
                Ok(()) => {
                    self.rendezvous.dialling.insert(peer, id);
                }
                Err(e) => tracing::debug!(peer = %peer, error = %e, "rendezvous_dial_not_made"),
            }
        }
        true
    }

    /// A connection attempt ended (opened or failed): if it was a rendezvous dial, the
    /// device may be dialled on the next find.
    pub(crate) fn rendezvous_dial_ended(&mut self, peer: &PeerId, id: ConnectionId) {
        if self.rendezvous.dialling.get(peer) == Some(&id) {
            self.rendezvous.dialling.remove(peer);
        }
    }
}
