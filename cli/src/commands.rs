//! The commands that talk to a running daemon.

use std::path::{Path, PathBuf};

use serde_json::{Value, json};

use crate::format;
use cairn_cli::client::{CliError, Client, exit};

fn print_json(v: &Value) {
    println!("{}", serde_json::to_string_pretty(v).unwrap_or_default());
}

/// `cairn pair`: offer a code and wait for the other device.
pub fn pair_invite(c: &Client, json_out: bool) -> Result<(), CliError> {
    let inv = c.post("/v1/pair/invite", json!({}))?;
    let code = inv["code"].as_str().unwrap_or_default().to_string();
    if json_out {
        println!(
            "{}",
            json!({ "code": code, "expires_in_s": inv["expires_in_s"] })
        );
    } else {
        println!("Pairing code: {code}");
        println!("On the other device run:  cairn pair {code}");
        println!(
            "(valid for {} minutes, for one attempt; waiting...)",
            inv["expires_in_s"].as_u64().unwrap_or(600) / 60
        );
    }
    loop {
        let s = c.get("/v1/pair/invite?wait=25")?;
        match s["state"].as_str() {
            Some("waiting") => continue,
            Some("paired") => {
                if json_out {
                    println!("{s}");
                } else {
                    println!(
                        "Paired with {} ({})",
                        s["name"].as_str().unwrap_or("?"),
                        s["peer"].as_str().unwrap_or("?")
                    );
                }
                return Ok(());
            }
            Some("failed") => {
                return Err(CliError::new(
                    exit::PAIRING_FAILED,
                    format!(
                        "pairing failed: {}; the code is used up, run `cairn pair` for a new one",
                        s["error"].as_str().unwrap_or("?")
                    ),
                ));
            }
            Some("expired") => {
                return Err(CliError::new(
                    exit::PAIRING_FAILED,
                    "the code expired; run `cairn pair` for a new one",
                ));
            }
            _ => {
                return Err(CliError::new(
                    exit::ERROR,
                    format!("unexpected answer: {s}"),
                ));
            }
        }
    }
}

/// `cairn pair CODE`: join the device that showed the code.
pub fn pair_join(c: &Client, code: &str, json_out: bool) -> Result<(), CliError> {
    match c.post("/v1/pair/join", json!({ "code": code })) {
        Ok(p) => {
            if json_out {
                println!("{p}");
            } else {
                println!(
                    "Paired with {} ({})",
                    p["name"].as_str().unwrap_or("?"),
                    p["peer"].as_str().unwrap_or("?")
                );
            }
            Ok(())
        }
        Err(e) => Err(CliError::new(
            exit::PAIRING_FAILED,
            format!("pairing failed: {}", e.message),
        )),
    }
}

/// `cairn share FOLDER DEVICE`.
pub fn share(
    c: &Client,
    folder: &Path,
    device: &str,
    kind: Option<&str>,
    json_out: bool,
) -> Result<(), CliError> {
    let folder_arg = if folder.exists() {
        cairn_cli::daemon_cmd::absolute(folder)?
            .display()
            .to_string()
    } else {
        folder.display().to_string()
    };
    let r = c.post(
        "/v1/share",
        json!({ "folder": folder_arg, "device": device, "type": kind }),
    )?;
    if json_out {
        println!("{r}");
    } else {
        println!(
            "Offered folder {} to {device}; it appears in `cairn status` there, to accept with `cairn accept {}`",
            r["folder"].as_str().unwrap_or("?"),
            r["folder"].as_str().unwrap_or("?")
        );
    }
    Ok(())
}

/// `cairn accept FOLDER [PATH]`.
pub fn accept(
    c: &Client,
    folder: &str,
    path: Option<&Path>,
    kind: Option<&str>,
    json_out: bool,
) -> Result<(), CliError> {
    let path = match path {
        Some(p) => cairn_cli::daemon_cmd::absolute(p)?,
        None => std::env::var_os("HOME")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("/"))
            .join(folder),
    };
    let r = c.post(
        "/v1/accept",
        json!({ "folder": folder, "path": path, "type": kind }),
    )?;
    let joined: Vec<String> = r["joined"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default();
    if json_out {
        println!(
            "{}",
            json!({ "ok": r["ok"], "folder": folder, "path": path, "joined": joined })
        );
    } else {
        println!("Accepted folder {folder} into {}", path.display());
        if !joined.is_empty() {
            println!(
                "The files already there join it (folder {} retired): they sync as this device's changes; a file that differs from the other device's becomes a conflict copy",
                joined.join(", ")
            );
        }
    }
    Ok(())
}

/// `cairn decline`.
pub fn decline(c: &Client, folder: &str, json_out: bool) -> Result<(), CliError> {
    let r = c.post("/v1/decline", json!({ "folder": folder }))?;
    if json_out {
        println!("{}", json!({ "ok": r["ok"], "folder": folder }));
    } else {
        println!("Declined folder {folder}; `cairn accept {folder} [path]` still takes it");
    }
    Ok(())
}

/// `cairn pause` / `cairn resume`.
pub fn pause(
    c: &Client,
    folder: Option<&str>,
    paused: bool,
    json_out: bool,
) -> Result<(), CliError> {
    let r = c.post(
        if paused { "/v1/pause" } else { "/v1/resume" },
        json!({ "folder": folder }),
    )?;
    if json_out {
        println!("{r}");
    } else {
        let what = folder
            .map(|f| format!("folder {f}"))
            .unwrap_or_else(|| "all folders".into());
        println!("{} {what}", if paused { "Paused" } else { "Resumed" });
    }
    Ok(())
}

fn state_word(f: &Value) -> String {
    let state = f["state"].as_str().unwrap_or("?");
    match state {
        "idle" if f["in_sync"] == true => "up to date".into(),
        "idle" => "waiting".into(),
        "waiting" => format!(
            "waiting for {} files from other devices",
            f["waiting"].as_array().map_or(0, Vec::len)
        ),
        "syncing" => format!(
            "syncing ({} steps left)",
            f["pull_queue"].as_u64().unwrap_or(0)
        ),
        "no_space" => "not enough disk space (retrying)".into(),
        other => other.into(),
    }
}

/// `cairn status`.
pub fn status(c: &Client, json_out: bool) -> Result<(), CliError> {
    let s = c.get("/v1/status")?;
    if json_out {
        print_json(&s);
        return Ok(());
    }
    println!(
        "This device: {} ({})",
        s["device_name"].as_str().unwrap_or("?"),
        s["device_id"].as_str().unwrap_or("?")
    );
    let peers = s["peers"].as_array().cloned().unwrap_or_default();
    let online = peers.iter().filter(|p| p["connected"] == true).count();
    println!("Peers: {online} of {} online", peers.len());
    for p in &peers {
        let dot = if p["connected"] == true {
            "online "
        } else {
            "offline"
        };
        println!(
            "  {dot}  {:<16} {}{}",
            p["name"].as_str().unwrap_or(""),
            p["id"].as_str().unwrap_or(""),
            conduct_note(p)
        );
    }
    let folders = s["folders"].as_array().cloned().unwrap_or_default();
    println!("Folders: {}", folders.len());
    for f in &folders {
        println!(
            "  {:<20} {:<28} {} files, {}  [{}]",
            f["id"].as_str().unwrap_or(""),
            state_word(f),
            format::count(f["files"].as_u64().unwrap_or(0)),
            format::bytes(f["bytes"].as_u64().unwrap_or(0)),
            f["path"].as_str().unwrap_or("")
        );
        if let Some(e) = f["last_error"].as_str() {
            println!("      error: {e}");
            println!(
                "      fix the cause, then `cairn resume {}` or wait for the next retry",
                f["id"].as_str().unwrap_or("")
            );
        }
        let waiting = f["waiting"].as_array().cloned().unwrap_or_default();
        for w in waiting.iter().take(10) {
            println!(
                "      waiting for {}: {}",
                w["device"].as_str().unwrap_or("?"),
                w["path"].as_str().unwrap_or("?")
            );
        }
        if waiting.len() > 10 {
            println!("      ... and {} more files waiting", waiting.len() - 10);
        }
        let refused = f["refused"].as_array().cloned().unwrap_or_default();
        for r in refused.iter().take(10) {
            println!(
                "      refused from {}: {} ({})",
                r["device"].as_str().unwrap_or("?"),
                r["path"].as_str().unwrap_or("?"),
                r["reason"].as_str().unwrap_or("?")
            );
        }
        if refused.len() > 10 {
            println!("      ... and {} more entries refused", refused.len() - 10);
        }
        if f["watcher"] == "fallback" {
            println!(
                "      file watching failed; rescanning every 10 s (raise fs.inotify.max_user_watches)"
            );
        }
    }
    for o in s["offers"].as_array().cloned().unwrap_or_default() {
        println!(
            "Offer: {} wants to share folder {}; accept with `cairn accept {} [path]` or decline with `cairn decline {}`",
            o["from_name"].as_str().unwrap_or("?"),
            o["folder"].as_str().unwrap_or("?"),
            o["folder"].as_str().unwrap_or("?"),
            o["folder"].as_str().unwrap_or("?")
        );
    }
    Ok(())
}

/// `cairn peers`.
pub fn peers(c: &Client, json_out: bool) -> Result<(), CliError> {
    let s = c.get("/v1/status")?;
    if json_out {
        print_json(&s["peers"]);
        return Ok(());
    }
    for p in s["peers"].as_array().cloned().unwrap_or_default() {
        let state = if p["connected"] == true {
            "online"
        } else {
            "offline"
        };
        println!(
            "{:<16} {:<8} {}{}",
            p["name"].as_str().unwrap_or(""),
            state,
            p["id"].as_str().unwrap_or(""),
            conduct_note(&p)
        );
    }
    Ok(())
}

/// Protocol violations of a peer and its ban, for people; empty for a well-behaved peer.
fn conduct_note(p: &Value) -> String {
    let n = p["violations"].as_u64().unwrap_or(0);
    if n == 0 {
        return String::new();
    }
    let last = p["last_violation"].as_str().unwrap_or("?");
    match p["banned_for_s"].as_u64() {
        Some(s) => format!("  banned for {s} s after {n} protocol violations (last: {last})"),
        None => format!("  {n} protocol violations (last: {last})"),
    }
}

/// `cairn folders`.
pub fn folders(c: &Client, json_out: bool) -> Result<(), CliError> {
    let s = c.get("/v1/status")?;
    if json_out {
        print_json(&s["folders"]);
        return Ok(());
    }
    for f in s["folders"].as_array().cloned().unwrap_or_default() {
        println!(
            "{:<20} {:<13} {:<28} {}",
            f["id"].as_str().unwrap_or(""),
            f["type"].as_str().unwrap_or(""),
            state_word(&f),
            f["path"].as_str().unwrap_or("")
        );
    }
    Ok(())
}

fn when(ns: i64) -> String {
    let t = cairn_core::folder::tree::UtcTime::from_ns(ns);
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02}:{:02} UTC",
        t.year, t.month, t.day, t.hour, t.minute, t.second
    )
}

/// `cairn conflicts`.
pub fn conflicts(c: &Client, json_out: bool) -> Result<(), CliError> {
    let list = c.get("/v1/conflicts")?;
    if json_out {
        print_json(&list);
        return Ok(());
    }
    let items = list.as_array().cloned().unwrap_or_default();
    if items.is_empty() {
        println!("No conflicts.");
    }
    for x in items {
        println!(
            "{} (folder {})",
            x["original"].as_str().unwrap_or("?"),
            x["folder"].as_str().unwrap_or("?")
        );
        println!(
            "  at the name:  from {}, modified {}",
            x["original_device"].as_str().unwrap_or("?"),
            x["original_mtime_ns"]
                .as_i64()
                .map(when)
                .unwrap_or_else(|| "?".into())
        );
        println!(
            "  conflict copy {}: from {}, modified {}",
            x["copy"].as_str().unwrap_or("?"),
            x["copy_device"].as_str().unwrap_or("?"),
            when(x["copy_mtime_ns"].as_i64().unwrap_or(0))
        );
    }
    Ok(())
}

/// `cairn resolve PATH --keep local|remote|both`.
pub fn resolve(c: &Client, path: &str, keep: &str, json_out: bool) -> Result<(), CliError> {
    let r = c.post("/v1/resolve", json!({ "path": path, "keep": keep }))?;
    if json_out {
        println!("{r}");
    } else {
        println!("Resolved: {}", r["resolved"].as_str().unwrap_or("?"));
    }
    Ok(())
}

/// The first 12 hex digits of a content id, as `cairn history` shows versions.
fn short_id(id: &Value) -> &str {
    let id = id.as_str().unwrap_or("?");
    id.get(..12).unwrap_or(id)
}

/// `cairn history [PATH] [--folder F]`.
pub fn history(
    c: &Client,
    folder: Option<&str>,
    path: Option<&str>,
    json_out: bool,
) -> Result<(), CliError> {
    let query: Vec<(&str, &str)> = [("folder", folder), ("path", path)]
        .into_iter()
        .filter_map(|(k, v)| v.map(|v| (k, v)))
        .collect();
    let query = serde_urlencoded::to_string(query).unwrap_or_default();
    let list = c.get(&format!("/v1/history?{query}"))?;
    if json_out {
        print_json(&list);
        return Ok(());
    }
    let items = list.as_array().cloned().unwrap_or_default();
    if items.is_empty() {
        println!(
            "No kept versions{}.",
            path.map(|p| format!(" of {p}")).unwrap_or_default()
        );
        return Ok(());
    }
    println!("{:<23}  {:>10}  {:<12}  PATH", "KEPT", "SIZE", "VERSION");
    for v in items {
        println!(
            "{:<23}  {:>10}  {:<12}  {}{}",
            when(v["kept_ns"].as_i64().unwrap_or(0)),
            format::bytes(v["size"].as_u64().unwrap_or(0)),
            short_id(&v["content"]),
            v["path"].as_str().unwrap_or("?"),
            if v["available"] == true {
                ""
            } else {
                "  (bytes gone from the store)"
            }
        );
    }
    Ok(())
}

/// `cairn restore PATH [--version V] [--to P] [--folder F]`.
pub fn restore(c: &Client, request: Value, json_out: bool) -> Result<(), CliError> {
    let r = c.post("/v1/restore", request)?;
    if json_out {
        print_json(&r);
        return Ok(());
    }
    let mut line = format!(
        "Restored {} to version {} ({})",
        r["path"].as_str().unwrap_or("?"),
        short_id(&r["content"]),
        format::bytes(r["size"].as_u64().unwrap_or(0))
    );
    if r["kept_current"].is_string() {
        line += &format!(
            "; the version it replaced ({}) is kept in history",
            short_id(&r["kept_current"])
        );
    }
    println!("{line}.");
    if let Some(note) = r["note"].as_str() {
        println!("Note: {note}.");
    }
    Ok(())
}

/// `cairn ignore FOLDER [PATTERN] [--remove]`: edits the folder's top `.cairnignore`.
pub fn ignore(
    c: &Client,
    folder: &str,
    pattern: Option<&str>,
    remove: bool,
    json_out: bool,
) -> Result<(), CliError> {
    let s = c.get("/v1/status")?;
    let wanted = Path::new(folder).canonicalize().ok();
    let root = s["folders"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|f| {
            f["id"] == folder
                || wanted
                    .as_ref()
                    .is_some_and(|w| f["path"].as_str() == w.to_str())
        })
        .and_then(|f| f["path"].as_str().map(PathBuf::from))
        .ok_or_else(|| {
            CliError::new(
                exit::NOT_FOUND,
                format!("no folder {folder:?}; `cairn folders` lists them"),
            )
        })?;
    let file = root.join(cairn_core::scan::IGNORE_FILE);
    let mut lines: Vec<String> = std::fs::read_to_string(&file)
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect();
    if let Some(p) = pattern {
        if remove {
            let before = lines.len();
            lines.retain(|l| l.trim() != p);
            if lines.len() == before {
                return Err(CliError::new(
                    exit::NOT_FOUND,
                    format!("{p:?} is not in {}", file.display()),
                ));
            }
        } else if !lines.iter().any(|l| l.trim() == p) {
            lines.push(p.to_string());
        }
        let mut text = lines.join("\n");
        text.push('\n');
        std::fs::write(&file, text)?;
    }
    let patterns: Vec<&String> = lines
        .iter()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .collect();
    if json_out {
        println!("{}", json!({ "file": file, "patterns": patterns }));
    } else {
        println!("{}:", file.display());
        for p in patterns {
            println!("  {p}");
        }
    }
    Ok(())
}
