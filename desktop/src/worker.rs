//! The one place the tray and window talk to the daemon: a worker thread that polls the
//! control API and carries out commands, so the UI never waits on the network. The UI
//! reads the latest [`Snapshot`] (a cheap clone under a lock that is never held across
//! a request) and sends [`Command`]s down a channel.

use std::path::PathBuf;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cairn_cli::client::Client;
use serde_json::{Value, json};

/// How often the daemon is asked for its status.
pub const POLL: Duration = Duration::from_secs(1);
/// Kept versions change only when a peer replaces or deletes a file: asked for every few
/// polls, and at once after a restore.
const HISTORY_EVERY: u64 = 5;
/// The longest one poll may wait: a daemon slower than this reads as "not responding".
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(3);

/// Something the user asked for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    /// Pause every folder.
    Pause,
    /// Resume every folder.
    Resume,
    /// Rescan every folder now.
    Rescan,
    /// Start `cairnd` (it was not running).
    StartDaemon,
    /// Open an invitation and show its code.
    Invite,
    /// Join another device's invitation.
    Join(String),
    /// Resolve a conflict (`keep` is "local", "remote" or "both"), as `cairn resolve` does.
    Resolve { path: String, keep: String },
    /// Put a kept version back, as `cairn restore --folder F PATH --version V` does.
    Restore {
        folder: String,
        path: String,
        version: String,
    },
}

/// Where pairing stands, as the window shows it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Pairing {
    #[default]
    Idle,
    /// Asking the daemon for a code.
    Starting,
    /// A code is open; the other device must enter it.
    Waiting {
        code: String,
        expires_in_s: u64,
    },
    /// Joining with a code the user typed.
    Joining,
    Paired {
        name: String,
    },
    Failed(String),
}

/// The latest the worker knows.
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    /// `/v1/status`, None while the daemon does not answer.
    pub status: Option<Value>,
    /// `/v1/conflicts`.
    pub conflicts: Option<Value>,
    /// `/v1/history`: kept versions, newest first.
    pub history: Option<Value>,
    /// Why the daemon did not answer.
    pub down: Option<String>,
    pub pairing: Pairing,
    /// The outcome of the last command, in words.
    pub message: Option<String>,
    /// Polls so far (a window can show it is live).
    pub polls: u64,
}

type OnUpdate = Arc<dyn Fn(&Snapshot) + Send + Sync>;

/// A handle to the worker thread. Dropping every handle stops it.
#[derive(Clone)]
pub struct Worker {
    tx: mpsc::Sender<Command>,
    shared: Arc<Mutex<Snapshot>>,
}

struct Inner {
    home: PathBuf,
    explicit_home: bool,
    shared: Arc<Mutex<Snapshot>>,
    on_update: OnUpdate,
}

impl Worker {
    /// Starts polling the daemon of `home`; `on_update` runs on the worker thread after
    /// every change of the snapshot (to repaint a window or refresh the tray).
    pub fn spawn(
        home: PathBuf,
        explicit_home: bool,
        on_update: impl Fn(&Snapshot) + Send + Sync + 'static,
    ) -> Worker {
        let (tx, rx) = mpsc::channel();
        let shared = Arc::new(Mutex::new(Snapshot::default()));
        let inner = Arc::new(Inner {
            home,
            explicit_home,
            shared: shared.clone(),
            on_update: Arc::new(on_update),
        });
        std::thread::Builder::new()
            .name("cairn-poll".into())
            .spawn(move || inner.run(rx))
            .expect("spawn the poll thread");
        Worker { tx, shared }
    }

    /// The latest snapshot; never waits on the network.
    pub fn snapshot(&self) -> Snapshot {
        self.shared.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// Queues a command; the worker carries it out and polls again at once.
    pub fn send(&self, command: Command) {
        let _ = self.tx.send(command);
    }
}

impl Inner {
    fn run(self: Arc<Self>, rx: mpsc::Receiver<Command>) {
        let mut next_poll = Instant::now();
        loop {
            match rx.recv_timeout(next_poll.saturating_duration_since(Instant::now())) {
                Ok(command) => self.clone().carry_out(command),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => return,
            }
            self.poll();
            next_poll = Instant::now() + POLL;
        }
    }

    fn client(&self) -> Result<Client, String> {
        Client::connect_with(&self.home, REQUEST_TIMEOUT).map_err(|e| e.message)
    }

    fn update(&self, f: impl FnOnce(&mut Snapshot)) {
        let snapshot = match self.shared.lock() {
            Ok(mut s) => {
                f(&mut s);
                s.clone()
            }
            Err(_) => return,
        };
        (self.on_update)(&snapshot);
    }

    fn poll(&self) {
        let (polls, stale) = self
            .shared
            .lock()
            .map(|s| (s.polls, s.history.is_none()))
            .unwrap_or((0, true));
        let want_history = stale || polls.is_multiple_of(HISTORY_EVERY);
        let polled = self.client().and_then(|c| {
            let status = c.get("/v1/status").map_err(|e| e.message)?;
            let conflicts = c.get("/v1/conflicts").ok();
            let invite = c.get("/v1/pair/invite").ok();
            let history = want_history.then(|| c.get("/v1/history").ok()).flatten();
            Ok((status, conflicts, invite, history))
        });
        self.update(|s| {
            s.polls += 1;
            match polled {
                Ok((status, conflicts, invite, history)) => {
                    s.status = Some(status);
                    s.conflicts = conflicts;
                    if history.is_some() {
                        s.history = history;
                    }
                    s.down = None;
                    if let Some(p) = invite.and_then(|i| invite_pairing(&i))
                        && matches!(s.pairing, Pairing::Waiting { .. } | Pairing::Starting)
                    {
                        s.pairing = p;
                    }
                }
                Err(e) => {
                    s.status = None;
                    s.conflicts = None;
                    s.history = None;
                    s.down = Some(e);
                }
            }
        });
    }

    fn carry_out(self: Arc<Self>, command: Command) {
        let client = match self.client() {
            Ok(c) => Some(c),
            Err(_) if command == Command::StartDaemon => None,
            Err(e) => {
                self.update(|s| s.message = Some(format!("cairn is not running: {e}")));
                return;
            }
        };
        let post = |path: &str, body: Value| {
            client
                .as_ref()
                .map(|c| c.post(path, body).map_err(|e| e.message))
                .unwrap_or_else(|| Err("cairn is not running".into()))
        };
        let message = match &command {
            Command::Pause => post("/v1/pause", json!({ "folder": null }))
                .map(|_| "Paused all folders".to_string()),
            Command::Resume => post("/v1/resume", json!({ "folder": null }))
                .map(|_| "Resumed all folders".to_string()),
            Command::Rescan => {
                post("/v1/rescan", json!({})).map(|_| "Rescanning all folders".to_string())
            }
            Command::StartDaemon => cairn_cli::daemon_cmd::start(&self.home, self.explicit_home)
                .map(|(c, started)| match started {
                    Some(pid) => format!("Started cairnd (pid {pid})"),
                    None => format!("cairnd is already running (pid {})", c.pid),
                })
                .map_err(|e| e.message),
            Command::Invite => {
                self.update(|s| s.pairing = Pairing::Starting);
                match post("/v1/pair/invite", json!({})) {
                    Ok(inv) => {
                        let code = inv["code"].as_str().unwrap_or_default().to_string();
                        let expires_in_s = inv["expires_in_s"].as_u64().unwrap_or(600);
                        self.update(|s| s.pairing = Pairing::Waiting { code, expires_in_s });
                        Ok("Waiting for the other device".to_string())
                    }
                    Err(e) => {
                        self.update(|s| s.pairing = Pairing::Failed(e.clone()));
                        Err(e)
                    }
                }
            }
            Command::Join(code) => {
                // Joining waits for the other device (up to a minute): never on this
                // thread, which must keep polling.
                self.update(|s| s.pairing = Pairing::Joining);
                let code = code.trim().to_string();
                let me = self.clone();
                std::thread::spawn(move || {
                    let result = Client::connect(&me.home)
                        .and_then(|c| c.post("/v1/pair/join", json!({ "code": code })))
                        .map_err(|e| e.message);
                    me.update(|s| match result {
                        Ok(p) => {
                            let name = p["name"].as_str().unwrap_or("?").to_string();
                            s.message = Some(format!("Paired with {name}"));
                            s.pairing = Pairing::Paired { name };
                        }
                        Err(e) => {
                            s.message = Some(format!("Pairing failed: {e}"));
                            s.pairing = Pairing::Failed(e);
                        }
                    });
                });
                return;
            }
            Command::Resolve { path, keep } => {
                post("/v1/resolve", json!({ "path": path, "keep": keep }))
                    .map(|r| format!("Resolved: {}", r["resolved"].as_str().unwrap_or(path)))
            }
            Command::Restore {
                folder,
                path,
                version,
            } => {
                let r = post(
                    "/v1/restore",
                    json!({ "folder": folder, "path": path, "version": version }),
                );
                // The restore kept the version it replaced: show it.
                self.update(|s| s.history = None);
                r.map(|r| {
                    let id = r["content"].as_str().unwrap_or("?");
                    let mut m = format!(
                        "Restored {} to version {}",
                        r["path"].as_str().unwrap_or(path),
                        id.get(..12).unwrap_or(id)
                    );
                    if let Some(note) = r["note"].as_str() {
                        m.push_str(&format!(" ({note})"));
                    }
                    m
                })
            }
        };
        self.update(|s| {
            s.message = Some(match message {
                Ok(m) => m,
                Err(e) => format!("Failed: {e}"),
            })
        });
    }
}

/// The pairing state an answer of `GET /v1/pair/invite` stands for.
fn invite_pairing(v: &Value) -> Option<Pairing> {
    Some(match v["state"].as_str()? {
        "waiting" => Pairing::Waiting {
            code: v["code"].as_str()?.to_string(),
            expires_in_s: v["expires_in_s"].as_u64().unwrap_or(0),
        },
        "paired" => Pairing::Paired {
            name: v["name"].as_str().unwrap_or("?").to_string(),
        },
        "failed" => Pairing::Failed(v["error"].as_str().unwrap_or("?").to_string()),
        "expired" => Pairing::Failed("the code expired".into()),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    fn wait_for(worker: &Worker, what: impl Fn(&Snapshot) -> bool) -> Snapshot {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let s = worker.snapshot();
            if what(&s) {
                return s;
            }
            assert!(Instant::now() < deadline, "gave up waiting; last {s:?}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    #[test]
    fn no_daemon_reads_as_down() {
        let home = tempfile::tempdir().unwrap();
        let worker = Worker::spawn(home.path().into(), true, |_| {});
        let s = wait_for(&worker, |s| s.polls > 0);
        assert!(s.status.is_none());
        assert!(s.down.as_deref().unwrap().contains("not running"), "{s:?}");
        worker.send(Command::Pause);
        let s = wait_for(&worker, |s| s.message.is_some());
        assert!(s.message.unwrap().starts_with("cairn is not running"));
    }

    /// A daemon that accepts connections and never answers: the UI's snapshot stays
    /// readable at once the whole time, and the worker reports the daemon as down after
    /// its request timeout instead of hanging.
    #[test]
    fn a_wedged_daemon_never_blocks_the_snapshot() {
        let home = tempfile::tempdir().unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap().to_string();
        let held = Arc::new(Mutex::new(Vec::new()));
        let keep = held.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                keep.lock().unwrap().push(conn); // hold it open, say nothing
            }
        });
        std::fs::write(
            home.path().join("control.json"),
            json!({ "address": address, "token": "t", "pid": 1 }).to_string(),
        )
        .unwrap();
        let worker = Worker::spawn(home.path().into(), true, |_| {});
        let started = Instant::now();
        let mut slowest = Duration::ZERO;
        while worker.snapshot().polls == 0 {
            let t = Instant::now();
            let _ = worker.snapshot();
            slowest = slowest.max(t.elapsed());
            std::thread::sleep(Duration::from_millis(10));
            assert!(started.elapsed() < Duration::from_secs(30), "worker hung");
        }
        let s = worker.snapshot();
        assert!(s.status.is_none() && s.down.is_some(), "{s:?}");
        assert!(
            !held.lock().unwrap().is_empty(),
            "the worker never reached the fake daemon"
        );
        // Reading the snapshot never waited for the network (the poll took seconds).
        assert!(
            slowest < REQUEST_TIMEOUT / 2,
            "snapshot blocked for {slowest:?}"
        );
    }

    #[test]
    fn invite_answers_map_to_pairing_states() {
        assert_eq!(
            invite_pairing(&json!({ "state": "waiting", "code": "7-a-b", "expires_in_s": 60 })),
            Some(Pairing::Waiting {
                code: "7-a-b".into(),
                expires_in_s: 60
            })
        );
        assert_eq!(
            invite_pairing(&json!({ "state": "paired", "peer": "x", "name": "laptop" })),
            Some(Pairing::Paired {
                name: "laptop".into()
            })
        );
        assert_eq!(
            invite_pairing(&json!({ "state": "expired" })),
            Some(Pairing::Failed("the code expired".into()))
        );
        assert_eq!(invite_pairing(&json!({ "state": "none" })), None);
    }
}
