//! Starting `cairnd` from a front end (`cairn up`, the tray's "Start cairn"): in the
//! background, in its own process group, logging to `cairnd.log` in its home, and waiting
//! until its control API answers.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::client::Client;
use crate::control::CONTROL_FILE;
use crate::error::exit;

/// How long a started daemon has to answer its control API.
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// The daemon's log in its home.
pub const LOG_FILE: &str = "cairnd.log";

/// Why the daemon could not be started.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// Its home or log could not be made.
    #[error("{}: {source}", path.display())]
    Home {
        /// The directory or file.
        path: PathBuf,
        /// What the file system said.
        source: std::io::Error,
    },
    /// The `cairnd` binary could not be run.
    #[error("cannot start {}: {source}", program.display())]
    Spawn {
        /// The binary tried.
        program: PathBuf,
        /// What the system said.
        source: std::io::Error,
    },
    /// It ran but exited, or did not answer in time.
    #[error("cairnd did not start; see {}", log.display())]
    NotStarted {
        /// Its log, which says why.
        log: PathBuf,
    },
}

impl StartError {
    /// The exit code of a `cairn` command that failed this way.
    pub fn exit_code(&self) -> u8 {
        exit::ERROR
    }
}

/// The `cairnd` binary: beside this program, else on PATH.
pub fn cairnd_path() -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(|d| d.join("cairnd")))
        .filter(|p| p.exists())
        .unwrap_or_else(|| PathBuf::from("cairnd"))
}

/// The arguments that give `cairnd` (or the tray) the home `home`: none when it is the
/// default, so the program finds it the same way.
pub fn home_args(home: &Path, explicit: bool) -> Vec<String> {
    if explicit {
        vec!["--home".into(), home.display().to_string()]
    } else {
        vec![]
    }
}

/// Starts the daemon of `home` in the background unless it runs, and waits until its
/// control API answers. Returns a client and, when this call started it, the new pid.
pub fn start(home: &Path, explicit_home: bool) -> Result<(Client, Option<u32>), StartError> {
    if let Ok(c) = Client::connect(home) {
        return Ok((c, None));
    }
    let in_home = |path: PathBuf| move |source| StartError::Home { path, source };
    std::fs::create_dir_all(home).map_err(in_home(home.to_path_buf()))?;
    let log_path = home.join(LOG_FILE);
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .map_err(in_home(log_path.clone()))?;
    let _ = std::fs::remove_file(home.join(CONTROL_FILE));
    let program = cairnd_path();
    let mut cmd = Command::new(&program);
    cmd.args(home_args(home, explicit_home))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log);
    std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
    let mut child = cmd
        .spawn()
        .map_err(|source| StartError::Spawn { program, source })?;
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        if let Ok(c) = Client::connect(home) {
            // Reap the child when it exits so it never lingers as a zombie.
            let pid = child.id();
            std::thread::spawn(move || child.wait());
            return Ok((c, Some(pid)));
        }
        if Instant::now() > deadline || matches!(child.try_wait(), Ok(Some(_))) {
            return Err(StartError::NotStarted { log: log_path });
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_home_is_not_passed_on() {
        let home = Path::new("/home/me/.cairn");
        assert!(home_args(home, false).is_empty());
        assert_eq!(home_args(home, true), ["--home", "/home/me/.cairn"]);
    }
}
