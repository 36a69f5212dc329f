//! Events the binary writes unprompted: `{"event": "<name>", "data": {...}}` (docs/architecture.md, "IPC contract").

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::config::FirewallConfig;
use crate::status::{PortProtocol, TunnelTransport};

/// Every event, tagged by its name.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "event", content = "data", rename_all = "camelCase")]
pub enum Event {
    /// First line of a management session.
    Ready(ReadyEvent),
    /// A line on stdin that could not be handled as a request.
    IpcError(IpcErrorEvent),
    // ---- hub ----
    EdgeConnected(EdgeConnectedEvent),
    EdgeDisconnected(EdgeDisconnectedEvent),
    EdgeAuthFailed(EdgeAuthFailedEvent),
    EdgeDuplicateRefused(EdgeDuplicateRefusedEvent),
    StreamOpened(StreamOpenedEvent),
    StreamClosed(StreamClosedEvent),
    StreamSummary(StreamSummaryEvent),
    EgressConnection(EgressConnectionEvent),
    // ---- edge ----
    TunnelConnected(TunnelConnectedEvent),
    TunnelDisconnected(TunnelDisconnectedEvent),
    TunnelConnectFailed(TunnelConnectFailedEvent),
    PublicIpDiscovered(PublicIpDiscoveredEvent),
    PortsAssigned(PortsEvent),
    PortsUpdated(PortsEvent),
    PortBindFailed(PortBindFailedEvent),
    FirewallConfigUpdated(FirewallConfigUpdatedEvent),
    FirewallUnavailable(FirewallUnavailableEvent),
}

/// Version of the IPC protocol announced in `ready`.
pub const PROTOCOL_VERSION: u32 = 1;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ReadyEvent {
    /// Crate version of the binary.
    pub version: String,
    /// IPC protocol version (currently 1).
    pub protocol: u32,
    /// Process id.
    pub pid: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct IpcErrorEvent {
    /// What was wrong with the line.
    pub message: String,
    /// The offending line, cut to 200 characters.
    pub line: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EdgeConnectedEvent {
    pub edge_id: String,
    pub transport: TunnelTransport,
    pub remote_addr: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EdgeDisconnectedEvent {
    pub edge_id: String,
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EdgeAuthFailedEvent {
    pub remote_addr: String,
    /// The id the peer claimed, when it got that far.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub edge_id: Option<String>,
    pub reason: String,
    /// A complete login that was refused (wrong secret or unknown edge id), as opposed to a
    /// connection that failed before or during the handshake.
    #[serde(default)]
    pub login_refused: bool,
}

/// A second edge process (another instance) logged in with the id of an edge that is connected,
/// and was refused: two machines share one edge id. The connected one keeps its tunnel; the
/// refused one tries again after `retryAfterSecs` (and takes over once the first is gone).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EdgeDuplicateRefusedEvent {
    pub edge_id: String,
    /// Where the connected instance's tunnel comes from.
    pub connected_addr: String,
    /// Where the refused instance connected from.
    pub refused_addr: String,
    /// The pause the refused instance was told to keep before its next attempt.
    pub retry_after_secs: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct StreamOpenedEvent {
    pub edge_id: String,
    pub stream_id: u64,
    /// Client `ip:port` as the edge saw it.
    pub client_addr: String,
    /// Public port the client connected to.
    pub port: u16,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct StreamClosedEvent {
    pub edge_id: String,
    pub stream_id: u64,
    /// Bytes from the client towards the target.
    pub bytes_in: u64,
    /// Bytes from the target towards the client.
    pub bytes_out: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct StreamSummaryEvent {
    pub edge_id: String,
    pub active_streams: u64,
    pub streams_opened_total: u64,
    pub streams_closed_total: u64,
}

/// Result of one egress dial.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum EgressOutcome {
    /// The edge dialled the destination; bytes flow.
    Connected,
    /// The edge's policy refused it (`rule` says which rule).
    Denied,
    /// Resolving or dialling failed (`error`), or the edge could not be asked.
    Failed,
    /// No connection within `connectTimeoutMs`.
    Timeout,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EgressConnectionEvent {
    /// The one-shot proxy's `proxyId`, or the persistent listener's `listenerId`.
    pub proxy_id: String,
    pub edge_id: String,
    pub logical_host: String,
    pub port: u16,
    pub outcome: EgressOutcome,
    /// The address the edge dialled (or tried last).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolved_ip: Option<String>,
    /// The policy rule that refused (`denied`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TunnelConnectedEvent {
    pub transport: TunnelTransport,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TunnelDisconnectedEvent {
    pub reason: String,
}

/// Why an edge could not connect to its hub.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(rename = "TConnectFailureReason")]
pub enum ConnectFailureReason {
    /// The hub's address could not be resolved or reached (refused, no route).
    Unreachable,
    /// The TLS or QUIC handshake failed (certificate pin or CA, protocol).
    Handshake,
    /// The hub refused the login (unknown edge id or wrong secret).
    Unauthorized,
    /// The hub could not prove it knows this edge's secret.
    HubNotVerified,
    /// No tunnel within the connect deadline.
    Timeout,
    /// The hub answered with something that is not the tunnel protocol.
    Protocol,
    /// Another process with this edge id is connected to the hub (two machines share the id);
    /// the edge waits the hub's `retryAfterSecs` before it tries again.
    DuplicateEdge,
}

/// One failed attempt to reach the hub; another follows after `retryInMs`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TunnelConnectFailedEvent {
    pub reason: ConnectFailureReason,
    pub message: String,
    /// Consecutive failed attempts, this one included.
    pub attempt: u32,
    /// When the next attempt starts.
    pub retry_in_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PublicIpDiscoveredEvent {
    pub ip: String,
}

/// The edge's listening ports (`portsAssigned` on connect, `portsUpdated` on a push).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PortsEvent {
    pub listen_ports: Vec<u16>,
    pub listen_ports_udp: Vec<u16>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PortBindFailedEvent {
    pub port: u16,
    pub protocol: PortProtocol,
    pub error: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FirewallConfigUpdatedEvent {
    /// The snapshot that is now in force.
    pub rules: FirewallConfig,
    /// Rules in the edge's table (all chains).
    pub rule_count: u32,
    /// Named sets in the edge's table (blocklists, per-source meters).
    pub set_count: u32,
    /// Blocked address ranges after merging overlapping and adjacent entries.
    pub blocked_ranges: u64,
    /// How long the kernel transaction took, in milliseconds.
    pub duration_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FirewallUnavailableEvent {
    /// The kernel's error (no CAP_NET_ADMIN, no nf_tables); the tunnel keeps working.
    pub error: String,
}
