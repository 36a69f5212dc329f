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

/// The edge's mutable state, split by the one task that writes each part. The hub keeps its
/// registry of edges in an actor; the edge has no registry, only these facts, and each has a
/// single writer while status and the report to the hub read copies. A lock is only ever held
/// for a field update or a copy, never across an await, and never two at once.
#[derive(Debug, Default)]
pub(crate) struct EdgeState {
    /// The tunnel to the hub; written by `connector` and its `session`.
    pub(crate) link: Mutex<LinkState>,
    /// What the hub pushed; written by `session` (and `dial`, which adopts the performance
    /// settings of a new connection).
    pub(crate) pushed: Mutex<PushedSettings>,
    /// The public ports; written by `ports`.
    pub(crate) ports: Mutex<PortsState>,
    /// The address STUN found; written by `public_ip`.
    pub(crate) public_ip: Mutex<Option<String>>,
    /// The firewall snapshot in force and the outcome of the last one; written by `firewall`.
    pub(crate) firewall: Mutex<firewall::FirewallView>,
}

/// The tunnel to the hub as status shows it.
#[derive(Debug, Default, Clone)]
pub(crate) struct LinkState {
    pub(crate) connected: bool,
    pub(crate) transport: Option<TunnelTransport>,
    pub(crate) reconnect_attempts: u32,
    pub(crate) last_error: Option<String>,
    pub(crate) last_error_reason: Option<remoteingress_ipc_schema::ConnectFailureReason>,
}

/// What the hub pushed last (the defaults until then).
#[derive(Debug, Default)]
pub(crate) struct PushedSettings {
    /// Re-discovery interval of the public IP.
    pub(crate) stun_interval_secs: Option<u32>,
    pub(crate) limits: EdgeLimitSettings,
    /// As checked by the edge; kept for the next connection, since QUIC fixes its windows in
    /// the handshake.
    pub(crate) performance: PerformanceSettings,
    /// The hub process that pushed last.
    pub(crate) hub_instance_id: Option<String>,
}

/// The public ports listening now, and the assigned ones that could not be bound.
#[derive(Debug, Default, Clone)]
pub(crate) struct PortsState {
    pub(crate) listen_ports: Vec<u16>,
    pub(crate) listen_ports_udp: Vec<u16>,
    pub(crate) port_bind_failures: Vec<PortBindFailure>,
}

/// What the edge's tasks share.
#[derive(Debug)]
pub(crate) struct EdgeShared {
    pub(crate) settings: EdgeSettings,
    pub(crate) events: EventSink,
    pub(crate) state: EdgeState,
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
    /// performance settings the edge knows then (`PushedSettings::performance`).
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

    pub(crate) fn link(&self) -> MutexGuard<'_, LinkState> {
        crate::sync::lock(&self.state.link)
    }

    pub(crate) fn pushed(&self) -> MutexGuard<'_, PushedSettings> {
        crate::sync::lock(&self.state.pushed)
    }

    pub(crate) fn ports(&self) -> MutexGuard<'_, PortsState> {
        crate::sync::lock(&self.state.ports)
    }

    pub(crate) fn public_ip(&self) -> MutexGuard<'_, Option<String>> {
        crate::sync::lock(&self.state.public_ip)
    }

    pub(crate) fn firewall_view(&self) -> MutexGuard<'_, firewall::FirewallView> {
        crate::sync::lock(&self.state.firewall)
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
            state: EdgeState::default(),
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
        // One copy per part, one lock at a time.
        let link = self.shared.link().clone();
        let ports = self.shared.ports().clone();
        let (limits, performance, hub_instance_id) = {
            let pushed = self.shared.pushed();
            (
                pushed.limits,
                pushed.performance.to_ipc(),
                pushed.hub_instance_id.clone(),
            )
        };
        let firewall = self.shared.firewall_view().status.clone();
        let public_ip = self.shared.public_ip().clone();
        Some(EdgeStatus {
            role: EdgeRole::Edge,
            running: !self.shared.stop.shutdown.is_cancelled(),
            edge_id: settings.edge_id.clone(),
            instance_id: dial::instance_id().to_string(),
            hub_instance_id,
            hub: format!("{}:{}", settings.hub_host, settings.hub_port),
            transport_mode: settings.transport_mode,
            connected: link.connected,
            transport: link.transport,
            hub_verified: settings.verifies_hub() && link.connected,
            public_ip,
            active_streams: stats.active,
            streams_opened_total: stats.opened_total,
            bytes_in: stats.bytes_in,
            bytes_out: stats.bytes_out,
            listen_ports: ports.listen_ports,
            listen_ports_udp: ports.listen_ports_udp,
            port_bind_failures: ports.port_bind_failures,
            udp_sessions: self.shared.udp_stats.sessions(),
            udp_dropped: self.shared.udp_stats.dropped(),
            udp_datagrams_in: self.shared.udp_stats.datagrams().0,
            udp_datagrams_out: self.shared.udp_stats.datagrams().1,
            limits: self.limit_status(&limits),
            performance,
            firewall,
            reconnect_attempts: link.reconnect_attempts,
            last_error: link.last_error,
            last_error_reason: link.last_error_reason,
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
