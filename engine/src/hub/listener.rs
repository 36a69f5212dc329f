//! The hub's tunnel port, TCP (TLS) and UDP (QUIC) on the same number: bounds pending handshakes
//! and slows sources whose logins failed ([`super::auth`]), runs the transport and edge
//! handshakes under one deadline, and hands each authenticated tunnel to a session task. Both
//! transports share everything after their own accept: the hello exchange
//! (`Connection::exchange_hello`) and the session start.

use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::shutdown::StopTokens;
use bytes::BytesMut;
use remoteingress_ipc_schema::{EdgeAuthFailedEvent, Event, TunnelTransport};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::auth::{self, Admitted, LoginThrottle, Outcome, Stage};
use super::{session, Admission, AuthDecision, Command, Hub};
use crate::config::HubSettings;
use crate::events::EventSink;
use crate::log_limit::SharedLogLimiter;
use crate::transport::handshake::{self, HubReply, MAX_HELLO_LEN};
use crate::transport::login::ChannelBinding;
use crate::transport::quic;
use crate::transport::side::Side;
use crate::transport::tunnel::{tune_tunnel_socket, Tunnel, TunnelIncoming};

/// Time a peer has for the transport handshake plus its hello line (docs/architecture.md, "Login and handshake").
pub(crate) const HANDSHAKE_DEADLINE: Duration = Duration::from_secs(10);

/// Time a TCP peer has to send its complete TLS ClientHello. An edge sends it right after its
/// connect, so this only has to cover a retransmission or two on a slow path; a connection that
/// has sent nothing costs a socket and a task until then, and is the first to make way when too
/// many handshakes are in progress (`super::pending`).
pub const CLIENT_HELLO_DEADLINE: Duration = Duration::from_secs(5);

/// How long a refused QUIC peer has to read the refusal before the connection is dropped.
const REFUSAL_LINGER: Duration = Duration::from_secs(2);

/// Binds the TCP tunnel port on `address`, or on all addresses (IPv6 dual-stack where
/// available, else IPv4) when none is given. The error names the address it tried.
pub(crate) async fn bind(
    address: Option<IpAddr>,
    port: u16,
) -> Result<TcpListener, super::HubStartError> {
    let failed = |addr: SocketAddr| {
        move |source| super::HubStartError::Bind {
            address: addr,
            protocol: "TCP",
            source,
        }
    };
    if let Some(ip) = address {
        let addr = SocketAddr::new(ip, port);
        return TcpListener::bind(addr).await.map_err(failed(addr));
    }
    let v6 = SocketAddr::from((Ipv6Addr::UNSPECIFIED, port));
    match bind_dual_stack(v6) {
        Ok(listener) => Ok(listener),
        Err(error) if error.kind() == std::io::ErrorKind::AddrInUse => Err(failed(v6)(error)),
        Err(error) => {
            tracing::debug!(%error, "IPv6 dual-stack bind failed; using IPv4");
            let v4 = SocketAddr::from(([0, 0, 0, 0], port));
            TcpListener::bind(v4).await.map_err(failed(v4))
        }
    }
}

/// The tunnel port's address for messages: `address:port`, or `[::]:port` for all addresses.
pub(crate) fn tunnel_address(address: Option<IpAddr>, port: u16) -> SocketAddr {
    SocketAddr::new(address.unwrap_or(IpAddr::V6(Ipv6Addr::UNSPECIFIED)), port)
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
    /// Draining: no new logins. Shut down: every tunnel closes.
    pub(crate) stop: StopTokens,
    pub(crate) tasks: TaskTracker,
    pub(crate) throttle: Arc<Mutex<LoginThrottle>>,
    /// Rate limits of the refusal and failure warnings: a flood of connections must not flood
    /// the log (every failure is still an `edgeAuthFailed` event).
    pub(crate) refusal_warnings: SharedLogLimiter,
    pub(crate) failure_warnings: SharedLogLimiter,
}

impl ListenerContext {
    /// Starts a handshake from `remote`; `None` when the throttle refuses it (every pending
    /// handshake is a verified login; a poisoned throttle).
    fn begin(self: &Arc<Self>, remote: SocketAddr) -> Option<PendingLogin> {
        let begun = auth::lock(&self.throttle)
            .map(|mut throttle| throttle.begin(remote.ip(), Instant::now()));
        match begun {
            Some(Ok(admitted)) => Some(PendingLogin {
                context: self.clone(),
                admitted,
                progress: Mutex::default(),
                outcome: Outcome::Abandoned,
            }),
            Some(Err(refusal)) => {
                crate::limited_warn!(self.refusal_warnings, %remote, %refusal, "tunnel connection refused");
                None
            }
            None => None,
        }
    }
}

/// One handshake in progress; tells the throttle how it ended when dropped, so a task that
/// fails or is cancelled anywhere never leaks a pending slot.
struct PendingLogin {
    context: Arc<ListenerContext>,
    admitted: Admitted,
    /// Behind a lock because the handshake updates it through a shared reference while its
    /// deadline and eviction are watched through another.
    progress: Mutex<Progress>,
    outcome: Outcome,
}

#[derive(Debug, Default)]
struct Progress {
    stage: Stage,
    /// The edge id its hello claims, once read.
    edge_id: Option<String>,
}

impl PendingLogin {
    /// Records that the handshake has come as far as `stage`.
    fn advance(&self, stage: Stage) {
        {
            let mut progress = crate::sync::lock(&self.progress);
            progress.stage = progress.stage.max(stage);
        }
        if let Some(mut throttle) = auth::lock(&self.context.throttle) {
            throttle.advance(self.admitted.id, stage);
        }
    }

    /// Records the edge id the hello claims (its failures are remembered per id too).
    fn claims(&self, edge_id: &str) {
        crate::sync::lock(&self.progress).edge_id = Some(edge_id.to_owned());
    }

    fn stage(&self) -> Stage {
        crate::sync::lock(&self.progress).stage
    }

    /// The delay the throttle asks for before this login is answered.
    fn delay(&self, edge_id: &str) -> Duration {
        auth::lock(&self.context.throttle).map_or(auth::MAX_DELAY, |throttle| {
            throttle.delay(self.admitted.source, edge_id, Instant::now())
        })
    }

    /// Cancelled when this handshake has to make way for a newer connection.
    fn evicted(&self) -> CancellationToken {
        self.admitted.evicted.clone()
    }
}

impl Drop for PendingLogin {
    fn drop(&mut self) {
        let edge_id = crate::sync::lock(&self.progress).edge_id.take();
        if let Some(mut throttle) = auth::lock(&self.context.throttle) {
            throttle.finish(
                &self.admitted,
                edge_id.as_deref(),
                self.outcome,
                Instant::now(),
            );
        }
    }
}

/// The TCP accept loop.
pub(crate) async fn run_tcp(context: Arc<ListenerContext>, tcp: TcpListener) {
    loop {
        let accepted = tokio::select! {
            () = context.stop.draining.cancelled() => break,
            accepted = tcp.accept() => accepted,
        };
        let (socket, remote) = match accepted {
            Ok(pair) => pair,
            Err(error) => {
                // EMFILE and friends: log (rate-limited), breathe, keep serving.
                crate::limited_warn!(context.refusal_warnings, %error, "tunnel accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let remote = crate::proxy_protocol::canonical(remote);
        let Some(pending) = context.begin(remote) else {
            // Reset rather than close: the peer learns at once, and no TIME_WAIT is kept.
            crate::relay::reset(&socket);
            continue;
        };
        let connection = Connection {
            context: context.clone(),
            remote,
            pending: Some(pending),
        };
        context.tasks.spawn(connection.run_tls(socket));
    }
}

/// The QUIC accept loop.
pub(crate) async fn run_quic(context: Arc<ListenerContext>, endpoint: quinn::Endpoint) {
    loop {
        let incoming = tokio::select! {
            () = context.stop.shutdown.cancelled() => break,
            incoming = endpoint.accept() => incoming,
        };
        let Some(incoming) = incoming else { break };
        if context.stop.draining.is_cancelled() {
            // Stopping: the endpoint stays for the tunnels that finish their streams.
            incoming.refuse();
            continue;
        }
        if !incoming.remote_address_validated() {
            // A Retry costs the peer one round trip and us no state: only a peer that can
            // receive at its address comes back with the token, and only then does it count
            // towards any per-source state (spoofed Initials never do). A Retry is smaller than
            // the Initial that asked for it, so no amplification either.
            if incoming.may_retry() {
                let _ = incoming.retry();
            } else {
                // It came back with a token that does not validate: forged or expired.
                incoming.ignore();
            }
            continue;
        }
        let remote = crate::proxy_protocol::canonical(incoming.remote_address());
        let Some(pending) = context.begin(remote) else {
            incoming.refuse();
            continue;
        };
        pending.advance(Stage::Handshaking);
        let connection = Connection {
            context: context.clone(),
            remote,
            pending: Some(pending),
        };
        context.tasks.spawn(connection.run_quic(incoming));
    }
    endpoint.close(quinn::VarInt::from_u32(0), b"hub stopped");
    // The close reaches the edges and the connections drain (3 probe timeouts) before the
    // stop counts this task as done; the role's stop bounds the wait.
    endpoint.wait_idle().await;
}

/// One incoming tunnel connection, from accept to the end of its session.
struct Connection {
    context: Arc<ListenerContext>,
    remote: SocketAddr,
    /// Released when the handshake ends, whatever its outcome.
    pending: Option<PendingLogin>,
}

/// An authenticated edge, ready for its session.
struct Authenticated {
    edge_id: String,
    admission: Box<Admission>,
}

struct Failure {
    edge_id: Option<String>,
    reason: String,
    /// A complete login that was refused (counts towards slowing the source down).
    login_refused: bool,
    /// Not reported (see [`Failure::quiet`]).
    quiet: bool,
}

impl Failure {
    fn before_hello(reason: String) -> Self {
        Self {
            edge_id: None,
            reason,
            login_refused: false,
            quiet: false,
        }
    }

    /// A connection that never sent a ClientHello: counted, neither logged nor an event (an
    /// idle flood would otherwise turn into an event flood).
    fn quiet(reason: String) -> Self {
        Self {
            quiet: true,
            ..Self::before_hello(reason)
        }
    }
}

impl Connection {
    async fn run_tls(mut self, socket: TcpStream) {
        let rtt = tune_tunnel_socket(&socket);
        let config = self.context.tls.config().clone();
        let handshake = async {
            let start = tokio::time::timeout(
                CLIENT_HELLO_DEADLINE,
                tokio_rustls::LazyConfigAcceptor::new(rustls::server::Acceptor::default(), socket),
            )
            .await
            .map_err(|_| {
                Failure::quiet(format!(
                    "no TLS ClientHello within {CLIENT_HELLO_DEADLINE:?}"
                ))
            })?
            .map_err(|e| Failure::before_hello(format!("TLS handshake failed: {e}")))?;
            self.advance(Stage::Handshaking);
            let mut tls = start
                .into_stream(config)
                .await
                .map_err(|e| Failure::before_hello(format!("TLS handshake failed: {e}")))?;
            let binding = ChannelBinding::from_tls(tls.get_ref().1)
                .map_err(|e| Failure::before_hello(e.to_string()))?;
            let mut buffer = BytesMut::with_capacity(8 * 1024);
            let authenticated = self
                .exchange_hello(&mut tls, &mut buffer, binding, |_| ())
                .await?;
            Ok((tls, buffer, authenticated))
        };
        let result = self.within_deadline(handshake).await;
        let Some((tls, leftover, authenticated)) = self.conclude(result) else {
            return;
        };
        let (tunnel, incoming) = Tunnel::start_tls(
            tls,
            leftover,
            Side::Hub,
            &self.context.settings.performance,
            rtt,
            &self.context.tasks,
        );
        self.run_session(authenticated, TunnelTransport::TcpTls, tunnel, incoming)
            .await;
    }

    async fn run_quic(mut self, incoming: quinn::Incoming) {
        let performance = self.context.settings.performance.clone();
        let handshake = async {
            let connection = incoming
                .await
                .map_err(|e| Failure::before_hello(format!("QUIC handshake failed: {e}")))?;
            let login = async {
                let binding = ChannelBinding::from_quic(&connection)
                    .map_err(|e| Failure::before_hello(e.to_string()))?;
                let (send, recv) = connection
                    .accept_bi()
                    .await
                    .map_err(|e| Failure::before_hello(format!("no control stream: {e}")))?;
                let mut control = tokio::io::join(recv, send);
                let mut buffer = BytesMut::with_capacity(8 * 1024);
                let open_up = |admission: &Admission| {
                    quic::open_after_login(&connection, &performance, admission.stream_cap.max());
                };
                match self
                    .exchange_hello(&mut control, &mut buffer, binding, open_up)
                    .await
                {
                    Ok(authenticated) => Ok((control, buffer, authenticated)),
                    Err(failure) => {
                        // Dropping the connection would discard the refusal still in flight:
                        // give the peer a moment to read it and close.
                        let _ = tokio::time::timeout(REFUSAL_LINGER, connection.closed()).await;
                        Err(failure)
                    }
                }
            };
            // Before its login a peer gets no UDP service: datagrams it sends are read and
            // dropped, so that they are not buffered (quinn keeps up to the datagram receive
            // buffer, 8 MiB, per connection until they are read).
            // The login ends on its own when the connection does: it says why.
            let (control, buffer, authenticated) = tokio::select! {
                done = login => done?,
                never = async {
                    quic::discard_datagrams(&connection).await;
                    std::future::pending::<std::convert::Infallible>().await
                } => match never {},
            };
            Ok((connection, control, buffer, authenticated))
        };
        let result = self.within_deadline(handshake).await;
        let Some((connection, control, leftover, authenticated)) = self.conclude(result) else {
            return;
        };
        let (recv, send) = control.into_inner();
        let (tunnel, incoming) = Tunnel::start_quic(
            connection,
            send,
            recv,
            leftover,
            Side::Hub,
            &self.context.tasks,
        );
        self.run_session(authenticated, TunnelTransport::Quic, tunnel, incoming)
            .await;
    }

    fn advance(&self, stage: Stage) {
        if let Some(pending) = self.pending.as_ref() {
            pending.advance(stage);
        }
    }

    /// Runs a handshake under [`HANDSHAKE_DEADLINE`]; `None` when the hub starts stopping
    /// meanwhile. A handshake that has to make way for a newer connection ends as a failure.
    async fn within_deadline<T>(
        &self,
        handshake: impl std::future::Future<Output = Result<T, Failure>>,
    ) -> Option<Result<Result<T, Failure>, tokio::time::error::Elapsed>> {
        let evicted = self
            .pending
            .as_ref()
            .map_or_else(CancellationToken::new, PendingLogin::evicted);
        tokio::select! {
            () = self.context.stop.draining.cancelled() => None,
            () = evicted.cancelled() => Some(Ok(Err(self.evicted_failure()))),
            result = tokio::time::timeout(HANDSHAKE_DEADLINE, handshake) => Some(result),
        }
    }

    /// Why an evicted handshake ended; quiet when the peer had not even sent a ClientHello.
    fn evicted_failure(&self) -> Failure {
        let reason = "made way for a newer connection: too many handshakes in progress";
        match self.pending.as_ref().map(PendingLogin::stage) {
            Some(Stage::Connected) | None => Failure::quiet(reason.to_owned()),
            Some(_) => Failure::before_hello(reason.to_owned()),
        }
    }

    /// Ends the handshake: releases its pending slot with the outcome, reports a failure.
    fn conclude<T>(
        &mut self,
        result: Option<Result<Result<T, Failure>, tokio::time::error::Elapsed>>,
    ) -> Option<T> {
        match result? {
            Ok(Ok(done)) => {
                if let Some(mut pending) = self.pending.take() {
                    pending.outcome = Outcome::Succeeded;
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

    /// Reads the hello line, asks the actor, waits the throttle's delay, and writes the reply
    /// line (with the hub's proof when the login is accepted). The proof is checked before the
    /// delay, so that a verified edge never makes way for another connection while it waits,
    /// and the delay is the same whatever the answer (it depends only on earlier failures).
    /// `open_up` runs once the login is accepted, before the reply is written (QUIC grants the
    /// real windows and stream limits there).
    async fn exchange_hello<S>(
        &self,
        io: &mut S,
        buffer: &mut BytesMut,
        binding: ChannelBinding,
        open_up: impl FnOnce(&Admission),
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
            login_refused: false,
            quiet: false,
        };
        let delay = match self.pending.as_ref() {
            Some(pending) => {
                pending.claims(&edge_id);
                pending.delay(&edge_id)
            }
            None => Duration::ZERO,
        };
        let decision = self
            .context
            .hub
            .authenticate(hello, binding, self.remote, || {
                self.advance(Stage::Verified)
            })
            .await;
        match &decision {
            AuthDecision::Accept(admission) => {
                self.advance(Stage::Verified);
                open_up(admission);
            }
            // Its proof was right too: it never makes way for a guesser while it waits.
            AuthDecision::Duplicate(_) => self.advance(Stage::Verified),
            AuthDecision::Reject { .. } => {}
        }
        if !delay.is_zero() {
            tracing::debug!(remote = %self.remote, ?delay, "slowing a login from a source or for an edge id with failed logins");
            tokio::time::sleep(delay).await;
        }
        let (reply, outcome) = match decision {
            AuthDecision::Reject { reason } => (
                HubReply::Rejected {
                    error: "unauthorized".to_owned(),
                },
                Err(Failure {
                    login_refused: true,
                    ..failure(reason)
                }),
            ),
            // The actor reported it (event, WARN, metric). Not a failed login: this edge knows
            // its secret, so the throttle must not slow it or its address down.
            AuthDecision::Duplicate(refusal) => (
                HubReply::Duplicate(refusal),
                Err(Failure {
                    quiet: true,
                    ..failure("another instance of this edge is connected".to_owned())
                }),
            ),
            AuthDecision::Accept(admission) => (
                HubReply::Accepted {
                    config: Box::new(admission.push.clone()),
                    hub_proof: admission.hub_proof,
                },
                Ok(admission),
            ),
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
            grant: admission.grant,
            stream_cap: admission.stream_cap,
            events: context.events.clone(),
            cancel: admission.cancel,
            drain: admission.drain,
            claim: admission.claim,
            stop: context.stop.clone(),
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

    fn failed(&mut self, failure: Failure) {
        let Failure {
            edge_id,
            reason,
            login_refused,
            quiet,
        } = failure;
        if let Some(mut pending) = self.pending.take() {
            if login_refused {
                pending.outcome = Outcome::Failed;
            }
        }
        if quiet {
            return;
        }
        if self.context.failure_warnings.allow() {
            let edge = edge_id.as_deref().unwrap_or("-");
            // A refused login is an operator's matter (a stale token, a rotated secret) or an
            // attack: WARN. A handshake that broke off before a login is INFO.
            if login_refused {
                tracing::warn!(remote = %self.remote, edge_id = edge, %reason, "edge authentication failed: login refused");
            } else {
                tracing::info!(remote = %self.remote, edge_id = edge, %reason, "edge authentication failed");
            }
        }
        self.context
            .events
            .emit(Event::EdgeAuthFailed(EdgeAuthFailedEvent {
                remote_addr: self.remote.to_string(),
                edge_id,
                reason,
                login_refused,
            }));
    }
}
