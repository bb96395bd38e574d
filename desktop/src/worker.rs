//! The one place the tray and window talk to the daemon: a worker thread that polls the
//! control API and carries out commands, so the UI never waits on the network. The UI
//! reads the latest [`Snapshot`] (a cheap clone under a lock that is never held across
//! a request) and sends [`Command`]s down a channel.

use std::path::PathBuf;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cairn_api::conflicts::{Conflict, Keep};
use cairn_api::history::{HistoryQuery, RestoreRequest, RewindRequest, Rewound, Version};
use cairn_api::pairing::InviteStatus;
use cairn_api::status::Status;
use cairn_api::{Client, ClientError};

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
    /// Resolve a conflict, as `cairn resolve` does.
    Resolve { path: String, keep: Keep },
    /// Put a kept version back, as `cairn restore --folder F PATH --version V` does.
    Restore {
        folder: String,
        path: String,
        version: String,
    },
    /// Rewind a folder to a moment, as `cairn restore --folder F --at T [--exact]
    /// [--dry-run]` does; a dry run's answer is kept in the snapshot for the window.
    Rewind {
        folder: String,
        at_ns: i64,
        exact: bool,
        dry_run: bool,
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
    pub status: Option<Status>,
    /// `/v1/conflicts`.
    pub conflicts: Option<Vec<Conflict>>,
    /// `/v1/history`: the group's versions, newest first.
    pub history: Option<Vec<Version>>,
    /// The last rewind dry run (what a rewind would change), until it is carried out.
    pub rewind_preview: Option<Rewound>,
    /// Why the daemon did not answer.
    pub down: Option<String>,
    pub pairing: Pairing,
    /// The outcome of the last command, in words.
    pub message: Option<String>,
    /// Polls so far (a window can show it is live).
    pub polls: u64,
    /// The window shows the Versions page: only then is the history polled (the daemon
    /// reads it from every folder's change log, ~0.4 s per 200,000 files).
    pub history_shown: bool,
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

    /// Says whether the Versions page is on screen (the history is polled only then).
    pub fn show_history(&self, shown: bool) {
        if let Ok(mut s) = self.shared.lock() {
            s.history_shown = shown;
        }
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
        Client::connect_with(&self.home, REQUEST_TIMEOUT).map_err(|e| e.to_string())
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
        let (polls, stale, shown) = self
            .shared
            .lock()
            .map(|s| (s.polls, s.history.is_none(), s.history_shown))
            .unwrap_or((0, true, false));
        let want_history = shown && (stale || polls.is_multiple_of(HISTORY_EVERY));
        let polled = self.client().and_then(|c| {
            let status = c.status().map_err(|e| e.to_string())?;
            let conflicts = c.conflicts().ok();
            let invite = c.invite_status(0).ok();
            let history = want_history
                .then(|| c.versions(&HistoryQuery::default()).ok())
                .flatten();
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
        let c = client.as_ref();
        let message = match &command {
            Command::Pause => ask(c, |c| c.pause(None)).map(|_| "Paused all folders".into()),
            Command::Resume => ask(c, |c| c.resume(None)).map(|_| "Resumed all folders".into()),
            Command::Rescan => ask(c, |c| c.rescan(None)).map(|_| "Rescanning all folders".into()),
            Command::StartDaemon => cairn_api::launch::start(&self.home, self.explicit_home)
                .map(|(c, started)| match started {
                    Some(pid) => format!("Started cairnd (pid {pid})"),
                    None => format!("cairnd is already running (pid {})", c.pid()),
                })
                .map_err(|e| e.to_string()),
            Command::Invite => {
                self.update(|s| s.pairing = Pairing::Starting);
                match ask(c, Client::invite) {
                    Ok(inv) => {
                        let pairing = invite_pairing(&inv)
                            .unwrap_or(Pairing::Failed("the daemon opened no invitation".into()));
                        self.update(|s| s.pairing = pairing);
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
                        .and_then(|c| c.join(&code))
                        .map_err(|e| e.to_string());
                    me.update(|s| match result {
                        Ok(p) => {
                            s.message = Some(format!("Paired with {}", p.name));
                            s.pairing = Pairing::Paired { name: p.name };
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
                ask(c, |c| c.resolve(path, *keep)).map(|r| format!("Resolved: {}", r.resolved))
            }
            Command::Restore {
                folder,
                path,
                version,
            } => {
                let request = RestoreRequest {
                    folder: Some(folder.clone()),
                    path: path.clone(),
                    version: Some(version.clone()),
                    to: None,
                };
                let r = ask(c, |c| c.restore(&request));
                // The restore kept the version it replaced: show it.
                self.update(|s| s.history = None);
                r.map(|r| {
                    let id = &r.content;
                    let mut m = format!(
                        "Restored {} to version {}",
                        r.path,
                        id.get(..12).unwrap_or(id)
                    );
                    if let Some(note) = &r.note {
                        m.push_str(&format!(" ({note})"));
                    }
                    m
                })
            }
            Command::Rewind {
                folder,
                at_ns,
                exact,
                dry_run,
            } => {
                let request = RewindRequest {
                    folder: folder.clone(),
                    at_ns: *at_ns,
                    under: None,
                    exact: *exact,
                    dry_run: *dry_run,
                };
                let r = ask(c, |c| c.rewind(&request));
                let words: Result<String, String> =
                    r.as_ref().map_err(Clone::clone).map(|r: &Rewound| {
                        let changing = r.steps.iter().filter(|s| s.action != "keep").count();
                        if r.dry_run {
                            format!("Rewinding {} would change {changing} paths", r.folder)
                        } else {
                            format!(
                                "Rewound {}: {changing} paths are being put back; what they \
                             replace is kept in history",
                                r.folder
                            )
                        }
                    });
                self.update(|s| {
                    s.rewind_preview = r.ok().filter(|r| r.dry_run);
                    if !dry_run {
                        s.history = None;
                    }
                });
                words
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

/// `request` of the running daemon (none: it is not running), its error in words.
fn ask<T>(
    client: Option<&Client>,
    request: impl FnOnce(&Client) -> Result<T, ClientError>,
) -> Result<T, String> {
    let client = client.ok_or("cairn is not running")?;
    request(client).map_err(|e| e.to_string())
}

/// The pairing state an answer of `/v1/pair/invite` stands for.
fn invite_pairing(v: &InviteStatus) -> Option<Pairing> {
    Some(match v {
        InviteStatus::Waiting { code, expires_in_s } => Pairing::Waiting {
            code: code.clone(),
            expires_in_s: *expires_in_s,
        },
        InviteStatus::Paired { name, .. } => Pairing::Paired { name: name.clone() },
        InviteStatus::Failed { error } => Pairing::Failed(error.clone()),
        InviteStatus::Expired => Pairing::Failed("the code expired".into()),
        InviteStatus::None => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use cairn_api::control::{CONTROL_FILE, ControlInfo};
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
        let info = ControlInfo {
            address,
            token: "t".into(),
            pid: 1,
            device_id: "d".into(),
        };
        std::fs::write(
            home.path().join(CONTROL_FILE),
            serde_json::to_string(&info).unwrap(),
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
            invite_pairing(&InviteStatus::Waiting {
                code: "7-a-b".into(),
                expires_in_s: 60
            }),
            Some(Pairing::Waiting {
                code: "7-a-b".into(),
                expires_in_s: 60
            })
        );
        assert_eq!(
            invite_pairing(&InviteStatus::Paired {
                peer: "x".into(),
                name: "laptop".into()
            }),
            Some(Pairing::Paired {
                name: "laptop".into()
            })
        );
        assert_eq!(
            invite_pairing(&InviteStatus::Failed {
                error: "wrong code".into()
            }),
            Some(Pairing::Failed("wrong code".into()))
        );
        assert_eq!(
            invite_pairing(&InviteStatus::Expired),
            Some(Pairing::Failed("the code expired".into()))
        );
        assert_eq!(invite_pairing(&InviteStatus::None), None);
    }
}
