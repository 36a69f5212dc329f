//! Request decoding and method dispatch.
//!
//! A line first becomes a [`Request`] envelope (or an `ipcError` event); its `params` are then
//! decoded for the named method with `serde_path_to_error`, so a bad field is reported with its
//! JSON path (`invalid_params`). Each request runs in its own task; responses carry the id.

use std::sync::Arc;
use std::time::Duration;

use remoteingress_ipc_schema::{
    method_names as m, EmptyResult, ErrorCode, ErrorResponse, IpcErrorEvent, NoParams, OkResponse,
    PingParams, PingResult, Request, Response, StartParams, StopEgressTcpProxyParams,
    UpdateAllowedEdgesParams,
};
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::service::{Service, ServiceError};

/// Characters of an offending line quoted back in `ipcError`.
const QUOTED_LINE_CHARS: usize = 200;
/// Longest `ping` delay.
const MAX_PING_DELAY_MS: u64 = 60_000;

/// What became of one input line.
#[derive(Debug)]
pub enum Decoded {
    Request(Request),
    Invalid(IpcErrorEvent),
}

/// Decodes a line into a request envelope, or the `ipcError` it deserves.
pub fn decode_line(line: &[u8]) -> Decoded {
    let invalid = |message: String| {
        Decoded::Invalid(IpcErrorEvent {
            message,
            line: quote(line),
        })
    };
    let value: Value = match serde_json::from_slice(line) {
        Ok(value) => value,
        Err(error) => return invalid(format!("line is not valid JSON: {error}")),
    };
    let Value::Object(mut object) = value else {
        return invalid("line is not a JSON object".to_owned());
    };
    let id = match object.remove("id") {
        Some(Value::String(id)) => id,
        Some(_) => return invalid("request field \"id\" must be a string".to_owned()),
        None => return invalid("request has no \"id\"".to_owned()),
    };
    let method = match object.remove("method") {
        Some(Value::String(method)) => method,
        Some(_) => return invalid("request field \"method\" must be a string".to_owned()),
        None => return invalid("request has no \"method\"".to_owned()),
    };
    let params = object.remove("params");
    if let Some(extra) = object.keys().next() {
        return invalid(format!("request has an unknown field {extra:?}"));
    }
    Decoded::Request(Request { id, method, params })
}

/// The first characters of a line, for error reports.
pub fn quote(line: &[u8]) -> String {
    String::from_utf8_lossy(line)
        .chars()
        .take(QUOTED_LINE_CHARS)
        .collect()
}

/// Runs one request against the service and builds its response.
pub async fn handle(service: Arc<Service>, request: Request) -> Response {
    let Request { id, method, params } = request;
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
    params: Option<Value>,
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
            let _: remoteingress_ipc_schema::EgressTcpProxyRequest = decode_params(params, true)?;
            service.hub().await?;
            Err(not_implemented(method))
        }
        m::STOP_EGRESS_TCP_PROXY => {
            let _: StopEgressTcpProxyParams = decode_params(params, true)?;
            service.hub().await?;
            Err(not_implemented(method))
        }
        other => Err(ServiceError::new(
            ErrorCode::UnknownMethod,
            format!("unknown method {other:?}"),
        )),
    }
}

/// Decodes `start` params. Done in two steps because serde loses the field path inside an
/// adjacently tagged enum: first the role, then the config with its own path.
fn decode_start(params: Option<Value>) -> Result<StartParams, ServiceError> {
    let invalid = |message: String| ServiceError::new(ErrorCode::InvalidParams, message);
    let Some(Value::Object(mut object)) = params else {
        return Err(invalid(
            "params: start requires {\"role\": \"hub\"|\"edge\", \"config\": {...}}".to_owned(),
        ));
    };
    let role = object.remove("role");
    let config = object.remove("config");
    if let Some(extra) = object.keys().next() {
        return Err(invalid(format!(
            "params: unknown field `{extra}`, expected `role` or `config`"
        )));
    }
    let config = config.unwrap_or_else(|| Value::Object(serde_json::Map::new()));
    match role.as_ref().and_then(Value::as_str) {
        Some("hub") => Ok(StartParams::Hub(decode_at(config, "params.config")?)),
        Some("edge") => Ok(StartParams::Edge(decode_at(config, "params.config")?)),
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
    params: Option<Value>,
    required: bool,
) -> Result<T, ServiceError> {
    let value = match params {
        Some(value) => value,
        None if required => {
            return Err(ServiceError::new(
                ErrorCode::InvalidParams,
                "params: this method requires params",
            ))
        }
        None => Value::Object(serde_json::Map::new()),
    };
    decode_at(value, "params")
}

/// Decodes `value`, reporting a bad field as `<prefix>.<path>: <problem>`.
fn decode_at<T: DeserializeOwned>(value: Value, prefix: &str) -> Result<T, ServiceError> {
    serde_path_to_error::deserialize(value).map_err(|error| {
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

fn not_implemented(method: &str) -> ServiceError {
    ServiceError::new(
        ErrorCode::NotImplemented,
        format!("{method} is not available in this version yet"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decode_line_classifies_bad_input() {
        let cases: [(&[u8], &str); 6] = [
            (b"not json", "not valid JSON"),
            (b"[1,2]", "not a JSON object"),
            (br#"{"method":"getStatus"}"#, "no \"id\""),
            (br#"{"id":"1"}"#, "no \"method\""),
            (br#"{"id":1,"method":"x"}"#, "\"id\" must be a string"),
            (br#"{"id":"1","method":"x","extra":1}"#, "unknown field"),
        ];
        for (line, expected) in cases {
            match decode_line(line) {
                Decoded::Invalid(event) => {
                    assert!(event.message.contains(expected), "{}", event.message);
                    assert_eq!(event.line, quote(line));
                }
                Decoded::Request(request) => panic!("accepted {request:?}"),
            }
        }
    }

    #[test]
    fn quote_cuts_to_200_characters() {
        assert_eq!(quote("é".repeat(500).as_bytes()).chars().count(), 200);
    }

    #[test]
    fn params_errors_carry_the_json_path() {
        let value = serde_json::json!({"role":"hub","config":{"tunnelPort":"x"}});
        let error = decode_start(Some(value)).unwrap_err();
        assert_eq!(error.code, ErrorCode::InvalidParams);
        assert!(
            error.message.starts_with("params.config.tunnelPort:"),
            "{}",
            error.message
        );
    }
}
