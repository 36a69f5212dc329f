//! [`MuxStream`], the application's `AsyncRead + AsyncWrite` end of one multiplexed stream.
//! Its state lives in the tunnel's [`MuxState`](super::state::MuxState); each poll takes the
//! tunnel's lock once (a write twice: the bytes are copied into the frame between the two).

use std::fmt;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::state::StreamKey;
use super::{now, Shared};

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
    key: StreamKey,
    id: u32,
    mux: Arc<Shared>,
}

impl fmt::Debug for MuxStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MuxStream")
            .field("id", &self.id)
            .field("side", &self.mux.side)
            .finish_non_exhaustive()
    }
}

impl MuxStream {
    pub(crate) fn new(key: StreamKey, id: u32, mux: Arc<Shared>) -> Self {
        Self { key, id, mux }
    }

    /// The stream id (unique on this tunnel while the stream is open).
    pub fn id(&self) -> u32 {
        self.id
    }

    /// Hub: refuses the stream with a CLOSE and forgets it (the accept queue is full).
    pub(crate) fn refuse(self) {
        self.mux.with(|state| state.refuse(self.key));
    }

    /// Aborts the stream: the peer's reads fail with a reset instead of ending normally, so it
    /// resets its side too. Sent in the stream's own queue, behind the data already queued.
    pub fn abort(self) {
        self.mux.with(|state| state.abort_stream(self.key));
    }
}

impl AsyncRead for MuxStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let now = now();
        self.mux
            .with(|state| state.poll_read(self.key, buf, cx.waker(), now))
    }
}

impl AsyncWrite for MuxStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let now = now();
        let key = self.key;
        let grant = match self
            .mux
            .with(|state| state.poll_write(key, buf.len(), cx.waker(), now))
        {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(Err(error)) => return Poll::Ready(Err(error)),
            Poll::Ready(Ok(None)) => return Poll::Ready(Ok(0)),
            Poll::Ready(Ok(Some(grant))) => grant,
        };
        // Copied outside the lock. Only this stream's `poll_write` queues its DATA; should the
        // stream end meanwhile (reset by the peer or the budget), `push_data` fails.
        let payload = Bytes::copy_from_slice(&buf[..grant.len]);
        self.mux
            .with(|state| state.push_data(key, grant, payload))?;
        Poll::Ready(Ok(grant.len))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // Written data is queued for the tunnel's writer, which flushes every batch.
        Poll::Ready(self.mux.with(|state| state.poll_flush(self.key)))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(self.mux.with(|state| state.shutdown_stream(self.key)))
    }
}

impl Drop for MuxStream {
    fn drop(&mut self) {
        self.mux.with(|state| state.drop_stream(self.key));
    }
}
