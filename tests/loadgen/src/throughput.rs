//! TCP throughput: parallel streams each uploading or downloading a fixed number of bytes, or
//! downloading for a fixed time (the WAN rows, where a fixed size would take minutes under loss).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::wire::{self, Op};
use crate::{Direction, CHUNK};

pub(crate) async fn tcp_throughput(
    addr: SocketAddr,
    streams: usize,
    bytes: u64,
    direction: Direction,
) -> Result<()> {
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..streams {
        tasks.push(tokio::spawn(one_stream(addr, bytes, direction)));
    }
    for task in tasks {
        task.await??;
    }
    let seconds = started.elapsed().as_secs_f64();
    let total = bytes as f64 * streams as f64;
    println!(
        "{}",
        json!({
            "kind": "tcp", "streams": streams, "bytes": total, "seconds": seconds,
            "gbps": total * 8.0 / seconds / 1e9,
        })
    );
    Ok(())
}

async fn one_stream(addr: SocketAddr, bytes: u64, direction: Direction) -> Result<()> {
    let mut socket = TcpStream::connect(addr).await?;
    socket.set_nodelay(true)?;
    match direction {
        Direction::Up => upload(&mut socket, bytes).await,
        Direction::Down => download(&mut socket, bytes).await,
    }
}

async fn upload(socket: &mut TcpStream, bytes: u64) -> Result<()> {
    socket.write_all(&Op::Upload.encode(bytes)).await?;
    wire::send_zeros(socket, bytes).await?;
    let mut ok = [0u8; 2];
    socket
        .read_exact(&mut ok)
        .await
        .context("no ok from the target")?;
    Ok(())
}

async fn download(socket: &mut TcpStream, bytes: u64) -> Result<()> {
    socket.write_all(&Op::Download.encode(bytes)).await?;
    let mut buf = vec![0u8; CHUNK];
    let mut got = 0u64;
    loop {
        let n = socket.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        got += n as u64;
    }
    if got != bytes {
        bail!("downloaded {got} of {bytes} bytes");
    }
    Ok(())
}

/// `streams` downloads that never end on their own: the bytes received between `warmup` and
/// `warmup + seconds` give the rate, so slow start and window growth before it do not count.
pub(crate) async fn timed_download(
    addr: SocketAddr,
    streams: usize,
    warmup: Duration,
    seconds: Duration,
) -> Result<()> {
    let received = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for _ in 0..streams {
        tasks.push(tokio::spawn(download_until_aborted(addr, received.clone())));
    }
    tokio::time::sleep(warmup).await;
    let before = received.load(Ordering::Relaxed);
    let started = Instant::now();
    tokio::time::sleep(seconds).await;
    let total = received.load(Ordering::Relaxed) - before;
    let elapsed = started.elapsed().as_secs_f64();
    for task in tasks {
        if task.is_finished() {
            task.await??;
            bail!("a stream ended before the end of the measurement");
        }
        task.abort();
    }
    println!(
        "{}",
        json!({
            "kind": "tcp", "streams": streams, "bytes": total, "seconds": elapsed,
            "warmup_seconds": warmup.as_secs_f64(), "gbps": total as f64 * 8.0 / elapsed / 1e9,
        })
    );
    Ok(())
}

async fn download_until_aborted(addr: SocketAddr, received: Arc<AtomicU64>) -> Result<()> {
    let mut socket = TcpStream::connect(addr).await?;
    socket.set_nodelay(true)?;
    socket.write_all(&Op::Download.encode(u64::MAX)).await?;
    let mut buf = vec![0u8; CHUNK];
    loop {
        let n = socket.read(&mut buf).await?;
        if n == 0 {
            bail!("the download ended early");
        }
        received.fetch_add(n as u64, Ordering::Relaxed);
    }
}
