//! The edge role: connects to the hub, listens on the public ports the hub assigns and tunnels
//! every client connection.
//!
//! The path of one client connection: [`ports`] holds a listener per assigned port ->
//! [`accept`] builds the PROXY v1 line and opens a tunnel stream (or resets the client at once
//! while the tunnel is down) -> [`crate::relay`]. [`connector`] keeps the tunnel up (reconnect
//! with jittered backoff) and [`session`] applies what the hub pushes.

pub(crate) mod accept;
pub(crate) mod connector;
pub(crate) mod dial;
pub(crate) mod egress;
pub(crate) mod firewall;
pub(crate) mod limits;
pub(crate) mod ports;
pub(crate) mod public_ip;
pub(crate) mod session;
pub(crate) mod udp;

use std::sync::{Arc, Mutex, MutexGuard};

use remoteingress_ipc_schema::{
    EdgeLimitStatus, EdgeRole, EdgeStatus, PortBindFailure, TransportMode, TunnelTransport,
};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::{EdgeLimitSettings, EdgeSettings, PerformanceSettings};
use crate::events::EventSink;
use crate::metrics::{StreamStats, UdpStats};
use crate::shutdown::StopTokens;
use crate::tls::TlsError;
use crate::transport::tunnel::Tunnel;

/// Why an edge could not start.
#[derive(Debug, thiserror::Error)]
pub enum EdgeStartError {
    #[error("TLS: {0}")]
    Tls(#[from] TlsError),
    #[error("QUIC: {0}")]
    Quic(#[from] crate::transport::quic::QuicSetupError),
}

/// Mutable edge state shown in status. Updated by the connector and session tasks; the lock is
/// only ever held for a field update or a status copy, never across an await.
#[derive(Debug, Default)]
pub(crate) struct EdgeState {
    pub(crate) connected: bool,
    pub(crate) transport: Option<TunnelTransport>,
    pub(crate) listen_ports: Vec<u16>,
    pub(crate) listen_ports_udp: Vec<u16>,
    pub(crate) port_bind_failures: Vec<PortBindFailure>,
    pub(crate) reconnect_attempts: u32,
    pub(crate) last_error: Option<String>,
    pub(crate) last_error_reason: Option<remoteingress_ipc_schema::ConnectFailureReason>,
    pub(crate) public_ip: Option<String>,
    /// Re-discovery interval pushed by the hub.
    pub(crate) stun_interval_secs: Option<u32>,
    /// Limits pushed by the hub (the defaults until then).
    pub(crate) limits: EdgeLimitSettings,
    /// Performance settings pushed by the hub, as checked by the edge (the defaults until
    /// then); kept for the next connection, since QUIC fixes its windows in the handshake.
    pub(crate) performance: PerformanceSettings,
    /// The firewall snapshot in force and the outcome of the last one.
    pub(crate) firewall: firewall::FirewallView,
}

/// What the edge's tasks share.
#[derive(Debug)]
pub(crate) struct EdgeShared {
    pub(crate) settings: EdgeSettings,
    pub(crate) events: EventSink,
    pub(crate) state: Mutex<EdgeState>,
    pub(crate) stats: StreamStats,
    pub(crate) udp_stats: Arc<UdpStats>,
    /// Open public TCP connections, per client address and in all.
    pub(crate) connections: Arc<limits::ConnectionLimiter>,
    /// The current tunnel; `None` while disconnected (new clients are then reset at once).
    pub(crate) tunnel: watch::Sender<Option<Tunnel>>,
    /// The firewall snapshot the hub pushed last, for the firewall task.
    pub(crate) firewall: watch::Sender<firewall::Desired>,
    /// The hub's tunnel endpoints this edge resolved, which the firewall always lets through.
    pub(crate) hubs: watch::Sender<crate::firewall::exemption::Exemption>,
    /// Draining (listeners closed), then shut down (connections reset).
    pub(crate) stop: StopTokens,
    pub(crate) tasks: TaskTracker,
    pub(crate) tls: Arc<rustls::ClientConfig>,
    /// QUIC's client configuration; each connection gets its transport parameters from the
    /// performance settings the edge knows then (`EdgeState::performance`).
    pub(crate) quic: quinn::ClientConfig,
    /// The egress policy the hub pushed last, and the egress streams open now.
    pub(crate) egress: Arc<egress::EdgeEgress>,
    /// `edge{edge_id=..}`: every log line of the edge's tasks carries its id.
    pub(crate) span: tracing::Span,
}

impl EdgeShared {
    /// Runs `task` as one of the edge's tasks (stopped and awaited with the edge), inside the
    /// edge's log span.
    pub(crate) fn spawn<F>(&self, task: F)
    where
        F: std::future::Future<Output = ()> + Send + 'static,
    {
        use tracing::Instrument;
        self.tasks.spawn(task.instrument(self.span.clone()));
    }

    pub(crate) fn state(&self) -> MutexGuard<'_, EdgeState> {
        crate::sync::lock(&self.state)
    }
}

/// Handle to a running edge.
#[derive(Clone, Debug)]
pub struct Edge {
    shared: Arc<EdgeShared>,
}

impl Edge {
    /// Starts an edge: it connects (and keeps reconnecting) in the background.
    pub async fn start(settings: EdgeSettings, events: EventSink) -> Result<Self, EdgeStartError> {
        let tls =
            crate::tls::edge_client_config(settings.hub_cert_sha256, settings.hub_ca.as_deref())?;
        let quic =
            crate::transport::quic::client_config(tls.clone(), &PerformanceSettings::default())?;
        let (tunnel, _) = watch::channel(None);
        let (firewall, desired_firewall) = watch::channel(None);
        let (hubs, hub_endpoints) = watch::channel(Default::default());
        let settings_edge_id = settings.edge_id.clone();
        let shared = Arc::new(EdgeShared {
            settings,
            events,
            state: Mutex::new(EdgeState::default()),
            stats: StreamStats::default(),
            udp_stats: Arc::new(UdpStats::default()),
            connections: Arc::new(limits::ConnectionLimiter::new(limits::ConnectionCaps::new(
                crate::fd_limit::edge_connections(crate::fd_limit::current(), 0),
                EdgeLimitSettings::default().max_connections_per_source,
                EdgeLimitSettings::default().ipv6_source_prefix,
            ))),
            tunnel,
            firewall,
            hubs,
            stop: StopTokens::new(),
            tasks: TaskTracker::new(),
            tls,
            quic,
            egress: Arc::default(),
            span: tracing::info_span!("edge", edge_id = %settings_edge_id),
        });
        shared.spawn(connector::run(shared.clone()));
        shared.spawn(public_ip::run(shared.clone()));
        shared.spawn(firewall::run(
            shared.clone(),
            desired_firewall,
            hub_endpoints,
        ));
        Ok(Self { shared })
    }

    /// Current status.
    pub async fn status(&self) -> Option<EdgeStatus> {
        let settings = &self.shared.settings;
        let stats = self.shared.stats.snapshot();
        let state = self.shared.state();
        Some(EdgeStatus {
            role: EdgeRole::Edge,
            running: !self.shared.stop.shutdown.is_cancelled(),
            edge_id: settings.edge_id.clone(),
            hub: format!("{}:{}", settings.hub_host, settings.hub_port),
            transport_mode: settings.transport_mode,
            connected: state.connected,
            transport: state.transport,
            hub_verified: settings.verifies_hub() && state.connected,
            public_ip: state.public_ip.clone(),
            active_streams: stats.active,
            streams_opened_total: stats.opened_total,
            bytes_in: stats.bytes_in,
            bytes_out: stats.bytes_out,
            listen_ports: state.listen_ports.clone(),
            listen_ports_udp: state.listen_ports_udp.clone(),
            port_bind_failures: state.port_bind_failures.clone(),
            udp_sessions: self.shared.udp_stats.sessions(),
            udp_dropped: self.shared.udp_stats.dropped(),
            udp_datagrams_in: self.shared.udp_stats.datagrams().0,
            udp_datagrams_out: self.shared.udp_stats.datagrams().1,
            limits: self.limit_status(&state.limits),
            performance: state.performance.to_ipc(),
            firewall: state.firewall.status.clone(),
            reconnect_attempts: state.reconnect_attempts,
            last_error: state.last_error.clone(),
            last_error_reason: state.last_error_reason,
        })
    }

    /// The limits in force and what they refused.
    fn limit_status(&self, limits: &EdgeLimitSettings) -> EdgeLimitStatus {
        let caps = self.shared.connections.caps();
        let (tcp_refused_per_source, tcp_refused_capacity) = self.shared.connections.refused();
        let udp = &self.shared.udp_stats;
        EdgeLimitStatus {
            open_file_limit: crate::fd_limit::current(),
            max_connections: caps.max_total,
            max_connections_per_source: caps.max_per_source,
            ipv6_source_prefix: caps.ipv6_prefix,
            max_udp_sessions: limits.max_udp_sessions.into(),
            max_udp_sessions_per_source: limits.max_udp_sessions_per_source.into(),
            udp_new_sessions_per_sec: limits.udp_new_sessions_per_sec.into(),
            udp_new_sessions_burst: limits.udp_new_sessions_burst.into(),
            tcp_refused_per_source,
            tcp_refused_capacity,
            udp_evicted_per_source: UdpStats::get(&udp.evicted_per_source),
            udp_evicted_capacity: UdpStats::get(&udp.evicted_capacity),
            udp_rate_limited: UdpStats::get(&udp.rate_limited),
        }
    }

    /// Stops the edge: closes the listeners, lets open client connections finish within the
    /// grace period (or until `hurry`), resets the rest, closes the tunnel, removes the firewall
    /// table and waits for its tasks (bounded).
    pub async fn stop(&self, hurry: &CancellationToken) {
        let shared = &self.shared;
        crate::shutdown::stop(
            "edge",
            &shared.stop,
            &shared.tasks,
            shared.settings.shutdown_grace,
            hurry,
            || shared.stats.snapshot().active,
        )
        .await;
    }

    /// The configured transport mode.
    pub fn transport_mode(&self) -> TransportMode {
        self.shared.settings.transport_mode
    }
}
