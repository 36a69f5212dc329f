//! `ri-loadgen`: targets and load generators for remoteingress benchmarks.
//!
//! Targets accept connections with or without a PROXY header (v1 or v2), so the same target
//! serves direct loopback runs and runs through the tunnel. Every generator prints one JSON line.
//!
//! TCP protocol of the target: after the optional PROXY header the client sends a 9-byte
//! command, `U` + u64 BE (the client uploads that many bytes; the target answers `ok` at the
//! end) or `D` + u64 BE (the target sends that many bytes, then closes).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand, ValueEnum};
use hdrhistogram::Histogram;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};

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
    /// TCP target (upload sink / download source); PROXY header optional.
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
}

#[derive(Clone, Copy, ValueEnum)]
enum Direction {
    Up,
    Down,
}

#[tokio::main]
async fn main() -> Result<()> {
    match Cli::parse().command {
        Command::Serve { listen } => serve_tcp(listen).await,
        Command::UdpEcho { listen } => udp_echo(listen).await,
        Command::Tcp {
            addr,
            streams,
            bytes,
            direction,
        } => tcp_throughput(addr, streams, bytes, direction).await,
        Command::Udp {
            addr,
            flows,
            size,
            window,
            seconds,
        } => udp_rate(addr, flows, size, window, Duration::from_secs_f64(seconds)).await,
    }
}

const CHUNK: usize = 256 * 1024;

async fn serve_tcp(listen: SocketAddr) -> Result<()> {
    let listener = TcpListener::bind(listen).await?;
    println!("listening {listen}");
    loop {
        let (socket, _) = listener.accept().await?;
        tokio::spawn(async move {
            if let Err(error) = serve_one(socket).await {
                eprintln!("target: {error:#}");
            }
        });
    }
}

/// Skips a PROXY v1 line or v2 header if the stream starts with one.
async fn skip_proxy_header(socket: &mut TcpStream) -> Result<()> {
    let mut peek = [0u8; 16];
    let n = socket.peek(&mut peek).await?;
    if n >= 5 && &peek[..5] == b"PROXY" {
        let mut byte = [0u8; 1];
        let mut len = 0;
        loop {
            socket.read_exact(&mut byte).await?;
            len += 1;
            if byte[0] == b'\n' || len > 107 {
                break;
            }
        }
    } else if n >= 1 && peek[0] == b'\r' {
        let mut fixed = [0u8; 16];
        socket.read_exact(&mut fixed).await?;
        let len = u16::from_be_bytes([fixed[14], fixed[15]]) as usize;
        let mut rest = vec![0u8; len];
        socket.read_exact(&mut rest).await?;
    }
    Ok(())
}

async fn serve_one(mut socket: TcpStream) -> Result<()> {
    socket.set_nodelay(true)?;
    skip_proxy_header(&mut socket).await?;
    let mut command = [0u8; 9];
    socket.read_exact(&mut command).await?;
    let mut count = [0u8; 8];
    count.copy_from_slice(&command[1..]);
    let total = u64::from_be_bytes(count);
    let mut buf = vec![0u8; CHUNK];
    match command[0] {
        b'U' => {
            let mut left = total;
            while left > 0 {
                let n = socket.read(&mut buf).await?;
                if n == 0 {
                    bail!("upload ended early");
                }
                left = left.saturating_sub(n as u64);
            }
            socket.write_all(b"ok").await?;
        }
        b'D' => {
            let mut left = total;
            while left > 0 {
                let n = left.min(CHUNK as u64) as usize;
                socket.write_all(&buf[..n]).await?;
                left -= n as u64;
            }
        }
        other => bail!("unknown command {other}"),
    }
    socket.shutdown().await?;
    Ok(())
}

async fn tcp_throughput(
    addr: SocketAddr,
    streams: usize,
    bytes: u64,
    direction: Direction,
) -> Result<()> {
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..streams {
        tasks.push(tokio::spawn(async move {
            let mut socket = TcpStream::connect(addr).await?;
            socket.set_nodelay(true)?;
            let mut command = [0u8; 9];
            command[0] = match direction {
                Direction::Up => b'U',
                Direction::Down => b'D',
            };
            command[1..].copy_from_slice(&bytes.to_be_bytes());
            socket.write_all(&command).await?;
            let mut buf = vec![0u8; CHUNK];
            match direction {
                Direction::Up => {
                    let mut left = bytes;
                    while left > 0 {
                        let n = left.min(CHUNK as u64) as usize;
                        socket.write_all(&buf[..n]).await?;
                        left -= n as u64;
                    }
                    let mut ok = [0u8; 2];
                    socket
                        .read_exact(&mut ok)
                        .await
                        .context("no ok from the target")?;
                }
                Direction::Down => {
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
                }
            }
            Ok::<_, anyhow::Error>(())
        }));
    }
    for task in tasks {
        task.await??;
    }
    let seconds = started.elapsed().as_secs_f64();
    let total = bytes as f64 * streams as f64;
    println!(
        "{}",
        serde_json::json!({
            "kind": "tcp", "streams": streams, "bytes": total, "seconds": seconds,
            "gbps": total * 8.0 / seconds / 1e9,
        })
    );
    Ok(())
}

async fn udp_echo(listen: SocketAddr) -> Result<()> {
    let socket = UdpSocket::bind(listen).await?;
    println!("listening {listen}");
    let mut buf = vec![0u8; 65_536];
    loop {
        let (len, from) = socket.recv_from(&mut buf).await?;
        let mut payload = &buf[..len];
        if len >= 16 && &payload[..12] == b"\r\n\r\n\0\r\nQUIT\n" {
            let header = 16 + u16::from_be_bytes([payload[14], payload[15]]) as usize;
            payload = payload.get(header..).unwrap_or_default();
        }
        let _ = socket.send_to(payload, from).await;
    }
}

async fn udp_rate(
    addr: SocketAddr,
    flows: usize,
    size: usize,
    window: usize,
    duration: Duration,
) -> Result<()> {
    let sent = Arc::new(AtomicU64::new(0));
    let received = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    let end = Instant::now() + duration;
    for _ in 0..flows {
        let (sent, received) = (sent.clone(), received.clone());
        tasks.push(tokio::spawn(async move {
            let local: SocketAddr = if addr.is_ipv4() {
                "0.0.0.0:0"
            } else {
                "[::]:0"
            }
            .parse()?;
            let socket = UdpSocket::bind(local).await?;
            socket.connect(addr).await?;
            let mut histogram = Histogram::<u64>::new(3)?;
            let mut payload = vec![0u8; size.max(8)];
            let mut buf = vec![0u8; 65_536];
            let epoch = Instant::now();
            let mut in_flight = 0usize;
            while Instant::now() < end {
                while in_flight < window {
                    let stamp = epoch.elapsed().as_nanos() as u64;
                    payload[..8].copy_from_slice(&stamp.to_be_bytes());
                    socket.send(&payload).await?;
                    sent.fetch_add(1, Ordering::Relaxed);
                    in_flight += 1;
                }
                match tokio::time::timeout(Duration::from_millis(200), socket.recv(&mut buf)).await
                {
                    Ok(Ok(len)) if len >= 8 => {
                        let mut stamp = [0u8; 8];
                        stamp.copy_from_slice(&buf[..8]);
                        let rtt = (epoch.elapsed().as_nanos() as u64)
                            .saturating_sub(u64::from_be_bytes(stamp));
                        histogram.record(rtt.max(1))?;
                        received.fetch_add(1, Ordering::Relaxed);
                        in_flight -= 1;
                    }
                    Ok(_) => {}
                    // A lost datagram: stop waiting for it.
                    Err(_) => in_flight = in_flight.saturating_sub(1),
                }
            }
            // Collect the stragglers.
            while in_flight > 0 {
                match tokio::time::timeout(Duration::from_millis(300), socket.recv(&mut buf)).await
                {
                    Ok(Ok(_)) => {
                        received.fetch_add(1, Ordering::Relaxed);
                        in_flight -= 1;
                    }
                    _ => break,
                }
            }
            Ok::<_, anyhow::Error>(histogram)
        }));
    }
    let mut histogram = Histogram::<u64>::new(3)?;
    for task in tasks {
        histogram.add(task.await??)?;
    }
    let seconds = duration.as_secs_f64();
    let (sent, received) = (
        sent.load(Ordering::Relaxed),
        received.load(Ordering::Relaxed),
    );
    println!(
        "{}",
        serde_json::json!({
            "kind": "udp", "flows": flows, "size": size, "sent": sent, "received": received,
            "pps": received as f64 / seconds,
            "loss": if sent == 0 { 0.0 } else { 1.0 - received as f64 / sent as f64 },
            "p50_us": histogram.value_at_quantile(0.5) as f64 / 1e3,
            "p99_us": histogram.value_at_quantile(0.99) as f64 / 1e3,
        })
    );
    Ok(())
}
