//! Request parameters and results of every IPC method (docs/architecture.md, "IPC contract").

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::config::{AllowedEdge, EdgeConfig, HubConfig};

/// Names of the methods the binary answers, as they appear in `method`.
pub mod method_names {
    pub const START: &str = "start";
    pub const STOP: &str = "stop";
    pub const GET_STATUS: &str = "getStatus";
    pub const PING: &str = "ping";
    pub const UPDATE_ALLOWED_EDGES: &str = "updateAllowedEdges";
    pub const START_EGRESS_TCP_PROXY: &str = "startEgressTcpProxy";
    pub const STOP_EGRESS_TCP_PROXY: &str = "stopEgressTcpProxy";
    pub const START_EGRESS_TCP_LISTENER: &str = "startEgressTcpListener";
    pub const STOP_EGRESS_TCP_LISTENER: &str = "stopEgressTcpListener";
}

/// `start` parameters: the role and its configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(
    tag = "role",
    content = "config",
    rename_all = "camelCase",
    deny_unknown_fields
)]
pub enum StartParams {
    Hub(HubConfig),
    Edge(EdgeConfig),
}

/// A method without parameters: `params` may be omitted or `{}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NoParams {}

/// An empty result (`{}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EmptyResult {}

/// `ping` parameters: a liveness probe that answers after an optional delay (up to 60 s), so a
/// supervisor can check the process answers and a test can observe concurrent handling.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PingParams {
    /// Milliseconds to wait before answering (0..=60000). Default 0.
    #[serde(default)]
    pub delay_ms: u64,
}

/// `ping` result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PingResult {
    /// Always true.
    pub pong: bool,
    /// Crate version of the binary.
    pub version: String,
}

/// `updateAllowedEdges` parameters: the complete list of edges the hub accepts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UpdateAllowedEdgesParams {
    pub edges: Vec<AllowedEdge>,
}

/// `updateAllowedEdges` result.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UpdateAllowedEdgesResult {
    /// Number of allowed edges now.
    pub edges: u32,
    /// Connected edges that were sent a new CONFIG.
    pub pushed: u32,
    /// Connected edges that were disconnected (removed, or secret changed).
    pub disconnected: u32,
}

/// `stopEgressTcpProxy` parameters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct StopEgressTcpProxyParams {
    pub proxy_id: String,
}

/// `stopEgressTcpListener` parameters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct StopEgressTcpListenerParams {
    pub listener_id: String,
}
