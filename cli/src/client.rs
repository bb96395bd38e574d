//! A small HTTP/1.1 client for the daemon's control API on 127.0.0.1.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::time::Duration;

use serde_json::Value;

/// Exit codes scripts can rely on.
pub mod exit {
    /// Something went wrong; the message says what.
    pub const ERROR: u8 = 1;
    /// The daemon is not running.
    pub const NOT_RUNNING: u8 = 3;
    /// Pairing failed: wrong, used or expired code.
    pub const PAIRING_FAILED: u8 = 4;
    /// A named folder, device or conflict does not exist.
    pub const NOT_FOUND: u8 = 5;
}

/// A failed command, with the exit code it maps to.
#[derive(Debug)]
pub struct CliError {
    pub code: u8,
    pub message: String,
}

impl CliError {
    pub fn new(code: u8, message: impl Into<String>) -> Self {
        CliError {
            code,
            message: message.into(),
        }
    }
}

impl<E: std::error::Error> From<E> for CliError {
    fn from(e: E) -> Self {
        CliError::new(exit::ERROR, e.to_string())
    }
}

/// The daemon of one home directory.
pub struct Client {
    address: String,
    token: String,
    pub pid: u32,
    timeout: Duration,
}

impl Client {
    /// Connects to the daemon whose home is `home`, if it runs.
    pub fn connect(home: &Path) -> Result<Self, CliError> {
        Self::connect_with(home, Duration::from_secs(90))
    }

    /// As [`Client::connect`], with `timeout` as the longest any request may wait (long
    /// calls such as waiting for a pairing need the default; front ends that poll use a
    /// short one so a wedged daemon reads as "not responding").
    pub fn connect_with(home: &Path, timeout: Duration) -> Result<Self, CliError> {
        let not_running = || {
            CliError::new(
                exit::NOT_RUNNING,
                format!(
                    "the daemon is not running (home {}); start it with `cairn up`",
                    home.display()
                ),
            )
        };
        let text = std::fs::read_to_string(home.join("control.json")).map_err(|_| not_running())?;
        let info: Value = serde_json::from_str(&text).map_err(|_| not_running())?;
        let client = Client {
            address: info["address"].as_str().unwrap_or_default().to_string(),
            token: info["token"].as_str().unwrap_or_default().to_string(),
            pid: info["pid"].as_u64().unwrap_or(0) as u32,
            timeout,
        };
        client.get("/v1/status").map_err(|_| not_running())?;
        Ok(client)
    }

    /// GET `path` and parse the JSON answer.
    pub fn get(&self, path: &str) -> Result<Value, CliError> {
        self.request("GET", path, None)
    }

    /// POST `body` as JSON to `path` and parse the JSON answer.
    pub fn post(&self, path: &str, body: Value) -> Result<Value, CliError> {
        self.request("POST", path, Some(body))
    }

    fn request(&self, method: &str, path: &str, body: Option<Value>) -> Result<Value, CliError> {
        let (status, text) = self.raw(method, path, body)?;
        let value: Value = serde_json::from_str(&text).unwrap_or(Value::String(text));
        if (200..300).contains(&status) {
            return Ok(value);
        }
        let message = value["error"]
            .as_str()
            .map(str::to_string)
            .unwrap_or_else(|| value.to_string());
        let code = match status {
            404 => exit::NOT_FOUND,
            401 => exit::ERROR,
            _ => exit::ERROR,
        };
        Err(CliError::new(code, message))
    }

    fn raw(
        &self,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> Result<(u16, String), CliError> {
        let body = body.map(|b| b.to_string()).unwrap_or_default();
        let address = self.address.parse().map_err(|_| {
            CliError::new(
                exit::NOT_RUNNING,
                format!("bad control address {:?}", self.address),
            )
        })?;
        let mut s = TcpStream::connect_timeout(&address, self.timeout).map_err(|e| {
            CliError::new(
                exit::NOT_RUNNING,
                format!("cannot reach the daemon at {}: {e}", self.address),
            )
        })?;
        s.set_read_timeout(Some(self.timeout))?;
        s.set_write_timeout(Some(self.timeout))?;
        let req = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            self.address,
            self.token,
            body.len()
        );
        s.write_all(req.as_bytes())?;
        let mut resp = String::new();
        s.read_to_string(&mut resp)?;
        let (head, body) = resp.split_once("\r\n\r\n").unwrap_or((&resp, ""));
        let status = head
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        Ok((status, body.to_string()))
    }
}
