//! QUIC transport (quinn): one bidirectional stream per tunneled TCP connection, opened by the
//! edge and starting with the PROXY v1 line; the first bidirectional stream is the control stream
//! (handshake line, then `[type][len][payload]` control messages, see [`super::control`]).
//!
//! Everything above this module sees only [`super::tunnel::Tunnel`]; the types here implement
//! its QUIC variant.

pub mod stream;

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use quinn::{Connection, RecvStream, SendStream, TransportConfig, VarInt};
use tokio::io::AsyncReadExt;
use tokio::sync::mpsc;

use super::control::{self, ControlMessage};
use super::datagram::{self, UdpMessage};
use super::frame::FrameType;
use super::handshake::{read_line, LineError};
use crate::config::PerformanceSettings;
pub use stream::QuicStream;

/// Streams (tunneled TCP connections) the peer may have open at once, at first. quinn-proto
/// sets up bookkeeping for every stream the peer may open as soon as the limit allows it
/// (a limit of 100,000 cost 19 MiB per process before a single stream existed, measured RSS),
/// so the limit starts here and grows with use ([`StreamLimit`]).
const INITIAL_CONCURRENT_STREAMS: u32 = 1_024;
/// The most streams the peer may have open at once (the limit grows up to here).
const MAX_CONCURRENT_STREAMS: u32 = 1 << 20;
/// Deadline for a new stream's first line (PROXY v1 or egress request).
const FIRST_LINE_DEADLINE: Duration = Duration::from_secs(10);
/// Incoming streams queued for the session before new ones are refused.
const INCOMING_STREAM_QUEUE: usize = 1024;
/// Control messages queued for the session.
const CONTROL_QUEUE: usize = 64;
/// Incoming UDP messages queued for the session; beyond it datagrams are dropped (UDP).
const DATAGRAM_QUEUE: usize = 4096;
/// Oversized datagrams queued for the overflow stream; beyond it they are dropped and counted.
const OVERFLOW_QUEUE: usize = 256;
/// How long a session stays on the overflow stream after its last oversized datagram.
const OVERFLOW_PIN: Duration = Duration::from_secs(2);
/// Pinned sessions tracked before expired pins are swept.
const MAX_PINNED_SESSIONS: usize = 4096;
/// Application close code: closed by our side on purpose.
pub const CLOSE_NORMAL: u32 = 0;
/// Application close code: the peer broke the protocol.
pub const CLOSE_PROTOCOL_ERROR: u32 = 1;

/// Why QUIC could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum QuicSetupError {
    #[error("QUIC needs TLS 1.3: {0}")]
    Crypto(String),
    #[error("cannot open the QUIC socket: {0}")]
    Socket(#[from] std::io::Error),
}

/// Transport parameters: timeouts derived from the heartbeat settings so that a dead peer is
/// noticed within the heartbeat timeout, the initial stream limit, and datagram buffers.
pub fn transport_config(performance: &PerformanceSettings) -> TransportConfig {
    let mut config = TransportConfig::default();
    config.max_concurrent_bidi_streams(VarInt::from_u32(INITIAL_CONCURRENT_STREAMS));
    config.max_concurrent_uni_streams(VarInt::from_u32(4));
    // Frequent enough that a hub restarted with the same identity answers with a stateless
    // reset within about a second (see `server_endpoint`); a PING frame a second is cheap.
    config.keep_alive_interval(Some(
        performance.heartbeat_interval.min(KEEP_ALIVE_INTERVAL),
    ));
    if let Ok(idle) = quinn::IdleTimeout::try_from(performance.heartbeat_timeout) {
        config.max_idle_timeout(Some(idle));
    }
    config.stream_receive_window(VarInt::from_u32(performance.stream_window_max));
    let connection_window = performance.window_budget.min(u64::from(u32::MAX));
    config.receive_window(VarInt::from_u64(connection_window).unwrap_or(VarInt::MAX));
    config.send_window(connection_window);
    config.datagram_receive_buffer_size(Some(8 << 20));
    config.datagram_send_buffer_size(8 << 20);
    config
}

/// The hub's QUIC endpoint on `port` (UDP), IPv6 dual-stack where available.
/// Longest interval between QUIC keep-alives.
pub const KEEP_ALIVE_INTERVAL: Duration = Duration::from_secs(1);

/// The hub's QUIC endpoint. `reset_key` keys the stateless resets and the connection ids'
/// integrity check: derived from the hub's persistent identity, both are the same after a
/// restart, so the restarted hub recognises an edge's packet for a connection it no longer knows
/// as one of its own ids and answers with a reset the edge accepts; the edge then reconnects at
/// once instead of waiting for its idle timeout. (With per-start keys the new hub dropped those
/// packets as "invalid CID" and the edge waited 10 s.)
pub fn server_endpoint(
    port: u16,
    tls: Arc<rustls::ServerConfig>,
    performance: &PerformanceSettings,
    reset_key: &[u8; 32],
) -> Result<quinn::Endpoint, QuicSetupError> {
    let crypto =
        QuicServerConfig::try_from(tls).map_err(|e| QuicSetupError::Crypto(e.to_string()))?;
    let mut server = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    server.transport_config(Arc::new(transport_config(performance)));
    let socket = bind_udp(port)?;
    let runtime = quinn::default_runtime()
        .ok_or_else(|| std::io::Error::other("no async runtime for QUIC"))?;
    let cid_key = u64::from_le_bytes(
        ring::digest::digest(&ring::digest::SHA256, reset_key).as_ref()[..8]
            .try_into()
            .unwrap_or([0; 8]),
    );
    let mut endpoint = quinn::EndpointConfig::new(Arc::new(ring::hmac::Key::new(
        ring::hmac::HMAC_SHA256,
        reset_key,
    )));
    endpoint.cid_generator(move || {
        Box::new(quinn_proto::HashedConnectionIdGenerator::from_key(cid_key))
    });
    Ok(quinn::Endpoint::new(
        endpoint,
        Some(server),
        socket,
        runtime,
    )?)
}

fn bind_udp(port: u16) -> std::io::Result<std::net::UdpSocket> {
    let v6 = SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), port);
    let dual = (|| {
        let socket = socket2::Socket::new(socket2::Domain::IPV6, socket2::Type::DGRAM, None)?;
        socket.set_only_v6(false)?;
        socket.bind(&v6.into())?;
        Ok::<_, std::io::Error>(socket)
    })();
    match dual {
        Ok(socket) => Ok(socket.into()),
        Err(_) => std::net::UdpSocket::bind(SocketAddr::from(([0, 0, 0, 0], port))),
    }
}

/// The edge's QUIC client configuration.
pub fn client_config(
    tls: Arc<rustls::ClientConfig>,
    performance: &PerformanceSettings,
) -> Result<quinn::ClientConfig, QuicSetupError> {
    let crypto =
        QuicClientConfig::try_from(tls).map_err(|e| QuicSetupError::Crypto(e.to_string()))?;
    let mut client = quinn::ClientConfig::new(Arc::new(crypto));
    client.transport_config(Arc::new(transport_config(performance)));
    Ok(client)
}

/// A client endpoint able to reach `hub`.
pub fn client_endpoint(hub: SocketAddr) -> Result<quinn::Endpoint, QuicSetupError> {
    let bind: SocketAddr = if hub.is_ipv6() {
        (Ipv6Addr::UNSPECIFIED, 0).into()
    } else {
        ([0, 0, 0, 0], 0).into()
    };
    Ok(quinn::Endpoint::client(bind)?)
}

/// Which side of the tunnel this is (decides who answers PING).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QuicSide {
    Edge,
    Hub,
}

/// Handle to a running QUIC tunnel.
#[derive(Clone, Debug)]
pub struct QuicHandle {
    connection: Connection,
    control: mpsc::UnboundedSender<ControlMessage>,
    live_streams: Arc<AtomicUsize>,
    overflow: mpsc::Sender<(u32, Bytes)>,
    /// Sessions that recently sent a datagram on the overflow stream, until when their later
    /// datagrams follow it there (keeps per-session order; see [`OVERFLOW_PIN`]).
    pinned: Arc<std::sync::Mutex<HashMap<u32, Instant>>>,
}

/// What arrives on a QUIC tunnel.
#[derive(Debug)]
pub struct QuicIncoming {
    pub streams: mpsc::Receiver<(QuicStream, Bytes)>,
    pub control: mpsc::Receiver<ControlMessage>,
    pub datagrams: mpsc::Receiver<UdpMessage>,
}

/// A UDP message could not be queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum UdpSendError {
    #[error("the tunnel's datagram queue is full")]
    Full,
    #[error("the tunnel is closed")]
    Closed,
}

/// Starts the tasks of a QUIC tunnel whose handshake is done on the control stream;
/// `leftover` holds control bytes already read after the handshake line.
pub fn start(
    connection: Connection,
    control_send: SendStream,
    control_recv: RecvStream,
    leftover: BytesMut,
    side: QuicSide,
    first_line_cap: usize,
) -> (QuicHandle, QuicIncoming) {
    // Unbounded by construction: control messages are a PING per heartbeat interval, the PONG
    // answering it, and CONFIG pushes per operator update; none is produced per byte of data.
    let (control_tx, control_rx) = mpsc::unbounded_channel();
    let (incoming_control_tx, incoming_control) = mpsc::channel(CONTROL_QUEUE);
    let (stream_tx, streams) = mpsc::channel(INCOMING_STREAM_QUEUE);
    let live_streams = Arc::new(AtomicUsize::new(0));
    let (datagram_tx, datagrams) = mpsc::channel(DATAGRAM_QUEUE);
    let (overflow, overflow_rx) = mpsc::channel(OVERFLOW_QUEUE);
    tokio::spawn(write_control(connection.clone(), control_send, control_rx));
    tokio::spawn(read_control(
        connection.clone(),
        control_recv,
        leftover,
        side,
        control_tx.clone(),
        incoming_control_tx,
        datagram_tx.clone(),
    ));
    let (overflow_in_tx, overflow_in) = mpsc::channel(OVERFLOW_QUEUE);
    tokio::spawn(read_overflow_streams(connection.clone(), overflow_in_tx));
    tokio::spawn(read_datagrams(connection.clone(), overflow_in, datagram_tx));
    tokio::spawn(write_overflow(connection.clone(), overflow_rx));
    tokio::spawn(accept_streams(
        connection.clone(),
        stream_tx,
        live_streams.clone(),
        first_line_cap,
    ));
    (
        QuicHandle {
            connection,
            control: control_tx,
            live_streams,
            overflow,
            pinned: Arc::default(),
        },
        QuicIncoming {
            streams,
            control: incoming_control,
            datagrams,
        },
    )
}

impl QuicHandle {
    /// Opens a stream and writes its first line (the PROXY v1 line).
    pub async fn open_stream(
        &self,
        first_line: Bytes,
    ) -> Result<QuicStream, quinn::ConnectionError> {
        let (mut send, recv) = self.connection.open_bi().await?;
        if send.write_all(&first_line).await.is_err() {
            return Err(quinn::ConnectionError::LocallyClosed);
        }
        Ok(QuicStream::new(
            send,
            recv,
            Bytes::new(),
            self.live_streams.clone(),
        ))
    }

    /// Queues a control message.
    pub fn send_control(&self, message: ControlMessage) -> Result<(), ControlMessage> {
        self.control.send(message).map_err(|e| e.0)
    }

    /// Queues a UDP message without waiting: small datagrams as QUIC datagrams, larger ones on
    /// the overflow stream, closes on the control stream. `Full` means the caller drops it.
    pub fn send_udp(&self, message: UdpMessage) -> Result<(), UdpSendError> {
        if self.is_closed() {
            return Err(UdpSendError::Closed);
        }
        let (datagram, size) = match message {
            UdpMessage::Open { session, header } => {
                (datagram::encode_open(session, &header), header.len() + 5)
            }
            UdpMessage::Data { session, payload } => {
                let fits = self
                    .connection
                    .max_datagram_size()
                    .is_some_and(|max| payload.len() + 4 <= max);
                if !self.datagram_path(session, fits) {
                    return self
                        .overflow
                        .try_send((session, payload))
                        .map_err(|e| match e {
                            mpsc::error::TrySendError::Full(_) => UdpSendError::Full,
                            mpsc::error::TrySendError::Closed(_) => UdpSendError::Closed,
                        });
                }
                let size = payload.len() + 4;
                (datagram::encode_data(session, &payload), size)
            }
            UdpMessage::Close { session } => {
                self.pins().remove(&session);
                let message = ControlMessage {
                    frame_type: FrameType::UdpClose,
                    payload: Bytes::copy_from_slice(&session.to_be_bytes()),
                };
                return self.control.send(message).map_err(|_| UdpSendError::Closed);
            }
        };
        // quinn silently drops the oldest queued datagram when its buffer is full; check first
        // so that every drop is the caller's, and counted.
        if self.connection.datagram_send_buffer_space() < size {
            return Err(UdpSendError::Full);
        }
        self.connection
            .send_datagram(datagram)
            .map_err(|_| UdpSendError::Closed)
    }

    /// Whether a datagram of `session` may take the (unordered) datagram path. A datagram that
    /// does not fit goes on the overflow stream and pins its session there for a while, so a
    /// small datagram sent right after a large one cannot overtake it.
    fn datagram_path(&self, session: u32, fits: bool) -> bool {
        let now = Instant::now();
        let mut pins = self.pins();
        if !fits {
            if pins.len() >= MAX_PINNED_SESSIONS {
                pins.retain(|_, until| *until > now);
            }
            pins.insert(session, now + OVERFLOW_PIN);
            return false;
        }
        match pins.get(&session) {
            Some(until) if *until > now => false,
            Some(_) => {
                pins.remove(&session);
                true
            }
            None => true,
        }
    }

    fn pins(&self) -> std::sync::MutexGuard<'_, HashMap<u32, Instant>> {
        // Held for a map lookup only, never across an await.
        self.pinned
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub fn active_streams(&self) -> usize {
        self.live_streams.load(Ordering::Relaxed)
    }

    pub fn close(&self) {
        self.connection
            .close(VarInt::from_u32(CLOSE_NORMAL), b"closed");
    }

    pub fn is_closed(&self) -> bool {
        self.connection.close_reason().is_some()
    }

    /// Resolves when the connection has ended, with the reason.
    pub async fn closed(&self) -> String {
        describe_close(self.connection.closed().await)
    }

    pub fn remote_address(&self) -> SocketAddr {
        self.connection.remote_address()
    }
}

fn describe_close(error: quinn::ConnectionError) -> String {
    match error {
        quinn::ConnectionError::ApplicationClosed(close) => {
            format!(
                "closed by the peer: {}",
                String::from_utf8_lossy(&close.reason)
            )
        }
        quinn::ConnectionError::LocallyClosed => "closed locally".to_owned(),
        quinn::ConnectionError::TimedOut => "QUIC idle timeout (peer unreachable)".to_owned(),
        other => format!("QUIC connection lost: {other}"),
    }
}

async fn write_control(
    connection: Connection,
    mut send: SendStream,
    mut queue: mpsc::UnboundedReceiver<ControlMessage>,
) {
    let mut buffer = BytesMut::new();
    while let Some(message) = queue.recv().await {
        buffer.clear();
        if let Err(error) = control::encode(&message, &mut buffer) {
            tracing::warn!(%error, "control message not sent");
            continue;
        }
        while let Ok(more) = queue.try_recv() {
            if control::encode(&more, &mut buffer).is_err() {
                tracing::warn!("control message not sent: invalid");
            }
        }
        if send.write_all(&buffer).await.is_err() {
            break;
        }
    }
    let _ = send.finish();
    drop(connection);
}

async fn read_control(
    connection: Connection,
    mut recv: RecvStream,
    mut buffer: BytesMut,
    side: QuicSide,
    replies: mpsc::UnboundedSender<ControlMessage>,
    deliver: mpsc::Sender<ControlMessage>,
    datagrams: mpsc::Sender<UdpMessage>,
) {
    loop {
        loop {
            match control::decode(&mut buffer) {
                Ok(Some(message)) if message.frame_type == FrameType::UdpClose => {
                    let Ok(id) = <[u8; 4]>::try_from(&message.payload[..]) else {
                        tracing::warn!("UDP_CLOSE without a session id on the control stream");
                        continue;
                    };
                    let close = UdpMessage::Close {
                        session: u32::from_be_bytes(id),
                    };
                    if datagrams.send(close).await.is_err() {
                        return;
                    }
                }
                Ok(Some(message)) => {
                    if side == QuicSide::Edge && message.frame_type == FrameType::Ping {
                        let _ = replies.send(ControlMessage::pong_for(&message));
                    }
                    // A slow consumer must not stall the control stream; liveness is what
                    // matters and the newest CONFIG is resent by the hub on each change.
                    if deliver.try_send(message).is_err() {
                        tracing::debug!("control message dropped: session busy");
                    }
                }
                Ok(None) => break,
                Err(error) => {
                    tracing::warn!(%error, "protocol error on the QUIC control stream");
                    connection.close(
                        VarInt::from_u32(CLOSE_PROTOCOL_ERROR),
                        b"control protocol error",
                    );
                    return;
                }
            }
        }
        match recv.read_buf(&mut buffer).await {
            Ok(0) | Err(_) => {
                connection.close(VarInt::from_u32(CLOSE_NORMAL), b"control stream ended");
                return;
            }
            Ok(_) => {}
        }
    }
}

/// The peer's concurrent stream limit: raised by a quarter whenever the open streams reach
/// 80 % of it, up to [`MAX_CONCURRENT_STREAMS`], so its memory is spent only when streams need
/// it (the limit stays within 1.25-1.6 × the streams open at the peak). Never lowered
/// (quinn-proto keeps what it has set up anyway).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct StreamLimit(u32);

impl StreamLimit {
    /// The new limit when `open` streams are open, if it should grow.
    fn grow(&mut self, open: usize) -> Option<u32> {
        let open = u64::try_from(open).unwrap_or(u64::MAX);
        if self.0 >= MAX_CONCURRENT_STREAMS || open.saturating_mul(5) < u64::from(self.0) * 4 {
            return None;
        }
        self.0 = self
            .0
            .saturating_add(self.0 / 4)
            .min(MAX_CONCURRENT_STREAMS);
        Some(self.0)
    }
}

/// Counts an accepted stream in `pending` while it exists.
struct PendingStream(Arc<AtomicUsize>);

impl PendingStream {
    fn new(pending: &Arc<AtomicUsize>) -> Self {
        pending.fetch_add(1, Ordering::Relaxed);
        Self(pending.clone())
    }
}

impl Drop for PendingStream {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

async fn accept_streams(
    connection: Connection,
    queue: mpsc::Sender<(QuicStream, Bytes)>,
    live_streams: Arc<AtomicUsize>,
    first_line_cap: usize,
) {
    let mut limit = StreamLimit(INITIAL_CONCURRENT_STREAMS);
    // Accepted streams still waiting for their first line (not yet counted in `live_streams`).
    let pending = Arc::new(AtomicUsize::new(0));
    loop {
        let Ok((send, mut recv)) = connection.accept_bi().await else {
            return;
        };
        let first_line_phase = PendingStream::new(&pending);
        // Checked at every accept, with the streams waiting for their first line counted, so
        // that the limit is raised before the peer can reach it.
        let open = live_streams.load(Ordering::Relaxed) + pending.load(Ordering::Relaxed);
        if let Some(raised) = limit.grow(open) {
            tracing::debug!(limit = raised, "raising the QUIC stream limit");
            connection.set_max_concurrent_bi_streams(VarInt::from_u32(raised));
        }
        let queue = queue.clone();
        let live_streams = live_streams.clone();
        tokio::spawn(async move {
            let _first_line_phase = first_line_phase;
            let mut buffer = BytesMut::new();
            let line = tokio::time::timeout(
                FIRST_LINE_DEADLINE,
                read_line(&mut recv, &mut buffer, first_line_cap),
            )
            .await;
            let line = match line {
                Ok(Ok(line)) => line,
                Ok(Err(LineError::Eof { .. })) | Err(_) | Ok(Err(_)) => {
                    let _ = recv.stop(VarInt::from_u32(CLOSE_PROTOCOL_ERROR));
                    return;
                }
            };
            let mut first = BytesMut::with_capacity(line.len() + 1);
            first.extend_from_slice(&line);
            first.extend_from_slice(b"\n");
            // Whatever followed the line, in its own small allocation: the read buffer (4 KiB)
            // would otherwise stay alive, through the leftover, as long as the stream does,
            // which is most of an idle stream's memory on the hub.
            let leftover = Bytes::copy_from_slice(&buffer);
            let stream = QuicStream::new(send, recv, leftover, live_streams);
            if let Err(mpsc::error::TrySendError::Full(_)) =
                queue.try_send((stream, first.freeze()))
            {
                // Debug, not warn: a peer opening streams faster than they are accepted could
                // otherwise write one log line per stream.
                tracing::debug!("too many streams waiting; a new QUIC stream was refused");
            }
        });
    }
}

/// Incoming QUIC datagrams and the messages of the overflow streams become UDP messages, in
/// one place, datagrams first: a session's small datagram sent just before a large one (which
/// took the overflow stream) was received no later than the large one, so serving whatever
/// datagram is ready before an overflow message keeps that order. (The other way round, large
/// then small, the sender keeps the session on the overflow stream; see `datagram_path`.)
/// Malformed datagrams are dropped; so are datagrams the queue has no room for, while overflow
/// messages wait for room (they are the reliable path).
async fn read_datagrams(
    connection: Connection,
    mut overflow: mpsc::Receiver<UdpMessage>,
    queue: mpsc::Sender<UdpMessage>,
) {
    loop {
        tokio::select! {
            biased;
            received = connection.read_datagram() => {
                let Ok(bytes) = received else { return };
                match datagram::decode(bytes) {
                    Ok(message) => {
                        if queue.try_send(message).is_err() && queue.is_closed() {
                            return;
                        }
                    }
                    Err(error) => tracing::debug!(%error, "malformed datagram dropped"),
                }
            }
            Some(message) = overflow.recv() => {
                if queue.send(message).await.is_err() {
                    return;
                }
            }
        }
    }
}

/// Reads the peer's overflow streams (datagrams too large for one QUIC datagram) and hands
/// their messages to [`read_datagrams`].
async fn read_overflow_streams(connection: Connection, queue: mpsc::Sender<UdpMessage>) {
    while let Ok(mut recv) = connection.accept_uni().await {
        let queue = queue.clone();
        let connection = connection.clone();
        tokio::spawn(async move {
            let mut buffer = BytesMut::with_capacity(64 * 1024);
            loop {
                loop {
                    match datagram::decode_overflow(&mut buffer) {
                        Ok(Some((session, payload))) => {
                            // Reliable path: wait for room rather than drop.
                            if queue
                                .send(UdpMessage::Data { session, payload })
                                .await
                                .is_err()
                            {
                                return;
                            }
                        }
                        Ok(None) => break,
                        Err(error) => {
                            tracing::warn!(%error, "protocol error on a datagram overflow stream");
                            connection.close(
                                VarInt::from_u32(CLOSE_PROTOCOL_ERROR),
                                b"overflow protocol error",
                            );
                            return;
                        }
                    }
                }
                match recv.read_buf(&mut buffer).await {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                }
            }
        });
    }
}

/// Writes oversized datagrams on one unidirectional stream, opened on first use.
async fn write_overflow(connection: Connection, mut queue: mpsc::Receiver<(u32, Bytes)>) {
    let mut stream: Option<SendStream> = None;
    let mut buffer = BytesMut::new();
    while let Some((session, payload)) = queue.recv().await {
        buffer.clear();
        datagram::encode_overflow(session, &payload, &mut buffer);
        while let Ok((session, payload)) = queue.try_recv() {
            datagram::encode_overflow(session, &payload, &mut buffer);
            if buffer.len() > 1 << 20 {
                break;
            }
        }
        if stream.is_none() {
            match connection.open_uni().await {
                Ok(opened) => stream = Some(opened),
                Err(_) => return,
            }
        }
        let Some(send) = stream.as_mut() else { return };
        if send.write_all(&buffer).await.is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_limit_grows_by_a_quarter_at_80_percent_up_to_the_maximum() {
        let mut limit = StreamLimit(INITIAL_CONCURRENT_STREAMS);
        assert_eq!(limit.grow(0), None);
        assert_eq!(limit.grow(818), None);
        assert_eq!(limit.grow(820), Some(1_280));
        assert_eq!(limit.grow(820), None, "not again for the same load");
        assert_eq!(limit.grow(1_024), Some(1_600));
        // 10,000 open streams end with a limit between 1.25 and 1.6 times that.
        while limit.grow(10_000).is_some() {}
        assert!((12_500..=16_000).contains(&limit.0), "{}", limit.0);
        let mut grown = 0;
        while limit.grow(usize::MAX).is_some() {
            grown += 1;
            assert!(grown < 100);
        }
        assert_eq!(limit.0, MAX_CONCURRENT_STREAMS);
        assert_eq!(limit.grow(usize::MAX), None);
    }
}
