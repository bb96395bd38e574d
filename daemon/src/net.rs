//! The libp2p side: transports, discovery and cairn's two request-response protocols.
//!
//! TCP and QUIC (Noise + Yamux on TCP), DNS, identify, ping, mDNS (optional), Kademlia (the
//! public DHT's protocol, a client unless reachable or told to serve), relay client, DCUtR
//! and AutoNAT, all under the private-network guard ([`crate::private_net`]). cairn's
//! protocols carry opaque frames: the messages themselves are `cairn_core::wire`.

use std::collections::{HashMap, HashSet};
use std::io;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use futures::{AsyncReadExt, AsyncWriteExt};
use libp2p::core::Endpoint;
use libp2p::core::transport::PortUse;
use libp2p::swarm::behaviour::toggle::Toggle;
use libp2p::swarm::behaviour::{ConnectionClosed, ConnectionEstablished};
use libp2p::swarm::derive_prelude::Either;
use libp2p::swarm::{
    ConnectionDenied, ConnectionId, FromSwarm, NetworkBehaviour, THandler, THandlerInEvent,
    THandlerOutEvent, ToSwarm, dummy,
};
use libp2p::{
    Multiaddr, PeerId, StreamProtocol, Swarm, autonat, connection_limits, dcutr, identify,
    identity::Keypair, kad, mdns, noise, ping, relay, request_response, tcp, yamux,
};
use tokio::sync::Semaphore;

use crate::peer_limits::PeerLimits;

/// Frames of one cairn protocol: a u32 length and that many bytes, bounded.
///
/// A length over the protocol's limit is refused before anything is allocated. Frames over
/// [`BIG_FRAME`] bytes first take their length from a byte budget shared by every
/// connection of the protocol (a frame larger than the budget takes all of it), so that
/// peers together cannot make the daemon allocate more than the budget for large frames
/// being received; then the frame is read into a buffer of its final size.
#[derive(Clone)]
pub struct FrameCodec {
    max_request: usize,
    max_response: usize,
    budget: Option<(Arc<Semaphore>, usize)>,
    /// Answers are read into [`FRAMES`]' buffers (the blocks protocol, whose answers go
    /// back there: [`pooled`]).
    pool_responses: bool,
}

/// Frames up to this size are read without asking the budget.
pub const BIG_FRAME: usize = 256 << 10;

/// Buffers of large received frames, kept for the next frame (issue #16).
///
/// A frame is read into initialised memory (`AsyncRead` takes `&mut [u8]`), so a fresh
/// buffer is zeroed first: on a 1 GiB pull that zeroing was 5-8% of the receiver's samples,
/// and buffers handed back to jemalloc were purged and faulted in again. A frame given to
/// [`pooled`] comes back here when its last chunk is dropped; the next large frame reuses it
/// and zeroes only what it needs beyond the old frame's length. Only the blocks protocol's
/// answers use it (the only frames handed back). It keeps at most [`POOLED_BYTES`], and
/// nothing once no frame was taken for [`FRAMES_IDLE`] ([`release_idle_frames`]).
pub struct FramePool {
    inner: Mutex<PoolInner>,
}

struct PoolInner {
    free: Vec<Vec<u8>>,
    used: Option<std::time::Instant>,
}

/// Bytes of large frames' buffers kept at most: the frame budget's worth.
pub const POOLED_BYTES: usize = FRAME_BUDGET;
/// How long the pool keeps buffers after the last frame taken from it.
pub const FRAMES_IDLE: Duration = Duration::from_secs(2);

/// The daemon's pool, which [`read_frame`] takes from.
pub static FRAMES: FramePool = FramePool::new();

impl FramePool {
    pub const fn new() -> Self {
        FramePool {
            inner: Mutex::new(PoolInner {
                free: Vec::new(),
                used: None,
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, PoolInner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A buffer of `len` initialised bytes to read a frame of at most `max` bytes into.
    pub fn take(&self, len: usize, max: usize) -> Vec<u8> {
        if len <= BIG_FRAME {
            return crate::read_buffer(len);
        }
        let reused = {
            let mut pool = self.lock();
            pool.used = Some(std::time::Instant::now());
            let fits = (0..pool.free.len())
                .filter(|&i| pool.free[i].capacity() >= len)
                .min_by_key(|&i| pool.free[i].capacity());
            fits.map(|i| pool.free.swap_remove(i))
        };
        let mut buf = reused.unwrap_or_else(|| {
            // Room for answers a little larger than this one (their sizes vary with the
            // chunks they carry), so a reused buffer does not grow by copying.
            let room = (len + len / 8).next_multiple_of(1 << 20);
            Vec::with_capacity(room.min(max).max(len))
        });
        // Only bytes past the buffer's last length are zeroed.
        buf.resize(len, 0);
        buf
    }

    /// Keeps `buf` for a later frame, if it is a large frame's and there is room.
    pub fn give(&self, buf: Vec<u8>) {
        if buf.capacity() <= BIG_FRAME {
            return;
        }
        let mut pool = self.lock();
        let kept: usize = pool.free.iter().map(Vec::capacity).sum();
        if kept + buf.capacity() <= POOLED_BYTES {
            pool.free.push(buf);
        }
    }

    /// Frees the kept buffers when no frame was taken for [`FRAMES_IDLE`]; returns how
    /// many bytes were freed.
    pub fn release_idle(&self, now: std::time::Instant) -> usize {
        let free = {
            let mut pool = self.lock();
            match pool.used {
                Some(used) if now.saturating_duration_since(used) >= FRAMES_IDLE => {
                    std::mem::take(&mut pool.free)
                }
                _ => return 0,
            }
        };
        free.iter().map(Vec::capacity).sum()
    }

    /// Buffers kept now.
    #[cfg(test)]
    fn kept(&self) -> usize {
        self.lock().free.len()
    }

    /// `frame` as shared bytes whose buffer comes back here once the last slice of it is
    /// dropped.
    pub fn share(&'static self, frame: Vec<u8>) -> bytes::Bytes {
        struct Pooled(Vec<u8>, &'static FramePool);
        impl AsRef<[u8]> for Pooled {
            fn as_ref(&self) -> &[u8] {
                &self.0
            }
        }
        impl Drop for Pooled {
            fn drop(&mut self) {
                self.1.give(std::mem::take(&mut self.0));
            }
        }
        bytes::Bytes::from_owner(Pooled(frame, self))
    }
}

impl Default for FramePool {
    fn default() -> Self {
        Self::new()
    }
}

/// A received frame as shared bytes whose buffer goes back to [`FRAMES`] once the last
/// slice of it is dropped.
pub fn pooled(frame: Vec<u8>) -> bytes::Bytes {
    FRAMES.share(frame)
}

/// Frees the pool's buffers once frames stopped coming (called on the engine's tick).
pub fn release_idle_frames(now: std::time::Instant) -> usize {
    FRAMES.release_idle(now)
}

/// Why a frame was refused; carried inside the `io::Error` the codec returns, so the
/// engine can count the violation by kind ([`FrameError::of`]).
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("frame of {len} bytes exceeds {max}")]
    TooLarge { len: usize, max: usize },
    #[error("frame cut short after {got} of {len} bytes")]
    Truncated { got: usize, len: usize },
}

impl FrameError {
    /// The frame error inside `e`, if the codec refused a frame.
    pub fn of(e: &io::Error) -> Option<&FrameError> {
        e.get_ref().and_then(|e| e.downcast_ref::<FrameError>())
    }

    /// The frame error a request stands for, if the codec refused it.
    ///
    /// libp2p's request-response does not report a request that failed to be read (the
    /// behaviour never learns of it), so the codec hands a refused request on as this
    /// marker instead: a byte string no cairn message starts with. The engine counts the
    /// violation against the peer and answers nothing.
    pub fn refused_request(request: &[u8]) -> Option<FrameError> {
        let rest = request.strip_prefix(REFUSED_MARKER)?;
        let n = |b: &[u8]| u32::from_le_bytes(b.try_into().unwrap_or_default()) as usize;
        match rest {
            [0, a @ ..] if a.len() == 8 => Some(FrameError::TooLarge {
                len: n(&a[..4]),
                max: n(&a[4..]),
            }),
            [1, a @ ..] if a.len() == 8 => Some(FrameError::Truncated {
                got: n(&a[..4]),
                len: n(&a[4..]),
            }),
            _ => None,
        }
    }

    fn marker(&self) -> Vec<u8> {
        let (tag, a, b) = match *self {
            FrameError::TooLarge { len, max } => (0u8, len, max),
            FrameError::Truncated { got, len } => (1u8, got, len),
        };
        let mut m = REFUSED_MARKER.to_vec();
        m.push(tag);
        m.extend_from_slice(&(a as u32).to_le_bytes());
        m.extend_from_slice(&(b as u32).to_le_bytes());
        m
    }
}

/// Starts a refused request's marker ([`FrameError::refused_request`]); cairn messages
/// start with a small tag byte, never 0xFF.
const REFUSED_MARKER: &[u8] = b"\xFFcairn-refused-frame";

impl FrameCodec {
    /// A codec refusing requests over `max_request` and responses over `max_response`
    /// bytes; large frames share `budget` bytes, if given.
    pub fn new(max_request: usize, max_response: usize, budget: Option<usize>) -> Self {
        FrameCodec {
            max_request,
            max_response,
            budget: budget.map(|b| (Arc::new(Semaphore::new(b)), b)),
            pool_responses: false,
        }
    }

    /// The same codec reading answers into [`FRAMES`]' buffers.
    pub fn pooling_responses(self) -> Self {
        FrameCodec {
            pool_responses: true,
            ..self
        }
    }
}

impl FrameCodec {
    fn budget(&self) -> Option<(&Semaphore, usize)> {
        self.budget.as_ref().map(|(b, total)| (&**b, *total))
    }
}

async fn read_frame<T: futures::AsyncRead + Unpin + Send>(
    io: &mut T,
    max: usize,
    budget: Option<(&Semaphore, usize)>,
    pool: Option<&FramePool>,
) -> io::Result<Vec<u8>> {
    let mut len = [0u8; 4];
    io.read_exact(&mut len).await?;
    let len = u32::from_le_bytes(len) as usize;
    if len > max {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            FrameError::TooLarge { len, max },
        ));
    }
    let _permit = match budget {
        Some((b, total)) if len > BIG_FRAME => {
            // A frame larger than the whole budget waits for all of it.
            let want = len.min(total) as u32;
            Some(
                b.acquire_many(want)
                    .await
                    .map_err(|_| io::Error::other("frame budget closed"))?,
            )
        }
        _ => None,
    };
    // Small frames, and large ones once the budget holds their size, are read straight
    // into a buffer of their final size (a large frame's from the pool, if pooled).
    let mut buf = match pool {
        Some(pool) => pool.take(len, max),
        None => crate::read_buffer(len),
    };
    let mut got = 0;
    while got < len {
        let n = io.read(&mut buf[got..]).await?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                FrameError::Truncated { got, len },
            ));
        }
        got += n;
    }
    Ok(buf)
}

async fn write_frame<T: futures::AsyncWrite + Unpin + Send>(
    io: &mut T,
    bytes: &[u8],
) -> io::Result<()> {
    io.write_all(&(bytes.len() as u32).to_le_bytes()).await?;
    io.write_all(bytes).await?;
    io.close().await
}

impl request_response::Codec for FrameCodec {
    type Protocol = StreamProtocol;
    type Request = Vec<u8>;
    type Response = Vec<u8>;

    async fn read_request<T: futures::AsyncRead + Unpin + Send>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
    ) -> io::Result<Vec<u8>> {
        match read_frame(io, self.max_request, self.budget(), None).await {
            Err(e) => match FrameError::of(&e) {
                Some(refused) => Ok(refused.marker()),
                None => Err(e),
            },
            ok => ok,
        }
    }

    async fn read_response<T: futures::AsyncRead + Unpin + Send>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
    ) -> io::Result<Vec<u8>> {
        let pool = self.pool_responses.then_some(&FRAMES);
        read_frame(io, self.max_response, self.budget(), pool).await
    }

    async fn write_request<T: futures::AsyncWrite + Unpin + Send>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        req: Vec<u8>,
    ) -> io::Result<()> {
        write_frame(io, &req).await
    }

    async fn write_response<T: futures::AsyncWrite + Unpin + Send>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        res: Vec<u8>,
    ) -> io::Result<()> {
        write_frame(io, &res).await
    }
}

/// A behaviour served only on connections to trusted peers.
///
/// A connection to a peer that is not [`Gated::allow`]ed at the moment it is established
/// gets a handler that supports no protocol: the peer's streams for the wrapped protocol
/// are refused during protocol negotiation, before a byte of a request is read, and the
/// wrapped behaviour never hears of the connection. A peer that becomes trusted on an open
/// connection (pairing) is served on its next connection.
pub struct Gated<B> {
    inner: B,
    allowed: HashSet<PeerId>,
    open: HashMap<ConnectionId, PeerId>,
}

impl<B> Gated<B> {
    /// Wraps `inner`, serving nobody yet.
    pub fn new(inner: B) -> Self {
        Gated {
            inner,
            allowed: HashSet::new(),
            open: HashMap::new(),
        }
    }

    /// Serves `peer` on its connections established from now on.
    pub fn allow(&mut self, peer: PeerId) {
        self.allowed.insert(peer);
    }

    /// Whether `peer` has a connection on which the wrapped protocol is served.
    pub fn is_open_to(&self, peer: &PeerId) -> bool {
        self.open.values().any(|p| p == peer)
    }

    fn open_count(&self, peer: &PeerId) -> usize {
        self.open.values().filter(|p| *p == peer).count()
    }
}

impl<B> std::ops::Deref for Gated<B> {
    type Target = B;
    fn deref(&self) -> &B {
        &self.inner
    }
}

impl<B> std::ops::DerefMut for Gated<B> {
    fn deref_mut(&mut self) -> &mut B {
        &mut self.inner
    }
}

impl<B: NetworkBehaviour> NetworkBehaviour for Gated<B> {
    type ConnectionHandler = Either<THandler<B>, dummy::ConnectionHandler>;
    type ToSwarm = B::ToSwarm;

    fn handle_pending_inbound_connection(
        &mut self,
        connection_id: ConnectionId,
        local_addr: &Multiaddr,
        remote_addr: &Multiaddr,
    ) -> Result<(), ConnectionDenied> {
        self.inner
            .handle_pending_inbound_connection(connection_id, local_addr, remote_addr)
    }

    fn handle_established_inbound_connection(
        &mut self,
        connection_id: ConnectionId,
        peer: PeerId,
        local_addr: &Multiaddr,
        remote_addr: &Multiaddr,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        if !self.allowed.contains(&peer) {
            return Ok(Either::Right(dummy::ConnectionHandler));
        }
        let handler = self.inner.handle_established_inbound_connection(
            connection_id,
            peer,
            local_addr,
            remote_addr,
        )?;
        self.open.insert(connection_id, peer);
        Ok(Either::Left(handler))
    }

    fn handle_pending_outbound_connection(
        &mut self,
        connection_id: ConnectionId,
        maybe_peer: Option<PeerId>,
        addresses: &[Multiaddr],
        effective_role: Endpoint,
    ) -> Result<Vec<Multiaddr>, ConnectionDenied> {
        self.inner.handle_pending_outbound_connection(
            connection_id,
            maybe_peer,
            addresses,
            effective_role,
        )
    }

    fn handle_established_outbound_connection(
        &mut self,
        connection_id: ConnectionId,
        peer: PeerId,
        addr: &Multiaddr,
        role_override: Endpoint,
        port_use: PortUse,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        if !self.allowed.contains(&peer) {
            return Ok(Either::Right(dummy::ConnectionHandler));
        }
        let handler = self.inner.handle_established_outbound_connection(
            connection_id,
            peer,
            addr,
            role_override,
            port_use,
        )?;
        self.open.insert(connection_id, peer);
        Ok(Either::Left(handler))
    }

    fn on_swarm_event(&mut self, event: FromSwarm) {
        // The wrapped behaviour sees only the connections it serves, counted among
        // themselves.
        match event {
            FromSwarm::ConnectionEstablished(e) => {
                if !self.open.contains_key(&e.connection_id) {
                    return;
                }
                let other_established = self.open_count(&e.peer_id) - 1;
                self.inner.on_swarm_event(FromSwarm::ConnectionEstablished(
                    ConnectionEstablished {
                        other_established,
                        ..e
                    },
                ));
            }
            FromSwarm::ConnectionClosed(e) => {
                if self.open.remove(&e.connection_id).is_none() {
                    return;
                }
                let remaining_established = self.open_count(&e.peer_id);
                self.inner
                    .on_swarm_event(FromSwarm::ConnectionClosed(ConnectionClosed {
                        remaining_established,
                        ..e
                    }));
            }
            FromSwarm::AddressChange(e) if !self.open.contains_key(&e.connection_id) => {}
            other => self.inner.on_swarm_event(other),
        }
    }

    fn on_connection_handler_event(
        &mut self,
        peer_id: PeerId,
        connection_id: ConnectionId,
        event: THandlerOutEvent<Self>,
    ) {
        match event {
            Either::Left(e) => self
                .inner
                .on_connection_handler_event(peer_id, connection_id, e),
            Either::Right(never) => match never {},
        }
    }

    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<ToSwarm<B::ToSwarm, THandlerInEvent<Self>>> {
        self.inner.poll(cx).map(|e| e.map_in(Either::Left))
    }
}

/// Every behaviour of the daemon's swarm.
#[derive(NetworkBehaviour)]
pub struct Behaviour {
    pub identify: identify::Behaviour,
    pub ping: ping::Behaviour,
    pub mdns: Toggle<mdns::tokio::Behaviour>,
    pub kad: kad::Behaviour<kad::store::MemoryStore>,
    pub relay: relay::client::Behaviour,
    /// Relaying for others ([`RelayServe`]); off unless configured.
    pub relay_server: Toggle<relay::Behaviour>,
    /// Before `dcutr`: a connection refused here is one DCUtR never counts as punched.
    pub per_peer: PeerLimits,
    pub dcutr: dcutr::Behaviour,
    pub autonat: autonat::Behaviour,
    pub limits: connection_limits::Behaviour,
    pub meta: Gated<request_response::Behaviour<FrameCodec>>,
    pub blocks: Gated<request_response::Behaviour<FrameCodec>>,
    pub pair: request_response::Behaviour<FrameCodec>,
}

/// Connections one peer may have at once, of each kind (direct, relayed: [`PeerLimits`]):
/// both sides may dial at the same moment, and a restarted peer's new connections arrive
/// before the old ones are known to be dead.
pub const MAX_CONNECTIONS_PER_PEER: usize = 4;
/// Largest blocks request: a delta request with a maximal signature, plus framing.
pub const MAX_BLOCKS_REQUEST: usize = cairn_core::wire::MAX_SIGNATURE_BYTES + 1024;
/// Bytes of large meta or blocks frames being received at once, across all peers.
pub const FRAME_BUDGET: usize = 48 << 20;

/// Errors building the swarm.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    #[error("cannot set up the network: {0}")]
    Setup(String),
}

fn setup<E: std::fmt::Display>(e: E) -> NetError {
    NetError::Setup(e.to_string())
}

/// How often mDNS asks the LAN who is there, once its first queries (0.5 s, doubling) have
/// had an answer or reached this. libp2p's default is 5 minutes: a device whose first
/// queries went unanswered learnt of no other device for minutes, and a join by code gave
/// up first (the LAN test failed so, 2 runs in 8: "no device was found on the LAN").
/// Syncthing's local discovery announces every 30 s.
pub const MDNS_QUERY_INTERVAL: Duration = Duration::from_secs(15);

/// How long a dial may take to connect and upgrade (TCP, Noise, Yamux, or QUIC).
pub const DIAL_TIMEOUT: Duration = Duration::from_secs(20);

/// The Kademlia protocol of the public (IPFS Amino) DHT, which cairn joins to find paired
/// devices and pairing invitations across networks.
pub const KAD_PROTOCOL: &str = "/ipfs/kad/1.0.0";

/// What the swarm is built with (from the `[network]` settings and the environment).
#[derive(Clone, Debug, Default)]
pub struct NetOptions {
    pub mdns: bool,
    /// Dial nothing outside loopback and private space ([`crate::private_net`]).
    pub private_only: bool,
    /// Whom this device relays for.
    pub relay: RelayServe,
}

/// Whom a device relays for (`[network] relay_server`, `public_relay`).
#[derive(Clone, Debug, Default)]
pub enum RelayServe {
    #[default]
    Off,
    /// Paired devices only (the shared set, kept up to date by pairing), with no limit on
    /// the bytes or length of a circuit: a group's own relay, which its sync may go through
    /// when no direct path exists.
    Group(Arc<Mutex<HashSet<PeerId>>>),
    /// Anyone, with libp2p's limits (2 minutes and 128 KiB per circuit): enough to pair and
    /// to punch holes, not to sync through (as public IPFS nodes relay).
    Public,
}

/// A relay's admission rule for reservations and circuits: the peer is in the group.
struct InGroup(Arc<Mutex<HashSet<PeerId>>>);

impl relay::RateLimiter for InGroup {
    fn try_next(&mut self, peer: PeerId, _: &Multiaddr, _: std::time::Instant) -> bool {
        self.0.lock().is_ok_and(|g| g.contains(&peer))
    }
}

/// The relay server for `serve`, if any.
fn relay_server(id: PeerId, serve: &RelayServe) -> Option<relay::Behaviour> {
    let config = match serve {
        RelayServe::Off => return None,
        RelayServe::Public => relay::Config::default(),
        RelayServe::Group(group) => relay::Config {
            max_reservations: 64,
            max_reservations_per_peer: 4,
            reservation_rate_limiters: vec![Box::new(InGroup(group.clone()))],
            max_circuits: 64,
            max_circuits_per_peer: 8,
            max_circuit_duration: Duration::from_secs(24 * 3600),
            // 0: no limit (libp2p-relay's copy counts only when this is above 0).
            max_circuit_bytes: 0,
            circuit_src_rate_limiters: vec![Box::new(InGroup(group.clone()))],
            ..relay::Config::default()
        },
    };
    Some(relay::Behaviour::new(id, config))
}

/// Builds the swarm for `key`.
pub fn build_swarm(key: Keypair, opts: &NetOptions) -> Result<Swarm<Behaviour>, NetError> {
    use libp2p::Transport as _;
    use libp2p::core::muxing::StreamMuxerBox;
    let private_only = opts.private_only;
    let swarm = libp2p::SwarmBuilder::with_existing_identity(key)
        .with_tokio()
        // TCP (TLS with AES-GCM first, or Noise; Yamux) and QUIC, under DNS, under the
        // private-network guard: with the switch on, a DNS name is refused before it is
        // resolved.
        .with_other_transport(
            |key| -> Result<_, Box<dyn std::error::Error + Send + Sync>> {
                let mut mux = yamux::Config::default();
                mux.set_max_num_streams(256);
                let tcp = tcp::tokio::Transport::new(tcp::Config::default().nodelay(true))
                    .upgrade(libp2p::core::upgrade::Version::V1Lazy)
                    .authenticate(crate::tls::Security::new(key)?)
                    .multiplex(mux)
                    .map(|(p, c), _| (p, StreamMuxerBox::new(c)));
                let quic = libp2p::quic::tokio::Transport::new(libp2p::quic::Config::new(key))
                    .map(|(p, c), _| (p, StreamMuxerBox::new(c)));
                // A dial that gets no answer (a NAT dropping what nobody inside asked
                // for) fails in 20 s instead of the kernel's minutes of SYN retries: an
                // AutoNAT server's dial-back then says "cannot reach you" in time.
                let both = libp2p::core::transport::timeout::TransportTimeout::new(
                    tcp.or_transport(quic).map(|e, _| e.into_inner()),
                    DIAL_TIMEOUT,
                );
                let dns = libp2p::dns::tokio::Transport::system(both)?;
                Ok(crate::private_net::Guard::new(dns, private_only))
            },
        )
        .map_err(setup)?
        .with_relay_client(noise::Config::new, yamux::Config::default)
        .map_err(setup)?
        .with_behaviour(|key, relay| {
            let id = key.public().to_peer_id();
            let mdns = if opts.mdns {
                let config = mdns::Config {
                    query_interval: MDNS_QUERY_INTERVAL,
                    ..mdns::Config::default()
                };
                Some(mdns::tokio::Behaviour::new(config, id)?)
            } else {
                None
            };
            let mut kad_config = kad::Config::new(StreamProtocol::new(KAD_PROTOCOL));
            kad_config.set_query_timeout(Duration::from_secs(30));
            // The DHT store is small and bounded: cairn publishes only provider records
            // (pairing nameplates, rendezvous keys), never values.
            let store = kad::store::MemoryStore::with_config(
                id,
                kad::store::MemoryStoreConfig {
                    max_records: 64,
                    max_value_bytes: 1024,
                    max_providers_per_key: 8,
                    // Rendezvous keys: two epochs for each paired device, and invitations.
                    max_provided_keys: 256,
                },
            );
            let mut kad = kad::Behaviour::with_config(id, store, kad_config);
            // A client asks the DHT and publishes to it, but is not in others' routing
            // tables: a device behind NAT cannot answer, and is not listed by its id.
            // The daemon sets the mode (`Engine::set_dht_mode`); a client until then.
            kad.set_mode(Some(kad::Mode::Client));
            let rr = |name: &'static str,
                      req: usize,
                      res: usize,
                      concurrent: usize,
                      budget: Option<usize>,
                      pool: bool| {
                let codec = FrameCodec::new(req, res, budget);
                request_response::Behaviour::with_codec(
                    if pool {
                        codec.pooling_responses()
                    } else {
                        codec
                    },
                    [(
                        StreamProtocol::new(name),
                        request_response::ProtocolSupport::Full,
                    )],
                    request_response::Config::default()
                        .with_request_timeout(Duration::from_secs(60))
                        .with_max_concurrent_streams(concurrent),
                )
            };
            Ok(Behaviour {
                identify: identify::Behaviour::new(identify::Config::new(
                    "/cairn/1".into(),
                    key.public(),
                )),
                ping: ping::Behaviour::new(ping::Config::new()),
                mdns: Toggle::from(mdns),
                kad,
                relay,
                relay_server: Toggle::from(relay_server(id, &opts.relay)),
                per_peer: PeerLimits::new(MAX_CONNECTIONS_PER_PEER),
                dcutr: dcutr::Behaviour::new(id),
                autonat: autonat::Behaviour::new(
                    id,
                    autonat::Config {
                        // First probe soon after start (default 15 s): relays are taken
                        // while reachability is unknown, and dropped once it is public.
                        boot_delay: Duration::from_secs(5),
                        retry_interval: Duration::from_secs(60),
                        // On a private network (the switch), private addresses are the
                        // only ones there are: probe and dial back those too.
                        only_global_ips: !opts.private_only,
                        ..autonat::Config::default()
                    },
                ),
                limits: connection_limits::Behaviour::new(
                    connection_limits::ConnectionLimits::default()
                        .with_max_pending_incoming(Some(64))
                        .with_max_established_incoming(Some(512)),
                ),
                // Only trusted peers reach meta and blocks ([`Gated`]); strangers reach
                // identify, ping, the DHT and pairing, all with small frames.
                meta: Gated::new(rr(
                    cairn_core::wire::META_PROTOCOL,
                    cairn_core::wire::MAX_META_BYTES,
                    cairn_core::wire::MAX_META_BYTES,
                    8,
                    Some(FRAME_BUDGET),
                    false,
                )),
                blocks: Gated::new(rr(
                    cairn_core::wire::BLOCKS_PROTOCOL,
                    MAX_BLOCKS_REQUEST,
                    cairn_core::wire::MAX_BLOCKS_BYTES,
                    128,
                    Some(FRAME_BUDGET),
                    true,
                )),
                pair: rr(cairn_core::wire::PAIR_PROTOCOL, 1024, 1024, 4, None, false),
            })
        })
        .map_err(setup)?
        .with_swarm_config(|c| {
            c.with_idle_connection_timeout(Duration::from_secs(300))
                .with_max_negotiating_inbound_streams(32)
        })
        .build();
    Ok(swarm)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_large_frame_reuses_a_returned_buffer() {
        static POOL: FramePool = FramePool::new();
        let first = POOL.take(3 << 20, 16 << 20);
        assert_eq!(first.len(), 3 << 20);
        let at = first.as_ptr();
        // A frame's buffer comes back when the last slice of its bytes is dropped.
        let bytes = POOL.share(first);
        let slice = bytes.slice(100..200);
        drop(bytes);
        assert_eq!(POOL.kept(), 0, "a slice still holds the frame");
        drop(slice);
        assert_eq!(POOL.kept(), 1);
        // The next large frame, smaller or a little larger, reads into the same memory.
        let mut second = POOL.take((3 << 20) - 1000, 16 << 20);
        assert_eq!((second.as_ptr(), second.len()), (at, (3 << 20) - 1000));
        second.fill(0xAA);
        POOL.give(second);
        // Reused bytes are not zeroed again (the frame overwrites them); only the growth is.
        let third = POOL.take((3 << 20) + 1000, 16 << 20);
        assert_eq!((third.as_ptr(), third.len()), (at, (3 << 20) + 1000));
        assert!(third[..(3 << 20) - 1000].iter().all(|&b| b == 0xAA));
        assert!(third[(3 << 20) - 1000..].iter().all(|&b| b == 0));
    }

    #[test]
    fn the_frame_pool_keeps_the_smallest_fit_a_bounded_few_and_none_once_idle() {
        let pool = FramePool::new();
        pool.give(pool.take(1000, 1 << 20));
        assert_eq!(pool.kept(), 0, "small frames are not kept");
        // A new buffer has room for a little more, never past the protocol's limit.
        assert_eq!(pool.take(BIG_FRAME + 1, 16 << 20).capacity(), 1 << 20);
        assert_eq!(pool.take(15 << 20, 16 << 20).capacity(), 16 << 20);
        // The smallest buffer that fits is taken.
        let (big, small) = (pool.take(3 << 20, 16 << 20), pool.take(3 << 19, 16 << 20));
        let small_at = small.as_ptr();
        pool.give(big);
        pool.give(small);
        let fit = pool.take(1 << 20, 16 << 20);
        assert_eq!(fit.as_ptr(), small_at);
        let pool = FramePool::new();
        let n = POOLED_BYTES / (1 << 20);
        let frames: Vec<_> = (0..n + 2)
            .map(|_| pool.take(BIG_FRAME + 1, 16 << 20))
            .collect();
        for f in frames {
            pool.give(f);
        }
        assert_eq!(pool.kept(), n, "no more than POOLED_BYTES kept");
        let used = std::time::Instant::now();
        assert_eq!(pool.release_idle(used + FRAMES_IDLE / 2), 0);
        assert_eq!(pool.kept(), n);
        let freed = pool.release_idle(used + FRAMES_IDLE);
        assert_eq!((freed, pool.kept()), (POOLED_BYTES, 0));
    }

    #[test]
    fn refused_frames_become_markers_no_message_can_be() {
        for e in [
            FrameError::TooLarge {
                len: u32::MAX as usize,
                max: 1024,
            },
            FrameError::Truncated { got: 10, len: 1000 },
        ] {
            let m = e.marker();
            let back = FrameError::refused_request(&m).expect("a marker");
            assert_eq!(back.to_string(), e.to_string());
            assert!(cairn_core::wire::MetaRequest::decode(&m).is_err());
            assert!(cairn_core::wire::BlocksRequest::decode(&m).is_err());
            assert!(cairn_core::pairing::PairRequest::decode(&m).is_err());
        }
        assert!(FrameError::refused_request(b"\x01meta").is_none());
        assert!(FrameError::refused_request(REFUSED_MARKER).is_none());
    }

    #[test]
    fn a_length_over_the_limit_is_refused_before_allocating_and_a_short_frame_is_refused() {
        futures::executor::block_on(async {
            let mut huge = futures::io::Cursor::new(u32::MAX.to_le_bytes().to_vec());
            let e = read_frame(&mut huge, 1 << 20, None, None)
                .await
                .unwrap_err();
            assert!(matches!(
                FrameError::of(&e),
                Some(FrameError::TooLarge { .. })
            ));
            let mut short = 1000u32.to_le_bytes().to_vec();
            short.extend([7u8; 10]);
            let e = read_frame(&mut futures::io::Cursor::new(short), 1 << 20, None, None)
                .await
                .unwrap_err();
            assert!(matches!(
                FrameError::of(&e),
                Some(FrameError::Truncated { got: 10, len: 1000 })
            ));
            let mut ok = 3u32.to_le_bytes().to_vec();
            ok.extend(b"abc");
            let got = read_frame(&mut futures::io::Cursor::new(ok), 1 << 20, None, None)
                .await
                .unwrap();
            assert_eq!(got, b"abc");
        });
    }
}
