//! The line envelopes: request and response (docs/architecture.md, "IPC contract"). Events are [`crate::Event`].

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A request's id, chosen by the caller: a string, or a number (as JSON-RPC-style clients may
/// send); the response carries the same JSON value back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum RequestId {
    Text(String),
    Number(serde_json::Number),
}

impl From<&str> for RequestId {
    fn from(id: &str) -> Self {
        Self::Text(id.to_owned())
    }
}

/// A request line. `params` is decoded per method, so a bad field is reported with its path.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Request {
    /// Caller-chosen id, echoed in the response.
    pub id: RequestId,
    /// Method name, e.g. `getStatus`.
    pub method: String,
    /// Method parameters; may be omitted for methods without parameters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub params: Option<serde_json::Value>,
}

/// A response line: `success` with `result`, or `error` with a machine-readable `code`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum Response {
    Ok(OkResponse),
    Err(ErrorResponse),
}

/// A successful response.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct OkResponse {
    pub id: RequestId,
    /// Always true.
    pub success: bool,
    pub result: serde_json::Value,
}

/// A failed response.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ErrorResponse {
    pub id: RequestId,
    /// Always false.
    pub success: bool,
    /// Human readable message.
    pub error: String,
    /// Stable snake_case code.
    pub code: ErrorCode,
}

/// Stable error codes of failed responses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// No such method.
    UnknownMethod,
    /// Parameters missing, of the wrong type, or with unknown fields; the message names the path.
    InvalidParams,
    /// The configuration is well-formed but not valid (bad address, bad id, ...).
    InvalidConfig,
    /// The method belongs to the other role.
    WrongRole,
    /// The method needs a running role.
    NotRunning,
    /// `start` while a role runs.
    AlreadyStarted,
    /// The role could not start (e.g. the tunnel port is taken).
    StartFailed,
    /// The named edge is not connected.
    EdgeNotConnected,
    /// The named egress proxy does not exist.
    UnknownProxy,
    /// The named egress listener does not exist.
    UnknownListener,
    /// A listener could not bind its address (the message names it).
    BindFailed,
    /// Refused by policy.
    Denied,
    /// Egress needs a QUIC tunnel; the edge is connected over TLS (egress fails closed: the hub
    /// never dials in its place).
    EgressNeedsQuic,
    /// Not built yet in this version.
    NotImplemented,
    /// An unexpected failure inside the binary.
    Internal,
}

impl ErrorCode {
    /// The wire spelling, e.g. `invalid_params`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::UnknownMethod => "unknown_method",
            Self::InvalidParams => "invalid_params",
            Self::InvalidConfig => "invalid_config",
            Self::WrongRole => "wrong_role",
            Self::NotRunning => "not_running",
            Self::AlreadyStarted => "already_started",
            Self::StartFailed => "start_failed",
            Self::EdgeNotConnected => "edge_not_connected",
            Self::UnknownProxy => "unknown_proxy",
            Self::UnknownListener => "unknown_listener",
            Self::BindFailed => "bind_failed",
            Self::Denied => "denied",
            Self::EgressNeedsQuic => "egress_needs_quic",
            Self::NotImplemented => "not_implemented",
            Self::Internal => "internal",
        }
    }
}
