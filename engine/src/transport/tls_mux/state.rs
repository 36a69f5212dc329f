//! The whole state of one tunnel, sans IO: every stream's buffers, windows, queued-frame counts
//! and wakers, and the writer's queues (`transmit.rs`), in one [`MuxState`] behind one mutex
//! per tunnel (`Shared::state`), the shape of quinn-proto and h2.
//!
//! Nothing here awaits, reads a clock or touches a socket: the reader task calls
//! [`MuxState::on_frame`], the writer task [`MuxState::poll_transmit`], the application's
//! [`MuxStream`](super::MuxStream) the `poll_*` methods, each with the time from outside. So
//! every ordering decision is made under one lock, in one place, and the tests step the state
//! without a runtime (`state/tests.rs`). Wakers to wake, a writer to notify and a tunnel that
//! just closed are collected in [`Effects`]; the caller acts on them after releasing the lock.

use std::collections::{HashMap, HashSet, VecDeque};
use std::io;
use std::sync::Arc;
use std::task::{Poll, Waker};
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes};
use tokio::io::ReadBuf;

use super::qos::{QosSettings, SustainedDetector};
use super::scheduler::Queue;
use super::transmit::OutQueues;
use super::window::{RecvWindow, TargetInputs, WindowSettings};
use super::{
    MuxCloseReason, MuxError, MuxStats, ProtocolError, Side, MAX_ANSWERED,
    MAX_QUEUED_FRAMES_PER_STREAM,
};
use crate::log_limit::SharedLogLimiter;
use crate::transport::control::ControlMessage;
use crate::transport::datagram::UdpMessage;
use crate::transport::frame::{window_update_value, Frame, FrameType, MAX_DATA_PAYLOAD};

/// Identifies one stream for its whole life (ids are reused, keys never).
pub(crate) type StreamKey = u64;

/// Payloads are split off the read buffer without copying, but a payload keeps its whole read
/// allocation (about 64 KiB, the reader's read chunk) alive while it is buffered. Payloads
/// smaller than this are therefore copied out, so buffered data pins at most 4 times its own
/// size; bulk transfers (64 KiB frames) stay zero-copy.
const SMALL_PAYLOAD: usize = 16 * 1024;

/// `payload`, copied out of the read buffer if it is small (see [`SMALL_PAYLOAD`]).
pub(crate) fn detach(payload: Bytes) -> Bytes {
    if payload.len() < SMALL_PAYLOAD {
        Bytes::copy_from_slice(&payload)
    } else {
        payload
    }
}

/// Why a stream can no longer be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StreamEnd {
    /// The peer dropped the stream (a second CLOSE after its FIN).
    Reset,
    /// The whole tunnel ended.
    TunnelClosed,
}

impl StreamEnd {
    fn read_error(self) -> io::Error {
        match self {
            Self::Reset => io::Error::new(
                io::ErrorKind::ConnectionReset,
                "the peer dropped the tunneled stream",
            ),
            Self::TunnelClosed => tunnel_closed(),
        }
    }

    fn write_error(self) -> io::Error {
        match self {
            Self::Reset => io::Error::new(
                io::ErrorKind::BrokenPipe,
                "the peer dropped the tunneled stream",
            ),
            Self::TunnelClosed => tunnel_closed(),
        }
    }
}

pub(crate) fn tunnel_closed() -> io::Error {
    io::Error::new(io::ErrorKind::ConnectionAborted, "the tunnel is closed")
}

fn write_closed() -> io::Error {
    io::Error::new(
        io::ErrorKind::BrokenPipe,
        "the stream was shut down for writing",
    )
}

/// A stream's claim on a slot of its writer queue (see `transmit.rs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Slot {
    None,
    /// In the queue's line of waiters; the writer grants it a freed slot.
    Waiting(Queue),
    /// Granted while waiting, not yet used.
    Granted(Queue),
}

/// State of one stream.
#[derive(Debug)]
pub(crate) struct StreamState {
    pub(crate) id: u32,
    /// Received DATA not yet read by the application.
    recv: VecDeque<Bytes>,
    /// Receive-side flow control.
    pub(crate) window: RecvWindow,
    /// Bytes we may still send.
    pub(crate) credit: u64,
    /// The peer's CLOSE (FIN) arrived: reads end once `recv` is drained.
    peer_fin: bool,
    /// Our CLOSE is queued (shutdown or drop): no more writes.
    pub(crate) local_fin: bool,
    /// The writer queue of this stream's DATA and CLOSE: [`Queue::Data`] or
    /// [`Queue::Sustained`]. Changes only while none of its frames are queued.
    pub(crate) queue: Queue,
    /// Classification from the bytes sent.
    send_qos: SustainedDetector,
    /// Set when the stream can no longer be used at all.
    pub(crate) end: Option<StreamEnd>,
    read_waker: Option<Waker>,
    pub(crate) write_waker: Option<Waker>,
    /// Frames of this stream in the writer's queues.
    pub(crate) queued: u32,
    /// `poll_write` waits for `queued` to drop, below [`MAX_QUEUED_FRAMES_PER_STREAM`] or to
    /// zero to switch queues (the writer wakes it).
    pub(crate) writer_waiting: bool,
    /// The application dropped its handle: the stream is forgotten once `queued` is zero.
    pub(crate) detached: bool,
    pub(crate) slot: Slot,
}

impl StreamState {
    fn new(id: u32, now: Instant) -> Self {
        Self {
            id,
            recv: VecDeque::new(),
            window: RecvWindow::new(now),
            credit: u64::from(super::INITIAL_STREAM_WINDOW),
            peer_fin: false,
            local_fin: false,
            queue: Queue::Data,
            send_qos: SustainedDetector::new(now),
            end: None,
            read_waker: None,
            write_waker: None,
            queued: 0,
            writer_waiting: false,
            detached: false,
            slot: Slot::None,
        }
    }

    /// Throws away the received data nobody will read; returns how many bytes that was.
    fn drop_recv(&mut self) -> u64 {
        self.recv = VecDeque::new();
        self.window.discard()
    }

    /// Bytes received and not yet read, as buffered (kept in step with the window).
    #[cfg(test)]
    pub(crate) fn recv_bytes(&self) -> u64 {
        self.recv.iter().map(|b| b.len() as u64).sum()
    }
}

/// Stores `waker` unless an equivalent one is already there.
fn register(slot: &mut Option<Waker>, waker: &Waker) {
    match slot {
        Some(old) if old.will_wake(waker) => {}
        _ => *slot = Some(waker.clone()),
    }
}

/// What the reader must hand to the application after [`MuxState::on_frame`] (outside the
/// lock: the application's channels are bounded and only tried).
#[derive(Debug)]
pub(crate) enum Delivery {
    Nothing,
    /// Hub: a stream the edge opened.
    Stream {
        key: StreamKey,
        id: u32,
        payload: Bytes,
    },
    Control(ControlMessage),
    Datagram(UdpMessage),
}

/// What the caller does once it has released the lock.
#[derive(Debug, Default)]
pub(crate) struct Effects {
    pub(crate) wakers: Vec<Waker>,
    /// The writer waits for work and there is some now.
    pub(crate) notify_writer: bool,
    /// The tunnel just ended, for this reason (set once).
    pub(crate) closed: Option<MuxCloseReason>,
}

impl Effects {
    pub(crate) fn wake(&mut self, waker: Option<Waker>) {
        if let Some(waker) = waker {
            self.wakers.push(waker);
        }
    }
}

/// A DATA frame `poll_write` may send: `len` bytes of the caller's buffer, holding a slot of
/// `queue`. Hand it to [`MuxState::push_data`] with the copied bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct WriteGrant {
    pub(crate) len: usize,
    pub(crate) queue: Queue,
}

/// Everything about one tunnel that the reader, the writer and the streams share.
#[derive(Debug)]
pub(crate) struct MuxState {
    pub(crate) side: Side,
    pub(crate) window: WindowSettings,
    pub(crate) qos: QosSettings,
    /// Every stream the application holds or whose frames still wait for the writer.
    pub(crate) streams: HashMap<StreamKey, StreamState>,
    /// The open streams by id (opened or accepted, not yet dropped or reset).
    pub(crate) ids: HashMap<u32, StreamKey>,
    next_key: StreamKey,
    /// Edge: next id to try.
    pub(crate) next_id: u32,
    /// Unknown ids whose DATA was already answered with a CLOSE.
    pub(crate) answered: HashSet<u32>,
    /// Streams dropped or reset whose frames still wait in the sustained queue: a CLOSE
    /// answering their peer's DATA must queue behind them (removed with their last frame).
    pub(crate) draining: HashMap<u32, StreamKey>,
    /// Set once the tunnel ended: no stream is added, no frame queued any more.
    pub(crate) closed: bool,
    /// Minimum round-trip time of the tunnel's path, for window auto-tuning; set from outside
    /// ([`super::MuxHandle::set_path_rtt`]), the mux sees no socket.
    pub(crate) path_rtt: Option<Duration>,
    /// Received bytes of all streams not yet read by the application (see `budget.rs`).
    pub(crate) held: u64,
    pub(crate) stats: MuxStats,
    pub(crate) out: OutQueues,
    pub(crate) effects: Effects,
    /// Rate limit of the warnings the peer can provoke.
    pub(crate) warnings: Arc<SharedLogLimiter>,
}

impl MuxState {
    pub(crate) fn new(
        side: Side,
        window: WindowSettings,
        qos: QosSettings,
        warnings: Arc<SharedLogLimiter>,
        now: Instant,
    ) -> Self {
        Self {
            side,
            window,
            qos,
            streams: HashMap::new(),
            ids: HashMap::new(),
            next_key: 0,
            next_id: 1,
            answered: HashSet::new(),
            draining: HashMap::new(),
            closed: false,
            path_rtt: None,
            held: 0,
            stats: MuxStats::default(),
            out: OutQueues::new(qos.sustained_drain_bytes_per_sec, now),
            effects: Effects::default(),
            warnings,
        }
    }

    /// The effects collected so far, to act on after releasing the lock.
    pub(crate) fn take_effects(&mut self) -> Effects {
        std::mem::take(&mut self.effects)
    }

    pub(crate) fn sends_back(&self) -> bool {
        self.side == Side::Hub
    }

    pub(crate) fn stats(&self) -> MuxStats {
        MuxStats {
            held_bytes: self.held,
            ..self.stats
        }
    }

    fn new_stream(&mut self, id: u32, now: Instant) -> StreamKey {
        let key = self.next_key;
        self.next_key += 1;
        self.streams.insert(key, StreamState::new(id, now));
        self.ids.insert(id, key);
        self.answered.remove(&id);
        key
    }

    /// Forgets `id` if it still names the stream `key` (dropped or reset). If frames of the
    /// stream still wait in the sustained queue, it stays known as `draining` until the writer
    /// has taken them, so that a CLOSE answering the peer's DATA queues behind them.
    pub(crate) fn unlist(&mut self, id: u32, key: StreamKey) {
        if self.ids.get(&id) != Some(&key) {
            return;
        }
        self.ids.remove(&id);
        let Some(stream) = self.streams.get(&key) else {
            return;
        };
        if stream.queued > 0 && stream.queue == Queue::Sustained && !self.closed {
            self.draining.insert(id, key);
        }
    }

    /// Ends the stream `key`: drops its buffered data and wakes its reader and writer.
    pub(crate) fn end_stream(&mut self, key: StreamKey, end: StreamEnd) {
        let Some(stream) = self.streams.get_mut(&key) else {
            return;
        };
        if stream.end.is_none() {
            stream.end = Some(end);
        }
        self.held = self.held.saturating_sub(stream.drop_recv());
        self.effects.wake(stream.read_waker.take());
        self.effects.wake(stream.write_waker.take());
    }

    /// Ends the tunnel (the first reason wins; `false` if it had ended already): fails every
    /// stream and drops every queued frame.
    pub(crate) fn close(&mut self, reason: MuxCloseReason) -> bool {
        if self.closed {
            return false;
        }
        self.closed = true;
        let open: Vec<StreamKey> = self.ids.drain().map(|(_, key)| key).collect();
        for key in open {
            self.end_stream(key, StreamEnd::TunnelClosed);
        }
        self.answered = HashSet::new();
        self.draining = HashMap::new();
        self.drop_queued();
        self.effects.closed = Some(reason);
        true
    }

    // ----- the reader -----

    /// Handles one frame the peer sent (its payload already detached from the read buffer,
    /// except DATA's); an error closes the tunnel.
    pub(crate) fn on_frame(
        &mut self,
        frame: Frame,
        now: Instant,
    ) -> Result<Delivery, ProtocolError> {
        let frame_type = frame.frame_type;
        if frame_type.is_control() {
            return Ok(self.on_control(frame));
        }
        if !self.side.peer().sends(frame_type) {
            return Err(ProtocolError::WrongDirection {
                frame_type,
                receiver: self.side,
            });
        }
        match frame_type {
            FrameType::Open => self.on_open(frame, now),
            FrameType::Data | FrameType::DataBack => {
                self.on_data(frame)?;
                Ok(Delivery::Nothing)
            }
            FrameType::Close | FrameType::CloseBack => {
                self.on_close(frame.stream_id, frame.is_abort());
                Ok(Delivery::Nothing)
            }
            FrameType::WindowUpdate | FrameType::WindowUpdateBack => {
                let credit = window_update_value(&frame)?;
                self.on_window_update(frame.stream_id, credit);
                Ok(Delivery::Nothing)
            }
            FrameType::UdpOpen
            | FrameType::UdpData
            | FrameType::UdpDataBack
            | FrameType::UdpClose => {
                Ok(UdpMessage::from_frame(frame).map_or(Delivery::Nothing, Delivery::Datagram))
            }
            FrameType::Config | FrameType::Ping | FrameType::Pong => Ok(self.on_control(frame)),
        }
    }

    /// CONFIG, PING, PONG. The edge answers PING itself (capped, so a peer flooding PINGs
    /// while not reading cannot grow our queue); everything is also handed to the session.
    /// Control frames sent the "wrong" way are delivered too and left to the session to judge.
    fn on_control(&mut self, frame: Frame) -> Delivery {
        if frame.frame_type == FrameType::Ping && self.side == Side::Edge {
            self.queue_pong(Frame::pong_for(&frame));
        }
        Delivery::Control(ControlMessage {
            frame_type: frame.frame_type,
            payload: frame.payload,
        })
    }

    fn on_open(&mut self, frame: Frame, now: Instant) -> Result<Delivery, ProtocolError> {
        let id = frame.stream_id;
        if self.closed {
            return Ok(Delivery::Nothing);
        }
        if self.ids.contains_key(&id) {
            return Err(ProtocolError::DuplicateOpen { stream_id: id });
        }
        let key = self.new_stream(id, now);
        Ok(Delivery::Stream {
            key,
            id,
            payload: frame.payload,
        })
    }

    /// Hub: the application's accept queue is full: the stream is forgotten (the caller drops
    /// its handle) and refused with a CLOSE.
    pub(crate) fn refuse(&mut self, key: StreamKey) {
        let Some(stream) = self.streams.get_mut(&key) else {
            return;
        };
        stream.local_fin = true;
        let id = stream.id;
        self.stats.streams_refused += 1;
        tracing::debug!(stream = id, "refusing a stream: the accept queue is full");
        self.queue_answer_close(id);
    }

    fn on_data(&mut self, frame: Frame) -> Result<(), ProtocolError> {
        let id = frame.stream_id;
        let Some(&key) = self.ids.get(&id) else {
            self.answer_unknown_data(id);
            return Ok(());
        };
        let under_pressure = self.under_pressure();
        let Some(stream) = self.streams.get_mut(&key) else {
            return Ok(());
        };
        if stream.end.is_some() {
            return Ok(());
        }
        if stream.peer_fin {
            return Err(ProtocolError::DataAfterClose { stream_id: id });
        }
        let len = frame.payload.len();
        stream
            .window
            .on_data(len)
            .map_err(|e| ProtocolError::CreditExceeded {
                stream_id: id,
                len: e.len,
                credit: e.credit,
            })?;
        if len == 0 {
            return Ok(());
        }
        let payload = if under_pressure {
            Bytes::copy_from_slice(&frame.payload)
        } else {
            detach(frame.payload)
        };
        stream.recv.push_back(payload);
        self.held += len as u64;
        self.effects.wake(stream.read_waker.take());
        self.check_budget();
        Ok(())
    }

    /// CLOSE: the peer's half closed (reads end after the buffer); a second one, or one that
    /// says abort, ends the stream with a reset (the reader gets an error, not an end of file).
    fn on_close(&mut self, id: u32, aborted: bool) {
        let Some(&key) = self.ids.get(&id) else {
            return;
        };
        let Some(stream) = self.streams.get_mut(&key) else {
            return;
        };
        if stream.peer_fin || aborted {
            self.end_stream(key, StreamEnd::Reset);
            self.unlist(id, key);
        } else {
            stream.peer_fin = true;
            self.effects.wake(stream.read_waker.take());
        }
    }

    fn on_window_update(&mut self, id: u32, credit: u32) {
        let Some(stream) = self.ids.get(&id).and_then(|key| self.streams.get_mut(key)) else {
            return;
        };
        stream.credit = stream.credit.saturating_add(u64::from(credit));
        self.effects.wake(stream.write_waker.take());
    }

    /// DATA for a stream we do not know (typically one we dropped): answer with one CLOSE so
    /// the peer aborts its end.
    fn answer_unknown_data(&mut self, id: u32) {
        if self.closed || !self.answered.insert(id) {
            return;
        }
        if self.answered.len() > MAX_ANSWERED {
            self.answered.clear();
            self.answered.insert(id);
        }
        match self.draining.get(&id) {
            // Our DATA and CLOSE of that stream still wait in the sustained queue: answer
            // behind them (at most once per dropped stream, thanks to `answered`).
            Some(&key) => {
                let close = Frame::close(id, self.sends_back());
                let _ = self.queue_stream_frame(key, Queue::Sustained, close, false);
            }
            None => self.queue_answer_close(id),
        }
    }

    // ----- the application -----

    /// Edge: allocates a stream id, queues OPEN with `open_payload` and returns the stream.
    /// OPEN is queued before the stream exists for the caller, so it precedes its DATA.
    pub(crate) fn open_stream(
        &mut self,
        open_payload: Bytes,
        now: Instant,
    ) -> Result<(StreamKey, u32), MuxError> {
        if self.closed {
            return Err(MuxError::Closed);
        }
        // Keeps the id search below finite (and is far beyond any real load).
        if self.ids.len() >= (u32::MAX / 2) as usize {
            return Err(MuxError::NoStreamId);
        }
        let id = loop {
            let id = self.next_id;
            self.next_id = id.checked_add(1).unwrap_or(1);
            if !self.ids.contains_key(&id) {
                break id;
            }
        };
        let key = self.new_stream(id, now);
        if self
            .queue_control_frame(Frame::open(id, open_payload))
            .is_err()
        {
            self.unlist(id, key);
            self.streams.remove(&key);
            return Err(MuxError::Closed);
        }
        Ok((key, id))
    }

    pub(crate) fn poll_read(
        &mut self,
        key: StreamKey,
        buf: &mut ReadBuf<'_>,
        waker: &Waker,
        now: Instant,
    ) -> Poll<io::Result<()>> {
        let Some(stream) = self.streams.get_mut(&key) else {
            return Poll::Ready(Err(tunnel_closed()));
        };
        if let Some(end) = stream.end {
            return Poll::Ready(Err(end.read_error()));
        }
        if buf.remaining() == 0 {
            return Poll::Ready(Ok(()));
        }
        if stream.recv.is_empty() {
            if stream.peer_fin {
                return Poll::Ready(Ok(()));
            }
            register(&mut stream.read_waker, waker);
            return Poll::Pending;
        }
        let mut read = 0;
        while buf.remaining() > 0 {
            let Some(chunk) = stream.recv.front_mut() else {
                break;
            };
            let n = chunk.len().min(buf.remaining());
            buf.put_slice(&chunk[..n]);
            chunk.advance(n);
            if chunk.is_empty() {
                stream.recv.pop_front();
            }
            read += n;
        }
        stream.window.on_consumed(read);
        self.held = self.held.saturating_sub(read as u64);
        // After the peer's FIN it sends nothing more: no credit to return.
        if !stream.peer_fin {
            let inputs = TargetInputs {
                settings: &self.window,
                qos: &self.qos,
                active_streams: self.ids.len(),
                path_rtt: self.path_rtt,
            };
            let target = stream.window.target(inputs, now);
            if let Some(grant) = stream.window.take_grant(target) {
                let id = stream.id;
                self.queue_window_update(id, grant);
            }
        }
        Poll::Ready(Ok(()))
    }

    /// How much of a `len`-byte write may go out now as one DATA frame. In order it waits for
    /// credit (without holding a queue slot), for the stream's queue to be settled (it
    /// switches between data and sustained only at a frame boundary, when none of its frames
    /// are queued), for its queued frames to be under [`MAX_QUEUED_FRAMES_PER_STREAM`] and for
    /// a slot of its queue. `Ok(None)`: nothing to write.
    pub(crate) fn poll_write(
        &mut self,
        key: StreamKey,
        len: usize,
        waker: &Waker,
        now: Instant,
    ) -> Poll<io::Result<Option<WriteGrant>>> {
        let Some(stream) = self.streams.get_mut(&key) else {
            return Poll::Ready(Err(tunnel_closed()));
        };
        if let Some(end) = stream.end {
            return Poll::Ready(Err(end.write_error()));
        }
        if stream.local_fin {
            return Poll::Ready(Err(write_closed()));
        }
        if len == 0 {
            return Poll::Ready(Ok(None));
        }
        if stream.credit == 0 {
            register(&mut stream.write_waker, waker);
            return Poll::Pending;
        }
        let queue = match stream.slot {
            Slot::Granted(queue) => queue,
            // The queue must not change while the stream waits for one of its slots.
            Slot::Waiting(_) => {
                register(&mut stream.write_waker, waker);
                return Poll::Pending;
            }
            Slot::None => {
                let wanted = if stream.send_qos.update(now, &self.qos) {
                    Queue::Sustained
                } else {
                    Queue::Data
                };
                // A switch waits for zero queued frames; no more than a few frames of one
                // stream in the queues anyway (mice behind elephants).
                let limit = if wanted == stream.queue {
                    MAX_QUEUED_FRAMES_PER_STREAM
                } else {
                    1
                };
                if stream.queued >= limit {
                    stream.writer_waiting = true;
                    register(&mut stream.write_waker, waker);
                    return Poll::Pending;
                }
                if wanted != stream.queue {
                    stream.queue = wanted;
                    if wanted == Queue::Sustained {
                        self.stats.streams_sustained += 1;
                        tracing::debug!(stream = stream.id, side = %self.side, "stream is sustained");
                    }
                }
                stream.writer_waiting = false;
                if !self.out.acquire_slot(wanted, key) {
                    stream.slot = Slot::Waiting(wanted);
                    register(&mut stream.write_waker, waker);
                    return Poll::Pending;
                }
                wanted
            }
        };
        stream.slot = Slot::None;
        let credit = usize::try_from(stream.credit).unwrap_or(usize::MAX);
        let n = len.min(credit).min(MAX_DATA_PAYLOAD);
        stream.credit -= n as u64;
        stream.send_qos.record(n);
        Poll::Ready(Ok(Some(WriteGrant { len: n, queue })))
    }

    /// Queues the DATA frame `grant` allowed, with the bytes the caller copied outside the lock.
    /// Fails (and gives the slot back) if the stream ended meanwhile.
    pub(crate) fn push_data(
        &mut self,
        key: StreamKey,
        grant: WriteGrant,
        payload: Bytes,
    ) -> io::Result<()> {
        let failed = match self.streams.get(&key) {
            None => Some(tunnel_closed()),
            Some(stream) => stream.end.map(StreamEnd::write_error),
        };
        if let Some(error) = failed {
            self.release_slot(grant.queue);
            return Err(error);
        }
        let id = self.streams.get(&key).map_or(0, |s| s.id);
        let frame = Frame::data(id, self.sends_back(), payload);
        self.queue_stream_frame(key, grant.queue, frame, true)
            .map_err(|_| tunnel_closed())
    }

    pub(crate) fn poll_flush(&self, key: StreamKey) -> io::Result<()> {
        match self.streams.get(&key).map(|s| s.end) {
            None => Err(tunnel_closed()),
            Some(Some(end)) => Err(end.write_error()),
            Some(None) => Ok(()),
        }
    }

    /// Queues CLOSE (FIN) in the stream's queue, behind its DATA: it must never overtake data
    /// already written.
    pub(crate) fn shutdown_stream(&mut self, key: StreamKey) -> io::Result<()> {
        let Some(stream) = self.streams.get_mut(&key) else {
            return Err(tunnel_closed());
        };
        if let Some(end) = stream.end {
            return Err(end.write_error());
        }
        if stream.local_fin {
            return Ok(());
        }
        stream.local_fin = true;
        let (id, queue) = (stream.id, stream.queue);
        let close = Frame::close(id, self.sends_back());
        self.queue_stream_frame(key, queue, close, false)
            .map_err(|_| tunnel_closed())
    }

    /// Queues an abort in the stream's own queue, behind the data already queued.
    pub(crate) fn abort_stream(&mut self, key: StreamKey) {
        let Some(stream) = self.streams.get_mut(&key) else {
            return;
        };
        if stream.end.is_some() {
            return;
        }
        stream.local_fin = true;
        let (id, queue) = (stream.id, stream.queue);
        let abort = Frame::abort(id, self.sends_back());
        let _ = self.queue_stream_frame(key, queue, abort, false);
    }

    /// The application dropped its handle: sends CLOSE (unless already sent, in the stream's
    /// queue like its DATA; it takes no slot, so this never waits or loses it) and forgets the
    /// stream, or keeps it until the writer has taken its last queued frame.
    pub(crate) fn drop_stream(&mut self, key: StreamKey) {
        let Some(stream) = self.streams.get_mut(&key) else {
            return;
        };
        let send_close = !stream.local_fin && stream.end.is_none();
        stream.local_fin = true;
        self.held = self.held.saturating_sub(stream.drop_recv());
        stream.read_waker = None;
        stream.write_waker = None;
        let (id, queue) = (stream.id, stream.queue);
        if let Slot::Granted(granted) = std::mem::replace(&mut stream.slot, Slot::None) {
            self.release_slot(granted);
        }
        if send_close {
            let close = Frame::close(id, self.sends_back());
            let _ = self.queue_stream_frame(key, queue, close, false);
        }
        self.unlist(id, key);
        let Some(stream) = self.streams.get_mut(&key) else {
            return;
        };
        if stream.queued == 0 {
            self.streams.remove(&key);
        } else {
            stream.detached = true;
        }
    }
}

#[cfg(test)]
mod tests;
