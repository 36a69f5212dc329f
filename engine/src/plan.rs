//! `remoteingress-bin plan hub|edge`: what `hub` / `edge` would start with, printed as one JSON
//! object instead of started. A wrapper (the TypeScript CLI) runs it with its own argv and
//! environment and starts the role over IPC from the result, so the flags, the variables, the
//! TOML file and the edges file have one parser, this binary's, and the wrapper cannot drift
//! from it. The steps are the daemon's own ([`HubSetup::read`], `check_edges`, [`edge_config`])
//! followed by the settings check `start` makes, so an error is the one the role would give.

use remoteingress_ipc_schema::{AllowedEdge, EdgeConfig, EgressListenerConfig, HubConfig};
use serde::Serialize;

use crate::cli::{EdgeArgs, HubArgs, LogFormat, PlanCommand};
use crate::config::{EdgeSettings, HubSettings};
use crate::daemon::{edge_config, DaemonError, HubSetup};

/// The process settings both roles share: they are flags of the process, not of the IPC config,
/// so the wrapper passes them to the binary it spawns.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct Process {
    /// `--json`: events as JSON lines on stdout.
    json: bool,
    /// `--log-format`: `text` or `json`.
    log_format: &'static str,
    /// `--worker-threads`, when given (else the binary's default).
    worker_threads: Option<u16>,
}

/// The files a hub re-reads on SIGHUP (the wrapper runs `plan` again then).
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct Reload {
    #[serde(skip_serializing_if = "Option::is_none")]
    edges_file: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    config_file: Option<String>,
}

#[derive(Debug, Serialize)]
#[serde(tag = "role", rename_all = "camelCase")]
enum Plan {
    #[serde(rename_all = "camelCase")]
    Hub {
        /// As IPC `start` takes it (`{"role":"hub","config":...}`).
        config: HubConfig,
        /// As IPC `updateAllowedEdges` takes them.
        edges: Vec<AllowedEdge>,
        /// The `[[egress]]` listeners, as IPC `startEgressTcpListener` takes them.
        egress: Vec<EgressListenerConfig>,
        /// Null when there is nothing to re-read.
        reload: Option<Reload>,
        #[serde(flatten)]
        process: Process,
    },
    #[serde(rename_all = "camelCase")]
    Edge {
        /// As IPC `start` takes it (`{"role":"edge","config":...}`).
        config: EdgeConfig,
        #[serde(flatten)]
        process: Process,
    },
}

/// The plan of `command` as a JSON line; the error is the one `hub` / `edge` would stop with.
pub fn plan(
    command: &PlanCommand,
    worker_threads: Option<u16>,
    log_format: LogFormat,
) -> Result<String, DaemonError> {
    let process = |json: bool| Process {
        json,
        log_format: match log_format {
            LogFormat::Text => "text",
            LogFormat::Json => "json",
        },
        worker_threads,
    };
    let plan = match command {
        PlanCommand::Hub(args) => hub(args, process(args.json))?,
        PlanCommand::Edge(args) => edge(args, process(args.json))?,
    };
    serde_json::to_string(&plan)
        .map_err(|e| DaemonError::usage(format!("cannot print the plan: {e}")))
}

fn hub(args: &HubArgs, process: Process) -> Result<Plan, DaemonError> {
    let setup = HubSetup::read(args)?;
    setup.check_edges()?;
    HubSettings::from_ipc(setup.config.clone(), "config")
        .map_err(|e| DaemonError::usage(e.to_string()))?;
    let path =
        |path: &Option<std::path::PathBuf>| path.as_ref().map(|p| p.to_string_lossy().into_owned());
    let reload = (args.edges.is_some() || args.config.is_some()).then(|| Reload {
        edges_file: path(&args.edges),
        config_file: path(&args.config),
    });
    Ok(Plan::Hub {
        config: setup.config,
        edges: setup.edges,
        egress: setup.egress_entries,
        reload,
        process,
    })
}

fn edge(args: &EdgeArgs, process: Process) -> Result<Plan, DaemonError> {
    let config = edge_config(args)?;
    EdgeSettings::from_ipc(config.clone(), "config")
        .map_err(|e| DaemonError::usage(e.to_string()))?;
    Ok(Plan::Edge { config, process })
}
