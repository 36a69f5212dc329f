//! Request decoding and method dispatch.
//!
//! A line first becomes a [`RawRequest`] envelope (or an `ipcError` event); its `params` stay raw
//! JSON text until they are decoded for the named method with `serde_path_to_error`, so a bad
//! field is reported with its JSON path (`invalid_params`), and a huge or odd `params` (an
//! out-of-range number, a deep array) never becomes a `serde_json::Value` tree: it costs its
//! own size, not tens of times that. A line whose `id` can be read always gets a response with
//! that id, even when the rest of the envelope is wrong. Each request runs in its own task.

use std::sync::Arc;
use std::time::Duration;

use remoteingress_ipc_schema::{
    method_names as m, EmptyResult, ErrorCode, ErrorResponse, IpcErrorEvent, NoParams, OkResponse,
    PingParams, PingResult, RequestId, Response, StartParams, StopEgressTcpListenerParams,
    StopEgressTcpProxyParams, UpdateAllowedEdgesParams,
};
use serde::de::{DeserializeOwned, IgnoredAny};
use serde_json::value::RawValue;
use serde_json::Value;

use crate::service::{Service, ServiceError};

/// Characters of an offending line quoted back in `ipcError`.
const QUOTED_LINE_CHARS: usize = 200;
/// Longest `ping` delay.
const MAX_PING_DELAY_MS: u64 = 60_000;

/// A request whose `params` are still raw JSON text.
#[derive(Debug)]
pub(crate) struct RawRequest {
    pub id: RequestId,
    pub method: String,
    pub params: Option<Box<RawValue>>,
}

/// What became of one input line.
#[derive(Debug)]
pub(crate) enum Decoded {
    Request(RawRequest),
    /// The envelope is wrong but its id could be read: answer with an error response.
    Refused(ErrorResponse),
    Invalid(IpcErrorEvent),
}

/// Decodes a line into a request envelope, or what it deserves instead.
pub(crate) fn decode_line(line: &[u8]) -> Decoded {
    let invalid = |message: String| {
        Decoded::Invalid(IpcErrorEvent {
            message,
            line: quote(line),
        })
    };
    // Top-level fields with their values as raw text: nothing inside them is parsed yet.
    let mut fields: std::collections::HashMap<String, Box<RawValue>> =
        match serde_json::from_slice(line) {
            Ok(fields) => fields,
            Err(error) => {
                return match serde_json::from_slice::<IgnoredAny>(line) {
                    Ok(_) => invalid("line is not a JSON object".to_owned()),
                    Err(_) => invalid(format!("line is not valid JSON: {error}")),
                }
            }
        };
    let id = match fields
        .remove("id")
        .map(|raw| serde_json::from_str::<RequestId>(raw.get()))
    {
        Some(Ok(id)) => id,
        Some(Err(_)) => {
            return invalid("request field \"id\" must be a string or a number".to_owned())
        }
        None => return invalid("request has no \"id\"".to_owned()),
    };
    let refused = |message: String| {
        Decoded::Refused(ErrorResponse {
            id: id.clone(),
            success: false,
            error: message,
            code: ErrorCode::InvalidParams,
        })
    };
    let method = match fields
        .remove("method")
        .map(|raw| serde_json::from_str::<String>(raw.get()))
    {
        Some(Ok(method)) => method,
        Some(Err(_)) => return refused("request field \"method\" must be a string".to_owned()),
        None => return refused("request has no \"method\"".to_owned()),
    };
    let params = fields.remove("params");
    if let Some(extra) = fields.keys().next() {
        return refused(format!("request has an unknown field {extra:?}"));
    }
    Decoded::Request(RawRequest { id, method, params })
}

/// The first characters of a line, for error reports.
pub(crate) fn quote(line: &[u8]) -> String {
    String::from_utf8_lossy(line)
        .chars()
        .take(QUOTED_LINE_CHARS)
        .collect()
}

/// Runs one request against the service and builds its response.
pub(crate) async fn handle(service: Arc<Service>, request: RawRequest) -> Response {
    let RawRequest { id, method, params } = request;
    match call(&service, &method, params).await {
        Ok(result) => Response::Ok(OkResponse {
            id,
            success: true,
            result,
        }),
        Err(error) => Response::Err(ErrorResponse {
            id,
            success: false,
            error: error.message,
            code: error.code,
        }),
    }
}

async fn call(
    service: &Service,
    method: &str,
    params: Option<Box<RawValue>>,
) -> Result<Value, ServiceError> {
    match method {
        m::START => {
            let params = decode_start(params)?;
            to_value(service.start(params).await?)
        }
        m::STOP => {
            let NoParams {} = decode_params(params, false)?;
            service.stop().await;
            to_value(EmptyResult {})
        }
        m::GET_STATUS => {
            let NoParams {} = decode_params(params, false)?;
            to_value(service.status().await)
        }
        m::PING => {
            let params: PingParams = decode_params(params, false)?;
            if params.delay_ms > MAX_PING_DELAY_MS {
                return Err(ServiceError::new(
                    ErrorCode::InvalidParams,
                    format!("params.delayMs: must be at most {MAX_PING_DELAY_MS}"),
                ));
            }
            tokio::time::sleep(Duration::from_millis(params.delay_ms)).await;
            to_value(PingResult {
                pong: true,
                version: env!("CARGO_PKG_VERSION").to_owned(),
            })
        }
        m::UPDATE_ALLOWED_EDGES => {
            let params: UpdateAllowedEdgesParams = decode_params(params, true)?;
            to_value(service.update_allowed_edges(params.edges).await?)
        }
        m::START_EGRESS_TCP_PROXY => {
            let request: remoteingress_ipc_schema::EgressTcpProxyRequest =
                decode_params(params, true)?;
            to_value(service.hub().await?.start_egress_proxy(request).await?)
        }
        m::STOP_EGRESS_TCP_PROXY => {
            let params: StopEgressTcpProxyParams = decode_params(params, true)?;
            service.hub().await?.stop_egress_proxy(&params.proxy_id)?;
            to_value(EmptyResult {})
        }
        m::START_EGRESS_TCP_LISTENER => {
            let config: remoteingress_ipc_schema::EgressListenerConfig =
                decode_params(params, true)?;
            to_value(service.hub().await?.start_egress_listener(config).await?)
        }
        m::STOP_EGRESS_TCP_LISTENER => {
            let params: StopEgressTcpListenerParams = decode_params(params, true)?;
            service
                .hub()
                .await?
                .stop_egress_listener(&params.listener_id)
                .await?;
            to_value(EmptyResult {})
        }
        other => Err(ServiceError::new(
            ErrorCode::UnknownMethod,
            format!("unknown method {other:?}"),
        )),
    }
}

/// Decodes `start` params. Done in two steps because serde loses the field path inside an
/// adjacently tagged enum: first the role, then the config with its own path.
fn decode_start(params: Option<Box<RawValue>>) -> Result<StartParams, ServiceError> {
    let invalid = |message: String| ServiceError::new(ErrorCode::InvalidParams, message);
    let usage = "params: start requires {\"role\": \"hub\"|\"edge\", \"config\": {...}}";
    let mut object: std::collections::HashMap<String, Box<RawValue>> = params
        .and_then(|raw| serde_json::from_str(raw.get()).ok())
        .ok_or_else(|| invalid(usage.to_owned()))?;
    let role = object.remove("role");
    let config = object.remove("config");
    if let Some(extra) = object.keys().next() {
        return Err(invalid(format!(
            "params: unknown field `{extra}`, expected `role` or `config`"
        )));
    }
    let config = config.map_or_else(|| "{}".to_owned(), |raw| raw.get().to_owned());
    let role = role.and_then(|raw| serde_json::from_str::<String>(raw.get()).ok());
    match role.as_deref() {
        Some("hub") => Ok(StartParams::Hub(decode_at(&config, "params.config")?)),
        Some("edge") => Ok(StartParams::Edge(decode_at(&config, "params.config")?)),
        Some(other) => Err(invalid(format!(
            "params.role: unknown role {other:?}, expected \"hub\" or \"edge\""
        ))),
        None => Err(invalid(
            "params.role: must be \"hub\" or \"edge\"".to_owned(),
        )),
    }
}

/// Decodes `params` for a method; a missing `params` counts as `{}` unless `required`.
fn decode_params<T: DeserializeOwned>(
    params: Option<Box<RawValue>>,
    required: bool,
) -> Result<T, ServiceError> {
    match params {
        Some(raw) => decode_at(raw.get(), "params"),
        None if required => Err(ServiceError::new(
            ErrorCode::InvalidParams,
            "params: this method requires params",
        )),
        None => decode_at("{}", "params"),
    }
}

/// Decodes JSON `text`, reporting a bad field as `<prefix>.<path>: <problem>`.
fn decode_at<T: DeserializeOwned>(text: &str, prefix: &str) -> Result<T, ServiceError> {
    let mut deserializer = serde_json::Deserializer::from_str(text);
    serde_path_to_error::deserialize(&mut deserializer).map_err(|error| {
        let path = error.path().to_string();
        let path = if path == "." {
            prefix.to_owned()
        } else {
            format!("{prefix}.{path}")
        };
        ServiceError::new(
            ErrorCode::InvalidParams,
            format!("{path}: {}", error.inner()),
        )
    })
}

fn to_value<T: serde::Serialize>(value: T) -> Result<Value, ServiceError> {
    serde_json::to_value(value).map_err(|e| ServiceError::new(ErrorCode::Internal, e.to_string()))
}
