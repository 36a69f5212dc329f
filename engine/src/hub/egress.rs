//! The hub's half of egress: `startEgressTcpProxy` binds a one-shot proxy on 127.0.0.1; its
//! first local connection becomes an egress stream to the edge (the listener goes away at once),
//! the edge's answer becomes an `egressConnection` event, and after `connected` bytes flow.
//! An unused proxy expires after its `idleTimeoutMs` ([`DEFAULT_IDLE_TIMEOUT`]).

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use remoteingress_ipc_schema::{
    EgressConnectionEvent, EgressOutcome, EgressTcpProxyInfo, EgressTcpProxyRequest, ErrorCode,
    Event,
};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::egress::wire::{self, Answer, Request};
use crate::events::EventSink;
use crate::relay::{relay_tcp_and_tunnel, RelayCounters, RelaySide};
use crate::service::ServiceError;
use crate::transport::tunnel::Tunnel;
use crate::wire_name::Wire;

/// Default of `idleTimeoutMs`: how long a proxy waits for its one local connection (and that
/// connection for its first byte, unless `serverFirst`) before it is removed.
pub(crate) const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Longest `idleTimeoutMs`.
const MAX_IDLE_TIMEOUT: Duration = Duration::from_secs(3600);

/// The request's idle timeout, within bounds.
fn idle_timeout(request: &EgressTcpProxyRequest) -> Duration {
    request
        .idle_timeout_ms
        .map_or(DEFAULT_IDLE_TIMEOUT, Duration::from_millis)
        .min(MAX_IDLE_TIMEOUT)
}
/// On top of the request's `connectTimeoutMs`: how long the hub waits for the edge's answer.
const ANSWER_MARGIN: Duration = Duration::from_secs(5);

/// The proxies waiting for or serving their connection, and the egress streams per edge.
#[derive(Debug, Default)]
pub(crate) struct EgressProxies {
    proxies: Mutex<HashMap<String, CancellationToken>>,
    open_per_edge: Mutex<HashMap<String, u64>>,
    next_id: AtomicU64,
}

use crate::sync::lock;

/// What a proxy (or a persistent listener) needs from the hub.
#[derive(Clone)]
pub(crate) struct ProxyContext {
    pub(crate) proxies: Arc<EgressProxies>,
    pub(crate) events: EventSink,
    pub(crate) tasks: TaskTracker,
    pub(crate) shutdown: CancellationToken,
}

impl EgressProxies {
    /// Egress streams open now through `edge_id`.
    pub(crate) fn open_streams(&self, edge_id: &str) -> u64 {
        lock(&self.open_per_edge).get(edge_id).copied().unwrap_or(0)
    }

    /// Removes a proxy (and aborts its connection if it has one).
    pub(crate) fn stop(&self, proxy_id: &str) -> Result<(), ServiceError> {
        match lock(&self.proxies).remove(proxy_id) {
            Some(token) => {
                token.cancel();
                Ok(())
            }
            None => Err(ServiceError::new(
                ErrorCode::UnknownProxy,
                format!("no egress proxy {proxy_id:?} (used, expired or stopped)"),
            )),
        }
    }
}

/// Binds the one-shot proxy for `request` on a tunnel the caller checked is QUIC.
pub(crate) async fn start(
    context: ProxyContext,
    tunnel: Tunnel,
    request: EgressTcpProxyRequest,
) -> Result<EgressTcpProxyInfo, ServiceError> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .await
        .map_err(|e| {
            ServiceError::new(
                ErrorCode::Internal,
                format!("cannot bind the egress proxy: {e}"),
            )
        })?;
    let listen_port = listener
        .local_addr()
        .map_err(|e| ServiceError::new(ErrorCode::Internal, e.to_string()))?
        .port();
    let proxy_id = format!(
        "egress-{}",
        context.proxies.next_id.fetch_add(1, Ordering::Relaxed) + 1
    );
    let cancel = context.shutdown.child_token();
    lock(&context.proxies.proxies).insert(proxy_id.clone(), cancel.clone());
    let info = EgressTcpProxyInfo {
        proxy_id: proxy_id.clone(),
        listen_host: Ipv4Addr::LOCALHOST.to_string(),
        listen_port,
        edge_id: request.edge_id.clone(),
        logical_host: request.logical_host.clone(),
        port: request.port,
    };
    let tasks = context.tasks.clone();
    tasks.spawn(async move {
        let accepted = tokio::select! {
            () = cancel.cancelled() => None,
            () = tokio::time::sleep(idle_timeout(&request)) => {
                tracing::info!(%proxy_id, "egress proxy unused; removed");
                None
            }
            accepted = listener.accept() => accepted.ok(),
        };
        drop(listener);
        if let Some((client, _)) = accepted {
            serve(
                &context,
                client,
                tunnel,
                &request,
                &proxy_id,
                &cancel,
                |_| {},
            )
            .await;
        }
        lock(&context.proxies.proxies).remove(&proxy_id);
    });
    Ok(info)
}

/// Counts an open egress stream of one edge until dropped.
struct OpenGuard<'a> {
    proxies: &'a EgressProxies,
    edge_id: &'a str,
}

impl<'a> OpenGuard<'a> {
    fn new(proxies: &'a EgressProxies, edge_id: &'a str) -> Self {
        *lock(&proxies.open_per_edge)
            .entry(edge_id.to_owned())
            .or_default() += 1;
        Self { proxies, edge_id }
    }
}

impl Drop for OpenGuard<'_> {
    fn drop(&mut self) {
        let mut open = lock(&self.proxies.open_per_edge);
        if let Some(count) = open.get_mut(self.edge_id) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                open.remove(self.edge_id);
            }
        }
    }
}

/// One local connection (of a one-shot proxy or a persistent listener): wait for the client's
/// first byte unless the server speaks first, ask the edge, report, relay. `answered` learns
/// before the relay whether the edge connected (false too when the client sent nothing in
/// time); `cancel` aborts the connection.
pub(crate) async fn serve(
    context: &ProxyContext,
    mut client: TcpStream,
    tunnel: Tunnel,
    request: &EgressTcpProxyRequest,
    proxy_id: &str,
    cancel: &CancellationToken,
    answered: impl FnOnce(bool),
) {
    let _ = client.set_nodelay(true);
    if !request.server_first {
        let mut first = [0u8; 1];
        let ready = tokio::select! {
            () = cancel.cancelled() => false,
            peeked = tokio::time::timeout(idle_timeout(request), client.peek(&mut first)) => matches!(peeked, Ok(Ok(n)) if n > 0),
        };
        if !ready {
            answered(false);
            return;
        }
    }
    let _open = OpenGuard::new(&context.proxies, &request.edge_id);
    let line = Request {
        host: request.logical_host.clone(),
        port: request.port,
        connect_timeout_ms: request.connect_timeout_ms,
        address_family: request.address_family.unwrap_or_default(),
    };
    let deadline = line.connect_timeout() + ANSWER_MARGIN;
    let asked = async {
        let mut stream = tunnel
            .open_stream(line.encode())
            .await
            .map_err(|e| format!("cannot open an egress stream: {e}"))?;
        let (answer, rest) = wire::read_answer(&mut stream)
            .await
            .map_err(|e| e.to_string())?;
        Ok::<_, String>((stream, answer, rest))
    };
    let asked = tokio::select! {
        () = cancel.cancelled() => Err("egress proxy stopped".to_owned()),
        asked = tokio::time::timeout(deadline, asked) => asked.unwrap_or_else(|_| {
            Err(format!("no answer from the edge within {deadline:?}"))
        }),
    };
    let (stream, answer, rest) = match asked {
        Ok(asked) => asked,
        Err(error) => {
            report(
                context,
                request,
                proxy_id,
                &Answer::failed(EgressOutcome::Failed, None, error),
            );
            answered(false);
            crate::relay::reset(&client);
            return;
        }
    };
    report(context, request, proxy_id, &answer);
    answered(answer.outcome == EgressOutcome::Connected);
    if answer.outcome != EgressOutcome::Connected {
        crate::relay::reset(&client);
        return;
    }
    if !rest.is_empty() && client.write_all(&rest).await.is_err() {
        stream.abort();
        return;
    }
    let counters = Arc::new(RelayCounters::default());
    if let Err(error) =
        relay_tcp_and_tunnel(client, stream, RelaySide::Client, counters, cancel).await
    {
        tracing::debug!(%proxy_id, %error, "egress connection aborted");
    }
}

fn report(
    context: &ProxyContext,
    request: &EgressTcpProxyRequest,
    proxy_id: &str,
    answer: &Answer,
) {
    tracing::info!(%proxy_id, edge_id = %request.edge_id, host = %request.logical_host, port = request.port,
        outcome = %Wire(&answer.outcome), ip = answer.ip.as_deref().unwrap_or("-"), rule = answer.rule.as_deref().unwrap_or("-"), error = answer.error.as_deref().unwrap_or("-"), "egress connection");
    context
        .events
        .emit(Event::EgressConnection(EgressConnectionEvent {
            proxy_id: proxy_id.to_owned(),
            edge_id: request.edge_id.clone(),
            logical_host: request.logical_host.clone(),
            port: request.port,
            outcome: answer.outcome,
            resolved_ip: answer.ip.clone(),
            rule: answer.rule.clone(),
            error: answer.error.clone(),
        }));
}
