//! Test targets behind the hub: they read the PROXY v1 line first, record it, then serve.
#![allow(dead_code, unreachable_pub)]

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

/// What a target does after the PROXY line.
#[derive(Clone, Copy, Debug)]
pub enum Behaviour {
    /// Echo every byte back; close writing after the client's EOF.
    Echo,
    /// Read everything slowly (`bytes_per_tick` every 10 ms), then reply with the byte count.
    SlowSink { bytes_per_tick: usize },
    /// Read the request to EOF, then send `len` bytes of response and close.
    Respond { len: usize },
    /// Send `len` bytes at once, then abort the connection with a TCP reset.
    ResetAfter { len: usize },
    /// Send 64 KiB chunks until the connection fails (an endless download).
    Stream,
    /// Accept, then never read (for two minutes): the client must feel backpressure.
    Hold,
}

/// A target on 127.0.0.1 that records the PROXY lines it received.
pub struct Target {
    pub port: u16,
    pub headers: Arc<Mutex<Vec<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Target {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Target {
    /// Binds 127.0.0.1 on a port that is also free on 127.0.0.2 (where the edge will listen).
    pub async fn start(behaviour: Behaviour) -> Self {
        Self::on(listener_free_on_edge().await, behaviour)
    }

    /// Like [`Target::start`], with the listening socket's receive buffer at `bytes`: accepted
    /// sockets inherit it and the kernel no longer grows it, so a target that does not read
    /// holds little in the kernel and what its client sends stays with the client.
    pub async fn start_with_recv_buffer(behaviour: Behaviour, bytes: u32) -> Self {
        let listener = loop {
            let socket = tokio::net::TcpSocket::new_v4().unwrap();
            socket.set_recv_buffer_size(bytes).unwrap();
            socket.bind(([127, 0, 0, 1], 0).into()).unwrap();
            let port = socket.local_addr().unwrap().port();
            if std::net::TcpListener::bind(("127.0.0.2", port)).is_ok() {
                break socket.listen(1024).unwrap();
            }
        };
        Self::on(listener, behaviour)
    }

    pub async fn start_on(port: u16, behaviour: Behaviour) -> Self {
        Self::on(
            TcpListener::bind(("127.0.0.1", port)).await.unwrap(),
            behaviour,
        )
    }

    fn on(listener: TcpListener, behaviour: Behaviour) -> Self {
        let port = listener.local_addr().unwrap().port();
        let headers = Arc::new(Mutex::new(Vec::new()));
        let recorded = headers.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((socket, _)) = listener.accept().await else {
                    break;
                };
                let recorded = recorded.clone();
                tokio::spawn(async move {
                    let _ = serve(socket, behaviour, recorded).await;
                });
            }
        });
        Self {
            port,
            headers,
            task,
        }
    }

    pub fn headers(&self) -> Vec<String> {
        self.headers.lock().unwrap().clone()
    }
}

/// A listener on 127.0.0.1 whose port is also free on 127.0.0.2 (where the edge will listen).
async fn listener_free_on_edge() -> TcpListener {
    loop {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        if std::net::TcpListener::bind(("127.0.0.2", port)).is_ok() {
            return listener;
        }
    }
}

async fn serve(
    socket: TcpStream,
    behaviour: Behaviour,
    recorded: Arc<Mutex<Vec<String>>>,
) -> std::io::Result<()> {
    let mut reader = BufReader::with_capacity(64 * 1024, socket);
    let mut line = String::new();
    reader.read_line(&mut line).await?;
    recorded.lock().unwrap().push(line.trim_end().to_owned());
    match behaviour {
        Behaviour::Echo => {
            let (mut read, mut write) = tokio::io::split(reader);
            tokio::io::copy(&mut read, &mut write).await?;
            write.shutdown().await?;
        }
        Behaviour::SlowSink { bytes_per_tick } => {
            let mut total = 0u64;
            let mut buf = vec![0u8; bytes_per_tick];
            let mut tick = tokio::time::interval(Duration::from_millis(10));
            loop {
                tick.tick().await;
                let n = reader.read(&mut buf).await?;
                if n == 0 {
                    break;
                }
                total += n as u64;
            }
            let mut socket = reader.into_inner();
            socket.write_all(format!("{total}\n").as_bytes()).await?;
            socket.shutdown().await?;
        }
        Behaviour::ResetAfter { len } => {
            let socket = reader.into_inner();
            let mut socket = socket;
            socket.write_all(&vec![b'r'; len]).await?;
            socket.flush().await?;
            socket2::SockRef::from(&socket).set_linger(Some(Duration::ZERO))?;
            drop(socket);
        }
        Behaviour::Hold => {
            tokio::time::sleep(Duration::from_secs(120)).await;
            drop(reader);
        }
        Behaviour::Stream => {
            let mut socket = reader.into_inner();
            let chunk = vec![b's'; 64 * 1024];
            loop {
                socket.write_all(&chunk).await?;
            }
        }
        Behaviour::Respond { len } => {
            let mut request = Vec::new();
            reader.read_to_end(&mut request).await?;
            let mut socket = reader.into_inner();
            let body = vec![b'z'; len];
            socket.write_all(&body).await?;
            socket.shutdown().await?;
        }
    }
    Ok(())
}

/// The PROXY v1 line an edge at 127.0.0.2:`port` builds for a client socket.
pub fn expected_header(client: SocketAddr, port: u16) -> String {
    format!(
        "PROXY TCP4 {} 127.0.0.2 {} {}",
        client.ip(),
        client.port(),
        port
    )
}

/// A target that does not speak PROXY (sshd, a game server): it records, per connection,
/// every byte it received up to the client's EOF, echoes them back and closes.
pub struct RawTarget {
    pub port: u16,
    received: Arc<Mutex<Vec<Vec<u8>>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for RawTarget {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl RawTarget {
    /// Binds 127.0.0.1 on a port that is also free on 127.0.0.2 (where the edge will listen).
    pub async fn start() -> Self {
        let listener = listener_free_on_edge().await;
        let port = listener.local_addr().unwrap().port();
        let received = Arc::new(Mutex::new(Vec::new()));
        let recorded = received.clone();
        let task = tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                let recorded = recorded.clone();
                tokio::spawn(async move {
                    let mut bytes = Vec::new();
                    if socket.read_to_end(&mut bytes).await.is_ok() {
                        recorded.lock().unwrap().push(bytes.clone());
                        let _ = socket.write_all(&bytes).await;
                        let _ = socket.shutdown().await;
                    }
                });
            }
        });
        Self {
            port,
            received,
            task,
        }
    }

    /// What each finished connection carried, in the order they finished.
    pub fn received(&self) -> Vec<Vec<u8>> {
        self.received.lock().unwrap().clone()
    }
}
