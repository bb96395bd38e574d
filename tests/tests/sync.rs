//! Real `cairnd` processes on loopback syncing a folder.

use std::fs;
use std::path::Path;

use cairn_tests::{DaemonSpec, pseudo_random, wait_until};

fn same_file(a: &Path, b: &Path) -> bool {
    match (fs::read(a), fs::read(b)) {
        (Ok(x), Ok(y)) => x == y,
        _ => false,
    }
}

#[test]
fn two_daemons_converge_on_every_kind_of_change() {
    let tmp = tempfile::tempdir().unwrap();
    let a = DaemonSpec::new(tmp.path(), "a");
    let b = DaemonSpec::new(tmp.path(), "b");
    let b = b.start(&[a.peer()]);
    let a = a.start(&[b.peer()]);
    assert!(
        wait_until(20, || a.status()["peers"][0]["connected"] == true),
        "peers never connected:\n{}\n{}",
        a.log(),
        b.log()
    );

    // Create (with a new directory).
    fs::create_dir_all(a.folder.join("docs/deep")).unwrap();
    fs::write(a.folder.join("docs/deep/hello.txt"), b"hello from a").unwrap();
    let big = pseudo_random(3_000_000, 1);
    fs::write(a.folder.join("big.bin"), &big).unwrap();
    assert!(
        wait_until(20, || same_file(
            &a.folder.join("docs/deep/hello.txt"),
            &b.folder.join("docs/deep/hello.txt")
        ) && same_file(
            &a.folder.join("big.bin"),
            &b.folder.join("big.bin")
        )),
        "create did not arrive:\n{}\n{}",
        a.log(),
        b.log()
    );

    // Edit on the other side.
    fs::write(b.folder.join("docs/deep/hello.txt"), b"edited on b").unwrap();
    assert!(wait_until(20, || fs::read(
        a.folder.join("docs/deep/hello.txt")
    )
    .ok()
    .as_deref()
        == Some(&b"edited on b"[..])));

    // Rename of a large file moves no chunk data.
    let received_before = a.metric("cairn_dedup_hits_total");
    let bytes_before: f64 = b.metric(&format!(
        "cairn_bytes_received_total{{peer=\"{}\"}}",
        a.peer_id
    ));
    fs::rename(
        a.folder.join("big.bin"),
        a.folder.join("docs/big-renamed.bin"),
    )
    .unwrap();
    assert!(wait_until(20, || same_file(
        &a.folder.join("docs/big-renamed.bin"),
        &b.folder.join("docs/big-renamed.bin")
    ) && !b.folder.join("big.bin").exists()));
    let bytes_after: f64 = b.metric(&format!(
        "cairn_bytes_received_total{{peer=\"{}\"}}",
        a.peer_id
    ));
    assert_eq!(
        bytes_after, bytes_before,
        "a rename must not transfer chunk data"
    );
    let _ = received_before;

    // Delete, and mkdir of an empty directory.
    fs::remove_file(a.folder.join("docs/deep/hello.txt")).unwrap();
    fs::create_dir(a.folder.join("empty-dir")).unwrap();
    assert!(wait_until(20, || !b
        .folder
        .join("docs/deep/hello.txt")
        .exists()
        && b.folder.join("empty-dir").is_dir()));
    // The deleted version was kept in b's history.
    let out = cairn_tests::cairn(&b.home)
        .args(["--json", "history", "docs/deep/hello.txt"])
        .output()
        .expect("cairn runs");
    let list: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert!(
        list.as_array().is_some_and(|l| l
            .iter()
            .any(|v| v["available"] == serde_json::Value::Bool(true))),
        "no history on b: {list}\n{}",
        b.log()
    );

    // No temp file is left behind.
    let leftovers: Vec<_> = walk(&b.folder)
        .into_iter()
        .filter(|p| p.contains(".cairn-tmp."))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

fn walk(root: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p.clone());
            }
            out.push(p.to_string_lossy().into_owned());
        }
    }
    out
}

#[test]
fn peers_with_no_known_address_find_each_other_through_the_dht() {
    use cairn_tests::PeerRef;
    let tmp = tempfile::tempdir().unwrap();
    // A third node is only a DHT bootstrap node: it shares nothing and trusts nobody.
    let boot = DaemonSpec::new(tmp.path(), "boot");
    let boot_addr = format!("/ip4/127.0.0.1/tcp/{}/p2p/{}", boot.port, boot.peer_id);
    let _boot = boot.start(&[]);
    let a = DaemonSpec::new(tmp.path(), "a");
    let b = DaemonSpec::new(tmp.path(), "b");
    // a and b trust each other by id only: no address.
    let no_addr = |r: PeerRef| PeerRef { port: 0, ..r };
    let (ra, rb) = (no_addr(a.peer()), no_addr(b.peer()));
    let a = a.start_with(&[rb], std::slice::from_ref(&boot_addr));
    let b = b.start_with(&[ra], &[boot_addr]);
    fs::write(a.folder.join("found.txt"), b"via the DHT").unwrap();
    assert!(
        wait_until(40, || fs::read(b.folder.join("found.txt")).ok().as_deref()
            == Some(&b"via the DHT"[..])),
        "a:\n{}\nb:\n{}",
        a.log(),
        b.log()
    );
}
