//! Running a role from the command line (`remoteingress-bin hub|edge`): build the same IPC
//! configuration the management protocol takes, start it through [`Service`], print events, and
//! stop on SIGTERM/SIGINT. The hub re-reads its edges and its `[[egress]]` listeners on SIGHUP.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use remoteingress_ipc_schema::{
    AllowedEdge, EdgeConfig, EgressListenerConfig, Event, HubConfig, PerformanceConfig,
    ProxyProtocolVersion, Secret, StartParams, StreamEventMode, TlsConfig, TransportMode,
};

use crate::cli::{EdgeArgs, HubArgs, ProxyProtocolArg, StreamEventModeArg, TransportModeArg};
use crate::config::validate_allowed_edges;
use crate::config_file::Loaded;
use crate::events::EventSink;
use crate::hub::egress_listeners::ListenerSpec;
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
    path.map(|path| crate::config_file::load(path).map_err(|e| DaemonError::usage(e.to_string())))
        .transpose()
}

/// The hub's configuration: the `[hub]` table of `--config` (or the defaults), with every
/// flag or variable that was given on top.
pub(crate) fn hub_config(
    args: &HubArgs,
    file: Option<HubConfig>,
) -> Result<HubConfig, DaemonError> {
    let mut config = match file {
        Some(config) => config,
        None => serde_json::from_str("{}")
            .map_err(|e| DaemonError::usage(format!("default hub config: {e}")))?,
    };
    if let (Some(cert), Some(key)) = (&args.tls_cert, &args.tls_key) {
        config.tls = Some(TlsConfig {
            cert_pem: read_text(cert)?,
            key_pem: Secret::new(read_secret_text(key)?),
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
        config.proxy_protocol = Some(match version {
            ProxyProtocolArg::V1 => ProxyProtocolVersion::V1,
            ProxyProtocolArg::V2 => ProxyProtocolVersion::V2,
            ProxyProtocolArg::None => ProxyProtocolVersion::None,
        });
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

/// What the hub reads from the command line and `--config`: its configuration, its edges and
/// its egress listeners.
#[derive(Debug)]
pub(crate) struct HubSetup {
    pub(crate) config: HubConfig,
    pub(crate) edges: Vec<AllowedEdge>,
    pub(crate) egress: Vec<ListenerSpec>,
    /// The `[[egress]]` entries `egress` was checked from, as IPC `startEgressTcpListener`
    /// takes them (for `plan`).
    pub(crate) egress_entries: Vec<EgressListenerConfig>,
    origin: EdgesOrigin,
}

impl HubSetup {
    /// Reads `--config` (which must hold a hub's part), the edges (`--edges FILE`, else the
    /// inline JSON, else the `[[edges]]` of `--config`), and applies the flags and variables.
    pub(crate) fn read(args: &HubArgs) -> Result<Self, DaemonError> {
        let mut loaded = config_file(args.config.as_deref())?;
        let (hub, file_edges, file_egress) = match loaded.as_mut() {
            Some(loaded) => {
                loaded
                    .hub_part()
                    .map_err(|e| DaemonError::usage(e.to_string()))?;
                (
                    loaded.file.hub.take(),
                    loaded.file.edges.take(),
                    loaded.file.egress.take(),
                )
            }
            None => (None, None, None),
        };
        let config = hub_config(args, hub)?;
        let egress_entries = file_egress.unwrap_or_default();
        let egress = egress_listeners(args, Some(egress_entries.clone()))?;
        let (edges, origin) = match (&args.edges, &args.allowed_edges_json) {
            (Some(path), _) => {
                let text = read_secret_text(path)?;
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
            egress,
            egress_entries,
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

/// The `[[egress]]` entries of `--config`, checked; an error names the file and the entry.
fn egress_listeners(
    args: &HubArgs,
    entries: Option<Vec<EgressListenerConfig>>,
) -> Result<Vec<ListenerSpec>, DaemonError> {
    crate::hub::egress_listeners::validate_file_entries(entries.unwrap_or_default()).map_err(|e| {
        let file = args
            .config
            .as_deref()
            .unwrap_or_else(|| Path::new("--config"));
        DaemonError::usage(format!("{}: {e}", file.display()))
    })
}

/// Opens and closes the hub's egress listeners to match the file; the errors, if any.
async fn apply_egress_listeners(service: &Service, specs: Vec<ListenerSpec>) -> Vec<String> {
    let hub = match service.hub().await {
        Ok(hub) => hub,
        Err(error) => return vec![error.message],
    };
    let reconciled = hub.reconcile_egress_listeners(specs).await;
    for address in &reconciled.closed {
        tracing::info!(listen_addr = %address, "egress listener removed; its open connections finish");
    }
    for address in &reconciled.opened {
        tracing::info!(listen_addr = %address, "egress listener added");
    }
    reconciled.errors
}

fn parse_edges(text: &str, origin: &str) -> Result<Vec<AllowedEdge>, DaemonError> {
    let mut deserializer = serde_json::Deserializer::from_str(text);
    serde_path_to_error::deserialize(&mut deserializer)
        .map_err(|e| DaemonError::usage(format!("{origin}: {}: {}", e.path(), e.inner())))
}

/// The token of `edge_id` as the hub would hand it out: the hub's settings and edges read as
/// `hub` reads them (`hub`: --config, --edges, --state-dir, --tunnel-port), the secret from the
/// edges and the fingerprint of the hub's certificate: --tls-cert's, else the identity in the
/// state directory (which must exist: the hub made it). The token's port is the hub's tunnel port.
pub fn issue_token(
    hub: &HubArgs,
    edge_id: &str,
    hub_host: String,
) -> Result<ConnectionToken, DaemonError> {
    let HubSetup { config, edges, .. } = HubSetup::read(hub)?;
    let origin = match (&hub.edges, &hub.config) {
        (Some(path), _) | (None, Some(path)) => path.display().to_string(),
        (None, None) => "the hub's configuration (give --config or --edges)".to_owned(),
    };
    let edge = edges
        .into_iter()
        .find(|edge| edge.id == edge_id)
        .ok_or_else(|| DaemonError::usage(format!("{origin} has no edge {edge_id:?}")))?;
    // The identity the hub serves: its --tls-cert if it has one, else the one it keeps.
    let identity = match &config.tls {
        Some(tls) => crate::tls::HubIdentity::from_pem(&tls.cert_pem, tls.key_pem.expose())
            .map_err(|e| DaemonError::usage(e.to_string()))?,
        None => {
            let state_dir = PathBuf::from(config.state_dir.unwrap_or_default());
            crate::state_dir::load_to_read(&state_dir)
                .map_err(|e| DaemonError::usage(e.to_string()))?
        }
    };
    Ok(ConnectionToken {
        hub_host,
        hub_port: config.tunnel_port,
        edge_id: edge.id,
        secret: edge.secret,
        hub_cert_sha256: Some(identity.fingerprint),
    })
}

/// The edge's configuration: the `[edge]` table of `--config` (or the defaults), with every
/// flag or variable that was given on top; `--token-file` / `--secret-file` are read here.
pub(crate) fn edge_config(args: &EdgeArgs) -> Result<EdgeConfig, DaemonError> {
    let mut config = match config_file(args.config.as_deref())? {
        Some(loaded) => {
            loaded
                .edge_part()
                .map_err(|e| DaemonError::usage(e.to_string()))?;
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
/// A file holding one secret (a token, an edge secret), without its line end.
fn read_secret(path: &Path) -> Result<String, DaemonError> {
    Ok(read_secret_text(path)?
        .trim_end_matches(['\n', '\r'])
        .to_owned())
}

/// A file holding secrets; warns when every local user can read it.
fn read_secret_text(path: &Path) -> Result<String, DaemonError> {
    let text = read_text(path)?;
    crate::secret_files::warn_if_exposed(path);
    Ok(text)
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
    // An egress listener that cannot bind is a configuration the hub cannot serve: it stops.
    let errors = apply_egress_listeners(&service, setup.egress).await;
    if !errors.is_empty() {
        service.stop().await;
        return Err(DaemonError::usage(errors.join("; ")));
    }
    // After the edges, so that the started status counts them (`allowedEdges`).
    announce(&service, args.json).await;
    let _ = announced.send(());
    let running = setup.config;
    wait_for_termination(serving, || {
        let service = service.clone();
        // The edges are applied like updateAllowedEdges (unchanged edges keep their tunnels and
        // streams), the egress listeners opened and closed to match the file (open connections
        // finish); changed [hub] settings are named: they take effect at the next start. A file
        // that does not check out changes nothing.
        crate::systemd::reloading();
        let reload = match HubSetup::read(&args).and_then(|setup| {
            setup.check_edges()?;
            Ok(setup)
        }) {
            Ok(setup) => {
                let changed = changed_settings(&running, &setup.config);
                Some((setup.edges, setup.egress, changed))
            }
            Err(error) => {
                tracing::error!(%error, "SIGHUP: configuration not reloaded; the previous one stays");
                None
            }
        };
        async move {
            if let Some((edges, egress, changed)) = reload {
                match service.update_allowed_edges(edges).await {
                    Ok(result) => tracing::info!(
                        edges = result.edges,
                        pushed = result.pushed,
                        disconnected = result.disconnected,
                        "SIGHUP: allowed edges reloaded"
                    ),
                    Err(error) => tracing::error!(%error, "SIGHUP: edges not reloaded"),
                }
                for error in apply_egress_listeners(&service, egress).await {
                    tracing::error!(%error, "SIGHUP: egress listener not opened");
                }
                if !changed.is_empty() {
                    tracing::warn!(
                        settings = %changed.join(", "),
                        "SIGHUP: [hub] settings changed that need a restart to take effect \
                         (systemctl restart remoteingress-hub); until then the hub keeps the old values"
                    );
                }
            }
            crate::systemd::ready("serving");
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
    wait_for_termination(serving, || {
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
pub(crate) async fn stop(service: &Service) {
    crate::systemd::stopping();
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
            tracing::info!(json.status = %text, "started");
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

/// Prints events: JSON lines on stdout with `--json`, otherwise log lines on stderr whose
/// fields are the event's name (`event`) and its data (see [`crate::logging`]); none before
/// `gate` opens (the started line is out) or is dropped (the start failed).
async fn print_events(
    mut rx: tokio::sync::mpsc::Receiver<Event>,
    json: bool,
    gate: tokio::sync::oneshot::Receiver<()>,
) {
    use tokio::io::AsyncWriteExt;
    let _ = gate.await;
    let mut stdout = tokio::io::stdout();
    while let Some(event) = rx.recv().await {
        if json {
            let Ok(line) = serde_json::to_string(&event) else {
                continue;
            };
            let _ = stdout.write_all(format!("{line}\n").as_bytes()).await;
            let _ = stdout.flush().await;
        } else {
            let (name, data) = event_fields(&event);
            tracing::info!(target: "remoteingress::event", event = %name, json.fields = %data);
        }
    }
}

/// An event's name and its data as a JSON object's text (`{}` when it has none; a value that is
/// not an object is `{"data": VALUE}`).
fn event_fields(event: &Event) -> (String, String) {
    let Ok(serde_json::Value::Object(mut tagged)) = serde_json::to_value(event) else {
        return ("unknown".to_owned(), "{}".to_owned());
    };
    let name = match tagged.remove("event") {
        Some(serde_json::Value::String(name)) => name,
        _ => "unknown".to_owned(),
    };
    let data = match tagged.remove("data") {
        Some(serde_json::Value::Object(data)) => serde_json::Value::Object(data),
        None => serde_json::Value::Object(serde_json::Map::new()),
        Some(other) => serde_json::json!({ "data": other }),
    };
    (name, data.to_string())
}

/// Waits for SIGTERM or SIGINT; calls `on_hangup` for each SIGHUP. `on_listening` runs once the
/// handlers are installed (a SIGHUP before that would end the process).
async fn wait_for_termination<F, Fut>(on_listening: impl FnOnce(), mut on_hangup: F)
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
        on_listening();
        let _ = tokio::signal::ctrl_c().await;
        return;
    };
    on_listening();
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
    wait_for_termination(|| {}, || async {}).await;
}

/// The role serves: tell systemd (`Type=notify`).
fn serving() {
    crate::systemd::ready("serving");
}
