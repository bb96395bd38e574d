//! 32-byte BLAKE3 names: the identifiers of chunks and file contents.
//!
//! [`ChunkId`] names one chunk of bytes; [`ContentId`] names a whole file's content (the
//! Merkle root over its manifest). They are distinct types so that one can never be looked
//! up where the other is meant.

use std::fmt;
use std::str::FromStr;

/// Error for a hash written as text that is not 64 hex digits.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a 64-digit hex hash: {0:?}")]
pub struct ParseHashError(pub String);

macro_rules! hash_newtype {
    ($(#[$meta:meta])* $name:ident) => {
        $(#[$meta])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(pub [u8; 32]);

        impl $name {
            /// The raw 32 bytes.
            pub fn as_bytes(&self) -> &[u8; 32] {
                &self.0
            }

            /// Lower-case hex, 64 characters.
            pub fn to_hex(&self) -> String {
                let mut s = String::with_capacity(64);
                for b in self.0 {
                    s.push(char::from_digit(u32::from(b >> 4), 16).unwrap_or('0'));
                    s.push(char::from_digit(u32::from(b & 0xf), 16).unwrap_or('0'));
                }
                s
            }

            /// The first 8 hex digits, for logs and human-facing output.
            pub fn short(&self) -> String {
                self.to_hex()[..8].to_string()
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.to_hex())
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({})", stringify!($name), self.short())
            }
        }

        impl FromStr for $name {
            type Err = ParseHashError;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                parse_hex32(s).map($name).ok_or_else(|| ParseHashError(s.to_string()))
            }
        }

        // Hex in human-readable formats (JSON), raw 32 bytes in binary ones (the index).
        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                if s.is_human_readable() {
                    s.serialize_str(&self.to_hex())
                } else {
                    self.0.serialize(s)
                }
            }
        }

        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                if d.is_human_readable() {
                    let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
                    s.parse().map_err(serde::de::Error::custom)
                } else {
                    <[u8; 32]>::deserialize(d).map($name)
                }
            }
        }
    };
}

hash_newtype!(
    /// The name of a chunk: BLAKE3 of its bytes.
    ChunkId
);
hash_newtype!(
    /// The name of a file's content: the Merkle root of its manifest (see [`crate::manifest`]).
    ContentId
);

impl ChunkId {
    /// Names `bytes` as a chunk.
    pub fn of(bytes: &[u8]) -> Self {
        ChunkId(*blake3::hash(bytes).as_bytes())
    }

    /// True when `bytes` are exactly the chunk this id names.
    pub fn matches(&self, bytes: &[u8]) -> bool {
        // blake3::Hash compares in constant time; the id is public anyway.
        blake3::hash(bytes) == blake3::Hash::from_bytes(self.0)
    }
}

fn parse_hex32(s: &str) -> Option<[u8; 32]> {
    let bytes = s.as_bytes();
    if bytes.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, pair) in bytes.chunks_exact(2).enumerate() {
        let hi = (pair[0] as char).to_digit(16)?;
        let lo = (pair[1] as char).to_digit(16)?;
        out[i] = (hi * 16 + lo) as u8;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trips() {
        let id = ChunkId::of(b"hello");
        let parsed: ChunkId = id.to_hex().parse().unwrap();
        assert_eq!(parsed, id);
        assert_eq!(id.to_hex(), blake3::hash(b"hello").to_hex().as_str());
    }

    #[test]
    fn malformed_hex_is_rejected() {
        assert!("zz".parse::<ChunkId>().is_err());
        assert!("0".repeat(63).parse::<ContentId>().is_err());
        assert!("g".repeat(64).parse::<ContentId>().is_err());
    }

    #[test]
    fn chunk_id_matches_only_its_bytes() {
        let id = ChunkId::of(b"abc");
        assert!(id.matches(b"abc"));
        assert!(!id.matches(b"abd"));
    }
}
