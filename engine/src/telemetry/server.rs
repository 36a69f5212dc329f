//! `metricsAddr`: `GET /metrics` (Prometheus text), `/healthz` (200 while the process serves) and
//! `/readyz` (200 when the role can do its job: a hub that runs; an edge whose tunnel is up and
//! whose assigned ports are all bound; 503 with the reason otherwise). For operators and their
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
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use remoteingress_ipc_schema::StatusResult;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::events::EventSink;

/// Where the endpoints read the role's state.
pub(crate) type StatusSource =
    Arc<dyn Fn() -> Pin<Box<dyn Future<Output = StatusResult> + Send>> + Send + Sync>;

const MAX_CONNECTIONS: usize = 64;
/// A connection must have sent its request head within this.
const REQUEST_DEADLINE: Duration = Duration::from_secs(2);
/// Longest life of a connection (a scraper that reads its response slowly).
const CONNECTION_DEADLINE: Duration = Duration::from_secs(10);
const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

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
                async move { Ok::<_, Infallible>(respond(request.uri().path(), &source, &events).await) }
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

async fn respond(path: &str, source: &StatusSource, events: &EventSink) -> Response<Full<Bytes>> {
    match path {
        "/metrics" => {
            let status = source().await;
            reply(
                StatusCode::OK,
                OPENMETRICS,
                super::render::render(&status, events.counters()),
            )
        }
        "/healthz" => reply(StatusCode::OK, "text/plain", "ok\n".to_owned()),
        "/readyz" => match readiness(&source().await) {
            Ok(()) => reply(StatusCode::OK, "text/plain", "ready\n".to_owned()),
            Err(why) => reply(
                StatusCode::SERVICE_UNAVAILABLE,
                "text/plain",
                format!("not ready: {why}\n"),
            ),
        },
        _ => reply(
            StatusCode::NOT_FOUND,
            "text/plain",
            "try /metrics, /healthz or /readyz\n".to_owned(),
        ),
    }
}

/// Ready, or why not.
pub(crate) fn readiness(status: &StatusResult) -> Result<(), String> {
    match status {
        StatusResult::Hub(_) => Ok(()),
        StatusResult::Edge(edge) if !edge.connected => Err(format!(
            "no tunnel to the hub ({})",
            edge.last_error.as_deref().unwrap_or("connecting")
        )),
        StatusResult::Edge(edge) if !edge.port_bind_failures.is_empty() => {
            let ports: Vec<String> = edge
                .port_bind_failures
                .iter()
                .map(|failure| failure.port.to_string())
                .collect();
            Err(format!("ports not bound: {}", ports.join(", ")))
        }
        StatusResult::Edge(_) => Ok(()),
        StatusResult::Idle(_) => Err("no role is running".to_owned()),
    }
}

fn reply(status: StatusCode, content_type: &str, body: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    if let Ok(value) = hyper::header::HeaderValue::from_str(content_type) {
        response
            .headers_mut()
            .insert(hyper::header::CONTENT_TYPE, value);
    }
    response
}
