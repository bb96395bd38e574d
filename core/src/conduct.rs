//! How the daemon answers a peer that breaks the protocol: one path for every refusal.
//!
//! Every violation (a frame over its limit, a malformed message, a chunk or manifest that
//! does not match its hash, an invalid path in a folder document, a claimed size that
//! differs from the manifest) is [`Conduct::record`]ed with its [`Violation`] kind. The
//! answer is always to disconnect the peer; a peer that keeps doing it is banned for a
//! while (no redial, its connections refused), twice as long each time, up to
//! [`MAX_BAN`]. Time is passed in, so the policy is tested without clocks.
//!
//! State is bounded: at most [`MAX_TRACKED`] peers are remembered (the oldest record goes
//! first), so throw-away identities cannot grow it.

use std::collections::HashMap;
use std::hash::Hash;
use std::time::{Duration, Instant};

/// Kinds of protocol violation, the `kind` label of `cairn_protocol_violations_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Violation {
    /// A length prefix over the protocol's limit.
    FrameTooLarge,
    /// A frame cut short by its sender.
    Truncated,
    /// A message that does not decode.
    Malformed,
    /// A chunk whose bytes do not hash to its id.
    BadChunk,
    /// A manifest that does not match its content id, or has impossible chunk lengths.
    BadManifest,
    /// A delta that does not apply or yields the wrong chunk.
    BadDelta,
    /// A path in a folder document that the path rules refuse.
    InvalidPath,
    /// An entry whose claimed size differs from its manifest's total.
    SizeMismatch,
    /// More requests or offers than the protocol allows.
    Flood,
}

impl Violation {
    /// The metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Violation::FrameTooLarge => "frame_too_large",
            Violation::Truncated => "truncated",
            Violation::Malformed => "malformed",
            Violation::BadChunk => "bad_chunk",
            Violation::BadManifest => "bad_manifest",
            Violation::BadDelta => "bad_delta",
            Violation::InvalidPath => "invalid_path",
            Violation::SizeMismatch => "size_mismatch",
            Violation::Flood => "flood",
        }
    }
}

/// Violations within [`WINDOW`] that earn a ban.
pub const STRIKES: usize = 3;
/// How far back violations count toward a ban.
pub const WINDOW: Duration = Duration::from_secs(600);
/// The first ban; each later one doubles.
pub const FIRST_BAN: Duration = Duration::from_secs(120);
/// The longest ban.
pub const MAX_BAN: Duration = Duration::from_secs(3600);
/// Peers remembered at most.
pub const MAX_TRACKED: usize = 512;

/// What to do about a violation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Disconnect the peer; it may come back.
    Disconnect,
    /// Disconnect the peer and refuse it until the given time.
    Ban { until: Instant },
}

/// One peer's record.
#[derive(Clone, Debug)]
pub struct Record {
    /// Violations in all, by kind.
    pub total: u64,
    /// The last violation's kind and reason.
    pub last: (Violation, String),
    /// When the last violation happened.
    pub last_at: Instant,
    /// Banned until then.
    pub banned_until: Option<Instant>,
    /// Bans so far (the next one lasts `FIRST_BAN * 2^bans`).
    pub bans: u32,
    recent: Vec<Instant>,
}

/// Violation records of peers.
#[derive(Debug)]
pub struct Conduct<P> {
    records: HashMap<P, Record>,
}

impl<P> Default for Conduct<P> {
    fn default() -> Self {
        Conduct {
            records: HashMap::new(),
        }
    }
}

impl<P: Clone + Eq + Hash> Conduct<P> {
    /// Records a violation by `peer` at `now`, and says what to do.
    pub fn record(&mut self, peer: &P, kind: Violation, reason: &str, now: Instant) -> Verdict {
        if !self.records.contains_key(peer) && self.records.len() >= MAX_TRACKED {
            // Forget the peer heard from least recently (never one banned right now,
            // unless all are).
            let oldest = self
                .records
                .iter()
                .min_by_key(|(_, r)| (r.banned_until.is_some_and(|t| t > now), r.last_at))
                .map(|(p, _)| p.clone());
            if let Some(p) = oldest {
                self.records.remove(&p);
            }
        }
        let r = self.records.entry(peer.clone()).or_insert_with(|| Record {
            total: 0,
            last: (kind, String::new()),
            last_at: now,
            banned_until: None,
            bans: 0,
            recent: Vec::new(),
        });
        r.total += 1;
        r.last = (kind, reason.chars().take(200).collect());
        r.last_at = now;
        r.recent
            .retain(|t| now.checked_duration_since(*t).is_some_and(|d| d < WINDOW));
        r.recent.push(now);
        if r.recent.len() >= STRIKES {
            let ban = FIRST_BAN
                .saturating_mul(1u32 << r.bans.min(16))
                .min(MAX_BAN);
            r.bans = r.bans.saturating_add(1);
            r.recent.clear();
            let until = now + ban;
            r.banned_until = Some(until);
            Verdict::Ban { until }
        } else {
            Verdict::Disconnect
        }
    }

    /// Whether `peer` is banned at `now`.
    pub fn banned(&self, peer: &P, now: Instant) -> bool {
        self.records
            .get(peer)
            .and_then(|r| r.banned_until)
            .is_some_and(|t| t > now)
    }

    /// The record of `peer`, if it ever broke the protocol (and is still remembered).
    pub fn get(&self, peer: &P) -> Option<&Record> {
        self.records.get(peer)
    }

    /// Forgets `peer` (unpaired, or trusted again by the user).
    pub fn forget(&mut self, peer: &P) {
        self.records.remove(peer);
    }

    /// Peers remembered.
    pub fn len(&self) -> usize {
        self.records.len()
    }

    /// Whether no peer is remembered.
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_single_violation_disconnects_without_a_ban() {
        let mut c = Conduct::default();
        let now = Instant::now();
        assert_eq!(
            c.record(&1u32, Violation::BadChunk, "x", now),
            Verdict::Disconnect
        );
        assert!(!c.banned(&1, now));
        assert_eq!(c.get(&1).map(|r| r.total), Some(1));
    }

    #[test]
    fn repeated_violations_ban_with_doubling_backoff() {
        let mut c = Conduct::default();
        let t0 = Instant::now();
        let mut bans = Vec::new();
        let mut now = t0;
        for _ in 0..3 {
            for _ in 0..STRIKES {
                now += Duration::from_secs(1);
                if let Verdict::Ban { until } = c.record(&7u8, Violation::Malformed, "m", now) {
                    bans.push(until - now);
                }
            }
            assert!(c.banned(&7, now));
            now += MAX_BAN;
            assert!(!c.banned(&7, now), "a ban ends");
        }
        assert_eq!(bans, vec![FIRST_BAN, FIRST_BAN * 2, FIRST_BAN * 4]);
    }

    #[test]
    fn violations_far_apart_never_ban() {
        let mut c = Conduct::default();
        let mut now = Instant::now();
        for _ in 0..10 {
            now += WINDOW;
            assert_eq!(
                c.record(&1u8, Violation::Truncated, "t", now),
                Verdict::Disconnect
            );
        }
    }

    #[test]
    fn the_ban_is_capped() {
        let mut c = Conduct::default();
        let mut now = Instant::now();
        let mut last = Duration::ZERO;
        for _ in 0..40 {
            now += Duration::from_secs(1);
            if let Verdict::Ban { until } = c.record(&1u8, Violation::Flood, "f", now) {
                last = until - now;
            }
        }
        assert_eq!(last, MAX_BAN);
    }

    #[test]
    fn throw_away_identities_do_not_grow_the_records() {
        let mut c = Conduct::default();
        let now = Instant::now();
        for p in 0..(MAX_TRACKED as u32 * 4) {
            c.record(&p, Violation::Malformed, "m", now);
        }
        assert_eq!(c.len(), MAX_TRACKED);
    }
}
