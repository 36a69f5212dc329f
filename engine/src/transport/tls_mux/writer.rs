//! The writer task: the only owner of the tunnel's write half.
//!
//! It takes frames from the control, data and sustained queues in the order the scheduler
//! picks (control always first; [`MuxState::poll_transmit`](super::state::MuxState), under the
//! tunnel's lock), encodes whatever is ready into one batch (up to [`BATCH_MAX`] bytes) outside
//! the lock and issues one `write_all` + `flush` per batch, so many small frames become one TLS
//! write. It sleeps on a [`Notify`](tokio::sync::Notify) while the queues are empty. Large DATA payloads are not copied into the batch when the transport
//! supports vectored writes (rustls does): the batch then references them.

use std::collections::VecDeque;
use std::io::IoSlice;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncWrite, AsyncWriteExt};

use super::transmit::Transmit;
pub(crate) use super::transmit::BATCH_MAX;
use super::{now, MuxCloseReason, Shared};
use crate::transport::frame::{checked_header, Frame, FrameError, HEADER_LEN};

/// A batch smaller than this waits for one pass of the runtime's scheduler before it is
/// written, to coalesce frames of streams that become ready at the same time.
const COALESCE_BELOW: usize = 16 * 1024;

/// Payloads at least this large are referenced, not copied, by a vectored batch.
const ZERO_COPY_MIN: usize = 16 * 1024;

/// How long a graceful close may take to shut the transport down (TLS close_notify).
const SHUTDOWN_GRACE: Duration = Duration::from_secs(1);

/// Frames encoded for one write: completed segments plus the tail still being filled.
#[derive(Debug)]
pub(crate) struct Batch {
    vectored: bool,
    out: Segments,
    tail: BytesMut,
    len: usize,
}

impl Batch {
    pub(crate) fn new(vectored: bool) -> Self {
        Self {
            vectored,
            out: Segments::default(),
            tail: BytesMut::with_capacity(BATCH_MAX + HEADER_LEN + 64 * 1024),
            len: 0,
        }
    }

    /// Bytes encoded so far.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Appends one frame, checked like [`crate::transport::frame::encode`] does.
    pub(crate) fn push(&mut self, frame: &Frame) -> Result<(), FrameError> {
        self.tail.extend_from_slice(&checked_header(frame)?);
        if self.vectored && frame.payload.len() >= ZERO_COPY_MIN {
            self.seal_tail();
            self.out.push(frame.payload.clone());
        } else {
            self.tail.extend_from_slice(&frame.payload);
        }
        self.len += HEADER_LEN + frame.payload.len();
        Ok(())
    }

    fn seal_tail(&mut self) {
        if !self.tail.is_empty() {
            self.out.push(self.tail.split().freeze());
        }
    }

    /// Everything pushed so far, as one `Buf` to write out; the batch is empty again once it
    /// has been consumed.
    pub(crate) fn ready(&mut self) -> &mut Segments {
        self.seal_tail();
        self.len = 0;
        &mut self.out
    }
}

/// A queue of byte segments written with one vectored write where possible.
#[derive(Debug, Default)]
pub(crate) struct Segments {
    bufs: VecDeque<Bytes>,
    remaining: usize,
}

impl Segments {
    fn push(&mut self, bytes: Bytes) {
        if !bytes.is_empty() {
            self.remaining += bytes.len();
            self.bufs.push_back(bytes);
        }
    }
}

impl Buf for Segments {
    fn remaining(&self) -> usize {
        self.remaining
    }

    fn chunk(&self) -> &[u8] {
        self.bufs.front().map_or(&[], |b| &b[..])
    }

    fn chunks_vectored<'a>(&'a self, dst: &mut [IoSlice<'a>]) -> usize {
        let mut n = 0;
        for (slot, buf) in dst.iter_mut().zip(&self.bufs) {
            *slot = IoSlice::new(buf);
            n += 1;
        }
        n
    }

    fn advance(&mut self, mut cnt: usize) {
        while cnt > 0 {
            let Some(front) = self.bufs.front_mut() else {
                break;
            };
            let n = cnt.min(front.len());
            front.advance(n);
            cnt -= n;
            self.remaining -= n;
            if front.is_empty() {
                self.bufs.pop_front();
            }
        }
    }
}

/// Encodes the frames taken into `batch`.
fn encode(transmit: &mut Transmit, batch: &mut Batch) {
    for frame in transmit.frames.drain(..) {
        if let Err(error) = batch.push(&frame) {
            // Every entry point validates frames, so this is a bug; skip the frame, keep the
            // tunnel.
            tracing::error!(%error, frame = %frame.frame_type, stream = frame.stream_id, "dropping an unencodable frame");
        }
    }
}

/// Whether a small batch waits for one pass of the scheduler before it is written: only while
/// waiting pays. A single request/response stream gains nothing from it and would pay the
/// pass on every round trip, so after a wait that added nothing the next
/// [`Coalescing::SKIP_AFTER_MISS`] small batches go out at once.
#[derive(Debug, Default)]
struct Coalescing {
    skip: u32,
}

impl Coalescing {
    const SKIP_AFTER_MISS: u32 = 16;

    fn should_wait(&mut self) -> bool {
        if self.skip == 0 {
            return true;
        }
        self.skip -= 1;
        false
    }

    /// Records whether the wait added frames to the batch.
    fn waited(&mut self, gained: bool) {
        self.skip = if gained { 0 } else { Self::SKIP_AFTER_MISS };
    }
}

/// Moves the frames ready (in the scheduler's order) into the batch.
fn collect(shared: &Shared, transmit: &mut Transmit, batch: &mut Batch) {
    let now = now();
    shared.with(|state| state.poll_transmit(now, transmit));
    encode(transmit, batch);
}

/// Runs until the tunnel ends.
pub(crate) async fn run<W>(mut io: W, shared: Arc<Shared>)
where
    W: AsyncWrite + Unpin,
{
    let mut batch = Batch::new(io.is_write_vectored());
    let mut transmit = Transmit::default();
    let mut coalescing = Coalescing::default();
    let result = loop {
        collect(&shared, &mut transmit, &mut batch);
        if batch.is_empty() {
            // `poll_transmit` marked the writer idle: the next queued frame notifies it (or
            // left a permit if it came in between).
            tokio::select! {
                biased;
                () = shared.stop.cancelled() => break Ok(()),
                () = shared.writer.notified() => continue,
            }
        }
        if batch.len() < COALESCE_BELOW && coalescing.should_wait() {
            // A small batch (request/response traffic): let the other tasks that are ready run
            // once first. Streams whose sockets became readable in the same poll of the
            // runtime then add their frames, and many small frames go out in one TLS record
            // and one syscall instead of one each.
            let before = batch.len();
            tokio::task::yield_now().await;
            collect(&shared, &mut transmit, &mut batch);
            coalescing.waited(batch.len() > before);
        }
        transmit.len = 0;
        let write = async {
            io.write_all_buf(batch.ready()).await?;
            io.flush().await
        };
        tokio::select! {
            biased;
            () = shared.stop.cancelled() => break Ok(()),
            written = write => {
                if let Err(error) = written {
                    break Err(error);
                }
            }
        }
    };
    match result {
        Err(error) => shared.shutdown(MuxCloseReason::io(&error)),
        Ok(()) => {
            shared.shutdown(MuxCloseReason::Cancelled);
            // Best effort: tell the peer we are done (TLS close_notify, TCP FIN).
            let _ = tokio::time::timeout(SHUTDOWN_GRACE, io.shutdown()).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transport::frame::{decode, encode};

    fn frames() -> Vec<Frame> {
        vec![
            Frame::open(1, &b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\n"[..]),
            Frame::data(1, false, vec![7u8; 100]),
            Frame::data(1, false, vec![8u8; 64 * 1024]),
            Frame::window_update(1, false, 12345),
            Frame::data(2, false, vec![9u8; ZERO_COPY_MIN]),
            Frame::close(1, false),
            Frame::ping(3),
        ]
    }

    fn collect(buf: &mut Segments, vectored: bool) -> Vec<u8> {
        let mut out = Vec::new();
        while buf.has_remaining() {
            if vectored {
                let mut slices = [IoSlice::new(&[]); 3];
                let n = buf.chunks_vectored(&mut slices);
                // Consume part of the slices, as a short write would.
                let total: usize = slices[..n].iter().map(|s| s.len()).sum();
                let take = (total / 2).max(1).min(total);
                let mut left = take;
                for s in &slices[..n] {
                    let k = left.min(s.len());
                    out.extend_from_slice(&s[..k]);
                    left -= k;
                }
                buf.advance(take);
            } else {
                let n = buf.chunk().len().min(1000);
                out.extend_from_slice(&buf.chunk()[..n]);
                buf.advance(n);
            }
        }
        out
    }

    #[test]
    fn batch_bytes_equal_the_codec_output() {
        let mut expected = BytesMut::new();
        for frame in frames() {
            encode(&frame, &mut expected).unwrap();
        }
        for vectored in [false, true] {
            let mut batch = Batch::new(vectored);
            for frame in frames() {
                batch.push(&frame).unwrap();
            }
            assert_eq!(batch.len(), expected.len());
            let ready = batch.ready();
            if vectored {
                assert!(ready.bufs.len() > 1, "large payloads are separate segments");
            } else {
                assert_eq!(ready.bufs.len(), 1, "one flat buffer");
            }
            assert_eq!(collect(ready, vectored), &expected[..]);
            assert!(batch.is_empty());
            // Reusable after being written out.
            batch.push(&Frame::ping(1)).unwrap();
            let mut one = BytesMut::from(&collect(batch.ready(), vectored)[..]);
            assert_eq!(decode(&mut one), Ok(Some(Frame::ping(1))));
        }
    }

    #[test]
    fn coalescing_waits_only_while_it_pays() {
        let mut c = Coalescing::default();
        assert!(c.should_wait());
        c.waited(true);
        assert!(c.should_wait(), "a wait that gained frames is repeated");
        c.waited(false);
        let skipped = (0..Coalescing::SKIP_AFTER_MISS)
            .filter(|_| !c.should_wait())
            .count();
        assert_eq!(skipped, Coalescing::SKIP_AFTER_MISS as usize);
        assert!(c.should_wait(), "tried again after the skipped batches");
    }

    #[test]
    fn batch_refuses_invalid_frames_without_writing() {
        let mut batch = Batch::new(true);
        assert!(batch.push(&Frame::close(0, false)).is_err());
        assert!(batch.push(&Frame::data(1, false, vec![0; 65537])).is_err());
        assert!(batch.is_empty());
        assert_eq!(batch.ready().remaining(), 0);
    }
}
