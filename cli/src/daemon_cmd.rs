//! `cairn up`, `cairn down`, `cairn id`, `cairn service install`.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;

use crate::client::{CliError, Client, exit};

/// The `cairnd` binary: beside this one, else on PATH.
pub fn cairnd_path() -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(|d| d.join("cairnd")))
        .filter(|p| p.exists())
        .unwrap_or_else(|| PathBuf::from("cairnd"))
}

fn home_args(home: &Path, explicit: bool) -> Vec<String> {
    if explicit {
        vec!["--home".into(), home.display().to_string()]
    } else {
        vec![]
    }
}

/// Starts the daemon of `home` in the background unless it runs, and waits until its
/// control API answers. Returns a client and, when this call started it, the new pid.
pub fn start(home: &Path, explicit_home: bool) -> Result<(Client, Option<u32>), CliError> {
    if let Ok(c) = Client::connect(home) {
        return Ok((c, None));
    }
    std::fs::create_dir_all(home)?;
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(home.join("cairnd.log"))?;
    let _ = std::fs::remove_file(home.join("control.json"));
    let mut cmd = Command::new(cairnd_path());
    cmd.args(home_args(home, explicit_home))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log);
    std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
    let mut child = cmd.spawn().map_err(|e| {
        CliError::new(
            exit::ERROR,
            format!("cannot start {}: {e}", cairnd_path().display()),
        )
    })?;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(c) = Client::connect(home) {
            // Reap the child when it exits so it never lingers as a zombie.
            let pid = child.id();
            std::thread::spawn(move || child.wait());
            return Ok((c, Some(pid)));
        }
        if Instant::now() > deadline || matches!(child.try_wait(), Ok(Some(_))) {
            return Err(CliError::new(
                exit::ERROR,
                format!(
                    "cairnd did not start; see {}",
                    home.join("cairnd.log").display()
                ),
            ));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Starts the daemon in the background unless it runs; adds `folder` if given.
pub fn up(
    home: &Path,
    explicit_home: bool,
    folder: Option<&Path>,
    json_out: bool,
) -> Result<(), CliError> {
    let (client, started) = start(home, explicit_home)?;
    if !json_out {
        match started {
            Some(pid) => println!("started cairnd (pid {pid}, home {})", home.display()),
            None if folder.is_none() => println!(
                "cairnd is already running (pid {}, home {})",
                client.pid,
                home.display()
            ),
            None => {}
        }
    }
    let mut added = None;
    if let Some(folder) = folder {
        let abs = absolute(folder)?;
        std::fs::create_dir_all(&abs)?;
        let r = client.post("/v1/share", json!({ "folder": abs, "device": null }))?;
        added = r["folder"].as_str().map(str::to_string);
        if !json_out {
            println!(
                "syncing folder {} as {}",
                abs.display(),
                added.as_deref().unwrap_or("?")
            );
        }
    }
    if json_out {
        println!(
            "{}",
            json!({ "running": true, "pid": client.pid, "home": home, "folder": added })
        );
    }
    Ok(())
}

/// Asks the daemon to stop and waits until it has.
pub fn down(home: &Path, json_out: bool) -> Result<(), CliError> {
    let client = Client::connect(home)?;
    let pid = client.pid;
    client.post("/v1/shutdown", json!({}))?;
    let deadline = Instant::now() + Duration::from_secs(20);
    while pid_alive(pid) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    if pid_alive(pid) {
        return Err(CliError::new(
            exit::ERROR,
            format!("cairnd (pid {pid}) did not stop within 20 s"),
        ));
    }
    if json_out {
        println!("{}", json!({ "stopped": true, "pid": pid }));
    } else {
        println!("stopped cairnd (pid {pid})");
    }
    Ok(())
}

fn pid_alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
        && std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| !s.contains(") Z "))
}

/// Prints this device's id (creating the identity if needed).
pub fn id(home: &Path, explicit_home: bool, json_out: bool) -> Result<(), CliError> {
    let id = match Client::connect(home) {
        Ok(c) => c.get("/v1/status")?["device_id"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
        Err(_) => {
            let out = Command::new(cairnd_path())
                .args(home_args(home, explicit_home))
                .arg("--print-id")
                .output()?;
            if !out.status.success() {
                return Err(CliError::new(
                    exit::ERROR,
                    String::from_utf8_lossy(&out.stderr).trim().to_string(),
                ));
            }
            String::from_utf8_lossy(&out.stdout).trim().to_string()
        }
    };
    if json_out {
        println!("{}", json!({ "device_id": id }));
    } else {
        println!("{id}");
    }
    Ok(())
}

/// Writes a systemd user unit that starts the daemon at login.
pub fn service_install(home: &Path, explicit_home: bool, json_out: bool) -> Result<(), CliError> {
    let config_home = std::env::var_os("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))
        .ok_or_else(|| CliError::new(exit::ERROR, "neither XDG_CONFIG_HOME nor HOME is set"))?;
    let dir = config_home.join("systemd/user");
    std::fs::create_dir_all(&dir)?;
    let exe = std::fs::canonicalize(cairnd_path()).unwrap_or_else(|_| cairnd_path());
    let args = home_args(home, explicit_home).join(" ");
    let unit = format!(
        "[Unit]\nDescription=cairn peer-to-peer folder sync\nAfter=network-online.target\n\n\
         [Service]\nExecStart={} {args}\nRestart=on-failure\nRestartSec=5\n\n[Install]\nWantedBy=default.target\n",
        exe.display()
    );
    let path = dir.join("cairnd.service");
    std::fs::write(&path, unit)?;
    if json_out {
        println!("{}", json!({ "unit": path }));
    } else {
        println!(
            "wrote {}\nenable it with: systemctl --user daemon-reload && systemctl --user enable --now cairnd",
            path.display()
        );
    }
    Ok(())
}

/// `path` made absolute against the current directory.
pub fn absolute(path: &Path) -> Result<PathBuf, CliError> {
    if path.is_absolute() {
        return Ok(path.to_path_buf());
    }
    Ok(std::env::current_dir()?.join(path))
}
