//! Why a control API request failed: one enum, mapped to one HTTP status
//! ([`ApiError::status`]) and one CLI exit code ([`ApiError::exit_code`]), and decoded back
//! from the daemon's answer ([`ApiError::from_answer`]).

use serde::{Deserialize, Serialize};

/// The exit codes of the `cairn` CLI, as README documents them; scripts rely on them.
pub mod exit {
    /// Something went wrong; the message says what.
    pub const ERROR: u8 = 1;
    /// The command line was wrong (clap's own code).
    pub const USAGE: u8 = 2;
    /// The daemon is not running.
    pub const NOT_RUNNING: u8 = 3;
    /// Pairing failed: wrong, used or expired code.
    pub const PAIRING_FAILED: u8 = 4;
    /// A named folder, device, offer, conflict or version does not exist.
    pub const NOT_FOUND: u8 = 5;
}

/// Why the daemon did not carry out a request. Each variant carries the message for
/// people.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ApiError {
    /// The request is malformed (a body or query that does not parse): HTTP 400, exit 1.
    #[error("{0}")]
    BadRequest(String),
    /// The bearer token is missing or wrong: HTTP 401, exit 1.
    #[error("{0}")]
    Unauthorized(String),
    /// Pairing did not succeed (a wrong, used or expired code, or no device found for
    /// it): HTTP 403, exit 4.
    #[error("{0}")]
    PairingFailed(String),
    /// No such folder, device, offer, conflict or version: HTTP 404, exit 5.
    #[error("{0}")]
    NotFound(String),
    /// The request cannot be carried out as asked: HTTP 422, exit 1.
    #[error("{0}")]
    Refused(String),
    /// The daemon failed on its side: HTTP 500, exit 1.
    #[error("{0}")]
    Internal(String),
    /// The daemon is stopping and takes no more requests: HTTP 503, exit 3 (as when it
    /// is not running).
    #[error("{0}")]
    Unavailable(String),
}

impl ApiError {
    /// The HTTP status the control API answers with: the one mapping to HTTP.
    pub fn status(&self) -> u16 {
        match self {
            ApiError::BadRequest(_) => 400,
            ApiError::Unauthorized(_) => 401,
            ApiError::PairingFailed(_) => 403,
            ApiError::NotFound(_) => 404,
            ApiError::Refused(_) => 422,
            ApiError::Internal(_) => 500,
            ApiError::Unavailable(_) => 503,
        }
    }

    /// The exit code of a `cairn` command that failed this way: the one mapping to exit
    /// codes.
    pub fn exit_code(&self) -> u8 {
        match self {
            ApiError::NotFound(_) => exit::NOT_FOUND,
            ApiError::PairingFailed(_) => exit::PAIRING_FAILED,
            ApiError::Unavailable(_) => exit::NOT_RUNNING,
            ApiError::BadRequest(_)
            | ApiError::Unauthorized(_)
            | ApiError::Refused(_)
            | ApiError::Internal(_) => exit::ERROR,
        }
    }

    /// What went wrong, for people.
    pub fn message(&self) -> &str {
        match self {
            ApiError::BadRequest(m)
            | ApiError::Unauthorized(m)
            | ApiError::PairingFailed(m)
            | ApiError::NotFound(m)
            | ApiError::Refused(m)
            | ApiError::Internal(m)
            | ApiError::Unavailable(m) => m,
        }
    }

    /// The JSON body the daemon answers with.
    pub fn body(&self) -> ErrorBody {
        ErrorBody {
            error: self.message().to_string(),
        }
    }

    /// The error an HTTP status stands for (the inverse of [`ApiError::status`]); a status
    /// the daemon never sends itself (axum's own rejections, say) falls to the nearest
    /// kind: other 4xx to `BadRequest`, anything else to `Internal`.
    pub fn from_status(status: u16, message: String) -> ApiError {
        match status {
            401 => ApiError::Unauthorized(message),
            403 => ApiError::PairingFailed(message),
            404 => ApiError::NotFound(message),
            422 => ApiError::Refused(message),
            503 => ApiError::Unavailable(message),
            400..=499 => ApiError::BadRequest(message),
            _ => ApiError::Internal(message),
        }
    }

    /// Decodes an error answer: its status and body (an [`ErrorBody`], or plain text as
    /// axum's own rejections send).
    pub fn from_answer(status: u16, body: &str) -> ApiError {
        let message = match serde_json::from_str::<ErrorBody>(body) {
            Ok(b) => b.error,
            Err(_) if body.trim().is_empty() => format!("the daemon answered HTTP {status}"),
            Err(_) => body.trim().to_string(),
        };
        ApiError::from_status(status, message)
    }
}

/// A bare message is a refusal: the daemon's checks that fail with words
/// (`Err(format!(..))?`) answer 422.
impl From<String> for ApiError {
    fn from(message: String) -> Self {
        ApiError::Refused(message)
    }
}

/// As `From<String>`.
impl From<&str> for ApiError {
    fn from(message: &str) -> Self {
        ApiError::Refused(message.to_string())
    }
}

/// The body of every error answer: `{"error": "..."}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// What went wrong, for people.
    pub error: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn every_kind() -> Vec<ApiError> {
        let m = || "why".to_string();
        vec![
            ApiError::BadRequest(m()),
            ApiError::Unauthorized(m()),
            ApiError::PairingFailed(m()),
            ApiError::NotFound(m()),
            ApiError::Refused(m()),
            ApiError::Internal(m()),
            ApiError::Unavailable(m()),
        ]
    }

    #[test]
    fn each_error_has_its_http_status_and_exit_code() {
        let got: Vec<(u16, u8)> = every_kind()
            .iter()
            .map(|e| (e.status(), e.exit_code()))
            .collect();
        assert_eq!(
            got,
            vec![
                (400, exit::ERROR),
                (401, exit::ERROR),
                (403, exit::PAIRING_FAILED),
                (404, exit::NOT_FOUND),
                (422, exit::ERROR),
                (500, exit::ERROR),
                (503, exit::NOT_RUNNING),
            ]
        );
    }

    #[test]
    fn exit_codes_are_the_ones_readme_documents() {
        // README: 0 success, 1 error, 2 usage error, 3 daemon not running, 4 pairing
        // failed, 5 no such folder, device or conflict.
        assert_eq!(
            [
                exit::ERROR,
                exit::USAGE,
                exit::NOT_RUNNING,
                exit::PAIRING_FAILED,
                exit::NOT_FOUND
            ],
            [1, 2, 3, 4, 5]
        );
    }

    #[test]
    fn a_status_decodes_to_the_error_that_answers_with_it() {
        for e in every_kind() {
            assert_eq!(ApiError::from_status(e.status(), "why".into()), e);
        }
        assert_eq!(
            ApiError::from_status(415, "no json".into()),
            ApiError::BadRequest("no json".into())
        );
        assert_eq!(
            ApiError::from_status(502, "gateway".into()),
            ApiError::Internal("gateway".into())
        );
    }

    #[test]
    fn an_answer_body_decodes_as_json_or_plain_text() {
        let e = ApiError::NotFound("no folder \"x\"".into());
        let body = serde_json::to_string(&e.body()).unwrap();
        assert_eq!(body, r#"{"error":"no folder \"x\""}"#);
        assert_eq!(ApiError::from_answer(404, &body), e);
        assert_eq!(
            ApiError::from_answer(422, "Failed to deserialize the JSON body\n"),
            ApiError::Refused("Failed to deserialize the JSON body".into())
        );
        assert_eq!(
            ApiError::from_answer(500, ""),
            ApiError::Internal("the daemon answered HTTP 500".into())
        );
    }

    #[test]
    fn a_bare_message_is_a_refusal() {
        assert_eq!(
            ApiError::from("no".to_string()),
            ApiError::Refused("no".into())
        );
        assert_eq!(ApiError::from("no").to_string(), "no");
    }
}
