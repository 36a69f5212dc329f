//! A UDP echo target behind the hub: strips the PROXY v2 header where present, records it, and
//! echoes the payload back to the sender.
#![allow(dead_code, unreachable_pub)]

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use tokio::net::UdpSocket;

/// A PROXY v2 header seen by the target: the client and edge addresses it carried.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeenHeader {
    pub client: SocketAddr,
    pub edge: SocketAddr,
    /// The hub socket it came from (one per session).
    pub from: SocketAddr,
}

pub struct UdpEchoTarget {
    pub port: u16,
    pub headers: Arc<Mutex<Vec<SeenHeader>>>,
    /// Every datagram as it arrived, header and all.
    datagrams: Arc<Mutex<Vec<Vec<u8>>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for UdpEchoTarget {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl UdpEchoTarget {
    /// Binds 127.0.0.1 on a UDP port that is also free on 127.0.0.2 (for the edge).
    pub async fn start() -> Self {
        let socket = loop {
            let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
            let port = socket.local_addr().unwrap().port();
            if std::net::UdpSocket::bind(("127.0.0.2", port)).is_ok() {
                break socket;
            }
        };
        let _ = socket2::SockRef::from(&socket).set_recv_buffer_size(4 << 20);
        let port = socket.local_addr().unwrap().port();
        let headers = Arc::new(Mutex::new(Vec::new()));
        let seen = headers.clone();
        let datagrams = Arc::new(Mutex::new(Vec::new()));
        let arrived = datagrams.clone();
        let task = tokio::spawn(async move {
            let mut buf = vec![0u8; 70_000];
            loop {
                let Ok((len, from)) = socket.recv_from(&mut buf).await else {
                    break;
                };
                let datagram = &buf[..len];
                arrived.lock().unwrap().push(datagram.to_vec());
                let payload = match strip_v2(datagram) {
                    Some((client, edge, rest)) => {
                        seen.lock().unwrap().push(SeenHeader { client, edge, from });
                        rest
                    }
                    None => datagram,
                };
                let _ = socket.send_to(payload, from).await;
            }
        });
        Self {
            port,
            headers,
            datagrams,
            task,
        }
    }

    pub fn headers(&self) -> Vec<SeenHeader> {
        self.headers.lock().unwrap().clone()
    }

    /// Every datagram received so far, exactly as it arrived (header and all).
    pub fn datagrams(&self) -> Vec<Vec<u8>> {
        self.datagrams.lock().unwrap().clone()
    }
}

/// Parses a PROXY v2 DGRAM header (IPv4 or IPv6) at the start; returns the addresses and the
/// rest.
fn strip_v2(datagram: &[u8]) -> Option<(SocketAddr, SocketAddr, &[u8])> {
    const SIGNATURE: &[u8] = b"\r\n\r\n\0\r\nQUIT\n";
    if datagram.len() < 16 || &datagram[..12] != SIGNATURE {
        return None;
    }
    assert_eq!(datagram[12], 0x21, "version 2, PROXY command");
    let len = u16::from_be_bytes([datagram[14], datagram[15]]) as usize;
    let body = &datagram[16..16 + len];
    let port = |at: usize| u16::from_be_bytes([body[at], body[at + 1]]);
    let (client, edge) = match datagram[13] {
        0x12 => {
            let ip = |b: &[u8]| std::net::IpAddr::from(<[u8; 4]>::try_from(b).unwrap());
            (
                SocketAddr::new(ip(&body[0..4]), port(8)),
                SocketAddr::new(ip(&body[4..8]), port(10)),
            )
        }
        0x22 => {
            let ip = |b: &[u8]| std::net::IpAddr::from(<[u8; 16]>::try_from(b).unwrap());
            (
                SocketAddr::new(ip(&body[0..16]), port(32)),
                SocketAddr::new(ip(&body[16..32]), port(34)),
            )
        }
        other => panic!("not UDP over IPv4 or IPv6 (DGRAM): {other:#x}"),
    };
    Some((client, edge, &datagram[16 + len..]))
}
