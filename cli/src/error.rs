//! A failed command and its exit code. The code comes from the error's kind in one place:
//! [`cairn_api::ApiError::exit_code`] for what the daemon answered (and for the CLI's own
//! "no such folder" and "pairing failed"), [`cairn_api::ClientError::exit_code`] for a
//! daemon that does not answer, 1 for anything else.

use cairn_api::launch::StartError;
use cairn_api::{ApiError, ClientError, exit};

/// A failed command: what to tell the user and the exit code it maps to.
#[derive(Debug)]
pub struct CliError {
    /// The exit code (README's list).
    pub code: u8,
    /// What went wrong, for people.
    pub message: String,
}

impl CliError {
    /// An error with no more specific kind: exit code 1.
    pub fn other(message: impl Into<String>) -> Self {
        CliError {
            code: exit::ERROR,
            message: message.into(),
        }
    }

    /// The command line is wrong (a value that does not parse): exit code 2.
    pub fn usage(message: impl Into<String>) -> Self {
        CliError {
            code: exit::USAGE,
            message: message.into(),
        }
    }
}

impl From<ApiError> for CliError {
    fn from(e: ApiError) -> Self {
        CliError {
            code: e.exit_code(),
            message: e.to_string(),
        }
    }
}

impl From<ClientError> for CliError {
    fn from(e: ClientError) -> Self {
        CliError {
            code: e.exit_code(),
            message: e.to_string(),
        }
    }
}

impl From<StartError> for CliError {
    fn from(e: StartError) -> Self {
        CliError {
            code: e.exit_code(),
            message: e.to_string(),
        }
    }
}

impl From<std::io::Error> for CliError {
    fn from(e: std::io::Error) -> Self {
        CliError::other(e.to_string())
    }
}
