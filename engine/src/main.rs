//! `remoteingress-bin`: thin entry point. Parses the command line, sends logs to stderr and runs
//! the chosen mode. Configuration errors exit with 64 (EX_USAGE), runtime failures with 1.

use std::process::ExitCode;

use remoteingress::cli::{
    self, env_vars, Cli, Command, HubArgs, LogFormat, SecretCommand, StatusArgs, TokenCommand,
};
use remoteingress::token::ConnectionToken;
use remoteingress::{daemon, ipc};

const EXIT_USAGE: u8 = 64;

/// mimalloc instead of glibc malloc: the data path allocates and frees buffers of 64-256 KiB,
/// which glibc serves with mmap/munmap and fresh page faults every time (a profile showed ~10 %
/// of the CPU in page faults); mimalloc keeps and reuses them.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = match Cli::parse_with_mode(
        std::env::args_os().collect(),
        std::env::var(env_vars::MODE).ok(),
    ) {
        Ok(cli) => cli,
        Err(error) => {
            let _ = error.print();
            return if error.use_stderr() {
                ExitCode::from(EXIT_USAGE)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    remoteingress::init_logging(cli.log_format);
    match cli.command {
        Some(Command::Schema) => {
            print!("{}", remoteingress_ipc_schema::schema_text());
            ExitCode::SUCCESS
        }
        Some(Command::Token(command)) => token(command),
        Some(Command::Status(args)) => status(args),
        Some(Command::Check(args)) => match remoteingress::check(&args) {
            Ok(report) => {
                println!("{report}");
                ExitCode::SUCCESS
            }
            Err(error) => {
                eprintln!("remoteingress-bin: {error}");
                ExitCode::from(EXIT_USAGE)
            }
        },
        Some(Command::Plan(command)) => {
            match remoteingress::plan(&command, cli.worker_threads, cli.log_format) {
                Ok(plan) => {
                    println!("{plan}");
                    ExitCode::SUCCESS
                }
                Err(error) => stopped(cli.log_format, &error),
            }
        }
        Some(Command::Completions { shell }) => {
            use clap::CommandFactory;
            use std::io::Write;
            // Into a buffer first: clap_complete panics when its writer fails (`| head`).
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut Cli::command(), "remoteingress-bin", &mut script);
            match std::io::stdout().write_all(&script) {
                Ok(()) => ExitCode::SUCCESS,
                Err(_) => ExitCode::FAILURE,
            }
        }
        Some(Command::Secret(SecretCommand::New)) => match remoteingress::new_secret() {
            Ok(secret) => {
                println!("{secret}");
                ExitCode::SUCCESS
            }
            Err(_) => {
                eprintln!("remoteingress-bin: the OS's random source failed");
                ExitCode::FAILURE
            }
        },
        Some(Command::Hub(args)) => {
            remoteingress::raise_fd_limit();
            run(cli.worker_threads, cli.log_format, daemon::run_hub(args))
        }
        Some(Command::Edge(args)) => {
            remoteingress::raise_fd_limit();
            run(cli.worker_threads, cli.log_format, daemon::run_edge(args))
        }
        None if cli.management => {
            remoteingress::raise_fd_limit();
            management(cli.worker_threads)
        }
        None => {
            eprintln!(
                "remoteingress-bin: nothing to do. Give a subcommand (hub, edge, check, plan, token, \
                 secret, schema, status, completions), \
                 --management, or set {}=hub|edge. See --help.",
                env_vars::MODE
            );
            ExitCode::from(EXIT_USAGE)
        }
    }
}

fn runtime(worker_threads: Option<u16>) -> Option<tokio::runtime::Runtime> {
    let threads = worker_threads.map_or_else(
        || {
            let cores = std::thread::available_parallelism().map_or(1, usize::from);
            cli::default_worker_threads(cores)
        },
        usize::from,
    );
    match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .enable_all()
        .build()
    {
        Ok(runtime) => Some(runtime),
        Err(error) => {
            eprintln!("remoteingress-bin: cannot start the async runtime: {error}");
            None
        }
    }
}

fn run(
    worker_threads: Option<u16>,
    log_format: LogFormat,
    future: impl std::future::Future<Output = Result<(), daemon::DaemonError>>,
) -> ExitCode {
    let Some(runtime) = runtime(worker_threads) else {
        return ExitCode::FAILURE;
    };
    match runtime.block_on(future) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => stopped(log_format, &error),
    }
}

/// Says why a role stopped (or why `plan` has none: the same words, so a wrapper that runs
/// `plan` reports what the role would) and gives its exit status.
fn stopped(log_format: LogFormat, error: &daemon::DaemonError) -> ExitCode {
    // Once: a JSON log line for log collectors, else a plain line for people.
    match log_format {
        LogFormat::Json => tracing::error!(%error, "remoteingress-bin stopped"),
        LogFormat::Text => eprintln!("remoteingress-bin: {error}"),
    }
    if error.usage {
        ExitCode::from(EXIT_USAGE)
    } else {
        ExitCode::FAILURE
    }
}

fn management(worker_threads: Option<u16>) -> ExitCode {
    let Some(runtime) = runtime(worker_threads) else {
        return ExitCode::FAILURE;
    };
    let result = runtime.block_on(ipc::serve(
        tokio::io::BufReader::new(tokio::io::stdin()),
        tokio::io::stdout(),
        daemon::termination_signal(),
    ));
    // stdin may still have a blocking read in flight; do not wait for it.
    runtime.shutdown_timeout(std::time::Duration::from_millis(100));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("remoteingress-bin: management session failed: {error}");
            ExitCode::FAILURE
        }
    }
}

/// `status`: the status of a running hub or edge, from its metrics listener.
fn status(args: StatusArgs) -> ExitCode {
    let Some(addr) = args.metrics_addr else {
        eprintln!(
            "remoteingress-bin: status needs the hub's or edge's metrics listener: give \
             --metrics-addr ADDR:PORT or set {}",
            env_vars::METRICS_ADDR
        );
        return ExitCode::from(EXIT_USAGE);
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("remoteingress-bin: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(remoteingress::fetch_status(&addr)) {
        Ok((_, json)) if args.json => {
            print!("{json}");
            ExitCode::SUCCESS
        }
        Ok((status, _)) => {
            print!("{}", remoteingress::status_summary(&status));
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("remoteingress-bin: {error}");
            ExitCode::FAILURE
        }
    }
}

fn token(command: TokenCommand) -> ExitCode {
    match command {
        TokenCommand::Encode {
            hub_host,
            hub_port,
            edge_id,
            secret,
            hub_cert_sha256,
        } => print_token(ConnectionToken {
            hub_host,
            hub_port,
            edge_id,
            secret: secret.into(),
            hub_cert_sha256,
        }),
        TokenCommand::Issue {
            config,
            edges,
            state_dir,
            edge_id,
            hub_host,
            hub_port,
        } => {
            let hub = HubArgs {
                config,
                edges,
                state_dir,
                tunnel_port: hub_port,
                ..HubArgs::default()
            };
            match daemon::issue_token(&hub, &edge_id, hub_host) {
                Ok(token) => print_token(token),
                Err(error) => {
                    eprintln!("remoteingress-bin: cannot issue a token: {error}");
                    ExitCode::from(EXIT_USAGE)
                }
            }
        }
        TokenCommand::Decode { token } => match ConnectionToken::decode(&token) {
            Ok(decoded) => {
                let json = serde_json::json!({
                    "hubHost": decoded.hub_host,
                    "hubPort": decoded.hub_port,
                    "edgeId": decoded.edge_id,
                    "secret": decoded.secret.expose(),
                    "hubCertSha256": decoded.hub_cert_sha256,
                });
                println!("{json}");
                ExitCode::SUCCESS
            }
            Err(error) => {
                eprintln!("remoteingress-bin: invalid token: {error}");
                ExitCode::from(EXIT_USAGE)
            }
        },
    }
}

fn print_token(token: ConnectionToken) -> ExitCode {
    match token.encode() {
        Ok(text) => {
            println!("{text}");
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("remoteingress-bin: cannot encode token: {error}");
            ExitCode::from(EXIT_USAGE)
        }
    }
}
