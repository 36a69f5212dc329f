//! `getStatus` results.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::config::{StreamEventMode, TransportMode};

/// Transport a tunnel actually uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum TunnelTransport {
    TcpTls,
    Quic,
}

/// Public protocol of a listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum PortProtocol {
    Tcp,
    Udp,
}

/// `getStatus` result: the running role's status, or `{"running": false}`.
// Built once per `getStatus` and serialised at once: the size difference costs nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum StatusResult {
    Hub(HubStatus),
    Edge(EdgeStatus),
    Idle(IdleStatus),
}

/// Status when no role runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct IdleStatus {
    /// Always false.
    pub running: bool,
}

/// Marker for the hub role in status objects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum HubRole {
    Hub,
}

/// Marker for the edge role in status objects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum EdgeRole {
    Edge,
}

/// Hub status.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schemars(rename = "IHubStatus")]
pub struct HubStatus {
    pub role: HubRole,
    pub running: bool,
    /// This hub process (a random id it makes at start; a restarted hub has a new one). Edges
    /// show it as `hubInstanceId`.
    #[serde(default)]
    pub instance_id: String,
    /// Port the tunnel listener is bound to (useful when 0 was requested).
    pub tunnel_port: u16,
    /// Hex SHA-256 fingerprint of the certificate the hub serves.
    pub cert_sha256: String,
    pub target_host: String,
    pub stream_event_mode: StreamEventMode,
    /// Number of edges in the allowed list.
    pub allowed_edges: u32,
    pub connected_edges: Vec<ConnectedEdgeStatus>,
    /// Every allowed edge, connected or not: what became of its tunnels.
    #[serde(default)]
    pub edges: Vec<AllowedEdgeState>,
    /// Pending tunnel connections that made way for newer ones because too many handshakes
    /// were in progress (per source or in total); the least advanced go first.
    pub handshakes_refused: u64,
    /// Sources whose logins are delayed now after repeated failed logins.
    pub slowed_sources: u32,
    /// Edge ids whose logins are delayed now after repeated failed logins for them (from any
    /// sources).
    pub slowed_edge_ids: u32,
    /// The hub's resource limits in force.
    pub limits: HubLimitStatus,
    /// Persistent egress listeners (`[[egress]]`, `startEgressTcpListener`), by listen address.
    #[serde(default)]
    pub egress_listeners: Vec<EgressListenerStatus>,
}

/// Where a persistent egress listener comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum EgressListenerSource {
    /// An `[[egress]]` entry of the hub's `--config` file (opened and closed by SIGHUP).
    Config,
    /// `startEgressTcpListener` (closed by `stopEgressTcpListener`).
    Ipc,
}

/// One persistent egress listener and what became of its connections.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schemars(rename = "IEgressListenerStatus")]
pub struct EgressListenerStatus {
    pub listener_id: String,
    pub source: EgressListenerSource,
    /// The address bound.
    pub listen_addr: String,
    pub edge_id: String,
    pub logical_host: String,
    pub port: u16,
    /// Connections open at once, at most.
    pub max_connections: u32,
    /// Connections open now.
    pub open_connections: u64,
    /// Connections accepted since the listener opened (refused ones included).
    pub accepted: u64,
    /// Connections the edge connected to the destination.
    pub connected: u64,
    /// Connections the edge did not connect (denied by its policy, timeout, failure) or that
    /// ended before the edge was asked (no first byte within `idleTimeoutMs`).
    pub failed: u64,
    /// Connections closed at once because the edge was not connected over QUIC.
    pub refused_edge_not_connected: u64,
    /// Connections closed at once because `maxConnections` were open.
    pub refused_full: u64,
}

/// The hub's resource limits in force.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schemars(rename = "IHubLimitStatus")]
pub struct HubLimitStatus {
    /// The process's open-file limit (soft RLIMIT_NOFILE).
    pub open_file_limit: u64,
    /// UDP sessions the hub keeps across all edges: `maxUdpSessions`, or less where the
    /// open-file limit leaves less.
    pub max_udp_sessions: u64,
    /// UDP sessions open now, across all edges.
    pub udp_sessions: u64,
    /// TCP streams and UDP sessions the hub forwards at once across all edges, from the
    /// open-file limit (UDP sessions are further held to `maxUdpSessions`).
    pub max_forwarded: u64,
    /// TCP streams forwarded now, across all edges.
    pub streams: u64,
    /// Streams reset and UDP sessions closed of edges over their fair share of a full budget,
    /// to give the share to an edge within its own.
    pub shares_reclaimed: u64,
}

/// UDP limits of one connected edge, as the hub enforces them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schemars(rename = "IConnectedEdgeLimitStatus")]
pub struct ConnectedEdgeLimitStatus {
    /// UDP sessions the hub keeps for this edge (its `limits.maxUdpSessions`).
    pub max_udp_sessions: u64,
    /// Sessions the hub closed because this edge was at its cap (least recently used first).
    pub udp_evicted: u64,
    /// Sessions the hub refused because the hub-wide cap was reached.
    pub udp_refused: u64,
    /// TCP streams the hub forwards for this edge at once (its `limits.maxStreams`).
    pub max_streams: u64,
    /// Streams refused because this edge or the whole hub was at its stream cap.
    pub streams_refused: u64,
    /// TLS tunnel: streams reset because the hub held more of this edge's unread data than its
    /// window budget (the streams over their share of it); always 0 over QUIC, whose
    /// connection window is the budget.
    pub window_budget_resets: u64,
    /// TLS tunnel: bytes received from this edge that its targets have not read yet.
    pub held_bytes: u64,
}

/// The edge's resource limits in force and what they refused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schemars(rename = "IEdgeLimitStatus")]
pub struct EdgeLimitStatus {
    /// The process's open-file limit (soft RLIMIT_NOFILE).
    pub open_file_limit: u64,
    /// Open public TCP connections the edge takes in all, derived from the open-file limit.
    pub max_connections: u64,
    /// Open public TCP connections one client (IPv4 address or IPv6 prefix) may hold.
    pub max_connections_per_source: u64,
    /// The IPv6 prefix length that counts as one client for the per-client caps.
    pub ipv6_source_prefix: u8,
    pub max_udp_sessions: u64,
    pub max_udp_sessions_per_source: u64,
    pub udp_new_sessions_per_sec: u64,
    pub udp_new_sessions_burst: u64,
    /// TCP connections reset because their address held `maxConnectionsPerSource`.
    pub tcp_refused_per_source: u64,
    /// TCP connections reset because the edge held `maxConnections`.
    pub tcp_refused_capacity: u64,
    /// UDP sessions closed because their address held `maxUdpSessionsPerSource`.
    pub udp_evicted_per_source: u64,
    /// UDP sessions closed because the edge held `maxUdpSessions`.
    pub udp_evicted_capacity: u64,
    /// Datagrams dropped because they would have opened a session above the new-session rate.
    pub udp_rate_limited: u64,
}

/// One connected edge as the hub sees it. Its counters (streams, bytes, datagrams, refusals)
/// count since the edge was allowed, across its reconnects; `limits.windowBudgetResets` and
/// `limits.heldBytes` are of the current tunnel.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schemars(rename = "IConnectedEdgeStatus")]
pub struct ConnectedEdgeStatus {
    pub edge_id: String,
    /// The edge process holding the tunnel (a random id it makes at start; a restarted process
    /// has a new one). Absent for edges older than instance ids.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance_id: Option<String>,
    pub transport: TunnelTransport,
    pub remote_addr: String,
    /// Unix time in milliseconds when the tunnel was established.
    pub connected_at_ms: u64,
    /// Public IP the edge discovered by STUN, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub public_ip: Option<String>,
    pub active_streams: u64,
    pub streams_opened_total: u64,
    pub streams_closed_total: u64,
    /// Bytes from clients towards targets.
    pub bytes_in: u64,
    /// Bytes from targets towards clients.
    pub bytes_out: u64,
    /// UDP sessions open now.
    pub udp_sessions: u64,
    /// UDP datagrams dropped (queue full, unknown session, socket busy).
    pub udp_dropped: u64,
    /// UDP datagrams from clients towards the target, and back.
    #[serde(default)]
    pub udp_datagrams_in: u64,
    #[serde(default)]
    pub udp_datagrams_out: u64,
    /// Streams whose target could not be reached (refused, timed out).
    #[serde(default)]
    pub target_connect_errors: u64,
    /// Streams and UDP sessions refused because their port is not assigned to this edge.
    pub refused_ports: u64,
    /// Streams and UDP sessions refused because the edge claimed a client address no public
    /// client can have (loopback, unspecified, multicast, its own; see `privateClients`).
    #[serde(default)]
    pub refused_sources: u64,
    /// Features this tunnel supports (e.g. `egress` on QUIC).
    pub capabilities: Vec<String>,
    pub egress_enabled: bool,
    /// Egress streams open through this edge now.
    #[serde(default)]
    pub egress_streams: u64,
    /// UDP limits the hub enforces for this edge, and what they closed or refused.
    pub limits: ConnectedEdgeLimitStatus,
    /// The firewall as the edge reported it.
    pub firewall: ConnectedEdgeFirewallStatus,
    /// Assigned ports the edge reported it could not bind (it keeps retrying them).
    #[serde(default)]
    pub port_bind_failures: Vec<PortBindFailure>,
}

/// One allowed edge as the hub knows it, connected or not. Kept from the moment the edge is
/// allowed until it is removed from the list, across its reconnects.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schemars(rename = "IAllowedEdgeState")]
pub struct AllowedEdgeState {
    pub edge_id: String,
    /// True while a tunnel of this edge is up.
    pub connected: bool,
    /// Transport of its tunnel while connected.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transport: Option<TunnelTransport>,
    /// Tunnels this edge has established since it was allowed (each reconnect adds one).
    pub tunnels: u64,
    /// Why its last tunnel ended or its last login was refused, if either happened.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// Unix time in milliseconds of `lastError`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error_at_ms: Option<u64>,
}

/// Where an edge's firewall stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum FirewallState {
    /// No snapshot received, or none configured (no table).
    None,
    /// The snapshot is in force in the kernel.
    Applied,
    /// The host cannot run the firewall (no CAP_NET_ADMIN, no nf_tables); see `error`.
    Unavailable,
    /// The last snapshot was refused (invalid, or rejected by the kernel); the previous rules
    /// stay in force. See `error`.
    Failed,
}

/// The edge's firewall in its own status.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schemars(rename = "IEdgeFirewallStatus")]
pub struct EdgeFirewallStatus {
    pub state: FirewallState,
    /// Why the firewall is unavailable or the last snapshot failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Counts of the snapshot in force (0 when none).
    pub rule_count: u32,
    pub set_count: u32,
    pub blocked_ranges: u64,
    /// Duration of the last successful kernel transaction, in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<u64>,
    /// Unix time in milliseconds of the last successful apply.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub applied_at_ms: Option<u64>,
}

/// A connected edge's firewall as the hub knows it from the edge's reports.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schemars(rename = "IConnectedEdgeFirewallStatus")]
pub struct ConnectedEdgeFirewallStatus {
    /// The edge's last reported state (`none` until it reports).
    pub state: FirewallState,
    /// True when the edge reported applying the snapshot the hub pushed last (or, with no
    /// snapshot configured, having none).
    pub in_sync: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// A public listener that could not be bound.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PortBindFailure {
    pub port: u16,
    pub protocol: PortProtocol,
    pub error: String,
}

/// Edge status.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schemars(rename = "IEdgeStatus")]
pub struct EdgeStatus {
    pub role: EdgeRole,
    pub running: bool,
    pub edge_id: String,
    /// This process's instance id, as the hub shows it for the tunnel (`connectedEdges[]`).
    #[serde(default)]
    pub instance_id: String,
    /// The hub process the edge is connected to, or was last (its `instanceId`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hub_instance_id: Option<String>,
    /// `host:port` of the hub.
    pub hub: String,
    pub transport_mode: TransportMode,
    /// True while a tunnel to the hub is up.
    pub connected: bool,
    /// Transport of the current tunnel.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transport: Option<TunnelTransport>,
    /// True when the hub certificate was checked against a pinned fingerprint.
    pub hub_verified: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub public_ip: Option<String>,
    pub active_streams: u64,
    /// Client connections tunnelled since the edge started.
    #[serde(default)]
    pub streams_opened_total: u64,
    /// Bytes from clients towards the hub, and back, of finished connections.
    #[serde(default)]
    pub bytes_in: u64,
    #[serde(default)]
    pub bytes_out: u64,
    /// TCP ports currently listening.
    pub listen_ports: Vec<u16>,
    /// UDP ports currently listening.
    pub listen_ports_udp: Vec<u16>,
    pub port_bind_failures: Vec<PortBindFailure>,
    /// UDP sessions open now.
    pub udp_sessions: u64,
    /// UDP datagrams dropped (tunnel queue full, socket busy, tunnel down).
    pub udp_dropped: u64,
    /// UDP datagrams from clients towards the hub, and back.
    #[serde(default)]
    pub udp_datagrams_in: u64,
    #[serde(default)]
    pub udp_datagrams_out: u64,
    /// Resource limits in force and what they refused.
    pub limits: EdgeLimitStatus,
    /// Flow control in force on the edge's side of the tunnel (its receive windows carry the
    /// downloads): the hub's `performance` settings once connected, the defaults before.
    pub performance: crate::PerformanceConfig,
    /// The firewall snapshot in force on this edge.
    pub firewall: EdgeFirewallStatus,
    /// Consecutive failed connection attempts since the last successful one.
    pub reconnect_attempts: u32,
    /// Last reason the tunnel went down or failed to come up.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// The kind of the last failed connection attempt (cleared when a tunnel comes up).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error_reason: Option<crate::events::ConnectFailureReason>,
}
