//! Command-line interface: `hub`, `edge`, `check`, `plan`, `token`, `secret`, `schema`,
//! `status`, `completions`, and `--management`.
//!
//! Every flag of `hub` and `edge` can also come from a `REMOTEINGRESS_*` environment variable
//! (clap's `env`), and `REMOTEINGRESS_MODE=hub|edge` selects the role when no subcommand is given,
//! so a container can be configured from its environment alone.

use std::ffi::OsString;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// Environment variable names (listed in README.md and docs/operations.md).
pub mod env_vars {
    pub const MODE: &str = "REMOTEINGRESS_MODE";
    pub const TOKEN: &str = "REMOTEINGRESS_TOKEN";
    pub const HUB_HOST: &str = "REMOTEINGRESS_HUB_HOST";
    pub const HUB_PORT: &str = "REMOTEINGRESS_HUB_PORT";
    pub const EDGE_ID: &str = "REMOTEINGRESS_EDGE_ID";
    pub const SECRET: &str = "REMOTEINGRESS_SECRET";
    pub const TARGET_HOST: &str = "REMOTEINGRESS_TARGET_HOST";
    pub const TUNNEL_PORT: &str = "REMOTEINGRESS_TUNNEL_PORT";
    pub const TUNNEL_BIND: &str = "REMOTEINGRESS_TUNNEL_BIND";
    pub const ALLOWED_EDGES_JSON: &str = "REMOTEINGRESS_ALLOWED_EDGES_JSON";
    pub const EDGES_FILE: &str = "REMOTEINGRESS_EDGES_FILE";
    pub const PERFORMANCE_JSON: &str = "REMOTEINGRESS_PERFORMANCE_JSON";
    pub const STREAM_EVENT_MODE: &str = "REMOTEINGRESS_STREAM_EVENT_MODE";
    pub const TRANSPORT_MODE: &str = "REMOTEINGRESS_TRANSPORT_MODE";
    pub const BIND_ADDRESS: &str = "REMOTEINGRESS_BIND_ADDRESS";
    pub const HUB_CERT_SHA256: &str = "REMOTEINGRESS_HUB_CERT_SHA256";
    pub const TLS_CERT: &str = "REMOTEINGRESS_TLS_CERT";
    pub const TLS_KEY: &str = "REMOTEINGRESS_TLS_KEY";
    pub const PROXY_PROTOCOL: &str = "REMOTEINGRESS_PROXY_PROTOCOL";
    pub const LOG: &str = "REMOTEINGRESS_LOG";
    pub const STUN_SERVERS: &str = "REMOTEINGRESS_STUN_SERVERS";
    pub const WORKER_THREADS: &str = "REMOTEINGRESS_WORKER_THREADS";
    pub const STATE_DIR: &str = "REMOTEINGRESS_STATE_DIR";
    pub const HUB_CA: &str = "REMOTEINGRESS_HUB_CA";
    pub const SHUTDOWN_GRACE_SECS: &str = "REMOTEINGRESS_SHUTDOWN_GRACE_SECS";
    pub const LOG_FORMAT: &str = "REMOTEINGRESS_LOG_FORMAT";
    pub const METRICS_ADDR: &str = "REMOTEINGRESS_METRICS_ADDR";
    pub const CONFIG: &str = "REMOTEINGRESS_CONFIG";
    pub const TOKEN_FILE: &str = "REMOTEINGRESS_TOKEN_FILE";
    pub const SECRET_FILE: &str = "REMOTEINGRESS_SECRET_FILE";
}

use env_vars as ev;

/// remoteingress: public TCP/UDP enters at an edge and reaches a private hub through one tunnel,
/// with the client address preserved by PROXY protocol.
#[derive(Debug, Parser)]
#[command(name = "remoteingress-bin", version = VERSION_LINE, about, long_about = None)]
pub struct Cli {
    /// Speak the JSON-lines management protocol on stdin/stdout (used by the TypeScript
    /// wrapper and any program that drives the binary).
    #[arg(long)]
    pub management: bool,

    /// Worker threads of the async runtime (1-1024). Default: half the CPU cores, at least one.
    #[arg(long, global = true, env = ev::WORKER_THREADS, value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub worker_threads: Option<u16>,

    /// Log lines on stderr as text or as JSON objects (one per line, fields as keys).
    #[arg(long, global = true, env = ev::LOG_FORMAT, value_enum, default_value = "text")]
    pub log_format: LogFormat,

    #[command(subcommand)]
    pub command: Option<Command>,
}

/// `--log-format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a hub: accept edge tunnels and forward their traffic to the target host.
    Hub(HubArgs),
    /// Run an edge: connect to a hub and serve the public ports it assigns.
    Edge(EdgeArgs),
    /// Encode or decode a connection token.
    #[command(subcommand)]
    Token(TokenCommand),
    /// Make edge secrets.
    #[command(subcommand)]
    Secret(SecretCommand),
    /// Check a configuration without starting anything: a hub's or an edge's TOML file, or a
    /// hub's edges file, read as `hub` / `edge` would read them (with the same variables).
    /// Exits 0 when valid, 64 with the error the daemon would give.
    Check(CheckArgs),
    /// Print, without starting anything, what `hub` or `edge` would start with (for wrappers).
    ///
    /// The same flags, variables and files as `hub` / `edge`, read by the same code; one JSON
    /// object on stdout: `role`, `config` (as IPC `start` takes it), for a hub `edges`,
    /// `egress` and `reload` (the files SIGHUP re-reads), and `json`, `logFormat`,
    /// `workerThreads`. A wrapper (the TypeScript CLI) starts the role from it over IPC instead
    /// of parsing the command line a second time. The output holds the secrets (edge secrets,
    /// the token, the TLS key): keep it out of logs. Errors exit 64 with the message the role
    /// would give.
    #[command(subcommand)]
    Plan(PlanCommand),
    /// Print the JSON Schema of the IPC protocol.
    Schema,
    /// Print the status of a running hub or edge (connected edges, transports, tunnels, last
    /// errors, unbound ports), read from `GET /status` on its metrics listener.
    Status(StatusArgs),
    /// Print a shell completion script (e.g. `completions bash > /etc/bash_completion.d/remoteingress-bin`).
    Completions {
        /// The shell.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
}

/// `plan hub|edge`: the roles' own arguments, so the grammar is the one of `hub` and `edge`.
#[derive(Debug, Subcommand)]
pub enum PlanCommand {
    /// What `hub` would start with: `{"role":"hub","config":IHubConfig,"edges":[...],...}`.
    Hub(HubArgs),
    /// What `edge` would start with: `{"role":"edge","config":IEdgeConfig,...}`.
    Edge(EdgeArgs),
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// The metrics listener of the hub or edge to ask (its --metrics-addr / metricsAddr).
    #[arg(long, env = ev::METRICS_ADDR, value_name = "ADDR:PORT")]
    pub metrics_addr: Option<String>,
    /// Print the status as JSON (what IPC getStatus returns) instead of a summary.
    #[arg(long)]
    pub json: bool,
}
/// `--version`: the crate version and the commit it was built from (`build_info`).
const VERSION_LINE: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (commit ",
    env!("REMOTEINGRESS_COMMIT"),
    ")"
);

/// `check`: the files a hub or an edge would read. Without flags, the variables the daemon
/// reads name them, so `ExecReload=remoteingress-bin check` checks what the hub will re-read.
#[derive(Debug, Args)]
pub struct CheckArgs {
    /// TOML file to check: `[hub]` / `[[edges]]` for a hub, `[edge]` for an edge.
    #[arg(long, env = ev::CONFIG, value_name = "FILE.toml")]
    pub config: Option<PathBuf>,
    /// A hub's edges file (an array of TAllowedEdge) to check.
    #[arg(long, env = ev::EDGES_FILE, value_name = "FILE.json")]
    pub edges: Option<PathBuf>,
}

/// Stream telemetry mode of the hub.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
#[value(rename_all = "camelCase")]
pub enum StreamEventModeArg {
    PerStream,
    Summary,
    Off,
}

/// PROXY header the hub writes in front of forwarded traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ProxyProtocolArg {
    /// Text line (TCP; UDP targets get v2, with a warning).
    V1,
    /// Binary header (TCP and UDP).
    V2,
    /// No header, for targets that do not speak PROXY.
    None,
}

/// Edge transport mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
#[value(rename_all = "camelCase")]
pub enum TransportModeArg {
    TcpTls,
    Quic,
    QuicWithFallback,
}

/// `Default` so that `token issue` can read the hub's files the way the hub does.
#[derive(Debug, Default, Args)]
pub struct HubArgs {
    /// TOML file with the hub's settings (`[hub]`, the IPC config's keys), its allowed edges
    /// (`[[edges]]`) and its egress listeners (`[[egress]]`); flags and variables override it.
    /// Re-read on SIGHUP.
    #[arg(long, env = ev::CONFIG, value_name = "FILE.toml")]
    pub config: Option<PathBuf>,
    /// Tunnel port edges connect to (TCP for TLS, UDP for QUIC). Default 8443.
    #[arg(long, env = ev::TUNNEL_PORT)]
    pub tunnel_port: Option<u16>,
    /// Local address the tunnel port binds to (default: all addresses, IPv6 and IPv4).
    #[arg(long, env = ev::TUNNEL_BIND, value_name = "ADDRESS")]
    pub tunnel_bind: Option<String>,
    /// Host the hub forwards to (default 127.0.0.1); the target port is the edge's public port
    /// unless the edge's targetPorts maps it.
    #[arg(long, env = ev::TARGET_HOST)]
    pub target_host: Option<String>,
    /// JSON file with the allowed edges (an array of TAllowedEdge); re-read on SIGHUP.
    #[arg(long, env = ev::EDGES_FILE, value_name = "FILE.json")]
    pub edges: Option<PathBuf>,
    /// Allowed edges as inline JSON (an array of TAllowedEdge), when no file is given. It holds
    /// the secrets: prefer --edges FILE (a flag's value is visible to every local user in `ps`).
    #[arg(long, env = ev::ALLOWED_EDGES_JSON, value_name = "JSON", conflicts_with = "edges", hide_env_values = true)]
    pub allowed_edges_json: Option<String>,
    /// PEM certificate chain to serve (a self-signed one is generated when omitted).
    #[arg(long, env = ev::TLS_CERT, value_name = "PEM", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key for --tls-cert.
    #[arg(long, env = ev::TLS_KEY, value_name = "PEM", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Directory for the hub's generated identity (kept across restarts, so pinned edges stay
    /// in). Default: /var/lib/remoteingress as root, else $XDG_STATE_HOME/remoteingress.
    #[arg(long, env = ev::STATE_DIR, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
    /// Stream events: perStream (default), summary (one per edge per second) or off.
    #[arg(long, env = ev::STREAM_EVENT_MODE, value_enum)]
    pub stream_event_mode: Option<StreamEventModeArg>,
    /// PROXY header written to the targets, unless an edge or a port (proxyProtocol in the
    /// edges) says otherwise. Default: v1 for TCP, v2 for UDP (v1 has no UDP form); none for
    /// targets that do not speak PROXY.
    #[arg(long, env = ev::PROXY_PROTOCOL, value_enum)]
    pub proxy_protocol: Option<ProxyProtocolArg>,
    /// Flow-control and timing settings as JSON (IPerformanceConfig).
    #[arg(long, env = ev::PERFORMANCE_JSON, value_name = "JSON")]
    pub performance_json: Option<String>,
    /// On SIGTERM/SIGINT: seconds open streams may finish after the listeners close, before
    /// they are reset (default 10; 0: at once). A second signal ends the wait.
    #[arg(long, env = ev::SHUTDOWN_GRACE_SECS, value_name = "SECS")]
    pub shutdown_grace_secs: Option<u32>,
    /// Serve Prometheus /metrics, /healthz and /readyz on this address (e.g. 127.0.0.1:9100).
    #[arg(long, env = ev::METRICS_ADDR, value_name = "ADDR:PORT")]
    pub metrics_addr: Option<String>,
    /// Print events as JSON lines on stdout instead of log lines.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct EdgeArgs {
    /// TOML file with the edge's settings (`[edge]`, the IPC config's keys); flags and
    /// variables override it.
    #[arg(long, env = ev::CONFIG, value_name = "FILE.toml")]
    pub config: Option<PathBuf>,
    /// Connection token from the hub operator (replaces --hub-host/--hub-port/--edge-id/--secret).
    /// A flag's value is visible to every local user in `ps`: prefer --token-file.
    #[arg(long, env = ev::TOKEN, conflicts_with_all = ["hub_host", "edge_id", "secret", "secret_file", "token_file"], hide_env_values = true)]
    pub token: Option<String>,
    /// File holding the connection token (so it need not sit in argv or the environment).
    #[arg(long, env = ev::TOKEN_FILE, value_name = "FILE", conflicts_with_all = ["hub_host", "edge_id", "secret", "secret_file"])]
    pub token_file: Option<PathBuf>,
    /// Hub host name or address (needed unless a token gives it).
    #[arg(long, env = ev::HUB_HOST)]
    pub hub_host: Option<String>,
    /// Hub tunnel port.
    #[arg(long, env = ev::HUB_PORT)]
    pub hub_port: Option<u16>,
    /// This edge's id (needed unless a token gives it).
    #[arg(long, env = ev::EDGE_ID)]
    pub edge_id: Option<String>,
    /// This edge's secret (needed unless a token gives it). A flag's value is visible to every
    /// local user in `ps`: prefer --secret-file.
    // A generated secret may start with `-`: it is the value, not a flag.
    #[arg(
        long,
        env = ev::SECRET,
        hide_env_values = true,
        conflicts_with = "secret_file",
        allow_hyphen_values = true
    )]
    pub secret: Option<String>,
    /// File holding this edge's secret.
    #[arg(long, env = ev::SECRET_FILE, value_name = "FILE")]
    pub secret_file: Option<PathBuf>,
    /// tcpTls, quic or quicWithFallback (default).
    #[arg(long, env = ev::TRANSPORT_MODE, value_enum)]
    pub transport_mode: Option<TransportModeArg>,
    /// Local address the public listeners bind to (default: all).
    #[arg(long, env = ev::BIND_ADDRESS)]
    pub bind_address: Option<String>,
    /// Pin the hub certificate's SHA-256 fingerprint (hex).
    #[arg(long, env = ev::HUB_CERT_SHA256)]
    pub hub_cert_sha256: Option<String>,
    /// PEM file of the CA that signed the hub's certificate (checked with the hub's name).
    #[arg(long, env = ev::HUB_CA, value_name = "PEM")]
    pub hub_ca: Option<PathBuf>,
    /// STUN server (host:port) for public IP discovery; repeat for several
    /// (default stun.cloudflare.com:3478).
    #[arg(long = "stun-server", env = ev::STUN_SERVERS, value_delimiter = ',', conflicts_with = "no_stun")]
    pub stun_servers: Vec<String>,
    /// Do not discover the public IP (no STUN traffic).
    #[arg(long)]
    pub no_stun: bool,
    /// On SIGTERM/SIGINT: seconds open streams may finish after the listeners close, before
    /// they are reset (default 10; 0: at once). A second signal ends the wait.
    #[arg(long, env = ev::SHUTDOWN_GRACE_SECS, value_name = "SECS")]
    pub shutdown_grace_secs: Option<u32>,
    /// Serve Prometheus /metrics, /healthz and /readyz on this address (e.g. 127.0.0.1:9100).
    #[arg(long, env = ev::METRICS_ADDR, value_name = "ADDR:PORT")]
    pub metrics_addr: Option<String>,
    /// Print events as JSON lines on stdout instead of log lines.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum SecretCommand {
    /// Print a new random edge secret (32 bytes from the OS's random source, base64url).
    New,
}

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Print a connection token for an edge.
    Encode {
        /// Hub host name or address, as the edge will reach it.
        #[arg(long)]
        hub_host: String,
        /// Hub tunnel port.
        #[arg(long, default_value_t = 8443)]
        hub_port: u16,
        /// Edge id.
        #[arg(long)]
        edge_id: String,
        /// Edge secret (a generated one may start with `-`).
        #[arg(long, allow_hyphen_values = true)]
        secret: String,
        /// SHA-256 fingerprint of the hub certificate (from the hub's status), to pin it.
        #[arg(long, alias = "cert-sha256")]
        hub_cert_sha256: Option<String>,
    },
    /// Print the token of an allowed edge, from the hub's side. It reads the hub's own settings
    /// (--config / REMOTEINGRESS_CONFIG, --edges / REMOTEINGRESS_EDGES_FILE, the state directory
    /// and the tunnel port) the way `hub` does: the secret comes from the edges, the fingerprint
    /// from the hub's identity in the state directory.
    Issue {
        /// The hub's TOML file: its `[[edges]]`, `stateDir` and `tunnelPort` are used.
        #[arg(long, env = ev::CONFIG, value_name = "FILE.toml")]
        config: Option<PathBuf>,
        /// The hub's edges file (an array of TAllowedEdge); wins over the `[[edges]]` of --config.
        #[arg(long, env = ev::EDGES_FILE, value_name = "FILE.json")]
        edges: Option<PathBuf>,
        /// The hub's state directory (as given to `hub --state-dir`; same default).
        #[arg(long, env = ev::STATE_DIR, value_name = "DIR")]
        state_dir: Option<PathBuf>,
        /// The edge to issue a token for.
        #[arg(long)]
        edge_id: String,
        /// Hub host name or address, as the edge will reach it.
        #[arg(long)]
        hub_host: String,
        /// The port the edge connects to. Default: the hub's tunnel port
        /// (REMOTEINGRESS_TUNNEL_PORT, else `tunnelPort` of --config, else 8443); set it when a
        /// NAT or port forward puts the hub behind another port.
        #[arg(long, env = ev::TUNNEL_PORT)]
        hub_port: Option<u16>,
    },
    /// Decode a token and print its fields as JSON (the secret included).
    Decode {
        /// The token.
        token: String,
    },
}

impl Cli {
    /// Parses the command line; without a subcommand, `REMOTEINGRESS_MODE` picks `hub` or
    /// `edge` (the value is read through `mode`, so tests need not touch the environment).
    pub fn parse_with_mode(args: Vec<OsString>, mode: Option<String>) -> Result<Self, clap::Error> {
        let cli = Self::parse_args(&args)?;
        if cli.command.is_some() || cli.management {
            return Ok(cli);
        }
        match mode.as_deref().map(str::trim) {
            Some(role @ ("hub" | "edge")) => {
                let mut with_role = args;
                with_role.insert(1.min(with_role.len()), role.into());
                Self::parse_args(&with_role)
            }
            Some(other) => Err(clap::Error::raw(
                clap::error::ErrorKind::InvalidValue,
                format!("{} must be \"hub\" or \"edge\", not {other:?}\n", ev::MODE),
            )),
            None => Ok(cli),
        }
    }
}

impl Cli {
    /// The command line's definition, with the environment variables listed in `--help`.
    pub fn definition() -> clap::Command {
        use clap::CommandFactory;
        let command = Self::command();
        let listing = environment_help(&command);
        command.after_help(listing)
    }

    fn parse_args(args: &[OsString]) -> Result<Self, clap::Error> {
        use clap::FromArgMatches;
        let mut command = Self::definition();
        let matches = command.try_get_matches_from_mut(args)?;
        Self::from_arg_matches(&matches).map_err(|e| e.format(&mut command))
    }
}

/// The `--help` text that lists every environment variable with the flags it stands for, made
/// from the definition so that it cannot miss one.
fn environment_help(root: &clap::Command) -> String {
    use std::collections::BTreeMap;
    let mut flags: BTreeMap<String, Vec<String>> = BTreeMap::new();
    flags.insert(
        ev::LOG.to_owned(),
        vec!["log filter, e.g. debug or remoteingress=debug,info (default info)".to_owned()],
    );
    flags.insert(
        ev::MODE.to_owned(),
        vec!["hub or edge: the role to run when no subcommand is given".to_owned()],
    );
    let mut pending = vec![(String::new(), root.clone())];
    while let Some((path, command)) = pending.pop() {
        for arg in command.get_arguments() {
            let (Some(env), Some(long)) = (arg.get_env(), arg.get_long()) else {
                continue;
            };
            let flag = format!("{path}--{long}");
            let entry = flags.entry(env.to_string_lossy().into_owned()).or_default();
            if !entry.contains(&flag) {
                entry.push(flag);
            }
        }
        // `plan` takes the flags of `hub` and `edge`: listing them twice would say nothing new.
        for sub in command
            .get_subcommands()
            .filter(|sub| sub.get_name() != "plan")
        {
            pending.push((format!("{path}{} ", sub.get_name()), sub.clone()));
        }
    }
    let width = flags.keys().map(String::len).max().unwrap_or(0);
    let mut text = String::from(
        "Logs go to stderr. Environment variables (each stands for the flags named beside it; \
         a flag wins over its variable):\n",
    );
    for (name, uses) in flags {
        text.push_str(&format!("  {name:width$}  {}\n", uses.join(", ")));
    }
    text
}

/// The runtime's worker threads when `--worker-threads` is not given: half the CPU cores, at
/// least one. A tunnel's traffic passes through one reader and one writer task per tunnel, and
/// every byte also costs kernel time (socket copies, the loopback or NIC receive path) and
/// usually a co-located program's time (the reverse proxy next to a hub). On a 2-core machine
/// one worker moved 30-45 % more through a TLS tunnel than two, with less CPU per byte: two
/// workers spent their time waking and stealing from each other (measured with
/// `scripts/bench.sh`, see docs/performance.md).
pub fn default_worker_threads(cores: usize) -> usize {
    (cores / 2).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Variables whose values are secrets (files and paths are not).
    const SECRET_BEARING: [&str; 3] = [ev::TOKEN, ev::SECRET, ev::ALLOWED_EDGES_JSON];

    #[test]
    fn every_secret_bearing_variable_is_hidden_in_help() {
        use clap::CommandFactory;
        let mut seen = Vec::new();
        let mut commands = vec![Cli::command()];
        while let Some(command) = commands.pop() {
            for arg in command.get_arguments() {
                if let Some(env) = arg.get_env().and_then(|e| e.to_str()) {
                    if SECRET_BEARING.contains(&env) {
                        assert!(arg.is_hide_env_values_set(), "{env} shows its value");
                        seen.push(env.to_owned());
                    }
                }
            }
            commands.extend(command.get_subcommands().cloned());
        }
        seen.sort();
        seen.dedup();
        assert_eq!(seen.len(), SECRET_BEARING.len(), "{seen:?}");
    }

    fn args(list: &[&str]) -> Vec<OsString> {
        list.iter().map(OsString::from).collect()
    }

    #[test]
    fn cli_definition_is_consistent() {
        Cli::definition().debug_assert();
    }

    #[test]
    fn mode_selects_the_role_without_a_subcommand() {
        let cli = Cli::parse_with_mode(
            args(&["bin", "--token", "abc"])
                .into_iter()
                .take(1)
                .collect(),
            Some("hub".into()),
        )
        .unwrap();
        assert!(matches!(cli.command, Some(Command::Hub(_))));
        let error = Cli::parse_with_mode(args(&["bin"]), Some("proxy".into())).unwrap_err();
        assert!(error.to_string().contains("REMOTEINGRESS_MODE"));
    }

    #[test]
    fn worker_threads_are_a_global_option_with_a_range() {
        for list in [
            &["bin", "--worker-threads", "3", "--management"][..],
            &["bin", "hub", "--worker-threads", "3"][..],
            &["bin", "--worker-threads", "3", "schema"][..],
        ] {
            let cli = Cli::try_parse_from(args(list)).unwrap();
            assert_eq!(cli.worker_threads, Some(3), "{list:?}");
        }
        for bad in ["0", "1025", "-1", "many"] {
            assert!(
                Cli::try_parse_from(args(&["bin", "--worker-threads", bad, "schema"])).is_err()
            );
        }
        assert_eq!(
            Cli::try_parse_from(args(&["bin", "schema"]))
                .unwrap()
                .worker_threads,
            None
        );
        let defaults: Vec<usize> = [0, 1, 2, 3, 8, 64]
            .into_iter()
            .map(default_worker_threads)
            .collect();
        assert_eq!(defaults, [1, 1, 1, 1, 4, 32]);
    }

    #[test]
    fn edge_needs_a_token_or_explicit_fields() {
        // The rest may come from --config, so the parser takes a partial edge; the configuration
        // check names what is missing.
        let Some(Command::Edge(partial)) =
            Cli::try_parse_from(args(&["bin", "edge", "--hub-host", "h"]))
                .unwrap()
                .command
        else {
            panic!("an edge command");
        };
        let config = crate::daemon::edge_config(&partial).unwrap();
        let error = crate::config::EdgeSettings::from_ipc(config, "config").unwrap_err();
        assert_eq!(error.path, "config.edgeId", "{error}");
        let cli = Cli::try_parse_from(args(&[
            "bin",
            "edge",
            "--hub-host",
            "h",
            "--edge-id",
            "e",
            "--secret",
            "s",
        ]))
        .unwrap();
        assert!(matches!(cli.command, Some(Command::Edge(_))));
        assert!(
            Cli::try_parse_from(args(&["bin", "edge", "--token", "t", "--hub-host", "h"])).is_err()
        );
    }
}
