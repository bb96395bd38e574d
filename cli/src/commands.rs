//! The commands that talk to a running daemon, through the typed client of `cairn-api`.

use std::path::{Path, PathBuf};

use cairn_api::conflicts::Keep;
use cairn_api::folders::{AcceptRequest, FolderType, ShareRequest};
use cairn_api::history::{HistoryQuery, RestoreRequest, RewindRequest};
use cairn_api::pairing::InviteStatus;
use cairn_api::status::{FolderStatus, PeerStatus};
use cairn_api::time::UtcTime;
use cairn_api::{ApiError, Client, ClientError};
use serde::Serialize;
use serde_json::{Value, json};

use crate::daemon_cmd::absolute;
use crate::error::CliError;
use crate::format;

/// `v` as a JSON value. Objects of a `Value` keep their keys sorted, the order `--json`
/// output has always had (it was printed from the `Value` the daemon's answer parsed into).
fn value<T: Serialize>(v: &T) -> Value {
    serde_json::to_value(v).unwrap_or(Value::Null)
}

/// Prints `v` as indented JSON (`--json` of the listing commands).
fn print_json<T: Serialize>(v: &T) {
    println!(
        "{}",
        serde_json::to_string_pretty(&value(v)).unwrap_or_default()
    );
}

/// Prints `v` as one line of JSON (`--json` of the commands that change something).
fn print_json_line<T: Serialize>(v: &T) {
    println!("{}", value(v));
}

/// `cairn pair`: offer a code and wait for the other device.
pub fn pair_invite(c: &Client, json_out: bool) -> Result<(), CliError> {
    let (code, expires_in_s) = match c.invite()? {
        InviteStatus::Waiting { code, expires_in_s } => (code, expires_in_s),
        other => {
            return Err(CliError::other(format!(
                "unexpected answer: {}",
                value(&other)
            )));
        }
    };
    if json_out {
        println!("{}", json!({ "code": code, "expires_in_s": expires_in_s }));
    } else {
        println!("Pairing code: {code}");
        println!("On the other device run:  cairn pair {code}");
        println!(
            "(valid for {} minutes, for one attempt; waiting...)",
            expires_in_s / 60
        );
    }
    loop {
        let s = c.invite_status(25)?;
        match &s {
            InviteStatus::Waiting { .. } => continue,
            InviteStatus::Paired { peer, name } => {
                if json_out {
                    print_json_line(&s);
                } else {
                    println!("Paired with {name} ({peer})");
                }
                return Ok(());
            }
            InviteStatus::Failed { error } => {
                return Err(ApiError::PairingFailed(format!(
                    "pairing failed: {error}; the code is used up, run `cairn pair` for a new one"
                ))
                .into());
            }
            InviteStatus::Expired => {
                return Err(ApiError::PairingFailed(
                    "the code expired; run `cairn pair` for a new one".into(),
                )
                .into());
            }
            InviteStatus::None => {
                return Err(CliError::other(format!("unexpected answer: {}", value(&s))));
            }
        }
    }
}

/// `cairn pair CODE`: join the device that showed the code.
pub fn pair_join(c: &Client, code: &str, json_out: bool) -> Result<(), CliError> {
    match c.join(code) {
        Ok(p) => {
            if json_out {
                print_json_line(&p);
            } else {
                println!("Paired with {} ({})", p.name, p.peer);
            }
            Ok(())
        }
        Err(ClientError::Api(ApiError::PairingFailed(why))) => {
            Err(ApiError::PairingFailed(format!("pairing failed: {why}")).into())
        }
        Err(e) => Err(e.into()),
    }
}

/// `cairn share FOLDER DEVICE`.
pub fn share(
    c: &Client,
    folder: &Path,
    device: &str,
    kind: Option<FolderType>,
    json_out: bool,
) -> Result<(), CliError> {
    let folder_arg = if folder.exists() {
        absolute(folder)?.display().to_string()
    } else {
        folder.display().to_string()
    };
    let r = c.share(&ShareRequest {
        folder: folder_arg,
        device: Some(device.to_string()),
        kind,
    })?;
    if json_out {
        print_json_line(&r);
    } else {
        println!(
            "Offered folder {} to {device}; it appears in `cairn status` there, to accept with `cairn accept {}`",
            r.folder, r.folder
        );
    }
    Ok(())
}

/// `cairn accept FOLDER [PATH]`.
pub fn accept(
    c: &Client,
    folder: &str,
    path: Option<&Path>,
    kind: Option<FolderType>,
    json_out: bool,
) -> Result<(), CliError> {
    let path = match path {
        Some(p) => absolute(p)?,
        None => std::env::var_os("HOME")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("/"))
            .join(folder),
    };
    let r = c.accept(&AcceptRequest {
        folder: folder.to_string(),
        path: path.clone(),
        kind,
    })?;
    let joined = r.joined;
    if json_out {
        println!(
            "{}",
            json!({ "ok": r.ok, "folder": folder, "path": path, "joined": joined })
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
    let r = c.decline(folder)?;
    if json_out {
        println!("{}", json!({ "ok": r.ok, "folder": folder }));
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
    let r = if paused {
        c.pause(folder)?
    } else {
        c.resume(folder)?
    };
    if json_out {
        print_json_line(&r);
    } else {
        let what = folder
            .map(|f| format!("folder {f}"))
            .unwrap_or_else(|| "all folders".into());
        println!("{} {what}", if paused { "Paused" } else { "Resumed" });
    }
    Ok(())
}

fn state_word(f: &FolderStatus) -> String {
    match f.state.as_str() {
        "idle" if f.in_sync => "up to date".into(),
        "idle" => "waiting".into(),
        "waiting" => format!("waiting for {} files from other devices", f.waiting.len()),
        "syncing" => format!("syncing ({} steps left)", f.pull_queue),
        "no_space" => "not enough disk space (retrying)".into(),
        other => other.into(),
    }
}

/// `cairn status`.
pub fn status(c: &Client, json_out: bool) -> Result<(), CliError> {
    let s = c.status()?;
    if json_out {
        print_json(&s);
        return Ok(());
    }
    println!("This device: {} ({})", s.device_name, s.device_id);
    println!("Network: {}", network_line(&s.network));
    let online = s.peers.iter().filter(|p| p.connected).count();
    println!("Peers: {online} of {} online", s.peers.len());
    for p in &s.peers {
        let dot = if p.connected { "online " } else { "offline" };
        println!(
            "  {dot}  {:<16} {}{}{}",
            p.name,
            p.id,
            connection_note(p),
            conduct_note(p)
        );
    }
    println!("Folders: {}", s.folders.len());
    for f in &s.folders {
        println!(
            "  {:<20} {:<28} {} files, {}  [{}]",
            f.id,
            state_word(f),
            format::count(f.files),
            format::bytes(f.bytes),
            f.path.display()
        );
        if let Some(e) = &f.last_error {
            println!("      error: {e}");
            println!(
                "      fix the cause, then `cairn resume {}` or wait for the next retry",
                f.id
            );
        }
        for w in f.waiting.iter().take(10) {
            println!("      waiting for {}: {}", w.device, w.path);
        }
        if f.waiting.len() > 10 {
            println!("      ... and {} more files waiting", f.waiting.len() - 10);
        }
        for r in f.refused.iter().take(10) {
            println!("      refused from {}: {} ({})", r.device, r.path, r.reason);
        }
        if f.refused.len() > 10 {
            println!(
                "      ... and {} more entries refused",
                f.refused.len() - 10
            );
        }
        if f.watcher == "fallback" {
            println!(
                "      file watching failed; rescanning every 10 s (raise fs.inotify.max_user_watches)"
            );
        }
    }
    println!(
        "Versions: {} kept, {} on disk (`cairn history` lists them)",
        format::count(s.versions.kept as u64),
        format::bytes(s.versions.store_bytes)
    );
    for o in &s.offers {
        println!(
            "Offer: {} wants to share folder {}; accept with `cairn accept {} [path]` or decline with `cairn decline {}`",
            o.from_name, o.folder, o.folder, o.folder
        );
    }
    Ok(())
}

/// `cairn peers`.
pub fn peers(c: &Client, json_out: bool) -> Result<(), CliError> {
    let peers = c.peers()?;
    if json_out {
        print_json(&peers);
        return Ok(());
    }
    for p in &peers {
        let state = if p.connected { "online" } else { "offline" };
        println!(
            "{:<16} {:<8} {}{}{}",
            p.name,
            state,
            p.id,
            connection_note(p),
            conduct_note(p)
        );
    }
    Ok(())
}

/// Reachability and the DHT, for people.
fn network_line(n: &cairn_api::status::NetworkStatus) -> String {
    let mut line = format!(
        "{}; DHT: {} peers, {}",
        if n.reachability.is_empty() {
            "unknown"
        } else {
            &n.reachability
        },
        n.dht_peers,
        if n.dht_server { "serving" } else { "client" }
    );
    if !n.external.is_empty() {
        line += &format!("; reachable at {}", n.external.join(", "));
    }
    if !n.relays.is_empty() {
        line += &format!("; relayed through {} relay(s)", n.relays.len());
    }
    if n.private_only {
        line += "; private network only";
    }
    line
}

/// How a connected peer is reached ("  direct, via mdns"); empty when offline.
fn connection_note(p: &PeerStatus) -> String {
    match (&p.path, &p.found_by) {
        (Some(path), Some(how)) => format!("  {path}, via {how}"),
        (Some(path), None) => format!("  {path}"),
        _ => String::new(),
    }
}

/// Protocol violations of a peer and its ban, for people; empty for a well-behaved peer.
fn conduct_note(p: &PeerStatus) -> String {
    let n = p.violations;
    if n == 0 {
        return String::new();
    }
    let last = p.last_violation.as_deref().unwrap_or("?");
    match p.banned_for_s {
        Some(s) => format!("  banned for {s} s after {n} protocol violations (last: {last})"),
        None => format!("  {n} protocol violations (last: {last})"),
    }
}

/// `cairn folders`.
pub fn folders(c: &Client, json_out: bool) -> Result<(), CliError> {
    let folders = c.folders()?;
    if json_out {
        print_json(&folders);
        return Ok(());
    }
    for f in &folders {
        println!(
            "{:<20} {:<13} {:<28} {}",
            f.id,
            f.kind.as_str(),
            state_word(f),
            f.path.display()
        );
    }
    Ok(())
}

fn when(ns: i64) -> String {
    let t = UtcTime::from_ns(ns);
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02}:{:02} UTC",
        t.year, t.month, t.day, t.hour, t.minute, t.second
    )
}

/// `cairn conflicts`.
pub fn conflicts(c: &Client, json_out: bool) -> Result<(), CliError> {
    let list = c.conflicts()?;
    if json_out {
        print_json(&list);
        return Ok(());
    }
    if list.is_empty() {
        println!("No conflicts.");
    }
    for x in &list {
        println!("{} (folder {})", x.original, x.folder);
        println!(
            "  at the name:  from {}, modified {}",
            x.original_device.as_deref().unwrap_or("?"),
            x.original_mtime_ns.map(when).unwrap_or_else(|| "?".into())
        );
        println!(
            "  conflict copy {}: from {}, modified {}",
            x.copy,
            x.copy_device,
            when(x.copy_mtime_ns)
        );
    }
    Ok(())
}

/// `cairn resolve PATH --keep local|remote|both`.
pub fn resolve(c: &Client, path: &str, keep: Keep, json_out: bool) -> Result<(), CliError> {
    let r = c.resolve(path, keep)?;
    if json_out {
        print_json_line(&r);
    } else {
        println!("Resolved: {}", r.resolved);
    }
    Ok(())
}

/// The first 12 hex digits of a content id, as `cairn history` shows versions.
fn short_id(id: &str) -> &str {
    id.get(..12).unwrap_or(id)
}

/// `cairn history [PATH] [--folder F] [--deleted]`.
pub fn history(c: &Client, query: &HistoryQuery, json_out: bool) -> Result<(), CliError> {
    let list = c.versions(query)?;
    if json_out {
        print_json(&list);
        return Ok(());
    }
    if list.is_empty() {
        println!(
            "No earlier versions{}{}.",
            if query.deleted {
                " of deleted files"
            } else {
                ""
            },
            query
                .path
                .as_deref()
                .map(|p| format!(" of {p}"))
                .unwrap_or_default()
        );
        return Ok(());
    }
    println!(
        "{:<23}  {:>10}  {:<12}  {:<28}  PATH",
        "REPLACED", "SIZE", "VERSION", "HELD BY"
    );
    for v in &list {
        println!(
            "{:<23}  {:>10}  {:<12}  {:<28}  {}{}",
            if v.kept_ns > 0 {
                when(v.kept_ns)
            } else {
                "(undated)".into()
            },
            format::bytes(v.size),
            short_id(&v.content),
            cairn_api::history::held_by(&v.holders),
            v.path,
            if v.deleted { "  (deleted)" } else { "" }
        );
    }
    Ok(())
}

/// `cairn restore --folder F --at TIME [SUBDIR] [--exact] [--dry-run]`.
pub fn rewind(c: &Client, request: &RewindRequest, json_out: bool) -> Result<(), CliError> {
    let r = c.rewind(request)?;
    if json_out {
        print_json(&r);
        return Ok(());
    }
    let changing: Vec<_> = r.steps.iter().filter(|s| s.action != "keep").collect();
    let kept_new = r.steps.len() - changing.len();
    let scope = request
        .under
        .as_deref()
        .map(|u| format!("{}/{u}", r.folder))
        .unwrap_or_else(|| r.folder.clone());
    let (n, plural) = (changing.len(), if changing.len() == 1 { "" } else { "s" });
    let (at, fetch) = (when(r.at_ns), format::bytes(r.bytes_to_fetch));
    if !r.dry_run {
        println!(
            "Rewound {scope} to {at}: {n} path{plural} put back ({fetch} to fetch from peers)."
        );
    } else {
        println!(
            "Rewinding {scope} to {at} would change {n} path{plural} ({fetch} to fetch from peers):"
        );
        for s in &r.steps {
            let size = s
                .content
                .as_ref()
                .map(|_| format::bytes(s.size))
                .unwrap_or_default();
            let unheld = if s.available {
                ""
            } else {
                "  (held by no connected device)"
            };
            println!("  {:<9} {size:>10}  {}{unheld}", s.action, s.path);
        }
    }
    if kept_new > 0 && !request.exact {
        println!(
            "{kept_new} path{} created since stay{} (--exact removes them, to history).",
            if kept_new == 1 { "" } else { "s" },
            if kept_new == 1 { "s" } else { "" }
        );
    }
    if let Some(note) = &r.note {
        println!("Note: {note}.");
    }
    Ok(())
}

/// `cairn history --prune`.
pub fn prune(c: &Client, json_out: bool) -> Result<(), CliError> {
    let p = c.prune()?;
    if json_out {
        print_json(&p);
        return Ok(());
    }
    println!(
        "Dropped {} version{}; {} kept. Version store: {} before, {} now.",
        format::count(p.dropped as u64),
        if p.dropped == 1 { "" } else { "s" },
        format::count(p.kept as u64),
        format::bytes(p.bytes_before),
        format::bytes(p.bytes_after)
    );
    Ok(())
}

/// `cairn restore PATH [--version V] [--to P] [--folder F]`.
pub fn restore(c: &Client, request: &RestoreRequest, json_out: bool) -> Result<(), CliError> {
    let r = c.restore(request)?;
    if json_out {
        print_json(&r);
        return Ok(());
    }
    let mut line = format!(
        "Restored {} to version {} ({})",
        r.path,
        short_id(&r.content),
        format::bytes(r.size)
    );
    if let Some(kept) = &r.kept_current {
        line += &format!(
            "; the version it replaced ({}) is kept in history",
            short_id(kept)
        );
    }
    println!("{line}.");
    if let Some(note) = &r.note {
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
    let wanted = Path::new(folder).canonicalize().ok();
    let root = c
        .folders()?
        .into_iter()
        .find(|f| f.id == folder || wanted.as_ref() == Some(&f.path))
        .map(|f| f.path)
        .ok_or_else(|| {
            ApiError::NotFound(format!("no folder {folder:?}; `cairn folders` lists them"))
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
                return Err(
                    ApiError::NotFound(format!("{p:?} is not in {}", file.display())).into(),
                );
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Times shown by the CLI and the tray (cairn-api) and conflict copy names (cairn-core)
    /// come from one calendar.
    #[test]
    fn the_api_calendar_is_the_one_conflict_names_use() {
        let mut ns: i64 = -86_400 * 1_000_000_000 * 400;
        while ns < 4_102_444_800 * 1_000_000_000 {
            let api = UtcTime::from_ns(ns);
            let core = cairn_core::folder::tree::UtcTime::from_ns(ns);
            assert_eq!(
                (
                    api.year, api.month, api.day, api.hour, api.minute, api.second
                ),
                (
                    core.year,
                    core.month,
                    core.day,
                    core.hour,
                    core.minute,
                    core.second
                ),
                "{ns}"
            );
            ns += 3_601_000_000_007; // an hour and a second: every second of a minute comes up
        }
    }

    /// What `--json` printed before the typed client: the daemon's answer parsed into a
    /// `Value` and printed; and what it prints now: parsed into the type and printed
    /// through [`value`].
    fn before_and_now<T: Serialize + serde::de::DeserializeOwned>(answer: &T) -> (String, String) {
        let bytes = serde_json::to_vec(answer).unwrap();
        let before: Value = serde_json::from_slice(&bytes).unwrap();
        let now: T = serde_json::from_slice(&bytes).unwrap();
        (
            serde_json::to_string_pretty(&before).unwrap(),
            serde_json::to_string_pretty(&value(&now)).unwrap(),
        )
    }

    #[test]
    fn json_output_is_byte_for_byte_what_it_was() {
        use cairn_api::conflicts::Conflict;
        use cairn_api::folders::Offer;
        use cairn_api::history::{Restored, Version};
        use cairn_api::status::{RecentChange, RefusedPath, Status, WaitingPath};
        let status = Status {
            device_id: "12D3KooWdesk".into(),
            device_name: "desk \"main\" ü".into(),
            offers: vec![Offer {
                folder: "photos".into(),
                from: "12D3KooWlaptop".into(),
                from_name: "laptop".into(),
            }],
            uptime_s: u64::MAX,
            listen: vec!["/ip4/0.0.0.0/tcp/4001".into()],
            peers: vec![PeerStatus {
                id: "12D3KooWlaptop".into(),
                name: "laptop".into(),
                connected: true,
                violations: 3,
                last_violation: Some("bad_frame: x".into()),
                banned_for_s: Some(60),
                path: Some("direct".into()),
                found_by: Some("mdns".into()),
            }],
            folders: vec![FolderStatus {
                id: "docs".into(),
                path: "/home/me/my docs".into(),
                kind: FolderType::ReceiveOnly,
                state: "waiting".into(),
                last_error: Some("disk full".into()),
                waiting: vec![WaitingPath {
                    path: "a".into(),
                    device: "laptop".into(),
                }],
                refused: vec![RefusedPath {
                    path: "b".into(),
                    reason: "too big".into(),
                    device: "1a2b".into(),
                }],
                ..FolderStatus::default()
            }],
            recent: vec![RecentChange {
                at: 1,
                folder: "docs".into(),
                path: "a".into(),
                change: "added".into(),
                origin: "remote".into(),
            }],
            network: cairn_api::status::NetworkStatus {
                reachability: "behind NAT".into(),
                external: vec!["/ip4/203.0.113.7/tcp/21900".into()],
                dht_peers: 12,
                dht_server: false,
                private_only: false,
                relays: vec!["12D3KooWRelay".into()],
            },
            versions: Default::default(),
        };
        let (before, now) = before_and_now(&status);
        assert_eq!(before, now);
        let (before, now) = before_and_now(&status.peers);
        assert_eq!(before, now);
        let (before, now) = before_and_now(&status.folders);
        assert_eq!(before, now);
        let conflicts = vec![Conflict {
            folder: "docs".into(),
            copy: "a.sync-conflict-20261122-101010-ABCD.txt".into(),
            original: "a.txt".into(),
            copy_device: "laptop".into(),
            copy_mtime_ns: -1,
            original_device: None,
            original_mtime_ns: Some(i64::MAX),
        }];
        let (before, now) = before_and_now(&conflicts);
        assert_eq!(before, now);
        let versions = vec![Version {
            folder: "docs".into(),
            path: "plan.txt".into(),
            kept_ns: 1_764_483_720_000_000_000,
            content: "ab".repeat(32),
            size: 25,
            available: false,
            made_ns: 1_764_483_000_000_000_000,
            author: Some("laptop".into()),
            holders: vec![cairn_api::history::Holder {
                name: "laptop".into(),
                this_device: false,
                online: false,
            }],
            deleted: true,
        }];
        let (before, now) = before_and_now(&versions);
        assert_eq!(before, now);
        let restored = Restored {
            folder: "docs".into(),
            path: "plan.txt".into(),
            content: "ab".repeat(32),
            size: 25,
            kept_current: None,
            note: Some("the folder is paused".into()),
        };
        let (before, now) = before_and_now(&restored);
        assert_eq!(before, now);
    }

    #[test]
    fn json_output_keeps_its_sorted_keys() {
        let r = cairn_api::folders::PauseState {
            ok: true,
            paused: true,
        };
        assert_eq!(value(&r).to_string(), r#"{"ok":true,"paused":true}"#);
        let p = cairn_api::pairing::Paired {
            peer: "12D3KooWx".into(),
            name: "laptop".into(),
        };
        assert_eq!(
            value(&p).to_string(),
            r#"{"name":"laptop","peer":"12D3KooWx"}"#
        );
        let s = InviteStatus::Paired {
            peer: "x".into(),
            name: "laptop".into(),
        };
        assert_eq!(
            value(&s).to_string(),
            r#"{"name":"laptop","peer":"x","state":"paired"}"#
        );
    }
}
