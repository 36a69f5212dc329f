//! `QuicStream`: one QUIC bidirectional stream as a byte stream. Bytes read past the first line
//! (PROXY v1 or egress request) while looking for its end are handed out first.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes};
use quinn::{RecvStream, SendStream};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Application error code of an aborted stream.
const STREAM_ABORTED: u32 = 0x10;

/// A QUIC bidirectional stream carrying one tunneled connection.
#[derive(Debug)]
pub struct QuicStream {
    send: SendStream,
    recv: RecvStream,
    prefix: Bytes,
    live: Arc<AtomicUsize>,
}

impl QuicStream {
    pub(crate) fn new(
        send: SendStream,
        recv: RecvStream,
        prefix: Bytes,
        live: Arc<AtomicUsize>,
    ) -> Self {
        live.fetch_add(1, Ordering::Relaxed);
        Self {
            send,
            recv,
            prefix,
            live,
        }
    }

    /// The QUIC stream id.
    pub fn id(&self) -> u64 {
        self.send.id().index()
    }

    /// Aborts the stream both ways (RESET_STREAM and STOP_SENDING): the peer's reads fail with a
    /// reset instead of ending normally. (Dropping a `SendStream` would finish it gracefully.)
    pub fn abort(mut self) {
        let _ = self.send.reset(quinn::VarInt::from_u32(STREAM_ABORTED));
        let _ = self.recv.stop(quinn::VarInt::from_u32(STREAM_ABORTED));
    }
}

impl Drop for QuicStream {
    fn drop(&mut self) {
        self.live.fetch_sub(1, Ordering::Relaxed);
    }
}

impl AsyncRead for QuicStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if !self.prefix.is_empty() {
            let n = self.prefix.len().min(buf.remaining());
            buf.put_slice(&self.prefix[..n]);
            self.prefix.advance(n);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.recv).poll_read(cx, buf)
    }
}

impl AsyncWrite for QuicStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        AsyncWrite::poll_write(Pin::new(&mut self.send), cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        AsyncWrite::poll_flush(Pin::new(&mut self.send), cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        AsyncWrite::poll_shutdown(Pin::new(&mut self.send), cx)
    }
}
