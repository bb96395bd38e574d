//! `CAIRN_PRIVATE_NETWORK_ONLY=1`: the daemon dials nothing outside loopback and private
//! address space.
//!
//! The default configuration names the public DHT's bootstrap nodes, and any peer may tell
//! the daemon of more addresses (identify, the DHT, AutoNAT). Tests, benchmarks and CI run
//! on machines that may reach only loopback and network namespaces they build, so they set
//! this switch. It wraps the daemon's whole transport (below DNS): a DNS name is never
//! resolved, and an IP address outside the ranges below is never dialled; each refused
//! address is logged once (`dial_refused`). Relayed addresses go through the relay's own
//! connection, which was dialled here first.
//!
//! Switch or not, the guard never dials this device's own addresses ([`is_own`]): every
//! device listens on 127.0.0.1 at the same default port, so a peer's loopback address
//! (learnt from identify, the DHT, a relay or remembered) leads back here, and a dial that
//! reaches this device fails as a whole on the wrong peer id, whatever other addresses it
//! was trying. The same goes for a remembered LAN address that is now this device's own.

use std::collections::HashSet;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::pin::Pin;
use std::task::{Context, Poll};

use libp2p::core::transport::{DialOpts, ListenerId, TransportError, TransportEvent};
use libp2p::multiaddr::Protocol;
use libp2p::{Multiaddr, Transport};

/// The environment variable that turns the switch on (`1`).
pub const PRIVATE_NETWORK_ONLY: &str = "CAIRN_PRIVATE_NETWORK_ONLY";

/// Whether the switch is on in this process's environment.
pub fn switch_on() -> bool {
    std::env::var(PRIVATE_NETWORK_ONLY).is_ok_and(|v| v == "1")
}

/// Whether `addr` may be dialled with the switch on: an IP address (v4 or v6) in loopback,
/// private (RFC 1918, unique local), link-local, shared (100.64/10), benchmarking
/// (198.18/15) or documentation space (where test labs put their "internet"). Never a
/// DNS name, never a public address.
pub fn allowed(addr: &Multiaddr) -> bool {
    match addr.iter().next() {
        Some(Protocol::Ip4(a)) => private_v4(a),
        Some(Protocol::Ip6(a)) => private_v6(a),
        _ => false,
    }
}

fn private_v4(a: Ipv4Addr) -> bool {
    let [o0, o1, o2, _] = a.octets();
    a.is_loopback()
        || a.is_private()
        || a.is_link_local()
        || (o0 == 100 && (o1 & 0xc0) == 64)
        || (o0 == 198 && (o1 & 0xfe) == 18)
        || (o0, o1, o2) == (192, 0, 2)
        || (o0, o1, o2) == (198, 51, 100)
        || (o0, o1, o2) == (203, 0, 113)
}

fn private_v6(a: Ipv6Addr) -> bool {
    let s = a.segments();
    a.is_loopback()
        || (s[0] & 0xfe00) == 0xfc00
        || (s[0] & 0xffc0) == 0xfe80
        || (s[0], s[1]) == (0x2001, 0x0db8)
        || a.to_ipv4_mapped().is_some_and(private_v4)
}

/// A transport that, when `on`, refuses to dial what [`allowed`] refuses; and never dials
/// its own addresses.
pub struct Guard<T> {
    inner: T,
    on: bool,
    logged: HashSet<Multiaddr>,
    /// The addresses this transport listens at.
    own: HashSet<Multiaddr>,
}

impl<T> Guard<T> {
    pub fn new(inner: T, on: bool) -> Self {
        Guard {
            inner,
            on,
            logged: HashSet::new(),
            own: HashSet::new(),
        }
    }
}

/// Whether `addr` is a loopback address (of this host, whoever says it).
pub fn is_loopback(addr: &Multiaddr) -> bool {
    match addr.iter().next() {
        Some(Protocol::Ip4(ip)) => ip.is_loopback(),
        Some(Protocol::Ip6(ip)) => ip.is_loopback(),
        _ => false,
    }
}

/// (UDP?, port) of `addr`.
fn port_of(addr: &Multiaddr) -> Option<(bool, u16)> {
    addr.iter().find_map(|p| match p {
        Protocol::Tcp(n) => Some((false, n)),
        Protocol::Udp(n) => Some((true, n)),
        _ => None,
    })
}

/// Whether `addr` is this device's own, given the addresses it listens at: one of them,
/// or a loopback address on the port of a loopback one (any 127.x reaches this host).
pub fn is_own(addr: &Multiaddr, listening: &HashSet<Multiaddr>) -> bool {
    let bare: Multiaddr = addr
        .iter()
        .filter(|p| !matches!(p, Protocol::P2p(_)))
        .collect();
    listening.contains(&bare)
        || (is_loopback(addr)
            && port_of(addr).is_some_and(|port| {
                listening
                    .iter()
                    .any(|l| is_loopback(l) && port_of(l) == Some(port))
            }))
}

impl<T: Transport + Unpin> Transport for Guard<T> {
    type Output = T::Output;
    type Error = T::Error;
    type ListenerUpgrade = T::ListenerUpgrade;
    type Dial = T::Dial;

    fn listen_on(
        &mut self,
        id: ListenerId,
        addr: Multiaddr,
    ) -> Result<(), TransportError<Self::Error>> {
        self.inner.listen_on(id, addr)
    }

    fn remove_listener(&mut self, id: ListenerId) -> bool {
        self.inner.remove_listener(id)
    }

    fn dial(
        &mut self,
        addr: Multiaddr,
        opts: DialOpts,
    ) -> Result<Self::Dial, TransportError<Self::Error>> {
        if self.on && !allowed(&addr) {
            if self.logged.len() < 1024 && self.logged.insert(addr.clone()) {
                tracing::info!(address = %addr, "dial_refused private_network_only");
            }
            return Err(TransportError::MultiaddrNotSupported(addr));
        }
        if is_own(&addr, &self.own) {
            tracing::debug!(address = %addr, "dial_refused own_address");
            return Err(TransportError::MultiaddrNotSupported(addr));
        }
        self.inner.dial(addr, opts)
    }

    fn poll(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<TransportEvent<Self::ListenerUpgrade, Self::Error>> {
        let event = Pin::new(&mut self.inner).poll(cx);
        match &event {
            Poll::Ready(TransportEvent::NewAddress { listen_addr, .. }) => {
                self.own.insert(listen_addr.clone());
            }
            Poll::Ready(TransportEvent::AddressExpired { listen_addr, .. }) => {
                self.own.remove(listen_addr);
            }
            _ => {}
        }
        event
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_addresses_are_those_listened_at_and_loopback_on_own_ports() {
        let listening: HashSet<Multiaddr> = [
            "/ip4/192.168.1.2/tcp/21900",
            "/ip4/127.0.0.1/tcp/21900",
            "/ip4/127.0.0.1/udp/21900/quic-v1",
        ]
        .iter()
        .map(|a| a.parse().unwrap())
        .collect();
        let own = |a: &str| is_own(&a.parse().unwrap(), &listening);
        assert!(own("/ip4/192.168.1.2/tcp/21900"));
        assert!(own(&format!(
            "/ip4/192.168.1.2/tcp/21900/p2p/{}",
            libp2p::PeerId::random()
        )));
        assert!(own("/ip4/127.0.0.1/udp/21900/quic-v1"));
        assert!(own("/ip4/127.0.0.2/tcp/21900"), "any 127.x is this host");
        assert!(
            !own("/ip4/127.0.0.1/tcp/41000"),
            "another daemon on this host"
        );
        assert!(!own("/ip4/192.168.2.2/tcp/21900"));
        assert!(
            !own("/ip4/127.0.0.1/udp/41000/quic-v1"),
            "UDP and TCP ports are told apart"
        );
    }

    #[test]
    fn only_loopback_and_private_space_may_be_dialled() {
        let yes = [
            "/ip4/127.0.0.1/tcp/1",
            "/ip4/127.8.9.1/udp/1/quic-v1",
            "/ip4/10.77.0.2/tcp/1",
            "/ip4/172.16.0.1/tcp/1",
            "/ip4/172.31.255.1/tcp/1",
            "/ip4/192.168.1.2/tcp/1",
            "/ip4/169.254.1.1/tcp/1",
            "/ip4/100.64.0.1/tcp/1",
            "/ip4/100.127.255.1/tcp/1",
            "/ip4/198.18.0.1/tcp/1",
            "/ip4/198.19.2.3/tcp/1",
            "/ip4/192.0.2.7/tcp/1",
            "/ip4/198.51.100.7/tcp/1",
            "/ip4/203.0.113.7/tcp/1",
            "/ip6/::1/tcp/1",
            "/ip6/fd00::1/tcp/1",
            "/ip6/fe80::1/tcp/1",
            "/ip6/2001:db8::1/tcp/1",
            "/ip6/::ffff:10.0.0.1/tcp/1",
        ];
        let no = [
            "/ip4/104.131.131.82/tcp/4001",
            "/ip4/8.8.8.8/udp/53/quic-v1",
            "/ip4/172.32.0.1/tcp/1",
            "/ip4/100.128.0.1/tcp/1",
            "/ip4/192.0.3.1/tcp/1",
            "/ip4/198.20.0.1/tcp/1",
            "/ip6/2a00:1450::1/tcp/1",
            "/ip6/::ffff:8.8.8.8/tcp/1",
            "/dnsaddr/bootstrap.libp2p.io",
            "/dns4/localhost/tcp/1",
            "/dns/example.org/tcp/1",
        ];
        for a in yes {
            assert!(allowed(&a.parse().unwrap()), "{a} refused");
        }
        for a in no {
            assert!(!allowed(&a.parse().unwrap()), "{a} allowed");
        }
    }
}
