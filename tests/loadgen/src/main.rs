//! `ri-loadgen`: targets and load generators for remoteingress benchmarks.
//!
//! Targets accept connections with or without a PROXY header (v1 or v2), so the same target
//! serves direct loopback runs and runs through the tunnel. Every generator prints one JSON line.
//!
//! TCP protocol of the target: after the optional PROXY header the client sends a 9-byte
//! command (see [`wire`]): `U` + u64 BE (the client uploads that many bytes; the target answers
//! `ok` at the end), `D` + u64 BE (the target sends that many bytes, then closes), `S` (the
//! target discards everything until EOF) or `R` + u64 BE (the target echoes every message of
//! that many bytes until EOF).
//!
//! Generators: `tcp` (throughput), `udp` (echo rate and latency), `rr` (request/response over
//! persistent connections), `conn-rate` (one request per connection), `idle` (many idle
//! connections and the RSS they cost the watched processes) and `mice` (request/response
//! latency alone and beside one saturating upload).

mod echo;
mod idle;
mod mice;
mod stats;
mod target;
mod throughput;
mod udp;
mod wire;

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Result;
use clap::{Parser, Subcommand, ValueEnum};

/// Read and write size of the bulk transfers.
const CHUNK: usize = 256 * 1024;

#[derive(Parser)]
#[command(
    name = "ri-loadgen",
    about = "remoteingress benchmark targets and load generators"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// TCP target (upload sink / download source / echo); PROXY header optional.
    Serve {
        #[arg(long)]
        listen: SocketAddr,
    },
    /// UDP echo target; strips a PROXY v2 header where present.
    UdpEcho {
        #[arg(long)]
        listen: SocketAddr,
    },
    /// TCP throughput: `streams` parallel connections moving `bytes` each.
    Tcp {
        #[arg(long)]
        addr: SocketAddr,
        #[arg(long, default_value_t = 1)]
        streams: usize,
        #[arg(long, default_value_t = 1 << 30)]
        bytes: u64,
        #[arg(long, value_enum, default_value = "up")]
        direction: Direction,
    },
    /// UDP echo rate and latency: `flows` sockets, each keeping `window` datagrams in flight.
    Udp {
        #[arg(long)]
        addr: SocketAddr,
        #[arg(long, default_value_t = 8)]
        flows: usize,
        #[arg(long, default_value_t = 512)]
        size: usize,
        #[arg(long, default_value_t = 16)]
        window: usize,
        #[arg(long, default_value_t = 5.0)]
        seconds: f64,
    },
    /// Request/response: `conns` persistent connections, one `size`-byte message in flight each.
    Rr {
        #[arg(long)]
        addr: SocketAddr,
        #[arg(long, default_value_t = 1)]
        conns: usize,
        #[arg(long, default_value_t = 64)]
        size: usize,
        #[arg(long, default_value_t = 5.0)]
        seconds: f64,
    },
    /// Connection rate: `concurrency` workers each looping connect, one request, reply, close.
    ConnRate {
        #[arg(long)]
        addr: SocketAddr,
        #[arg(long, default_value_t = 32)]
        concurrency: usize,
        #[arg(long, default_value_t = 64)]
        size: usize,
        #[arg(long, default_value_t = 5.0)]
        seconds: f64,
    },
    /// Idle connections: opens `conns` (each confirmed by a 1-byte round trip) and reports the
    /// RSS growth of the `--watch NAME=PID` processes.
    Idle {
        #[arg(long)]
        addr: SocketAddr,
        #[arg(long, default_value_t = 10_000)]
        conns: usize,
        /// Connections opened at a time.
        #[arg(long, default_value_t = 64)]
        parallel: usize,
        #[arg(long = "watch", value_name = "NAME=PID")]
        watched: Vec<idle::Watched>,
    },
    /// Mice under an elephant: `conns` request/response connections for `seconds` alone, then
    /// as long again beside one saturating upload stream.
    Mice {
        #[arg(long)]
        addr: SocketAddr,
        #[arg(long, default_value_t = 8)]
        conns: usize,
        #[arg(long, default_value_t = 64)]
        size: usize,
        #[arg(long, default_value_t = 5.0)]
        seconds: f64,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum Direction {
    Up,
    Down,
}

#[tokio::main]
async fn main() -> Result<()> {
    match Cli::parse().command {
        Command::Serve { listen } => target::serve_tcp(listen).await,
        Command::UdpEcho { listen } => target::udp_echo(listen).await,
        Command::Tcp {
            addr,
            streams,
            bytes,
            direction,
        } => throughput::tcp_throughput(addr, streams, bytes, direction).await,
        Command::Udp {
            addr,
            flows,
            size,
            window,
            seconds,
        } => udp::udp_rate(addr, flows, size, window, secs(seconds)).await,
        Command::Rr {
            addr,
            conns,
            size,
            seconds,
        } => echo::request_response(addr, conns, size, secs(seconds)).await,
        Command::ConnRate {
            addr,
            concurrency,
            size,
            seconds,
        } => echo::connection_rate(addr, concurrency, size, secs(seconds)).await,
        Command::Idle {
            addr,
            conns,
            parallel,
            watched,
        } => idle::idle(addr, conns, parallel, &watched).await,
        Command::Mice {
            addr,
            conns,
            size,
            seconds,
        } => mice::mice(addr, conns, size, secs(seconds)).await,
    }
}

fn secs(seconds: f64) -> Duration {
    Duration::from_secs_f64(seconds)
}
