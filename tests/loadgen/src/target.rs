//! The targets: a TCP server speaking the [`wire`](crate::wire) commands and a UDP echo server.
//! Both accept traffic with or without a PROXY header.

use std::net::SocketAddr;

use anyhow::{bail, Context, Result};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};

use crate::wire::{self, Op, COMMAND_LEN, MAX_ECHO_SIZE};
use crate::CHUNK;

pub(crate) async fn serve_tcp(listen: SocketAddr) -> Result<()> {
    let listener = TcpListener::bind(listen).await?;
    println!("listening {listen}");
    loop {
        let (socket, _) = match listener.accept().await {
            Ok(accepted) => accepted,
            // Out of descriptors, say: keep serving the connections already open.
            Err(error) => {
                eprintln!("target: accept: {error}");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
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
    let mut command = [0u8; COMMAND_LEN];
    socket.read_exact(&mut command).await?;
    let Some((op, argument)) = Op::decode(&command) else {
        bail!("unknown command {}", command[0]);
    };
    match op {
        Op::Upload => receive_upload(&mut socket, argument).await?,
        Op::Download => wire::send_zeros(&mut socket, argument).await?,
        Op::Sink => discard_until_eof(&mut socket).await?,
        Op::Echo => echo_messages(&mut socket, argument).await?,
    }
    socket.shutdown().await?;
    Ok(())
}

async fn receive_upload(socket: &mut TcpStream, total: u64) -> Result<()> {
    let mut buf = vec![0u8; CHUNK];
    let mut left = total;
    while left > 0 {
        let n = socket.read(&mut buf).await?;
        if n == 0 {
            bail!("upload ended early");
        }
        left = left.saturating_sub(n as u64);
    }
    socket.write_all(b"ok").await?;
    Ok(())
}

async fn discard_until_eof(socket: &mut TcpStream) -> Result<()> {
    let mut buf = vec![0u8; CHUNK];
    while socket.read(&mut buf).await? > 0 {}
    Ok(())
}

/// Echoes `size`-byte messages until the client closes between two messages.
async fn echo_messages(socket: &mut TcpStream, size: u64) -> Result<()> {
    if size == 0 || size > MAX_ECHO_SIZE {
        bail!("echo size {size} outside 1..={MAX_ECHO_SIZE}");
    }
    let mut message = vec![0u8; size as usize];
    loop {
        let first = socket.read(&mut message).await?;
        if first == 0 {
            return Ok(());
        }
        socket
            .read_exact(&mut message[first..])
            .await
            .context("message cut short")?;
        socket.write_all(&message).await?;
    }
}

pub(crate) async fn udp_echo(listen: SocketAddr) -> Result<()> {
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
