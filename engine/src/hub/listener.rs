//! The hub's tunnel port, TCP (TLS) and UDP (QUIC) on the same number: refuses sources that
//! failed too often, runs the transport and edge handshakes under one deadline, and hands each
//! authenticated tunnel to a session task. Both transports share everything after their own
//! accept: the hello exchange ([`Connection::exchange_hello`]) and the session start.

use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use remoteingress_ipc_schema::{EdgeAuthFailedEvent, Event, TunnelTransport};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::auth::FailureLimiter;
use super::{session, Admission, AuthDecision, Command, Hub};
use crate::config::HubSettings;
use crate::events::EventSink;
use crate::transport::handshake::{self, HubReply, MAX_HELLO_LEN};
use crate::transport::quic::QuicSide;
use crate::transport::tls_mux::Side;
use crate::transport::tunnel::{tune_tunnel_socket, Tunnel, TunnelIncoming};

/// Time a peer has for the transport handshake plus its hello line (DESIGN section 5).
pub const HANDSHAKE_DEADLINE: Duration = Duration::from_secs(10);

/// How long a refused QUIC peer has to read the refusal before the connection is dropped.
const REFUSAL_LINGER: Duration = Duration::from_secs(2);

/// Binds the TCP tunnel port on all addresses: IPv6 dual-stack where available, else IPv4.
pub async fn bind(port: u16) -> std::io::Result<TcpListener> {
    let v6 = SocketAddr::from((Ipv6Addr::UNSPECIFIED, port));
    match bind_dual_stack(v6) {
        Ok(listener) => Ok(listener),
        Err(error) => {
            tracing::debug!(%error, "IPv6 dual-stack bind failed; using IPv4");
            TcpListener::bind(SocketAddr::from(([0, 0, 0, 0], port))).await
        }
    }
}

fn bind_dual_stack(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = socket2::Socket::new(
        socket2::Domain::IPV6,
        socket2::Type::STREAM,
        Some(socket2::Protocol::TCP),
    )?;
    socket.set_only_v6(false)?;
    socket.set_reuse_address(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(1024)?;
    TcpListener::from_std(socket.into())
}

/// What every connection of the tunnel port shares.
pub(crate) struct ListenerContext {
    pub(crate) tls: tokio_rustls::TlsAcceptor,
    pub(crate) hub: Hub,
    pub(crate) settings: Arc<HubSettings>,
    pub(crate) events: EventSink,
    pub(crate) shutdown: CancellationToken,
    pub(crate) tasks: TaskTracker,
    pub(crate) limiter: Mutex<FailureLimiter>,
}

impl ListenerContext {
    fn is_blocked(&self, remote: SocketAddr) -> bool {
        let blocked = self
            .limiter
            .lock()
            .map(|l| l.is_blocked(remote.ip(), Instant::now()))
            .unwrap_or(false);
        if blocked {
            tracing::debug!(%remote, "refused: too many failed handshakes");
        }
        blocked
    }
}

/// The TCP accept loop.
pub(crate) async fn run_tcp(context: Arc<ListenerContext>, tcp: TcpListener) {
    loop {
        let accepted = tokio::select! {
            () = context.shutdown.cancelled() => break,
            accepted = tcp.accept() => accepted,
        };
        let (socket, remote) = match accepted {
            Ok(pair) => pair,
            Err(error) => {
                // EMFILE and friends: log, breathe, keep serving (linkerd serve.rs).
                tracing::warn!(%error, "tunnel accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let remote = normalise(remote);
        if context.is_blocked(remote) {
            continue;
        }
        let connection = Connection {
            context: context.clone(),
            remote,
        };
        context.tasks.spawn(connection.run_tls(socket));
    }
}

/// The QUIC accept loop.
pub(crate) async fn run_quic(context: Arc<ListenerContext>, endpoint: quinn::Endpoint) {
    loop {
        let incoming = tokio::select! {
            () = context.shutdown.cancelled() => break,
            incoming = endpoint.accept() => incoming,
        };
        let Some(incoming) = incoming else { break };
        let remote = normalise(incoming.remote_address());
        if context.is_blocked(remote) {
            incoming.refuse();
            continue;
        }
        let connection = Connection {
            context: context.clone(),
            remote,
        };
        context.tasks.spawn(connection.run_quic(incoming));
    }
    endpoint.close(quinn::VarInt::from_u32(0), b"hub stopped");
}

/// One incoming tunnel connection, from accept to the end of its session.
struct Connection {
    context: Arc<ListenerContext>,
    remote: SocketAddr,
}

/// An authenticated edge, ready for its session.
struct Authenticated {
    edge_id: String,
    admission: Admission,
}

struct Failure {
    edge_id: Option<String>,
    reason: String,
}

impl Failure {
    fn before_hello(reason: String) -> Self {
        Self {
            edge_id: None,
            reason,
        }
    }
}

impl Connection {
    async fn run_tls(self, socket: TcpStream) {
        tune_tunnel_socket(&socket);
        let handshake = async {
            let mut tls = self
                .context
                .tls
                .accept(socket)
                .await
                .map_err(|e| Failure::before_hello(format!("TLS handshake failed: {e}")))?;
            let mut buffer = BytesMut::with_capacity(8 * 1024);
            let authenticated = self.exchange_hello(&mut tls, &mut buffer).await?;
            Ok((tls, buffer, authenticated))
        };
        let Some((tls, leftover, authenticated)) = self.within_deadline(handshake).await else {
            return;
        };
        let (tunnel, incoming) =
            Tunnel::start_tls(tls, leftover, Side::Hub, &self.context.settings.performance);
        self.run_session(authenticated, TunnelTransport::TcpTls, tunnel, incoming)
            .await;
    }

    async fn run_quic(self, incoming: quinn::Incoming) {
        let handshake = async {
            let connection = incoming
                .await
                .map_err(|e| Failure::before_hello(format!("QUIC handshake failed: {e}")))?;
            let (send, recv) = connection
                .accept_bi()
                .await
                .map_err(|e| Failure::before_hello(format!("no control stream: {e}")))?;
            let mut control = tokio::io::join(recv, send);
            let mut buffer = BytesMut::with_capacity(8 * 1024);
            match self.exchange_hello(&mut control, &mut buffer).await {
                Ok(authenticated) => Ok((connection, control, buffer, authenticated)),
                Err(failure) => {
                    // Dropping the connection would discard the refusal still in flight: give
                    // the peer a moment to read it and close.
                    let _ = tokio::time::timeout(REFUSAL_LINGER, connection.closed()).await;
                    Err(failure)
                }
            }
        };
        let Some((connection, control, leftover, authenticated)) =
            self.within_deadline(handshake).await
        else {
            return;
        };
        let (recv, send) = control.into_inner();
        let (tunnel, incoming) =
            Tunnel::start_quic(connection, send, recv, leftover, QuicSide::Hub);
        self.run_session(authenticated, TunnelTransport::Quic, tunnel, incoming)
            .await;
    }

    /// Runs a handshake under [`HANDSHAKE_DEADLINE`]; reports a failure and returns `None`.
    async fn within_deadline<T>(
        &self,
        handshake: impl std::future::Future<Output = Result<T, Failure>>,
    ) -> Option<T> {
        let result = tokio::select! {
            () = self.context.shutdown.cancelled() => return None,
            result = tokio::time::timeout(HANDSHAKE_DEADLINE, handshake) => result,
        };
        match result {
            Ok(Ok(done)) => {
                if let Ok(mut limiter) = self.context.limiter.lock() {
                    limiter.record_success(self.remote.ip());
                }
                Some(done)
            }
            Ok(Err(failure)) => {
                self.failed(failure);
                None
            }
            Err(_) => {
                self.failed(Failure::before_hello(format!(
                    "handshake not completed within {HANDSHAKE_DEADLINE:?}"
                )));
                None
            }
        }
    }

    /// Reads the hello line, asks the actor, and writes the reply line.
    async fn exchange_hello<S>(
        &self,
        io: &mut S,
        buffer: &mut BytesMut,
    ) -> Result<Authenticated, Failure>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let line = handshake::read_line(io, buffer, MAX_HELLO_LEN)
            .await
            .map_err(|e| Failure::before_hello(format!("bad hello: {e}")))?;
        let hello = handshake::parse_hello(&line)
            .map_err(|e| Failure::before_hello(format!("bad hello: {e}")))?;
        let edge_id = hello.edge_id.clone();
        let failure = |reason: String| Failure {
            edge_id: Some(edge_id.clone()),
            reason,
        };
        let (reply, outcome) = match self.context.hub.authenticate(hello, self.remote).await {
            AuthDecision::Reject { reason } => (
                HubReply::Rejected {
                    error: "unauthorized".to_owned(),
                },
                Err(failure(reason)),
            ),
            AuthDecision::Accept(admission) => {
                (HubReply::Accepted(admission.push.clone()), Ok(admission))
            }
        };
        let line = handshake::encode_reply(&reply)
            .map_err(|e| failure(format!("cannot encode the reply: {e}")))?;
        let written = async {
            io.write_all(&line).await?;
            io.flush().await
        }
        .await;
        let admission = match outcome {
            Err(rejected) => {
                let _ = io.shutdown().await;
                return Err(rejected);
            }
            Ok(admission) => admission,
        };
        if let Err(error) = written {
            // Registered but never ready: let the actor forget it.
            self.context
                .hub
                .send(Command::SessionEnded {
                    edge_id: edge_id.clone(),
                    session_id: admission.session_id,
                    reason: format!("cannot send the reply: {error}"),
                })
                .await;
            return Err(failure(format!("cannot send the reply: {error}")));
        }
        Ok(Authenticated { edge_id, admission })
    }

    /// Registers the running tunnel with the actor, runs the session, reports its end.
    async fn run_session(
        self,
        authenticated: Authenticated,
        transport: TunnelTransport,
        tunnel: Tunnel,
        incoming: TunnelIncoming,
    ) {
        let Authenticated { edge_id, admission } = authenticated;
        let context = &self.context;
        let session_id = admission.session_id;
        if !context
            .hub
            .send(Command::SessionReady {
                edge_id: edge_id.clone(),
                session_id,
                transport,
                tunnel: tunnel.clone(),
            })
            .await
        {
            tunnel.close();
            return;
        }
        let reason = session::run(session::HubSession {
            edge_id: edge_id.clone(),
            tunnel,
            incoming,
            settings: context.settings.clone(),
            stats: admission.stats,
            udp_stats: admission.udp_stats,
            events: context.events.clone(),
            cancel: admission.cancel,
            drain: admission.drain,
            shutdown: context.shutdown.clone(),
            tasks: context.tasks.clone(),
            hub: context.hub.clone(),
            session_id,
        })
        .await;
        context
            .hub
            .send(Command::SessionEnded {
                edge_id,
                session_id,
                reason,
            })
            .await;
    }

    fn failed(&self, failure: Failure) {
        if let Ok(mut limiter) = self.context.limiter.lock() {
            limiter.record_failure(self.remote.ip(), Instant::now());
        }
        let Failure { edge_id, reason } = failure;
        tracing::info!(remote = %self.remote, ?edge_id, %reason, "edge authentication failed");
        self.context
            .events
            .emit(Event::EdgeAuthFailed(EdgeAuthFailedEvent {
                remote_addr: self.remote.to_string(),
                edge_id,
                reason,
            }));
    }
}

/// IPv4-mapped IPv6 peers (from the dual-stack sockets) are reported as IPv4.
fn normalise(addr: SocketAddr) -> SocketAddr {
    match addr.ip() {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => SocketAddr::new(IpAddr::V4(v4), addr.port()),
            None => addr,
        },
        IpAddr::V4(_) => addr,
    }
}
