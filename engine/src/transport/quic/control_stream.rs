//! The QUIC control stream after the handshake: `[type][len][payload]` control messages (see
//! [`crate::transport::control`]) out of one queue and into another; UDP_CLOSE rides here too.

use bytes::BytesMut;
use quinn::{Connection, RecvStream, SendStream, VarInt};
use tokio::io::AsyncReadExt;
use tokio::sync::mpsc;

use super::{ControlSender, QuicSide, CLOSE_NORMAL, CLOSE_PROTOCOL_ERROR};
use crate::transport::control::{self, ControlMessage};
use crate::transport::datagram::UdpMessage;
use crate::transport::frame::FrameType;

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
    side: QuicSide,
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
                    if side == QuicSide::Edge && message.frame_type == FrameType::Ping {
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
