//! Per client connection on a public port: refuse at once (RST) while the tunnel is down;
//! otherwise build the PROXY v1 line from the accepted socket, open a tunnel stream, relay.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

use super::EdgeShared;
use crate::metrics::OpenStreamGuard;
use crate::proxy_protocol::{v1, ProxyHeader};
use crate::relay::{relay, RelayCounters};

/// Accepts clients on one public port until `stop` (port removed or edge stopped).
pub(crate) async fn accept_loop(
    listener: TcpListener,
    port: u16,
    shared: Arc<EdgeShared>,
    stop: CancellationToken,
) {
    loop {
        let accepted = tokio::select! {
            () = stop.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((socket, client)) => {
                let tunnel = shared.tunnel.borrow().clone();
                match tunnel {
                    Some(_) => {
                        let shared_for_task = shared.clone();
                        shared
                            .tasks
                            .spawn(serve_client(socket, client, shared_for_task));
                    }
                    None => refuse(socket, client, port),
                }
            }
            Err(error) => {
                tracing::warn!(port, %error, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
    tracing::debug!(port, "listener closed");
}

/// Resets the client: SO_LINGER 0 turns the close into an RST, so it fails fast.
fn refuse(socket: TcpStream, client: SocketAddr, port: u16) {
    tracing::debug!(%client, port, "tunnel down: connection refused");
    let _ = socket2::SockRef::from(&socket).set_linger(Some(Duration::ZERO));
    drop(socket);
}

async fn serve_client(socket: TcpStream, client: SocketAddr, shared: Arc<EdgeShared>) {
    let local = match socket.local_addr() {
        Ok(local) => local,
        Err(error) => {
            tracing::debug!(%client, %error, "accepted socket has no local address");
            return;
        }
    };
    let _ = socket.set_nodelay(true);
    let Some(tunnel) = shared.tunnel.borrow().clone() else {
        return refuse(socket, client, local.port());
    };
    let line = v1::encode(&ProxyHeader::new(client, local));
    let stream = match tunnel.open_stream(Bytes::from(line)).await {
        Ok(stream) => stream,
        Err(error) => {
            tracing::debug!(%client, %error, "cannot open a tunnel stream");
            return refuse(socket, client, local.port());
        }
    };
    let mut guard = OpenStreamGuard::new(&shared.stats);
    let counters = Arc::new(RelayCounters::default());
    let stop = shared.shutdown.clone();
    tokio::select! {
        () = stop.cancelled() => {}
        result = relay(socket, stream, counters.clone()) => {
            if let Err(error) = result {
                tracing::debug!(%client, %error, "client connection ended with an error");
            }
        }
    }
    guard.bytes_in = counters.inbound();
    guard.bytes_out = counters.outbound();
}
