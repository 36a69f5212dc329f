//! Bidirectional byte relay with half-close propagation, used by the edge (client <-> tunnel
//! stream) and the hub (tunnel stream <-> target).
//!
//! Like `tokio::io::copy_bidirectional`: when one side reaches EOF, the other side's write half
//! is shut down and the opposite direction keeps going until it ends too, so a client that
//! half-closes still receives the whole response. Written here instead of using tokio's because
//! of memory: tokio allocates both copy buffers up front and keeps them for the connection's
//! life, 128 KiB per relay. An edge holding 10,000 idle connections (and a hub with as many) must
//! not pay that. Here a direction holds its buffer only while bytes are in flight: the buffer is
//! dropped whenever the reader has nothing and nothing is left to write, and allocated again when
//! the reader wakes the task. An idle connection costs no buffer at all. The counters are live,
//! so status shows bytes of connections that are still open and of ones that failed midway.

use std::future::poll_fn;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_util::io::poll_read_buf;

/// Copy buffer size per direction while data flows: one full DATA frame.
const RELAY_BUFFER: usize = 64 * 1024;

/// Byte counters of one relayed connection, readable while it runs.
#[derive(Debug, Default)]
pub(crate) struct RelayCounters {
    /// Bytes from the client side towards the target side.
    pub inbound: AtomicU64,
    /// Bytes from the target side towards the client side.
    pub outbound: AtomicU64,
}

impl RelayCounters {
    pub(crate) fn inbound(&self) -> u64 {
        self.inbound.load(Ordering::Relaxed)
    }

    pub(crate) fn outbound(&self) -> u64 {
        self.outbound.load(Ordering::Relaxed)
    }
}

/// Which side of a relay failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RelaySide {
    Client,
    Target,
}

/// A relay that ended with an error, and on which side: the caller resets the *other* side,
/// so that an abort anywhere reaches both ends as an abort (a TCP reset), never as a normal
/// close that would make a cut-off transfer look complete.
#[derive(Debug, thiserror::Error)]
#[error("{side:?} side: {error}")]
pub(crate) struct RelayError {
    pub side: RelaySide,
    #[source]
    pub error: io::Error,
}

/// Relays until both directions have ended; returns the first error, if any.
pub(crate) async fn relay<C, T>(
    mut client_side: C,
    mut target_side: T,
    counters: Arc<RelayCounters>,
) -> Result<(), RelayError>
where
    C: AsyncRead + AsyncWrite + Unpin,
    T: AsyncRead + AsyncWrite + Unpin,
{
    let mut inbound = Direction::default();
    let mut outbound = Direction::default();
    poll_fn(|cx| {
        let to_target = inbound
            .poll_copy(cx, &mut client_side, &mut target_side, &counters.inbound)
            .map_err(|(end, error)| RelayError {
                side: match end {
                    End::Reader => RelaySide::Client,
                    End::Writer => RelaySide::Target,
                },
                error,
            });
        let to_client = outbound
            .poll_copy(cx, &mut target_side, &mut client_side, &counters.outbound)
            .map_err(|(end, error)| RelayError {
                side: match end {
                    End::Reader => RelaySide::Target,
                    End::Writer => RelaySide::Client,
                },
                error,
            });
        match (to_target, to_client) {
            (Poll::Ready(Err(error)), _) | (_, Poll::Ready(Err(error))) => Poll::Ready(Err(error)),
            (Poll::Ready(Ok(())), Poll::Ready(Ok(()))) => Poll::Ready(Ok(())),
            _ => Poll::Pending,
        }
    })
    .await
}

/// Relays a TCP connection (the client's on the edge, the target's on the hub) and a tunnel
/// stream, on both roles the same way: when one side fails, the other is reset (the TCP socket
/// with RST, the tunnel stream with an abort) rather than closed, and when `stop` is cancelled
/// (the role stops, the session ends) both are, so a connection cut anywhere never looks
/// complete at the far end.
///
/// The reset is armed (SO_LINGER 0) for the whole relay, not only when it fails: should this
/// process die outright (kill -9, the OOM killer), the kernel closes the socket with no code of
/// ours running, and an armed socket then sends RST where it would send FIN, which would make a
/// download to the client (or an upload to the target) cut off by our death look complete. A
/// relay that ends normally disarms it before the close, which is then graceful: FIN after
/// every buffered byte. (`shutdown`, the half-close, is not affected by SO_LINGER.)
pub(crate) async fn relay_tcp_and_tunnel(
    mut tcp: tokio::net::TcpStream,
    mut stream: crate::transport::tunnel::TunnelStream,
    tcp_side: RelaySide,
    counters: Arc<RelayCounters>,
    stop: &tokio_util::sync::CancellationToken,
) -> Result<(), RelayError> {
    reset(&tcp);
    let relayed = async {
        match tcp_side {
            RelaySide::Client => relay(&mut tcp, &mut stream, counters).await,
            RelaySide::Target => relay(&mut stream, &mut tcp, counters).await,
        }
    };
    let result = tokio::select! {
        () = stop.cancelled() => None,
        result = relayed => Some(result),
    };
    let Some(result) = result else {
        reset(&tcp);
        stream.abort();
        return Err(RelayError {
            side: tcp_side,
            error: io::Error::new(io::ErrorKind::Interrupted, "stopped"),
        });
    };
    match &result {
        // Both directions are done: close gracefully.
        Ok(()) => {
            let _ = socket2::SockRef::from(&tcp).set_linger(None);
        }
        // The TCP side failed: it keeps its reset; the tunnel side is aborted.
        Err(failed) if failed.side == tcp_side => stream.abort(),
        // The tunnel side failed: the TCP socket closes with the reset it is armed with.
        Err(_) => {}
    }
    result
}

/// Makes the socket's close a TCP reset (SO_LINGER 0): the peer's next read fails with
/// ECONNRESET instead of reading an end of file.
pub(crate) fn reset(socket: &tokio::net::TcpStream) {
    let _ = socket2::SockRef::from(socket).set_linger(Some(std::time::Duration::ZERO));
}

/// The end of one direction that failed.
#[derive(Debug, Clone, Copy)]
enum End {
    Reader,
    Writer,
}

/// One direction of the copy.
#[derive(Debug, Default)]
struct Direction {
    /// Present only while bytes are being read or written. A `BytesMut` so that allocating it
    /// costs no zeroing (tokio-util reads into its spare capacity).
    buffer: Option<BytesMut>,
    /// Bytes `buffer[pos..end]` are still to be written.
    pos: usize,
    end: usize,
    read_done: bool,
    needs_flush: bool,
    done: bool,
}

impl Direction {
    fn poll_copy<R, W>(
        &mut self,
        cx: &mut Context<'_>,
        reader: &mut R,
        writer: &mut W,
        counter: &AtomicU64,
    ) -> Poll<Result<(), (End, io::Error)>>
    where
        R: AsyncRead + Unpin,
        W: AsyncWrite + Unpin,
    {
        if self.done {
            return Poll::Ready(Ok(()));
        }
        loop {
            if self.pos == self.end && !self.read_done {
                let buffer = self
                    .buffer
                    .get_or_insert_with(|| BytesMut::with_capacity(RELAY_BUFFER));
                buffer.clear();
                match poll_read_buf(Pin::new(&mut *reader), cx, buffer) {
                    Poll::Pending => {
                        // Nothing to read and nothing left to write: give the buffer back, and
                        // make sure what was written reaches the peer before waiting.
                        self.buffer = None;
                        if self.needs_flush {
                            ready!(Pin::new(&mut *writer).poll_flush(cx))
                                .map_err(|e| (End::Writer, e))?;
                            self.needs_flush = false;
                        }
                        return Poll::Pending;
                    }
                    Poll::Ready(Err(error)) => return Poll::Ready(Err((End::Reader, error))),
                    Poll::Ready(Ok(n)) => {
                        if n == 0 {
                            self.read_done = true;
                            self.buffer = None;
                        } else {
                            self.pos = 0;
                            self.end = n;
                            counter.fetch_add(n as u64, Ordering::Relaxed);
                        }
                    }
                }
            }
            while self.pos < self.end {
                let Some(buffer) = self.buffer.as_deref() else {
                    // Unreachable by construction (pos < end only after a read into the
                    // buffer); reported instead of panicking.
                    return Poll::Ready(Err((
                        End::Writer,
                        io::Error::other("relay buffer missing"),
                    )));
                };
                let n = ready!(Pin::new(&mut *writer).poll_write(cx, &buffer[self.pos..self.end]))
                    .map_err(|e| (End::Writer, e))?;
                if n == 0 {
                    return Poll::Ready(Err((End::Writer, io::ErrorKind::WriteZero.into())));
                }
                self.pos += n;
                self.needs_flush = true;
            }
            if self.read_done {
                ready!(Pin::new(&mut *writer).poll_flush(cx)).map_err(|e| (End::Writer, e))?;
                ready!(Pin::new(&mut *writer).poll_shutdown(cx)).map_err(|e| (End::Writer, e))?;
                self.done = true;
                return Poll::Ready(Ok(()));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt, ReadBuf};

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

    #[tokio::test]
    async fn bytes_arrive_intact_in_both_directions_through_small_pipes() {
        let (client, client_relay_end) = tokio::io::duplex(777);
        let (target_relay_end, target) = tokio::io::duplex(333);
        let counters = Arc::new(RelayCounters::default());
        let relay_task = tokio::spawn(relay(client_relay_end, target_relay_end, counters.clone()));
        // The target echoes.
        let echo = tokio::spawn(async move {
            let (mut read, mut write) = tokio::io::split(target);
            tokio::io::copy(&mut read, &mut write).await.unwrap();
            write.shutdown().await.unwrap();
        });
        let data: Vec<u8> = (0..1_000_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let (mut read, mut write) = tokio::io::split(client);
        let sent = data.clone();
        let writer = tokio::spawn(async move {
            write.write_all(&sent).await.unwrap();
            write.shutdown().await.unwrap();
        });
        let mut echoed = Vec::new();
        read.read_to_end(&mut echoed).await.unwrap();
        writer.await.unwrap();
        echo.await.unwrap();
        relay_task.await.unwrap().unwrap();
        assert!(echoed == data, "echo differs");
        assert_eq!(
            (counters.inbound(), counters.outbound()),
            (1_000_000, 1_000_000)
        );
    }

    #[tokio::test]
    async fn an_idle_relay_holds_no_buffer() {
        let (_client, client_relay_end) = tokio::io::duplex(64);
        let (target_relay_end, _target) = tokio::io::duplex(64);
        let mut client_relay_end = client_relay_end;
        let mut target_relay_end = target_relay_end;
        let counter = AtomicU64::new(0);
        let mut direction = Direction::default();
        let waker = std::task::Waker::noop().clone();
        let mut cx = Context::from_waker(&waker);
        let polled = direction.poll_copy(
            &mut cx,
            &mut client_relay_end,
            &mut target_relay_end,
            &counter,
        );
        assert!(polled.is_pending());
        assert!(direction.buffer.is_none(), "buffer released while idle");
    }

    #[tokio::test]
    async fn an_error_on_one_side_ends_the_relay() {
        struct Broken;
        impl AsyncRead for Broken {
            fn poll_read(
                self: Pin<&mut Self>,
                _: &mut Context<'_>,
                _: &mut ReadBuf<'_>,
            ) -> Poll<io::Result<()>> {
                Poll::Ready(Err(io::ErrorKind::ConnectionReset.into()))
            }
        }
        impl AsyncWrite for Broken {
            fn poll_write(
                self: Pin<&mut Self>,
                _: &mut Context<'_>,
                _: &[u8],
            ) -> Poll<io::Result<usize>> {
                Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()))
            }
            fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
                Poll::Ready(Ok(()))
            }
            fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
                Poll::Ready(Ok(()))
            }
        }
        let (_peer, other) = tokio::io::duplex(64);
        let error = relay(Broken, other, Arc::default()).await.unwrap_err();
        assert_eq!(error.error.kind(), io::ErrorKind::ConnectionReset);
        assert_eq!(error.side, RelaySide::Client, "the failing side is named");
        let (_peer, other) = tokio::io::duplex(64);
        let error = relay(other, Broken, Arc::default()).await.unwrap_err();
        assert_eq!(error.side, RelaySide::Target);
    }
}
