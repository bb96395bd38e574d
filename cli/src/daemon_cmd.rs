//! `cairn up`, `cairn down`, `cairn id`, `cairn service install`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use cairn_api::Client;
use cairn_api::folders::ShareRequest;
use cairn_api::launch::{cairnd_path, home_args, start};
use serde_json::json;

use crate::error::CliError;

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
                client.pid(),
                home.display()
            ),
            None => {}
        }
    }
    let mut added = None;
    if let Some(folder) = folder {
        let abs = absolute(folder)?;
        std::fs::create_dir_all(&abs)?;
        let r = client.share(&ShareRequest {
            folder: abs.to_string_lossy().into_owned(),
            device: None,
            kind: None,
        })?;
        if !json_out {
            println!("syncing folder {} as {}", abs.display(), r.folder);
        }
        added = Some(r.folder);
    }
    if json_out {
        println!(
            "{}",
            json!({ "running": true, "pid": client.pid(), "home": home, "folder": added })
        );
    }
    Ok(())
}

/// Asks the daemon to stop and waits until it has.
pub fn down(home: &Path, json_out: bool) -> Result<(), CliError> {
    let client = Client::connect(home)?;
    let pid = client.pid();
    client.shutdown()?;
    let deadline = Instant::now() + Duration::from_secs(20);
    while pid_alive(pid) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    if pid_alive(pid) {
        return Err(CliError::other(format!(
            "cairnd (pid {pid}) did not stop within 20 s"
        )));
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
        Ok(c) => c.status()?.device_id,
        Err(_) => {
            let out = Command::new(cairnd_path())
                .args(home_args(home, explicit_home))
                .arg("--print-id")
                .output()?;
            if !out.status.success() {
                return Err(CliError::other(String::from_utf8_lossy(&out.stderr).trim()));
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
        .ok_or_else(|| CliError::other("neither XDG_CONFIG_HOME nor HOME is set"))?;
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
