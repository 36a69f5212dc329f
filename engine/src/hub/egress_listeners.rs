//! Persistent egress listeners: `[[egress]]` entries of hub.toml and `startEgressTcpListener`.
//! Each one keeps a local TCP listener open; every connection it accepts becomes one egress
//! stream through its edge (served like a one-shot proxy's connection, [`super::egress::serve`]),
//! so a program such as an MTA can be pointed at a stable local port.
//!
//! A connection that cannot go out is closed at once (reset), never held: when the edge is not
//! connected over QUIC, or when the listener has `maxConnections` open. Each is counted (status
//! `egressListeners`) and logged (rate limited). Closing a listener (SIGHUP without its entry,
//! `stopEgressTcpListener`) stops accepting; its open connections finish.

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use remoteingress_ipc_schema::{
    EgressListenerConfig, EgressListenerInfo, EgressListenerSource, EgressListenerStatus,
    EgressTcpProxyRequest, ErrorCode,
};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::egress::{serve, ProxyContext};
use crate::config::ConfigError;
use crate::log_limit::SharedLogLimiter;
use crate::service::ServiceError;
use crate::sync::lock;
use crate::transport::tunnel::Tunnel;

/// Default of `maxConnections`.
pub(crate) const DEFAULT_MAX_CONNECTIONS: u32 = 64;
/// Largest `maxConnections`: each connection holds a socket here and a stream to the edge.
pub(crate) const MAX_CONNECTIONS: u32 = 4096;
/// How long closing a listener waits for its socket to be released (so a changed entry can
/// bind the same address again).
const CLOSE_WAIT: Duration = Duration::from_secs(5);

/// The tunnel of a connected QUIC edge, or the error that says why there is none. Passed in
/// by the hub, which owns the registry of connected edges.
pub(crate) type TunnelLookup = Arc<
    dyn Fn(String) -> Pin<Box<dyn Future<Output = Result<Tunnel, ServiceError>> + Send>>
        + Send
        + Sync,
>;

/// A validated listener configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ListenerSpec {
    config: EgressListenerConfig,
    addr: SocketAddr,
    max_connections: u32,
}

impl ListenerSpec {
    /// Checks one entry; errors name the field below `path`. Port 0 (any free port) only where
    /// `any_port` (IPC: the result says which), never in a file meant to give a stable port.
    pub(crate) fn from_ipc(
        config: EgressListenerConfig,
        path: &str,
        any_port: bool,
    ) -> Result<Self, ConfigError> {
        let addr: SocketAddr = config.listen_addr.parse().map_err(|_| {
            ConfigError::new(
                format!("{path}.listenAddr"),
                format!(
                    "{:?} is not an IP:port (e.g. \"127.0.0.1:2525\")",
                    config.listen_addr
                ),
            )
        })?;
        if addr.port() == 0 && !any_port {
            return Err(ConfigError::new(
                format!("{path}.listenAddr"),
                "port 0 is not a stable port; name the port the program connects to",
            ));
        }
        if config.edge_id.trim().is_empty() {
            return Err(ConfigError::new(
                format!("{path}.edgeId"),
                "must name an edge",
            ));
        }
        let host = &config.logical_host;
        if crate::host_name::check_host(host).is_err() {
            return Err(ConfigError::new(
                format!("{path}.logicalHost"),
                format!("{host:?} is not a host name or IP address"),
            ));
        }
        if config.port == 0 {
            return Err(ConfigError::new(
                format!("{path}.port"),
                "port 0 is not a port",
            ));
        }
        let max_connections = config.max_connections.unwrap_or(DEFAULT_MAX_CONNECTIONS);
        if !(1..=MAX_CONNECTIONS).contains(&max_connections) {
            return Err(ConfigError::new(
                format!("{path}.maxConnections"),
                format!("must be between 1 and {MAX_CONNECTIONS}"),
            ));
        }
        Ok(Self {
            config,
            addr,
            max_connections,
        })
    }

    /// The request each accepted connection makes of the edge.
    fn request(&self) -> EgressTcpProxyRequest {
        EgressTcpProxyRequest {
            edge_id: self.config.edge_id.clone(),
            logical_host: self.config.logical_host.clone(),
            port: self.config.port,
            server_first: self.config.server_first,
            connect_timeout_ms: self.config.connect_timeout_ms,
            address_family: self.config.address_family,
            idle_timeout_ms: self.config.idle_timeout_ms,
        }
    }
}

/// Checks the `[[egress]]` entries of a file: each one, and no address twice.
pub(crate) fn validate_file_entries(
    entries: Vec<EgressListenerConfig>,
) -> Result<Vec<ListenerSpec>, ConfigError> {
    let mut specs: Vec<ListenerSpec> = Vec::with_capacity(entries.len());
    for (index, entry) in entries.into_iter().enumerate() {
        let path = format!("egress[{index}]");
        let spec = ListenerSpec::from_ipc(entry, &path, false)?;
        if let Some(earlier) = specs.iter().position(|other| other.addr == spec.addr) {
            return Err(ConfigError::new(
                format!("{path}.listenAddr"),
                format!("{} is already the address of egress[{earlier}]", spec.addr),
            ));
        }
        specs.push(spec);
    }
    Ok(specs)
}

/// What became of each connection of one listener.
#[derive(Debug, Default)]
struct Counters {
    open: AtomicU64,
    accepted: AtomicU64,
    connected: AtomicU64,
    failed: AtomicU64,
    refused_edge_not_connected: AtomicU64,
    refused_full: AtomicU64,
}

fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

fn read(counter: &AtomicU64) -> u64 {
    counter.load(Ordering::Relaxed)
}

/// A listener that is open.
struct Entry {
    spec: ListenerSpec,
    source: EgressListenerSource,
    bound: SocketAddr,
    counters: Arc<Counters>,
    stop: CancellationToken,
    /// The accept loop; it owns the socket, which is closed when it ends.
    accepting: JoinHandle<()>,
}

/// The open listeners, by id.
#[derive(Default)]
pub(crate) struct EgressListeners {
    entries: Mutex<BTreeMap<String, Entry>>,
    next_id: AtomicU64,
}

impl std::fmt::Debug for EgressListeners {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EgressListeners")
            .field("open", &lock(&self.entries).len())
            .finish()
    }
}

/// What a SIGHUP changed.
#[derive(Debug, Default)]
pub(crate) struct Reconciled {
    /// Addresses now listened on that were not before.
    pub(crate) opened: Vec<String>,
    /// Addresses no longer listened on.
    pub(crate) closed: Vec<String>,
    /// Entries that could not be opened, each naming its address.
    pub(crate) errors: Vec<String>,
}

/// What starting a listener needs from the hub.
pub(crate) struct Start<'a> {
    pub(crate) context: &'a ProxyContext,
    pub(crate) lookup: &'a TunnelLookup,
    /// Cancelled when the hub stops taking new work: the listener closes.
    pub(crate) draining: &'a CancellationToken,
}

impl EgressListeners {
    /// Binds `spec.listenAddr` and starts accepting.
    pub(crate) async fn start(
        &self,
        hub: &Start<'_>,
        spec: ListenerSpec,
        source: EgressListenerSource,
    ) -> Result<EgressListenerInfo, ServiceError> {
        let listener = TcpListener::bind(spec.addr).await.map_err(|e| {
            ServiceError::new(
                ErrorCode::BindFailed,
                format!("cannot listen for egress on {}: {e}", spec.addr),
            )
        })?;
        let bound = listener.local_addr().unwrap_or(spec.addr);
        if !bound.ip().is_loopback() {
            tracing::warn!(listen_addr = %bound, "egress listener on a non-loopback address: every host that reaches it can send through the edge");
        }
        let listener_id = format!(
            "egress-listener-{}",
            self.next_id.fetch_add(1, Ordering::Relaxed) + 1
        );
        let counters = Arc::new(Counters::default());
        let stop = hub.draining.child_token();
        let accepting = hub.context.tasks.spawn(accept_loop(
            listener,
            Accepting {
                listener_id: listener_id.clone(),
                request: spec.request(),
                max_connections: spec.max_connections,
                counters: counters.clone(),
                context: hub.context.clone(),
                lookup: hub.lookup.clone(),
                stop: stop.clone(),
            },
        ));
        tracing::info!(%listener_id, listen_addr = %bound, edge_id = %spec.config.edge_id, host = %spec.config.logical_host, port = spec.config.port, "egress listener open");
        let info = EgressListenerInfo {
            listener_id: listener_id.clone(),
            listen_addr: bound.to_string(),
            listen_port: bound.port(),
            edge_id: spec.config.edge_id.clone(),
            logical_host: spec.config.logical_host.clone(),
            port: spec.config.port,
        };
        lock(&self.entries).insert(
            listener_id,
            Entry {
                spec,
                source,
                bound,
                counters,
                stop,
                accepting,
            },
        );
        Ok(info)
    }

    /// Closes a listener; its open connections finish.
    pub(crate) async fn stop(&self, listener_id: &str) -> Result<(), ServiceError> {
        let entry = lock(&self.entries).remove(listener_id).ok_or_else(|| {
            ServiceError::new(
                ErrorCode::UnknownListener,
                format!("no egress listener {listener_id:?} (stopped, or never started)"),
            )
        })?;
        close(listener_id, entry).await;
        Ok(())
    }

    /// Makes the listeners of the config file those of `specs`: an entry that is unchanged keeps
    /// its listener (and its counts), one that is gone or changed is closed (its connections
    /// finish), a new or changed one is opened. Listeners started over IPC are left alone.
    pub(crate) async fn reconcile(&self, hub: &Start<'_>, specs: Vec<ListenerSpec>) -> Reconciled {
        let mut reconciled = Reconciled::default();
        let stale: Vec<(String, Entry)> = {
            let mut entries = lock(&self.entries);
            let ids: Vec<String> = entries
                .iter()
                .filter(|(_, entry)| {
                    entry.source == EgressListenerSource::Config && !specs.contains(&entry.spec)
                })
                .map(|(id, _)| id.clone())
                .collect();
            ids.into_iter()
                .filter_map(|id| entries.remove(&id).map(|entry| (id, entry)))
                .collect()
        };
        for (id, entry) in stale {
            reconciled.closed.push(entry.bound.to_string());
            close(&id, entry).await;
        }
        for spec in specs {
            let open = lock(&self.entries)
                .values()
                .any(|entry| entry.source == EgressListenerSource::Config && entry.spec == spec);
            if open {
                continue;
            }
            match self.start(hub, spec, EgressListenerSource::Config).await {
                Ok(info) => reconciled.opened.push(info.listen_addr),
                Err(error) => reconciled.errors.push(error.message),
            }
        }
        reconciled
    }

    /// The listeners and their counts, by address.
    pub(crate) fn status(&self) -> Vec<EgressListenerStatus> {
        let mut list: Vec<EgressListenerStatus> = lock(&self.entries)
            .iter()
            .map(|(id, entry)| {
                let counters = &entry.counters;
                EgressListenerStatus {
                    listener_id: id.clone(),
                    source: entry.source,
                    listen_addr: entry.bound.to_string(),
                    edge_id: entry.spec.config.edge_id.clone(),
                    logical_host: entry.spec.config.logical_host.clone(),
                    port: entry.spec.config.port,
                    max_connections: entry.spec.max_connections,
                    open_connections: read(&counters.open),
                    accepted: read(&counters.accepted),
                    connected: read(&counters.connected),
                    failed: read(&counters.failed),
                    refused_edge_not_connected: read(&counters.refused_edge_not_connected),
                    refused_full: read(&counters.refused_full),
                }
            })
            .collect();
        list.sort_by(|a, b| a.listen_addr.cmp(&b.listen_addr));
        list
    }
}

/// Stops accepting and waits (bounded) until the socket is released.
async fn close(listener_id: &str, entry: Entry) {
    entry.stop.cancel();
    if tokio::time::timeout(CLOSE_WAIT, entry.accepting)
        .await
        .is_err()
    {
        tracing::warn!(%listener_id, "egress listener did not close within {CLOSE_WAIT:?}");
    }
    tracing::info!(%listener_id, listen_addr = %entry.bound, open = read(&entry.counters.open), "egress listener closed; open connections finish");
}

/// What a listener's accept loop hands each connection (not the socket: closing the listener
/// must not wait for its connections).
struct Accepting {
    listener_id: String,
    request: EgressTcpProxyRequest,
    max_connections: u32,
    counters: Arc<Counters>,
    context: ProxyContext,
    lookup: TunnelLookup,
    stop: CancellationToken,
}

async fn accept_loop(listener: TcpListener, accepting: Accepting) {
    let accepting = Arc::new(accepting);
    // One limiter for what a client can make this listener say (refusals, failed accepts).
    let warnings = Arc::new(SharedLogLimiter::default());
    loop {
        let accepted = tokio::select! {
            () = accepting.stop.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        let client = match accepted {
            Ok((client, _)) => client,
            Err(error) => {
                crate::limited_warn!(warnings, listener_id = %accepting.listener_id, %error, "egress listener cannot accept");
                tokio::time::sleep(crate::fd_limit::ACCEPT_RETRY).await;
                continue;
            }
        };
        let counters = &accepting.counters;
        bump(&counters.accepted);
        if read(&counters.open) >= u64::from(accepting.max_connections) {
            bump(&counters.refused_full);
            refuse(
                &accepting,
                &warnings,
                &client,
                &format!("maxConnections ({}) open", accepting.max_connections),
            );
            continue;
        }
        counters.open.fetch_add(1, Ordering::Relaxed);
        let connection = accepting.clone();
        let warnings = warnings.clone();
        accepting.context.tasks.spawn(async move {
            let _open = OpenSlot(&connection.counters);
            connect(&connection, &warnings, client).await;
        });
    }
}

/// Counts one open connection of a listener until dropped.
struct OpenSlot<'a>(&'a Counters);

impl Drop for OpenSlot<'_> {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::Relaxed);
    }
}

/// One accepted connection: refused at once when the edge has no QUIC tunnel, else served.
async fn connect(accepting: &Accepting, warnings: &SharedLogLimiter, client: TcpStream) {
    let lookup = (accepting.lookup)(accepting.request.edge_id.clone());
    let tunnel = tokio::select! {
        () = accepting.context.shutdown.cancelled() => return,
        tunnel = lookup => tunnel,
    };
    let tunnel = match tunnel {
        Ok(tunnel) => tunnel,
        Err(error) => {
            bump(&accepting.counters.refused_edge_not_connected);
            refuse(accepting, warnings, &client, &error.message);
            return;
        }
    };
    let cancel = accepting.context.shutdown.child_token();
    let counters = &accepting.counters;
    serve(
        &accepting.context,
        client,
        tunnel,
        &accepting.request,
        &accepting.listener_id,
        &cancel,
        |connected| {
            bump(if connected {
                &counters.connected
            } else {
                &counters.failed
            })
        },
    )
    .await;
}

/// Closes a connection that cannot go out (a reset: the client sees a failure, not a server
/// that said nothing) and says why, at most a burst of lines per window.
fn refuse(accepting: &Accepting, warnings: &SharedLogLimiter, client: &TcpStream, reason: &str) {
    crate::relay::reset(client);
    crate::limited_warn!(warnings, listener_id = %accepting.listener_id, edge_id = %accepting.request.edge_id, %reason, "egress connection refused");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(listen_addr: &str) -> EgressListenerConfig {
        EgressListenerConfig {
            listen_addr: listen_addr.to_owned(),
            edge_id: "edge-1".to_owned(),
            logical_host: "smtp.example.net".to_owned(),
            port: 25,
            server_first: true,
            connect_timeout_ms: 10_000,
            address_family: None,
            idle_timeout_ms: None,
            max_connections: None,
        }
    }

    fn refused(config: EgressListenerConfig, any_port: bool) -> String {
        ListenerSpec::from_ipc(config, "egress[0]", any_port)
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn a_listener_is_checked_field_by_field() {
        let spec = ListenerSpec::from_ipc(entry("127.0.0.1:2525"), "egress[0]", false).unwrap();
        assert_eq!(spec.addr, "127.0.0.1:2525".parse().unwrap());
        assert_eq!(spec.max_connections, DEFAULT_MAX_CONNECTIONS);
        let request = spec.request();
        assert_eq!(
            (request.edge_id.as_str(), request.port, request.server_first),
            ("edge-1", 25, true)
        );
        assert!(refused(entry("localhost:2525"), false).starts_with("egress[0].listenAddr:"));
        assert!(refused(entry("127.0.0.1:0"), false).contains("stable port"));
        assert!(ListenerSpec::from_ipc(entry("[::1]:0"), "params", true).is_ok());
        let mut no_edge = entry("127.0.0.1:2525");
        no_edge.edge_id = " ".to_owned();
        assert!(refused(no_edge, false).starts_with("egress[0].edgeId:"));
        let mut bad_host = entry("127.0.0.1:2525");
        bad_host.logical_host = "a b".to_owned();
        assert!(refused(bad_host, false).starts_with("egress[0].logicalHost:"));
        let mut no_port = entry("127.0.0.1:2525");
        no_port.port = 0;
        assert!(refused(no_port, false).starts_with("egress[0].port:"));
        for cap in [0, MAX_CONNECTIONS + 1] {
            let mut capped = entry("127.0.0.1:2525");
            capped.max_connections = Some(cap);
            assert!(refused(capped, false).starts_with("egress[0].maxConnections:"));
        }
    }

    #[test]
    fn a_file_names_each_address_once() {
        let error = validate_file_entries(vec![
            entry("127.0.0.1:2525"),
            entry("127.0.0.1:2526"),
            entry("127.0.0.1:2525"),
        ])
        .unwrap_err()
        .to_string();
        assert!(
            error.starts_with("egress[2].listenAddr:") && error.contains("egress[0]"),
            "{error}"
        );
        assert_eq!(validate_file_entries(Vec::new()).unwrap().len(), 0);
    }
}
