//! A device with the default configuration (which names the public DHT's bootstrap nodes,
//! by DNS name and by IP address) and `CAIRN_PRIVATE_NETWORK_ONLY=1` sends nothing outside
//! loopback and private space; and the default listen port is stable across restarts,
//! with a fallback when another process holds it.
//!
//! The device runs in a network namespace this test creates, with a default route through
//! a veth pair to a second namespace (the "sink", which answers nothing), so that a dial to
//! a public address would leave as a packet instead of failing for want of a route. An nft
//! counter in the device's namespace counts every packet sent to an address outside
//! loopback, private, link-local and multicast space; a probe packet sent at the end shows
//! the counter counts. Needs root, iproute2 and nft (`.ci/deps`); without root it says so
//! and passes without running.

use cairn_tests::{CliDevice, ip, netns_exec, wait_until};

/// The device's namespace and the sink behind its default route; removed on drop.
struct Lab {
    ns: String,
    sink: String,
}

impl Lab {
    fn create() -> Result<Lab, String> {
        let tag = std::process::id() % 1_000_000;
        let lab = Lab {
            ns: format!("cairn-pn{tag}"),
            sink: format!("cairn-pn-sink{tag}"),
        };
        ip(&["netns", "add", &lab.ns])?; // fails without root: the test is skipped
        ip(&["netns", "add", &lab.sink])?;
        let (a, b) = (format!("cpa{tag}"), format!("cpb{tag}"));
        ip(&["link", "add", &a, "type", "veth", "peer", "name", &b])?;
        for (ns, dev, addr) in [
            (&lab.ns, &a, "10.78.0.1/24"),
            (&lab.sink, &b, "10.78.0.2/24"),
        ] {
            ip(&["link", "set", dev, "netns", ns])?;
            ip(&["-n", ns, "addr", "add", addr, "dev", dev])?;
            ip(&["-n", ns, "link", "set", dev, "up"])?;
            ip(&["-n", ns, "link", "set", "lo", "up"])?;
        }
        ip(&["-n", &lab.ns, "route", "add", "default", "via", "10.78.0.2"])?;
        Ok(lab)
    }

    /// Runs `cmd` inside the device's namespace.
    fn exec(&self, cmd: &[&str], stdin: Option<&str>) -> String {
        netns_exec(&self.ns, cmd, stdin)
    }

    /// Packets sent to addresses outside loopback, private and multicast space so far.
    fn outside_packets(&self) -> u64 {
        let text = self.exec(
            &["nft", "list", "counter", "inet", "cairn_watch", "outside"],
            None,
        );
        let n = text
            .split_whitespace()
            .skip_while(|w| *w != "packets")
            .nth(1)
            .unwrap_or_else(|| panic!("no packet count in {text}"));
        n.parse().unwrap()
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for ns in [&self.ns, &self.sink] {
            let _ = ip(&["netns", "del", ns]);
        }
    }
}

const WATCH: &str = r#"
table inet cairn_watch {
    counter outside { }
    chain out {
        type filter hook output priority 0; policy accept;
        meta nfproto ipv4 ip daddr != { 10.0.0.0/8, 127.0.0.0/8, 172.16.0.0/12, 192.168.0.0/16, 169.254.0.0/16, 224.0.0.0/4, 255.255.255.255 } counter name "outside"
        meta nfproto ipv6 ip6 daddr != { ::1, fe80::/10, fc00::/7, ff00::/8 } counter name "outside"
    }
}
"#;

/// A device with nothing configured but its name.
fn device(base: &std::path::Path, ns: &str, name: &str) -> CliDevice {
    CliDevice::create(
        base,
        name,
        &format!("[device]\nname = \"{name}\"\n"),
        Some(ns),
    )
}

#[test]
fn with_the_switch_on_a_default_device_dials_nothing_outside_and_keeps_its_port() {
    let lab = match Lab::create() {
        Ok(lab) => lab,
        Err(why) => {
            eprintln!("SKIPPED: cannot build network namespaces here: {why}");
            return;
        }
    };
    lab.exec(&["nft", "-f", "-"], Some(WATCH));
    assert_eq!(lab.outside_packets(), 0);

    let tmp = tempfile::tempdir().unwrap();
    let a = device(tmp.path(), &lab.ns, "alpha");
    a.json(&["up"]);
    // It tried the public bootstrap nodes, by name and by address, and refused both.
    assert!(
        wait_until(20, || {
            let log = a.log();
            log.contains("dial_refused")
                && log.contains("/dnsaddr/bootstrap.libp2p.io")
                && log.contains("/ip4/104.131.131.82/")
        }),
        "no refusals logged:\n{}",
        a.log()
    );
    std::thread::sleep(std::time::Duration::from_secs(3));
    assert_eq!(lab.outside_packets(), 0, "{}", a.log());
    let net = &a.json(&["status"])["network"];
    assert_eq!(net["private_only"], true, "{net}");
    assert_eq!(net["dht_peers"], 0, "no bootstrap node was reached: {net}");

    // The default port, TCP and QUIC.
    let listen = |d: &CliDevice| d.json(&["status"])["listen"].to_string();
    assert!(
        wait_until(10, || listen(&a).contains("/tcp/21900")
            && listen(&a).contains("/udp/21900/quic-v1")),
        "{}",
        listen(&a)
    );
    // A second device on the same machine finds the port taken and falls back.
    let b = device(tmp.path(), &lab.ns, "beta");
    b.json(&["up"]);
    assert!(
        wait_until(10, || b.log().contains("listen_port_taken")),
        "{}",
        b.log()
    );
    assert!(
        wait_until(10, || listen(&b).contains("/tcp/")),
        "{}",
        listen(&b)
    );
    assert!(!listen(&b).contains("/tcp/21900"), "{}", listen(&b));
    // The first one restarts on the same port.
    a.json(&["down"]);
    a.json(&["up"]);
    assert!(
        wait_until(10, || listen(&a).contains("/tcp/21900")),
        "{}",
        listen(&a)
    );
    assert_eq!(lab.outside_packets(), 0, "{}\n{}", a.log(), b.log());
    a.json(&["down"]);
    b.json(&["down"]);

    // The counter counts: one datagram to a documentation address (routed to the sink).
    lab.exec(
        &["bash", "-c", "echo probe > /dev/udp/198.51.100.9/9"],
        None,
    );
    assert!(lab.outside_packets() >= 1, "the counter saw no probe");
}
