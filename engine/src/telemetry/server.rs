//! `metricsAddr`: `GET /metrics` (OpenMetrics when asked for, else the Prometheus text format:
//! [`super::text_format`]), `/status` (the JSON `getStatus` returns: one source of truth, and it
//! holds no secret), `/healthz` (200 while the process serves), `/readyz` (200 when the role can
//! do its job: a hub that runs; an edge whose tunnel is up and whose assigned ports are all
//! bound; 503 with the reason otherwise) and a short index at `/`. Only GET and HEAD are
//! answered (405 otherwise): nothing here changes state. For operators and their
//! scrapers, so small bounds that idle connections cannot exhaust: 64 connections at once
//! ([`super::slots`]: a new one displaces the oldest that has not sent a request), the request
//! head within 2 s, one request per connection, 10 s in all. Every connection closed to keep
//! these bounds is counted (`remoteingress_http_connections_shed_total{reason}`).

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{HeaderValue, ACCEPT, ALLOW, CONTENT_TYPE};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use remoteingress_ipc_schema::StatusResult;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use super::text_format;
use crate::events::EventSink;

/// Where the endpoints read the role's state.
pub(crate) type StatusSource =
    Arc<dyn Fn() -> Pin<Box<dyn Future<Output = StatusResult> + Send>> + Send + Sync>;

const MAX_CONNECTIONS: usize = 64;
/// A connection must have sent its request head within this.
const REQUEST_DEADLINE: Duration = Duration::from_secs(2);
/// Longest life of a connection (a scraper that reads its response slowly).
const CONNECTION_DEADLINE: Duration = Duration::from_secs(10);
/// What `/` lists.
const INDEX: &str = "remoteingress\n\
    /metrics  Prometheus metrics (OpenMetrics when the Accept header asks for it)\n\
    /status   the role's status as JSON (what IPC getStatus returns)\n\
    /healthz  200 while the process serves\n\
    /readyz   200 when the role can do its job, else 503 and why\n";

/// Binds the endpoints' address (a start error when it is taken).
pub(crate) async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await
}

/// Serves until `stop` is cancelled.
pub(crate) async fn serve(
    listener: TcpListener,
    source: StatusSource,
    events: EventSink,
    stop: CancellationToken,
) {
    let slots = super::slots::Slots::new(MAX_CONNECTIONS);
    loop {
        let accepted = tokio::select! {
            () = stop.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        let Ok((stream, _)) = accepted else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let slot = match slots.admit() {
            Some((slot, super::slots::Admission::Free)) => slot,
            Some((slot, super::slots::Admission::Displaced)) => {
                shed(&events, "displaced_idle");
                slot
            }
            None => {
                shed(&events, "refused_busy");
                continue; // dropped: every slot is serving a request
            }
        };
        let (source, events, stop) = (source.clone(), events.clone(), stop.clone());
        let shed_events = events.clone();
        tokio::spawn(async move {
            let displaced = slot.displaced();
            let slot = Arc::new(slot);
            let busy = slot.clone();
            let handler = hyper::service::service_fn(move |request: Request<Incoming>| {
                busy.busy();
                let (source, events) = (source.clone(), events.clone());
                async move { Ok::<_, Infallible>(respond(&request, &source, &events).await) }
            });
            let connection = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(REQUEST_DEADLINE)
                .keep_alive(false)
                .serve_connection(TokioIo::new(stream), handler);
            tokio::select! {
                () = stop.cancelled() => {}
                () = displaced.cancelled() => {}
                served = tokio::time::timeout(CONNECTION_DEADLINE, connection) => {
                    if matches!(served, Ok(Err(ref error)) if error.is_timeout()) {
                        shed(&shed_events, "request_timeout");
                    }
                }
            }
            drop(slot);
        });
    }
}

/// Counts a connection closed to keep the listener's bounds.
fn shed(events: &EventSink, reason: &str) {
    events
        .counters()
        .http_connections_shed
        .get_or_create(&super::counters::ReasonLabel {
            reason: reason.to_owned(),
        })
        .inc();
}

async fn respond(
    request: &Request<Incoming>,
    source: &StatusSource,
    events: &EventSink,
) -> Response<Full<Bytes>> {
    if !matches!(*request.method(), Method::GET | Method::HEAD) {
        let mut response = reply(
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain",
            "only GET and HEAD are answered here\n".to_owned(),
        );
        response
            .headers_mut()
            .insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
        return response;
    }
    match request.uri().path() {
        "/metrics" => {
            let accept = request
                .headers()
                .get(ACCEPT)
                .and_then(|value| value.to_str().ok());
            let openmetrics = super::render::render(&source().await, events.counters());
            if text_format::wants_openmetrics(accept) {
                reply(StatusCode::OK, text_format::OPENMETRICS, openmetrics)
            } else {
                reply(
                    StatusCode::OK,
                    text_format::PROMETHEUS_TEXT,
                    text_format::to_prometheus_text(&openmetrics),
                )
            }
        }
        "/status" => match serde_json::to_string_pretty(&source().await) {
            Ok(json) => reply(StatusCode::OK, "application/json", json + "\n"),
            Err(error) => reply(
                StatusCode::INTERNAL_SERVER_ERROR,
                "text/plain",
                format!("cannot encode the status: {error}\n"),
            ),
        },
        "/healthz" => reply(StatusCode::OK, "text/plain", "ok\n".to_owned()),
        "/readyz" => match readiness(&source().await) {
            Ok(()) => reply(StatusCode::OK, "text/plain", "ready\n".to_owned()),
            Err(why) => reply(
                StatusCode::SERVICE_UNAVAILABLE,
                "text/plain",
                format!("not ready: {why}\n"),
            ),
        },
        "/" => reply(
            StatusCode::OK,
            "text/plain; charset=utf-8",
            INDEX.to_owned(),
        ),
        _ => reply(
            StatusCode::NOT_FOUND,
            "text/plain",
            "not found; see / for what is served here\n".to_owned(),
        ),
    }
}

/// Why `/readyz` answers 503; its Display is the reason the body shows after "not ready: ".
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub(crate) enum NotReady {
    /// An edge without a tunnel: the hub's last error, or "connecting" before the first.
    #[error("no tunnel to the hub ({0})")]
    NoTunnel(String),
    /// An edge whose tunnel is up but some assigned ports did not bind.
    #[error("ports not bound: {}", join_ports(.0))]
    PortsNotBound(Vec<u16>),
    /// The process serves but runs neither role.
    #[error("no role is running")]
    NoRole,
}

fn join_ports(ports: &[u16]) -> String {
    let ports: Vec<String> = ports.iter().map(u16::to_string).collect();
    ports.join(", ")
}

/// Ready, or why not.
pub(crate) fn readiness(status: &StatusResult) -> Result<(), NotReady> {
    match status {
        StatusResult::Hub(_) => Ok(()),
        StatusResult::Edge(edge) if !edge.connected => Err(NotReady::NoTunnel(
            edge.last_error
                .as_deref()
                .unwrap_or("connecting")
                .to_owned(),
        )),
        StatusResult::Edge(edge) if !edge.port_bind_failures.is_empty() => {
            Err(NotReady::PortsNotBound(
                edge.port_bind_failures
                    .iter()
                    .map(|failure| failure.port)
                    .collect(),
            ))
        }
        StatusResult::Edge(_) => Ok(()),
        StatusResult::Idle(_) => Err(NotReady::NoRole),
    }
}

fn reply(status: StatusCode, content_type: &str, body: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    if let Ok(value) = HeaderValue::from_str(content_type) {
        response.headers_mut().insert(CONTENT_TYPE, value);
    }
    response
}
