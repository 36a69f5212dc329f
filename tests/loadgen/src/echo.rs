//! Request/response over the target's `R` (echo) command: persistent connections for a while
//! ([`request_response`]) and one request per connection ([`connection_rate`]).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;

use crate::stats::Tally;
use crate::wire::Op;

/// How long one connect or round trip may take before it counts as an error.
const OPERATION_TIMEOUT: Duration = Duration::from_secs(10);

/// A connection in echo mode. The command goes out with the first request, so a one-request
/// connection is a single write.
pub(crate) struct EchoConn {
    socket: TcpStream,
    outgoing: Vec<u8>,
    incoming: Vec<u8>,
    size: usize,
}

impl EchoConn {
    pub(crate) async fn open(addr: SocketAddr, size: usize) -> Result<Self> {
        let socket = timeout(OPERATION_TIMEOUT, TcpStream::connect(addr))
            .await
            .context("connect timed out")??;
        socket.set_nodelay(true)?;
        Ok(Self {
            socket,
            outgoing: Op::Echo.encode(size as u64).to_vec(),
            incoming: vec![0u8; size],
            size,
        })
    }

    /// Sends one message and waits for its echo; returns the round-trip time.
    pub(crate) async fn round_trip(&mut self) -> Result<Duration> {
        let started = Instant::now();
        timeout(OPERATION_TIMEOUT, self.exchange())
            .await
            .context("round trip timed out")??;
        Ok(started.elapsed())
    }

    async fn exchange(&mut self) -> Result<()> {
        let sent_at = self.outgoing.len();
        self.outgoing.resize(sent_at + self.size, 0xA5);
        self.socket.write_all(&self.outgoing).await?;
        self.outgoing.clear();
        self.socket.read_exact(&mut self.incoming).await?;
        if self.incoming.iter().any(|&byte| byte != 0xA5) {
            bail!("echo differs from the request");
        }
        Ok(())
    }
}

/// `conns` persistent connections doing back-to-back round trips for `duration`.
pub(crate) async fn run_request_response(
    addr: SocketAddr,
    conns: usize,
    size: usize,
    duration: Duration,
) -> Result<Value> {
    let started = Instant::now();
    let end = started + duration;
    let mut workers = Vec::new();
    for _ in 0..conns {
        workers.push(tokio::spawn(echo_worker(addr, size, end)));
    }
    let tally = join_tallies(workers).await?;
    let mut summary = tally.summary("rps", started.elapsed());
    summary["kind"] = json!("rr");
    summary["conns"] = json!(conns);
    summary["size"] = json!(size);
    Ok(summary)
}

pub(crate) async fn request_response(
    addr: SocketAddr,
    conns: usize,
    size: usize,
    duration: Duration,
) -> Result<()> {
    println!(
        "{}",
        run_request_response(addr, conns, size, duration).await?
    );
    Ok(())
}

/// One connection's loop: round trips until `end`, reconnecting after a failure.
async fn echo_worker(addr: SocketAddr, size: usize, end: Instant) -> Result<Tally> {
    let mut tally = Tally::new()?;
    let mut conn = None;
    while Instant::now() < end {
        if conn.is_none() {
            match EchoConn::open(addr, size).await {
                Ok(open) => conn = Some(open),
                Err(error) => {
                    tally.fail(&error);
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            }
        }
        let Some(open) = conn.as_mut() else { continue };
        match open.round_trip().await {
            Ok(rtt) => tally.record(rtt)?,
            Err(error) => {
                tally.fail(&error);
                conn = None;
            }
        }
    }
    Ok(tally)
}

/// `concurrency` workers each looping: connect, one request, its response, close.
pub(crate) async fn connection_rate(
    addr: SocketAddr,
    concurrency: usize,
    size: usize,
    duration: Duration,
) -> Result<()> {
    let started = Instant::now();
    let end = started + duration;
    let mut workers = Vec::new();
    for _ in 0..concurrency {
        workers.push(tokio::spawn(one_shot_worker(addr, size, end)));
    }
    let tally = join_tallies(workers).await?;
    let mut summary = tally.summary("cps", started.elapsed());
    summary["kind"] = json!("connrate");
    summary["concurrency"] = json!(concurrency);
    summary["size"] = json!(size);
    println!("{summary}");
    Ok(())
}

async fn one_shot_worker(addr: SocketAddr, size: usize, end: Instant) -> Result<Tally> {
    let mut tally = Tally::new()?;
    while Instant::now() < end {
        let started = Instant::now();
        match one_shot(addr, size).await {
            Ok(()) => tally.record(started.elapsed())?,
            Err(error) => tally.fail(&error),
        }
    }
    Ok(tally)
}

async fn one_shot(addr: SocketAddr, size: usize) -> Result<()> {
    let mut conn = EchoConn::open(addr, size).await?;
    conn.round_trip().await?;
    Ok(())
}

async fn join_tallies(workers: Vec<tokio::task::JoinHandle<Result<Tally>>>) -> Result<Tally> {
    let mut total = Tally::new()?;
    for worker in workers {
        total.merge(&worker.await??)?;
    }
    Ok(total)
}
