//! The reader task: the only owner of the tunnel's read half. It decodes frames and dispatches
//! them without ever waiting on anything but the transport: stream data goes into per-stream
//! buffers (bounded by the credit we granted), everything handed to the application goes
//! through `try_send` on bounded channels, and replies go to queues bounded by construction.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::sync::mpsc::{self, error::TrySendError};

use super::stream::{wake_all, MuxStream, StreamEnd};
use super::{lock, MuxCloseReason, ProtocolError, Shared, Side};
use crate::transport::control::ControlMessage;
use crate::transport::datagram::UdpMessage;
use crate::transport::frame::{self, window_update_value, Frame, FrameType};

/// Read into the buffer in chunks of this size.
const READ_CHUNK: usize = 64 * 1024;

/// Grow the buffer when less than this is free.
const MIN_READ_SPACE: usize = 8 * 1024;

/// Payloads are split off the read buffer without copying, but a payload keeps its whole read
/// allocation (about [`READ_CHUNK`]) alive while it is buffered. Payloads smaller than this are
/// therefore copied out, so buffered data pins at most `READ_CHUNK / SMALL_PAYLOAD` = 4 times its
/// own size; bulk transfers (64 KiB frames) stay zero-copy.
const SMALL_PAYLOAD: usize = 16 * 1024;

/// `payload`, copied out of the read buffer if it is small (see [`SMALL_PAYLOAD`]).
fn detach(payload: Bytes) -> Bytes {
    if payload.len() < SMALL_PAYLOAD {
        Bytes::copy_from_slice(&payload)
    } else {
        payload
    }
}

/// The application ends of the incoming channels.
pub(crate) struct Incoming {
    pub(crate) streams: mpsc::Sender<(MuxStream, Bytes)>,
    pub(crate) control: mpsc::Sender<ControlMessage>,
    pub(crate) datagrams: mpsc::Sender<UdpMessage>,
}

/// Runs until the tunnel ends; `buf` holds bytes already read from `io`.
pub(crate) async fn run<R>(mut io: R, mut buf: BytesMut, shared: Arc<Shared>, incoming: Incoming)
where
    R: AsyncRead + Unpin,
{
    let reason = 'tunnel: loop {
        loop {
            // Each frame is a unit of this task's budget: a peer that never stops sending
            // (thousands of frames in each read) must not keep the thread from the tasks this
            // one feeds, above all the session that takes its streams and control messages. With
            // a budget per read only, a flood of OPENs left the session about 1 % of one thread.
            tokio::task::consume_budget().await;
            match frame::decode(&mut buf) {
                Ok(Some(frame)) => {
                    if let Err(error) = dispatch(&shared, &incoming, frame) {
                        break 'tunnel MuxCloseReason::Protocol(error);
                    }
                }
                Ok(None) => break,
                Err(error) => break 'tunnel MuxCloseReason::Protocol(error.into()),
            }
        }
        if buf.capacity() - buf.len() < MIN_READ_SPACE {
            buf.reserve(READ_CHUNK);
        }
        tokio::select! {
            biased;
            () = shared.stop.cancelled() => break MuxCloseReason::Cancelled,
            read = io.read_buf(&mut buf) => match read {
                Ok(0) => break MuxCloseReason::PeerClosed,
                Ok(_) => {}
                Err(error) => break MuxCloseReason::io(&error),
            },
        }
    };
    shared.shutdown(reason);
}

/// Handles one frame; an error closes the tunnel.
fn dispatch(
    shared: &Arc<Shared>,
    incoming: &Incoming,
    mut frame: Frame,
) -> Result<(), ProtocolError> {
    let frame_type = frame.frame_type;
    if frame_type != FrameType::Data && frame_type != FrameType::DataBack {
        // Delivered to the application as is: don't let them pin read buffers.
        frame.payload = detach(frame.payload);
    }
    if frame_type.is_control() {
        on_control(shared, incoming, frame);
        return Ok(());
    }
    let peer = shared.side.peer();
    if !peer.sends(frame_type) {
        return Err(ProtocolError::WrongDirection {
            frame_type,
            receiver: shared.side,
        });
    }
    match frame_type {
        FrameType::Open => on_open(shared, incoming, frame),
        FrameType::Data | FrameType::DataBack => on_data(shared, frame),
        FrameType::Close | FrameType::CloseBack => {
            on_close(shared, frame.stream_id, frame.is_abort());
            Ok(())
        }
        FrameType::WindowUpdate | FrameType::WindowUpdateBack => {
            let credit = window_update_value(&frame)?;
            on_window_update(shared, frame.stream_id, credit);
            Ok(())
        }
        FrameType::UdpOpen | FrameType::UdpData | FrameType::UdpDataBack | FrameType::UdpClose => {
            let Some(message) = UdpMessage::from_frame(frame) else {
                return Ok(());
            };
            if incoming.datagrams.try_send(message).is_err() {
                shared.udp_dropped.fetch_add(1, Ordering::Relaxed);
            }
            Ok(())
        }
        FrameType::Config | FrameType::Ping | FrameType::Pong => {
            on_control(shared, incoming, frame);
            Ok(())
        }
    }
}

/// CONFIG, PING, PONG. The edge answers PING itself (capped, so a peer flooding PINGs while
/// not reading cannot grow our queue); everything is also handed to the session. Control frames
/// sent the "wrong" way are delivered too and left to the session to judge.
fn on_control(shared: &Shared, incoming: &Incoming, frame: Frame) {
    if frame.frame_type == FrameType::Ping && shared.side == Side::Edge {
        shared.queue_pong(Frame::pong_for(&frame));
    }
    let message = ControlMessage {
        frame_type: frame.frame_type,
        payload: frame.payload,
    };
    match incoming.control.try_send(message) {
        Ok(()) => {}
        Err(TrySendError::Full(message)) => {
            crate::limited_warn!(shared.warnings, frame = %message.frame_type, "control queue full; control frame dropped");
        }
        Err(TrySendError::Closed(_)) => {}
    }
}

fn on_open(shared: &Arc<Shared>, incoming: &Incoming, frame: Frame) -> Result<(), ProtocolError> {
    let id = frame.stream_id;
    let Some(stream) = shared.insert_incoming(id)? else {
        return Ok(()); // the tunnel is closing
    };
    if let Err(error) = incoming.streams.try_send((stream, frame.payload)) {
        let (stream, _) = error.into_inner();
        stream.refuse();
        shared.streams_refused.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(stream = id, "refusing a stream: the accept queue is full");
        shared.queue_answer_close(id);
    }
    Ok(())
}

fn on_data(shared: &Shared, frame: Frame) -> Result<(), ProtocolError> {
    let id = frame.stream_id;
    let Some(stream) = shared.lookup(id) else {
        shared.answer_unknown_data(id);
        return Ok(());
    };
    let len = frame.payload.len();
    let (waker, held) = {
        let mut state = lock(&stream.state);
        if state.end.is_some() {
            return Ok(());
        }
        if state.peer_fin {
            return Err(ProtocolError::DataAfterClose { stream_id: id });
        }
        state
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
        let payload = if shared.under_pressure() {
            Bytes::copy_from_slice(&frame.payload)
        } else {
            detach(frame.payload)
        };
        let held = state.hold(payload);
        (state.read_waker.take(), held)
    };
    wake_all([waker]);
    shared.check_budget(held);
    Ok(())
}

/// First CLOSE: the peer's FIN (reads end after the buffer). Second CLOSE: the peer dropped the
/// stream: abort it.
/// CLOSE: the peer's half closed; a second one, or one that says abort, ends the stream with a
/// reset (the reader gets an error, not an end of file).
fn on_close(shared: &Shared, id: u32, aborted: bool) {
    let Some(stream) = shared.lookup(id) else {
        return;
    };
    let (wakers, abort) = {
        let mut state = lock(&stream.state);
        if state.peer_fin || aborted {
            (state.end(StreamEnd::Reset), true)
        } else {
            state.peer_fin = true;
            ([state.read_waker.take(), None], false)
        }
    };
    if abort {
        shared.remove_stream(&stream);
    }
    wake_all(wakers);
}

fn on_window_update(shared: &Shared, id: u32, credit: u32) {
    let Some(stream) = shared.lookup(id) else {
        return;
    };
    let waker = {
        let mut state = lock(&stream.state);
        state.credit = state.credit.saturating_add(u64::from(credit));
        state.write_waker.take()
    };
    wake_all([waker]);
}
