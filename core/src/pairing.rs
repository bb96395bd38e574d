//! Pairing two devices with a short code, as magic-wormhole does: the logic without I/O.
//!
//! A code looks like `4821-guitar-ginger`: a *nameplate* (1-9999) that lets the joiner find the
//! invitation, and two words (16 bits) that only the two people know. The devices run
//! SPAKE2 keyed by the whole code, with both PeerIds as identities (so a relay in the
//! middle cannot splice two sessions), then prove to each other that they derived the same
//! key. A wrong code yields different keys: both sides see the proof fail and pair nothing.
//! An invitation accepts one attempt, right or wrong, so a guesser gets one try in 65,536.
//!
//! Flow (`/cairn/pair/1`, joiner → inviter):
//! 1. `Hello { nameplate, spake }` → `Hello { spake, proof }` (the inviter's proof)
//! 2. `Finish { proof, name }` → `Done { name }` or `Failed`

use spake2::{Ed25519Group, Identity, Password, Spake2};

use crate::rendezvous::RendezvousSecret;
use crate::wire::WireError;

/// The words of a pairing code (256, so each word is 8 bits).
pub const WORDS: [&str; 256] = [
    "acid", "acorn", "actor", "adult", "agent", "alarm", "album", "alert", "alien", "alley",
    "amber", "ample", "angle", "ankle", "apple", "apron", "arena", "armor", "arrow", "aspen",
    "atlas", "attic", "audio", "autumn", "award", "bacon", "badge", "bagel", "baker", "bamboo",
    "banjo", "barn", "basil", "basin", "batch", "beach", "beard", "beaver", "berry", "bike",
    "birch", "bison", "blade", "blank", "blast", "blaze", "bloom", "board", "boat", "bonus",
    "boots", "brave", "bread", "brick", "bride", "brook", "brush", "bucket", "buddy", "bugle",
    "cabin", "cable", "cactus", "camel", "canal", "candy", "canoe", "canyon", "cargo", "carpet",
    "carrot", "castle", "cedar", "cello", "chalk", "charm", "cherry", "chess", "chief", "chimney",
    "cider", "cinema", "circus", "civic", "clay", "cliff", "clock", "cloud", "clover", "coach",
    "cobra", "cocoa", "comet", "coral", "cotton", "couch", "crane", "crayon", "creek", "crisp",
    "crown", "cube", "cycle", "daisy", "dance", "delta", "denim", "desert", "diary", "dingo",
    "diver", "dock", "dolphin", "donkey", "dragon", "drum", "eagle", "easel", "echo", "elbow",
    "elder", "ember", "engine", "epoch", "fabric", "falcon", "fancy", "feast", "fern", "ferry",
    "fiddle", "field", "fig", "flame", "flute", "foam", "forest", "fossil", "fox", "frost",
    "fudge", "galaxy", "garden", "garlic", "gecko", "giant", "ginger", "glacier", "globe", "goose",
    "grape", "gravel", "guitar", "gull", "hammer", "harbor", "harp", "hazel", "heron", "hiking",
    "honey", "horse", "igloo", "island", "ivory", "jacket", "jade", "jaguar", "jelly", "jigsaw",
    "jungle", "kayak", "kettle", "kite", "koala", "ladder", "lagoon", "lake", "lemon", "lily",
    "lion", "lizard", "llama", "lobster", "locket", "lotus", "lunar", "magnet", "mango", "maple",
    "marble", "meadow", "melon", "metal", "mint", "mirror", "moose", "mosaic", "motor", "muffin",
    "museum", "nectar", "needle", "nickel", "noodle", "oasis", "ocean", "olive", "onion", "opal",
    "orbit", "otter", "owl", "paddle", "panda", "paper", "parrot", "pasta", "peach", "pearl",
    "pebble", "pepper", "piano", "pilot", "pine", "planet", "plum", "polar", "pony", "poppy",
    "potato", "prism", "pumpkin", "puzzle", "quail", "quartz", "quill", "rabbit", "radar", "radio",
    "rain", "raven", "reef", "ribbon", "river", "robin", "rocket", "ruby", "saddle", "salmon",
    "sand", "satin", "scarf", "shell", "silver", "sketch",
];

/// How long an invitation stays valid, in seconds.
pub const INVITATION_TTL_S: u64 = 600;

/// Why a code or a pairing failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PairError {
    #[error("{0:?} is not a pairing code (it looks like 7-guitar-ginger)")]
    BadCode(String),
    #[error("the code is wrong: the other device did not derive the same key (nothing was paired)")]
    WrongCode,
    #[error("the pairing messages were malformed")]
    Malformed,
}

/// The largest nameplate. Invitations are found on a DHT shared with every other cairn
/// device (the public one by default), so two invitations alive at once must rarely share
/// a nameplate: with 999 of them, 12 invitations in the same 10 minutes already collided
/// with a chance of 1 in 15; with 9,999, 40 do with a chance of 1 in 13. Four digits are
/// still read aloud as two pairs.
pub const MAX_NAMEPLATE: u16 = 9999;

/// A pairing code.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PairCode {
    /// Finds the invitation: 1-[`MAX_NAMEPLATE`].
    pub nameplate: u16,
    /// The secret part.
    pub words: [u8; 2],
}

/// The DHT key under which an inviter of `nameplate` is found: a SHA2-256 multihash (code
/// 0x12, 32 bytes) of a cairn-specific name, because the public DHT's servers take only
/// multihashes as provider keys.
pub fn nameplate_key(nameplate: u16) -> Vec<u8> {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(format!("cairn-pair/v1/{nameplate}").as_bytes());
    let mut key = vec![0x12, 0x20];
    key.extend_from_slice(&digest);
    key
}

impl PairCode {
    /// A code from 4 random bytes (the caller brings the randomness: core does no I/O).
    pub fn from_random(b: [u8; 4]) -> Self {
        let nameplate = 1 + (u16::from_le_bytes([b[0], b[1]]) % MAX_NAMEPLATE);
        PairCode {
            nameplate,
            words: [b[2], b[3]],
        }
    }

    /// Parses `7-guitar-ginger` (case-insensitive, spaces allowed instead of dashes).
    pub fn parse(text: &str) -> Result<Self, PairError> {
        let bad = || PairError::BadCode(text.to_string());
        let lower = text.trim().to_lowercase().replace(' ', "-");
        let mut parts = lower.split('-');
        let nameplate: u16 = parts
            .next()
            .and_then(|n| n.parse().ok())
            .filter(|n| (1..=MAX_NAMEPLATE).contains(n))
            .ok_or_else(bad)?;
        let mut word = || -> Result<u8, PairError> {
            let w = parts.next().ok_or_else(bad)?;
            WORDS
                .iter()
                .position(|x| *x == w)
                .map(|i| i as u8)
                .ok_or_else(bad)
        };
        let words = [word()?, word()?];
        if parts.next().is_some() {
            return Err(bad());
        }
        Ok(PairCode { nameplate, words })
    }

    /// The password SPAKE2 is keyed with: the whole code.
    fn password(&self) -> Password {
        Password::new(self.to_string().as_bytes())
    }
}

impl std::fmt::Display for PairCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}-{}-{}",
            self.nameplate, WORDS[self.words[0] as usize], WORDS[self.words[1] as usize]
        )
    }
}

/// The key-confirmation proof of one side: keyed BLAKE3 over the role and both messages.
fn proof(key: &[u8], role: &str, joiner_msg: &[u8], inviter_msg: &[u8]) -> [u8; 32] {
    let k = blake3::derive_key("cairn pair confirm v1", key);
    let mut h = blake3::Hasher::new_keyed(&k);
    h.update(role.as_bytes());
    h.update(&(joiner_msg.len() as u64).to_le_bytes());
    h.update(joiner_msg);
    h.update(inviter_msg);
    *h.finalize().as_bytes()
}

/// The joiner's side of a pairing.
pub struct Joiner {
    state: Option<Spake2<Ed25519Group>>,
    msg: Vec<u8>,
}

impl Joiner {
    /// Starts: returns the joiner and its first message.
    pub fn start(code: &PairCode, joiner_id: &[u8], inviter_id: &[u8]) -> (Self, Vec<u8>) {
        let (state, msg) = Spake2::<Ed25519Group>::start_a(
            &code.password(),
            &Identity::new(joiner_id),
            &Identity::new(inviter_id),
        );
        (
            Joiner {
                state: Some(state),
                msg: msg.clone(),
            },
            msg,
        )
    }

    /// Checks the inviter's answer; on success returns the joiner's proof to send back and
    /// the pair's rendezvous secret (the inviter gets the same from [`Inviter::verify`]).
    /// On a wrong code it still returns a (useless) proof in the error path's place, so the
    /// inviter learns the attempt failed: callers send `Err`'s proof too.
    pub fn finish(
        &mut self,
        inviter_msg: &[u8],
        inviter_proof: &[u8; 32],
    ) -> Result<([u8; 32], RendezvousSecret), ([u8; 32], PairError)> {
        let Some(state) = self.state.take() else {
            return Err(([0; 32], PairError::Malformed));
        };
        let key = match state.finish(inviter_msg) {
            Ok(k) => k,
            Err(_) => return Err(([0; 32], PairError::Malformed)),
        };
        let mine = proof(&key, "joiner", &self.msg, inviter_msg);
        if proof(&key, "inviter", &self.msg, inviter_msg) != *inviter_proof {
            return Err((mine, PairError::WrongCode));
        }
        Ok((mine, RendezvousSecret::from_session_key(&key)))
    }
}

/// The inviter's side of one attempt.
pub struct Inviter {
    key: Vec<u8>,
    joiner_msg: Vec<u8>,
    msg: Vec<u8>,
}

impl Inviter {
    /// Answers a joiner's first message: returns the state, our message and our proof.
    pub fn answer(
        code: &PairCode,
        joiner_id: &[u8],
        inviter_id: &[u8],
        joiner_msg: &[u8],
    ) -> Result<(Self, Vec<u8>, [u8; 32]), PairError> {
        let (state, msg) = Spake2::<Ed25519Group>::start_b(
            &code.password(),
            &Identity::new(joiner_id),
            &Identity::new(inviter_id),
        );
        let key = state.finish(joiner_msg).map_err(|_| PairError::Malformed)?;
        let p = proof(&key, "inviter", joiner_msg, &msg);
        Ok((
            Inviter {
                key,
                joiner_msg: joiner_msg.to_vec(),
                msg: msg.clone(),
            },
            msg,
            p,
        ))
    }

    /// Checks the joiner's proof; on success returns the pair's rendezvous secret.
    pub fn verify(&self, joiner_proof: &[u8; 32]) -> Result<RendezvousSecret, PairError> {
        if proof(&self.key, "joiner", &self.joiner_msg, &self.msg) == *joiner_proof {
            Ok(RendezvousSecret::from_session_key(&self.key))
        } else {
            Err(PairError::WrongCode)
        }
    }
}

/// Requests of the pair protocol.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PairRequest {
    /// First message: which invitation, and the joiner's SPAKE2 message.
    Hello { nameplate: u16, spake: Vec<u8> },
    /// Second message: the joiner's proof and its name.
    Finish { proof: [u8; 32], name: String },
}

/// Responses of the pair protocol.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PairResponse {
    /// The inviter's SPAKE2 message and proof.
    Hello { spake: Vec<u8>, proof: [u8; 32] },
    /// Paired; the inviter's name.
    Done { name: String },
    /// No such invitation here (expired, used, or never made).
    NoInvitation,
    /// The proofs did not match: wrong code.
    Failed,
}

const MAX_SPAKE: usize = 128;
const MAX_NAME: usize = 128;

fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    out.extend_from_slice(&(b.len() as u16).to_le_bytes());
    out.extend_from_slice(b);
}

fn take<'a>(b: &mut &'a [u8], n: usize) -> Result<&'a [u8], WireError> {
    if b.len() < n {
        return Err(WireError("truncated"));
    }
    let (h, t) = b.split_at(n);
    *b = t;
    Ok(h)
}

fn get_bytes<'a>(b: &mut &'a [u8], max: usize) -> Result<&'a [u8], WireError> {
    let n = take(b, 2)?;
    let n = u16::from_le_bytes([n[0], n[1]]) as usize;
    if n > max {
        return Err(WireError("field too long"));
    }
    take(b, n)
}

fn get_proof(b: &mut &[u8]) -> Result<[u8; 32], WireError> {
    let mut p = [0u8; 32];
    p.copy_from_slice(take(b, 32)?);
    Ok(p)
}

fn get_name(b: &mut &[u8]) -> Result<String, WireError> {
    String::from_utf8(get_bytes(b, MAX_NAME)?.to_vec()).map_err(|_| WireError("name not UTF-8"))
}

fn done(b: &[u8]) -> Result<(), WireError> {
    if b.is_empty() {
        Ok(())
    } else {
        Err(WireError("trailing bytes"))
    }
}

impl PairRequest {
    /// Wire form.
    pub fn encode(&self) -> Vec<u8> {
        match self {
            PairRequest::Hello { nameplate, spake } => {
                let mut out = vec![1];
                out.extend_from_slice(&nameplate.to_le_bytes());
                put_bytes(&mut out, spake);
                out
            }
            PairRequest::Finish { proof, name } => {
                let mut out = vec![2];
                out.extend_from_slice(proof);
                put_bytes(&mut out, name.as_bytes());
                out
            }
        }
    }

    /// Parses the wire form.
    pub fn decode(mut b: &[u8]) -> Result<Self, WireError> {
        let tag = take(&mut b, 1)?[0];
        let out = match tag {
            1 => {
                let n = take(&mut b, 2)?;
                let nameplate = u16::from_le_bytes([n[0], n[1]]);
                PairRequest::Hello {
                    nameplate,
                    spake: get_bytes(&mut b, MAX_SPAKE)?.to_vec(),
                }
            }
            2 => PairRequest::Finish {
                proof: get_proof(&mut b)?,
                name: get_name(&mut b)?,
            },
            _ => return Err(WireError("not a pair request")),
        };
        done(b)?;
        Ok(out)
    }
}

impl PairResponse {
    /// Wire form.
    pub fn encode(&self) -> Vec<u8> {
        match self {
            PairResponse::Hello { spake, proof } => {
                let mut out = vec![1];
                put_bytes(&mut out, spake);
                out.extend_from_slice(proof);
                out
            }
            PairResponse::Done { name } => {
                let mut out = vec![2];
                put_bytes(&mut out, name.as_bytes());
                out
            }
            PairResponse::NoInvitation => vec![3],
            PairResponse::Failed => vec![4],
        }
    }

    /// Parses the wire form.
    pub fn decode(mut b: &[u8]) -> Result<Self, WireError> {
        let tag = take(&mut b, 1)?[0];
        let out = match tag {
            1 => {
                let spake = get_bytes(&mut b, MAX_SPAKE)?.to_vec();
                PairResponse::Hello {
                    spake,
                    proof: get_proof(&mut b)?,
                }
            }
            2 => PairResponse::Done {
                name: get_name(&mut b)?,
            },
            3 => PairResponse::NoInvitation,
            4 => PairResponse::Failed,
            _ => return Err(WireError("not a pair response")),
        };
        done(b)?;
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn run(
        inviter_code: &PairCode,
        joiner_code: &PairCode,
    ) -> (
        Result<RendezvousSecret, PairError>,
        Result<RendezvousSecret, PairError>,
    ) {
        let (j_id, i_id) = (b"joiner-peer-id".as_slice(), b"inviter-peer-id".as_slice());
        let (mut joiner, hello) = Joiner::start(joiner_code, j_id, i_id);
        let (inviter, spake, inv_proof) =
            Inviter::answer(inviter_code, j_id, i_id, &hello).unwrap();
        match joiner.finish(&spake, &inv_proof) {
            Ok((p, secret)) => (Ok(secret), inviter.verify(&p)),
            Err((p, e)) => (Err(e), inviter.verify(&p)),
        }
    }

    #[test]
    fn the_right_code_pairs_both_sides_with_one_rendezvous_secret() {
        let code = PairCode::from_random([9, 8, 7, 6]);
        let (j, i) = run(&code, &code);
        assert_eq!(j.unwrap(), i.unwrap(), "both sides agree on the secret");
        // Another pairing of the same devices with the same code agrees on another one
        // (SPAKE2 is randomized).
        let (again, _) = run(&code, &code);
        assert_ne!(again.unwrap(), run(&code, &code).0.unwrap());
    }

    #[test]
    fn a_wrong_code_fails_on_both_sides() {
        let code = PairCode::parse("7-guitar-ginger").unwrap();
        let wrong = PairCode::parse("7-guitar-grape").unwrap();
        let (j, i) = run(&code, &wrong);
        assert_eq!(j.unwrap_err(), PairError::WrongCode);
        assert_eq!(i.unwrap_err(), PairError::WrongCode);
    }

    #[test]
    fn a_joiner_tells_another_invitation_of_its_nameplate_from_the_inviters_proof_alone() {
        // Two devices invite with the same nameplate (a collision on a shared DHT).
        let theirs = PairCode::parse("7-guitar-ginger").unwrap();
        let mine = PairCode::parse("7-guitar-grape").unwrap();
        let (j_id, other, right) = (
            b"joiner".as_slice(),
            b"other".as_slice(),
            b"right".as_slice(),
        );
        // The joiner asks the other inviter first: the inviter's answer carries its proof,
        // which fails before the joiner has sent anything that commits to a guess.
        let (mut joiner, hello) = Joiner::start(&mine, j_id, other);
        let (_their_inviter, spake, proof) = Inviter::answer(&theirs, j_id, other, &hello).unwrap();
        let Err((_, e)) = joiner.finish(&spake, &proof) else {
            panic!("another code's proof was accepted");
        };
        assert_eq!(e, PairError::WrongCode);
        // Then the right inviter: a fresh exchange pairs.
        let (mut joiner, hello) = Joiner::start(&mine, j_id, right);
        let (inviter, spake, proof) = Inviter::answer(&mine, j_id, right, &hello).unwrap();
        let (joiner_proof, secret) = joiner.finish(&spake, &proof).unwrap();
        assert_eq!(inviter.verify(&joiner_proof).unwrap(), secret);
    }

    #[test]
    fn codes_print_and_parse() {
        let code = PairCode::parse(" 42 Guitar ginger ").unwrap();
        assert_eq!(code.to_string(), "42-guitar-ginger");
        assert_eq!(PairCode::parse(&code.to_string()).unwrap(), code);
        for bad in [
            "",
            "0-guitar-ginger",
            "10000-guitar-ginger",
            "7-guitar",
            "7-guitar-notaword",
            "7-guitar-ginger-extra",
            "x-a-b",
        ] {
            assert!(PairCode::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn messages_round_trip() {
        for r in [
            PairRequest::Hello {
                nameplate: 7,
                spake: vec![1; 33],
            },
            PairRequest::Finish {
                proof: [3; 32],
                name: "laptop".into(),
            },
        ] {
            assert_eq!(PairRequest::decode(&r.encode()).unwrap(), r);
        }
        for r in [
            PairResponse::Hello {
                spake: vec![2; 33],
                proof: [4; 32],
            },
            PairResponse::Done {
                name: "desk".into(),
            },
            PairResponse::NoInvitation,
            PairResponse::Failed,
        ] {
            assert_eq!(PairResponse::decode(&r.encode()).unwrap(), r);
        }
    }

    proptest! {
        #[test]
        fn decoders_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..120)) {
            let _ = PairRequest::decode(&bytes);
            let _ = PairResponse::decode(&bytes);
        }
    }

    #[test]
    fn a_nameplate_key_is_a_sha256_multihash_and_differs_per_nameplate() {
        let a = nameplate_key(7);
        assert_eq!(a.len(), 34);
        assert_eq!(&a[..2], &[0x12, 0x20]);
        assert_ne!(a, nameplate_key(8));
        assert_eq!(a, nameplate_key(7));
    }
}
