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

/// The kept versions of `path` on `d`, newest first, as (content id, size).
fn versions(d: &Daemon, path: &str) -> Vec<(String, u64)> {
    json(d, &["history", path])
        .as_array()
        .expect("a list")
        .iter()
        .map(|v| {
            assert_eq!(v["path"], path);
            assert_eq!(v["available"], true, "{v}");
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
