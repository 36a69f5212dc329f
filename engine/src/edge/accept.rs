//! Per client connection on a public port: refuse at once (RST) while the tunnel is down or
//! when the client's address, or the edge, holds as many connections as allowed
//! ([`super::limits`]); otherwise build the PROXY v1 line from the accepted socket, open a
//! tunnel stream, relay.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

use super::limits::{ConnectionSlot, Refusal};
use super::EdgeShared;
use crate::log_limit::LogLimiter;
use crate::metrics::OpenStreamGuard;
use crate::proxy_protocol::{v1, ProxyHeader};
use crate::relay::{relay_tcp_and_tunnel, RelayCounters, RelaySide};

/// Accepts clients on one public port until `stop` (port removed or edge stopped).
pub(crate) async fn accept_loop(
    listener: TcpListener,
    port: u16,
    shared: Arc<EdgeShared>,
    stop: CancellationToken,
) {
    let mut failures = AcceptFailures::default();
    loop {
        let accepted = tokio::select! {
            () = stop.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((socket, client)) => {
                if shared.tunnel.borrow().is_none() {
                    refuse(socket, client, port, "tunnel down");
                    continue;
                }
                match shared.connections.admit(client.ip()) {
                    Ok(slot) => {
                        let shared_for_task = shared.clone();
                        shared.spawn(serve_client(socket, client, shared_for_task, slot));
                    }
                    Err(Refusal::PerSource) => {
                        refuse(
                            socket,
                            client,
                            port,
                            "too many connections from this address",
                        );
                    }
                    Err(Refusal::Capacity) => {
                        refuse(
                            socket,
                            client,
                            port,
                            "the edge is at its connection capacity",
                        );
                    }
                }
            }
            Err(error) => {
                // EMFILE, ENFILE, ENOBUFS...: breathe instead of spinning on a listener that
                // stays readable, and log once a second rather than twenty times.
                failures.record(port, &error);
                tokio::time::sleep(crate::fd_limit::ACCEPT_RETRY).await;
            }
        }
    }
    tracing::debug!(port, "listener closed");
}

/// Failed accepts of one listener, logged at most once a second with how many there were.
#[derive(Debug)]
struct AcceptFailures(LogLimiter);

impl Default for AcceptFailures {
    fn default() -> Self {
        Self(LogLimiter::once_a_second())
    }
}

impl AcceptFailures {
    fn record(&mut self, port: u16, error: &std::io::Error) {
        let now = Instant::now();
        // Those of the last window that were not written, and this one.
        let unlogged = self.0.take_suppressed(now).unwrap_or(0);
        if self.0.allow(now) {
            tracing::warn!(port, %error, failures = unlogged + 1, "accept failed");
        }
    }
}

/// Resets the client: SO_LINGER 0 turns the close into an RST, so it fails fast.
/// How long a client waits for its tunnel stream before it is refused.
const STREAM_OPEN_DEADLINE: Duration = Duration::from_secs(10);

fn refuse(socket: TcpStream, client: SocketAddr, port: u16, why: &str) {
    tracing::debug!(%client, port, why, "connection refused");
    crate::relay::reset(&socket);
    drop(socket);
}

async fn serve_client(
    socket: TcpStream,
    client: SocketAddr,
    shared: Arc<EdgeShared>,
    // Held until the connection ends: it counts towards the caps until then.
    _slot: ConnectionSlot,
) {
    let local = match socket.local_addr() {
        Ok(local) => local,
        Err(error) => {
            tracing::debug!(%client, %error, "accepted socket has no local address");
            return;
        }
    };
    let _ = socket.set_nodelay(true);
    let Some(tunnel) = shared.tunnel.borrow().clone() else {
        return refuse(socket, client, local.port(), "tunnel down");
    };
    let line = v1::encode(&ProxyHeader::new(client, local));
    // A QUIC open waits while the hub's stream limit is reached: bounded, so that a client is
    // refused rather than left waiting.
    let opened = tokio::time::timeout(STREAM_OPEN_DEADLINE, tunnel.open_stream(Bytes::from(line)));
    let stream = match opened.await {
        Ok(Ok(stream)) => stream,
        Ok(Err(error)) => {
            tracing::debug!(%client, %error, "cannot open a tunnel stream");
            return refuse(socket, client, local.port(), "no tunnel stream");
        }
        Err(_) => return refuse(socket, client, local.port(), "no tunnel stream in time"),
    };
    let mut guard = OpenStreamGuard::new(&shared.stats);
    let counters = Arc::new(RelayCounters::default());
    let stop = shared.stop.shutdown.clone();
    // Stopping the edge aborts the connection: a reset, never a close that looks complete.
    let relayed = relay_tcp_and_tunnel(socket, stream, RelaySide::Client, counters.clone(), &stop);
    if let Err(error) = relayed.await {
        tracing::debug!(%client, %error, "client connection aborted");
    }
    guard.bytes_in = counters.inbound();
    guard.bytes_out = counters.outbound();
}
