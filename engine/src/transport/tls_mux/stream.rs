//! One multiplexed stream: its shared state (touched by the reader task and the application)
//! and [`MuxStream`], the application's `AsyncRead + AsyncWrite` end.

use std::collections::VecDeque;
use std::fmt;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::Instant;

use bytes::{Buf, Bytes};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_util::sync::PollSemaphore;

use super::qos::SustainedDetector;
use super::scheduler::Queue;
use super::window::{RecvWindow, TargetInputs};
use super::{lock, now, Shared, MAX_QUEUED_FRAMES_PER_STREAM};
use crate::transport::frame::{Frame, MAX_DATA_PAYLOAD};

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

fn tunnel_closed() -> io::Error {
    io::Error::new(io::ErrorKind::ConnectionAborted, "the tunnel is closed")
}

fn write_closed() -> io::Error {
    io::Error::new(
        io::ErrorKind::BrokenPipe,
        "the stream was shut down for writing",
    )
}

/// State of one stream shared by the reader task and the [`MuxStream`].
#[derive(Debug)]
pub(crate) struct StreamState {
    /// Received DATA not yet read by the application.
    pub(crate) recv: VecDeque<Bytes>,
    /// Receive-side flow control.
    pub(crate) window: RecvWindow,
    /// Bytes we may still send.
    pub(crate) credit: u64,
    /// The peer's CLOSE (FIN) arrived: reads end once `recv` is drained.
    pub(crate) peer_fin: bool,
    /// Our CLOSE is queued (shutdown or drop): no more writes.
    pub(crate) local_fin: bool,
    /// The writer queue of this stream's DATA and CLOSE: [`Queue::Data`] or
    /// [`Queue::Sustained`]. Changes only while none of its frames are queued.
    pub(crate) queue: Queue,
    /// Classification from the bytes sent.
    pub(crate) send_qos: SustainedDetector,
    /// Set when the stream can no longer be used at all.
    pub(crate) end: Option<StreamEnd>,
    pub(crate) read_waker: Option<Waker>,
    pub(crate) write_waker: Option<Waker>,
    /// Bytes in `recv` of all the tunnel's streams (`Shared::held`), kept in step with `recv`.
    held: Arc<AtomicU64>,
}

impl StreamState {
    /// Ends the stream: drops buffered data and hands back the wakers to wake (call them after
    /// releasing the lock).
    pub(crate) fn end(&mut self, end: StreamEnd) -> [Option<Waker>; 2] {
        if self.end.is_none() {
            self.end = Some(end);
        }
        self.drop_recv();
        [self.read_waker.take(), self.write_waker.take()]
    }

    /// Buffers received DATA for the application; returns the tunnel's held bytes after it.
    pub(crate) fn hold(&mut self, payload: Bytes) -> u64 {
        let n = payload.len() as u64;
        self.recv.push_back(payload);
        self.held.fetch_add(n, Ordering::Relaxed) + n
    }

    /// Throws away the received data nobody will read.
    pub(crate) fn drop_recv(&mut self) {
        self.recv = VecDeque::new();
        self.held
            .fetch_sub(self.window.discard(), Ordering::Relaxed);
    }
}

/// A stream's entry in the mux table.
#[derive(Debug)]
pub(crate) struct StreamShared {
    pub(crate) id: u32,
    pub(crate) state: Mutex<StreamState>,
    /// Frames of this stream in the writer's queues (the writer decrements it).
    pub(crate) queued: AtomicU32,
    /// `poll_write` waits for `queued` to drop, below [`MAX_QUEUED_FRAMES_PER_STREAM`] or to
    /// zero to switch queues (the writer wakes it).
    pub(crate) writer_waiting: AtomicBool,
    /// Dropped while sustained: the writer removes it from `Table::draining` at `queued == 0`.
    pub(crate) draining: AtomicBool,
}

impl StreamShared {
    pub(crate) fn new(id: u32, initial_credit: u32, now: Instant, held: Arc<AtomicU64>) -> Self {
        Self {
            id,
            state: Mutex::new(StreamState {
                recv: VecDeque::new(),
                window: RecvWindow::new(now),
                credit: u64::from(initial_credit),
                peer_fin: false,
                local_fin: false,
                queue: Queue::Data,
                send_qos: SustainedDetector::new(now),
                end: None,
                read_waker: None,
                write_waker: None,
                held,
            }),
            queued: AtomicU32::new(0),
            writer_waiting: AtomicBool::new(false),
            draining: AtomicBool::new(false),
        }
    }
}

/// Stores `waker` unless an equivalent one is already there.
fn register(slot: &mut Option<Waker>, waker: &Waker) {
    match slot {
        Some(old) if old.will_wake(waker) => {}
        _ => *slot = Some(waker.clone()),
    }
}

pub(crate) fn wake_all(wakers: impl IntoIterator<Item = Option<Waker>>) {
    for waker in wakers.into_iter().flatten() {
        waker.wake();
    }
}

/// One tunneled TCP connection.
///
/// Writes become DATA frames of at most 64 KiB, limited by the peer's credit: with no credit
/// left, `poll_write` is pending until the peer's application reads. `poll_shutdown` sends
/// CLOSE after all written data (the read direction stays open); dropping the stream sends
/// CLOSE if that did not happen yet and forgets it, so data the peer still sends is answered
/// with a second CLOSE that makes the peer abort its end.
///
/// A stream that is sustained (see [`super::QosSettings`]) sends its DATA through the tunnel's
/// sustained queue, behind other streams' data, and grants the peer its minimum window only.
pub struct MuxStream {
    inner: Arc<StreamShared>,
    mux: Arc<Shared>,
    /// Slots of the bounded data queue; one is taken per DATA frame.
    slots: PollSemaphore,
    /// Slots of the sustained queue, created when the stream first becomes sustained.
    sustained_slots: Option<PollSemaphore>,
    /// A slot acquisition is in progress: the queue must not change until it completes (the
    /// other semaphore's pending acquisition would hold a slot).
    acquiring: bool,
}

impl fmt::Debug for MuxStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MuxStream")
            .field("id", &self.inner.id)
            .field("side", &self.mux.side)
            .finish_non_exhaustive()
    }
}

impl MuxStream {
    pub(crate) fn new(inner: Arc<StreamShared>, mux: Arc<Shared>) -> Self {
        let slots = PollSemaphore::new(mux.data_slots.clone());
        Self {
            inner,
            mux,
            slots,
            sustained_slots: None,
            acquiring: false,
        }
    }

    /// The stream id (unique on this tunnel while the stream is open).
    pub fn id(&self) -> u32 {
        self.inner.id
    }

    /// Forgets the stream without sending anything (the caller answers the peer itself).
    pub(crate) fn refuse(self) {
        lock(&self.inner.state).local_fin = true;
    }

    /// Aborts the stream: the peer's reads fail with a reset instead of ending normally, so it
    /// resets its side too. Sent in the stream's own queue, behind the data already queued.
    pub fn abort(self) {
        let queue = {
            let mut state = lock(&self.inner.state);
            if state.end.is_some() {
                return;
            }
            state.local_fin = true;
            state.queue
        };
        let frame = Frame::abort(self.inner.id, self.back());
        let _ = self.mux.queue_stream_frame(&self.inner, queue, frame, None);
    }

    fn back(&self) -> bool {
        self.mux.sends_back()
    }
}

impl AsyncRead for MuxStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let grant = {
            let mut state = lock(&this.inner.state);
            if let Some(end) = state.end {
                return Poll::Ready(Err(end.read_error()));
            }
            if buf.remaining() == 0 {
                return Poll::Ready(Ok(()));
            }
            if state.recv.is_empty() {
                if state.peer_fin {
                    return Poll::Ready(Ok(()));
                }
                register(&mut state.read_waker, cx.waker());
                return Poll::Pending;
            }
            let mut read = 0;
            while buf.remaining() > 0 {
                let Some(chunk) = state.recv.front_mut() else {
                    break;
                };
                let n = chunk.len().min(buf.remaining());
                buf.put_slice(&chunk[..n]);
                chunk.advance(n);
                if chunk.is_empty() {
                    state.recv.pop_front();
                }
                read += n;
            }
            state.window.on_consumed(read);
            state.held.fetch_sub(read as u64, Ordering::Relaxed);
            if state.peer_fin {
                // The peer sends nothing more: no credit to return.
                None
            } else {
                let inputs = TargetInputs {
                    settings: &this.mux.window,
                    qos: &this.mux.qos,
                    active_streams: this.mux.active_streams(),
                    path_rtt: this.mux.path_rtt(),
                };
                let target = state.window.target(inputs, now());
                state.window.take_grant(target)
            }
        };
        if let Some(grant) = grant {
            this.mux.queue_window_update(this.inner.id, grant);
        }
        Poll::Ready(Ok(()))
    }
}

impl MuxStream {
    /// The queue this stream's DATA should use from now on; switches [`StreamState::queue`] at
    /// this frame boundary if none of the stream's frames are queued, otherwise returns
    /// `Pending` until the writer has taken them (it wakes `write_waker`).
    /// (Not while a slot acquisition for the current queue is in progress.)
    fn poll_queue(
        inner: &StreamShared,
        mux: &Shared,
        state: &mut StreamState,
        cx: &Context<'_>,
    ) -> Poll<Queue> {
        let wanted = if state.send_qos.update(now(), &mux.qos) {
            Queue::Sustained
        } else {
            Queue::Data
        };
        if wanted == state.queue {
            return Poll::Ready(wanted);
        }
        if Self::poll_queued_below(inner, state, cx, 1).is_pending() {
            return Poll::Pending;
        }
        state.queue = wanted;
        if wanted == Queue::Sustained {
            mux.streams_sustained.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(stream = inner.id, side = %mux.side, "stream is sustained");
        }
        Poll::Ready(wanted)
    }

    /// Ready once fewer than `limit` of the stream's frames wait in the writer's queues;
    /// otherwise registers the write waker (under the state lock, which the writer takes to
    /// wake it) and returns `Pending`.
    fn poll_queued_below(
        inner: &StreamShared,
        state: &mut StreamState,
        cx: &Context<'_>,
        limit: u32,
    ) -> Poll<()> {
        let queued = &inner.queued;
        if queued.load(Ordering::SeqCst) >= limit {
            inner.writer_waiting.store(true, Ordering::SeqCst);
            if queued.load(Ordering::SeqCst) >= limit {
                register(&mut state.write_waker, cx.waker());
                return Poll::Pending;
            }
        }
        inner.writer_waiting.store(false, Ordering::SeqCst);
        Poll::Ready(())
    }

    fn slots_of(&mut self, queue: Queue) -> &mut PollSemaphore {
        match queue {
            Queue::Sustained => {
                let mux = &self.mux;
                self.sustained_slots
                    .get_or_insert_with(|| PollSemaphore::new(mux.sustained_slots.clone()))
            }
            Queue::Control | Queue::Data => &mut self.slots,
        }
    }
}

impl AsyncWrite for MuxStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        // First wait for credit (without holding a queue slot), then for the stream's queue to
        // be settled and its queued frames to be under the cap, then for a slot of that queue.
        let queue = {
            let mut state = lock(&this.inner.state);
            if let Some(end) = state.end {
                return Poll::Ready(Err(end.write_error()));
            }
            if state.local_fin {
                return Poll::Ready(Err(write_closed()));
            }
            if buf.is_empty() {
                return Poll::Ready(Ok(0));
            }
            if state.credit == 0 {
                register(&mut state.write_waker, cx.waker());
                return Poll::Pending;
            }
            if this.acquiring {
                state.queue
            } else {
                let Poll::Ready(queue) = Self::poll_queue(&this.inner, &this.mux, &mut state, cx)
                else {
                    return Poll::Pending;
                };
                // No more than a few frames of one stream in the queues (mice behind elephants).
                let limit = MAX_QUEUED_FRAMES_PER_STREAM;
                if Self::poll_queued_below(&this.inner, &mut state, cx, limit).is_pending() {
                    return Poll::Pending;
                }
                queue
            }
        };
        let permit = match this.slots_of(queue).poll_acquire(cx) {
            Poll::Pending => {
                this.acquiring = true;
                return Poll::Pending;
            }
            Poll::Ready(None) => return Poll::Ready(Err(tunnel_closed())),
            Poll::Ready(Some(permit)) => permit,
        };
        this.acquiring = false;
        let n = {
            let mut state = lock(&this.inner.state);
            // Credit only grows meanwhile (we are the only writer), but the stream may have ended.
            if let Some(end) = state.end {
                return Poll::Ready(Err(end.write_error()));
            }
            let credit = usize::try_from(state.credit).unwrap_or(usize::MAX);
            let n = buf.len().min(credit).min(MAX_DATA_PAYLOAD);
            state.credit -= n as u64;
            state.send_qos.record(n);
            n
        };
        let frame = Frame::data(
            this.inner.id,
            this.back(),
            Bytes::copy_from_slice(&buf[..n]),
        );
        if this
            .mux
            .queue_stream_frame(&this.inner, queue, frame, Some(permit))
            .is_err()
        {
            return Poll::Ready(Err(tunnel_closed()));
        }
        Poll::Ready(Ok(n))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // Written data is queued for the tunnel's writer, which flushes every batch.
        match lock(&self.inner.state).end {
            Some(end) => Poll::Ready(Err(end.write_error())),
            None => Poll::Ready(Ok(())),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let queue = {
            let mut state = lock(&self.inner.state);
            if let Some(end) = state.end {
                return Poll::Ready(Err(end.write_error()));
            }
            if state.local_fin {
                return Poll::Ready(Ok(()));
            }
            state.local_fin = true;
            state.queue
        };
        // CLOSE goes through the stream's queue, behind its DATA: it must never overtake data
        // already written.
        let close = Frame::close(self.inner.id, self.back());
        if self
            .mux
            .queue_stream_frame(&self.inner, queue, close, None)
            .is_err()
        {
            return Poll::Ready(Err(tunnel_closed()));
        }
        Poll::Ready(Ok(()))
    }
}

impl Drop for MuxStream {
    fn drop(&mut self) {
        let (send_close, queue) = {
            let mut state = lock(&self.inner.state);
            let send_close = !state.local_fin && state.end.is_none();
            state.local_fin = true;
            state.drop_recv();
            state.read_waker = None;
            state.write_waker = None;
            (send_close, state.queue)
        };
        if send_close {
            // Same queue as the DATA (see poll_shutdown). The queue is unbounded for CLOSE, which
            // is at most one per stream, so dropping never blocks or loses it.
            let close = Frame::close(self.inner.id, self.back());
            let _ = self.mux.queue_stream_frame(&self.inner, queue, close, None);
        }
        self.mux.remove_dropped_stream(&self.inner, queue);
    }
}
