//! Running a role from the command line (`remoteingress-bin hub|edge`): build the same IPC
//! configuration the management protocol takes, start it through [`Service`], print events, and
//! stop on SIGTERM/SIGINT. The hub re-reads its edges file on SIGHUP.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use remoteingress_ipc_schema::{
    AllowedEdge, EdgeConfig, Event, HubConfig, PerformanceConfig, ProxyProtocolVersion, Secret,
    StartParams, StreamEventMode, TlsConfig, TransportMode,
};

use crate::cli::{EdgeArgs, HubArgs, ProxyProtocolArg, StreamEventModeArg, TransportModeArg};
use crate::config::validate_allowed_edges;
use crate::config_file::Loaded;
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
    pub(crate) fn usage(message: impl Into<String>) -> Self {
        Self {
            usage: true,
            message: message.into(),
        }
    }
}

/// The `--config` file, if one is given (read again at every call: SIGHUP).
pub(crate) fn config_file(path: Option<&Path>) -> Result<Option<Loaded>, DaemonError> {
    path.map(|path| crate::config_file::load(path).map_err(DaemonError::usage))
        .transpose()
}

/// The hub's configuration: the `[hub]` table of `--config` (or the defaults), with every
/// flag or variable that was given on top.
pub fn hub_config(args: &HubArgs, file: Option<HubConfig>) -> Result<HubConfig, DaemonError> {
    let mut config = match file {
        Some(config) => config,
        None => serde_json::from_str("{}")
            .map_err(|e| DaemonError::usage(format!("default hub config: {e}")))?,
    };
    if let (Some(cert), Some(key)) = (&args.tls_cert, &args.tls_key) {
        config.tls = Some(TlsConfig {
            cert_pem: read_text(cert)?,
            key_pem: Secret::new(read_text(key)?),
        });
    }
    if let Some(json) = &args.performance_json {
        config.performance = Some(
            serde_json::from_str::<PerformanceConfig>(json)
                .map_err(|e| DaemonError::usage(format!("invalid performance JSON: {e}")))?,
        );
    }
    if let Some(port) = args.tunnel_port {
        config.tunnel_port = port;
    }
    if let Some(address) = &args.tunnel_bind {
        config.tunnel_bind_address = Some(address.clone());
    }
    if let Some(host) = &args.target_host {
        config.target_host = host.clone();
    }
    if let Some(dir) = &args.state_dir {
        config.state_dir = Some(dir.to_string_lossy().into_owned());
    }
    if config.state_dir.is_none() {
        let dir = crate::state_dir::default_dir();
        config.state_dir = Some(dir.to_string_lossy().into_owned());
    }
    if let Some(mode) = args.stream_event_mode {
        config.stream_event_mode = match mode {
            StreamEventModeArg::PerStream => StreamEventMode::PerStream,
            StreamEventModeArg::Summary => StreamEventMode::Summary,
            StreamEventModeArg::Off => StreamEventMode::Off,
        };
    }
    if let Some(version) = args.proxy_protocol {
        config.proxy_protocol = match version {
            ProxyProtocolArg::V1 => ProxyProtocolVersion::V1,
            ProxyProtocolArg::V2 => ProxyProtocolVersion::V2,
        };
    }
    if let Some(secs) = args.shutdown_grace_secs {
        config.shutdown_grace_secs = Some(secs);
    }
    if let Some(addr) = &args.metrics_addr {
        config.metrics_addr = Some(addr.clone());
    }
    Ok(config)
}

/// Where the hub's allowed edges came from, to name it in an error about them.
#[derive(Debug)]
enum EdgesOrigin {
    /// The `[[edges]]` of `--config` (errors name the file and the line).
    Toml(Box<Loaded>),
    /// `--edges FILE.json` (errors name the file and the line).
    Json { path: PathBuf, text: String },
    /// `--allowed-edges-json`.
    Inline,
    /// None given.
    Nowhere,
}

/// What the hub reads from the command line and `--config`: its configuration and its edges.
#[derive(Debug)]
pub(crate) struct HubSetup {
    pub(crate) config: HubConfig,
    pub(crate) edges: Vec<AllowedEdge>,
    origin: EdgesOrigin,
}

impl HubSetup {
    /// Reads `--config` (which must hold a hub's part), the edges (`--edges FILE`, else the
    /// inline JSON, else the `[[edges]]` of `--config`), and applies the flags and variables.
    pub(crate) fn read(args: &HubArgs) -> Result<Self, DaemonError> {
        let mut loaded = config_file(args.config.as_deref())?;
        let (hub, file_edges) = match loaded.as_mut() {
            Some(loaded) => {
                loaded.hub_part().map_err(DaemonError::usage)?;
                (loaded.file.hub.take(), loaded.file.edges.take())
            }
            None => (None, None),
        };
        let config = hub_config(args, hub)?;
        let (edges, origin) = match (&args.edges, &args.allowed_edges_json) {
            (Some(path), _) => {
                let text = read_text(path)?;
                let edges = parse_edges(&text, &path.display().to_string())?;
                (
                    edges,
                    EdgesOrigin::Json {
                        path: path.clone(),
                        text,
                    },
                )
            }
            (None, Some(json)) => (
                parse_edges(json, "allowed edges JSON")?,
                EdgesOrigin::Inline,
            ),
            (None, None) => (
                file_edges.unwrap_or_default(),
                loaded.map_or(EdgesOrigin::Nowhere, |loaded| {
                    EdgesOrigin::Toml(Box::new(loaded))
                }),
            ),
        };
        Ok(Self {
            config,
            edges,
            origin,
        })
    }

    /// Checks the edges as the hub will (ports, secrets, firewall rules...), before anything
    /// listens; an error names the file and the line (the inline JSON: no file).
    pub(crate) fn check_edges(&self) -> Result<(), DaemonError> {
        let Err(error) = validate_allowed_edges(self.edges.clone(), "edges") else {
            return Ok(());
        };
        let place = match &self.origin {
            EdgesOrigin::Toml(loaded) => loaded.place(&error.path),
            EdgesOrigin::Json { path, text } => {
                // The file is the array itself: `edges[1].secret` is at `[1].secret` in it.
                let field = error.path.strip_prefix("edges").unwrap_or(&error.path);
                match crate::field_place::json_line(text, field) {
                    Some(line) => format!("{}:{line}: ", path.display()),
                    None => format!("{}: ", path.display()),
                }
            }
            EdgesOrigin::Inline => "allowed edges JSON: ".to_owned(),
            EdgesOrigin::Nowhere => String::new(),
        };
        Err(DaemonError::usage(format!("{place}{error}")))
    }
}

/// The `[hub]` settings whose values differ between `running` and `reread` (top-level keys of
/// IHubConfig), for the SIGHUP message: they take effect only at a restart.
fn changed_settings(running: &HubConfig, reread: &HubConfig) -> Vec<String> {
    let as_object = |config: &HubConfig| match serde_json::to_value(config) {
        Ok(serde_json::Value::Object(map)) => map,
        _ => serde_json::Map::new(),
    };
    let (before, after) = (as_object(running), as_object(reread));
    let mut keys: Vec<&String> = before.keys().chain(after.keys()).collect();
    keys.sort();
    keys.dedup();
    keys.into_iter()
        .filter(|key| before.get(*key) != after.get(*key))
        .cloned()
        .collect()
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

/// The edge's configuration: the `[edge]` table of `--config` (or the defaults), with every
/// flag or variable that was given on top; `--token-file` / `--secret-file` are read here.
pub fn edge_config(args: &EdgeArgs) -> Result<EdgeConfig, DaemonError> {
    let mut config = match config_file(args.config.as_deref())? {
        Some(loaded) => {
            loaded.edge_part().map_err(DaemonError::usage)?;
            loaded.file.edge.unwrap_or_default()
        }
        None => EdgeConfig::default(),
    };
    let token = match (&args.token, &args.token_file) {
        (Some(token), _) => Some(token.clone()),
        (None, Some(path)) => Some(read_secret(path)?),
        (None, None) => None,
    };
    let secret = match (&args.secret, &args.secret_file) {
        (Some(secret), _) => Some(secret.clone()),
        (None, Some(path)) => Some(read_secret(path)?),
        (None, None) => None,
    };
    let explicit = args.hub_host.is_some() || args.edge_id.is_some() || secret.is_some();
    if let Some(token) = token {
        // A token replaces whatever the file says about the hub and the edge.
        config.token = Some(Secret::new(token));
        (
            config.hub_host,
            config.hub_port,
            config.edge_id,
            config.secret,
        ) = (None, None, None, None);
    } else if explicit {
        config.token = None;
    }
    if let Some(host) = &args.hub_host {
        config.hub_host = Some(host.clone());
    }
    if let Some(port) = args.hub_port {
        config.hub_port = Some(port);
    }
    if let Some(id) = &args.edge_id {
        config.edge_id = Some(id.clone());
    }
    if let Some(secret) = secret {
        config.secret = Some(Secret::new(secret));
    }
    if let Some(address) = &args.bind_address {
        config.bind_address = Some(address.clone());
    }
    if let Some(mode) = args.transport_mode {
        config.transport_mode = match mode {
            TransportModeArg::TcpTls => TransportMode::TcpTls,
            TransportModeArg::Quic => TransportMode::Quic,
            TransportModeArg::QuicWithFallback => TransportMode::QuicWithFallback,
        };
    }
    if let Some(fingerprint) = &args.hub_cert_sha256 {
        config.hub_cert_sha256 = Some(fingerprint.clone());
    }
    if let Some(path) = &args.hub_ca {
        config.hub_ca_pem = Some(read_text(path)?);
    }
    if args.no_stun {
        config.stun_servers = Some(Vec::new());
    } else if !args.stun_servers.is_empty() {
        config.stun_servers = Some(args.stun_servers.clone());
    }
    if let Some(secs) = args.shutdown_grace_secs {
        config.shutdown_grace_secs = Some(secs);
    }
    if let Some(addr) = &args.metrics_addr {
        config.metrics_addr = Some(addr.clone());
    }
    Ok(config)
}

/// A secret or token kept in a file: its content without the trailing newline.
fn read_secret(path: &Path) -> Result<String, DaemonError> {
    Ok(read_text(path)?.trim_end_matches(['\n', '\r']).to_owned())
}

fn read_text(path: &Path) -> Result<String, DaemonError> {
    std::fs::read_to_string(path)
        .map_err(|e| DaemonError::usage(format!("cannot read {}: {e}", path.display())))
}

/// Runs the hub until a termination signal.
pub async fn run_hub(args: HubArgs) -> Result<(), DaemonError> {
    let setup = HubSetup::read(&args)?;
    // Before anything listens: a mistake in the edges stops the start, not the first edge.
    setup.check_edges()?;
    let (events, rx) = EventSink::channel();
    // Events wait until the started line is out, so it comes before every edge event.
    let (announced, gate) = tokio::sync::oneshot::channel();
    let printer = tokio::spawn(print_events(rx, args.json, gate));
    let service = Arc::new(Service::new(events));
    service
        .start(StartParams::Hub(setup.config.clone()))
        .await
        .map_err(|e| DaemonError::usage(e.message))?;
    if let Err(error) = service.update_allowed_edges(setup.edges).await {
        service.stop().await;
        return Err(DaemonError::usage(error.message));
    }
    // After the edges, so that the started status counts them (`allowedEdges`).
    announce(&service, args.json).await;
    let _ = announced.send(());
    let running = setup.config;
    wait_for_termination(|| {
        let service = service.clone();
        // The edges are applied like updateAllowedEdges (unchanged edges keep their tunnels and
        // streams); changed [hub] settings are named: they take effect at the next start. A
        // file that does not check out changes nothing.
        let reload = match HubSetup::read(&args).and_then(|setup| {
            setup.check_edges()?;
            Ok(setup)
        }) {
            Ok(setup) => Some((setup.edges, changed_settings(&running, &setup.config))),
            Err(error) => {
                tracing::error!(%error, "SIGHUP: configuration not reloaded; the previous one stays");
                None
            }
        };
        async move {
            let Some((edges, changed)) = reload else {
                return;
            };
            match service.update_allowed_edges(edges).await {
                Ok(result) => tracing::info!(
                    edges = result.edges,
                    pushed = result.pushed,
                    disconnected = result.disconnected,
                    "SIGHUP: allowed edges reloaded"
                ),
                Err(error) => tracing::error!(%error, "SIGHUP: edges not reloaded"),
            }
            if !changed.is_empty() {
                tracing::warn!(
                    settings = %changed.join(", "),
                    "SIGHUP: [hub] settings changed that need a restart to take effect \
                     (systemctl restart remoteingress-hub); until then the hub keeps the old values"
                );
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
    let config = edge_config(&args)?;
    let (events, rx) = EventSink::channel();
    let (announced, gate) = tokio::sync::oneshot::channel();
    let printer = tokio::spawn(print_events(rx, args.json, gate));
    let service = Arc::new(Service::new(events));
    service
        .start(StartParams::Edge(config))
        .await
        .map_err(|e| DaemonError::usage(e.message))?;
    announce(&service, args.json).await;
    let _ = announced.send(());
    wait_for_termination(|| {
        // Said, so that an operator who reloads an edge does not believe a changed file applied.
        tracing::info!(
            "SIGHUP: an edge has nothing to reload (its ports and policies come from the hub); \
             restart it to apply a changed configuration or token"
        );
        async {}
    })
    .await;
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

/// Prints events: JSON lines on stdout with `--json`, otherwise log lines on stderr; none
/// before `gate` opens (the started line is out) or is dropped (the start failed).
async fn print_events(
    mut rx: tokio::sync::mpsc::Receiver<Event>,
    json: bool,
    gate: tokio::sync::oneshot::Receiver<()>,
) {
    use tokio::io::AsyncWriteExt;
    let _ = gate.await;
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
