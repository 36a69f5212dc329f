//! The reader task: the only owner of the tunnel's read half. It decodes frames and hands each
//! to [`MuxState::on_frame`](super::state::MuxState::on_frame) without ever waiting on anything
//! but the transport: stream data goes into per-stream buffers (bounded by the credit we
//! granted), everything handed to the application goes through `try_send` on bounded channels
//! (outside the lock), and replies go to queues bounded by construction.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::sync::mpsc::{self, error::TrySendError};

use super::state::{detach, Delivery};
use super::stream::MuxStream;
use super::{now, MuxCloseReason, ProtocolError, Shared};
use crate::transport::control::ControlMessage;
use crate::transport::datagram::UdpMessage;
use crate::transport::frame::{self, Frame, FrameType};

/// Read into the buffer in chunks of this size.
const READ_CHUNK: usize = 64 * 1024;

/// Grow the buffer when less than this is free.
const MIN_READ_SPACE: usize = 8 * 1024;

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
                Ok(read) => {
                    let read = u64::try_from(read).unwrap_or(u64::MAX);
                    shared.received.fetch_add(read, Ordering::Relaxed);
                }
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
    let delivery = if frame_type.is_udp() && shared.side.peer().sends(frame_type) {
        // Datagrams touch no stream state: no need for the lock.
        UdpMessage::from_frame(frame).map_or(Delivery::Nothing, Delivery::Datagram)
    } else {
        let now = now();
        shared.with(|state| state.on_frame(frame, now))?
    };
    match delivery {
        Delivery::Nothing => {}
        Delivery::Stream { key, id, payload } => {
            let stream = MuxStream::new(key, id, shared.clone());
            if let Err(error) = incoming.streams.try_send((stream, payload)) {
                let (stream, _) = error.into_inner();
                stream.refuse();
            }
        }
        Delivery::Control(message) => match incoming.control.try_send(message) {
            Ok(()) => {}
            Err(TrySendError::Full(message)) => {
                crate::limited_warn!(shared.warnings, frame = %message.frame_type, "control queue full; control frame dropped");
            }
            Err(TrySendError::Closed(_)) => {}
        },
        Delivery::Datagram(message) => {
            if incoming.datagrams.try_send(message).is_err() {
                shared.udp_dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
    Ok(())
}
