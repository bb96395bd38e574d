//! Two fresh devices on one LAN, as a user sets them up: nothing configured about each other,
//! default network settings (mDNS on, listening on every interface). They find each other by
//! mDNS, pair with a short code, share a folder and sync.
//!
//! The LAN is two network namespaces this test creates, joined by a veth pair (10.77.0.1 and
//! 10.77.0.2, addresses that exist only inside them); everything, the CLI included, runs
//! inside them through `ip netns exec`. Needs root and iproute2; elsewhere it says so and
//! passes without running.

use std::fs;
use std::path::Path;

use cairn_tests::{CliDevice, ip, read_pair_code, wait_until};

/// Two namespaces and the cable between them; removed on drop.
struct Lan {
    names: [String; 2],
}

impl Lan {
    fn create() -> Result<Lan, String> {
        let tag = std::process::id() % 1_000_000;
        let lan = Lan {
            names: [format!("cairn-lan-a{tag}"), format!("cairn-lan-b{tag}")],
        };
        let veth = [format!("cla{tag}"), format!("clb{tag}")];
        for ns in &lan.names {
            ip(&["netns", "add", ns])?; // fails without root: the test is skipped
        }
        ip(&[
            "link", "add", &veth[0], "type", "veth", "peer", "name", &veth[1],
        ])?;
        for (i, (ns, dev)) in lan.names.iter().zip(&veth).enumerate() {
            let addr = format!("10.77.0.{}/24", i + 1);
            ip(&["link", "set", dev, "netns", ns])?;
            ip(&["-n", ns, "addr", "add", &addr, "dev", dev])?;
            ip(&["-n", ns, "link", "set", dev, "up"])?;
            ip(&["-n", ns, "link", "set", "lo", "up"])?;
            // mDNS goes to 224.0.0.251; a namespace has no route there until given one.
            ip(&["-n", ns, "route", "add", "224.0.0.0/4", "dev", dev])?;
        }
        Ok(lan)
    }
}

impl Drop for Lan {
    fn drop(&mut self) {
        for ns in &self.names {
            let _ = ip(&["netns", "del", ns]);
        }
    }
}

/// A fresh device inside namespace `ns`: a name and an empty bootstrap list are
/// configured (the default list names the public DHT, which a test never contacts), so
/// every other network setting is the default a new user gets.
fn device(base: &Path, ns: &str, name: &str) -> CliDevice {
    CliDevice::create(
        base,
        name,
        &format!("[device]\nname = \"{name}\"\n\n[network]\nbootstrap = []\n"),
        Some(ns),
    )
}

#[test]
fn fresh_devices_on_a_lan_find_each_other_by_mdns_pair_and_sync() {
    let lan = match Lan::create() {
        Ok(lan) => lan,
        Err(why) => {
            eprintln!("SKIPPED: cannot build a LAN of network namespaces here: {why}");
            return;
        }
    };
    let tmp = tempfile::tempdir().unwrap();
    let a = device(tmp.path(), &lan.names[0], "alpha");
    let b = device(tmp.path(), &lan.names[1], "beta");
    a.json(&["up"]);
    b.json(&["up"]);

    // Each daemon listens on its own LAN address (defaults: every interface).
    let listen = |d: &CliDevice| d.json(&["status"])["listen"].to_string();
    assert!(
        wait_until(10, || listen(&a).contains("10.77.0.1")),
        "{}",
        listen(&a)
    );

    // Pair with the code alone: beta has no address of alpha, and no bootstrap peer.
    let mut inviter = a.spawn(&["pair"]);
    let code = read_pair_code(&mut inviter);
    let joined = b.json(&["pair", &code]);
    assert_eq!(joined["name"], "alpha", "{joined}");
    let out = inviter.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "inviter: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        wait_until(20, || a.json(&["peers"])[0]["connected"] == true),
        "alpha: {}\nbeta: {}",
        a.log(),
        b.log()
    );

    // Share, accept, sync over the LAN.
    let shared = a.json(&["share", a.folder.to_str().unwrap(), "beta"]);
    let folder = shared["folder"].as_str().unwrap().to_string();
    assert!(wait_until(20, || b.json(&["status"])["offers"]
        .as_array()
        .is_some_and(|o| !o.is_empty())));
    b.json(&["accept", &folder, b.folder.to_str().unwrap()]);
    fs::write(a.folder.join("over-the-lan.txt"), b"found by mdns").unwrap();
    assert!(
        wait_until(30, || fs::read(b.folder.join("over-the-lan.txt"))
            .ok()
            .as_deref()
            == Some(&b"found by mdns"[..])),
        "alpha: {}\nbeta: {}",
        a.log(),
        b.log()
    );

    // After both restart, they find each other again with nothing but mDNS.
    a.json(&["down"]);
    b.json(&["down"]);
    a.json(&["up"]);
    b.json(&["up"]);
    assert!(
        wait_until(30, || a.json(&["peers"])[0]["connected"] == true),
        "no reconnect after restart:\nalpha: {}\nbeta: {}",
        a.log(),
        b.log()
    );
    fs::write(b.folder.join("back.txt"), b"and back").unwrap();
    assert!(wait_until(30, || fs::read(a.folder.join("back.txt"))
        .ok()
        .as_deref()
        == Some(&b"and back"[..])));
    a.json(&["down"]);
    b.json(&["down"]);
}
