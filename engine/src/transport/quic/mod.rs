//! QUIC transport (quinn): one bidirectional stream per tunneled TCP connection, opened by the
//! edge and starting with the PROXY v1 line; the first bidirectional stream is the control stream
//! (handshake line, then `[type][len][payload]` control messages, see [`super::control`]).
//!
//! Everything above this module sees only [`super::tunnel::Tunnel`]; the types here implement
//! its QUIC variant. This file starts a tunnel and accepts streams; [`endpoint`] sets up quinn,
//! `control_stream` carries control messages, `datagrams` carries UDP and [`stream`] is one
//! tunneled TCP connection.

mod control_stream;
mod datagrams;
pub(crate) mod endpoint;
pub(crate) mod stream;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use quinn::{Connection, RecvStream, SendStream, VarInt};
use tokio::sync::mpsc;
use tokio_util::task::TaskTracker;

use super::control::ControlMessage;
use super::datagram::{self, UdpMessage, UdpSendError};
use super::frame::FrameType;
use super::handshake::{read_line, LineError};
use super::side::Side;
use control_stream::{read_control, write_control, ControlSender};
use datagrams::{read_datagrams, read_overflow_streams, write_overflow};
pub(crate) use endpoint::{
    client_config, client_endpoint, discard_datagrams, open_after_login, server_endpoint,
    with_performance, QuicSetupError, TransportParameters,
};
pub(crate) use stream::QuicStream;

/// Streams (tunneled TCP connections) the peer may have open at once, at first (at most its
/// ceiling, [`QuicHandle::cap_streams`]). quinn-proto
/// sets up bookkeeping for every stream the peer may open as soon as the limit allows it
/// (a limit of 100,000 cost 19 MiB per process before a single stream existed, measured RSS),
/// so the limit starts here and grows with use ([`StreamLimit`]).
const INITIAL_CONCURRENT_STREAMS: u32 = 1_024;
/// The most streams the peer may have open at once (the limit grows up to here, or up to the
/// ceiling the hub sets from the edge's `maxStreams`).
const MAX_CONCURRENT_STREAMS: u32 = 1 << 20;
/// Streams the peer may open beyond its cap (`maxStreams`, `QuicHandle::cap_streams`): the hub
/// refuses a stream over the cap with a reset, and a refused stream still counts towards quinn's
/// limit until both sides have finished it; without headroom the edge's next open would wait
/// for that instead of being refused at once.
pub const STREAM_LIMIT_HEADROOM: u32 = 32;
/// Deadline for a new stream's first line (PROXY v1 or egress request).
const FIRST_LINE_DEADLINE: Duration = Duration::from_secs(10);
/// Incoming streams queued for the session before new ones are refused.
const INCOMING_STREAM_QUEUE: usize = 1024;
/// Control messages queued for the session.
const CONTROL_QUEUE: usize = 64;
/// Control messages (PING, PONG, CONFIG, UDP_CLOSE) that may wait for the control stream.
/// More means the peer does not read its control stream (QUIC flow control holds our writes):
/// the tunnel is closed ([`QuicHandle::send_control`]) instead of queueing without bound or
/// losing a control message. An honest peer never has more than a few waiting; 4,096 small
/// messages are well under 1 MiB (a CONFIG is a few KiB, and one per operator update).
pub(crate) const CONTROL_SEND_QUEUE: usize = 4_096;
/// Why a peer that does not read its control stream was dropped (the tunnel's end reason).
pub(crate) const NOT_READING: &str =
    "the peer does not read its control stream (control queue full)";
/// Incoming UDP messages queued for the session; beyond it datagrams are dropped (UDP).
const DATAGRAM_QUEUE: usize = 4096;
/// Oversized datagrams queued for the overflow stream; beyond it they are dropped and counted.
const OVERFLOW_QUEUE: usize = 256;
/// How long a session stays on the overflow stream after its last oversized datagram.
const OVERFLOW_PIN: Duration = Duration::from_secs(2);
/// Pinned sessions tracked before expired pins are swept.
const MAX_PINNED_SESSIONS: usize = 4096;
/// Application close code: closed by our side on purpose.
pub(crate) const CLOSE_NORMAL: u32 = 0;
/// Application close code: the peer broke the protocol.
pub(crate) const CLOSE_PROTOCOL_ERROR: u32 = 1;

/// Handle to a running QUIC tunnel.
#[derive(Clone, Debug)]
pub struct QuicHandle {
    connection: Connection,
    control: ControlSender,
    live_streams: Arc<AtomicUsize>,
    /// Most streams the peer may have open at once, first-line phase included.
    stream_ceiling: Arc<AtomicU32>,
    overflow: mpsc::Sender<(u32, Bytes)>,
    /// Sessions that recently sent a datagram on the overflow stream, until when their later
    /// datagrams follow it there (keeps per-session order; see [`OVERFLOW_PIN`]).
    pinned: Arc<std::sync::Mutex<HashMap<u32, Instant>>>,
}

/// What arrives on a QUIC tunnel.
#[derive(Debug)]
pub(crate) struct QuicIncoming {
    pub streams: mpsc::Receiver<(QuicStream, Bytes)>,
    pub control: mpsc::Receiver<ControlMessage>,
    pub datagrams: mpsc::Receiver<UdpMessage>,
}

/// Starts the tasks of a QUIC tunnel whose handshake is done on the control stream;
/// `leftover` holds control bytes already read after the handshake line.
pub(crate) fn start(
    connection: Connection,
    control_send: SendStream,
    control_recv: RecvStream,
    leftover: BytesMut,
    side: Side,
    first_line_cap: usize,
    tasks: &TaskTracker,
) -> (QuicHandle, QuicIncoming) {
    // Bounded: a peer that stops reading would otherwise grow it by one UDP_CLOSE per refused
    // UDP open it sends (1 GiB in 40 s, measured); full closes the tunnel (`send_control`).
    let (control_tx, control_rx) = mpsc::channel(CONTROL_SEND_QUEUE);
    let control_tx = ControlSender::new(control_tx, connection.clone());
    let (incoming_control_tx, incoming_control) = mpsc::channel(CONTROL_QUEUE);
    let (stream_tx, streams) = mpsc::channel(INCOMING_STREAM_QUEUE);
    let live_streams = Arc::new(AtomicUsize::new(0));
    let stream_ceiling = Arc::new(AtomicU32::new(MAX_CONCURRENT_STREAMS));
    let (datagram_tx, datagrams) = mpsc::channel(DATAGRAM_QUEUE);
    let (overflow, overflow_rx) = mpsc::channel(OVERFLOW_QUEUE);
    tasks.spawn(write_control(connection.clone(), control_send, control_rx));
    tasks.spawn(read_control(
        connection.clone(),
        control_recv,
        leftover,
        side,
        control_tx.clone(),
        incoming_control_tx,
        datagram_tx.clone(),
    ));
    let (overflow_in_tx, overflow_in) = mpsc::channel(OVERFLOW_QUEUE);
    tasks.spawn(read_overflow_streams(
        connection.clone(),
        overflow_in_tx,
        tasks.clone(),
    ));
    tasks.spawn(read_datagrams(connection.clone(), overflow_in, datagram_tx));
    tasks.spawn(write_overflow(connection.clone(), overflow_rx));
    tasks.spawn(accept_streams(
        connection.clone(),
        stream_tx,
        live_streams.clone(),
        stream_ceiling.clone(),
        first_line_cap,
        tasks.clone(),
    ));
    (
        QuicHandle {
            connection,
            control: control_tx,
            live_streams,
            stream_ceiling,
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

/// Why [`QuicHandle::open_stream`] failed: quinn's error, kept for the log's "caused by".
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// No stream: the connection is gone.
    #[error("{0}")]
    Connection(#[from] quinn::ConnectionError),
    /// The stream opened but its first line could not be sent.
    #[error("cannot send the stream's first line: {0}")]
    FirstLine(#[source] quinn::WriteError),
}

impl QuicHandle {
    /// Opens a stream and writes its first line (the PROXY v1 line).
    pub async fn open_stream(&self, first_line: Bytes) -> Result<QuicStream, OpenError> {
        let (mut send, recv) = self.connection.open_bi().await?;
        send.write_all(&first_line)
            .await
            .map_err(OpenError::FirstLine)?;
        Ok(QuicStream::new(
            send,
            recv,
            Bytes::new(),
            self.live_streams.clone(),
        ))
    }

    /// Queues a control message without waiting. A full queue means the peer does not read
    /// its control stream: the tunnel is closed (reason [`NOT_READING`]) rather than the
    /// message lost, and the message comes back as the error, as it does once closed.
    pub fn send_control(&self, message: ControlMessage) -> Result<(), ControlMessage> {
        self.control.send(message)
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
                return match self.control.send_or_drop(message) {
                    Ok(true) => Ok(()),
                    Ok(false) => Err(UdpSendError::Full),
                    Err(_) => Err(UdpSendError::Closed),
                };
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
        crate::sync::lock(&self.pinned)
    }

    pub fn active_streams(&self) -> usize {
        self.live_streams.load(Ordering::Relaxed)
    }

    /// UDP bytes received on the connection so far (quinn counts them as packets arrive,
    /// acknowledgements included).
    pub fn received_bytes(&self) -> u64 {
        self.connection.stats().udp_rx.bytes
    }

    /// See [`super::tunnel::Tunnel::cap_streams`]; the control stream and
    /// [`STREAM_LIMIT_HEADROOM`] count too. quinn cannot take back a limit it has granted, so a
    /// lower ceiling holds the limit where it is.
    pub fn cap_streams(&self, max: u64) {
        self.stream_ceiling
            .store(stream_ceiling(max), Ordering::Relaxed);
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
        let error = self.connection.closed().await;
        match self.control.local_reason() {
            Some(reason) => reason,
            None => describe_close(error),
        }
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

/// The most bidirectional streams a peer with a cap of `max_streams` may have open: its streams,
/// the control stream and [`STREAM_LIMIT_HEADROOM`], at most [`MAX_CONCURRENT_STREAMS`].
fn stream_ceiling(max_streams: u64) -> u32 {
    u32::try_from(max_streams.saturating_add(1 + u64::from(STREAM_LIMIT_HEADROOM)))
        .unwrap_or(u32::MAX)
        .min(MAX_CONCURRENT_STREAMS)
}

/// The peer's concurrent stream limit: raised by a quarter whenever the open streams (those
/// still sending their first line included) reach 80 % of it, up to the ceiling, so its memory
/// is spent only when streams need it (the limit stays within 1.25-1.6 × the streams open at
/// the peak). Never lowered (quinn-proto keeps what it has set up anyway). quinn refuses a
/// stream over the limit, so the peer never has more than the ceiling open, however slowly it
/// sends first lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct StreamLimit(u32);

impl StreamLimit {
    /// The new limit when `open` streams are open, if it should grow (never past `ceiling`).
    fn grow(&mut self, open: usize, ceiling: u32) -> Option<u32> {
        let open = u64::try_from(open).unwrap_or(u64::MAX);
        let ceiling = ceiling.min(MAX_CONCURRENT_STREAMS);
        if self.0 >= ceiling || open.saturating_mul(5) < u64::from(self.0) * 4 {
            return None;
        }
        self.0 = self.0.saturating_add(self.0 / 4).min(ceiling);
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
    ceiling: Arc<AtomicU32>,
    first_line_cap: usize,
    tasks: TaskTracker,
) {
    // What the peer was granted at login (`open_after_login`) or in its handshake.
    let mut limit = StreamLimit(INITIAL_CONCURRENT_STREAMS.min(ceiling.load(Ordering::Relaxed)));
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
        if let Some(raised) = limit.grow(open, ceiling.load(Ordering::Relaxed)) {
            tracing::debug!(limit = raised, "raising the QUIC stream limit");
            connection.set_max_concurrent_bi_streams(VarInt::from_u32(raised));
        }
        let queue = queue.clone();
        let live_streams = live_streams.clone();
        tasks.spawn(async move {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_limit_grows_by_a_quarter_at_80_percent_up_to_the_maximum() {
        let max = MAX_CONCURRENT_STREAMS;
        let mut limit = StreamLimit(INITIAL_CONCURRENT_STREAMS);
        assert_eq!(limit.grow(0, max), None);
        assert_eq!(limit.grow(818, max), None);
        assert_eq!(limit.grow(820, max), Some(1_280));
        assert_eq!(limit.grow(820, max), None, "not again for the same load");
        assert_eq!(limit.grow(1_024, max), Some(1_600));
        // 10,000 open streams end with a limit between 1.25 and 1.6 times that.
        while limit.grow(10_000, max).is_some() {}
        assert!((12_500..=16_000).contains(&limit.0), "{}", limit.0);
        let mut grown = 0;
        while limit.grow(usize::MAX, max).is_some() {
            grown += 1;
            assert!(grown < 100);
        }
        assert_eq!(limit.0, MAX_CONCURRENT_STREAMS);
        assert_eq!(limit.grow(usize::MAX, max), None);
    }

    #[test]
    fn stream_limit_never_grows_past_the_ceiling() {
        let mut limit = StreamLimit(10);
        assert_eq!(limit.grow(10, 10), None);
        assert_eq!(limit.grow(usize::MAX, 12), Some(12));
        assert_eq!(limit.grow(usize::MAX, 12), None);
        assert_eq!(
            limit.grow(usize::MAX, 0),
            None,
            "a lower ceiling never lowers it"
        );
    }
}
