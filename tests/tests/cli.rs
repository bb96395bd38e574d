//! The `cairn` CLI driving real daemons: up, pair, share, accept, status, conflicts,
//! resolve, pause/resume, ignore, down; JSON output and exit codes.

use std::fs;
use std::path::Path;
use std::process::{Child, Command};

use cairn_tests::{CliDevice, bin, free_port, read_pair_code, wait_until};
use serde_json::Value;

/// A device on loopback, found by the others through its Kademlia bootstrap address.
struct Device {
    cli: CliDevice,
    port: u16,
}

impl std::ops::Deref for Device {
    type Target = CliDevice;
    fn deref(&self) -> &CliDevice {
        &self.cli
    }
}

impl Device {
    fn new(base: &Path, name: &str, bootstrap: Option<(&Device, &str)>) -> Self {
        let port = free_port();
        let boot = bootstrap
            .map(|(d, id)| format!("\"/ip4/127.0.0.1/tcp/{}/p2p/{id}\"", d.port))
            .unwrap_or_default();
        let config = format!(
            "[device]\nname = \"{name}\"\n\n[network]\nlisten = [\"/ip4/127.0.0.1/tcp/{port}\"]\nmdns = false\nbootstrap = [{boot}]\ndht_server = true\n"
        );
        Device {
            cli: CliDevice::create(base, name, &config, None),
            port,
        }
    }

    fn id(&self) -> String {
        self.json(&["id"])["device_id"]
            .as_str()
            .unwrap()
            .to_string()
    }
}

/// Starts `cairn pair` on `inviter` and returns the child and the code it printed.
fn invite(inviter: &Device) -> (Child, String) {
    let mut child = inviter.spawn(&["pair"]);
    let code = read_pair_code(&mut child);
    (child, code)
}

fn two_devices(base: &Path) -> (Device, Device) {
    let a = Device::new(base, "alpha", None);
    let a_id = a.id();
    let b = Device::new(base, "beta", Some((&a, &a_id)));
    a.json(&["up"]);
    b.json(&["up"]);
    (a, b)
}

/// Two devices paired by code, `a`'s folder shared with `b` and accepted, a first file
/// synced: returns them and the folder's id.
fn paired_sharing_a_folder(base: &Path) -> (Device, Device, String) {
    let (a, b) = two_devices(base);

    // Pair with a code.
    let (child, code) = invite(&a);
    let joined = b.json(&["pair", &code]);
    assert_eq!(joined["name"], "alpha");
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "inviter: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let peers_a = a.json(&["peers"]);
    assert_eq!(peers_a[0]["name"], "beta");
    assert!(wait_until(20, || a.json(&["peers"])[0]["connected"] == true));

    // Share a folder; the other side sees the offer and accepts it.
    let shared = a.json(&["share", a.folder.to_str().unwrap(), "beta"]);
    let folder_id = shared["folder"].as_str().unwrap().to_string();
    assert!(wait_until(20, || b.json(&["status"])["offers"]
        .as_array()
        .is_some_and(|o| !o.is_empty())));
    let accepted = b.json(&["accept", &folder_id, b.folder.to_str().unwrap()]);
    assert_eq!(accepted["ok"], true);
    fs::write(a.folder.join("hello.txt"), b"hello beta").unwrap();
    assert!(wait_until(20, || fs::read(b.folder.join("hello.txt"))
        .ok()
        .as_deref()
        == Some(&b"hello beta"[..])));
    (a, b, folder_id)
}

#[test]
fn pair_share_accept_sync_and_resolve_a_conflict_through_the_cli() {
    let tmp = tempfile::tempdir().unwrap();
    let (a, b, folder_id) = paired_sharing_a_folder(tmp.path());
    let folders = b.json(&["folders"]);
    assert_eq!(folders[0]["id"], folder_id.as_str());
    for field in [
        "id",
        "path",
        "type",
        "state",
        "in_sync",
        "files",
        "bytes",
        "last_error",
        "watcher",
    ] {
        assert!(folders[0].get(field).is_some(), "folders[].{field} missing");
    }

    // Pause b, edit on both sides, resume: one conflict.
    b.json(&["pause", &folder_id]);
    assert_eq!(b.json(&["folders"])[0]["state"], "paused");
    fs::write(a.folder.join("hello.txt"), b"alpha's edit").unwrap();
    std::thread::sleep(std::time::Duration::from_millis(300));
    fs::write(b.folder.join("hello.txt"), b"beta's edit, later").unwrap();
    b.json(&["resume", &folder_id]);
    assert!(wait_until(30, || a
        .json(&["conflicts"])
        .as_array()
        .is_some_and(|c| c.len() == 1)));
    let c = a.json(&["conflicts"])[0].clone();
    for field in [
        "folder",
        "copy",
        "original",
        "copy_device",
        "copy_mtime_ns",
        "original_device",
        "original_mtime_ns",
    ] {
        assert!(c.get(field).is_some(), "conflicts[].{field} missing");
    }
    assert_eq!(c["original"], "hello.txt");
    assert_eq!(c["copy_device"], "alpha (this device)");
    assert_eq!(c["original_device"], "beta");

    // Keep the remote (the conflict copy's) version: the resolution reaches b too.
    a.json(&["resolve", c["copy"].as_str().unwrap(), "--keep", "remote"]);
    assert!(wait_until(30, || {
        fs::read(b.folder.join("hello.txt")).ok().as_deref() == Some(&b"alpha's edit"[..])
            && b.json(&["conflicts"])
                .as_array()
                .is_some_and(|c| c.is_empty())
            && a.json(&["conflicts"])
                .as_array()
                .is_some_and(|c| c.is_empty())
    }));

    // Ignore patterns.
    let ig = a.json(&["ignore", &folder_id, "*.tmp"]);
    assert_eq!(ig["patterns"][0], "*.tmp");
    fs::write(a.folder.join("scratch.tmp"), b"local only").unwrap();
    fs::write(a.folder.join("after.txt"), b"synced").unwrap();
    assert!(wait_until(20, || b.folder.join("after.txt").exists()));
    assert!(!b.folder.join("scratch.tmp").exists());

    // Status JSON fields, then stop both.
    let s = a.json(&["status"]);
    for field in [
        "device_id",
        "device_name",
        "uptime_s",
        "listen",
        "peers",
        "folders",
        "offers",
    ] {
        assert!(s.get(field).is_some(), "status.{field} missing");
    }
    a.json(&["down"]);
    b.json(&["down"]);
    let out = a.run(&["status"]);
    assert_eq!(out.status.code(), Some(3), "status with no daemon exits 3");
    assert!(String::from_utf8_lossy(&out.stderr).contains("not running"));
}

/// Regression (CI of stop 28): `cairn conflicts` listed a conflict as soon as the merge
/// planned it, while the pull that writes its two sides was still running; resolving it
/// then acted on files the pull was about to replace, and the pull kept its write as yet
/// another conflict copy. A conflict is listed once both sides are on the disk, so the
/// first listing can be resolved at once. The winning side is large so that its pull
/// takes a while.
#[test]
fn a_conflict_is_listed_only_once_its_files_are_written_and_resolves_at_once() {
    let tmp = tempfile::tempdir().unwrap();
    let (a, b, folder_id) = paired_sharing_a_folder(tmp.path());
    b.json(&["pause", &folder_id]);
    fs::write(a.folder.join("hello.txt"), b"alpha's edit").unwrap();
    std::thread::sleep(std::time::Duration::from_millis(300));
    let big = cairn_tests::pseudo_random(48 << 20, 28);
    fs::write(b.folder.join("hello.txt"), &big).unwrap();
    b.json(&["resume", &folder_id]);

    // Resolve at the first moment a lists the conflict.
    let mut listed = Value::Null;
    assert!(wait_until(60, || {
        listed = a.json(&["conflicts"]);
        listed.as_array().is_some_and(|c| !c.is_empty())
    }));
    let copy = listed[0]["copy"].as_str().unwrap().to_string();
    assert_eq!(
        fs::read(a.folder.join(&copy)).unwrap(),
        b"alpha's edit",
        "a listed conflict copy is on the disk"
    );
    assert_eq!(
        fs::read(a.folder.join("hello.txt")).unwrap(),
        big,
        "a listed conflict's original holds the winner"
    );
    a.json(&["resolve", &copy, "--keep", "remote"]);

    let copies = |dir: &Path| -> Vec<String> {
        fs::read_dir(dir)
            .unwrap()
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .filter(|n| n.contains("conflict"))
            .collect()
    };
    let settled = wait_until(30, || {
        [&a, &b].iter().all(|d| {
            fs::read(d.folder.join("hello.txt")).ok().as_deref() == Some(&b"alpha's edit"[..])
                && d.json(&["conflicts"])
                    .as_array()
                    .is_some_and(|c| c.is_empty())
                && copies(&d.folder).is_empty()
        })
    });
    assert!(
        settled,
        "alpha: {:?} {}, beta: {:?} {}",
        copies(&a.folder),
        a.json(&["conflicts"]),
        copies(&b.folder),
        b.json(&["conflicts"])
    );
}

#[test]
fn a_wrong_code_pairs_nothing_and_leaves_the_invitation_to_the_right_one() {
    let tmp = tempfile::tempdir().unwrap();
    let (a, b) = two_devices(tmp.path());
    let (mut child, code) = invite(&a);
    // Same nameplate, wrong words: what a typo, or another device that invites with the
    // same nameplate, looks like to the joiner.
    let nameplate = code.split('-').next().unwrap();
    let wrong = if code.ends_with("-acid") {
        format!("{nameplate}-acid-acorn")
    } else {
        format!("{nameplate}-acid-acid")
    };
    let out = b.run(&["pair", &wrong]);
    assert_eq!(
        out.status.code(),
        Some(4),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("the code is wrong"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(b.log().contains("pair_code_mismatch"), "{}", b.log());
    assert!(a.json(&["peers"]).as_array().unwrap().is_empty());
    assert!(b.json(&["peers"]).as_array().unwrap().is_empty());
    // The joiner sent nothing after the mismatch: the invitation still stands.
    assert!(
        child.try_wait().unwrap().is_none(),
        "the inviter gave up on a wrong code"
    );
    let joined = b.json(&["pair", &code]);
    assert_eq!(joined["name"], "alpha", "{joined}");
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(a.json(&["peers"]).as_array().unwrap().len(), 1);
}

#[test]
fn an_expired_code_pairs_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let a = Device::new(tmp.path(), "alpha", None);
    let a_id = a.id();
    let b = Device::new(tmp.path(), "beta", Some((&a, &a_id)));
    let up = a
        .cmd()
        .args(["--json", "up"])
        .env("CAIRN_PAIR_TTL_S", "2")
        .output()
        .unwrap();
    assert!(up.status.success());
    b.json(&["up"]);
    let (child, code) = invite(&a);
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(4), "the inviter reports the expiry");
    assert!(String::from_utf8_lossy(&out.stderr).contains("expired"));
    let out = b.run(&["pair", &code]);
    assert_eq!(out.status.code(), Some(4));
    // The error says that a device was reached, and that it had no invitation.
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("the one device found did not"), "{err}");
    assert!(a.json(&["peers"]).as_array().unwrap().is_empty());
    assert!(b.json(&["peers"]).as_array().unwrap().is_empty());
}

#[test]
fn a_device_that_never_paired_cannot_join_or_get_folders() {
    let tmp = tempfile::tempdir().unwrap();
    let (a, b) = two_devices(tmp.path());
    let a_id = a.id();
    let c = Device::new(tmp.path(), "gamma", Some((&a, &a_id)));
    c.json(&["up"]);
    let t = std::time::Instant::now();
    let (child, code) = invite(&a);
    b.json(&["pair", &code]);
    assert!(child.wait_with_output().unwrap().status.success());
    eprintln!("pairing took {:?}", t.elapsed());
    a.json(&["share", a.folder.to_str().unwrap(), "beta"]);
    fs::write(a.folder.join("private.txt"), b"for beta only").unwrap();
    // gamma guesses a code and is refused; it has no peers and no offers.
    let t = std::time::Instant::now();
    let out = c.run(&["pair", &code]);
    eprintln!("gamma's attempt took {:?}", t.elapsed());
    assert_eq!(out.status.code(), Some(4));
    let s = c.json(&["status"]);
    assert!(s["peers"].as_array().unwrap().is_empty());
    assert!(s["offers"].as_array().unwrap().is_empty());
    assert!(!c.folder.join("private.txt").exists());
}

/// The README's flow on two devices: `cairn up ~/Sync` on both, pair, share, then accept
/// into the same ~/Sync. The laptop's own folder is joined (retired), its files merge
/// with the shared folder's (a file that differs becomes a conflict copy), and it has one
/// folder, not two indexing the same files. Overlapping folders are refused.
#[test]
fn accepting_into_a_synced_directory_joins_it_and_overlaps_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let a = Device::new(tmp.path(), "alpha", None);
    let a_id = a.id();
    let b = Device::new(tmp.path(), "beta", Some((&a, &a_id)));
    fs::write(a.folder.join("same.txt"), b"same on both").unwrap();
    fs::write(a.folder.join("alpha-only.txt"), b"alpha").unwrap();
    fs::write(a.folder.join("differs.txt"), b"alpha's version").unwrap();
    fs::write(b.folder.join("same.txt"), b"same on both").unwrap();
    fs::write(b.folder.join("beta-only.txt"), b"beta").unwrap();
    fs::write(b.folder.join("differs.txt"), b"beta's version").unwrap();
    let a_folder = a.json(&["up", a.folder.to_str().unwrap()])["folder"]
        .as_str()
        .unwrap()
        .to_string();
    let b_own = b.json(&["up", b.folder.to_str().unwrap()])["folder"]
        .as_str()
        .unwrap()
        .to_string();
    // Overlaps are refused: a folder inside one, or one that contains one.
    let inside = b.folder.join("sub");
    fs::create_dir(&inside).unwrap();
    for path in [inside.as_path(), tmp.path()] {
        let out = b.run(&["up", path.to_str().unwrap()]);
        assert!(!out.status.success(), "{path:?} accepted");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("one folder only"), "{err}");
    }
    fs::remove_dir(&inside).unwrap();

    let (child, code) = invite(&a);
    b.json(&["pair", &code]);
    assert!(child.wait_with_output().unwrap().status.success());
    a.json(&["share", &a_folder, "beta"]);
    assert!(wait_until(20, || !b.json(&["status"])["offers"]
        .as_array()
        .unwrap()
        .is_empty()));
    let accepted = b.json(&["accept", &a_folder, b.folder.to_str().unwrap()]);
    assert_eq!(accepted["joined"], serde_json::json!([b_own]));
    let folders = b.json(&["folders"]);
    assert_eq!(folders.as_array().unwrap().len(), 1, "{folders}");
    assert_eq!(folders[0]["id"], a_folder.as_str());

    // Both end with every file, and one conflict copy of the file that differs.
    let names = |d: &Device| -> Vec<String> {
        let mut n: Vec<String> = fs::read_dir(&d.folder)
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        n.sort();
        n
    };
    let settled = |d: &Device| {
        let n = names(d);
        ["alpha-only.txt", "beta-only.txt", "same.txt", "differs.txt"]
            .iter()
            .all(|f| n.iter().any(|x| x == f))
            && n.iter().filter(|x| x.contains("sync-conflict")).count() == 1
    };
    assert!(
        wait_until(40, || settled(&a) && settled(&b) && names(&a) == names(&b)),
        "alpha {:?}\nbeta {:?}\n{}",
        names(&a),
        names(&b),
        b.log()
    );
    assert_eq!(
        fs::read(b.folder.join("same.txt")).unwrap(),
        b"same on both"
    );
    // The joined folder survives a restart as the only one.
    b.json(&["down"]);
    b.json(&["up"]);
    assert_eq!(b.json(&["folders"]).as_array().unwrap().len(), 1);
    a.json(&["down"]);
    b.json(&["down"]);
}

/// `cairn decline` removes an offer, and the device's later offers of that folder are not
/// shown again, across a restart; `cairn accept` still takes the folder afterwards.
#[test]
fn a_declined_offer_stays_declined_across_a_restart_and_can_still_be_accepted() {
    let tmp = tempfile::tempdir().unwrap();
    let (a, b) = two_devices(tmp.path());
    let (child, code) = invite(&a);
    b.json(&["pair", &code]);
    assert!(child.wait_with_output().unwrap().status.success());
    let shared = a.json(&["share", a.folder.to_str().unwrap(), "beta"]);
    let folder_id = shared["folder"].as_str().unwrap().to_string();
    let offers = |d: &Device| d.json(&["status"])["offers"].as_array().cloned().unwrap();
    assert!(wait_until(20, || !offers(&b).is_empty()), "{}", b.log());
    assert_eq!(b.json(&["decline", &folder_id])["ok"], true);
    assert!(offers(&b).is_empty());
    let text = String::from_utf8(b.run(&["status"]).stdout).unwrap();
    assert!(!text.contains("Offer:"), "{text}");

    // alpha offers again on every connection: after beta restarts, beta denies alpha's
    // meta round for the folder, and shows no offer.
    let denied = |a: &Device| a.log().matches("meta_denied_by_peer").count();
    b.json(&["down"]);
    let before = denied(&a);
    b.json(&["up"]);
    assert!(
        wait_until(30, || denied(&a) > before),
        "alpha never offered again: {}\n--- beta:\n{}",
        a.log(),
        b.log()
    );
    assert!(offers(&b).is_empty(), "{:?}", offers(&b));
    let config = fs::read_to_string(b.home.join("config.toml")).unwrap();
    assert!(config.contains(&folder_id), "{config}");

    // Changing one's mind: accept takes the declined folder, and it syncs.
    let accepted = b.json(&["accept", &folder_id, b.folder.to_str().unwrap()]);
    assert_eq!(accepted["ok"], true);
    fs::write(a.folder.join("after.txt"), b"accepted after all").unwrap();
    assert!(
        wait_until(30, || fs::read(b.folder.join("after.txt")).is_ok()),
        "{}",
        b.log()
    );
    a.json(&["down"]);
    b.json(&["down"]);
}

#[test]
fn errors_name_the_problem_and_exit_non_zero() {
    let tmp = tempfile::tempdir().unwrap();
    let a = Device::new(tmp.path(), "solo", None);
    let out = a.run(&["status"]);
    assert_eq!(out.status.code(), Some(3));
    let out = a.cmd().args(["--json", "status"]).output().unwrap();
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["exit_code"], 3);
    assert!(v["error"].as_str().unwrap().contains("not running"));
    a.json(&["up"]);
    let again = a.json(&["up"]);
    assert_eq!(again["running"], true);
    // Exit codes as README promises: 5 for no such folder, device, offer, conflict or
    // version; 4 for pairing; 1 for other errors.
    for (args, needle, code) in [
        (vec!["accept", "nope", "/tmp/x"], "offered", 5),
        (vec!["decline", "nope"], "offered", 5),
        (
            vec!["resolve", "nothing.txt", "--keep", "local"],
            "not in conflict",
            5,
        ),
        (vec!["share", "/definitely/not/here", "nobody"], "nobody", 5),
        (vec!["pause", "no-such-folder"], "no-such-folder", 5),
        (vec!["restore", "nothing.txt"], "no kept versions", 5),
        (vec!["pair", "not a code"], "not a pairing code", 4),
    ] {
        let out = a.run(&args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(needle), "{args:?}: {err}");
        assert_eq!(out.status.code(), Some(code), "{args:?}: {err}");
    }
    let out = a.run(&["resolve", "x"]);
    assert_eq!(out.status.code(), Some(2), "usage errors exit 2");
    a.json(&["down"]);
}

#[test]
fn completions_and_the_systemd_unit() {
    let tmp = tempfile::tempdir().unwrap();
    let out = Command::new(bin("cairn"))
        .args(["completions", "bash"])
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("cairn"));
    let out = Command::new(bin("cairn"))
        .args(["--json", "service", "install"])
        .env("XDG_CONFIG_HOME", tmp.path())
        .env("CAIRN_HOME", tmp.path().join("home"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let unit = fs::read_to_string(tmp.path().join("systemd/user/cairnd.service")).unwrap();
    assert!(
        unit.contains("ExecStart=")
            && unit.contains("cairnd")
            && unit.contains("WantedBy=default.target"),
        "{unit}"
    );
}

/// A daemon left idle at its default log level does not log its version store's idle
/// collector polls: the collector polls every 200 ms, and iroh-blobs logged each
/// turned-down poll at INFO (five lines a second, for as long as the daemon ran).
#[test]
fn an_idle_daemon_at_the_default_log_level_keeps_its_log_quiet() {
    let tmp = tempfile::tempdir().unwrap();
    let a = Device::new(tmp.path(), "quiet", None);
    let mut up = a.cmd();
    up.env_remove("CAIRN_LOG");
    a.json_with(up, &["up"]);
    assert!(
        wait_until(20, || a.log().contains("daemon_started")),
        "{}",
        a.log()
    );
    std::thread::sleep(std::time::Duration::from_secs(2));
    let log = a.log();
    let polls = log.matches("abort gc run").count();
    assert_eq!(polls, 0, "the collector's idle polls are logged:\n{log}");
    a.json(&["down"]);
}
