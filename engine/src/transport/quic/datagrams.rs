//! UDP over QUIC: RFC 9221 datagrams, and the unidirectional overflow streams that carry a
//! datagram too large for one QUIC datagram (see [`crate::transport::datagram`]).

use bytes::{Bytes, BytesMut};
use quinn::{Connection, SendStream, VarInt};
use tokio::io::AsyncReadExt;
use tokio::sync::mpsc;
use tokio_util::task::TaskTracker;

use super::CLOSE_PROTOCOL_ERROR;
use crate::transport::datagram::{self, UdpMessage};

/// Incoming QUIC datagrams and the messages of the overflow streams become UDP messages, in
/// one place, datagrams first: a session's small datagram sent just before a large one (which
/// took the overflow stream) was received no later than the large one, so serving whatever
/// datagram is ready before an overflow message keeps that order. (The other way round, large
/// then small, the sender keeps the session on the overflow stream; see `datagram_path`.)
/// Malformed datagrams are dropped; so are datagrams the queue has no room for, while overflow
/// messages wait for room (they are the reliable path).
pub(super) async fn read_datagrams(
    connection: Connection,
    mut overflow: mpsc::Receiver<UdpMessage>,
    queue: mpsc::Sender<UdpMessage>,
) {
    loop {
        tokio::select! {
            biased;
            received = connection.read_datagram() => {
                let Ok(bytes) = received else { return };
                match datagram::decode(bytes) {
                    Ok(message) => {
                        if queue.try_send(message).is_err() && queue.is_closed() {
                            return;
                        }
                    }
                    Err(error) => tracing::debug!(%error, "malformed datagram dropped"),
                }
            }
            Some(message) = overflow.recv() => {
                if queue.send(message).await.is_err() {
                    return;
                }
            }
        }
    }
}

/// Reads the peer's overflow streams (datagrams too large for one QUIC datagram) and hands
/// their messages to [`read_datagrams`].
pub(super) async fn read_overflow_streams(
    connection: Connection,
    queue: mpsc::Sender<UdpMessage>,
    tasks: TaskTracker,
) {
    while let Ok(mut recv) = connection.accept_uni().await {
        let queue = queue.clone();
        let connection = connection.clone();
        tasks.spawn(async move {
            let mut buffer = BytesMut::with_capacity(64 * 1024);
            loop {
                loop {
                    match datagram::decode_overflow(&mut buffer) {
                        Ok(Some((session, payload))) => {
                            // Reliable path: wait for room rather than drop.
                            if queue
                                .send(UdpMessage::Data { session, payload })
                                .await
                                .is_err()
                            {
                                return;
                            }
                        }
                        Ok(None) => break,
                        Err(error) => {
                            tracing::warn!(%error, "protocol error on a datagram overflow stream");
                            connection.close(
                                VarInt::from_u32(CLOSE_PROTOCOL_ERROR),
                                b"overflow protocol error",
                            );
                            return;
                        }
                    }
                }
                match recv.read_buf(&mut buffer).await {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                }
            }
        });
    }
}

/// Writes oversized datagrams on one unidirectional stream, opened on first use.
pub(super) async fn write_overflow(
    connection: Connection,
    mut queue: mpsc::Receiver<(u32, Bytes)>,
) {
    let mut stream: Option<SendStream> = None;
    let mut buffer = BytesMut::new();
    while let Some((session, payload)) = queue.recv().await {
        buffer.clear();
        datagram::encode_overflow(session, &payload, &mut buffer);
        while let Ok((session, payload)) = queue.try_recv() {
            datagram::encode_overflow(session, &payload, &mut buffer);
            if buffer.len() > 1 << 20 {
                break;
            }
        }
        if stream.is_none() {
            match connection.open_uni().await {
                Ok(opened) => stream = Some(opened),
                Err(_) => return,
            }
        }
        let Some(send) = stream.as_mut() else { return };
        if send.write_all(&buffer).await.is_err() {
            return;
        }
    }
}
