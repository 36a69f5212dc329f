//! One multiplexed stream: its shared state (touched by the reader task and the application)
//! and [`MuxStream`], the application's `AsyncRead + AsyncWrite` end.

use std::collections::VecDeque;
use std::fmt;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{ready, Context, Poll, Waker};
use std::time::Instant;

use bytes::{Buf, Bytes};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_util::sync::PollSemaphore;

use super::window::RecvWindow;
use super::{lock, Outgoing, Shared};
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
    /// Set when the stream can no longer be used at all.
    pub(crate) end: Option<StreamEnd>,
    pub(crate) read_waker: Option<Waker>,
    pub(crate) write_waker: Option<Waker>,
}

impl StreamState {
    /// Ends the stream: drops buffered data and hands back the wakers to wake (call them after
    /// releasing the lock).
    pub(crate) fn end(&mut self, end: StreamEnd) -> [Option<Waker>; 2] {
        if self.end.is_none() {
            self.end = Some(end);
        }
        self.recv = VecDeque::new();
        [self.read_waker.take(), self.write_waker.take()]
    }
}

/// A stream's entry in the mux table.
#[derive(Debug)]
pub(crate) struct StreamShared {
    pub(crate) id: u32,
    pub(crate) state: Mutex<StreamState>,
}

impl StreamShared {
    pub(crate) fn new(id: u32, initial_credit: u32, now: Instant) -> Self {
        Self {
            id,
            state: Mutex::new(StreamState {
                recv: VecDeque::new(),
                window: RecvWindow::new(now),
                credit: u64::from(initial_credit),
                peer_fin: false,
                local_fin: false,
                end: None,
                read_waker: None,
                write_waker: None,
            }),
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
pub struct MuxStream {
    inner: Arc<StreamShared>,
    mux: Arc<Shared>,
    /// Slots of the bounded data queue; one is taken per DATA frame.
    slots: PollSemaphore,
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
        Self { inner, mux, slots }
    }

    /// The stream id (unique on this tunnel while the stream is open).
    pub fn id(&self) -> u32 {
        self.inner.id
    }

    /// Forgets the stream without sending anything (the caller answers the peer itself).
    pub(crate) fn refuse(self) {
        lock(&self.inner.state).local_fin = true;
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
            if state.peer_fin {
                // The peer sends nothing more: no credit to return.
                None
            } else {
                let target = this.mux.window.target(this.mux.active_streams());
                state.window.take_grant(target, Instant::now())
            }
        };
        if let Some(grant) = grant {
            this.mux.queue_window_update(this.inner.id, grant);
        }
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for MuxStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        // First wait for credit (without holding a queue slot), then for a queue slot.
        {
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
        }
        let Some(permit) = ready!(this.slots.poll_acquire(cx)) else {
            return Poll::Ready(Err(tunnel_closed()));
        };
        let n = {
            let mut state = lock(&this.inner.state);
            // Credit only grows meanwhile (we are the only writer), but the stream may have ended.
            if let Some(end) = state.end {
                return Poll::Ready(Err(end.write_error()));
            }
            let credit = usize::try_from(state.credit).unwrap_or(usize::MAX);
            let n = buf.len().min(credit).min(MAX_DATA_PAYLOAD);
            state.credit -= n as u64;
            n
        };
        let frame = Frame::data(
            this.inner.id,
            this.back(),
            Bytes::copy_from_slice(&buf[..n]),
        );
        if this
            .mux
            .data_tx
            .send(Outgoing::Data(frame, permit))
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
        {
            let mut state = lock(&self.inner.state);
            if let Some(end) = state.end {
                return Poll::Ready(Err(end.write_error()));
            }
            if state.local_fin {
                return Poll::Ready(Ok(()));
            }
            state.local_fin = true;
        }
        // CLOSE goes through the data queue, behind this stream's DATA: it must never overtake
        // data already written.
        let close = Frame::close(self.inner.id, self.back());
        if self.mux.data_tx.send(Outgoing::Frame(close)).is_err() {
            return Poll::Ready(Err(tunnel_closed()));
        }
        Poll::Ready(Ok(()))
    }
}

impl Drop for MuxStream {
    fn drop(&mut self) {
        let send_close = {
            let mut state = lock(&self.inner.state);
            let send_close = !state.local_fin && state.end.is_none();
            state.local_fin = true;
            state.recv = VecDeque::new();
            state.read_waker = None;
            state.write_waker = None;
            send_close
        };
        if send_close {
            // Same queue as the DATA (see poll_shutdown). The queue is unbounded for CLOSE, which
            // is at most one per stream, so dropping never blocks or loses it.
            let close = Frame::close(self.inner.id, self.back());
            let _ = self.mux.data_tx.send(Outgoing::Frame(close));
        }
        self.mux.remove_stream(&self.inner);
    }
}
