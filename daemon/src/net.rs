//! The libp2p side: transports, discovery and cairn's two request-response protocols.
//!
//! TCP and QUIC (Noise + Yamux on TCP), DNS, identify, ping, mDNS (optional), Kademlia (as
//! a server, with configured bootstrap peers), relay client, DCUtR and AutoNAT. cairn's
//! protocols carry opaque frames: the messages themselves are `cairn_core::wire`.

use std::io;
use std::time::Duration;

use futures::{AsyncReadExt, AsyncWriteExt};
use libp2p::swarm::NetworkBehaviour;
use libp2p::swarm::behaviour::toggle::Toggle;
use libp2p::{
    StreamProtocol, Swarm, autonat, dcutr, identify, identity::Keypair, kad, mdns, noise, ping,
    relay, request_response, tcp, yamux,
};

/// Frames of one cairn protocol: a u32 length and that many bytes, bounded.
#[derive(Clone)]
pub struct FrameCodec {
    max_request: usize,
    max_response: usize,
}

impl FrameCodec {
    /// A codec refusing requests over `max_request` and responses over `max_response` bytes.
    pub fn new(max_request: usize, max_response: usize) -> Self {
        FrameCodec {
            max_request,
            max_response,
        }
    }
}

async fn read_frame<T: futures::AsyncRead + Unpin + Send>(
    io: &mut T,
    max: usize,
) -> io::Result<Vec<u8>> {
    let mut len = [0u8; 4];
    io.read_exact(&mut len).await?;
    let len = u32::from_le_bytes(len) as usize;
    if len > max {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("frame of {len} bytes exceeds {max}"),
        ));
    }
    let mut buf = vec![0u8; len];
    io.read_exact(&mut buf).await?;
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
        read_frame(io, self.max_request).await
    }

    async fn read_response<T: futures::AsyncRead + Unpin + Send>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
    ) -> io::Result<Vec<u8>> {
        read_frame(io, self.max_response).await
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

/// Every behaviour of the daemon's swarm.
#[derive(NetworkBehaviour)]
pub struct Behaviour {
    pub identify: identify::Behaviour,
    pub ping: ping::Behaviour,
    pub mdns: Toggle<mdns::tokio::Behaviour>,
    pub kad: kad::Behaviour<kad::store::MemoryStore>,
    pub relay: relay::client::Behaviour,
    pub dcutr: dcutr::Behaviour,
    pub autonat: autonat::Behaviour,
    pub meta: request_response::Behaviour<FrameCodec>,
    pub blocks: request_response::Behaviour<FrameCodec>,
    pub pair: request_response::Behaviour<FrameCodec>,
}

/// Errors building the swarm.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    #[error("cannot set up the network: {0}")]
    Setup(String),
}

fn setup<E: std::fmt::Display>(e: E) -> NetError {
    NetError::Setup(e.to_string())
}

/// Builds the swarm for `key`.
pub fn build_swarm(key: Keypair, mdns_enabled: bool) -> Result<Swarm<Behaviour>, NetError> {
    let swarm = libp2p::SwarmBuilder::with_existing_identity(key)
        .with_tokio()
        .with_tcp(
            tcp::Config::default().nodelay(true),
            noise::Config::new,
            yamux::Config::default,
        )
        .map_err(setup)?
        .with_quic()
        .with_dns()
        .map_err(setup)?
        .with_relay_client(noise::Config::new, yamux::Config::default)
        .map_err(setup)?
        .with_behaviour(|key, relay| {
            let id = key.public().to_peer_id();
            let mdns = if mdns_enabled {
                Some(mdns::tokio::Behaviour::new(mdns::Config::default(), id)?)
            } else {
                None
            };
            let mut kad_config = kad::Config::new(StreamProtocol::new("/cairn/kad/1"));
            kad_config.set_query_timeout(Duration::from_secs(30));
            let mut kad =
                kad::Behaviour::with_config(id, kad::store::MemoryStore::new(id), kad_config);
            kad.set_mode(Some(kad::Mode::Server));
            let rr = |name: &'static str, req: usize, res: usize, concurrent: usize| {
                request_response::Behaviour::with_codec(
                    FrameCodec::new(req, res),
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
                dcutr: dcutr::Behaviour::new(id),
                autonat: autonat::Behaviour::new(id, autonat::Config::default()),
                meta: rr(
                    cairn_core::wire::META_PROTOCOL,
                    cairn_core::wire::MAX_META_BYTES,
                    cairn_core::wire::MAX_META_BYTES,
                    16,
                ),
                blocks: rr(
                    cairn_core::wire::BLOCKS_PROTOCOL,
                    64 << 10,
                    cairn_core::wire::MAX_BLOCKS_BYTES,
                    128,
                ),
                pair: rr(cairn_core::wire::PAIR_PROTOCOL, 1024, 1024, 4),
            })
        })
        .map_err(setup)?
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(300)))
        .build();
    Ok(swarm)
}
