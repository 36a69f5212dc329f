//! The QUIC control stream after the handshake: `[type][len][payload]` control messages (see
//! [`crate::transport::control`]) out of one queue and into another; UDP_CLOSE rides here too.

use bytes::BytesMut;
use quinn::{Connection, RecvStream, SendStream, VarInt};
use tokio::io::AsyncReadExt;
use tokio::sync::mpsc;

use std::sync::{Arc, OnceLock};

use super::{CLOSE_NORMAL, CLOSE_PROTOCOL_ERROR, CONTROL_SEND_QUEUE, NOT_READING};
use crate::transport::control::{self, ControlMessage};
use crate::transport::datagram::UdpMessage;
use crate::transport::frame::FrameType;
use crate::transport::side::Side;

/// The sending end of the control stream's queue (bounded, [`CONTROL_SEND_QUEUE`]): a full
/// queue means the peer does not read its control stream, and closes the tunnel.
#[derive(Clone, Debug)]
pub(super) struct ControlSender {
    queue: mpsc::Sender<ControlMessage>,
    connection: Connection,
    /// Why we closed the connection, if it was for that (quinn reports only `LocallyClosed`).
    local_reason: Arc<OnceLock<String>>,
}

impl ControlSender {
    pub(super) fn new(queue: mpsc::Sender<ControlMessage>, connection: Connection) -> Self {
        Self {
            queue,
            connection,
            local_reason: Arc::default(),
        }
    }

    /// Queues `message` without waiting; a full queue closes the tunnel with [`NOT_READING`]
    /// (logged once) and, like a closed one, hands the message back.
    pub(super) fn send(&self, message: ControlMessage) -> Result<(), ControlMessage> {
        match self.queue.try_send(message) {
            Ok(()) => Ok(()),
            Err(mpsc::error::TrySendError::Closed(message)) => Err(message),
            Err(mpsc::error::TrySendError::Full(message)) => {
                if self.local_reason.set(NOT_READING.to_owned()).is_ok() {
                    tracing::warn!(
                        peer = %self.connection.remote_address(),
                        queued = CONTROL_SEND_QUEUE,
                        "{NOT_READING}; closing the tunnel"
                    );
                }
                self.connection.close(
                    VarInt::from_u32(CLOSE_PROTOCOL_ERROR),
                    b"control stream not read",
                );
                Err(message)
            }
        }
    }

    /// Queues a message whose loss is harmless (UDP_CLOSE: the peer's idle timer ends the
    /// session anyway) without waiting; `Ok(false)` when the queue is full and it was dropped.
    /// A burst of them (thousands of sessions expiring at once) must not end the tunnel; a peer
    /// that does not read still is ended by the next PING, which must be delivered.
    pub(super) fn send_or_drop(&self, message: ControlMessage) -> Result<bool, ControlMessage> {
        match self.queue.try_send(message) {
            Ok(()) => Ok(true),
            Err(mpsc::error::TrySendError::Full(_)) => Ok(false),
            Err(mpsc::error::TrySendError::Closed(message)) => Err(message),
        }
    }

    /// Why we closed the tunnel, if we closed it because the peer did not read.
    pub(super) fn local_reason(&self) -> Option<String> {
        self.local_reason.get().cloned()
    }
}

pub(super) async fn write_control(
    connection: Connection,
    mut send: SendStream,
    mut queue: mpsc::Receiver<ControlMessage>,
) {
    let mut buffer = BytesMut::new();
    while let Some(message) = queue.recv().await {
        buffer.clear();
        if let Err(error) = control::encode(&message, &mut buffer) {
            tracing::warn!(%error, "control message not sent");
            continue;
        }
        while let Ok(more) = queue.try_recv() {
            if control::encode(&more, &mut buffer).is_err() {
                tracing::warn!("control message not sent: invalid");
            }
        }
        if send.write_all(&buffer).await.is_err() {
            break;
        }
    }
    let _ = send.finish();
    drop(connection);
}

pub(super) async fn read_control(
    connection: Connection,
    mut recv: RecvStream,
    mut buffer: BytesMut,
    side: Side,
    replies: ControlSender,
    deliver: mpsc::Sender<ControlMessage>,
    datagrams: mpsc::Sender<UdpMessage>,
) {
    loop {
        loop {
            match control::decode(&mut buffer) {
                Ok(Some(message)) if message.frame_type == FrameType::UdpClose => {
                    let Ok(id) = <[u8; 4]>::try_from(&message.payload[..]) else {
                        tracing::warn!("UDP_CLOSE without a session id on the control stream");
                        continue;
                    };
                    let close = UdpMessage::Close {
                        session: u32::from_be_bytes(id),
                    };
                    if datagrams.send(close).await.is_err() {
                        return;
                    }
                }
                Ok(Some(message)) => {
                    if side == Side::Edge && message.frame_type == FrameType::Ping {
                        // A hub flooding PINGs it does not read the answers to fills the
                        // queue: the tunnel closes.
                        if replies.send(ControlMessage::pong_for(&message)).is_err() {
                            return;
                        }
                    }
                    // A slow consumer must not stall the control stream; liveness is what
                    // matters and the newest CONFIG is resent by the hub on each change.
                    if deliver.try_send(message).is_err() {
                        tracing::debug!("control message dropped: session busy");
                    }
                }
                Ok(None) => break,
                Err(error) => {
                    tracing::warn!(%error, "protocol error on the QUIC control stream");
                    connection.close(
                        VarInt::from_u32(CLOSE_PROTOCOL_ERROR),
                        b"control protocol error",
                    );
                    return;
                }
            }
        }
        match recv.read_buf(&mut buffer).await {
            Ok(0) | Err(_) => {
                connection.close(VarInt::from_u32(CLOSE_NORMAL), b"control stream ended");
                return;
            }
            Ok(_) => {}
        }
    }
}
