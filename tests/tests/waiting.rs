//! Nothing stuck, with real daemons: a file whose only copy is on a device that is off
//! waits (and `cairn status` says for whom), everything else still syncs, and the file
//! arrives when that device is back.

use std::fs;

use cairn_tests::{DaemonSpec, PeerRef, cairn, pseudo_random, wait_until};

fn waiting_paths(d: &cairn_tests::Daemon) -> Vec<(String, String)> {
    d.status()["folders"][0]["waiting"]
        .as_array()
        .map(|w| {
            w.iter()
                .map(|x| {
                    (
                        x["path"].as_str().unwrap_or("").to_string(),
                        x["device"].as_str().unwrap_or("").to_string(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn a_version_only_an_offline_device_has_waits_names_it_and_arrives_when_it_is_back() {
    let tmp = tempfile::tempdir().unwrap();
    let specs: Vec<DaemonSpec> = ["a", "b", "c"]
        .iter()
        .map(|n| DaemonSpec::new(tmp.path(), n))
        .collect();
    let refs: Vec<PeerRef> = specs.iter().map(DaemonSpec::peer).collect();
    let others = |i: usize| -> Vec<PeerRef> {
        refs.iter()
            .enumerate()
            .filter(|(j, _)| *j != i)
            .map(|(_, r)| r.clone())
            .collect()
    };
    let mut specs = specs.into_iter();
    let (sa, sb, sc) = (
        specs.next().unwrap(),
        specs.next().unwrap(),
        specs.next().unwrap(),
    );
    let (b_home, b_folder) = (sb.home.clone(), sb.folder.clone());
    let mut a = sa.start(&others(0));
    // c only sends: it learns of a's file but never fetches its bytes.
    let mut c = sc.start(&others(2));
    let config = c.home.join("config.toml");
    let mut text = fs::read_to_string(&config).unwrap();
    text.push_str("type = \"send-only\"\n");
    fs::write(&config, text).unwrap();
    c.restart();
    assert!(wait_until(30, || c.status()["peers"]
        .as_array()
        .is_some_and(|p| p.iter().any(|p| p["connected"] == true))));

    let meta_before = c.metric("cairn_meta_bytes_received_total");
    fs::write(a.folder.join("report.pdf"), pseudo_random(200_000, 9)).unwrap();
    assert!(
        wait_until(20, || c.metric("cairn_meta_bytes_received_total")
            > meta_before),
        "c never heard of a's file:\n{}",
        c.log()
    );
    std::thread::sleep(std::time::Duration::from_millis(500));
    a.kill();

    // b starts while a is off: it hears of report.pdf from c, which does not have it.
    let b = sb.start(&others(1));
    assert_eq!(b.home, b_home);
    let waits = wait_until(30, || {
        waiting_paths(&b) == vec![("report.pdf".to_string(), "a".to_string())]
    });
    assert!(waits, "{:#}\n{}", b.status(), b.log());
    let folder = &b.status()["folders"][0];
    assert_eq!(folder["state"], "waiting", "{folder:#}");
    assert_eq!(folder["in_sync"], false);
    assert!(
        folder["last_error"].is_null(),
        "waiting is not an error: {folder:#}"
    );
    let out = cairn(&b_home).arg("status").output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("waiting for a: report.pdf"),
        "cairn status says:\n{text}"
    );

    // Everything else still syncs meanwhile.
    fs::write(c.folder.join("notes.txt"), b"from c").unwrap();
    assert!(
        wait_until(20, || fs::read(b_folder.join("notes.txt")).ok().as_deref()
            == Some(&b"from c"[..])),
        "{}",
        b.log()
    );
    assert!(!b_folder.join("report.pdf").exists());

    // a comes back: the file arrives and nothing waits any more.
    a.restart();
    let arrived = wait_until(30, || {
        fs::read(b_folder.join("report.pdf")).ok() == Some(pseudo_random(200_000, 9))
            && waiting_paths(&b).is_empty()
            && b.status()["folders"][0]["in_sync"] == true
    });
    assert!(arrived, "{:#}\n{}", b.status(), b.log());
}
