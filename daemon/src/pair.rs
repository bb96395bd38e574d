//! Pairing by short code, the daemon's side: invitations (`cairn pair`) and joins
//! (`cairn pair <code>`), found through mDNS, connected peers, and Kademlia provider
//! records keyed by the code's nameplate. The cryptography is `cairn_core::pairing`.

use std::collections::{HashSet, VecDeque};
use std::time::{Duration, Instant};

use cairn_core::pairing::{Inviter, Joiner, PairCode};
use cairn_core::rendezvous::RendezvousSecret;
use libp2p::{PeerId, kad};
use tokio::sync::oneshot;

pub use cairn_api::pairing::{InviteStatus, Paired};

/// How long a join keeps looking for the inviting device.
pub(crate) const JOIN_TIMEOUT: Duration = Duration::from_secs(45);
/// While no device found has the invitation, the DHT is asked again this often, for this
/// long from the start of the join: the inviter's record may not have reached the DHT
/// node the first lookup asked (the code was typed at once), or the inviter's relay was
/// reconnecting.
pub(crate) const LOOKUP_AGAIN_EVERY: Duration = Duration::from_secs(2);
pub(crate) const LOOK_FOR: Duration = Duration::from_secs(15);

/// The one open invitation of this device.
pub struct Invitation {
    pub(crate) code: PairCode,
    pub(crate) expires: Instant,
    pub(crate) status: InviteStatus,
    pub(crate) attempts: Attempts,
    /// The external addresses its record was last published with.
    pub(crate) published: Vec<libp2p::Multiaddr>,
}

/// How long an attempt on an invitation may go unfinished before another joiner may try.
/// A joiner whose code does not match (it typed the code wrong, or it asked another
/// device that happens to invite with the same nameplate) learns so from the inviter's
/// proof and sends nothing more, so an attempt can be left unfinished.
pub(crate) const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(5);
/// Unfinished attempts an invitation survives. Each one can test one guess of the code's
/// two words (65,536 possibilities), so a stranger guessing online gets at most this many
/// guesses at each invitation.
pub(crate) const MAX_UNFINISHED: u32 = 3;

/// The attempts on one invitation: at most one at a time.
#[derive(Default)]
pub(crate) struct Attempts {
    pub(crate) current: Option<(PeerId, Inviter, Instant)>,
    pub(crate) unfinished: u32,
}

/// Whether a joiner's first message may start an attempt.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Admit {
    Yes,
    /// Another joiner's attempt is under way.
    Busy,
    /// Too many attempts were left unfinished: the invitation is spent.
    Spent,
}

impl Attempts {
    /// A joiner `peer` says hello at `now`. An attempt left unfinished (by the same
    /// joiner trying again, or for [`ATTEMPT_TIMEOUT`]) is dropped and counted.
    pub(crate) fn admit(&mut self, peer: PeerId, now: Instant) -> Admit {
        if let Some((p, _, at)) = &self.current {
            if *p != peer && now.duration_since(*at) < ATTEMPT_TIMEOUT {
                return Admit::Busy;
            }
            self.current = None;
            self.unfinished += 1;
        }
        if self.unfinished >= MAX_UNFINISHED {
            Admit::Spent
        } else {
            Admit::Yes
        }
    }
}

/// The one join in progress.
pub struct Join {
    pub(crate) code: PairCode,
    pub(crate) candidates: VecDeque<PeerId>,
    pub(crate) tried: HashSet<PeerId>,
    pub(crate) current: Option<(PeerId, Option<Joiner>)>,
    pub(crate) deadline: Instant,
    pub(crate) reply: Option<oneshot::Sender<Result<Paired, String>>>,
    /// The pair's rendezvous secret, once our side of the key confirmation passed.
    pub(crate) secret: Option<RendezvousSecret>,
    /// Devices that invite with this nameplate but another code.
    pub(crate) mismatched: u32,
    /// When the join started, and when to ask the DHT for the nameplate again.
    pub(crate) started: Instant,
    pub(crate) lookup_again: Option<Instant>,
}

impl Join {
    /// Nobody found has the invitation: unless a code mismatch already says the code is
    /// wrong, the DHT is asked again soon, and the join waits for that answer.
    pub(crate) fn look_again(&mut self, now: Instant) {
        if self.mismatched > 0 || now.duration_since(self.started) >= LOOK_FOR {
            return;
        }
        let at = now + LOOKUP_AGAIN_EVERY;
        self.lookup_again = Some(at);
        self.deadline = self
            .deadline
            .max(at + Duration::from_secs(4))
            .min(self.started + JOIN_TIMEOUT);
    }
}

/// Pairing requests from the control API.
pub enum PairCtl {
    Invite(oneshot::Sender<InviteStatus>),
    InviteStatus(oneshot::Sender<InviteStatus>),
    Join {
        code: String,
        reply: oneshot::Sender<Result<Paired, String>>,
    },
}

pub(crate) fn key(nameplate: u16) -> kad::RecordKey {
    kad::RecordKey::new(&cairn_core::pairing::nameplate_key(nameplate))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unfinished_attempts_are_dropped_after_a_while_or_by_their_joiner_and_counted() {
        let (a, b) = (PeerId::random(), PeerId::random());
        let t = Instant::now();
        let mut at = Attempts::default();
        let start = |at: &mut Attempts, p: PeerId, now: Instant| {
            let r = at.admit(p, now);
            if r == Admit::Yes {
                let code = PairCode::parse("7-acid-acorn").unwrap();
                let (_, msg) = cairn_core::pairing::Joiner::start(&code, b"j", b"i");
                let (inviter, ..) = Inviter::answer(&code, b"j", b"i", &msg).unwrap();
                at.current = Some((p, inviter, now));
            }
            r
        };
        assert_eq!(start(&mut at, a, t), Admit::Yes);
        // Another joiner waits while the attempt is fresh.
        assert_eq!(start(&mut at, b, t + Duration::from_secs(1)), Admit::Busy);
        // The same joiner trying again drops its own attempt (1 unfinished).
        assert_eq!(start(&mut at, a, t + Duration::from_secs(2)), Admit::Yes);
        // A stale attempt gives way to another joiner (2 unfinished).
        assert_eq!(start(&mut at, b, t + ATTEMPT_TIMEOUT * 2), Admit::Yes);
        // The third unfinished attempt spends the invitation.
        assert_eq!(start(&mut at, a, t + ATTEMPT_TIMEOUT * 4), Admit::Spent);
        assert_eq!(at.unfinished, MAX_UNFINISHED);
    }
}
