//! `cairn scan` driven as a user would: the real binary, a real folder, a real index file.

use std::fs;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use cairn_tests::{bin, cairn, pseudo_random};
use serde_json::Value;

fn scan_json(home: &Path, folder: &Path) -> Value {
    let out = cairn(home)
        .arg("scan")
        .arg(folder)
        .arg("--json")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "scan failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("--json prints JSON")
}

fn change_list(report: &Value) -> Vec<(String, String)> {
    report["changes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["change"].as_str().unwrap().to_string(),
                c["path"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

#[test]
fn scan_json_has_the_documented_fields_and_reports_changes() {
    let tmp = tempfile::tempdir().unwrap();
    let (home, folder) = (tmp.path().join("home"), tmp.path().join("docs"));
    fs::create_dir_all(folder.join("sub")).unwrap();
    let data = pseudo_random(700_000, 1);
    fs::write(folder.join("a.bin"), &data).unwrap();
    fs::write(folder.join("sub/copy.bin"), &data).unwrap();
    fs::write(folder.join("note.txt"), b"hello").unwrap();

    let r = scan_json(&home, &folder);
    for field in [
        "folder",
        "root",
        "totals",
        "dedup_ratio",
        "read_files",
        "read_bytes",
        "seconds",
        "read_mib_per_s",
        "added",
        "modified",
        "deleted",
        "changes",
        "issues",
    ] {
        assert!(r.get(field).is_some(), "missing field {field}");
    }
    for field in [
        "files",
        "dirs",
        "symlinks",
        "bytes",
        "chunks",
        "unique_chunks",
        "unique_bytes",
    ] {
        assert!(r["totals"].get(field).is_some(), "missing totals.{field}");
    }
    assert_eq!(r["totals"]["files"], 3);
    assert_eq!(r["totals"]["bytes"], 1_400_005);
    assert_eq!(r["totals"]["unique_bytes"], 700_005);
    assert!(r["dedup_ratio"].as_f64().unwrap() > 1.99);
    assert_eq!(r["added"], 4);

    let again = scan_json(&home, &folder);
    assert_eq!(again["read_files"], 0);
    assert_eq!(again["changes"].as_array().unwrap().len(), 0);
    assert_eq!(again["folder"], r["folder"], "the same folder keeps its id");

    fs::write(folder.join("note.txt"), b"hello, edited").unwrap();
    fs::remove_file(folder.join("sub/copy.bin")).unwrap();
    fs::write(folder.join("new.txt"), b"new").unwrap();
    let after = scan_json(&home, &folder);
    assert_eq!(
        change_list(&after),
        vec![
            ("added".to_string(), "new.txt".to_string()),
            ("modified".to_string(), "note.txt".to_string()),
            ("deleted".to_string(), "sub/copy.bin".to_string()),
        ]
    );
}

#[test]
fn human_output_names_the_figures() {
    let tmp = tempfile::tempdir().unwrap();
    let folder = tmp.path().join("f");
    fs::create_dir(&folder).unwrap();
    fs::write(folder.join("x"), b"x").unwrap();
    let out = cairn(&tmp.path().join("home"))
        .arg("scan")
        .arg(&folder)
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    for word in [
        "files", "bytes", "chunks", "unique", "dedup", "read", "changes", "+ x",
    ] {
        assert!(text.contains(word), "{word:?} missing from:\n{text}");
    }
}

#[test]
fn a_missing_folder_is_a_clear_error() {
    let tmp = tempfile::tempdir().unwrap();
    let out = cairn(&tmp.path().join("home"))
        .arg("scan")
        .arg(tmp.path().join("nope"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("nope") && err.contains("error"), "{err}");
}

fn wait_killed(mut child: std::process::Child, after: Duration) -> bool {
    let deadline = Instant::now() + after;
    while Instant::now() < deadline {
        if child.try_wait().unwrap().is_some() {
            return false; // finished before we could kill it
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let _ = child.kill(); // SIGKILL, by PID
    let _ = child.wait();
    true
}

#[test]
fn killing_a_scan_midway_leaves_a_usable_index() {
    let tmp = tempfile::tempdir().unwrap();
    let folder = tmp.path().join("data");
    for d in 0..20 {
        fs::create_dir_all(folder.join(format!("d{d}"))).unwrap();
        for f in 0..150 {
            let len = 1024 + ((d * 150 + f) * 7919) % (96 * 1024);
            fs::write(
                folder.join(format!("d{d}/f{f}")),
                pseudo_random(len, (d * 1000 + f) as u64),
            )
            .unwrap();
        }
    }
    let reference = scan_json(&tmp.path().join("fresh"), &folder);

    let mut killed_midway = 0;
    for (attempt, delay_ms) in [40u64, 120, 300].into_iter().enumerate() {
        let home = tmp.path().join(format!("killed{attempt}"));
        let child = Command::new(bin("cairn"))
            .env("CAIRN_HOME", &home)
            .arg("scan")
            .arg(&folder)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        if wait_killed(child, Duration::from_millis(delay_ms)) {
            killed_midway += 1;
        }
        // The next scan opens the index the killed one left behind and completes it.
        let resumed = scan_json(&home, &folder);
        assert_eq!(resumed["totals"], reference["totals"], "attempt {attempt}");
        assert!(resumed["issues"].as_array().unwrap().is_empty());
        let finished = scan_json(&home, &folder);
        assert_eq!(
            finished["read_files"], 0,
            "attempt {attempt}: nothing left to read"
        );
        assert!(finished["changes"].as_array().unwrap().is_empty());
    }
    assert!(
        killed_midway > 0,
        "no scan was slow enough to be killed midway"
    );
}

#[test]
fn unreadable_files_are_reported_and_skipped() {
    // Root reads everything, so run the scan as `nobody` with one file closed to it.
    if !cairn_tests::can_run_as(65534) {
        eprintln!("cannot switch users here (not root, or no setpriv); skipping");
        return;
    }
    let tmp = tempfile::Builder::new()
        .prefix("cairn-perm")
        .tempdir_in("/tmp")
        .unwrap();
    let (home, folder) = (tmp.path().join("home"), tmp.path().join("f"));
    fs::create_dir_all(&folder).unwrap();
    fs::create_dir_all(&home).unwrap();
    fs::write(folder.join("open.txt"), b"readable").unwrap();
    fs::write(folder.join("closed.txt"), b"secret").unwrap();
    fs::create_dir(folder.join("closed-dir")).unwrap();
    fs::write(folder.join("closed-dir/inner"), b"inner").unwrap();
    let chmod = |p: &Path, mode: u32| {
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(p, fs::Permissions::from_mode(mode)).unwrap();
    };
    chmod(tmp.path(), 0o755);
    chmod(&home, 0o777);
    chmod(&folder, 0o755);
    chmod(&folder.join("open.txt"), 0o644);
    chmod(&folder.join("closed.txt"), 0o000);
    chmod(&folder.join("closed-dir"), 0o000);

    let out: Output = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(bin("cairn"))
        .arg("scan")
        .arg(&folder)
        .arg("--json")
        .env("CAIRN_HOME", &home)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r: Value = serde_json::from_slice(&out.stdout).unwrap();
    let issues: Vec<&str> = r["issues"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["path"].as_str().unwrap())
        .collect();
    assert!(issues.contains(&"closed.txt"), "{issues:?}");
    assert!(issues.contains(&"closed-dir"), "{issues:?}");
    assert_eq!(r["totals"]["files"], 1, "only open.txt is indexed");
}
