//! `cairn history` and `cairn restore` against real daemons: versions replaced or deleted by
//! a peer are listed, survive a restart, come back on every device, and a restore loses
//! nothing itself.

use std::fs;
use std::path::Path;

use cairn_tests::{Daemon, DaemonSpec, cairn, mesh, mesh_with, wait_until};
use serde_json::Value;

fn run(d: &Daemon, args: &[&str]) -> std::process::Output {
    cairn(&d.home).args(args).output().expect("cairn runs")
}

fn json(d: &Daemon, args: &[&str]) -> Value {
    let out = cairn(&d.home)
        .arg("--json")
        .args(args)
        .output()
        .expect("cairn runs");
    assert!(
        out.status.success(),
        "cairn {args:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        d.log()
    );
    serde_json::from_slice(&out.stdout).expect("JSON output")
}

/// Runs `cairn ARGS` on `d`, expects it to fail, and its error to mention `why`.
#[track_caller]
fn refused(d: &Daemon, args: &[&str], why: &str) {
    let out = run(d, args);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "cairn {args:?} succeeded");
    assert!(stderr.contains(why), "cairn {args:?}: {stderr}");
}

fn read(p: &Path) -> Option<Vec<u8>> {
    fs::read(p).ok()
}

/// The versions of `path` whose bytes `d` holds, newest first, as (content id, size)
/// (group history also lists versions only other devices hold, or none any more).
fn versions(d: &Daemon, path: &str) -> Vec<(String, u64)> {
    json(d, &["history", path])
        .as_array()
        .expect("a list")
        .iter()
        .filter(|v| {
            assert_eq!(v["path"], path);
            v["available"] == true
        })
        .map(|v| {
            (
                v["content"].as_str().unwrap().to_string(),
                v["size"].as_u64().unwrap(),
            )
        })
        .collect()
}

#[test]
fn kept_versions_are_listed_and_a_restore_syncs_everywhere_losing_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    // Versions seconds apart: no thinning if the test outlives the first pruning.
    let mut daemons = mesh_with(tmp.path(), &["a", "b"], DaemonSpec::keeping_all_versions);
    let (v1, v2) = (b"first version of the plan".to_vec(), b"second".to_vec());
    let gone = b"a file that will be deleted".to_vec();
    {
        let (a, b) = (&daemons[0], &daemons[1]);
        fs::create_dir_all(a.folder.join("docs")).unwrap();
        fs::write(a.folder.join("docs/plan.txt"), &v1).unwrap();
        fs::write(a.folder.join("gone.txt"), &gone).unwrap();
        assert!(
            wait_until(30, || read(&b.folder.join("docs/plan.txt"))
                == Some(v1.clone())
                && read(&b.folder.join("gone.txt")) == Some(gone.clone())),
            "first versions did not arrive:\n{}",
            b.log()
        );
        // a replaces one file and deletes the other: b keeps what it had.
        fs::write(a.folder.join("docs/plan.txt"), &v2).unwrap();
        fs::remove_file(a.folder.join("gone.txt")).unwrap();
        assert!(
            wait_until(30, || read(&b.folder.join("docs/plan.txt"))
                == Some(v2.clone())
                && !b.folder.join("gone.txt").exists()),
            "changes did not arrive:\n{}",
            b.log()
        );
        assert!(
            wait_until(10, || json(b, &["history"]).as_array().unwrap().len() == 2),
            "b's history: {}",
            json(b, &["history"])
        );
    }

    // The history survives a restart of the daemon.
    daemons[1].restart();
    let (a, b) = (&daemons[0], &daemons[1]);
    let plan = versions(b, "docs/plan.txt");
    assert_eq!(plan.len(), 1, "{plan:?}");
    assert_eq!(plan[0].1, v1.len() as u64);
    // A path filter that names a directory lists what is under it.
    assert_eq!(json(b, &["history", "docs"]).as_array().unwrap().len(), 1);
    let text = run(b, &["history"]);
    assert!(text.status.success());
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(
        text.contains("docs/plan.txt")
            && text.contains("gone.txt")
            && text.contains(&plan[0].0[..12]),
        "{text}"
    );

    // Restore v1 on b by a prefix of its id: b and then a have v1 again, and both keep v2.
    let restored = json(
        b,
        &["restore", "docs/plan.txt", "--version", &plan[0].0[..10]],
    );
    assert_eq!(restored["content"], plan[0].0.as_str());
    assert!(restored["kept_current"].is_string(), "{restored}");
    assert_eq!(read(&b.folder.join("docs/plan.txt")), Some(v1.clone()));
    assert!(
        wait_until(30, || read(&a.folder.join("docs/plan.txt"))
            == Some(v1.clone())),
        "the restore did not sync to a:\n{}\n{}",
        a.log(),
        b.log()
    );
    let kept_v2 = restored["kept_current"].as_str().unwrap().to_string();
    assert!(
        versions(b, "docs/plan.txt")
            .iter()
            .any(|(c, s)| *c == kept_v2 && *s == v2.len() as u64),
        "b did not keep the version its restore replaced"
    );
    assert!(
        wait_until(10, || versions(a, "docs/plan.txt")
            .iter()
            .any(|(c, _)| *c == kept_v2)),
        "a did not keep the version the restore replaced: {}",
        json(a, &["history"])
    );

    // A deleted file comes back under another name (the newest version by default).
    let out = json(b, &["restore", "gone.txt", "--to", "back/gone-again.txt"]);
    assert_eq!(out["path"], "back/gone-again.txt");
    assert!(
        wait_until(30, || read(&a.folder.join("back/gone-again.txt"))
            == Some(gone.clone())),
        "the restored deleted file did not sync to a:\n{}",
        b.log()
    );
    assert!(!a.folder.join("gone.txt").exists());
    // Restoring over a file that differs keeps that file's version first.
    fs::write(b.folder.join("back/other.txt"), b"something else").unwrap();
    let over = json(b, &["restore", "gone.txt", "--to", "back/other.txt"]);
    assert_eq!(read(&b.folder.join("back/other.txt")), Some(gone.clone()));
    let other = versions(b, "back/other.txt");
    assert_eq!(other.len(), 1, "{other:?}");
    assert_eq!(over["kept_current"], other[0].0.as_str());
    assert_eq!(other[0].1, b"something else".len() as u64);
    // Restoring the version a file already has changes nothing and keeps nothing.
    let same = json(b, &["restore", "gone.txt", "--to", "back/other.txt"]);
    assert!(same["kept_current"].is_null(), "{same}");
    assert_eq!(versions(b, "back/other.txt").len(), 1);

    // Bad requests fail clearly and write nothing.
    refused(b, &["restore", "gone.txt", "--to", "../escaped.txt"], "..");
    assert!(!b.folder.parent().unwrap().join("escaped.txt").exists());

    let outside = tmp.path().join("outside");
    fs::create_dir(&outside).unwrap();
    std::os::unix::fs::symlink(&outside, b.folder.join("link")).unwrap();
    refused(b, &["restore", "gone.txt", "--to", "link/x.txt"], "symlink");
    assert_eq!(fs::read_dir(&outside).unwrap().count(), 0);

    refused(
        b,
        &["restore", "gone.txt", "--to", "link"],
        "symlink or special file",
    );
    assert!(
        fs::symlink_metadata(b.folder.join("link"))
            .unwrap()
            .file_type()
            .is_symlink()
    );

    refused(
        b,
        &["restore", "docs/plan.txt", "--version", "ffffffffffff"],
        "no version of docs/plan.txt starts with",
    );
    refused(b, &["restore", "never-existed.txt"], "no kept versions");

    // In a paused folder a restore happens at once, says so, and syncs on resume.
    json(b, &["pause"]);
    let paused = json(
        b,
        &["restore", "docs/plan.txt", "--version", &kept_v2[..12]],
    );
    assert!(
        paused["note"]
            .as_str()
            .is_some_and(|n| n.contains("paused")),
        "{paused}"
    );
    assert_eq!(read(&b.folder.join("docs/plan.txt")), Some(v2.clone()));
    std::thread::sleep(std::time::Duration::from_millis(1500));
    assert_eq!(
        read(&a.folder.join("docs/plan.txt")),
        Some(v1.clone()),
        "a paused folder sent its restore"
    );
    json(b, &["resume"]);
    assert!(
        wait_until(30, || read(&a.folder.join("docs/plan.txt"))
            == Some(v2.clone())),
        "the restore did not sync after resume:\n{}",
        b.log()
    );
}

/// blake3 and length of some bytes, for assertion messages.
fn digest(b: &Option<Vec<u8>>) -> String {
    b.as_ref().map_or("none".into(), |b| {
        format!("{} ({} B)", &blake3::hash(b).to_hex()[..12], b.len())
    })
}

/// Versions of a large file are kept in the version store with their chunks shared,
/// survive a restart, and `cairn history --prune` drops the oldest when what they hold is
/// over the folder's `max_size_mib`, leaving a version that still restores.
#[test]
fn kept_versions_share_chunks_and_a_size_limit_prunes_the_oldest() {
    let tmp = tempfile::tempdir().unwrap();
    let mut daemons = mesh(tmp.path(), &["a", "b"]);
    // Three 3 MiB versions, each a small edit of the one before: kept, they share most
    // chunks; the first and last differ in two places.
    let v1 = cairn_tests::pseudo_random(3 << 20, 77);
    let mut v2 = v1.clone();
    v2[1_000_000..1_000_050].fill(1);
    let mut v3 = v2.clone();
    v3[2_500_000..2_500_050].fill(2);
    {
        let (a, b) = (&daemons[0], &daemons[1]);
        for v in [&v1, &v2, &v3] {
            fs::write(a.folder.join("big.bin"), v).unwrap();
            assert!(
                wait_until(30, || read(&b.folder.join("big.bin")).as_ref() == Some(v)),
                "a version did not arrive:\n{}",
                b.log()
            );
        }
        assert!(
            wait_until(10, || versions(b, "big.bin").len() == 2),
            "b's history: {}",
            json(b, &["history"])
        );
    }
    // Kept versions are staged as hard links first and imported into the store in the
    // background: wait for that (the staging directory empties).
    let imported = |d: &Daemon| {
        wait_until(30, || {
            fs::read_dir(d.home.join("history"))
                .map(|mut e| e.next().is_none())
                .unwrap_or(true)
        })
    };
    assert!(
        imported(&daemons[1]),
        "b's staged versions were not imported"
    );
    // The store holds the two kept versions in about one file's worth (they share chunks).
    let store_bytes = |d: &Daemon| -> u64 {
        let mut total = 0;
        let mut stack = vec![d.home.join("versions")];
        while let Some(dir) = stack.pop() {
            for e in fs::read_dir(&dir).unwrap().flatten() {
                let m = e.metadata().unwrap();
                if m.is_dir() {
                    stack.push(e.path());
                } else {
                    total += m.len();
                }
            }
        }
        total
    };
    let held = store_bytes(&daemons[1]);
    assert!(
        held >= v1.len() as u64 && held < (v1.len() as u64) * 3 / 2,
        "two kept versions of a 3 MiB file take {held} bytes"
    );
    // A limit of 3 MiB, without thinning (which would drop v2 for being within 30 s of
    // v1, as Syncthing's staggered rule does): the oldest goes when the daemon is asked to
    // prune.
    {
        let b = &mut daemons[1];
        let config = b.home.join("config.toml");
        let mut text = fs::read_to_string(&config).unwrap();
        text += "\n[folders.versions]\nstaggered = false\nmax_size_mib = 3\n";
        fs::write(&config, text).unwrap();
        b.restart();
    }
    let b = &daemons[1];
    let before = versions(b, "big.bin");
    assert_eq!(before.len(), 2, "kept across the restart: {before:?}");
    let pruned = json(b, &["history", "--prune"]);
    assert_eq!(pruned["dropped"], 1, "{pruned}");
    assert_eq!(pruned["kept"], 1, "{pruned}");
    assert!(
        pruned["bytes_after"].as_u64().unwrap() < pruned["bytes_before"].as_u64().unwrap(),
        "{pruned}"
    );
    let after = versions(b, "big.bin");
    assert_eq!(after.len(), 1, "{after:?}");
    // The newer one stays (v2): it still restores, and syncs back to a.
    let restored = json(b, &["restore", "big.bin", "--version", &after[0].0[..12]]);
    assert_eq!(restored["content"], after[0].0.as_str());
    let now = read(&b.folder.join("big.bin"));
    assert!(
        now.as_ref() == Some(&v2),
        "b has {}, v1 {}, v2 {}, v3 {}: {restored}",
        digest(&now),
        digest(&Some(v1.clone())),
        digest(&Some(v2.clone())),
        digest(&Some(v3.clone()))
    );
    let a = &daemons[0];
    assert!(
        wait_until(30, || read(&a.folder.join("big.bin")) == Some(v2.clone())),
        "the restore did not sync to a:\n{}",
        a.log()
    );
    // A damaged chunk in the store: a restore of its version is refused and changes
    // nothing. v3 (kept by the restore) differs from v2 in the chunk around 2,500,000.
    let v3_id = restored["kept_current"].as_str().unwrap().to_string();
    assert!(imported(b), "v3 was not imported into the store");
    let data = b.home.join("versions/data");
    let chunks = |bytes: &[u8]| -> Vec<String> {
        let chunker = cairn_core::Chunker::new(cairn_core::ChunkerParams::V1_DEFAULT).unwrap();
        chunker
            .chunk_slice(bytes)
            .map(|(_, c)| blake3::hash(c).to_hex().to_string())
            .collect()
    };
    let of_v2 = chunks(&v2);
    let mut damaged = 0;
    for hex in chunks(&v3).into_iter().filter(|h| !of_v2.contains(h)) {
        // Chunks over 16 KiB are files of the store (smaller ones live in its database).
        let file = data.join(format!("{hex}.data"));
        if let Ok(mut bytes) = fs::read(&file) {
            bytes[100] ^= 0xff;
            fs::write(&file, &bytes).unwrap();
            damaged += 1;
        }
    }
    assert!(
        damaged > 0,
        "found no chunk only v3 has in {}",
        data.display()
    );
    refused(
        b,
        &["restore", "big.bin", "--version", &v3_id[..12]],
        "damaged",
    );
    assert_eq!(read(&b.folder.join("big.bin")), Some(v2.clone()));
    let leftovers: Vec<_> = fs::read_dir(&b.folder)
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(".cairn-tmp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    // `cairn status` counts them again after the restore kept v3: two kept versions.
    assert!(
        wait_until(20, || json(b, &["status"])["versions"]["kept"] == 2),
        "{}",
        json(b, &["status"])["versions"]
    );
    assert!(
        json(b, &["status"])["versions"]["store_bytes"]
            .as_u64()
            .unwrap()
            > 0
    );
}

/// The rows of `cairn history PATH` on `d` (JSON).
fn rows(d: &Daemon, args: &[&str]) -> Vec<Value> {
    json(d, args).as_array().expect("a list").clone()
}

/// Group history: a version replaced on one device is listed there with the device that
/// holds it; restoring it fetches it from that device and syncs it everywhere, keeping the
/// version it replaces on both; with that device stopped, a version only it holds is
/// listed as held offline and a restore says so and changes nothing.
#[test]
fn group_history_names_holders_restores_from_a_peer_and_says_when_the_holder_is_offline() {
    let tmp = tempfile::tempdir().unwrap();
    let mut daemons = mesh_with(tmp.path(), &["a", "b"], DaemonSpec::keeping_all_versions);
    let (v1, v2) = (b"plan, first".to_vec(), b"plan, second and longer".to_vec());
    let (w1, w2) = (b"notes one".to_vec(), b"notes two!".to_vec());
    {
        let (a, b) = (&daemons[0], &daemons[1]);
        fs::write(a.folder.join("f.txt"), &v1).unwrap();
        fs::write(a.folder.join("g.txt"), &w1).unwrap();
        assert!(
            wait_until(30, || read(&b.folder.join("f.txt")) == Some(v1.clone())
                && read(&b.folder.join("g.txt")) == Some(w1.clone())),
            "first versions did not arrive:\n{}",
            b.log()
        );
        // a overwrites both locally: a keeps nothing of its own edit, b keeps v1 and w1.
        fs::write(a.folder.join("f.txt"), &v2).unwrap();
        fs::write(a.folder.join("g.txt"), &w2).unwrap();
        assert!(
            wait_until(30, || read(&b.folder.join("f.txt")) == Some(v2.clone())
                && read(&b.folder.join("g.txt")) == Some(w2.clone())),
            "edits did not arrive:\n{}",
            b.log()
        );
    }
    let (a, b) = (&daemons[0], &daemons[1]);
    let v1_id = id_by_size(b, "f.txt", v1.len());
    // On a, v1 is listed, held by b (online), not by a.
    let listed = rows(a, &["history", "f.txt"]);
    let row = listed
        .iter()
        .find(|r| r["content"] == v1_id.as_str())
        .unwrap_or_else(|| panic!("v1 not listed on a: {listed:?}"));
    assert_eq!(row["available"], false, "{row}");
    assert_eq!(row["size"], v1.len() as u64);
    let holders = row["holders"].as_array().unwrap();
    assert!(
        holders
            .iter()
            .any(|h| h["name"] == "b" && h["online"] == true && h["this_device"] == false),
        "{row}"
    );
    assert!(
        listed.iter().all(|r| r["size"] != v2.len() as u64),
        "the current version is listed as history: {listed:?}"
    );

    // Restored on a from b: both have v1 again, and both keep v2.
    let restored = json(a, &["restore", "f.txt", "--version", &v1_id[..10]]);
    assert_eq!(restored["content"], v1_id.as_str(), "{restored}");
    assert!(
        restored["note"]
            .as_str()
            .is_some_and(|n| n.contains("from b")),
        "{restored}"
    );
    assert!(
        wait_until(30, || read(&a.folder.join("f.txt")) == Some(v1.clone())
            && read(&b.folder.join("f.txt")) == Some(v1.clone())),
        "the restore from b did not land on both:\n{}\n{}",
        a.log(),
        b.log()
    );
    let v2_id = restored["kept_current"].as_str().unwrap().to_string();
    for d in [a, b] {
        assert!(
            wait_until(10, || rows(d, &["history", "f.txt"])
                .iter()
                .any(|r| r["content"] == v2_id.as_str() && r["available"] == true)),
            "{} does not keep the version the restore replaced: {:?}",
            d.name,
            rows(d, &["history", "f.txt"])
        );
    }

    // b stops: w1, which only b holds, is listed as held offline; its restore says so.
    let w1_id = id_by_size(b, "g.txt", w1.len());
    daemons[1].kill();
    let a = &daemons[0];
    assert!(
        wait_until(20, || a.status()["peers"][0]["connected"] == false),
        "a still sees b connected"
    );
    let listed = rows(a, &["history", "g.txt"]);
    let row = listed
        .iter()
        .find(|r| r["content"] == w1_id.as_str())
        .unwrap_or_else(|| panic!("w1 not listed: {listed:?}"));
    assert!(
        row["holders"]
            .as_array()
            .unwrap()
            .iter()
            .any(|h| h["name"] == "b" && h["online"] == false),
        "{row}"
    );
    let text = String::from_utf8_lossy(&run(a, &["history", "g.txt"]).stdout).to_string();
    assert!(text.contains("b (offline)"), "{text}");
    refused(
        a,
        &["restore", "g.txt", "--version", &w1_id[..12]],
        "held only by b, which is offline",
    );
    std::thread::sleep(std::time::Duration::from_millis(500));
    assert_eq!(
        read(&a.folder.join("g.txt")),
        Some(w2.clone()),
        "a changed g.txt"
    );
}

/// The content id of the version of `path` of `size` bytes that `d` lists.
fn id_by_size(d: &Daemon, path: &str, size: usize) -> String {
    let listed = rows(d, &["history", path]);
    listed
        .iter()
        .find(|r| r["size"] == size as u64)
        .and_then(|r| r["content"].as_str())
        .unwrap_or_else(|| {
            panic!(
                "no version of {path} of {size} bytes on {}: {listed:?}",
                d.name
            )
        })
        .to_string()
}

/// sha256 of every file under `root`, by relative path (a file that goes while it is
/// read, as a pull's temp file does, is left out: the caller waits for a stable state).
fn tree_digest(root: &Path) -> std::collections::BTreeMap<String, String> {
    use sha2::Digest;
    let mut out = std::collections::BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = fs::read_dir(&dir) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            let name = p.strip_prefix(root).unwrap().to_string_lossy().to_string();
            if name.starts_with(".cairn") || name.contains("/.cairn") {
                continue;
            }
            if p.is_dir() {
                stack.push(p);
            } else if let Ok(bytes) = fs::read(&p) {
                out.insert(name, format!("{:x}", sha2::Sha256::digest(&bytes)));
            }
        }
    }
    out
}

/// Rewind: a directory of 1,000 files deleted and other files edited on a; a rewind on b
/// to a moment before puts back exactly what was there (sha256 of every file, on both
/// devices), a dry run first lists it and changes nothing, a file created since stays
/// (and goes with --exact), and what the rewind replaced is in history.
#[test]
fn a_rewind_on_another_device_puts_back_a_deleted_directory_and_edits_exactly() {
    let tmp = tempfile::tempdir().unwrap();
    let daemons = mesh_with(tmp.path(), &["a", "b"], DaemonSpec::keeping_all_versions);
    let (a, b) = (&daemons[0], &daemons[1]);
    fs::create_dir_all(a.folder.join("photos")).unwrap();
    fs::create_dir_all(a.folder.join("notes")).unwrap();
    for i in 0..1000u64 {
        fs::write(
            a.folder.join(format!("photos/p{i:04}.jpg")),
            cairn_tests::pseudo_random(200 + (i as usize % 300), i),
        )
        .unwrap();
    }
    for i in 0..20u64 {
        fs::write(
            a.folder.join(format!("notes/n{i}.txt")),
            format!("note {i}, as it was"),
        )
        .unwrap();
    }
    let before = tree_digest(&a.folder);
    assert_eq!(before.len(), 1020);
    assert!(
        wait_until(60, || tree_digest(&b.folder) == before),
        "the first sync did not complete:\n{}",
        b.log()
    );
    std::thread::sleep(std::time::Duration::from_millis(1500));
    let at = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    std::thread::sleep(std::time::Duration::from_millis(1500));
    // On a: the directory goes, every note is edited, a new file appears.
    fs::remove_dir_all(a.folder.join("photos")).unwrap();
    for i in 0..20u64 {
        fs::write(
            a.folder.join(format!("notes/n{i}.txt")),
            format!("note {i}, edited badly"),
        )
        .unwrap();
    }
    fs::write(a.folder.join("new.txt"), b"created after").unwrap();
    let damaged = tree_digest(&a.folder);
    assert!(
        wait_until(60, || tree_digest(&b.folder) == damaged),
        "the damage did not sync to b:\n{}",
        b.log()
    );

    let at_arg = format!("@{at}");
    let dry = json(
        b,
        &[
            "restore",
            "--folder",
            "shared",
            "--at",
            &at_arg,
            "--dry-run",
        ],
    );
    let steps = dry["steps"].as_array().unwrap();
    let count = |action: &str| steps.iter().filter(|s| s["action"] == action).count();
    // 1,000 files and their directory recreated, 20 notes restored, one file kept.
    assert_eq!(
        (
            count("recreate"),
            count("restore"),
            count("keep"),
            count("remove")
        ),
        (1001, 20, 1, 0),
        "{dry}"
    );
    assert!(steps.iter().all(|s| s["available"] == true), "{dry}");
    std::thread::sleep(std::time::Duration::from_millis(500));
    assert_eq!(
        tree_digest(&b.folder),
        damaged,
        "a dry run changed the folder"
    );

    let done = json(b, &["restore", "--folder", "shared", "--at", &at_arg]);
    assert_eq!(done["dry_run"], false, "{done}");
    let mut expected = before.clone();
    expected.insert("new.txt".into(), damaged["new.txt"].clone());
    for d in [b, a] {
        assert!(
            wait_until(60, || tree_digest(&d.folder) == expected),
            "{} is not back at the moment (sha256 of every file):\n{}",
            d.name,
            d.log()
        );
    }
    // What the rewind replaced (the edited notes) is in history on both.
    for d in [a, b] {
        let edited = rows(d, &["history", "notes/n3.txt"]);
        assert!(
            edited.iter().any(|r| r["size"] == "note 3, edited badly".len() as u64
                && r["available"] == true),
            "{}: {edited:?}",
            d.name
        );
    }
    // --exact removes what was created since; it is kept in history.
    json(
        b,
        &["restore", "--folder", "shared", "--at", &at_arg, "--exact"],
    );
    for d in [a, b] {
        assert!(
            wait_until(30, || tree_digest(&d.folder) == before),
            "{}: the exact rewind left {:?}",
            d.name,
            tree_digest(&d.folder)
                .keys()
                .filter(|k| !before.contains_key(*k))
                .collect::<Vec<_>>()
        );
    }
    assert!(
        rows(b, &["history", "new.txt"])
            .iter()
            .any(|r| r["available"] == true),
        "the removed file is not in history"
    );
}
