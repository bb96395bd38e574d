//! Devices behind NAT routers find, pair with and sync with each other across a lab
//! "internet" with no address given: DHT nodes there are their only bootstrap peers.
//!
//! The lab is made of network namespaces this test creates (never any other address):
//! - `inet`: a bridge, the internet (10.200.0.0/24);
//! - hosts on it, each in its own namespace: two DHT nodes (cairnd with `dht_server`, and
//!   `public_relay`: relaying for anyone with libp2p's limits, as public IPFS nodes do),
//!   and in the second test a device of the group that relays for it (`relay_server`);
//! - two homes, each a namespace behind a router namespace that does NAT (nft masquerade)
//!   and drops what nobody inside asked for, as home routers do. The routers count the
//!   bytes they forward to the other router (direct) and to the relays.
//!
//! 1. `hole_punching`: plain masquerade (the mapping keeps the port). Pairing by code,
//!    sharing and sync both ways; the connection becomes direct (DCUtR) and the bulk of a
//!    file's bytes goes the direct way; both restart and find each other again while the
//!    routers refuse the direct path (hole punching fails, sync goes through the relay);
//!    once the path opens, hole punching is tried again and the connection becomes direct;
//!    a stranger's node on the internet finds no record under either device's id and neither
//!    device in the DHT's routing tables.
//! 2. `relayed`: masquerade with random ports (a NAT that defeats hole punching). Sync
//!    still works through the group's relay and `cairn peers` says `relayed`.
//!
//! Needs root, iproute2 and nft (`.ci/deps`); without root it says so and passes without
//! running.

use std::path::Path;
use std::time::Instant;

use cairn_tests::{CliDevice, ip, netns_exec, read_pair_code, syncs, wait_until};

/// The lab's namespaces; removed on drop (their processes are killed by the devices'
/// drops first).
struct Lab {
    tag: String,
    namespaces: Vec<String>,
    links: usize,
}

/// The internet's bridge address.
const INET: &str = "10.200.0.1";

impl Lab {
    fn create(test: &str) -> Result<Lab, String> {
        let tag = format!("{test}{}", std::process::id() % 100_000);
        let mut lab = Lab {
            tag,
            namespaces: Vec::new(),
            links: 0,
        };
        let inet = lab.ns("inet")?;
        ip(&["-n", &inet, "link", "add", "br0", "type", "bridge"])?;
        ip(&[
            "-n",
            &inet,
            "addr",
            "add",
            &format!("{INET}/24"),
            "dev",
            "br0",
        ])?;
        ip(&["-n", &inet, "link", "set", "br0", "up"])?;
        Ok(lab)
    }

    /// Creates namespace `name` (with loopback up) and returns its full name.
    fn ns(&mut self, name: &str) -> Result<String, String> {
        let full = format!("cn-{}-{name}", self.tag);
        ip(&["netns", "add", &full])?; // fails without root: the test is skipped
        self.namespaces.push(full.clone());
        ip(&["-n", &full, "link", "set", "lo", "up"])?;
        Ok(full)
    }

    /// A veth pair between namespaces `a` and `b`, named `an` in `a` and `bn` in `b`, with
    /// addresses (CIDR) on the `a` side and, unless `None`, the `b` side.
    fn link(&mut self, a: (&str, &str, &str), b: (&str, &str, Option<&str>)) -> Result<(), String> {
        self.links += 1;
        // Created in the root namespace first: named after the lab, so labs running at
        // once do not collide.
        let (ta, tb) = (
            format!("a{}{}", self.tag, self.links),
            format!("b{}{}", self.tag, self.links),
        );
        ip(&["link", "add", &ta, "type", "veth", "peer", "name", &tb])?;
        for (ns, tmp, name) in [(a.0, &ta, a.1), (b.0, &tb, b.1)] {
            ip(&["link", "set", tmp, "netns", ns])?;
            ip(&["-n", ns, "link", "set", tmp, "name", name])?;
        }
        ip(&["-n", a.0, "addr", "add", a.2, "dev", a.1])?;
        if let Some(addr) = b.2 {
            ip(&["-n", b.0, "addr", "add", addr, "dev", b.1])?;
        }
        ip(&["-n", a.0, "link", "set", a.1, "up"])?;
        ip(&["-n", b.0, "link", "set", b.1, "up"])?;
        Ok(())
    }

    /// A host on the internet at 10.200.0.`n`.
    fn host(&mut self, name: &str, n: u8) -> Result<String, String> {
        let ns = self.ns(name)?;
        let inet = self.namespaces[0].clone();
        let port = format!("p{n}");
        self.link(
            (&ns, "eth0", &format!("10.200.0.{n}/24")),
            (&inet, &port, None),
        )?;
        ip(&["-n", &inet, "link", "set", &port, "master", "br0"])?;
        ip(&["-n", &ns, "route", "add", "default", "via", INET])?;
        Ok(ns)
    }

    /// A home: a router at 10.200.0.`n` on the internet doing NAT for 192.168.`k`.0/24,
    /// and the home's namespace at 192.168.`k`.2. `random_ports`: the router maps every
    /// connection to a random port (hole punching cannot work through it).
    /// Returns (router, home).
    fn home(
        &mut self,
        name: &str,
        n: u8,
        k: u8,
        random_ports: bool,
    ) -> Result<(String, String), String> {
        let router = self.host(&format!("r{name}"), n)?;
        let home = self.ns(&format!("h{name}"))?;
        self.link(
            (&home, "eth0", &format!("192.168.{k}.2/24")),
            (&router, "lan", Some(&format!("192.168.{k}.1/24"))),
        )?;
        ip(&[
            "-n",
            &home,
            "route",
            "add",
            "default",
            "via",
            &format!("192.168.{k}.1"),
        ])?;
        netns_exec(&router, &["sysctl", "-qw", "net.ipv4.ip_forward=1"], None);
        let masquerade = if random_ports {
            "masquerade fully-random"
        } else {
            "masquerade"
        };
        let rules = format!(
            r#"
table ip lab {{
    counter direct {{ }}
    counter relayed {{ }}
    chain post {{
        type nat hook postrouting priority 100; policy accept;
        oifname "eth0" {masquerade}
    }}
    chain forward {{
        type filter hook forward priority 0; policy accept;
        iifname "eth0" ct state new drop
        oifname "eth0" ip daddr {{ 10.200.0.11, 10.200.0.12 }} counter name "direct"
        oifname "eth0" ip daddr 10.200.0.2-10.200.0.9 counter name "relayed"
    }}
    chain input {{
        type filter hook input priority 0; policy accept;
        iifname "eth0" ct state new drop
    }}
}}
"#
        );
        netns_exec(&router, &["nft", "-f", "-"], Some(&rules));
        Ok((router, home))
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for ns in self.namespaces.iter().rev() {
            let _ = ip(&["netns", "del", ns]);
        }
    }
}

/// Makes `router` refuse (or again forward) packets between the two homes' routers, at
/// once (TCP reset, ICMP unreachable), as a firewall that rejects would.
fn block_direct(router: &str, on: bool) {
    let rules = if on {
        r#"
table ip block {
    chain forward {
        type filter hook forward priority -10; policy accept;
        oifname "eth0" ip daddr { 10.200.0.11, 10.200.0.12 } meta l4proto tcp reject with tcp reset
        oifname "eth0" ip daddr { 10.200.0.11, 10.200.0.12 } reject
    }
}
"#
    } else {
        "delete table ip block\n"
    };
    netns_exec(router, &["nft", "-f", "-"], Some(rules));
}

/// The time at the start of the first line of `log` that contains `word`.
fn first_time(log: &str, word: &str) -> Option<String> {
    let line = log.lines().find(|l| l.contains(word))?;
    line.split_whitespace().next().map(str::to_string)
}

/// Bytes a router's counter `name` has counted.
fn counted(router: &str, name: &str) -> u64 {
    let text = netns_exec(router, &["nft", "list", "counter", "ip", "lab", name], None);
    let n = text
        .split_whitespace()
        .skip_while(|w| *w != "bytes")
        .nth(1)
        .unwrap_or_else(|| panic!("no byte count in {text}"));
    n.parse().unwrap()
}

/// A DHT node on the internet at 10.200.0.`n`: serves the DHT, relays for anyone with
/// libp2p's limits, and knows its own address (as an always-on node is configured).
fn dht_node(base: &Path, ns: &str, n: u8, bootstrap: &[String]) -> (CliDevice, String) {
    let name = format!("dht{n}");
    let addr = format!("/ip4/10.200.0.{n}/tcp/21900");
    let d = CliDevice::create(
        base,
        &name,
        &format!(
            "[device]\nname = \"{name}\"\n\n[network]\nmdns = false\ndht_server = true\n\
             public_relay = true\nannounce = [\"{addr}\"]\nbootstrap = {}\n",
            toml_list(bootstrap)
        ),
        Some(ns),
    );
    d.json(&["up"]);
    let id = d.json(&["status"])["device_id"]
        .as_str()
        .unwrap()
        .to_string();
    (d, format!("{addr}/p2p/{id}"))
}

fn toml_list(items: &[String]) -> String {
    let quoted: Vec<String> = items.iter().map(|s| format!("\"{s}\"")).collect();
    format!("[{}]", quoted.join(", "))
}

/// A device with the default settings but the lab's bootstrap list (and `extra` lines).
fn device(base: &Path, ns: &str, name: &str, bootstrap: &[String], extra: &str) -> CliDevice {
    CliDevice::create(
        base,
        name,
        &format!(
            "[device]\nname = \"{name}\"\n\n[network]\nbootstrap = {}\n{extra}",
            toml_list(bootstrap)
        ),
        Some(ns),
    )
}

fn id_of(d: &CliDevice) -> String {
    d.json(&["status"])["device_id"]
        .as_str()
        .unwrap()
        .to_string()
}

/// Pairs `joiner` with `inviter` by code alone.
fn pair(inviter: &CliDevice, joiner: &CliDevice, inviter_name: &str) {
    let mut child = inviter.spawn(&["pair"]);
    let code = read_pair_code(&mut child);
    let started = Instant::now();
    let out = joiner.run(&["--json", "pair", &code]);
    assert!(
        out.status.success(),
        "pairing failed: {}\njoiner: {}\ninviter: {}",
        String::from_utf8_lossy(&out.stderr),
        joiner.log(),
        inviter.log()
    );
    let joined: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        joined["name"],
        inviter_name,
        "{joined}\njoiner: {}\ninviter: {}",
        joiner.log(),
        inviter.log()
    );
    assert!(child.wait_with_output().unwrap().status.success());
    eprintln!("nat: {inviter_name} paired in {:?}", started.elapsed());
}

/// Shares `a`'s folder with `b` (named `b_name` on `a`) and waits for `b` to accept it.
fn share(a: &CliDevice, b: &CliDevice, b_name: &str) {
    let shared = a.json(&["share", a.folder.to_str().unwrap(), b_name]);
    let folder = shared["folder"].as_str().unwrap().to_string();
    assert!(
        wait_until(60, || b.json(&["status"])["offers"]
            .as_array()
            .is_some_and(|o| !o.is_empty())),
        "no offer arrived:\n{}\n{}",
        a.log(),
        b.log()
    );
    b.json(&["accept", &folder, b.folder.to_str().unwrap()]);
}

/// How `d` reaches its peer `name`: "direct", "relayed", or "" when not connected.
fn path_to(d: &CliDevice, name: &str) -> String {
    let peers = d.json(&["peers"]);
    let Some(p) = peers
        .as_array()
        .and_then(|ps| ps.iter().find(|p| p["name"] == name))
    else {
        return String::new();
    };
    if p["connected"] != true {
        return String::new();
    }
    p["path"].as_str().unwrap_or("").to_string()
}

fn lab_or_skip(test: &str) -> Option<Lab> {
    match Lab::create(test) {
        Ok(lab) => Some(lab),
        Err(why) => {
            eprintln!("SKIPPED: cannot build network namespaces here: {why}");
            None
        }
    }
}

#[test]
fn behind_nats_devices_pair_by_code_punch_a_hole_sync_directly_and_find_each_other_again() {
    let Some(mut lab) = lab_or_skip("hp") else {
        return;
    };
    let (ns1, ns2) = (lab.host("dht1", 2).unwrap(), lab.host("dht2", 3).unwrap());
    let (ra, ha) = lab.home("a", 11, 1, false).unwrap();
    let (rb, hb) = lab.home("b", 12, 2, false).unwrap();
    let stranger = lab.host("stranger", 5).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let (d1, boot1) = dht_node(tmp.path(), &ns1, 2, &[]);
    let (d2, boot2) = dht_node(tmp.path(), &ns2, 3, std::slice::from_ref(&boot1));
    let boot = vec![boot1, boot2];
    let a = device(tmp.path(), &ha, "alpha", &boot, "");
    let b = device(tmp.path(), &hb, "beta", &boot, "");
    let t0 = Instant::now();
    a.json(&["up"]);
    b.json(&["up"]);
    // Both take a relay reservation on a DHT node (not known to be reachable yet).
    for d in [&a, &b] {
        assert!(
            wait_until(60, || {
                let net = &d.json(&["status"])["network"];
                net["relays"].as_array().is_some_and(|r| !r.is_empty())
            }),
            "no relay reservation:\n{}",
            d.log()
        );
    }

    eprintln!("nat: relays reserved after {:?}", t0.elapsed());
    // Pairing with nothing but the code, across both NATs.
    pair(&a, &b, "alpha");
    share(&a, &b, "beta");
    let t = syncs(&a, &b, "hello.txt", b"from alpha", 90);
    eprintln!("nat: first file in {t:?}");
    syncs(&b, &a, "reply.txt", b"from beta", 90);
    assert!(
        wait_until(60, || path_to(&a, "beta") == "direct"
            && path_to(&b, "alpha") == "direct"),
        "no direct connection: alpha {:?}, beta {:?}\n{}\n{}",
        path_to(&a, "beta"),
        path_to(&b, "alpha"),
        a.log(),
        b.log()
    );
    assert!(
        a.log().contains("hole_punched") || b.log().contains("hole_punched"),
        "direct, but not by hole punching:\n{}\n{}",
        a.log(),
        b.log()
    );
    eprintln!("nat: direct after {:?}", t0.elapsed());
    // AutoNAT: the DHT nodes' dial-backs are dropped by the routers.
    for d in [&a, &b] {
        let net = || d.json(&["status"])["network"].clone();
        assert!(
            wait_until(60, || net()["reachability"] == "behind NAT"),
            "{}\n{}",
            net(),
            d.log()
        );
        assert_eq!(net()["dht_server"], false, "{}", net());
    }
    eprintln!("nat: behind NAT after {:?}", t0.elapsed());

    // The bulk of a file's bytes goes the direct way (counted on alpha's router).
    let before = (counted(&ra, "direct"), counted(&ra, "relayed"));
    let big = cairn_tests::pseudo_random(8 << 20, 7);
    let t = syncs(&a, &b, "big.bin", &big, 90);
    let direct = counted(&ra, "direct") - before.0;
    let relayed = counted(&ra, "relayed") - before.1;
    eprintln!("nat: 8 MiB in {t:?}: {direct} bytes direct, {relayed} through relays");
    assert!(direct > 8 << 20, "only {direct} bytes went direct");
    assert!(relayed < 1 << 20, "{relayed} bytes went through relays");

    // Both restart behind their NATs and find each other again within 30 s, while the
    // direct path between the routers is refused: hole punching fails, and sync goes
    // through the relay.
    for r in [&ra, &rb] {
        block_direct(r, true);
    }
    let logged = (a.log().len(), b.log().len());
    let logs_since = || {
        [
            a.log()[logged.0..].to_string(),
            b.log()[logged.1..].to_string(),
        ]
    };
    let since_restart = || logs_since().concat();
    a.json(&["down"]);
    b.json(&["down"]);
    a.json(&["up"]);
    b.json(&["up"]);
    let restarted = Instant::now();
    assert!(
        wait_until(30, || a.json(&["peers"])[0]["connected"] == true
            && b.json(&["peers"])[0]["connected"] == true),
        "not connected again within 30 s:\n{}\n{}",
        a.log(),
        b.log()
    );
    eprintln!("nat: connected again in {:?}", restarted.elapsed());
    syncs(&b, &a, "after.txt", b"after the restart", 90);
    assert!(
        wait_until(90, || since_restart().contains("hole_punch_failed")),
        "hole punching did not fail with the direct path refused:\n{}",
        since_restart()
    );
    assert_eq!(path_to(&a, "beta"), "relayed", "{}", since_restart());
    // Once the direct path is open again, hole punching is tried again on its own and
    // the connection becomes direct.
    for r in [&ra, &rb] {
        block_direct(r, false);
    }
    let unblocked = Instant::now();
    // Within 90 s: the first try comes 30 s after the relayed connection opened, while
    // the public relay's circuit limit (2 minutes), which also leads to a new connection
    // and a new round of DCUtR, would end it about 115 s after the path opened.
    assert!(
        wait_until(90, || path_to(&a, "beta") == "direct"
            && path_to(&b, "alpha") == "direct"),
        "not direct again: alpha {:?}, beta {:?}\n{}",
        path_to(&a, "beta"),
        path_to(&b, "alpha"),
        since_restart()
    );
    // The first hole punched after the restart came after a try again (log lines start
    // with an RFC 3339 time, which sorts as text).
    let parts = logs_since();
    let first = |word: &str| parts.iter().filter_map(|l| first_time(l, word)).min();
    let (again, punched) = (first("hole_punch_again"), first("hole_punched"));
    assert!(
        again.is_some() && punched.is_some() && again < punched,
        "direct again, but not by hole punching tried again ({again:?}, {punched:?}):\n{}",
        since_restart()
    );
    eprintln!(
        "nat: direct again {:?} after the path opened ({:?} after the restart)",
        unblocked.elapsed(),
        restarted.elapsed()
    );
    syncs(&a, &b, "direct-again.txt", b"direct again", 90);

    // A stranger on the internet who knows both device ids asks the DHT for them.
    let ids = [id_of(&a), id_of(&b)];
    let seen = stranger::probe(&stranger, &boot, &ids);
    assert!(seen.reached_dht, "the stranger's probe reached no DHT node");
    assert_eq!(seen.providers, 0, "provider records under a device id");
    assert_eq!(seen.listed, 0, "a device is in the DHT's routing tables");
    assert_eq!(seen.records, 0, "a record under a device id");
    // The DHT nodes serve until here.
    drop((d1, d2));
}

#[test]
fn behind_nats_that_defeat_hole_punching_devices_sync_through_their_groups_relay() {
    let Some(mut lab) = lab_or_skip("rl") else {
        return;
    };
    let ns1 = lab.host("dht1", 2).unwrap();
    let nsr = lab.host("relay", 4).unwrap();
    let (ra, ha) = lab.home("a", 11, 1, true).unwrap();
    let (_rb, hb) = lab.home("b", 12, 2, true).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let (d1, boot1) = dht_node(tmp.path(), &ns1, 2, &[]);
    let boot = vec![boot1];
    // A device of the group on the internet that relays for it (an always-on box).
    let r = device(tmp.path(), &nsr, "box", &boot, "relay_server = true\n");
    let a = device(tmp.path(), &ha, "alpha", &boot, "");
    let b = device(tmp.path(), &hb, "beta", &boot, "");
    for d in [&r, &a, &b] {
        d.json(&["up"]);
    }
    // AutoNAT confirms the box is reachable (the DHT node dials it back).
    assert!(
        wait_until(60, || r.json(&["status"])["network"]["reachability"]
            == "public"),
        "the box is not found reachable:\n{}",
        r.log()
    );
    pair(&r, &a, "box");
    pair(&r, &b, "box");
    // Each home device now reserves on the box alone.
    let rid = id_of(&r);
    for d in [&a, &b] {
        assert!(
            wait_until(60, || d.json(&["status"])["network"]["relays"]
                == serde_json::json!([rid.clone()])),
            "no reservation on the group's relay: {}\n{}",
            d.json(&["status"])["network"],
            d.log()
        );
    }
    pair(&a, &b, "alpha");
    share(&a, &b, "beta");
    syncs(&a, &b, "hello.txt", b"from alpha", 90);
    syncs(&b, &a, "reply.txt", b"from beta", 90);
    assert_eq!(path_to(&a, "beta"), "relayed", "{}", a.log());
    assert_eq!(path_to(&b, "alpha"), "relayed", "{}", b.log());
    // Sync of a larger file goes through the relay (no limit on the group's relay).
    let before = counted(&ra, "relayed");
    let big = cairn_tests::pseudo_random(4 << 20, 9);
    let t = syncs(&a, &b, "big.bin", &big, 90);
    let relayed = counted(&ra, "relayed") - before;
    eprintln!("nat: 4 MiB through the group's relay in {t:?} ({relayed} bytes)");
    assert!(relayed > 4 << 20, "only {relayed} bytes through the relay");
    // Only the hole punching attempts went the direct way.
    let direct = counted(&ra, "direct");
    assert!(direct < 256 << 10, "{direct} bytes went direct");
    // DCUtR tried and gave up (three attempts, each waiting for its dials).
    assert!(
        wait_until(120, || a.log().contains("hole_punch_failed")
            || b.log().contains("hole_punch_failed")),
        "hole punching was not even tried:\n{}\n{}",
        a.log(),
        b.log()
    );
    let shown = a.run(&["peers"]);
    let text = String::from_utf8_lossy(&shown.stdout);
    assert!(text.contains("relayed"), "{text}");
    drop(d1);
}

/// A stranger's node: a bare Kademlia client on the lab's internet that knows the devices'
/// ids and asks the DHT for anything under them.
mod stranger {
    use std::time::Duration;

    use futures::StreamExt;
    use libp2p::swarm::SwarmEvent;
    use libp2p::{Multiaddr, PeerId, StreamProtocol, kad, multiaddr::Protocol};

    #[derive(Debug, Default)]
    pub struct Seen {
        /// A query got an answer from a DHT node.
        pub reached_dht: bool,
        /// Providers found under the device ids.
        pub providers: usize,
        /// Devices among the closest peers to their own ids.
        pub listed: usize,
        /// Records found under the device ids.
        pub records: usize,
    }

    /// Runs the probe on a thread that has entered namespace `ns` (its sockets live there).
    pub fn probe(ns: &str, bootstrap: &[String], ids: &[String]) -> Seen {
        let ns = ns.to_string();
        let bootstrap = bootstrap.to_vec();
        let ids: Vec<PeerId> = ids.iter().map(|s| s.parse().unwrap()).collect();
        std::thread::spawn(move || {
            let f = std::fs::File::open(format!("/var/run/netns/{ns}")).unwrap();
            use std::os::fd::AsRawFd;
            // SAFETY: setns on this thread only, with a valid namespace file descriptor.
            let rc = unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) };
            assert_eq!(rc, 0, "setns: {}", std::io::Error::last_os_error());
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap()
                .block_on(run(bootstrap, ids))
        })
        .join()
        .unwrap()
    }

    async fn run(bootstrap: Vec<String>, ids: Vec<PeerId>) -> Seen {
        let mut swarm = libp2p::SwarmBuilder::with_new_identity()
            .with_tokio()
            .with_tcp(
                libp2p::tcp::Config::default(),
                libp2p::noise::Config::new,
                libp2p::yamux::Config::default,
            )
            .unwrap()
            .with_behaviour(|key| {
                let id = key.public().to_peer_id();
                let mut config = kad::Config::new(StreamProtocol::new("/ipfs/kad/1.0.0"));
                config.set_query_timeout(Duration::from_secs(10));
                let mut k =
                    kad::Behaviour::with_config(id, kad::store::MemoryStore::new(id), config);
                k.set_mode(Some(kad::Mode::Client));
                k
            })
            .unwrap()
            .build();
        for b in &bootstrap {
            let ma: Multiaddr = b.parse().unwrap();
            let Some(Protocol::P2p(peer)) = ma.iter().last() else {
                panic!("{b}: no peer id");
            };
            swarm.behaviour_mut().add_address(&peer, ma);
        }
        let mut seen = Seen::default();
        let mut queries = std::collections::HashSet::new();
        for id in &ids {
            let key = kad::RecordKey::new(&id.to_bytes());
            queries.insert(swarm.behaviour_mut().get_providers(key.clone()));
            queries.insert(swarm.behaviour_mut().get_record(key));
            queries.insert(swarm.behaviour_mut().get_closest_peers(*id));
        }
        let deadline = tokio::time::sleep(Duration::from_secs(40));
        tokio::pin!(deadline);
        while !queries.is_empty() {
            let event = tokio::select! {
                e = swarm.select_next_some() => e,
                _ = &mut deadline => panic!("the stranger's queries did not end: {seen:?}"),
            };
            let SwarmEvent::Behaviour(kad::Event::OutboundQueryProgressed {
                id,
                result,
                step,
                stats,
                ..
            }) = event
            else {
                continue;
            };
            if stats.num_successes() > 0 {
                seen.reached_dht = true;
            }
            match result {
                kad::QueryResult::GetProviders(Ok(kad::GetProvidersOk::FoundProviders {
                    providers,
                    ..
                })) => seen.providers += providers.len(),
                kad::QueryResult::GetRecord(Ok(kad::GetRecordOk::FoundRecord(_))) => {
                    seen.records += 1
                }
                kad::QueryResult::GetClosestPeers(Ok(ok)) => {
                    seen.listed += ok.peers.iter().filter(|p| ids.contains(&p.peer_id)).count();
                }
                _ => {}
            }
            if step.last {
                queries.remove(&id);
            }
        }
        seen
    }
}
