//! Devices that share no LAN and remember no address of each other find each other through
//! a DHT: pairing by code (the joiner has only the code), then, after both restart on new
//! ports, under their rendezvous keys, and sync.
//!
//! Three real daemons on loopback: a DHT server (`dht_server = true`, the stand-in for the
//! public DHT) and two devices that use it as their only bootstrap peer, with mDNS off and
//! the DHT in client mode (as a device behind NAT is); each announces its own address, as
//! a device with a forwarded port would.

use std::fs;

use cairn_tests::{CliDevice, DaemonSpec, free_port, read_pair_code, syncs, wait_until};

fn config(name: &str, port: u16, bootstrap: &str) -> String {
    format!(
        "[device]\nname = \"{name}\"\n\n[network]\nlisten = [\"/ip4/127.0.0.1/tcp/{port}\"]\n\
         announce = [\"/ip4/127.0.0.1/tcp/{port}\"]\nmdns = false\nbootstrap = [\"{bootstrap}\"]\n\
         dht_server = false\n"
    )
}

/// Moves a stopped device to `to` (its listen and announced address): the address its
/// peer remembers is stale from then on.
fn move_port(d: &CliDevice, from: u16, to: u16) {
    let path = d.home.join("config.toml");
    let text = fs::read_to_string(&path).unwrap();
    let mine = format!("/ip4/127.0.0.1/tcp/{from}\"");
    assert_eq!(text.matches(&mine).count(), 2, "{text}");
    fs::write(
        &path,
        text.replace(&mine, &format!("/ip4/127.0.0.1/tcp/{to}\"")),
    )
    .unwrap();
}

#[test]
fn devices_pair_by_code_and_find_each_other_again_by_rendezvous_on_the_dht() {
    let t0 = std::time::Instant::now();
    let tmp = tempfile::tempdir().unwrap();
    let server = DaemonSpec::new(tmp.path(), "dht").start(&[]);
    eprintln!("server up after {:?}", t0.elapsed());
    let boot = format!(
        "/ip4/127.0.0.1/tcp/{}/p2p/{}",
        server.peer().port,
        server.peer().peer_id
    );
    let (pa, pb) = (free_port(), free_port());
    let a = CliDevice::create(tmp.path(), "alpha", &config("alpha", pa, &boot), None);
    let b = CliDevice::create(tmp.path(), "beta", &config("beta", pb, &boot), None);
    a.json(&["up"]);
    b.json(&["up"]);

    // Pairing with nothing but the code: beta finds alpha's invitation on the DHT.
    let mut inviter = a.spawn(&["pair"]);
    let code = read_pair_code(&mut inviter);
    let started = std::time::Instant::now();
    let joined = b.json(&["pair", &code]);
    eprintln!("paired in {:?}", started.elapsed());
    assert_eq!(joined["name"], "alpha", "{joined}\n{}", b.log());
    assert!(inviter.wait_with_output().unwrap().status.success());
    for d in [&a, &b] {
        let text = fs::read_to_string(d.home.join("config.toml")).unwrap();
        assert!(text.contains("rendezvous = "), "no secret kept:\n{text}");
    }
    let shared = a.json(&["share", a.folder.to_str().unwrap(), "beta"]);
    let folder = shared["folder"].as_str().unwrap().to_string();
    assert!(
        wait_until(30, || b.json(&["status"])["offers"]
            .as_array()
            .is_some_and(|o| !o.is_empty())),
        "{}",
        b.log()
    );
    b.json(&["accept", &folder, b.folder.to_str().unwrap()]);
    eprintln!("shared after {:?}", started.elapsed());
    syncs(&a, &b, "first.txt", b"before the move", 40);

    // Both stop and come back on new ports: what each remembers of the other is stale,
    // there is no mDNS, and a DHT client is in no routing table. Only the rendezvous
    // records lead them to each other.
    eprintln!("first file after {:?}", started.elapsed());
    a.json(&["down"]);
    b.json(&["down"]);
    eprintln!("both down after {:?}", started.elapsed());
    let (pa2, pb2) = (free_port(), free_port());
    move_port(&a, pa, pa2);
    move_port(&b, pb, pb2);
    let since = (a.log().len(), b.log().len());
    a.json(&["up"]);
    b.json(&["up"]);
    eprintln!("both up after {:?}", started.elapsed());
    let restarted = std::time::Instant::now();
    assert!(
        wait_until(60, || a.json(&["peers"])[0]["connected"] == true),
        "no reconnection:\nalpha: {}\nbeta: {}",
        a.log(),
        b.log()
    );
    assert!(
        a.log()[since.0..].contains("found_by_rendezvous")
            || b.log()[since.1..].contains("found_by_rendezvous"),
        "connected, but not by rendezvous:\nalpha: {}\nbeta: {}",
        a.log(),
        b.log()
    );
    eprintln!("found again in {:?}", restarted.elapsed());
    // Each side says how it reached the other: the one that looked the other up says
    // "rendezvous", the other "inbound"; both direct.
    let how: Vec<String> = [&a, &b]
        .iter()
        .map(|d| {
            let p = &d.json(&["peers"])[0];
            assert_eq!(p["path"], "direct", "{p}");
            p["found_by"].as_str().unwrap_or("").to_string()
        })
        .collect();
    assert!(how.contains(&"rendezvous".to_string()), "{how:?}");
    let net = || a.json(&["status"])["network"].clone();
    assert!(
        wait_until(10, || net()["dht_peers"].as_u64().unwrap_or(0) >= 1),
        "the DHT server is not counted: {}",
        net()
    );
    let net = net();
    assert_eq!(net["dht_server"], false, "{net}");
    assert_eq!(net["private_only"], true, "{net}");
    syncs(&b, &a, "second.txt", b"after the move", 40);
    eprintln!("synced after {:?}", restarted.elapsed());
    a.json(&["down"]);
    b.json(&["down"]);
    eprintln!("done after {:?}", t0.elapsed());
}
