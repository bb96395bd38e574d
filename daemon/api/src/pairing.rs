//! Pairing through the control API: opening an invitation (`POST /v1/pair/invite`), asking
//! where it stands (`GET /v1/pair/invite?wait=S`) and joining another device's
//! (`POST /v1/pair/join`).

use serde::{Deserialize, Serialize};

/// Where an invitation stands, as `cairn pair` shows it; JSON tags it with `state`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "lowercase")]
pub enum InviteStatus {
    /// Open: the other device must enter `code` within `expires_in_s` seconds.
    Waiting {
        /// The pairing code, e.g. `7-guitar-ginger`.
        code: String,
        /// Seconds left.
        expires_in_s: u64,
    },
    /// A device joined with the code.
    Paired {
        /// Its device id.
        peer: String,
        /// Its name.
        name: String,
    },
    /// The one attempt the code allows failed.
    Failed {
        /// Why, for people.
        error: String,
    },
    /// Nobody joined in time.
    Expired,
    /// No invitation is open.
    None,
}

/// The answer to `POST /v1/pair/join`: the paired device.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Paired {
    /// Its device id.
    pub peer: String,
    /// Its name.
    pub name: String,
}

/// `POST /v1/pair/join`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct JoinRequest {
    /// The code the other device shows.
    pub code: String,
}

/// The query of `GET /v1/pair/invite`: wait up to `wait` seconds (at most 30) while the
/// invitation is still waiting.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WaitQuery {
    /// Seconds to wait for a change; none answers at once.
    pub wait: Option<u64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invite_states_are_tagged_with_state() {
        let cases = [
            (
                InviteStatus::Waiting {
                    code: "7-a-b".into(),
                    expires_in_s: 60,
                },
                r#"{"state":"waiting","code":"7-a-b","expires_in_s":60}"#,
            ),
            (
                InviteStatus::Paired {
                    peer: "x".into(),
                    name: "laptop".into(),
                },
                r#"{"state":"paired","peer":"x","name":"laptop"}"#,
            ),
            (
                InviteStatus::Failed {
                    error: "wrong code".into(),
                },
                r#"{"state":"failed","error":"wrong code"}"#,
            ),
            (InviteStatus::Expired, r#"{"state":"expired"}"#),
            (InviteStatus::None, r#"{"state":"none"}"#),
        ];
        for (status, json) in cases {
            assert_eq!(serde_json::to_string(&status).unwrap(), json);
            assert_eq!(serde_json::from_str::<InviteStatus>(json).unwrap(), status);
        }
    }
}
