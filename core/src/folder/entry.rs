//! What one device says about one path: an [`EntryValue`], and its compact encoding.
//!
//! One path is one scalar value in the folder document (not a nested object): it keeps the
//! document small (one operation per change) and makes concurrent changes of a path a
//! conflict on exactly one key, which is the unit the conflict rules reason about.

use std::fmt;

use crate::hash::ContentId;
use crate::scan::EntryKind;

const ENCODING_VERSION: u8 = 1;
const FLAG_DELETED: u8 = 1;
const FLAG_CONTENT: u8 = 2;
const FLAG_LINK: u8 = 4;
const FLAG_REPLACES: u8 = 8;

/// A device as named in folder metadata: 8 bytes derived from its PeerId.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct DeviceId(pub [u8; 8]);

impl DeviceId {
    /// Derives the short device id from a device's full public identity bytes.
    pub fn from_identity(identity: &[u8]) -> Self {
        let h = blake3::hash(identity);
        let mut id = [0u8; 8];
        id.copy_from_slice(&h.as_bytes()[..8]);
        DeviceId(id)
    }

    /// Seven upper-case base32 characters, as in Syncthing's conflict file names.
    pub fn short(&self) -> String {
        const ALPHABET: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
        let bits = u64::from_be_bytes(self.0);
        (0..7)
            .map(|i| ALPHABET[((bits >> (59 - 5 * i)) & 31) as usize] as char)
            .collect()
    }
}

impl fmt::Debug for DeviceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DeviceId({})", self.short())
    }
}

/// The state of one path as written by one device.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EntryValue {
    /// File, directory or symlink (for a tombstone: what was deleted).
    pub kind: EntryKind,
    /// True for a tombstone: the path was deleted.
    pub deleted: bool,
    /// Content of a file.
    pub content: Option<ContentId>,
    /// Size in bytes of a file.
    pub size: u64,
    /// Modification time, ns since the Unix epoch.
    pub mtime_ns: i64,
    /// Permission bits.
    pub mode: u32,
    /// Target of a symlink.
    pub link_target: Option<String>,
    /// The device that made this change.
    pub device: DeviceId,
    /// The content this change superseded at this path, kept for history.
    pub replaces: Option<ContentId>,
}

/// A value that could not be decoded: sent by a buggy or hostile peer.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("malformed entry value: {0}")]
pub struct EntryDecodeError(pub &'static str);

impl EntryValue {
    /// The deletion of this value by `device`, which saw it: a tombstone that replaces its
    /// content.
    pub fn deleted_by(&self, device: DeviceId) -> EntryValue {
        EntryValue {
            kind: self.kind,
            deleted: true,
            content: None,
            size: 0,
            mtime_ns: self.mtime_ns,
            mode: self.mode,
            link_target: None,
            device,
            replaces: self.content,
        }
    }

    /// The permission bits to give a file written from this value: a peer may set the
    /// executable bits and narrow who can read, nothing else. Setuid, setgid and sticky
    /// bits are dropped, group and others never get write, and the owner can always read
    /// and write (the daemon must be able to replace the file).
    pub fn local_mode(&self) -> u32 {
        (self.mode & 0o755) | 0o600
    }

    /// True when both values describe the same thing on disk (kind, content, link target),
    /// whoever wrote them and whenever.
    pub fn same_data(&self, other: &EntryValue) -> bool {
        self.deleted == other.deleted
            && self.kind == other.kind
            && self.content == other.content
            && self.link_target == other.link_target
    }

    /// Compact binary form stored in the folder document.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(64);
        let mut flags = 0;
        if self.deleted {
            flags |= FLAG_DELETED;
        }
        if self.content.is_some() {
            flags |= FLAG_CONTENT;
        }
        if self.link_target.is_some() {
            flags |= FLAG_LINK;
        }
        if self.replaces.is_some() {
            flags |= FLAG_REPLACES;
        }
        out.push(ENCODING_VERSION);
        out.push(flags);
        out.push(match self.kind {
            EntryKind::File => 0,
            EntryKind::Dir => 1,
            EntryKind::Symlink => 2,
        });
        out.extend_from_slice(&self.device.0);
        put_varint(&mut out, self.size);
        put_varint(&mut out, zigzag(self.mtime_ns));
        put_varint(&mut out, u64::from(self.mode));
        if let Some(c) = &self.content {
            out.extend_from_slice(c.as_bytes());
        }
        if let Some(r) = &self.replaces {
            out.extend_from_slice(r.as_bytes());
        }
        if let Some(t) = &self.link_target {
            put_varint(&mut out, t.len() as u64);
            out.extend_from_slice(t.as_bytes());
        }
        out
    }

    /// Parses [`EntryValue::encode`] output, refusing anything malformed.
    pub fn decode(bytes: &[u8]) -> Result<Self, EntryDecodeError> {
        let mut r = Reader(bytes);
        if r.byte()? != ENCODING_VERSION {
            return Err(EntryDecodeError("unknown version"));
        }
        let flags = r.byte()?;
        if flags & !(FLAG_DELETED | FLAG_CONTENT | FLAG_LINK | FLAG_REPLACES) != 0 {
            return Err(EntryDecodeError("unknown flags"));
        }
        let kind = match r.byte()? {
            0 => EntryKind::File,
            1 => EntryKind::Dir,
            2 => EntryKind::Symlink,
            _ => return Err(EntryDecodeError("unknown kind")),
        };
        let device = DeviceId(r.array()?);
        let size = r.varint()?;
        let mtime_ns = unzigzag(r.varint()?);
        let mode = u32::try_from(r.varint()?).map_err(|_| EntryDecodeError("mode too large"))?;
        let content = (flags & FLAG_CONTENT != 0)
            .then(|| r.array().map(ContentId))
            .transpose()?;
        let replaces = (flags & FLAG_REPLACES != 0)
            .then(|| r.array().map(ContentId))
            .transpose()?;
        let link_target = if flags & FLAG_LINK != 0 {
            let len = r.varint()?;
            if len > crate::path::MAX_PATH_BYTES as u64 {
                return Err(EntryDecodeError("link target too long"));
            }
            let raw = r.take(len as usize)?;
            Some(
                String::from_utf8(raw.to_vec())
                    .map_err(|_| EntryDecodeError("link target not UTF-8"))?,
            )
        } else {
            None
        };
        if !r.0.is_empty() {
            return Err(EntryDecodeError("trailing bytes"));
        }
        let shape_ok = match kind {
            EntryKind::File => {
                link_target.is_none() && (content.is_some() || flags & FLAG_DELETED != 0)
            }
            EntryKind::Dir => content.is_none() && link_target.is_none(),
            EntryKind::Symlink => {
                content.is_none() && (link_target.is_some() || flags & FLAG_DELETED != 0)
            }
        };
        if !shape_ok {
            return Err(EntryDecodeError("fields do not fit the kind"));
        }
        Ok(EntryValue {
            kind,
            deleted: flags & FLAG_DELETED != 0,
            content,
            size,
            mtime_ns,
            mode,
            link_target,
            device,
            replaces,
        })
    }
}

fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

fn unzigzag(v: u64) -> i64 {
    ((v >> 1) as i64) ^ -((v & 1) as i64)
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], EntryDecodeError> {
        if self.0.len() < n {
            return Err(EntryDecodeError("truncated"));
        }
        let (head, tail) = self.0.split_at(n);
        self.0 = tail;
        Ok(head)
    }

    fn byte(&mut self) -> Result<u8, EntryDecodeError> {
        Ok(self.take(1)?[0])
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], EntryDecodeError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }

    fn varint(&mut self) -> Result<u64, EntryDecodeError> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.byte()?;
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(EntryDecodeError("varint too long"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn file() -> EntryValue {
        EntryValue {
            kind: EntryKind::File,
            deleted: false,
            content: Some(ContentId([7; 32])),
            size: 12345,
            mtime_ns: 1_700_000_000_123_456_789,
            mode: 0o644,
            link_target: None,
            device: DeviceId([1, 2, 3, 4, 5, 6, 7, 8]),
            replaces: Some(ContentId([6; 32])),
        }
    }

    #[test]
    fn values_round_trip() {
        let f = file();
        assert_eq!(EntryValue::decode(&f.encode()).unwrap(), f);
        let link = EntryValue {
            kind: EntryKind::Symlink,
            content: None,
            replaces: None,
            link_target: Some("../target".into()),
            mtime_ns: -5,
            ..file()
        };
        assert_eq!(EntryValue::decode(&link.encode()).unwrap(), link);
    }

    #[test]
    fn malformed_values_are_refused() {
        let bytes = file().encode();
        assert!(EntryValue::decode(&bytes[..bytes.len() - 1]).is_err());
        let mut extra = bytes.clone();
        extra.push(0);
        assert!(EntryValue::decode(&extra).is_err());
        let mut bad_kind = bytes.clone();
        bad_kind[2] = 9;
        assert!(EntryValue::decode(&bad_kind).is_err());
        let dir_with_content = EntryValue {
            kind: EntryKind::Dir,
            ..file()
        };
        assert!(EntryValue::decode(&dir_with_content.encode()).is_err());
        assert!(EntryValue::decode(&[]).is_err());
    }

    #[test]
    fn short_device_ids_are_seven_base32_characters() {
        let s = DeviceId::from_identity(b"peer").short();
        assert_eq!(s.len(), 7);
        assert!(
            s.chars()
                .all(|c| c.is_ascii_uppercase() || ('2'..='7').contains(&c))
        );
    }

    proptest! {
        #[test]
        fn decode_never_panics_on_garbage(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = EntryValue::decode(&bytes);
        }
    }

    #[test]
    fn a_peer_sets_only_executable_bits() {
        let mut v = file();
        for (claimed, written) in [
            (0o6777, 0o755),
            (0o4755, 0o755),
            (0o1777, 0o755),
            (0o644, 0o644),
            (0o600, 0o600),
            (0o000, 0o600),
            (0o777, 0o755),
            (0o700, 0o700),
            (u32::MAX, 0o755),
        ] {
            v.mode = claimed;
            assert_eq!(v.local_mode(), written, "claimed {claimed:o}");
        }
    }
}
