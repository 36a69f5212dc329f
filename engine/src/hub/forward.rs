//! One tunneled stream on the hub: validate the edge's PROXY v1 line, dial the target at the
//! edge's public port, write the PROXY header (v1 verbatim, v2, or none where the hub, the edge
//! or the port says `none`), then relay bytes both ways.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use remoteingress_ipc_schema::{
    Event, ProxyProtocolVersion, StreamClosedEvent, StreamEventMode, StreamOpenedEvent,
};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use remoteingress_ipc_schema::PortProtocol;

use super::grant::PortGrant;
use crate::config::HubSettings;
use crate::events::EventSink;
use crate::limited_warn;
use crate::log_limit::SharedLogLimiter;
use crate::metrics::{OpenStreamGuard, StreamStats};
use crate::proxy_protocol::{choice, v1, v2, ProxyTransport};
use crate::relay::{relay_tcp_and_tunnel, RelayCounters, RelaySide};
use crate::transport::tunnel::TunnelStream;

/// Deadline for connecting to the target.
const TARGET_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// What every stream and UDP session of one edge shares.
#[derive(Debug)]
pub(crate) struct ForwardContext {
    pub(crate) edge_id: String,
    pub(crate) settings: Arc<HubSettings>,
    pub(crate) stats: Arc<StreamStats>,
    pub(crate) events: EventSink,
    /// The ports this edge may be forwarded to now.
    pub(crate) grant: Arc<PortGrant>,
    /// Rate limit of the warnings this edge provokes.
    pub(crate) warnings: Arc<SharedLogLimiter>,
    /// The hub's tasks, which a stop waits for (UDP reply readers run here).
    pub(crate) tasks: tokio_util::task::TaskTracker,
}

/// Forwards one stream until both directions end. A stream that cannot be forwarded (bad OPEN,
/// port not assigned, target unreachable) is aborted, so the client sees a reset.
///
/// `stop` (the session ending) aborts it, so the target sees a reset, not a complete request.
pub(crate) async fn forward(
    stream: TunnelStream,
    open: Bytes,
    context: Arc<ForwardContext>,
    stop: tokio_util::sync::CancellationToken,
) {
    let stream_id = stream.id();
    let edge_id = &context.edge_id;
    let header = match v1::parse(&open) {
        Ok((header, used)) if used == open.len() => header,
        Ok(_) => {
            limited_warn!(context.warnings, %edge_id, stream_id, "OPEN payload has bytes after the PROXY line; stream refused");
            return stream.abort();
        }
        Err(error) => {
            limited_warn!(context.warnings, %edge_id, stream_id, %error, "OPEN payload is not a valid PROXY v1 line; stream refused");
            return stream.abort();
        }
    };
    if !context.grant.source_allowed(edge_id, &header) {
        return stream.abort();
    }
    let Some(route) = context
        .grant
        .route(edge_id, PortProtocol::Tcp, header.destination.port())
    else {
        return stream.abort();
    };
    let port = route.target_port;
    let version = choice::tcp_header(route.proxy_protocol.or(context.settings.proxy_protocol));
    let per_stream = context.settings.stream_event_mode == StreamEventMode::PerStream;
    let mut guard = OpenStreamGuard::new(&context.stats);
    if per_stream {
        context.events.emit(Event::StreamOpened(StreamOpenedEvent {
            edge_id: edge_id.clone(),
            stream_id,
            client_addr: header.source.to_string(),
            port: header.destination.port(),
        }));
    }
    let counters = Arc::new(RelayCounters::default());
    let target = (context.settings.target_host.as_str(), port);
    let connected = tokio::select! {
        () = stop.cancelled() => return stream.abort(),
        connected = tokio::time::timeout(TARGET_CONNECT_TIMEOUT, TcpStream::connect(target)) => connected,
    };
    match connected {
        Ok(Ok(mut target_stream)) => {
            let _ = target_stream.set_nodelay(true);
            let written = match version {
                ProxyProtocolVersion::V1 => target_stream.write_all(&open).await,
                ProxyProtocolVersion::V2 => {
                    target_stream
                        .write_all(&v2::encode(&header, ProxyTransport::Stream))
                        .await
                }
                ProxyProtocolVersion::None => Ok(()),
            };
            match written {
                Ok(()) => {
                    let relayed = relay_tcp_and_tunnel(
                        target_stream,
                        stream,
                        RelaySide::Target,
                        counters.clone(),
                        &stop,
                    );
                    if let Err(error) = relayed.await {
                        tracing::debug!(%edge_id, stream_id, %error, "stream aborted");
                    }
                }
                Err(error) => {
                    tracing::debug!(%edge_id, stream_id, %error, "cannot write the PROXY header");
                    stream.abort();
                }
            }
        }
        Ok(Err(error)) => {
            context.stats.target_connect_failed();
            limited_warn!(context.warnings, %edge_id, stream_id, host = %context.settings.target_host, port, %error, "cannot connect to the target");
            stream.abort();
        }
        Err(_) => {
            context.stats.target_connect_failed();
            limited_warn!(context.warnings, %edge_id, stream_id, host = %context.settings.target_host, port, "target connect timed out");
            stream.abort();
        }
    }
    guard.bytes_in = counters.inbound();
    guard.bytes_out = counters.outbound();
    if per_stream {
        context.events.emit(Event::StreamClosed(StreamClosedEvent {
            edge_id: edge_id.clone(),
            stream_id,
            bytes_in: guard.bytes_in,
            bytes_out: guard.bytes_out,
        }));
    }
}
