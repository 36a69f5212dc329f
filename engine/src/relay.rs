//! Bidirectional byte relay with half-close propagation, used by the edge (client <-> tunnel
//! stream) and the hub (tunnel stream <-> target).
//!
//! `tokio::io::copy_bidirectional` already does the hard part: when one side reaches EOF it shuts
//! down the write half of the other and keeps copying the opposite direction until that one ends
//! too, so a client that half-closes still receives the whole response. This module adds live
//! byte counters (status and `streamClosed` report them even when a side fails midway).

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Copy buffer size per direction: one full DATA frame.
const RELAY_BUFFER: usize = 64 * 1024;

/// Byte counters of one relayed connection, readable while it runs.
#[derive(Debug, Default)]
pub struct RelayCounters {
    /// Bytes from the client side towards the target side.
    pub inbound: AtomicU64,
    /// Bytes from the target side towards the client side.
    pub outbound: AtomicU64,
}

impl RelayCounters {
    pub fn inbound(&self) -> u64 {
        self.inbound.load(Ordering::Relaxed)
    }

    pub fn outbound(&self) -> u64 {
        self.outbound.load(Ordering::Relaxed)
    }
}

/// Relays until both directions have ended; returns the first error, if any.
pub async fn relay<C, T>(
    client_side: C,
    target_side: T,
    counters: Arc<RelayCounters>,
) -> io::Result<()>
where
    C: AsyncRead + AsyncWrite + Unpin,
    T: AsyncRead + AsyncWrite + Unpin,
{
    let mut client_side = Counted {
        inner: client_side,
        counters: counters.clone(),
        inbound: true,
    };
    let mut target_side = Counted {
        inner: target_side,
        counters,
        inbound: false,
    };
    tokio::io::copy_bidirectional_with_sizes(
        &mut client_side,
        &mut target_side,
        RELAY_BUFFER,
        RELAY_BUFFER,
    )
    .await
    .map(|_| ())
}

/// Counts the bytes read from the wrapped stream.
struct Counted<S> {
    inner: S,
    counters: Arc<RelayCounters>,
    /// Reads from this side travel inbound (client -> target).
    inbound: bool,
}

impl<S: AsyncRead + Unpin> AsyncRead for Counted<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let result = Pin::new(&mut self.inner).poll_read(cx, buf);
        let read = (buf.filled().len() - before) as u64;
        if read > 0 {
            let counter = if self.inbound {
                &self.counters.inbound
            } else {
                &self.counters.outbound
            };
            counter.fetch_add(read, Ordering::Relaxed);
        }
        result
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Counted<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn half_close_reaches_the_other_side_and_the_answer_comes_back() {
        let (client, client_relay_end) = tokio::io::duplex(1024);
        let (target_relay_end, target) = tokio::io::duplex(1024);
        let counters = Arc::new(RelayCounters::default());
        let relay_task = tokio::spawn(relay(client_relay_end, target_relay_end, counters.clone()));

        let (mut target_read, mut target_write) = tokio::io::split(target);
        let target_task = tokio::spawn(async move {
            let mut request = Vec::new();
            target_read.read_to_end(&mut request).await.unwrap();
            target_write.write_all(&vec![b'r'; 100_000]).await.unwrap();
            target_write.shutdown().await.unwrap();
            request
        });

        let (mut client_read, mut client_write) = tokio::io::split(client);
        client_write
            .write_all(b"GET / HTTP/1.0\r\n\r\n")
            .await
            .unwrap();
        client_write.shutdown().await.unwrap();
        let mut response = Vec::new();
        client_read.read_to_end(&mut response).await.unwrap();

        assert_eq!(target_task.await.unwrap(), b"GET / HTTP/1.0\r\n\r\n");
        assert_eq!(response.len(), 100_000);
        relay_task.await.unwrap().unwrap();
        assert_eq!(counters.inbound(), 18);
        assert_eq!(counters.outbound(), 100_000);
    }
}
