//! Validated runtime configuration, built from the `ipc-schema` types.
//!
//! The IPC types describe what a caller may send; the types here are what the engine runs with:
//! durations instead of seconds, parsed addresses, decoded tokens, checked ranges. Every check
//! names the JSON path of the offending field, so an operator can fix the right line.

use std::collections::{BTreeMap, HashSet};
use std::net::IpAddr;
use std::time::Duration;

use remoteingress_ipc_schema as ipc;
use remoteingress_ipc_schema::{
    FirewallConfig, ProxyProtocolVersion, Secret, StreamEventMode, TransportMode,
    UdpProxyHeaderMode,
};
use thiserror::Error;

use crate::fd_limit::DescriptorBudget;
use crate::ident::{validate_edge_id, validate_secret};
use crate::proxy_protocol::choice::EdgeProxyProtocol;
use crate::token::ConnectionToken;

/// Default STUN server for public IP discovery.
pub const DEFAULT_STUN_SERVER: &str = "stun.cloudflare.com:3478";
/// Default STUN interval: pushed to edges, and what an edge uses when its hub sends none.
pub const DEFAULT_STUN_INTERVAL_SECS: u32 = 300;
/// Default hub tunnel port.
pub const DEFAULT_HUB_PORT: u16 = 8443;

/// A configuration value that is well-formed JSON but not acceptable.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("{path}: {message}")]
pub struct ConfigError {
    /// JSON path of the field, e.g. `config.edges[2].secret`.
    pub path: String,
    pub message: String,
}

impl ConfigError {
    pub fn new(path: impl Into<String>, message: impl std::fmt::Display) -> Self {
        Self {
            path: path.into(),
            message: message.to_string(),
        }
    }
}

/// Validated hub configuration.
#[derive(Debug, Clone)]
pub struct HubSettings {
    /// 0 asks the OS for a free port (tests); status reports the bound one.
    pub tunnel_port: u16,
    /// The address the tunnel port binds to; all addresses when `None`.
    pub tunnel_bind: Option<IpAddr>,
    pub target_host: String,
    pub tls: Option<ipc::TlsConfig>,
    /// Where the generated identity is kept (see `crate::state_dir`).
    pub state_dir: Option<std::path::PathBuf>,
    pub stream_event_mode: StreamEventMode,
    /// The hub's `proxyProtocol`, when given: edges and ports may override it, and what it
    /// means per transport is `crate::proxy_protocol::choice`'s.
    pub proxy_protocol: Option<ProxyProtocolVersion>,
    pub udp_proxy_header: UdpProxyHeaderMode,
    pub performance: PerformanceSettings,
    /// The configured `maxUdpSessions` (across all edges).
    pub max_udp_sessions: u32,
    /// The UDP sessions all edges share: `max_udp_sessions`, or less where the open-file limit
    /// (read when the settings are made, just before the hub starts) leaves less.
    pub(crate) udp_budget: DescriptorBudget,
    /// What all forwarded traffic shares (TCP streams and, inside it, `udp_budget`), from the
    /// open-file limit: TCP may use whatever UDP does not.
    pub(crate) forwarding_budget: DescriptorBudget,
    /// Who holds how much of both budgets, so that edges share them fairly.
    pub(crate) holders: std::sync::Arc<crate::fair_share::Holders>,
    /// Handshakes that may be in progress at once, from the open-file limit.
    pub(crate) max_pending_logins: usize,
    /// How long open streams may finish when the hub stops.
    pub shutdown_grace: Duration,
    /// Where `/metrics`, `/healthz` and `/readyz` are served.
    pub metrics_addr: Option<std::net::SocketAddr>,
}

/// Most UDP sessions a hub or an edge may be configured for: with a socket (hub) and some
/// hundred bytes each, more would be an operator's typo rather than a plan.
pub const MAX_UDP_SESSIONS: u32 = 1 << 24;

impl HubSettings {
    /// Validates a hub config; `path` is where it sits in the request (e.g. `config`).
    pub fn from_ipc(config: ipc::HubConfig, path: &str) -> Result<Self, ConfigError> {
        validate_host(&config.target_host, &format!("{path}.targetHost"))?;
        if let Some(tls) = &config.tls {
            if !tls.cert_pem.contains("-----BEGIN") {
                return Err(ConfigError::new(
                    format!("{path}.tls.certPem"),
                    "is not a PEM certificate",
                ));
            }
            if !tls.key_pem.expose().contains("-----BEGIN") {
                return Err(ConfigError::new(
                    format!("{path}.tls.keyPem"),
                    "is not a PEM private key",
                ));
            }
        }
        let state_dir =
            match config.state_dir.as_deref() {
                Some("") => return Err(ConfigError::new(
                    format!("{path}.stateDir"),
                    "must not be empty (omit it for an identity that lasts until the hub stops)",
                )),
                other => other.map(std::path::PathBuf::from),
            };
        let performance = PerformanceSettings::from_ipc(
            &config.performance.unwrap_or_default(),
            &format!("{path}.performance"),
        )?;
        check_range(
            config.max_udp_sessions,
            1,
            MAX_UDP_SESSIONS,
            &format!("{path}.maxUdpSessions"),
        )?;
        let fd_limit = crate::fd_limit::current();
        let budget =
            u64::from(config.max_udp_sessions).min(crate::fd_limit::hub_udp_sessions(fd_limit));
        let forwarding_budget = DescriptorBudget::new(crate::fd_limit::hub_forwarding(fd_limit));
        let tunnel_bind = config
            .tunnel_bind_address
            .as_deref()
            .map(|text| {
                text.parse::<IpAddr>().map_err(|_| {
                    ConfigError::new(
                        format!("{path}.tunnelBindAddress"),
                        format!("{text:?} is not an IP address (like 192.0.2.10 or ::1)"),
                    )
                })
            })
            .transpose()?;
        Ok(Self {
            tunnel_port: config.tunnel_port,
            tunnel_bind,
            target_host: config.target_host,
            tls: config.tls,
            state_dir,
            stream_event_mode: config.stream_event_mode,
            proxy_protocol: config.proxy_protocol,
            udp_proxy_header: config.udp_proxy_header,
            performance,
            max_udp_sessions: config.max_udp_sessions,
            udp_budget: DescriptorBudget::within(&forwarding_budget, budget),
            forwarding_budget,
            holders: std::sync::Arc::default(),
            max_pending_logins: usize::try_from(crate::fd_limit::hub_pending_logins(fd_limit))
                .unwrap_or(usize::MAX),
            shutdown_grace: shutdown_grace(
                config.shutdown_grace_secs,
                &format!("{path}.shutdownGraceSecs"),
            )?,
            metrics_addr: metrics_addr(
                config.metrics_addr.as_deref(),
                &format!("{path}.metricsAddr"),
            )?,
        })
    }
}

impl HubSettings {
    /// TCP streams forwarded now, across all edges (the forwarding budget less the UDP
    /// sessions inside it).
    pub(crate) fn forwarded_streams(&self) -> usize {
        self.forwarding_budget
            .in_use()
            .saturating_sub(self.udp_budget.in_use())
    }
}

/// `metricsAddr`: an `ip:port` to listen on.
fn metrics_addr(
    text: Option<&str>,
    path: &str,
) -> Result<Option<std::net::SocketAddr>, ConfigError> {
    text.map(|text| {
        text.parse().map_err(|_| {
            ConfigError::new(
                path,
                format!("{text:?} is not an address and port like 127.0.0.1:9100"),
            )
        })
    })
    .transpose()
}

/// `shutdownGraceSecs`, checked, or its default.
fn shutdown_grace(secs: Option<u32>, path: &str) -> Result<Duration, ConfigError> {
    match secs {
        None => Ok(crate::shutdown::DEFAULT_GRACE),
        Some(secs) => {
            check_range(secs, 0, crate::shutdown::MAX_GRACE_SECS, path)?;
            Ok(Duration::from_secs(secs.into()))
        }
    }
}

/// `value` must be within `min..=max`.
fn check_range(value: u32, min: u32, max: u32, path: &str) -> Result<(), ConfigError> {
    if (min..=max).contains(&value) {
        Ok(())
    } else {
        Err(ConfigError::new(
            path,
            format!("must be between {min} and {max} (got {value})"),
        ))
    }
}

/// Validated flow-control, QoS and timing settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PerformanceSettings {
    pub stream_window_max: u32,
    pub stream_window_min: u32,
    pub window_budget: u64,
    pub sustained_after: Duration,
    pub sustained_threshold_bytes_per_sec: u64,
    pub sustained_drain_bytes_per_sec: u64,
    pub udp_session_idle: Duration,
    pub heartbeat_interval: Duration,
    pub heartbeat_timeout: Duration,
}

impl Default for PerformanceSettings {
    fn default() -> Self {
        // The IPC defaults are the one place the values are written; they are valid (checked
        // by `default_performance_is_valid`).
        Self::converted(&ipc::PerformanceConfig::default())
    }
}

/// Largest per-stream window we accept: windows are in-flight bytes per stream.
const MAX_STREAM_WINDOW: u32 = 64 << 20;

impl PerformanceSettings {
    pub fn from_ipc(p: &ipc::PerformanceConfig, path: &str) -> Result<Self, ConfigError> {
        let field = |name: &str| format!("{path}.{name}");
        if p.stream_window_min_bytes < 64 * 1024 {
            return Err(ConfigError::new(
                field("streamWindowMinBytes"),
                "must be at least 65536 (one full DATA frame)",
            ));
        }
        if p.stream_window_max_bytes < p.stream_window_min_bytes {
            return Err(ConfigError::new(
                field("streamWindowMaxBytes"),
                "must not be smaller than streamWindowMinBytes",
            ));
        }
        if p.stream_window_max_bytes > MAX_STREAM_WINDOW {
            return Err(ConfigError::new(
                field("streamWindowMaxBytes"),
                format!("must be at most {MAX_STREAM_WINDOW}"),
            ));
        }
        // A budget under streamWindowMaxBytes is fine (it caps every window at the budget); one
        // under the minimum could not give even one stream its minimum window.
        if p.window_budget_bytes < u64::from(p.stream_window_min_bytes) {
            return Err(ConfigError::new(
                field("windowBudgetBytes"),
                "must be at least streamWindowMinBytes",
            ));
        }
        for (name, value) in [
            ("sustainedAfterSecs", u64::from(p.sustained_after_secs)),
            (
                "sustainedThresholdMbps",
                u64::from(p.sustained_threshold_mbps),
            ),
            ("sustainedDrainBytesPerSec", p.sustained_drain_bytes_per_sec),
            ("udpSessionIdleSecs", u64::from(p.udp_session_idle_secs)),
            (
                "heartbeatIntervalSecs",
                u64::from(p.heartbeat_interval_secs),
            ),
        ] {
            if value == 0 {
                return Err(ConfigError::new(field(name), "must be greater than 0"));
            }
        }
        if p.heartbeat_timeout_secs <= p.heartbeat_interval_secs {
            return Err(ConfigError::new(
                field("heartbeatTimeoutSecs"),
                "must be greater than heartbeatIntervalSecs",
            ));
        }
        Ok(Self::converted(p))
    }

    /// `p` in runtime units, unchecked: [`Self::from_ipc`] checks first.
    fn converted(p: &ipc::PerformanceConfig) -> Self {
        Self {
            stream_window_max: p.stream_window_max_bytes,
            stream_window_min: p.stream_window_min_bytes,
            window_budget: p.window_budget_bytes,
            sustained_after: Duration::from_secs(p.sustained_after_secs.into()),
            sustained_threshold_bytes_per_sec: u64::from(p.sustained_threshold_mbps) * 1_000_000
                / 8,
            sustained_drain_bytes_per_sec: p.sustained_drain_bytes_per_sec,
            udp_session_idle: Duration::from_secs(p.udp_session_idle_secs.into()),
            heartbeat_interval: Duration::from_secs(p.heartbeat_interval_secs.into()),
            heartbeat_timeout: Duration::from_secs(p.heartbeat_timeout_secs.into()),
        }
    }

    /// The settings in the IPC form they were given in (for status and pushes).
    pub fn to_ipc(&self) -> ipc::PerformanceConfig {
        let secs = |d: Duration| u32::try_from(d.as_secs()).unwrap_or(u32::MAX);
        ipc::PerformanceConfig {
            stream_window_max_bytes: self.stream_window_max,
            stream_window_min_bytes: self.stream_window_min,
            window_budget_bytes: self.window_budget,
            sustained_after_secs: secs(self.sustained_after),
            sustained_threshold_mbps: u32::try_from(
                self.sustained_threshold_bytes_per_sec * 8 / 1_000_000,
            )
            .unwrap_or(u32::MAX),
            sustained_drain_bytes_per_sec: self.sustained_drain_bytes_per_sec,
            udp_session_idle_secs: secs(self.udp_session_idle),
            heartbeat_interval_secs: secs(self.heartbeat_interval),
            heartbeat_timeout_secs: secs(self.heartbeat_timeout),
        }
    }
}

/// The hub's performance settings as pushed to an edge (`EdgeConfigPush::performance`), so
/// that both directions of a tunnel follow the hub's config: the edge's receive windows are what
/// limit downloads, and its QUIC transport parameters (windows, keep-alive) are its half of the
/// connection's. Lenient on the wire like the rest of the push (a missing field takes its
/// default, an unknown one is ignored), so hub and edge can be upgraded independently. The
/// heartbeat timeout and UDP idle time travel in push fields of their own (older edges read
/// those). The edge checks the result with the hub's rules ([`PerformanceSettings::from_ipc`]):
/// the push comes from another process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct PerformancePush {
    pub stream_window_max_bytes: u32,
    pub stream_window_min_bytes: u32,
    pub window_budget_bytes: u64,
    pub sustained_after_secs: u32,
    pub sustained_threshold_mbps: u32,
    pub sustained_drain_bytes_per_sec: u64,
    pub heartbeat_interval_secs: u32,
}

impl From<&PerformanceSettings> for PerformancePush {
    fn from(settings: &PerformanceSettings) -> Self {
        let ipc = settings.to_ipc();
        Self {
            stream_window_max_bytes: ipc.stream_window_max_bytes,
            stream_window_min_bytes: ipc.stream_window_min_bytes,
            window_budget_bytes: ipc.window_budget_bytes,
            sustained_after_secs: ipc.sustained_after_secs,
            sustained_threshold_mbps: ipc.sustained_threshold_mbps,
            sustained_drain_bytes_per_sec: ipc.sustained_drain_bytes_per_sec,
            heartbeat_interval_secs: ipc.heartbeat_interval_secs,
        }
    }
}

impl Default for PerformancePush {
    fn default() -> Self {
        Self::from(&PerformanceSettings::default())
    }
}

impl PerformancePush {
    /// `config` with these pushed values in place of its own.
    pub fn apply_to(&self, config: ipc::PerformanceConfig) -> ipc::PerformanceConfig {
        ipc::PerformanceConfig {
            stream_window_max_bytes: self.stream_window_max_bytes,
            stream_window_min_bytes: self.stream_window_min_bytes,
            window_budget_bytes: self.window_budget_bytes,
            sustained_after_secs: self.sustained_after_secs,
            sustained_threshold_mbps: self.sustained_threshold_mbps,
            sustained_drain_bytes_per_sec: self.sustained_drain_bytes_per_sec,
            heartbeat_interval_secs: self.heartbeat_interval_secs,
            ..config
        }
    }
}

/// One validated allowed edge.
#[derive(Debug, Clone, PartialEq)]
pub struct AllowedEdgeSettings {
    pub id: String,
    pub secret: Secret,
    pub listen_ports: Vec<u16>,
    pub listen_ports_udp: Vec<u16>,
    pub stun_interval_secs: u32,
    pub firewall_config: Option<FirewallConfig>,
    pub egress: Option<ipc::EgressPolicy>,
    pub limits: EdgeLimitSettings,
    /// Public port -> target port, where they differ (`targetPorts`).
    pub target_ports: BTreeMap<u16, u16>,
    /// The edge's and its ports' PROXY header choices (`proxyProtocol`).
    pub proxy_protocol: EdgeProxyProtocol,
    /// `privateClients`: loopback and own-address client sources are believed.
    pub private_clients: bool,
}

/// Validated caps on one edge's public clients ([`ipc::EdgeLimits`]), in the form the hub also
/// pushes them to the edge (`EdgeConfigPush::limits`). On the wire, missing fields take their
/// defaults and unknown ones are ignored, so hub and edge can be upgraded independently.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct EdgeLimitSettings {
    pub max_connections_per_source: u32,
    pub max_streams: u32,
    pub max_udp_sessions: u32,
    pub max_udp_sessions_per_source: u32,
    pub udp_new_sessions_per_sec: u32,
    pub udp_new_sessions_burst: u32,
    pub ipv6_source_prefix: u8,
}

/// Shortest IPv6 prefix one may configure as one client (`ipv6SourcePrefix`): shorter ones
/// would put unrelated customers under one cap.
const MIN_IPV6_SOURCE_PREFIX: u8 = 32;

/// Most TCP connections per source, new UDP sessions per second and burst one may configure.
const MAX_LIMIT_VALUE: u32 = 1 << 24;

impl Default for EdgeLimitSettings {
    fn default() -> Self {
        Self::from(&ipc::EdgeLimits::default())
    }
}

impl From<&ipc::EdgeLimits> for EdgeLimitSettings {
    fn from(limits: &ipc::EdgeLimits) -> Self {
        Self {
            max_connections_per_source: limits.max_connections_per_source,
            max_streams: limits.max_streams,
            max_udp_sessions: limits.max_udp_sessions,
            max_udp_sessions_per_source: limits.max_udp_sessions_per_source,
            udp_new_sessions_per_sec: limits.udp_new_sessions_per_sec,
            udp_new_sessions_burst: limits.udp_new_sessions_burst,
            ipv6_source_prefix: limits.ipv6_source_prefix,
        }
    }
}

impl EdgeLimitSettings {
    /// Validates an allowed edge's `limits`; `path` is where they sit in the request.
    pub fn from_ipc(limits: &ipc::EdgeLimits, path: &str) -> Result<Self, ConfigError> {
        let field = |name: &str| format!("{path}.{name}");
        let settings = Self::from(limits);
        for (name, value, max) in [
            (
                "maxConnectionsPerSource",
                settings.max_connections_per_source,
                MAX_LIMIT_VALUE,
            ),
            ("maxStreams", settings.max_streams, MAX_LIMIT_VALUE),
            (
                "maxUdpSessions",
                settings.max_udp_sessions,
                MAX_UDP_SESSIONS,
            ),
            (
                "maxUdpSessionsPerSource",
                settings.max_udp_sessions_per_source,
                settings.max_udp_sessions,
            ),
            (
                "udpNewSessionsPerSec",
                settings.udp_new_sessions_per_sec,
                MAX_LIMIT_VALUE,
            ),
            (
                "udpNewSessionsBurst",
                settings.udp_new_sessions_burst,
                MAX_LIMIT_VALUE,
            ),
        ] {
            check_range(value, 1, max, &field(name))?;
        }
        check_range(
            settings.ipv6_source_prefix.into(),
            MIN_IPV6_SOURCE_PREFIX.into(),
            128,
            &field("ipv6SourcePrefix"),
        )?;
        Ok(settings)
    }

    /// The same caps brought into range: what an edge applies from a push, which comes from
    /// another process and is not trusted to have been validated.
    pub fn sanitised(self) -> Self {
        let max_udp_sessions = self.max_udp_sessions.clamp(1, MAX_UDP_SESSIONS);
        Self {
            max_connections_per_source: self.max_connections_per_source.clamp(1, MAX_LIMIT_VALUE),
            max_streams: self.max_streams.clamp(1, MAX_LIMIT_VALUE),
            max_udp_sessions,
            max_udp_sessions_per_source: self
                .max_udp_sessions_per_source
                .clamp(1, max_udp_sessions),
            udp_new_sessions_per_sec: self.udp_new_sessions_per_sec.clamp(1, MAX_LIMIT_VALUE),
            udp_new_sessions_burst: self.udp_new_sessions_burst.clamp(1, MAX_LIMIT_VALUE),
            ipv6_source_prefix: self.ipv6_source_prefix.clamp(MIN_IPV6_SOURCE_PREFIX, 128),
        }
    }
}

/// Validates a complete allowed-edges list (ids unique, ports valid).
pub fn validate_allowed_edges(
    edges: Vec<ipc::AllowedEdge>,
    path: &str,
) -> Result<Vec<AllowedEdgeSettings>, ConfigError> {
    let mut seen = HashSet::new();
    edges
        .into_iter()
        .enumerate()
        .map(|(index, edge)| {
            let at = format!("{path}[{index}]");
            validate_edge_id(&edge.id).map_err(|e| ConfigError::new(format!("{at}.id"), e))?;
            validate_secret(edge.secret.expose())
                .map_err(|e| ConfigError::new(format!("{at}.secret"), e))?;
            if !seen.insert(edge.id.clone()) {
                return Err(ConfigError::new(
                    format!("{at}.id"),
                    format!("edge id {:?} appears more than once", edge.id),
                ));
            }
            let listen_ports = validate_ports(edge.listen_ports, &format!("{at}.listenPorts"))?;
            let listen_ports_udp =
                validate_ports(edge.listen_ports_udp, &format!("{at}.listenPortsUdp"))?;
            let stun_interval_secs = edge
                .stun_interval_secs
                .unwrap_or(DEFAULT_STUN_INTERVAL_SECS);
            if stun_interval_secs < 10 {
                return Err(ConfigError::new(
                    format!("{at}.stunIntervalSecs"),
                    "must be at least 10",
                ));
            }
            let limits = EdgeLimitSettings::from_ipc(
                &edge.limits.unwrap_or_default(),
                &format!("{at}.limits"),
            )?;
            if let Some(firewall) = &edge.firewall_config {
                crate::firewall::snapshot::validate(firewall, &format!("{at}.firewallConfig"))?;
            }
            let (target_ports, port_proxy_protocol) = validate_port_mappings(
                edge.target_ports.as_deref().unwrap_or_default(),
                &listen_ports,
                &listen_ports_udp,
                &format!("{at}.targetPorts"),
            )?;
            if let Some(egress) = &edge.egress {
                crate::egress::policy::EgressPolicy::from_ipc(egress, &format!("{at}.egress"))?;
            }
            Ok(AllowedEdgeSettings {
                limits,
                id: edge.id,
                secret: edge.secret,
                listen_ports,
                listen_ports_udp,
                stun_interval_secs,
                firewall_config: edge.firewall_config,
                egress: edge.egress,
                target_ports,
                proxy_protocol: EdgeProxyProtocol {
                    edge: edge.proxy_protocol,
                    ports: port_proxy_protocol,
                },
                private_clients: edge.private_clients.unwrap_or(false),
            })
        })
        .collect()
}

/// Public port -> target port, and public port -> PROXY header choice.
type PortMappings = (BTreeMap<u16, u16>, BTreeMap<u16, ProxyProtocolVersion>);

/// `targetPorts`: each public port once, one of the edge's ports, with a target port 1..=65535
/// or a PROXY choice (or both); v1 only on a port that TCP uses (v1 has no UDP form).
fn validate_port_mappings(
    mappings: &[ipc::PortMapping],
    tcp: &[u16],
    udp: &[u16],
    path: &str,
) -> Result<PortMappings, ConfigError> {
    let mut targets = BTreeMap::new();
    let mut headers = BTreeMap::new();
    let mut seen = HashSet::new();
    for (index, mapping) in mappings.iter().enumerate() {
        let at = format!("{path}[{index}]");
        if !tcp.contains(&mapping.port) && !udp.contains(&mapping.port) {
            return Err(ConfigError::new(
                format!("{at}.port"),
                format!(
                    "port {} is in neither listenPorts nor listenPortsUdp",
                    mapping.port
                ),
            ));
        }
        if !seen.insert(mapping.port) {
            return Err(ConfigError::new(
                format!("{at}.port"),
                format!("port {} is mapped more than once", mapping.port),
            ));
        }
        match (mapping.target_port, mapping.proxy_protocol) {
            (Some(0), _) => {
                return Err(ConfigError::new(
                    format!("{at}.targetPort"),
                    "must be 1..65535",
                ))
            }
            (None, None) => {
                return Err(ConfigError::new(
                    at,
                    "gives neither targetPort nor proxyProtocol",
                ))
            }
            _ => {}
        }
        if mapping.proxy_protocol == Some(ProxyProtocolVersion::V1) && !tcp.contains(&mapping.port)
        {
            return Err(ConfigError::new(
                format!("{at}.proxyProtocol"),
                format!(
                    "port {} is UDP only, and PROXY v1 has no UDP form: use v2 or none",
                    mapping.port
                ),
            ));
        }
        if let Some(target_port) = mapping.target_port {
            targets.insert(mapping.port, target_port);
        }
        if let Some(choice) = mapping.proxy_protocol {
            headers.insert(mapping.port, choice);
        }
    }
    Ok((targets, headers))
}

/// Ports must be 1..=65535 and listed once each; the result is sorted.
fn validate_ports(mut ports: Vec<u16>, path: &str) -> Result<Vec<u16>, ConfigError> {
    if ports.contains(&0) {
        return Err(ConfigError::new(path, "port 0 is not a valid listen port"));
    }
    ports.sort_unstable();
    if let Some(pair) = ports.windows(2).find(|pair| pair[0] == pair[1]) {
        return Err(ConfigError::new(
            path,
            format!("port {} is listed more than once", pair[0]),
        ));
    }
    Ok(ports)
}

/// Validated edge configuration.
#[derive(Debug, Clone)]
pub struct EdgeSettings {
    pub hub_host: String,
    pub hub_port: u16,
    pub edge_id: String,
    pub secret: Secret,
    /// Pinned SHA-256 of the hub certificate.
    pub hub_cert_sha256: Option<[u8; 32]>,
    /// CA certificates the hub's certificate must chain to (and name `hub_host`).
    pub hub_ca: Option<Vec<rustls::pki_types::CertificateDer<'static>>>,
    pub bind_address: Option<IpAddr>,
    pub transport_mode: TransportMode,
    pub stun_servers: Vec<String>,
    /// How long open client connections may finish when the edge stops.
    pub shutdown_grace: Duration,
    /// Where `/metrics`, `/healthz` and `/readyz` are served.
    pub metrics_addr: Option<std::net::SocketAddr>,
}

impl EdgeSettings {
    pub fn from_ipc(config: ipc::EdgeConfig, path: &str) -> Result<Self, ConfigError> {
        let field = |name: &str| format!("{path}.{name}");
        let (hub_host, hub_port, edge_id, secret, pin) = match config.token {
            Some(token) => {
                for (name, present) in [
                    ("hubHost", config.hub_host.is_some()),
                    ("hubPort", config.hub_port.is_some()),
                    ("edgeId", config.edge_id.is_some()),
                    ("secret", config.secret.is_some()),
                ] {
                    if present {
                        return Err(ConfigError::new(
                            field(name),
                            "must not be given together with token (the token carries it)",
                        ));
                    }
                }
                let token = ConnectionToken::decode(token.expose())
                    .map_err(|e| ConfigError::new(field("token"), e))?;
                let pin =
                    match (token.hub_cert_sha256, config.hub_cert_sha256) {
                        (Some(_), Some(_)) => return Err(ConfigError::new(
                            field("hubCertSha256"),
                            "must not be given together with a token that carries a fingerprint",
                        )),
                        (from_token, explicit) => from_token.or(explicit),
                    };
                (
                    token.hub_host,
                    token.hub_port,
                    token.edge_id,
                    token.secret,
                    pin,
                )
            }
            None => {
                let missing = |name: &str| {
                    ConfigError::new(
                        field(name),
                        "is required (give either token, or hubHost, edgeId and secret)",
                    )
                };
                let hub_host = config.hub_host.ok_or_else(|| missing("hubHost"))?;
                let edge_id = config.edge_id.ok_or_else(|| missing("edgeId"))?;
                let secret = config.secret.ok_or_else(|| missing("secret"))?;
                let hub_port = config.hub_port.unwrap_or(DEFAULT_HUB_PORT);
                (hub_host, hub_port, edge_id, secret, config.hub_cert_sha256)
            }
        };
        validate_host(&hub_host, &field("hubHost"))?;
        if hub_port == 0 {
            return Err(ConfigError::new(field("hubPort"), "must be 1..65535"));
        }
        validate_edge_id(&edge_id).map_err(|e| ConfigError::new(field("edgeId"), e))?;
        validate_secret(secret.expose()).map_err(|e| ConfigError::new(field("secret"), e))?;
        let hub_cert_sha256 = pin
            .map(|hex| parse_fingerprint(&hex))
            .transpose()
            .map_err(|e| ConfigError::new(field("hubCertSha256"), e))?;
        let hub_ca = config
            .hub_ca_pem
            .as_deref()
            .map(crate::tls::parse_ca_pem)
            .transpose()
            .map_err(|e| ConfigError::new(field("hubCaPem"), e))?;
        let bind_address = config
            .bind_address
            .map(|addr| {
                addr.parse::<IpAddr>().map_err(|_| {
                    ConfigError::new(
                        field("bindAddress"),
                        format!("{addr:?} is not an IP address"),
                    )
                })
            })
            .transpose()?;
        let stun_servers = config
            .stun_servers
            .unwrap_or_else(|| vec![DEFAULT_STUN_SERVER.to_owned()]);
        for (index, server) in stun_servers.iter().enumerate() {
            validate_host_port(server)
                .map_err(|e| ConfigError::new(format!("{path}.stunServers[{index}]"), e))?;
        }
        Ok(Self {
            hub_host,
            hub_port,
            edge_id,
            secret,
            hub_cert_sha256,
            hub_ca,
            bind_address,
            transport_mode: config.transport_mode,
            stun_servers,
            shutdown_grace: shutdown_grace(
                config.shutdown_grace_secs,
                &field("shutdownGraceSecs"),
            )?,
            metrics_addr: metrics_addr(config.metrics_addr.as_deref(), &field("metricsAddr"))?,
        })
    }
}

impl EdgeSettings {
    /// True when the hub's certificate is checked (pinned, or by a CA).
    pub fn verifies_hub(&self) -> bool {
        self.hub_cert_sha256.is_some() || self.hub_ca.is_some()
    }
}

/// A `hubCertSha256` that is not 64 hex digits (the path is the caller's [`ConfigError`]'s).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[error("must be a SHA-256 fingerprint: 64 hex digits")]
pub struct BadFingerprint;

/// Parses a SHA-256 fingerprint: 64 hex digits, optionally separated by `:`.
pub fn parse_fingerprint(text: &str) -> Result<[u8; 32], BadFingerprint> {
    let digits: String = text.chars().filter(|&c| c != ':').collect();
    let mut out = [0u8; 32];
    hex::decode_to_slice(&digits, &mut out).map_err(|_| BadFingerprint)?;
    Ok(out)
}

/// A host name or IP address: non-empty, at most 253 bytes, no whitespace or control characters.
fn validate_host(host: &str, path: &str) -> Result<(), ConfigError> {
    crate::host_name::check_host(host).map_err(|why| ConfigError::new(path, why))
}

/// Why a `stunServers` entry is not `host:port` (quoted as given: the operator wrote it).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
enum BadHostPort {
    #[error("{0:?} is not host:port")]
    NoColon(String),
    #[error("{0:?} has no valid host")]
    Host(String),
    #[error("{0:?} has no valid port")]
    Port(String),
}

/// `host:port` or `[v6]:port` with a port in 1..=65535.
fn validate_host_port(text: &str) -> Result<(), BadHostPort> {
    let (host, port) = text
        .rsplit_once(':')
        .ok_or_else(|| BadHostPort::NoColon(text.to_owned()))?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if crate::host_name::check_host(host).is_err() {
        return Err(BadHostPort::Host(text.to_owned()));
    }
    match port.parse::<u16>() {
        Ok(port) if port != 0 => Ok(()),
        _ => Err(BadHostPort::Port(text.to_owned())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn edge(id: &str) -> ipc::AllowedEdge {
        ipc::AllowedEdge {
            id: id.into(),
            secret: "secret-0123456789".into(),
            listen_ports: vec![443, 80],
            listen_ports_udp: vec![],
            stun_interval_secs: None,
            firewall_config: None,
            egress: None,
            private_clients: None,
            limits: None,
            target_ports: None,
            proxy_protocol: None,
        }
    }

    #[test]
    fn edge_limits_default_validate_and_name_the_field() {
        let ok = validate_allowed_edges(vec![edge("a")], "edges").unwrap();
        assert_eq!(ok[0].limits, EdgeLimitSettings::default());
        assert_eq!(ok[0].limits.max_udp_sessions, 65_536);
        let base = ipc::EdgeLimits::default();
        let cases = [
            (
                ipc::EdgeLimits {
                    max_connections_per_source: 0,
                    ..base.clone()
                },
                "edges[0].limits.maxConnectionsPerSource",
            ),
            (
                ipc::EdgeLimits {
                    max_udp_sessions: MAX_UDP_SESSIONS + 1,
                    ..base.clone()
                },
                "edges[0].limits.maxUdpSessions",
            ),
            (
                ipc::EdgeLimits {
                    max_udp_sessions: 10,
                    max_udp_sessions_per_source: 11,
                    ..base.clone()
                },
                "edges[0].limits.maxUdpSessionsPerSource",
            ),
            (
                ipc::EdgeLimits {
                    udp_new_sessions_per_sec: 0,
                    ..base.clone()
                },
                "edges[0].limits.udpNewSessionsPerSec",
            ),
            (
                ipc::EdgeLimits {
                    udp_new_sessions_burst: 0,
                    ..base.clone()
                },
                "edges[0].limits.udpNewSessionsBurst",
            ),
            (
                ipc::EdgeLimits {
                    ipv6_source_prefix: 31,
                    ..base.clone()
                },
                "edges[0].limits.ipv6SourcePrefix",
            ),
            (
                ipc::EdgeLimits {
                    ipv6_source_prefix: 129,
                    ..base.clone()
                },
                "edges[0].limits.ipv6SourcePrefix",
            ),
        ];
        for (limits, path) in cases {
            let mut bad = edge("a");
            bad.limits = Some(limits);
            let err = validate_allowed_edges(vec![bad], "edges").unwrap_err();
            assert_eq!(err.path, path, "{err}");
        }
    }

    #[test]
    fn pushed_limits_are_brought_into_range_and_default_when_missing() {
        let pushed: EdgeLimitSettings =
            serde_json::from_str(r#"{"maxUdpSessions":0,"maxUdpSessionsPerSource":9,"future":1}"#)
                .unwrap();
        assert_eq!(pushed.ipv6_source_prefix, 64);
        let safe = pushed.sanitised();
        assert_eq!(safe.max_udp_sessions, 1);
        assert_eq!(safe.max_udp_sessions_per_source, 1);
        assert_eq!(
            safe.max_connections_per_source,
            EdgeLimitSettings::default().max_connections_per_source
        );
        let wide: EdgeLimitSettings = serde_json::from_str(r#"{"ipv6SourcePrefix":8}"#).unwrap();
        assert_eq!(wide.sanitised().ipv6_source_prefix, 32);
    }

    #[test]
    fn default_performance_is_valid() {
        let settings =
            PerformanceSettings::from_ipc(&ipc::PerformanceConfig::default(), "p").unwrap();
        assert_eq!(settings, PerformanceSettings::default());
        assert_eq!(settings.sustained_threshold_bytes_per_sec, 2_500_000);
    }

    #[test]
    fn pushed_flow_control_round_trips_and_is_validated_at_the_edge() {
        let hub = PerformanceSettings::from_ipc(
            &ipc::PerformanceConfig {
                stream_window_max_bytes: 256 << 10,
                stream_window_min_bytes: 64 << 10,
                window_budget_bytes: 8 << 20,
                sustained_threshold_mbps: 7,
                ..Default::default()
            },
            "p",
        )
        .unwrap();
        assert_eq!(
            PerformanceSettings::from_ipc(&hub.to_ipc(), "p").unwrap(),
            hub
        );
        let wire = serde_json::to_string(&PerformancePush::from(&hub)).unwrap();
        // A newer hub's extra field is ignored; a missing one takes its default.
        let mut value: serde_json::Value = serde_json::from_str(&wire).unwrap();
        value["fromTheFuture"] = serde_json::json!(1);
        value.as_object_mut().unwrap().remove("sustainedAfterSecs");
        let pushed: PerformancePush = serde_json::from_value(value).unwrap();
        let defaults = PerformanceSettings::default().to_ipc();
        let edge = PerformanceSettings::from_ipc(&pushed.apply_to(defaults.clone()), "p").unwrap();
        assert_eq!(edge, hub);
        // Nonsense from the other process is refused, not applied.
        let bad = PerformancePush {
            stream_window_min_bytes: 1,
            ..pushed
        };
        assert!(PerformanceSettings::from_ipc(&bad.apply_to(defaults), "p").is_err());
    }

    #[test]
    fn performance_rejects_inconsistent_values() {
        let base = ipc::PerformanceConfig::default();
        let cases = [
            (
                ipc::PerformanceConfig {
                    stream_window_max_bytes: 1,
                    ..base.clone()
                },
                "p.streamWindowMaxBytes",
            ),
            (
                ipc::PerformanceConfig {
                    heartbeat_timeout_secs: base.heartbeat_interval_secs,
                    ..base.clone()
                },
                "p.heartbeatTimeoutSecs",
            ),
            (
                ipc::PerformanceConfig {
                    udp_session_idle_secs: 0,
                    ..base.clone()
                },
                "p.udpSessionIdleSecs",
            ),
        ];
        for (config, path) in cases {
            assert_eq!(
                PerformanceSettings::from_ipc(&config, "p")
                    .unwrap_err()
                    .path,
                path
            );
        }
    }

    #[test]
    fn allowed_edges_are_checked_with_paths() {
        let ok = validate_allowed_edges(vec![edge("a"), edge("b")], "edges").unwrap();
        assert_eq!(ok[0].listen_ports, vec![80, 443]);
        assert_eq!(ok[0].stun_interval_secs, DEFAULT_STUN_INTERVAL_SECS);

        let err = validate_allowed_edges(vec![edge("a"), edge("a")], "edges").unwrap_err();
        assert_eq!(err.path, "edges[1].id");

        let mut bad = edge("c");
        bad.secret = "has space".into();
        let err = validate_allowed_edges(vec![edge("a"), bad], "edges").unwrap_err();
        assert_eq!(err.path, "edges[1].secret");
        assert!(!err.to_string().contains("has space"));

        let mut weak = edge("c");
        weak.secret = "fifteen-bytes..".into();
        let err = validate_allowed_edges(vec![weak], "edges").unwrap_err();
        assert_eq!(err.path, "edges[0].secret");
        assert!(err.to_string().contains("secret new"), "{err}");

        let mut bad = edge("d");
        bad.listen_ports = vec![80, 80];
        let err = validate_allowed_edges(vec![bad], "edges").unwrap_err();
        assert_eq!(err.path, "edges[0].listenPorts");

        let mut bad = edge("e");
        bad.listen_ports_udp = vec![0];
        let err = validate_allowed_edges(vec![bad], "edges").unwrap_err();
        assert_eq!(err.path, "edges[0].listenPortsUdp");

        let mut bad = edge("f");
        bad.firewall_config = Some(
            serde_json::from_str(r#"{"blockedIps":["1.2.3.4","10.0.0.0/8","nope"]}"#).unwrap(),
        );
        let err = validate_allowed_edges(vec![edge("a"), bad], "edges").unwrap_err();
        assert_eq!(err.path, "edges[1].firewallConfig.blockedIps[2]");
    }

    #[test]
    fn port_mappings_name_a_listed_port_once() {
        let map = |pairs: &[(u16, u16)]| {
            let mut edge = edge("m");
            edge.target_ports = Some(
                pairs
                    .iter()
                    .map(|&(port, target_port)| ipc::PortMapping {
                        port,
                        target_port: Some(target_port),
                        proxy_protocol: None,
                    })
                    .collect(),
            );
            validate_allowed_edges(vec![edge], "edges")
        };
        let ok = map(&[(443, 8443)]).unwrap();
        assert_eq!(ok[0].target_ports.get(&443), Some(&8443));
        for (pairs, path) in [
            (&[(444, 8443)][..], "edges[0].targetPorts[0].port"),
            (&[(443, 0)][..], "edges[0].targetPorts[0].targetPort"),
            (
                &[(80, 8080), (80, 8081)][..],
                "edges[0].targetPorts[1].port",
            ),
        ] {
            assert_eq!(map(pairs).unwrap_err().path, path);
        }
    }

    #[test]
    fn proxy_protocol_overrides_are_checked_with_paths() {
        let with = |mappings: serde_json::Value| {
            let edge: ipc::AllowedEdge = serde_json::from_value(serde_json::json!({
                "id": "p", "secret": "secret-0123456789", "listenPorts": [22, 53],
                "listenPortsUdp": [53, 51820], "proxyProtocol": "none", "targetPorts": mappings,
            }))
            .unwrap();
            validate_allowed_edges(vec![edge], "edges")
        };
        let ok = with(serde_json::json!([{"port": 22, "proxyProtocol": "v2"},
            {"port": 53, "proxyProtocol": "v1", "targetPort": 5353}]))
        .unwrap();
        let choice = &ok[0].proxy_protocol;
        assert_eq!(choice.edge, Some(ProxyProtocolVersion::None));
        assert_eq!(choice.ports.get(&22), Some(&ProxyProtocolVersion::V2));
        assert_eq!(ok[0].target_ports.get(&53), Some(&5353));
        assert_eq!(
            ok[0].target_ports.get(&22),
            None,
            "no targetPort: same port"
        );
        for (mappings, path) in [
            (
                serde_json::json!([{"port": 51820, "proxyProtocol": "v1"}]),
                "edges[0].targetPorts[0].proxyProtocol",
            ),
            (serde_json::json!([{"port": 22}]), "edges[0].targetPorts[0]"),
            (
                serde_json::json!([{"port": 22, "proxyProtocol": "none"},
                    {"port": 22, "targetPort": 2222}]),
                "edges[0].targetPorts[1].port",
            ),
        ] {
            let err = with(mappings).unwrap_err();
            assert_eq!(err.path, path, "{err}");
        }
        let err = with(serde_json::json!([{"port": 51820, "proxyProtocol": "v1"}])).unwrap_err();
        assert!(err.message.contains("no UDP form"), "{err}");
    }

    fn explicit_edge() -> ipc::EdgeConfig {
        ipc::EdgeConfig {
            hub_host: Some("hub.example.com".into()),
            edge_id: Some("edge-1".into()),
            secret: Some("secret-0123456789".into()),
            ..Default::default()
        }
    }

    #[test]
    fn edge_config_explicit_and_token() {
        let settings = EdgeSettings::from_ipc(explicit_edge(), "config").unwrap();
        assert_eq!(settings.hub_port, DEFAULT_HUB_PORT);
        assert_eq!(settings.stun_servers, vec![DEFAULT_STUN_SERVER.to_owned()]);
        assert_eq!(settings.transport_mode, TransportMode::QuicWithFallback);

        let token = ConnectionToken {
            hub_host: "127.0.0.1".into(),
            hub_port: 9443,
            edge_id: "edge-2".into(),
            secret: "0123456789abcdef".into(),
            hub_cert_sha256: Some("ab".repeat(32)),
        }
        .encode()
        .unwrap();
        let settings = EdgeSettings::from_ipc(
            ipc::EdgeConfig {
                token: Some(token.as_str().into()),
                ..Default::default()
            },
            "config",
        )
        .unwrap();
        assert_eq!(settings.hub_port, 9443);
        assert_eq!(settings.edge_id, "edge-2");
        assert_eq!(settings.hub_cert_sha256, Some([0xab; 32]));
    }

    #[test]
    fn edge_config_errors_name_the_field() {
        let cases: Vec<(ipc::EdgeConfig, &str)> = vec![
            (ipc::EdgeConfig::default(), "config.hubHost"),
            (
                ipc::EdgeConfig {
                    token: Some("x".into()),
                    hub_host: Some("h".into()),
                    ..Default::default()
                },
                "config.hubHost",
            ),
            (
                ipc::EdgeConfig {
                    token: Some("!!!".into()),
                    ..Default::default()
                },
                "config.token",
            ),
            (
                ipc::EdgeConfig {
                    bind_address: Some("not-an-ip".into()),
                    ..explicit_edge()
                },
                "config.bindAddress",
            ),
            (
                ipc::EdgeConfig {
                    hub_cert_sha256: Some("abc".into()),
                    ..explicit_edge()
                },
                "config.hubCertSha256",
            ),
            (
                ipc::EdgeConfig {
                    hub_port: Some(0),
                    ..explicit_edge()
                },
                "config.hubPort",
            ),
            (
                ipc::EdgeConfig {
                    stun_servers: Some(vec!["nope".into()]),
                    ..explicit_edge()
                },
                "config.stunServers[0]",
            ),
            (
                ipc::EdgeConfig {
                    edge_id: Some("a b".into()),
                    ..explicit_edge()
                },
                "config.edgeId",
            ),
        ];
        for (config, path) in cases {
            let err = EdgeSettings::from_ipc(config, "config").unwrap_err();
            assert_eq!(err.path, path, "{err}");
        }
    }

    #[test]
    fn fingerprints_parse_with_or_without_colons() {
        let plain = "0f".repeat(32);
        let colons = vec!["0F"; 32].join(":");
        assert_eq!(parse_fingerprint(&plain), Ok([0x0f; 32]));
        assert_eq!(parse_fingerprint(&colons), Ok([0x0f; 32]));
        assert!(parse_fingerprint("zz").is_err());
    }

    #[test]
    fn hub_settings_check_target_and_pem() {
        let config: ipc::HubConfig = serde_json::from_str(r#"{"targetHost":""}"#).unwrap();
        assert_eq!(
            HubSettings::from_ipc(config, "config").unwrap_err().path,
            "config.targetHost"
        );
        let config: ipc::HubConfig =
            serde_json::from_str(r#"{"tls":{"certPem":"x","keyPem":"y"}}"#).unwrap();
        assert_eq!(
            HubSettings::from_ipc(config, "config").unwrap_err().path,
            "config.tls.certPem"
        );
        let config: ipc::HubConfig = serde_json::from_str("{}").unwrap();
        let settings = HubSettings::from_ipc(config, "config").unwrap();
        assert_eq!(settings.tunnel_port, 8443);
        assert_eq!(settings.target_host, "127.0.0.1");
        assert_eq!(settings.max_udp_sessions, 131_072);
        let fd_budget = crate::fd_limit::hub_udp_sessions(crate::fd_limit::current());
        assert_eq!(
            settings.udp_budget.capacity() as u64,
            fd_budget.min(131_072)
        );
        let config: ipc::HubConfig = serde_json::from_str(r#"{"maxUdpSessions":0}"#).unwrap();
        assert_eq!(
            HubSettings::from_ipc(config, "config").unwrap_err().path,
            "config.maxUdpSessions"
        );
    }
}
