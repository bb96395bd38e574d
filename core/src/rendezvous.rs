//! Rendezvous keys: where a device says on the public DHT how to reach it, so that its
//! paired devices, and only they, can find it when mDNS and remembered addresses fail.
//!
//! Two devices that pair agree on a secret (derived from the SPAKE2 key of their pairing,
//! [`RendezvousSecret::from_session_key`]). A device publishes a provider record, which
//! carries its device id and addresses, under the key of (secret, its own id, epoch) for
//! each device it is paired with; the other device computes the same key and looks it up.
//! A stranger cannot compute the key, so it cannot look the device up, and a DHT server that
//! stores the record sees a key that changes every epoch, never the bare device id.
//!
//! Epochs are [`EPOCH_S`] long. A device publishes under the current epoch, and under the
//! next one during the last [`SKEW_S`] of the current one; it looks up the current epoch,
//! the previous one during the first `SKEW_S` of an epoch and the next one during the last
//! `SKEW_S`, so two clocks up to `SKEW_S` apart always meet (tested below).

/// How long one rendezvous key is used.
pub const EPOCH_S: u64 = 6 * 3600;
/// The clock difference between two devices that rendezvous tolerates.
pub const SKEW_S: u64 = 3600;

/// The secret two paired devices share for rendezvous (32 bytes).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct RendezvousSecret(pub [u8; 32]);

impl std::fmt::Debug for RendezvousSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RendezvousSecret(..)")
    }
}

impl RendezvousSecret {
    /// The secret of a pairing, from its SPAKE2 session key (both sides derive the same).
    pub fn from_session_key(key: &[u8]) -> Self {
        RendezvousSecret(blake3::derive_key("cairn rendezvous secret v1", key))
    }

    /// Lowercase hex (how the configuration stores it).
    pub fn to_hex(&self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// Parses [`RendezvousSecret::to_hex`]'s form.
    pub fn from_hex(text: &str) -> Option<Self> {
        if text.len() != 64 || !text.is_ascii() {
            return None;
        }
        let mut out = [0u8; 32];
        for (i, b) in out.iter_mut().enumerate() {
            *b = u8::from_str_radix(&text[2 * i..2 * i + 2], 16).ok()?;
        }
        Some(RendezvousSecret(out))
    }

    /// The DHT key under which the device `publisher` (its id's bytes) is found in `epoch`:
    /// a SHA2-256 multihash (0x12, 32 bytes; public DHT servers take only multihashes) of a
    /// keyed BLAKE3 of the publisher and the epoch.
    pub fn key(&self, publisher: &[u8], epoch: u64) -> Vec<u8> {
        use sha2::Digest;
        let mut h = blake3::Hasher::new_keyed(&self.0);
        h.update(b"cairn-rendezvous/v1");
        h.update(&(publisher.len() as u64).to_le_bytes());
        h.update(publisher);
        h.update(&epoch.to_le_bytes());
        let digest = sha2::Sha256::digest(h.finalize().as_bytes());
        let mut key = vec![0x12, 0x20];
        key.extend_from_slice(&digest);
        key
    }
}

/// The epoch of a moment (seconds since the Unix epoch).
pub fn epoch(unix_s: u64) -> u64 {
    unix_s / EPOCH_S
}

/// The epochs to publish under at `unix_s`.
pub fn publish_epochs(unix_s: u64) -> Vec<u64> {
    let e = epoch(unix_s);
    let left = EPOCH_S - unix_s % EPOCH_S;
    let mut out = vec![e];
    if left <= SKEW_S {
        out.push(e + 1);
    }
    out
}

/// The epochs to look up at `unix_s`.
pub fn lookup_epochs(unix_s: u64) -> Vec<u64> {
    let e = epoch(unix_s);
    let into = unix_s % EPOCH_S;
    let mut out = vec![e];
    if into < SKEW_S && e > 0 {
        out.push(e - 1);
    }
    if EPOCH_S - into <= SKEW_S {
        out.push(e + 1);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_sides_compute_one_key_that_changes_with_secret_publisher_and_epoch() {
        let s = RendezvousSecret::from_session_key(b"spake2 key of a pairing");
        let same = RendezvousSecret::from_session_key(b"spake2 key of a pairing");
        let other = RendezvousSecret::from_session_key(b"another pairing");
        let k = s.key(b"device-a", 100);
        assert_eq!(k, same.key(b"device-a", 100));
        assert_eq!((k.len(), &k[..2]), (34, &[0x12u8, 0x20][..]));
        assert_ne!(k, s.key(b"device-b", 100), "each direction has its own key");
        assert_ne!(k, s.key(b"device-a", 101), "keys rotate every epoch");
        assert_ne!(k, other.key(b"device-a", 100), "another pair's key differs");
        // Not the device id, nor anything a stranger can compute from it.
        assert!(!k.windows(8).any(|w| w == b"device-a"));
        assert_eq!(RendezvousSecret::from_hex(&s.to_hex()), Some(s));
        assert_eq!(RendezvousSecret::from_hex("zz"), None);
        assert_eq!(RendezvousSecret::from_hex(&"é".repeat(32)), None);
        assert_eq!(format!("{s:?}"), "RendezvousSecret(..)");
    }

    #[test]
    fn clocks_up_to_the_skew_apart_always_share_an_epoch() {
        // Every moment around three epoch boundaries, against every skew in steps.
        for boundary in [EPOCH_S, 5 * EPOCH_S, 1_000 * EPOCH_S] {
            let mut t = boundary - 2 * SKEW_S;
            while t < boundary + 2 * SKEW_S {
                let published = publish_epochs(t);
                let mut skew = -(SKEW_S as i64);
                while skew <= SKEW_S as i64 {
                    let other = (t as i64 + skew) as u64;
                    let looked = lookup_epochs(other);
                    assert!(
                        published.iter().any(|e| looked.contains(e)),
                        "published at {t} under {published:?}, looked up at {other} in {looked:?}"
                    );
                    skew += 97;
                }
                t += 61;
            }
        }
        // Outside the last hour one key is published, so records do not double.
        assert_eq!(publish_epochs(EPOCH_S * 3 + 10).len(), 1);
    }
}
