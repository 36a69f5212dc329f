//! Stream multiplexer over one TLS connection (the tunnel).
//!
//! The edge opens streams (one per public TCP connection), the hub accepts them; both sides
//! exchange frames of [`crate::transport::frame`] over any `AsyncRead + AsyncWrite` (the TLS
//! stream after the handshake). [`Mux::start`] spawns two tasks:
//!
//! - the **reader** decodes frames and dispatches them: stream data into per-stream buffers,
//!   new streams, control frames and datagrams into bounded channels ([`MuxIncoming`]). It never
//!   waits for the application or the writer, so neither side can deadlock the other.
//! - the **writer** owns the write half and drains three queues by priority (control, data,
//!   sustained; see `scheduler.rs`), coalescing ready frames into one write + flush per batch.
//!
//! # One state per tunnel
//!
//! Everything the tasks, the handles and the streams share is one sans-IO `MuxState`
//! (`state.rs`, `transmit.rs`, `budget.rs`) behind one mutex per tunnel, as in quinn-proto and
//! h2: every stream's buffers, windows, credit, queued-frame count and wakers, and the writer's
//! queues with their bounds. The reader calls `on_frame(frame, now)`, the writer
//! `poll_transmit(now, &mut batch)` and encodes and writes outside the lock, each
//! [`MuxStream`] poll takes the lock once (a write twice: its bytes are copied between).
//! Nothing awaits under the lock; the wakers it collects are woken, and the writer (asleep on a
//! `Notify` while the queues are empty) is notified, after it is released. So the ordering
//! rules below are decided in one place, and the tests step the state without a runtime
//! (`state/tests.rs`).
//!
//! # Queues and their bounds
//!
//! - **Control queue** (OPEN, WINDOW_UPDATE(_BACK), CONFIG, PING, PONG): always first.
//!   Bounded at [`CONTROL_QUEUE_FRAMES`]; when it is full the peer does not read (the writer is
//!   stuck on a full socket) and the tunnel is closed with [`MuxCloseReason::PeerNotReading`]
//!   rather than a control frame lost. An honest peer never gets near it: one OPEN per stream;
//!   a stream's queued window updates never grant more than its target window in total and each
//!   is at least `min(target/2, 256 KiB)`, so a handful per stream at most; CONFIG/PING come at
//!   the session's slow pace; automatic PONGs are capped ([`MAX_PENDING_PONGS`]). But a peer
//!   that does not read and still sends DATA up to the grants it can predict makes the hub
//!   queue one WINDOW_UPDATE per grant for ever: that is what the bound stops.
//! - **Data queue** (DATA(_BACK), CLOSE(_BACK) of normal streams, UDP frames, reader-generated
//!   CLOSEs). DATA frames each need one of [`DATA_QUEUE_FRAMES`] slots (`poll_write` waits for
//!   a slot; freed slots go to the waiting streams first come, first served, as a fair
//!   semaphore would hand them out); UDP frames take their size from a byte budget of
//!   [`UDP_QUEUE_BYTES`] (datagrams fail with [`MuxError::Full`]). CLOSE frames take no slot so
//!   that shutting down or dropping a stream never waits and never loses its CLOSE: they are at
//!   most one per stream from the application, plus replies from the reader (refusals, answers
//!   to data for unknown streams) capped at [`MAX_PENDING_ANSWERS`]. Streams come and go, so
//!   CLOSEs of streams already gone could pile up behind a peer that does not read (it opens
//!   streams the hub refuses, and forges PONGs to stay alive): at [`MAX_PENDING_CLOSES`] the
//!   tunnel is closed with [`MuxCloseReason::PeerNotReading`], as for the control queue.
//! - **Sustained queue** (DATA(_BACK), CLOSE(_BACK) of sustained streams, see `qos.rs`): served
//!   when nothing else waits, and at [`QosSettings::sustained_drain_bytes_per_sec`] at least.
//!   Its DATA frames need one of [`SUSTAINED_QUEUE_FRAMES`] slots of their own, so elephants
//!   can never take the slots interactive streams need.
//!
//! # Per-stream order
//!
//! A stream's frames are all in one queue at any time, so its CLOSE never overtakes its DATA:
//! each stream counts its frames waiting in the writer's queues, and its class (data or
//! sustained) changes only in `poll_write`, at a frame boundary, when that count is zero. If it
//! is not, `poll_write` waits until the writer has taken the last of them (the writer wakes it)
//! and then switches. A sustained stream that is dropped or reset while its frames still wait
//! stays known (`MuxState::draining`) until they are out, so the reader's answer CLOSE for it
//! queues behind them as well.
//!
//! # Flow control
//!
//! Each side may send [`INITIAL_STREAM_WINDOW`] bytes per stream, then only what the receiver
//! grants with WINDOW_UPDATE(_BACK) as its application reads (see `window`). A receiver that
//! gets more than it granted closes the tunnel (protocol error). A stream that has been fast for
//! long ([`QosSettings`], `qos.rs`) is *sustained*: its receiver locks its window to the minimum
//! and its sender moves its DATA to the sustained queue. On the hub the window budget is also a
//! hard cap on the bytes all streams hold, enforced by resetting streams over their share
//! (`budget.rs`): the initial windows alone would let an edge exceed it.
//!
//! # Stream lifecycle
//!
//! CLOSE(_BACK) is a FIN: reads on the other side end after the buffered data, the other
//! direction stays open. A second CLOSE after a FIN means the peer dropped the stream: it is
//! aborted (reads fail with `ConnectionReset`, writes with `BrokenPipe`). Dropping a
//! [`MuxStream`] sends CLOSE (unless already sent) and forgets it; DATA arriving later for an
//! unknown stream is dropped and answered with one CLOSE, which aborts the peer's end.

mod budget;
mod qos;
mod reader;
mod scheduler;
mod state;
mod stream;
mod transmit;
mod window;
mod writer;

#[cfg(test)]
mod tests;

use std::fmt;
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use thiserror::Error;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{mpsc, watch, Notify};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use self::state::{Effects, MuxState};
use crate::transport::control::ControlMessage;
use crate::transport::datagram::{UdpMessage, UdpSendError};
use crate::transport::frame::{Frame, FrameError, FrameType};

pub(crate) use self::qos::QosSettings;
pub(crate) use self::stream::MuxStream;
pub(crate) use self::window::{WindowSettings, INITIAL_STREAM_WINDOW};
pub(crate) use crate::transport::side::Side;

/// DATA frames of normal streams that may wait in the data queue (each at most 64 KiB).
pub(crate) const DATA_QUEUE_FRAMES: usize = 128;

/// DATA frames of sustained streams that may wait in the sustained queue (each at most 64 KiB).
/// Each sustained stream has at most its (minimum) window in flight anyway.
pub(crate) const SUSTAINED_QUEUE_FRAMES: usize = 64;

/// DATA frames one stream may have waiting in the writer's queues. Without this cap a young
/// elephant (not yet sustained) fills the whole FIFO data queue with 64 KiB frames, and a
/// mouse's request waits behind up to 8 MiB of them; with it a mouse waits behind at most
/// this many frames per busy stream. Four frames (256 KiB) are still a full writer batch, so
/// a single stream keeps the writer busy while it refills.
pub(crate) const MAX_QUEUED_FRAMES_PER_STREAM: u32 = 4;

/// Bytes of UDP frames that may wait in the data queue. UDP has its own budget, counted in
/// bytes, so a burst of small datagrams from many clients is not refused after 128 frames
/// while memory stays bounded; beyond it datagrams are dropped (and counted by the caller).
pub(crate) const UDP_QUEUE_BYTES: usize = 4 << 20;

/// Budget a UDP frame takes at least (header and bookkeeping of tiny datagrams).
const UDP_FRAME_MIN_COST: usize = 64;

/// Frames that may wait in the control queue; one more closes the tunnel
/// ([`MuxCloseReason::PeerNotReading`]). About 100 bytes each queued, so under 7 MiB; room for
/// four window updates each of 16,384 streams whose peer is slow, not absent.
pub(crate) const CONTROL_QUEUE_FRAMES: usize = 65_536;

/// Stream CLOSE(_BACK) frames (FIN or abort) that may wait in the writer's queues; one more
/// closes the tunnel ([`MuxCloseReason::PeerNotReading`]). Each holds its stream's state until
/// written (about 0.5 KiB), so under 32 MiB; a reading peer drains them at socket speed.
pub(crate) const MAX_PENDING_CLOSES: usize = 65_536;

/// Capacity of [`MuxIncoming::streams`]; further streams are refused while it is full.
pub(crate) const INCOMING_STREAMS: usize = 512;

/// Capacity of [`MuxIncoming::control`].
pub(crate) const INCOMING_CONTROL: usize = 64;

/// Capacity of [`MuxIncoming::datagrams`]; further datagrams are dropped and counted.
pub(crate) const INCOMING_DATAGRAMS: usize = 1024;

/// Automatic PONGs that may wait for the writer; further PINGs are not answered.
pub(crate) const MAX_PENDING_PONGS: usize = 16;

/// Reader-generated CLOSEs (refusals, answers to unknown streams) that may wait for the writer.
pub(crate) const MAX_PENDING_ANSWERS: usize = 1024;

/// Unknown stream ids remembered as already answered (then the memory starts over).
const MAX_ANSWERED: usize = 4096;

/// Configuration of one mux.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct MuxConfig {
    pub side: Side,
    pub window: WindowSettings,
    /// Sustained-stream classification and the sustained queue's guaranteed rate.
    pub qos: QosSettings,
}

#[cfg(test)]
impl MuxConfig {
    /// `side` with the default window and QoS settings.
    pub(crate) fn new(side: Side) -> Self {
        Self {
            side,
            window: WindowSettings::default(),
            qos: QosSettings::default(),
        }
    }
}

/// The current time, from tokio's clock (so that tests with paused time control it; outside
/// tests it is `Instant::now()`).
pub(crate) fn now() -> Instant {
    tokio::time::Instant::now().into_std()
}

/// Why a mux operation failed.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum MuxError {
    #[error("the tunnel is closed")]
    Closed,
    #[error("the tunnel's data queue is full")]
    Full,
    #[error("only the edge opens streams")]
    NotEdge,
    #[error("no free stream id")]
    NoStreamId,
    #[error("the {side} cannot send {frame_type} this way")]
    Unsendable { frame_type: FrameType, side: Side },
    #[error("invalid frame: {0}")]
    Frame(#[from] FrameError),
}

/// The peer broke the protocol.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ProtocolError {
    #[error("{0}")]
    Frame(#[from] FrameError),
    #[error("the {receiver} received {frame_type}, which only the {receiver} sends")]
    WrongDirection {
        frame_type: FrameType,
        receiver: Side,
    },
    #[error(
        "stream {stream_id}: DATA of {len} bytes exceeds the remaining credit of {credit} bytes"
    )]
    CreditExceeded {
        stream_id: u32,
        len: usize,
        credit: u64,
    },
    #[error("stream {stream_id}: DATA after CLOSE")]
    DataAfterClose { stream_id: u32 },
    #[error("stream {stream_id}: OPEN for a stream that is already open")]
    DuplicateOpen { stream_id: u32 },
}

/// Why the tunnel ended.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum MuxCloseReason {
    #[error("the peer closed the tunnel")]
    PeerClosed,
    #[error("tunnel I/O error: {message}")]
    Io {
        kind: io::ErrorKind,
        message: String,
    },
    #[error("protocol error: {0}")]
    Protocol(#[from] ProtocolError),
    #[error("the tunnel was closed locally")]
    Closed,
    #[error("the tunnel was cancelled")]
    Cancelled,
    #[error("the peer does not read: the queue of frames for it is full")]
    PeerNotReading,
}

impl MuxCloseReason {
    fn io(error: &io::Error) -> Self {
        Self::Io {
            kind: error.kind(),
            message: error.to_string(),
        }
    }
}

/// Counters of one mux.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MuxStats {
    /// WINDOW_UPDATE(_BACK) frames queued.
    pub window_updates_sent: u64,
    /// Credit granted beyond the initial windows, summed over all streams.
    pub credit_granted: u64,
    /// Incoming datagrams dropped because [`MuxIncoming::datagrams`] was full.
    pub udp_dropped: u64,
    /// Incoming streams refused because [`MuxIncoming::streams`] was full.
    pub streams_refused: u64,
    /// Times a stream's outgoing DATA moved to the sustained queue.
    pub streams_sustained: u64,
    /// Hub: streams reset because the tunnel held more than its window budget (`budget.rs`).
    pub budget_resets: u64,
    /// Received bytes of all streams not yet read by the application.
    pub held_bytes: u64,
}

/// The tunnel's state and what its tasks, handles and streams need besides it.
pub(crate) struct Shared {
    side: Side,
    /// Everything about the streams and the writer's queues (see `state.rs`).
    state: Mutex<MuxState>,
    /// Wakes the writer when frames are queued while it waits.
    writer: Notify,
    /// Cancelled when the tunnel ends (child of the caller's token).
    stop: CancellationToken,
    reason: watch::Sender<Option<MuxCloseReason>>,
    /// Incoming datagrams dropped (counted by the reader, which delivers them without the lock).
    udp_dropped: AtomicU64,
    /// Bytes read from the peer: any growth shows it is there (`MuxHandle::received_bytes`).
    received: AtomicU64,
    /// Rate limit of the warnings the peer can provoke (a flood of control frames).
    warnings: Arc<crate::log_limit::SharedLogLimiter>,
}

pub(crate) use crate::sync::lock;

impl Shared {
    /// Runs `f` on the state under the lock, then acts on its effects (wakes tasks, notifies
    /// the writer, publishes the end of the tunnel) after releasing it.
    fn with<R>(&self, f: impl FnOnce(&mut MuxState) -> R) -> R {
        let (result, effects) = {
            let mut state = lock(&self.state);
            let result = f(&mut state);
            (result, state.take_effects())
        };
        self.apply(effects);
        result
    }

    fn apply(&self, effects: Effects) {
        for waker in effects.wakers {
            waker.wake();
        }
        if effects.notify_writer {
            self.writer.notify_one();
        }
        if let Some(reason) = effects.closed {
            self.publish_close(reason);
        }
    }

    fn is_closed(&self) -> bool {
        self.reason.borrow().is_some()
    }

    /// Ends the tunnel (first reason wins): fails every stream, stops both tasks and resolves
    /// [`MuxHandle::closed`].
    fn shutdown(&self, reason: MuxCloseReason) {
        self.with(|state| state.close(reason));
        self.stop.cancel();
    }

    /// The state just closed for `reason`: tells the waiters and stops both tasks.
    fn publish_close(&self, reason: MuxCloseReason) {
        self.reason.send_if_modified(|current| {
            if current.is_some() {
                return false;
            }
            *current = Some(reason.clone());
            true
        });
        match &reason {
            MuxCloseReason::Protocol(error) => {
                tracing::warn!(side = %self.side, %error, "tunnel protocol error; closing the tunnel");
            }
            MuxCloseReason::PeerNotReading => {
                tracing::warn!(side = %self.side, %reason, "closing the tunnel");
            }
            reason => tracing::debug!(side = %self.side, %reason, "tunnel closed"),
        }
        self.stop.cancel();
    }
}

/// Namespace of [`Mux::start`].
#[derive(Debug)]
pub(crate) struct Mux;

impl Mux {
    /// Spawns the reader and writer tasks over `io` on `tasks` (the role's tracker, so that a
    /// stop waits for them; must be called within a tokio runtime).
    /// `leftover` holds bytes already read from `io` after the handshake line; they are decoded
    /// first. The tunnel ends on [`MuxHandle::close`], when `cancel` is cancelled, on peer EOF,
    /// on an I/O error or on a protocol error.
    pub(crate) fn start<T>(
        io: T,
        leftover: BytesMut,
        config: MuxConfig,
        cancel: CancellationToken,
        tasks: &TaskTracker,
    ) -> (MuxHandle, MuxIncoming)
    where
        T: AsyncRead + AsyncWrite + Send + 'static,
    {
        let (read_half, write_half) = tokio::io::split(io);
        let (streams_tx, streams_rx) = mpsc::channel(INCOMING_STREAMS);
        let (incoming_control_tx, incoming_control_rx) = mpsc::channel(INCOMING_CONTROL);
        let (datagrams_tx, datagrams_rx) = mpsc::channel(INCOMING_DATAGRAMS);
        let warnings = Arc::new(crate::log_limit::SharedLogLimiter::default());
        let state = MuxState::new(
            config.side,
            config.window,
            config.qos,
            warnings.clone(),
            now(),
        );
        let shared = Arc::new(Shared {
            side: config.side,
            state: Mutex::new(state),
            writer: Notify::new(),
            stop: cancel.child_token(),
            reason: watch::Sender::new(None),
            udp_dropped: AtomicU64::new(0),
            received: AtomicU64::new(0),
            warnings,
        });
        let incoming = reader::Incoming {
            streams: streams_tx,
            control: incoming_control_tx,
            datagrams: datagrams_tx,
        };
        tasks.spawn(reader::run(read_half, leftover, shared.clone(), incoming));
        tasks.spawn(writer::run(write_half, shared.clone()));
        (
            MuxHandle { shared },
            MuxIncoming {
                streams: streams_rx,
                control: incoming_control_rx,
                datagrams: datagrams_rx,
            },
        )
    }
}

/// Handle of a running tunnel (cheap to clone). Dropping handles does not close the tunnel.
#[derive(Clone)]
pub struct MuxHandle {
    shared: Arc<Shared>,
}

impl fmt::Debug for MuxHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MuxHandle")
            .field("side", &self.shared.side)
            .field("active_streams", &self.active_streams())
            .field("closed", &self.is_closed())
            .finish()
    }
}

impl MuxHandle {
    /// Edge only: allocates a stream id, queues OPEN with `open_payload` (the client's PROXY v1
    /// line) and returns the stream. Data written to it goes out after the OPEN.
    pub fn open_stream(&self, open_payload: Bytes) -> Result<MuxStream, MuxError> {
        let shared = &self.shared;
        if shared.side != Side::Edge {
            return Err(MuxError::NotEdge);
        }
        FrameType::Open.check_payload_len(open_payload.len())?;
        let now = now();
        let (key, id) = shared.with(|state| state.open_stream(open_payload, now))?;
        Ok(MuxStream::new(key, id, shared.clone()))
    }

    /// Queues a control frame (CONFIG, PING, PONG on stream 0) ahead of all data; never waits.
    /// Queues a UDP message as its UDP_* frame, as [`MuxHandle::try_send_datagram`] does.
    pub fn send_udp(&self, message: UdpMessage) -> Result<(), UdpSendError> {
        let frame = message.into_frame(self.shared.side == Side::Hub);
        self.try_send_datagram(frame).map_err(|_| {
            if self.is_closed() {
                UdpSendError::Closed
            } else {
                UdpSendError::Full
            }
        })
    }

    pub fn send_control(&self, frame: Frame) -> Result<(), MuxError> {
        if !frame.frame_type.is_control() {
            return Err(MuxError::Unsendable {
                frame_type: frame.frame_type,
                side: self.shared.side,
            });
        }
        frame.validate()?;
        if self.is_closed() {
            return Err(MuxError::Closed);
        }
        self.shared.with(|state| state.queue_control_frame(frame))
    }

    /// Queues a UDP frame (UDP_OPEN, UDP_DATA, UDP_DATA_BACK, UDP_CLOSE, as this side sends
    /// them) on the data queue (never the sustained one); fails with [`MuxError::Full`] instead
    /// of waiting.
    pub fn try_send_datagram(&self, frame: Frame) -> Result<(), MuxError> {
        let frame_type = frame.frame_type;
        if !frame_type.is_udp() || !self.shared.side.sends(frame_type) {
            return Err(MuxError::Unsendable {
                frame_type,
                side: self.shared.side,
            });
        }
        frame.validate()?;
        if self.is_closed() {
            return Err(MuxError::Closed);
        }
        self.shared.with(|state| state.queue_udp(frame))
    }

    /// Bytes read from the peer so far, counted by the reader as they arrive (not when the
    /// application takes them), so a busy application does not hide a live peer.
    pub fn received_bytes(&self) -> u64 {
        self.shared.received.load(Ordering::Relaxed)
    }

    /// Streams currently open (opened or accepted, not yet dropped or aborted).
    pub fn active_streams(&self) -> usize {
        self.shared.with(|state| state.ids.len())
    }

    /// The tunnel path's minimum round-trip time, as measured outside the mux (the kernel's
    /// TCP_INFO of the tunnel socket, see `transport::path_rtt`): receive windows auto-tune to it.
    pub fn set_path_rtt(&self, rtt: Duration) {
        // Whole microseconds, at least one (zero would mean unknown).
        let micros = u64::try_from(rtt.as_micros()).unwrap_or(u64::MAX).max(1);
        let rtt = Duration::from_micros(micros);
        self.shared.with(|state| state.path_rtt = Some(rtt));
    }

    /// Incoming datagrams dropped because [`MuxIncoming::datagrams`] was full.
    pub fn udp_dropped(&self) -> u64 {
        self.shared.udp_dropped.load(Ordering::Relaxed)
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> MuxStats {
        MuxStats {
            udp_dropped: self.udp_dropped(),
            ..self.shared.with(|state| state.stats())
        }
    }

    /// Closes the tunnel: every stream fails, both tasks end.
    pub fn close(&self) {
        self.shared.shutdown(MuxCloseReason::Closed);
    }

    /// Resolves when the tunnel has ended, with the reason.
    pub async fn closed(&self) -> MuxCloseReason {
        let mut reason = self.shared.reason.subscribe();
        let result = match reason.wait_for(Option::is_some).await {
            Ok(reason) => reason.clone().unwrap_or(MuxCloseReason::Closed),
            // The sender lives in `shared`, which we hold: cannot happen.
            Err(_) => MuxCloseReason::Closed,
        };
        result
    }

    /// Whether the tunnel has ended.
    pub fn is_closed(&self) -> bool {
        self.shared.is_closed()
    }
}

/// What the peer sends that the application must handle.
#[derive(Debug)]
pub(crate) struct MuxIncoming {
    /// Hub: streams the edge opened, with the OPEN payload (PROXY v1 line). Bounded: while it is
    /// full, new streams are refused with CLOSE_BACK. Never yields on the edge.
    pub streams: mpsc::Receiver<(MuxStream, Bytes)>,
    /// Control frames (CONFIG, PING, PONG); dropped with a warning while full. The edge answers
    /// PING itself and also delivers it here.
    pub control: mpsc::Receiver<ControlMessage>,
    /// UDP_* frames as messages; dropped and counted ([`MuxHandle::udp_dropped`]) while full.
    pub datagrams: mpsc::Receiver<UdpMessage>,
}
