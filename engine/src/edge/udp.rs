//! The edge's public UDP ports: one socket per port, one session per (client address, port).
//!
//! A client's first datagram opens a session (PROXY v2 DGRAM header with the client address and
//! the address the client sent to), then every datagram travels as session data. Replies from the
//! hub go back to the client from the same address and port it used: sockets bound to a wildcard
//! learn each datagram's destination from IP_PKTINFO / IPV6_RECVPKTINFO (through quinn-udp) and
//! send with that source address. UDP has no flow control: when the tunnel's queue is full a
//! datagram is dropped and counted, never buffered without bound.
//!
//! Sessions are bounded by the limits the hub pushes (`IEdgeLimits`): new sessions are paced by
//! a token bucket (a datagram that would open one too many is dropped and counted), a source
//! (IPv4 address or IPv6 prefix of `ipv6SourcePrefix` bits) at its cap recycles its own least recently used session, and a full table its least
//! recently used one; each closed session is closed on the hub too.

use std::collections::BTreeMap;
use std::io::IoSliceMut;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use crate::source_key::SourceKey;

use bytes::Bytes;
use quinn_udp::{RecvMeta, Transmit, UdpSocketState};
use remoteingress_ipc_schema::{PortBindFailure, PortProtocol};
use tokio::io::Interest;
use tokio::net::UdpSocket;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::EdgeLimitSettings;
use crate::edge::ports::reconcile;
use crate::events::EventSink;
use crate::metrics::UdpStats;
use crate::proxy_protocol::{self, v2, ProxyHeader, ProxyTransport};
use crate::transport::datagram::UdpMessage;
use crate::transport::tunnel::Tunnel;
use crate::udp::rate::TokenBucket;
use crate::udp::session::{Evicted, SessionTable, TableLimits};

/// Receive buffer: one maximal datagram, or several coalesced by GRO.
const RECV_BUFFER: usize = 128 * 1024;
/// Kernel socket buffers asked for on public UDP sockets.
const SOCKET_BUFFER: usize = 4 << 20;

/// One public UDP socket.
#[derive(Debug)]
struct PublicSocket {
    io: UdpSocket,
    state: UdpSocketState,
    port: u16,
    /// Bound to a wildcard address: replies need an explicit source address.
    wildcard: bool,
}

/// One client flow.
#[derive(Debug)]
struct Session {
    socket: Arc<PublicSocket>,
    /// The client's address as the socket reports it (IPv4-mapped on a dual-stack socket),
    /// which is the form replies must be sent to.
    client: SocketAddr,
    /// The address the client sent to (the reply's source).
    local_ip: Option<IpAddr>,
}

type Table = SessionTable<(SocketAddr, u16), Session>;

/// The sessions and the pace at which new ones may open, under one lock.
#[derive(Debug)]
struct State {
    table: Table,
    new_sessions: TokenBucket,
    /// IPv6 clients sharing this prefix are one source for `maxUdpSessionsPerSource`.
    ipv6_prefix: u8,
}

impl State {
    fn new(idle: std::time::Duration, limits: &EdgeLimitSettings) -> Self {
        Self {
            table: SessionTable::new(idle, table_limits(limits)),
            new_sessions: TokenBucket::new(
                limits.udp_new_sessions_per_sec,
                limits.udp_new_sessions_burst,
                Instant::now(),
            ),
            ipv6_prefix: limits.ipv6_source_prefix,
        }
    }
}

fn table_limits(limits: &EdgeLimitSettings) -> TableLimits {
    let size = |n: u32| usize::try_from(n).unwrap_or(usize::MAX);
    TableLimits {
        max_sessions: size(limits.max_udp_sessions),
        max_per_source: size(limits.max_udp_sessions_per_source),
    }
}

/// The edge's UDP ports and sessions.
#[derive(Debug)]
pub(crate) struct EdgeUdp {
    bind_address: Option<IpAddr>,
    sockets: BTreeMap<u16, CancellationToken>,
    state: Arc<Mutex<State>>,
    tunnel: watch::Receiver<Option<Tunnel>>,
    stats: Arc<UdpStats>,
    events: EventSink,
    shutdown: CancellationToken,
    tasks: TaskTracker,
}

impl EdgeUdp {
    pub(crate) fn new(
        bind_address: Option<IpAddr>,
        idle: std::time::Duration,
        tunnel: watch::Receiver<Option<Tunnel>>,
        stats: Arc<UdpStats>,
        events: EventSink,
        shutdown: CancellationToken,
        tasks: TaskTracker,
    ) -> Self {
        Self {
            bind_address,
            sockets: BTreeMap::new(),
            state: Arc::new(Mutex::new(State::new(idle, &EdgeLimitSettings::default()))),
            tunnel,
            stats,
            events,
            shutdown,
            tasks,
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        lock(&self.state)
    }

    /// Makes the UDP listeners match `wanted`; returns the listening ports and the ports that
    /// could not be bound.
    pub(crate) fn apply(&mut self, wanted: &[u16]) -> (Vec<u16>, Vec<PortBindFailure>) {
        let bind_address = self.bind_address;
        let (state, tunnel, stats, tasks) = (&self.state, &self.tunnel, &self.stats, &self.tasks);
        let failures = reconcile(
            &mut self.sockets,
            wanted,
            PortProtocol::Udp,
            &self.events,
            &self.shutdown,
            |port| {
                bind(bind_address, port)
                    .map_err(|e| crate::edge::ports::naming_address(bind_address, port, "UDP", e))
            },
            |_, socket, stop| {
                tasks.spawn(tracing::Instrument::in_current_span(receive_loop(
                    Arc::new(socket),
                    state.clone(),
                    tunnel.clone(),
                    stats.clone(),
                    stop,
                )));
            },
        );
        (self.sockets.keys().copied().collect(), failures)
    }

    /// Uses the hub's idle timeout for sessions.
    pub(crate) fn set_idle(&self, idle: std::time::Duration) {
        self.state().table.set_idle(idle);
    }

    /// Applies the hub's limits at once: sessions over the new caps are closed on both sides.
    pub(crate) fn set_limits(&self, limits: &EdgeLimitSettings) {
        let evicted = {
            let mut state = self.state();
            state.new_sessions.set(
                limits.udp_new_sessions_per_sec,
                limits.udp_new_sessions_burst,
                Instant::now(),
            );
            state.ipv6_prefix = limits.ipv6_source_prefix;
            let evicted = state.table.set_limits(table_limits(limits));
            self.stats.set_sessions(state.table.len());
            evicted
        };
        let tunnel = self.tunnel.borrow().clone();
        close_evicted(evicted, &self.stats, tunnel.as_ref());
    }

    /// Delivers a message from the hub: data goes to its client, a close ends the session.
    pub(crate) fn deliver_from_hub(&self, message: UdpMessage) {
        match message {
            UdpMessage::Data { session, payload } => {
                let target = self
                    .state()
                    .table
                    .touch(session, Instant::now())
                    .map(|s| (s.socket.clone(), s.client, s.local_ip));
                match target {
                    Some((socket, client, local_ip)) => {
                        if send_to(&socket, &payload, client, local_ip) {
                            self.stats.datagrams_out.fetch_add(1, Ordering::Relaxed);
                        } else {
                            self.stats.drop_one();
                        }
                    }
                    None => self.stats.drop_one(),
                }
            }
            UdpMessage::Close { session } => {
                let mut state = self.state();
                state.table.remove(session);
                self.stats.set_sessions(state.table.len());
            }
            UdpMessage::Open { .. } => {
                tracing::debug!("the hub does not open UDP sessions; ignored");
            }
        }
    }

    /// Closes sessions idle past the timeout, on both sides.
    pub(crate) fn expire(&self, tunnel: &Tunnel) {
        let expired = {
            let mut state = self.state();
            let expired = state.table.expire(Instant::now());
            self.stats.set_sessions(state.table.len());
            expired
        };
        for (session, _) in expired {
            let _ = tunnel.send_udp(UdpMessage::Close { session });
        }
    }

    /// Forgets every session (the tunnel they belonged to is gone).
    pub(crate) fn clear_sessions(&self) {
        self.state().table.drain();
        self.stats.set_sessions(0);
    }

    /// Closes every UDP port.
    pub(crate) fn close_all(&mut self) {
        for (_, token) in std::mem::take(&mut self.sockets) {
            token.cancel();
        }
        self.clear_sessions();
    }
}

use crate::sync::lock;

/// Counts the sessions the table displaced and closes them on the hub.
fn close_evicted(evicted: Vec<Evicted<Session>>, stats: &UdpStats, tunnel: Option<&Tunnel>) {
    for Evicted { id, reason, .. } in evicted {
        stats.evicted(reason);
        if let Some(tunnel) = tunnel {
            let _ = tunnel.send_udp(UdpMessage::Close { session: id });
        }
    }
}

fn bind(address: Option<IpAddr>, port: u16) -> std::io::Result<PublicSocket> {
    let (addr, dual_stack) = match address {
        Some(ip) => (SocketAddr::new(ip, port), false),
        None => (
            SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), port),
            true,
        ),
    };
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::DGRAM,
        Some(socket2::Protocol::UDP),
    )?;
    let bound = (|| {
        if dual_stack {
            socket.set_only_v6(false)?;
        }
        socket.bind(&addr.into())
    })();
    let socket = match bound {
        Ok(()) => socket,
        Err(_) if dual_stack => {
            let v4 = socket2::Socket::new(
                socket2::Domain::IPV4,
                socket2::Type::DGRAM,
                Some(socket2::Protocol::UDP),
            )?;
            v4.bind(&SocketAddr::from(([0, 0, 0, 0], port)).into())?;
            v4
        }
        Err(error) => return Err(error),
    };
    let _ = socket.set_recv_buffer_size(SOCKET_BUFFER);
    let _ = socket.set_send_buffer_size(SOCKET_BUFFER);
    socket.set_nonblocking(true)?;
    let std_socket: std::net::UdpSocket = socket.into();
    let state = UdpSocketState::new((&std_socket).into())?;
    let wildcard = std_socket.local_addr()?.ip().is_unspecified();
    Ok(PublicSocket {
        io: UdpSocket::from_std(std_socket)?,
        state,
        port,
        wildcard,
    })
}

/// Sends one datagram to a client, from `local_ip` when the socket is a wildcard.
/// Returns false when it had to be dropped (socket buffer full or an error).
fn send_to(
    socket: &PublicSocket,
    payload: &[u8],
    client: SocketAddr,
    local_ip: Option<IpAddr>,
) -> bool {
    let transmit = Transmit {
        destination: client,
        ecn: None,
        contents: payload,
        segment_size: None,
        src_ip: if socket.wildcard { local_ip } else { None },
    };
    socket
        .io
        .try_io(Interest::WRITABLE, || {
            socket.state.send((&socket.io).into(), &transmit)
        })
        .is_ok()
}

async fn receive_loop(
    socket: Arc<PublicSocket>,
    state: Arc<Mutex<State>>,
    tunnel: watch::Receiver<Option<Tunnel>>,
    stats: Arc<UdpStats>,
    stop: CancellationToken,
) {
    let segments = socket.state.gro_segments().max(1);
    let mut buffer = vec![0u8; RECV_BUFFER.max(segments * 1500)];
    let mut meta = [RecvMeta::default()];
    loop {
        tokio::select! {
            () = stop.cancelled() => break,
            ready = socket.io.readable() => {
                if let Err(error) = ready {
                    tracing::warn!(port = socket.port, %error, "UDP socket failed");
                    break;
                }
            }
        }
        loop {
            let received = socket.io.try_io(Interest::READABLE, || {
                let mut bufs = [IoSliceMut::new(&mut buffer)];
                socket.state.recv((&socket.io).into(), &mut bufs, &mut meta)
            });
            let Ok(count) = received else { break };
            if count == 0 {
                break;
            }
            let meta = meta[0];
            let stride = meta.stride.max(1);
            let data = buffer.get(..meta.len).unwrap_or_default();
            for datagram in data.chunks(stride) {
                from_client(
                    &socket,
                    &state,
                    &tunnel,
                    &stats,
                    datagram,
                    meta.addr,
                    meta.dst_ip,
                );
            }
        }
    }
}

/// One datagram from a client: open its session if needed (and allowed), then send it
/// through the tunnel.
fn from_client(
    socket: &Arc<PublicSocket>,
    state: &Mutex<State>,
    tunnel: &watch::Receiver<Option<Tunnel>>,
    stats: &UdpStats,
    payload: &[u8],
    client: SocketAddr,
    dst_ip: Option<IpAddr>,
) {
    let raw_client = client;
    let client = proxy_protocol::canonical(client);
    let Some(tunnel) = tunnel.borrow().clone() else {
        stats.drop_one();
        return;
    };
    let now = Instant::now();
    let key = (client, socket.port);
    let (session, evicted) = {
        let mut state = lock(state);
        if let Some(session) = state.table.find(&key, now) {
            (session, None)
        } else if !state.new_sessions.try_take(now) {
            drop(state);
            stats.rate_limited.fetch_add(1, Ordering::Relaxed);
            stats.drop_one();
            return;
        } else {
            // Per-source caps count an IPv6 client's whole prefix as one source.
            let source = SourceKey::with_ipv6_prefix(client.ip(), state.ipv6_prefix).addr();
            let (session, evicted) = state.table.open(key, Some(source), now, |_| Session {
                socket: socket.clone(),
                client: raw_client,
                local_ip: dst_ip,
            });
            stats.set_sessions(state.table.len());
            (session, Some(evicted))
        }
    };
    if let Some(evicted) = evicted {
        close_evicted(evicted, stats, Some(&tunnel));
        // ProxyHeader::new makes both addresses canonical.
        let local_ip = dst_ip
            .or_else(|| socket.io.local_addr().ok().map(|a| a.ip()))
            .unwrap_or(IpAddr::V6(Ipv6Addr::UNSPECIFIED));
        let header = ProxyHeader::new(client, SocketAddr::new(local_ip, socket.port));
        let open = UdpMessage::Open {
            session,
            header: Bytes::from(v2::encode(&header, ProxyTransport::Datagram)),
        };
        if tunnel.send_udp(open).is_err() {
            // Without its open the hub would refuse the data; forget the session so the next
            // datagram tries again.
            lock(state).table.remove(session);
            stats.drop_one();
            return;
        }
    }
    let data = UdpMessage::Data {
        session,
        payload: Bytes::copy_from_slice(payload),
    };
    match tunnel.send_udp(data) {
        Ok(()) => {
            stats.datagrams_in.fetch_add(1, Ordering::Relaxed);
        }
        Err(_) => stats.drop_one(),
    }
}
