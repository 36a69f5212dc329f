//! Configuration types: what `start` and `updateAllowedEdges` carry (README.md documents each field).
//!
//! Every type rejects unknown fields so a typo in an operator's config is an error, never silently
//! ignored. Defaults live in the `default_*` functions next to the field that uses them, so the
//! JSON Schema and the Rust code agree on them.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::Secret;

/// How the hub reports individual streams over IPC.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(rename = "TStreamEventMode")]
pub enum StreamEventMode {
    /// `streamOpened` / `streamClosed` for every stream (default; for debugging and compatibility).
    #[default]
    PerStream,
    /// One `streamSummary` per connected edge per second, no per-stream events.
    Summary,
    /// No stream events at all; poll `getStatus` for counters.
    Off,
}

/// The PROXY header the hub writes in front of what it forwards to a target: set for the hub
/// (`proxyProtocol`), overridden per allowed edge and per port (`targetPorts`), the most specific
/// winning. v1 has no UDP form: a UDP target gets PROXY v2 unless the choice is `none`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum ProxyProtocolVersion {
    /// Text header, forwarded verbatim as the edge built it (TCP; UDP targets get v2).
    #[default]
    V1,
    /// Binary v2 header: STREAM for TCP, DGRAM for UDP (see `udpProxyHeader`).
    V2,
    /// No header: the target gets exactly what the client sent (for targets that do not speak
    /// PROXY, such as sshd, DNS, WireGuard or game servers).
    None,
}

/// Which datagrams of a UDP session carry the PROXY v2 DGRAM header (when the port has one at
/// all, see `proxyProtocol`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum UdpProxyHeaderMode {
    /// Only the first datagram of each session (default).
    #[default]
    First,
    /// Every datagram.
    Every,
}

/// PEM certificate and key the hub serves on its tunnel port.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schemars(rename = "ITlsConfig")]
pub struct TlsConfig {
    /// PEM-encoded certificate chain (leaf first).
    pub cert_pem: String,
    /// PEM-encoded private key (PKCS#8, PKCS#1 or SEC1).
    pub key_pem: Secret,
}

/// Hub configuration (`start` with `role: "hub"`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schemars(rename = "IHubConfig")]
pub struct HubConfig {
    /// Port for edge tunnels: TCP (TLS) and UDP (QUIC) on the same number. Default 8443.
    #[serde(default = "default_hub_port")]
    pub tunnel_port: u16,
    /// Local IP address the tunnel port binds to (TCP and UDP), e.g. the address of the one
    /// interface edges reach; all addresses (IPv6 dual-stack, else IPv4) when omitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tunnel_bind_address: Option<String>,
    /// Host the hub forwards tunneled traffic to; the target port equals the edge's public port.
    #[serde(default = "default_target_host")]
    pub target_host: String,
    /// Certificate and key; when omitted the hub uses its generated identity (see `stateDir`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsConfig>,
    /// Directory for the hub's state: its generated certificate and key
    /// (`hub-identity.pem`, 0600), made on first start and reused after, so a restarted hub keeps
    /// the fingerprint its edges pinned. Without `tls` and without a state directory the hub
    /// generates a new certificate at every start.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state_dir: Option<String>,
    /// Stream telemetry mode. Default `perStream`.
    #[serde(default)]
    pub stream_event_mode: StreamEventMode,
    /// PROXY header in front of forwarded traffic, unless an allowed edge or a port says
    /// otherwise: `v1`, `v2` or `none`. When omitted, TCP targets get `v1` and UDP targets `v2`;
    /// a UDP port left at an explicit `v1` gets `v2` too (v1 has no UDP form), and the hub warns.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proxy_protocol: Option<ProxyProtocolVersion>,
    /// Which UDP datagrams carry the PROXY v2 header: `first` of each session (default) or
    /// `every` one. Ports whose `proxyProtocol` is `none` get no header at all.
    #[serde(default)]
    pub udp_proxy_header: UdpProxyHeaderMode,
    /// Flow-control, QoS and timing knobs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub performance: Option<PerformanceConfig>,
    /// Most UDP sessions the hub keeps open across all edges (each holds one socket towards the
    /// target). Default 131072; never more than half of what the open-file limit leaves.
    #[serde(default = "default_hub_max_udp_sessions")]
    pub max_udp_sessions: u32,
    /// Graceful stop (SIGTERM, SIGINT, IPC `stop`): seconds that open streams get to finish
    /// after the listeners close; the rest are then reset. Default 10; 0 stops at once; at most
    /// 3600. A second SIGTERM/SIGINT ends the wait at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shutdown_grace_secs: Option<u32>,
    /// `host:port` for Prometheus `/metrics` and `/healthz` / `/readyz` over HTTP (e.g.
    /// `127.0.0.1:9100`); off when omitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics_addr: Option<String>,
}

impl HubConfig {
    /// Default of `maxUdpSessions`.
    pub const DEFAULT_MAX_UDP_SESSIONS: u32 = 131_072;
}

fn default_hub_max_udp_sessions() -> u32 {
    HubConfig::DEFAULT_MAX_UDP_SESSIONS
}

pub(crate) fn default_hub_port() -> u16 {
    8443
}

fn default_target_host() -> String {
    "127.0.0.1".to_owned()
}

/// Flow-control, QoS and timing knobs of the hub. The hub pushes them to every edge when it
/// connects, so both directions of each tunnel follow them (an edge's receive windows carry the
/// downloads); an edge's status shows them as `performance`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schemars(rename = "IPerformanceConfig")]
pub struct PerformanceConfig {
    /// Largest per-stream receive window: TLS tunnel streams start at up to 4 MiB and auto-tune
    /// toward this when the path's round trip needs more; QUIC streams get it (at most 4 MiB)
    /// as their window. Default 32 MiB.
    #[serde(default = "default_window_max")]
    pub stream_window_max_bytes: u32,
    /// Smallest per-stream send window (also the window of sustained streams). Default 1 MiB.
    #[serde(default = "default_window_min")]
    pub stream_window_min_bytes: u32,
    /// Budget shared by all streams' windows (at least `streamWindowMinBytes`). Default 200 MiB.
    #[serde(default = "default_window_budget")]
    pub window_budget_bytes: u64,
    /// Age after which a fast stream counts as sustained. Default 1 s: a stream that averaged
    /// more than `sustainedThresholdMbps` for a second is bulk, and yields to interactive ones.
    #[serde(default = "default_sustained_after")]
    pub sustained_after_secs: u32,
    /// Average rate above which an old stream counts as sustained. Default 20 Mbit/s.
    #[serde(default = "default_sustained_threshold")]
    pub sustained_threshold_mbps: u32,
    /// Rate guaranteed to the sustained queue. Default 1 MiB/s.
    #[serde(default = "default_sustained_drain")]
    pub sustained_drain_bytes_per_sec: u64,
    /// Idle time after which a UDP session is closed on both sides. Default 60 s.
    #[serde(default = "default_udp_idle")]
    pub udp_session_idle_secs: u32,
    /// Interval of the hub's PING. Default 3 s.
    #[serde(default = "default_heartbeat_interval")]
    pub heartbeat_interval_secs: u32,
    /// A tunnel without PONG (TLS) or any packet (QUIC idle timeout) for this long is dead.
    /// Default 10 s: a vanished peer is noticed within about 10-13 s.
    #[serde(default = "default_heartbeat_timeout")]
    pub heartbeat_timeout_secs: u32,
}

impl Default for PerformanceConfig {
    fn default() -> Self {
        Self {
            stream_window_max_bytes: default_window_max(),
            stream_window_min_bytes: default_window_min(),
            window_budget_bytes: default_window_budget(),
            sustained_after_secs: default_sustained_after(),
            sustained_threshold_mbps: default_sustained_threshold(),
            sustained_drain_bytes_per_sec: default_sustained_drain(),
            udp_session_idle_secs: default_udp_idle(),
            heartbeat_interval_secs: default_heartbeat_interval(),
            heartbeat_timeout_secs: default_heartbeat_timeout(),
        }
    }
}

fn default_window_max() -> u32 {
    32 * 1024 * 1024
}
fn default_window_min() -> u32 {
    1024 * 1024
}
fn default_window_budget() -> u64 {
    200 * 1024 * 1024
}
fn default_sustained_after() -> u32 {
    1
}
fn default_sustained_threshold() -> u32 {
    20
}
fn default_sustained_drain() -> u64 {
    1024 * 1024
}
fn default_udp_idle() -> u32 {
    60
}
fn default_heartbeat_interval() -> u32 {
    3
}
fn default_heartbeat_timeout() -> u32 {
    10
}

/// One edge the hub accepts, with everything the hub pushes to it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schemars(rename = "TAllowedEdge")]
pub struct AllowedEdge {
    /// Edge id: non-empty, no whitespace or control characters.
    pub id: String,
    /// Shared secret: non-empty, no whitespace or control characters.
    pub secret: Secret,
    /// Public TCP ports the edge listens on.
    #[serde(default)]
    pub listen_ports: Vec<u16>,
    /// Public UDP ports the edge listens on.
    #[serde(default)]
    pub listen_ports_udp: Vec<u16>,
    /// How often the edge re-discovers its public IP by STUN. Default 300 s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stun_interval_secs: Option<u32>,
    /// Complete desired firewall state for the edge.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub firewall_config: Option<FirewallConfig>,
    /// Outbound (egress) policy for the edge; disabled when omitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub egress: Option<EgressPolicy>,
    /// The edge serves local clients: believe PROXY source addresses that are loopback or the
    /// edge's own address. Default false, except for an edge whose tunnel comes from loopback
    /// (on the hub's host). Unspecified, multicast and broadcast sources are always refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub private_clients: Option<bool>,
    /// Caps on what public clients may hold on the edge (and, for UDP, on the hub); the
    /// defaults apply when omitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limits: Option<EdgeLimits>,
    /// Public ports whose traffic goes to a different port on the target (TCP and UDP alike),
    /// or gets another PROXY header; the others go to the same number with the edge's header.
    /// The PROXY header still names the public port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_ports: Option<Vec<PortMapping>>,
    /// PROXY header for this edge's ports (`v1`, `v2` or `none`), in place of the hub's
    /// `proxyProtocol`; a port's own `targetPorts` entry overrides it in turn.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proxy_protocol: Option<ProxyProtocolVersion>,
}

/// How one public port is forwarded: to another port on the target, with another PROXY header,
/// or both.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schemars(rename = "IPortMapping")]
pub struct PortMapping {
    /// The public port (one of `listenPorts` / `listenPortsUdp`).
    pub port: u16,
    /// The port the hub dials on its target host. Default: the public port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_port: Option<u16>,
    /// PROXY header for this port (`v1`, `v2` or `none`), in place of the edge's and the hub's.
    /// `v1` on a port that is only in `listenPortsUdp` is an error (v1 has no UDP form).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proxy_protocol: Option<ProxyProtocolVersion>,
}

/// Caps on public clients of one edge. The edge enforces all of them; the hub enforces
/// `maxUdpSessions` as well, in case the edge is compromised.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schemars(rename = "IEdgeLimits")]
pub struct EdgeLimits {
    /// Open TCP connections one client (an IPv4 address or an IPv6 prefix, see
    /// `ipv6SourcePrefix`) may hold; more are reset. Default 1024, and
    /// never more than half of the edge's connection capacity (derived from its open-file limit).
    #[serde(default = "default_max_connections_per_source")]
    pub max_connections_per_source: u32,
    /// TCP streams the hub forwards for this edge at once (one target connection each); more
    /// are refused. Enforced by the hub, which does not trust the edge to count. Default 65536,
    /// and the hub's own total (derived from its open-file limit) applies on top.
    #[serde(default = "default_max_streams")]
    pub max_streams: u32,
    /// UDP sessions (client address and port pairs) the edge keeps; beyond it the least
    /// recently used session is closed. Default 65536.
    #[serde(default = "default_max_udp_sessions")]
    pub max_udp_sessions: u32,
    /// UDP sessions one client (an IPv4 address or an IPv6 prefix) may hold; beyond it that
    /// client's least recently used session is closed. Default 4096.
    #[serde(default = "default_max_udp_sessions_per_source")]
    pub max_udp_sessions_per_source: u32,
    /// New UDP sessions the edge opens per second (sustained); datagrams that would open more
    /// are dropped and counted. Default 5000.
    #[serde(default = "default_udp_new_sessions_per_sec")]
    pub udp_new_sessions_per_sec: u32,
    /// New UDP sessions that may open at once above the sustained rate. Default 10000.
    #[serde(default = "default_udp_new_sessions_burst")]
    pub udp_new_sessions_burst: u32,
    /// The IPv6 prefix length that counts as one client for the per-client caps
    /// (`maxConnectionsPerSource`, `maxUdpSessionsPerSource`): one customer usually holds a
    /// whole /64 and can use any of its addresses. 32 to 128 (128: each address alone).
    /// Default 64.
    #[serde(default = "default_ipv6_source_prefix")]
    pub ipv6_source_prefix: u8,
}

impl Default for EdgeLimits {
    fn default() -> Self {
        Self {
            max_connections_per_source: default_max_connections_per_source(),
            max_streams: default_max_streams(),
            max_udp_sessions: default_max_udp_sessions(),
            max_udp_sessions_per_source: default_max_udp_sessions_per_source(),
            udp_new_sessions_per_sec: default_udp_new_sessions_per_sec(),
            udp_new_sessions_burst: default_udp_new_sessions_burst(),
            ipv6_source_prefix: default_ipv6_source_prefix(),
        }
    }
}

fn default_max_connections_per_source() -> u32 {
    1024
}
fn default_max_streams() -> u32 {
    65_536
}
fn default_max_udp_sessions() -> u32 {
    65_536
}
fn default_max_udp_sessions_per_source() -> u32 {
    4096
}
fn default_udp_new_sessions_per_sec() -> u32 {
    5000
}
fn default_udp_new_sessions_burst() -> u32 {
    10_000
}
fn default_ipv6_source_prefix() -> u8 {
    64
}

/// How the edge reaches the hub.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(rename = "TTransportMode")]
pub enum TransportMode {
    /// One TLS connection with frame multiplexing.
    TcpTls,
    /// QUIC streams and datagrams.
    Quic,
    /// QUIC, falling back to TLS when QUIC does not connect within 5 s (default).
    #[default]
    QuicWithFallback,
}

/// Edge configuration (`start` with `role: "edge"`): either `token`, or `hubHost` + `edgeId` +
/// `secret` (+ `hubPort`), plus the optional fields that apply to both.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schemars(rename = "IEdgeConfig")]
pub struct EdgeConfig {
    /// Connection token (replaces hubHost, hubPort, edgeId, secret and hubCertSha256).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<Secret>,
    /// Hub host name or IP address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hub_host: Option<String>,
    /// Hub tunnel port. Default 8443.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hub_port: Option<u16>,
    /// This edge's id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub edge_id: Option<String>,
    /// This edge's secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<Secret>,
    /// Local address the public listeners bind to. Default: all addresses.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bind_address: Option<String>,
    /// Transport to the hub. Default `quicWithFallback`.
    #[serde(default)]
    pub transport_mode: TransportMode,
    /// SHA-256 fingerprint (hex) of the hub certificate; when set, any other certificate is refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hub_cert_sha256: Option<String>,
    /// PEM CA certificate(s) for operators with their own PKI: the hub's certificate must chain
    /// to one of them and name `hubHost`. May be combined with `hubCertSha256`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hub_ca_pem: Option<String>,
    /// STUN servers (`host:port`) for public IP discovery. Default `stun.cloudflare.com:3478`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stun_servers: Option<Vec<String>>,
    /// Graceful stop (SIGTERM, SIGINT, IPC `stop`): seconds that open streams get to finish
    /// after the listeners close; the rest are then reset. Default 10; 0 stops at once; at most
    /// 3600. A second SIGTERM/SIGINT ends the wait at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shutdown_grace_secs: Option<u32>,
    /// `host:port` for Prometheus `/metrics` and `/healthz` / `/readyz` over HTTP (e.g.
    /// `127.0.0.1:9100`); off when omitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics_addr: Option<String>,
}

/// Transport protocol of a firewall rule or rate limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum FirewallProtocol {
    Tcp,
    Udp,
}

/// Complete desired nftables state for one edge; each push replaces the previous one.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schemars(rename = "IFirewallConfig")]
pub struct FirewallConfig {
    /// IPv4/IPv6 addresses or CIDRs whose traffic is dropped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blocked_ips: Option<Vec<String>>,
    /// New-connection rate limits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limits: Option<Vec<FirewallRateLimit>>,
    /// Custom rules, applied first and in order.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rules: Option<Vec<FirewallRule>>,
}

/// A limit on new connections (or new UDP flows) to one port.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schemars(rename = "IFirewallRateLimit")]
pub struct FirewallRateLimit {
    /// Unique id of this limit.
    pub id: String,
    /// Destination port the limit applies to.
    pub port: u16,
    /// Protocol; both when omitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<FirewallProtocol>,
    /// Rate as `N/second`, `N/minute`, `N/hour` or `N/day`.
    pub rate: String,
    /// Burst allowance above the rate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub burst: Option<u32>,
    /// Count per source address instead of globally.
    #[serde(
        default,
        rename = "perSourceIP",
        skip_serializing_if = "Option::is_none"
    )]
    pub per_source_ip: Option<bool>,
}

/// Chain a custom firewall rule belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum FirewallDirection {
    Input,
    Output,
    Forward,
}

/// Verdict of a custom firewall rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum FirewallAction {
    Accept,
    Drop,
    Reject,
}

/// A custom firewall rule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schemars(rename = "IFirewallRule")]
pub struct FirewallRule {
    /// Unique id of this rule.
    pub id: String,
    /// Chain: input, output or forward.
    pub direction: FirewallDirection,
    /// Verdict.
    pub action: FirewallAction,
    /// Source address or CIDR to match.
    #[serde(default, rename = "sourceIP", skip_serializing_if = "Option::is_none")]
    pub source_ip: Option<String>,
    /// Destination port to match.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dest_port: Option<u16>,
    /// Protocol to match.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<FirewallProtocol>,
    /// Free text stored with the rule.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
}

/// Outbound (egress) policy of one edge.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schemars(rename = "IEgressPolicy")]
pub struct EgressPolicy {
    /// Egress is refused unless this is true. Default false.
    #[serde(default)]
    pub enabled: bool,
    /// Destination ports that may be dialled. Default `[25]`.
    #[serde(default = "default_egress_ports")]
    pub allowed_ports: Vec<u16>,
    /// Exact host names or `*.suffix` patterns; any host when omitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allowed_host_patterns: Option<Vec<String>>,
    /// Allow RFC 1918 / ULA destinations. Default false.
    #[serde(default)]
    pub allow_private_ranges: bool,
    /// CIDRs never dialled, whatever else allows them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub denied_cidrs: Option<Vec<String>>,
    /// Cap on open egress streams for this edge.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_concurrent_streams: Option<u32>,
}

fn default_egress_ports() -> Vec<u16> {
    vec![25]
}

/// Address family preference of an egress dial.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(rename = "TAddressFamilyPreference")]
pub enum AddressFamily {
    #[default]
    Any,
    Ipv4,
    Ipv6,
    PreferIpv4,
    PreferIpv6,
}

/// `startEgressTcpProxy` parameters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schemars(rename = "IEgressTcpProxyRequest")]
pub struct EgressTcpProxyRequest {
    /// Edge that dials out.
    pub edge_id: String,
    /// Host name (or literal IP) the edge resolves and dials.
    pub logical_host: String,
    /// Destination port.
    pub port: u16,
    /// The remote speaks first (SMTP): connect before the local client sends anything.
    #[serde(default)]
    pub server_first: bool,
    /// Dial deadline on the edge. Default 10000 ms.
    #[serde(default = "default_connect_timeout_ms")]
    pub connect_timeout_ms: u64,
    /// Address family preference. Default `any`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address_family: Option<AddressFamily>,
    /// How long the proxy waits for its one local connection (and, unless `serverFirst`, for
    /// that connection's first byte) before it removes itself. Default 60000 ms, at most one
    /// hour.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idle_timeout_ms: Option<u64>,
}

fn default_connect_timeout_ms() -> u64 {
    10_000
}

/// `startEgressTcpProxy` result: where the one-shot local proxy listens.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schemars(rename = "IEgressTcpProxyInfo")]
pub struct EgressTcpProxyInfo {
    /// Id to pass to `stopEgressTcpProxy`.
    pub proxy_id: String,
    /// Always `127.0.0.1`.
    pub listen_host: String,
    /// Port of the one-shot proxy.
    pub listen_port: u16,
    /// Edge that dials out.
    pub edge_id: String,
    /// Requested host.
    pub logical_host: String,
    /// Requested port.
    pub port: u16,
}

/// A persistent egress listener (`[[egress]]` in hub.toml, or `startEgressTcpListener`): every
/// connection accepted on `listenAddr` goes out through `edgeId` to `logicalHost:port`, under
/// that edge's egress policy, so a program (an MTA) can be pointed at a stable local port.
// The connection fields repeat IEgressTcpProxyRequest's on purpose: serde cannot flatten one
// struct into another that denies unknown fields, and a typo in hub.toml must be an error.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schemars(rename = "IEgressListenerConfig")]
pub struct EgressListenerConfig {
    /// `IP:port` the hub listens on, e.g. `127.0.0.1:2525` (port 0 only over IPC: any free
    /// port, reported in the result). Any other address than loopback lets every host that
    /// reaches it send through the edge.
    pub listen_addr: String,
    /// Edge that dials out; it must be connected over QUIC when a connection arrives.
    pub edge_id: String,
    /// Host name (or literal IP) the edge resolves and dials.
    pub logical_host: String,
    /// Destination port.
    pub port: u16,
    /// The remote speaks first (SMTP): ask the edge as soon as a connection is accepted.
    /// Otherwise the edge is asked at the client's first byte. Default false.
    #[serde(default)]
    pub server_first: bool,
    /// Dial deadline on the edge. Default 10000 ms.
    #[serde(default = "default_connect_timeout_ms")]
    pub connect_timeout_ms: u64,
    /// Address family preference. Default `any`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address_family: Option<AddressFamily>,
    /// Unless `serverFirst`: how long an accepted connection may wait for its first byte.
    /// Default 60000 ms, at most one hour.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idle_timeout_ms: Option<u64>,
    /// Connections of this listener open at once (1..=4096); more are closed at once and
    /// counted as `refusedFull`. Default 64.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_connections: Option<u32>,
}

/// `startEgressTcpListener` result: where the listener listens.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schemars(rename = "IEgressListenerInfo")]
pub struct EgressListenerInfo {
    /// Id to pass to `stopEgressTcpListener`.
    pub listener_id: String,
    /// The address bound (with the port chosen when 0 was asked).
    pub listen_addr: String,
    /// Port bound.
    pub listen_port: u16,
    /// Edge that dials out.
    pub edge_id: String,
    /// Requested host.
    pub logical_host: String,
    /// Requested port.
    pub port: u16,
}
