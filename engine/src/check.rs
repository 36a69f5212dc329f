//! `remoteingress-bin check`: validates a configuration without starting anything, by the same
//! steps `hub` and `edge` take before they start (the same files, the same variables, the same
//! messages), so `ExecReload=remoteingress-bin check` refuses a reload the hub would refuse.
//! The role is the file's: `[hub]` / `[[edges]]` for a hub, `[edge]` for an edge (both when the
//! file holds both); an edges file alone is a hub's.

use clap::{Args, FromArgMatches};

use crate::cli::{CheckArgs, EdgeArgs, HubArgs};
use crate::config::{EdgeSettings, HubSettings};
use crate::daemon::{config_file, edge_config, DaemonError, HubSetup};

/// Checks what `args` names; on success, one line per role checked.
pub fn check(args: &CheckArgs) -> Result<String, DaemonError> {
    let loaded = config_file(args.config.as_deref())?;
    let (hub, edge) = match &loaded {
        Some(loaded) => (
            loaded.file.has_hub() || args.edges.is_some(),
            loaded.file.edge.is_some(),
        ),
        None => (args.edges.is_some(), false),
    };
    let mut report = Vec::new();
    if hub {
        let mut hub_args: HubArgs = from_environment("hub")?;
        hub_args.config = args
            .config
            .clone()
            .filter(|_| loaded.as_ref().is_some_and(|l| l.file.has_hub()));
        if args.edges.is_some() {
            hub_args.edges.clone_from(&args.edges);
        }
        report.push(check_hub(&hub_args)?);
    }
    if edge {
        let mut edge_args: EdgeArgs = from_environment("edge")?;
        edge_args.config.clone_from(&args.config);
        report.push(check_edge(&edge_args)?);
    }
    if report.is_empty() {
        return Err(DaemonError::usage(match &args.config {
            Some(path) => format!(
                "{}: has no [hub], [[edges]] or [edge] table: nothing to check",
                path.display()
            ),
            None => "nothing to check: give --config FILE.toml or --edges FILE.json (or set \
                     REMOTEINGRESS_CONFIG / REMOTEINGRESS_EDGES_FILE)"
                .to_owned(),
        }));
    }
    Ok(report.join("\n"))
}

/// The hub's setup, edges and settings, as `hub` checks them before it listens.
fn check_hub(args: &HubArgs) -> Result<String, DaemonError> {
    let setup = HubSetup::read(args)?;
    setup.check_edges()?;
    let edges = setup.edges.len();
    HubSettings::from_ipc(setup.config, "config").map_err(|e| DaemonError::usage(e.to_string()))?;
    Ok(format!("hub configuration is valid: {edges} allowed edges"))
}

/// The edge's configuration, as `edge` checks it before it connects.
fn check_edge(args: &EdgeArgs) -> Result<String, DaemonError> {
    let settings = EdgeSettings::from_ipc(edge_config(args)?, "config")
        .map_err(|e| DaemonError::usage(e.to_string()))?;
    Ok(format!(
        "edge configuration is valid: edge {} of hub {}:{}",
        settings.edge_id, settings.hub_host, settings.hub_port
    ))
}

/// A role's arguments from the environment alone (its `REMOTEINGRESS_*` variables), as the
/// role would read them without flags.
fn from_environment<T: Args + FromArgMatches>(role: &'static str) -> Result<T, DaemonError> {
    let command = T::augment_args(clap::Command::new(role).no_binary_name(true));
    command
        .try_get_matches_from(Vec::<String>::new())
        .and_then(|matches| T::from_arg_matches(&matches))
        .map_err(|e| DaemonError::usage(format!("{role}: {}", e.to_string().trim())))
}
