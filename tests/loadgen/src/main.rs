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
//! latency alone and beside one saturating upload). `delay-line` is not a generator: it is the
//! emulated WAN link (delay, bandwidth cap, loss) between two network namespaces.

mod delay_line;
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
        /// Download for this many seconds (after `--warmup`) instead of moving `bytes`.
        #[arg(long, conflicts_with = "bytes")]
        seconds: Option<f64>,
        /// With `--seconds`: seconds of transfer before the measurement starts.
        #[arg(long, default_value_t = 2.0, requires = "seconds")]
        warmup: f64,
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
    /// An emulated WAN link between two network namespaces (TUN devices `wan0` in each, with the
    /// given addresses): round-trip delay, bandwidth cap, random loss, a drop-tail buffer.
    DelayLine {
        #[arg(long)]
        a_netns: String,
        #[arg(long)]
        a_address: std::net::Ipv4Addr,
        #[arg(long)]
        b_netns: String,
        #[arg(long)]
        b_address: std::net::Ipv4Addr,
        #[arg(long)]
        rtt_ms: f64,
        /// Bandwidth cap in Mbit/s, each way.
        #[arg(long)]
        rate_mbit: Option<f64>,
        /// Fraction of packets dropped at random, each way (0.001 = 0.1 %).
        #[arg(long, default_value_t = 0.0)]
        loss: f64,
        /// Router buffer in bytes; default one bandwidth-delay product (at least 64 KiB).
        #[arg(long)]
        queue_bytes: Option<u64>,
        #[arg(long, default_value_t = 1)]
        seed: u64,
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
            seconds,
            warmup,
        } => match (seconds, direction) {
            (None, _) => throughput::tcp_throughput(addr, streams, bytes, direction).await,
            (Some(seconds), Direction::Down) => {
                throughput::timed_download(addr, streams, secs(warmup), secs(seconds)).await
            }
            (Some(_), Direction::Up) => anyhow::bail!("--seconds measures downloads only"),
        },
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
        Command::DelayLine {
            a_netns,
            a_address,
            b_netns,
            b_address,
            rtt_ms,
            rate_mbit,
            loss,
            queue_bytes,
            seed,
        } => {
            let one_way = Duration::from_secs_f64(rtt_ms / 2000.0);
            let rate = rate_mbit.map(|mbit| mbit * 1e6 / 8.0);
            let bdp = rate.map_or(0.0, |rate| rate * rtt_ms / 1000.0) as u64;
            let link = delay_line::Link {
                one_way,
                rate,
                loss,
                queue_bytes: queue_bytes.unwrap_or_else(|| bdp.max(64 * 1024)),
            };
            let side = |netns, address| delay_line::Side { netns, address };
            delay_line::delay_line(
                side(a_netns, a_address),
                side(b_netns, b_address),
                link,
                seed,
            )
            .await
        }
    }
}

fn secs(seconds: f64) -> Duration {
    Duration::from_secs_f64(seconds)
}
