//! Entries of a folder document this device refuses to write, as the engine remembers
//! them: what `/v1/status` shows ([`cairn_api::status::RefusedPath`]) and the refused
//! version, which is never fetched again while the document asks for exactly it.

use cairn_core::ContentId;

/// A refused path of a folder document.
#[derive(Clone, Debug)]
pub struct RefusedPath {
    /// The folder-relative path.
    pub path: String,
    /// Why, for people.
    pub reason: String,
    /// The device that wrote the entry (a name for people).
    pub device: String,
    /// The version refused; none when the path itself is refused, whatever its version.
    pub(crate) content: Option<ContentId>,
}

impl From<&RefusedPath> for cairn_api::status::RefusedPath {
    fn from(r: &RefusedPath) -> Self {
        cairn_api::status::RefusedPath {
            path: r.path.clone(),
            reason: r.reason.clone(),
            device: r.device.clone(),
        }
    }
}
