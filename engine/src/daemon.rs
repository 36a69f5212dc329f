//! Running a role from the command line (`remoteingress-bin hub|edge`): build the same IPC
//! configuration the management protocol takes, start it through [`Service`], print events, and
//! stop on SIGTERM/SIGINT. The hub re-reads its edges file on SIGHUP.

use std::path::Path;
use std::sync::Arc;

use remoteingress_ipc_schema::{
    AllowedEdge, EdgeConfig, Event, HubConfig, PerformanceConfig, ProxyProtocolVersion, Secret,
    StartParams, StreamEventMode, TlsConfig, TransportMode,
};

use crate::cli::{EdgeArgs, HubArgs, ProxyProtocolArg, StreamEventModeArg, TransportModeArg};
use crate::events::EventSink;
use crate::service::Service;
use crate::token::ConnectionToken;

/// A failure that ends the daemon; `usage` ones exit with 64 (EX_USAGE), others with 1.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct DaemonError {
    pub usage: bool,
    pub message: String,
}

impl DaemonError {
    fn usage(message: impl Into<String>) -> Self {
        Self {
            usage: true,
            message: message.into(),
        }
    }
}

/// Builds the hub configuration from the command line.
pub fn hub_config(args: &HubArgs) -> Result<HubConfig, DaemonError> {
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => Some(TlsConfig {
            cert_pem: read_text(cert)?,
            key_pem: Secret::new(read_text(key)?),
        }),
        _ => None,
    };
    let performance = args
        .performance_json
        .as_deref()
        .map(|json| {
            serde_json::from_str::<PerformanceConfig>(json)
                .map_err(|e| DaemonError::usage(format!("invalid performance JSON: {e}")))
        })
        .transpose()?;
    let state_dir = args
        .state_dir
        .clone()
        .unwrap_or_else(crate::state_dir::default_dir);
    Ok(HubConfig {
        tunnel_port: args.tunnel_port,
        target_host: args.target_host.clone(),
        tls,
        state_dir: Some(state_dir.to_string_lossy().into_owned()),
        stream_event_mode: match args.stream_event_mode {
            StreamEventModeArg::PerStream => StreamEventMode::PerStream,
            StreamEventModeArg::Summary => StreamEventMode::Summary,
            StreamEventModeArg::Off => StreamEventMode::Off,
        },
        proxy_protocol: match args.proxy_protocol {
            ProxyProtocolArg::V1 => ProxyProtocolVersion::V1,
            ProxyProtocolArg::V2 => ProxyProtocolVersion::V2,
        },
        udp_proxy_header: Default::default(),
        performance,
        max_udp_sessions: HubConfig::DEFAULT_MAX_UDP_SESSIONS,
        shutdown_grace_secs: Some(args.shutdown_grace_secs),
        metrics_addr: args.metrics_addr.clone(),
    })
}

/// Reads the allowed edges from `--edges FILE` or the inline JSON.
pub fn allowed_edges(args: &HubArgs) -> Result<Vec<AllowedEdge>, DaemonError> {
    match (&args.edges, &args.allowed_edges_json) {
        (Some(path), _) => edges_file(path),
        (None, Some(json)) => parse_edges(json, "allowed edges JSON"),
        (None, None) => Ok(Vec::new()),
    }
}

fn edges_file(path: &Path) -> Result<Vec<AllowedEdge>, DaemonError> {
    parse_edges(&read_text(path)?, &path.display().to_string())
}

fn parse_edges(text: &str, origin: &str) -> Result<Vec<AllowedEdge>, DaemonError> {
    let mut deserializer = serde_json::Deserializer::from_str(text);
    serde_path_to_error::deserialize(&mut deserializer)
        .map_err(|e| DaemonError::usage(format!("{origin}: {}: {}", e.path(), e.inner())))
}

/// The token of `edge_id` as the hub would hand it out: the secret from the edges file and the
/// fingerprint of the identity in `state_dir` (which must exist: the hub made it).
pub fn issue_token(
    state_dir: &Path,
    edges: &Path,
    edge_id: &str,
    hub_host: String,
    hub_port: u16,
) -> Result<ConnectionToken, DaemonError> {
    let edge = edges_file(edges)?
        .into_iter()
        .find(|edge| edge.id == edge_id)
        .ok_or_else(|| {
            DaemonError::usage(format!("{} has no edge {edge_id:?}", edges.display()))
        })?;
    let identity = crate::state_dir::load(state_dir)
        .and_then(|found| {
            found.ok_or_else(|| crate::state_dir::StateError::Missing(state_dir.to_owned()))
        })
        .map_err(|e| DaemonError::usage(e.to_string()))?;
    Ok(ConnectionToken {
        hub_host,
        hub_port,
        edge_id: edge.id,
        secret: edge.secret,
        hub_cert_sha256: Some(identity.fingerprint),
    })
}

/// Builds the edge configuration from the command line.
pub fn edge_config(args: &EdgeArgs) -> Result<EdgeConfig, DaemonError> {
    Ok(EdgeConfig {
        token: args.token.clone().map(Secret::new),
        hub_host: args.hub_host.clone(),
        hub_port: args.hub_port,
        edge_id: args.edge_id.clone(),
        secret: args.secret.clone().map(Secret::new),
        bind_address: args.bind_address.clone(),
        transport_mode: match args.transport_mode {
            TransportModeArg::TcpTls => TransportMode::TcpTls,
            TransportModeArg::Quic => TransportMode::Quic,
            TransportModeArg::QuicWithFallback => TransportMode::QuicWithFallback,
        },
        hub_cert_sha256: args.hub_cert_sha256.clone(),
        hub_ca_pem: args.hub_ca.as_deref().map(read_text).transpose()?,
        stun_servers: if args.no_stun {
            Some(Vec::new())
        } else if args.stun_servers.is_empty() {
            None
        } else {
            Some(args.stun_servers.clone())
        },
        shutdown_grace_secs: Some(args.shutdown_grace_secs),
        metrics_addr: args.metrics_addr.clone(),
    })
}

fn read_text(path: &Path) -> Result<String, DaemonError> {
    std::fs::read_to_string(path)
        .map_err(|e| DaemonError::usage(format!("cannot read {}: {e}", path.display())))
}

/// Runs the hub until a termination signal.
pub async fn run_hub(args: HubArgs) -> Result<(), DaemonError> {
    let config = hub_config(&args)?;
    let edges = allowed_edges(&args)?;
    let (events, rx) = EventSink::channel();
    let printer = tokio::spawn(print_events(rx, args.json));
    let service = Arc::new(Service::new(events));
    service
        .start(StartParams::Hub(config))
        .await
        .map_err(|e| DaemonError::usage(e.message))?;
    // Before any edge is allowed, so the started line comes before every edge event.
    announce(&service, args.json).await;
    if let Err(error) = service.update_allowed_edges(edges).await {
        service.stop().await;
        return Err(DaemonError::usage(error.message));
    }
    wait_for_termination(|| {
        let service = service.clone();
        let reload = match allowed_edges(&args) {
            Ok(edges) => Some(edges),
            Err(error) => {
                tracing::error!(%error, "SIGHUP: edges not reloaded");
                None
            }
        };
        async move {
            if let Some(edges) = reload {
                match service.update_allowed_edges(edges).await {
                    Ok(result) => tracing::info!(
                        edges = result.edges,
                        pushed = result.pushed,
                        disconnected = result.disconnected,
                        "SIGHUP: allowed edges reloaded"
                    ),
                    Err(error) => tracing::error!(%error, "SIGHUP: edges not reloaded"),
                }
            }
        }
    })
    .await;
    stop(&service).await;
    drop(service);
    let _ = printer.await;
    Ok(())
}

/// Runs the edge until a termination signal.
pub async fn run_edge(args: EdgeArgs) -> Result<(), DaemonError> {
    let (events, rx) = EventSink::channel();
    let printer = tokio::spawn(print_events(rx, args.json));
    let service = Arc::new(Service::new(events));
    service
        .start(StartParams::Edge(edge_config(&args)?))
        .await
        .map_err(|e| DaemonError::usage(e.message))?;
    announce(&service, args.json).await;
    wait_for_termination(|| async {}).await;
    stop(&service).await;
    drop(service);
    let _ = printer.await;
    Ok(())
}

/// Stops the service gracefully; a second SIGTERM/SIGINT meanwhile cuts the grace short.
pub async fn stop(service: &Service) {
    let stopping = service.stop();
    tokio::pin!(stopping);
    tokio::select! {
        () = &mut stopping => return,
        () = termination_signal() => {
            tracing::warn!("second termination signal: resetting open streams now");
            service.hurry();
        }
    }
    stopping.await;
}

/// Logs the status at start; with `--json` also prints it as the first stdout line,
/// `{"event":"started","data":STATUS}`, so scripts read the hub's `tunnelPort` and `certSha256`
/// without parsing logs.
async fn announce(service: &Service, json: bool) {
    let status = service.status().await;
    match serde_json::to_string(&status) {
        Ok(text) => {
            tracing::info!(status = %text, "started");
            if json {
                println!(
                    "{}",
                    serde_json::json!({"event": "started", "data": status})
                );
            }
        }
        Err(error) => tracing::warn!(%error, "started; status not printable"),
    }
}

/// Prints events: JSON lines on stdout with `--json`, otherwise log lines on stderr.
async fn print_events(mut rx: tokio::sync::mpsc::Receiver<Event>, json: bool) {
    use tokio::io::AsyncWriteExt;
    let mut stdout = tokio::io::stdout();
    while let Some(event) = rx.recv().await {
        let Ok(line) = serde_json::to_string(&event) else {
            continue;
        };
        if json {
            let _ = stdout.write_all(format!("{line}\n").as_bytes()).await;
            let _ = stdout.flush().await;
        } else {
            tracing::info!(target: "remoteingress::event", "{line}");
        }
    }
}

/// Waits for SIGTERM or SIGINT; calls `on_hangup` for each SIGHUP.
async fn wait_for_termination<F, Fut>(mut on_hangup: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut hangup)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::hangup()),
    ) else {
        tracing::warn!("cannot install signal handlers; stopping on Ctrl-C only");
        let _ = tokio::signal::ctrl_c().await;
        return;
    };
    loop {
        tokio::select! {
            _ = term.recv() => break,
            _ = tokio::signal::ctrl_c() => break,
            _ = hangup.recv() => on_hangup().await,
        }
    }
    tracing::info!("termination signal received; stopping");
}

/// Resolves on SIGTERM or SIGINT (management mode's shutdown trigger).
pub async fn termination_signal() {
    wait_for_termination(|| async {}).await;
}
