//! Dials the hub once: TCP + TLS (with the pinned fingerprint or the CA) or QUIC, as the
//! transport mode says (`quicWithFallback`: QUIC first, TLS after [`QUIC_FALLBACK_AFTER`]), then
//! the mutual login (hello with the edge's proof, reply with the hub's proof:
//! [`crate::transport::login`]). Every failure is a [`ConnectError`] with the reason events and
//! status report; [`super::connector`] decides when to try again.

use std::sync::OnceLock;
use std::time::Duration;

use bytes::BytesMut;
use remoteingress_ipc_schema::{ConnectFailureReason, TransportMode};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use super::EdgeShared;
use crate::config::PerformanceSettings;
use crate::transport::handshake::{self, EdgeConfigPush, HubReply, InstanceId, MAX_REPLY_LEN};
use crate::transport::login::{self, ChannelBinding};
use crate::transport::quic;
use crate::transport::side::Side;
use crate::transport::tunnel::{tune_tunnel_socket, Tunnel, TunnelIncoming};

/// Deadline for one connection attempt (transport handshake + hello + reply).
pub(crate) const CONNECT_DEADLINE: Duration = Duration::from_secs(10);
/// `quicWithFallback`: how long QUIC gets before TLS is tried.
pub(crate) const QUIC_FALLBACK_AFTER: Duration = Duration::from_secs(5);

/// Why a connection attempt failed: the kind (for events, status and the TypeScript side) and
/// a message for people.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub(crate) struct ConnectError {
    pub(crate) reason: ConnectFailureReason,
    pub(crate) message: String,
    /// The pause the hub asked for before the next attempt (a duplicate refusal); `None`: the
    /// edge's own backoff.
    pub(crate) retry_after: Option<Duration>,
}

impl ConnectError {
    pub(crate) fn new(reason: ConnectFailureReason, message: impl Into<String>) -> Self {
        Self {
            reason,
            message: message.into(),
            retry_after: None,
        }
    }
}

/// This process's instance id, made on first use and kept for the life of the process: every
/// tunnel of this process (reconnects, a restarted edge role) is the same instance to the hub,
/// and a second process with the same edge id is another.
pub(crate) fn instance_id() -> &'static InstanceId {
    static INSTANCE: OnceLock<InstanceId> = OnceLock::new();
    INSTANCE.get_or_init(InstanceId::random)
}

use ConnectFailureReason as Why;

/// One connection attempt with the configured transport mode.
pub(crate) async fn connect(shared: &EdgeShared) -> Result<Connected, ConnectError> {
    match shared.settings.transport_mode {
        TransportMode::TcpTls => within(CONNECT_DEADLINE, connect_tls(shared)).await,
        TransportMode::Quic => within(CONNECT_DEADLINE, connect_quic(shared)).await,
        TransportMode::QuicWithFallback => {
            match within(QUIC_FALLBACK_AFTER, connect_quic(shared)).await {
                Ok(connected) => Ok(connected),
                // The hub refused the login: TLS would only be refused again, and count a
                // second failure against this edge and its address in the hub's throttle (or,
                // for a duplicate, repeat the refusal and its WARN line on the hub).
                Err(refused)
                    if matches!(refused.reason, Why::Unauthorized | Why::DuplicateEdge) =>
                {
                    Err(refused)
                }
                Err(quic_error) => {
                    tracing::info!(error = %quic_error, "QUIC failed; falling back to TLS");
                    within(CONNECT_DEADLINE, connect_tls(shared))
                        .await
                        .map_err(|tls_error| ConnectError {
                            // The hub's own verdict says more than a blocked UDP port.
                            reason: match quic_error.reason {
                                Why::Unauthorized | Why::HubNotVerified => quic_error.reason,
                                _ => tls_error.reason,
                            },
                            message: format!("QUIC: {quic_error}; TLS: {tls_error}"),
                            retry_after: tls_error.retry_after,
                        })
                }
            }
        }
    }
}

async fn within(
    deadline: Duration,
    attempt: impl std::future::Future<Output = Result<Connected, ConnectError>>,
) -> Result<Connected, ConnectError> {
    tokio::time::timeout(deadline, attempt)
        .await
        .unwrap_or_else(|_| {
            Err(ConnectError::new(
                Why::Timeout,
                format!("no tunnel within {deadline:?}"),
            ))
        })
}

/// A tunnel that passed the handshake.
pub(crate) type Connected = (Tunnel, TunnelIncoming, EdgeConfigPush);

/// TCP, TLS, hello, reply.
async fn connect_tls(shared: &EdgeShared) -> Result<Connected, ConnectError> {
    let settings = &shared.settings;
    tracing::info!(hub = %settings.hub_host, port = settings.hub_port, "connecting to the hub over TLS");
    let (_, hubs) = resolve_hub(shared).await?;
    let socket = TcpStream::connect(hubs.as_slice()).await.map_err(|e| {
        ConnectError::new(
            Why::Unreachable,
            format!(
                "cannot reach the hub at {}:{}: {e}",
                settings.hub_host, settings.hub_port
            ),
        )
    })?;
    let rtt = tune_tunnel_socket(&socket);
    let connector = tokio_rustls::TlsConnector::from(shared.tls.clone());
    let mut tls = connector
        .connect(crate::tls::server_name(&settings.hub_host), socket)
        .await
        .map_err(|e| handshake_failed("TLS", &e))?;
    let binding = ChannelBinding::from_tls(tls.get_ref().1)
        .map_err(|e| ConnectError::new(Why::Handshake, e.to_string()))?;
    let (leftover, push) = exchange_hello(shared, &mut tls, binding).await?;
    let performance = adopt_performance(shared, &push);
    let (tunnel, incoming) =
        Tunnel::start_tls(tls, leftover, Side::Edge, &performance, rtt, &shared.tasks);
    Ok((tunnel, incoming, push))
}

/// QUIC with the hub's performance settings: a connection's transport parameters (receive
/// windows, keep-alive, idle timeout) are fixed in its handshake, so when the hub's settings
/// (learnt in this connection's reply) give other parameters than the ones it was made with,
/// the edge reconnects once with them, before it opens its ports. The edge keeps them, so this
/// happens once per edge process (and hub config), not on every reconnect.
pub(crate) async fn connect_quic(shared: &EdgeShared) -> Result<Connected, ConnectError> {
    let known = shared.pushed().performance.clone();
    let (tunnel, incoming, push) = connect_quic_with(shared, &known).await?;
    let pushed = adopt_performance(shared, &push);
    let parameters = quic::TransportParameters::from(&pushed);
    if parameters == quic::TransportParameters::from(&known) {
        return Ok((tunnel, incoming, push));
    }
    tracing::info!(
        ?parameters,
        "the hub's performance settings change the QUIC transport parameters: reconnecting once with them"
    );
    tunnel.close();
    let connected = connect_quic_with(shared, &pushed).await?;
    adopt_performance(shared, &connected.2);
    Ok(connected)
}

/// The performance settings for a tunnel whose handshake brought `push`: the hub's over the
/// edge's defaults (the defaults for a hub that sends none), remembered for the next connection.
/// Settings the edge cannot use are said and not applied.
fn adopt_performance(shared: &EdgeShared, push: &EdgeConfigPush) -> PerformanceSettings {
    let mut config = PerformanceSettings::default().to_ipc();
    if let Some(pushed) = &push.performance {
        config = pushed.apply_to(config);
    }
    if let Some(secs) = push.heartbeat_timeout_secs {
        config.heartbeat_timeout_secs = secs;
    }
    if let Some(secs) = push.udp_session_idle_secs {
        config.udp_session_idle_secs = secs;
    }
    let settings = PerformanceSettings::from_ipc(&config, "the hub's performance push")
        .unwrap_or_else(|error| {
            tracing::warn!(%error, "the hub pushed performance settings this edge cannot use; using the defaults");
            PerformanceSettings::default()
        });
    shared.pushed().performance = settings.clone();
    settings
}

/// The hub's addresses (the first, and all), which the firewall is told before the edge dials:
/// no firewall push may cut the edge off from its hub (`firewall::exemption`). A dial blocked
/// until the exemption is in the kernel is retried by the transport (a TCP SYN after 1 s).
async fn resolve_hub(
    shared: &EdgeShared,
) -> Result<(std::net::SocketAddr, Vec<std::net::SocketAddr>), ConnectError> {
    let settings = &shared.settings;
    let hubs: Vec<_> = tokio::net::lookup_host((settings.hub_host.as_str(), settings.hub_port))
        .await
        .map_err(|e| {
            ConnectError::new(
                Why::Unreachable,
                format!("cannot resolve {}: {e}", settings.hub_host),
            )
        })?
        .collect();
    let Some(&first) = hubs.first() else {
        return Err(ConnectError::new(
            Why::Unreachable,
            format!("{} has no address", settings.hub_host),
        ));
    };
    shared
        .hubs
        .send_if_modified(|exemption| exemption.remember(hubs.iter().copied()));
    Ok((first, hubs))
}

/// QUIC handshake (with `performance`'s transport parameters), control stream, hello, reply.
async fn connect_quic_with(
    shared: &EdgeShared,
    performance: &PerformanceSettings,
) -> Result<Connected, ConnectError> {
    let settings = &shared.settings;
    tracing::info!(hub = %settings.hub_host, port = settings.hub_port, "connecting to the hub over QUIC");
    let (hub, _) = resolve_hub(shared).await?;
    let endpoint = quic::client_endpoint(hub)
        .map_err(|e| ConnectError::new(Why::Unreachable, e.to_string()))?;
    let server_name = match crate::tls::server_name(&settings.hub_host) {
        rustls::pki_types::ServerName::DnsName(name) => name.as_ref().to_owned(),
        rustls::pki_types::ServerName::IpAddress(ip) => std::net::IpAddr::from(ip).to_string(),
        _ => "remoteingress-hub".to_owned(),
    };
    let connection = endpoint
        .connect_with(
            quic::with_performance(&shared.quic, performance),
            hub,
            &server_name,
        )
        .map_err(|e| ConnectError::new(Why::Handshake, format!("cannot start QUIC: {e}")))?
        .await
        .map_err(|e| handshake_failed("QUIC", &e))?;
    let (send, recv) = connection.open_bi().await.map_err(|e| {
        ConnectError::new(
            Why::Protocol,
            format!("cannot open the control stream: {e}"),
        )
    })?;
    let binding = ChannelBinding::from_quic(&connection)
        .map_err(|e| ConnectError::new(Why::Handshake, e.to_string()))?;
    let mut control = tokio::io::join(recv, send);
    let (leftover, push) = exchange_hello(shared, &mut control, binding).await?;
    let (recv, send) = control.into_inner();
    // Once the tunnel closes, the endpoint stays until the close has drained (so the hub
    // learns at once that the edge went), and the edge's stop waits for that.
    let closed = connection.clone();
    shared.spawn(async move {
        closed.closed().await;
        endpoint.wait_idle().await;
    });
    let (tunnel, incoming) =
        Tunnel::start_quic(connection, send, recv, leftover, Side::Edge, &shared.tasks);
    Ok((tunnel, incoming, push))
}

/// A failed TLS or QUIC handshake: a pinned fingerprint that does not match is the hub not
/// being verified (its message says both fingerprints and what to do), anything else a
/// handshake failure.
fn handshake_failed(transport: &str, error: &dyn std::fmt::Display) -> ConnectError {
    let text = error.to_string();
    match text.find(crate::tls::FINGERPRINT_MISMATCH) {
        Some(at) => ConnectError::new(Why::HubNotVerified, text[at..].to_owned()),
        None => ConnectError::new(
            Why::Handshake,
            format!("{transport} handshake with the hub failed: {text}"),
        ),
    }
}

/// Sends the hello line with the edge's proof and reads the hub's reply; accepts it only with
/// the hub's proof for this channel. Returns bytes read past the reply.
async fn exchange_hello<S>(
    shared: &EdgeShared,
    io: &mut S,
    binding: ChannelBinding,
) -> Result<(BytesMut, EdgeConfigPush), ConnectError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let settings = &shared.settings;
    if !settings.verifies_hub() {
        tracing::warn!(
            "hub certificate not verified: no hubCertSha256 or hubCaPem given (hubVerified: false)"
        );
    }
    let proof = login::edge_proof(&settings.secret, &binding, &settings.edge_id);
    let protocol = |message: String| ConnectError::new(Why::Protocol, message);
    let hello = handshake::encode_hello(&settings.edge_id, &proof, Some(instance_id()))
        .map_err(|e| protocol(format!("cannot encode the hello: {e}")))?;
    io.write_all(&hello)
        .await
        .map_err(|e| protocol(format!("cannot send the hello: {e}")))?;
    io.flush()
        .await
        .map_err(|e| protocol(format!("cannot send the hello: {e}")))?;
    let mut buffer = BytesMut::with_capacity(16 * 1024);
    let line = handshake::read_line(io, &mut buffer, MAX_REPLY_LEN)
        .await
        .map_err(|e| protocol(format!("no reply from the hub: {e}")))?;
    let reply = handshake::parse_reply(&line).map_err(|e| match e {
        handshake::HandshakeError::MissingHubProof => {
            ConnectError::new(Why::HubNotVerified, e.to_string())
        }
        e => protocol(format!("bad reply from the hub: {e}")),
    })?;
    match reply {
        // The hub says no more than "unauthorized" (an unknown id and a wrong secret look the
        // same to a guesser); these are the two causes, and what fixes them.
        HubReply::Rejected { .. } => Err(ConnectError::new(
            Why::Unauthorized,
            format!(
                "the hub refused edge {}: wrong secret or unknown id; check the token, \
                 re-issue it after a secret rotation (`remoteingress-bin token issue` on the \
                 hub){}",
                settings.edge_id,
                if settings.verifies_hub() {
                    ""
                } else {
                    ". This edge does not verify the hub, so a TLS-terminating relay between \
                     them is refused the same way: pin the hub (hubCertSha256)"
                }
            ),
        )),
        HubReply::Duplicate(refusal) => {
            let proven = refusal.hub_proof().is_some_and(|hub_proof| {
                login::verify_hub_proof(&settings.secret, &binding, &settings.edge_id, &hub_proof)
            });
            if !proven {
                return Err(ConnectError::new(
                    Why::HubNotVerified,
                    "the hub's duplicate-edge refusal carries no valid proof: it does not know \
                     this edge's secret (a man in the middle, or a hub configured with another \
                     secret)",
                ));
            }
            let retry_after = Duration::from_secs(
                refusal
                    .retry_after_secs
                    .map_or(crate::backoff::MAX.as_secs(), u64::from),
            );
            Err(ConnectError {
                reason: Why::DuplicateEdge,
                message: format!(
                    "the hub refused edge {}: another process with this edge id is connected \
                     from {}; each machine needs its own edge id (allow another one on the hub \
                     and give this machine its token), or stop the other process. Trying again \
                     in about {retry_after:?}, and taking over if the other one is gone",
                    settings.edge_id,
                    // Only an address goes into the message and the log, whatever was sent.
                    refusal
                        .connected_from
                        .parse::<std::net::SocketAddr>()
                        .map_or_else(
                            |_| "an address the hub did not say".to_owned(),
                            |a| a.to_string()
                        ),
                ),
                retry_after: Some(retry_after),
            })
        }
        HubReply::Accepted { config, hub_proof } => {
            if login::verify_hub_proof(&settings.secret, &binding, &settings.edge_id, &hub_proof) {
                Ok((buffer, *config))
            } else {
                Err(ConnectError::new(
                    Why::HubNotVerified,
                    "the hub's proof does not match: it does not know this edge's secret (a \
                     man in the middle, or a hub configured with another secret)",
                ))
            }
        }
    }
}
