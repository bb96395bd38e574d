//! A small blocking HTTP/1.1 client of the daemon's control API on 127.0.0.1: one typed
//! method per route, error answers decoded into [`ApiError`].
//!
//! Each request is one connection (`Connection: close`), read to its end; the longest a
//! request may take is the client's timeout, so a front end that polls reads a wedged
//! daemon as not responding instead of hanging.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::conflicts::{Conflict, Keep, ResolveRequest, Resolved};
use crate::control::{Ack, CONTROL_FILE, ControlInfo, routes};
use crate::error::{ApiError, exit};
use crate::folders::{
    AcceptRequest, Accepted, DeclineRequest, FolderRequest, PauseState, ShareRequest, Shared,
};
use crate::history::{
    HistoryQuery, Pruned, RestoreRequest, Restored, RewindRequest, Rewound, Version,
};
use crate::pairing::{InviteStatus, JoinRequest, Paired};
use crate::status::{FolderStatus, PeerStatus, Status};

/// The longest a request waits by default: long calls such as joining a pairing need it.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(90);

/// Why a request to the daemon failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// No daemon runs with this home (no readable `control.json`, or nothing answers at
    /// its address).
    #[error(
        "the daemon is not running (home {}); start it with `cairn up`",
        home.display()
    )]
    NotRunning {
        /// The daemon's home directory.
        home: PathBuf,
    },
    /// The daemon's address does not accept connections.
    #[error("cannot reach the daemon at {address}: {source}")]
    Unreachable {
        /// `127.0.0.1:PORT` from `control.json`.
        address: String,
        /// What connecting said.
        source: std::io::Error,
    },
    /// The connection broke off or timed out during the request.
    #[error("no answer from the daemon at {address}: {source}")]
    Exchange {
        /// `127.0.0.1:PORT` from `control.json`.
        address: String,
        /// What reading or writing said.
        source: std::io::Error,
    },
    /// The daemon answered with an error.
    #[error(transparent)]
    Api(#[from] ApiError),
    /// The daemon's answer is not what the route returns (a daemon of another version).
    #[error("unexpected answer from the daemon to {route}: {reason}")]
    Decode {
        /// The request's path.
        route: String,
        /// What did not match.
        reason: String,
    },
}

impl ClientError {
    /// The exit code of a `cairn` command that failed this way: the daemon's own errors
    /// by [`ApiError::exit_code`], a daemon that does not answer as not running.
    pub fn exit_code(&self) -> u8 {
        match self {
            ClientError::Api(e) => e.exit_code(),
            ClientError::NotRunning { .. } | ClientError::Unreachable { .. } => exit::NOT_RUNNING,
            ClientError::Exchange { .. } | ClientError::Decode { .. } => exit::ERROR,
        }
    }
}

/// The daemon of one home directory.
#[derive(Clone, Debug)]
pub struct Client {
    address: String,
    token: String,
    pid: u32,
    timeout: Duration,
}

impl Client {
    /// Connects to the daemon whose home is `home`, if it runs and answers.
    pub fn connect(home: &Path) -> Result<Self, ClientError> {
        Self::connect_with(home, DEFAULT_TIMEOUT)
    }

    /// As [`Client::connect`], with `timeout` as the longest any request may wait (long
    /// calls such as waiting for a pairing need the default; front ends that poll use a
    /// short one so a wedged daemon reads as "not responding").
    pub fn connect_with(home: &Path, timeout: Duration) -> Result<Self, ClientError> {
        let not_running = || ClientError::NotRunning {
            home: home.to_path_buf(),
        };
        let text = std::fs::read_to_string(home.join(CONTROL_FILE)).map_err(|_| not_running())?;
        let info: ControlInfo = serde_json::from_str(&text).map_err(|_| not_running())?;
        let client = Client::at(&info, timeout);
        client.status().map_err(|_| not_running())?;
        Ok(client)
    }

    /// A client of the daemon `info` describes, without asking it anything yet.
    pub fn at(info: &ControlInfo, timeout: Duration) -> Self {
        Client {
            address: info.address.clone(),
            token: info.token.clone(),
            pid: info.pid,
            timeout,
        }
    }

    /// The daemon's process id.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// `GET /v1/status`.
    pub fn status(&self) -> Result<Status, ClientError> {
        self.get(routes::STATUS)
    }

    /// The folders of `GET /v1/status`.
    pub fn folders(&self) -> Result<Vec<FolderStatus>, ClientError> {
        Ok(self.status()?.folders)
    }

    /// The trusted peers of `GET /v1/status`.
    pub fn peers(&self) -> Result<Vec<PeerStatus>, ClientError> {
        Ok(self.status()?.peers)
    }

    /// `GET /metrics`: counters in Prometheus text format.
    pub fn metrics(&self) -> Result<String, ClientError> {
        self.answer(routes::METRICS, self.raw("GET", routes::METRICS, None)?)
    }

    /// `POST /v1/rescan`: scan one folder (by id) or all now.
    pub fn rescan(&self, folder: Option<&str>) -> Result<Ack, ClientError> {
        let route = format!("{}{}", routes::RESCAN, query(&[("folder", folder)]));
        self.post(&route, None::<&()>)
    }

    /// `POST /v1/shutdown`: the daemon stops (this returns before it has).
    pub fn shutdown(&self) -> Result<Ack, ClientError> {
        self.post(routes::SHUTDOWN, None::<&()>)
    }

    /// `POST /v1/pair/invite`: opens an invitation (replacing one still open).
    pub fn invite(&self) -> Result<InviteStatus, ClientError> {
        self.post(routes::PAIR_INVITE, None::<&()>)
    }

    /// `GET /v1/pair/invite`: where the invitation stands, waiting up to `wait_s` seconds
    /// (the daemon allows 30) while it is still waiting.
    pub fn invite_status(&self, wait_s: u64) -> Result<InviteStatus, ClientError> {
        let wait = wait_s.to_string();
        let route = format!("{}{}", routes::PAIR_INVITE, query(&[("wait", Some(&wait))]));
        self.get(&route)
    }

    /// `POST /v1/pair/join`: joins the device showing `code`; waits until paired or
    /// failed (up to a minute).
    pub fn join(&self, code: &str) -> Result<Paired, ClientError> {
        let body = JoinRequest {
            code: code.to_string(),
        };
        self.post(routes::PAIR_JOIN, Some(&body))
    }

    /// `POST /v1/share`.
    pub fn share(&self, request: &ShareRequest) -> Result<Shared, ClientError> {
        self.post(routes::SHARE, Some(request))
    }

    /// `POST /v1/accept`.
    pub fn accept(&self, request: &AcceptRequest) -> Result<Accepted, ClientError> {
        self.post(routes::ACCEPT, Some(request))
    }

    /// `POST /v1/decline`: declines the offer of `folder`.
    pub fn decline(&self, folder: &str) -> Result<Ack, ClientError> {
        let body = DeclineRequest {
            folder: folder.to_string(),
        };
        self.post(routes::DECLINE, Some(&body))
    }

    /// `POST /v1/pause`: one folder (id or path) or all.
    pub fn pause(&self, folder: Option<&str>) -> Result<PauseState, ClientError> {
        let body = FolderRequest {
            folder: folder.map(str::to_string),
        };
        self.post(routes::PAUSE, Some(&body))
    }

    /// `POST /v1/resume`: one folder (id or path) or all.
    pub fn resume(&self, folder: Option<&str>) -> Result<PauseState, ClientError> {
        let body = FolderRequest {
            folder: folder.map(str::to_string),
        };
        self.post(routes::RESUME, Some(&body))
    }

    /// `GET /v1/conflicts`.
    pub fn conflicts(&self) -> Result<Vec<Conflict>, ClientError> {
        self.get(routes::CONFLICTS)
    }

    /// `POST /v1/resolve`: resolves the conflict of `path` (the copy or the original).
    pub fn resolve(&self, path: &str, keep: Keep) -> Result<Resolved, ClientError> {
        let body = ResolveRequest {
            path: path.to_string(),
            keep,
        };
        self.post(routes::RESOLVE, Some(&body))
    }

    /// `GET /v1/history`: kept versions, newest first.
    pub fn versions(&self, q: &HistoryQuery) -> Result<Vec<Version>, ClientError> {
        let query = query(&[
            ("folder", q.folder.as_deref()),
            ("path", q.path.as_deref()),
            ("deleted", q.deleted.then_some("true")),
        ]);
        self.get(&format!("{}{query}", routes::HISTORY))
    }

    /// `POST /v1/restore`: puts a kept version back (it waits until the folder is idle).
    pub fn restore(&self, request: &RestoreRequest) -> Result<Restored, ClientError> {
        self.post(routes::RESTORE, Some(request))
    }

    /// `POST /v1/rewind`: puts a folder (or a directory of it) back to a moment, or on a
    /// dry run lists what that would change.
    pub fn rewind(&self, request: &RewindRequest) -> Result<Rewound, ClientError> {
        self.post(routes::REWIND, Some(request))
    }

    /// `POST /v1/history/prune`: drops the kept versions the folders' rules no longer keep.
    pub fn prune(&self) -> Result<Pruned, ClientError> {
        self.post::<(), _>(routes::PRUNE, None)
    }

    /// GET `route` and decode its JSON answer.
    fn get<T: DeserializeOwned>(&self, route: &str) -> Result<T, ClientError> {
        let text = self.answer(route, self.raw("GET", route, None)?)?;
        decode(route, &text)
    }

    /// POST `body` as JSON (none: an empty body) to `route` and decode its JSON answer.
    fn post<B: Serialize, T: DeserializeOwned>(
        &self,
        route: &str,
        body: Option<&B>,
    ) -> Result<T, ClientError> {
        let body =
            body.map(serde_json::to_string)
                .transpose()
                .map_err(|e| ClientError::Decode {
                    route: route.to_string(),
                    reason: e.to_string(),
                })?;
        let text = self.answer(route, self.raw("POST", route, body)?)?;
        decode(route, &text)
    }

    /// The body of a successful answer, or the error an unsuccessful one carries.
    fn answer(&self, route: &str, (status, body): (u16, String)) -> Result<String, ClientError> {
        match status {
            200..=299 => Ok(body),
            100..=599 => Err(ApiError::from_answer(status, &body).into()),
            _ => Err(ClientError::Decode {
                route: route.to_string(),
                reason: "not an HTTP answer".into(),
            }),
        }
    }

    /// One request: its HTTP status (0 if the answer has none) and body.
    fn raw(
        &self,
        method: &str,
        route: &str,
        body: Option<String>,
    ) -> Result<(u16, String), ClientError> {
        let unreachable = |source| ClientError::Unreachable {
            address: self.address.clone(),
            source,
        };
        let exchange = |source| ClientError::Exchange {
            address: self.address.clone(),
            source,
        };
        let address = self.address.parse().map_err(|_| {
            unreachable(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "not an address",
            ))
        })?;
        let mut s = TcpStream::connect_timeout(&address, self.timeout).map_err(unreachable)?;
        s.set_read_timeout(Some(self.timeout)).map_err(exchange)?;
        s.set_write_timeout(Some(self.timeout)).map_err(exchange)?;
        let body = body.unwrap_or_default();
        let request = format!(
            "{method} {route} HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            self.address,
            self.token,
            body.len()
        );
        s.write_all(request.as_bytes()).map_err(exchange)?;
        let mut answer = Vec::new();
        s.read_to_end(&mut answer).map_err(exchange)?;
        let answer = String::from_utf8_lossy(&answer);
        let (head, body) = answer.split_once("\r\n\r\n").unwrap_or((&answer, ""));
        let status = head
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        Ok((status, body.to_string()))
    }
}

/// `text` as the JSON answer of `route`.
fn decode<T: DeserializeOwned>(route: &str, text: &str) -> Result<T, ClientError> {
    serde_json::from_str(text).map_err(|e| ClientError::Decode {
        route: route.to_string(),
        reason: e.to_string(),
    })
}

/// The query string (`?a=1&b=2`) of the pairs that have a value, percent-encoded; empty
/// when none has.
fn query(pairs: &[(&str, Option<&str>)]) -> String {
    let mut out = String::new();
    for (key, value) in pairs {
        let Some(value) = value else { continue };
        out.push(if out.is_empty() { '?' } else { '&' });
        out.push_str(key);
        out.push('=');
        for b in value.bytes() {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                out.push(char::from(b));
            } else {
                out.push_str(&format!("%{b:02X}"));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    /// A daemon that answers one request with `status` and `body`, and hands back the
    /// request it got.
    fn one_answer(status: &str, body: &str) -> (Client, std::thread::JoinHandle<String>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let info = ControlInfo {
            address: listener.local_addr().unwrap().to_string(),
            token: "secret".into(),
            pid: 7,
            device_id: "d".into(),
        };
        let answer = format!(
            "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        );
        let server = std::thread::spawn(move || {
            let (mut conn, _) = listener.accept().unwrap();
            let mut request = Vec::new();
            let mut buf = [0u8; 4096];
            // Read the head and the body its Content-Length announces.
            loop {
                let n = conn.read(&mut buf).unwrap();
                request.extend_from_slice(&buf[..n]);
                let text = String::from_utf8_lossy(&request).to_string();
                if let Some((head, body)) = text.split_once("\r\n\r\n") {
                    let len: usize = head
                        .lines()
                        .find_map(|l| l.strip_prefix("Content-Length: "))
                        .and_then(|v| v.parse().ok())
                        .unwrap_or(0);
                    if body.len() >= len {
                        break;
                    }
                }
                if n == 0 {
                    break;
                }
            }
            conn.write_all(answer.as_bytes()).unwrap();
            String::from_utf8_lossy(&request).to_string()
        });
        (Client::at(&info, Duration::from_secs(5)), server)
    }

    #[test]
    fn an_error_body_decodes_into_the_api_error_of_its_status() {
        let (client, server) = one_answer(
            "404 Not Found",
            r#"{"error":"no folder \"x\"; `cairn folders` lists them"}"#,
        );
        let err = client.pause(Some("x")).unwrap_err();
        let request = server.join().unwrap();
        assert!(
            request.starts_with("POST /v1/pause HTTP/1.1\r\n"),
            "{request}"
        );
        assert!(request.contains("Authorization: Bearer secret\r\n"));
        assert!(request.ends_with(r#"{"folder":"x"}"#), "{request}");
        match &err {
            ClientError::Api(ApiError::NotFound(m)) => {
                assert_eq!(m, "no folder \"x\"; `cairn folders` lists them")
            }
            other => panic!("decoded as {other:?}"),
        }
        assert_eq!(err.exit_code(), exit::NOT_FOUND);
        assert_eq!(
            err.to_string(),
            "no folder \"x\"; `cairn folders` lists them"
        );
    }

    #[test]
    fn a_failed_join_is_a_pairing_failure() {
        let (client, server) =
            one_answer("403 Forbidden", r#"{"error":"wrong code: nothing paired"}"#);
        let err = client.join("7-acid-acid").unwrap_err();
        server.join().unwrap();
        assert!(matches!(err, ClientError::Api(ApiError::PairingFailed(_))));
        assert_eq!(err.exit_code(), exit::PAIRING_FAILED);
    }

    #[test]
    fn a_plain_text_rejection_is_still_an_api_error() {
        let (client, server) = one_answer(
            "422 Unprocessable Entity",
            "Failed to deserialize the JSON body into the target type",
        );
        let err = client.resolve("a.txt", Keep::Both).unwrap_err();
        server.join().unwrap();
        assert!(
            matches!(&err, ClientError::Api(ApiError::Refused(m)) if m.starts_with("Failed")),
            "{err:?}"
        );
        assert_eq!(err.exit_code(), exit::ERROR);
    }

    #[test]
    fn a_success_decodes_into_the_route_type() {
        let body = r#"{"folder":"docs","path":"plan.txt","content":"abcd","size":25,"kept_current":null,"note":"the folder is paused"}"#;
        let (client, server) = one_answer("200 OK", body);
        let request = RestoreRequest {
            path: "plan.txt".into(),
            version: Some("ab".into()),
            ..RestoreRequest::default()
        };
        let r = client.restore(&request).unwrap();
        let got = server.join().unwrap();
        assert!(got.starts_with("POST /v1/restore HTTP/1.1\r\n"));
        assert_eq!(r.note.as_deref(), Some("the folder is paused"));
        assert_eq!(r.size, 25);
    }

    #[test]
    fn an_answer_of_another_shape_is_a_decode_error() {
        let (client, server) = one_answer("200 OK", r#"{"unexpected":true}"#);
        let err = client.status().unwrap_err();
        server.join().unwrap();
        assert!(
            matches!(&err, ClientError::Decode { route, .. } if route == "/v1/status"),
            "{err:?}"
        );
        assert_eq!(err.exit_code(), exit::ERROR);
    }

    #[test]
    fn queries_are_percent_encoded() {
        let (client, server) = one_answer("200 OK", "[]");
        let q = HistoryQuery {
            folder: None,
            path: Some("my notes/ä&b.txt".into()),
            deleted: false,
        };
        assert!(client.versions(&q).unwrap().is_empty());
        let request = server.join().unwrap();
        assert!(
            request.starts_with("GET /v1/history?path=my%20notes%2F%C3%A4%26b.txt HTTP/1.1"),
            "{request}"
        );
        assert_eq!(query(&[("a", None), ("b", None)]), "");
        assert_eq!(
            query(&[("folder", Some("docs-1a")), ("wait", Some("25"))]),
            "?folder=docs-1a&wait=25"
        );
    }

    #[test]
    fn no_control_file_means_not_running() {
        let home = std::env::temp_dir().join(format!("cairn-api-test-{}", std::process::id()));
        let err = Client::connect(&home).unwrap_err();
        assert!(matches!(err, ClientError::NotRunning { .. }));
        assert_eq!(err.exit_code(), exit::NOT_RUNNING);
        assert!(err.to_string().contains("not running"), "{err}");
    }

    #[test]
    fn nothing_listening_is_unreachable() {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let info = ControlInfo {
            address: format!("127.0.0.1:{port}"),
            ..ControlInfo::default()
        };
        let err = Client::at(&info, Duration::from_secs(2))
            .status()
            .unwrap_err();
        assert!(matches!(err, ClientError::Unreachable { .. }), "{err:?}");
        assert_eq!(err.exit_code(), exit::NOT_RUNNING);
    }
}
