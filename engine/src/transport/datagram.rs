//! UDP messages between edge and hub, independent of the transport, and their QUIC encodings.
//!
//! TLS carries them ([`UdpMessage::into_frame`]) as UDP_OPEN / UDP_DATA(_BACK) / UDP_CLOSE frames whose stream id is the
//! session id. QUIC carries them as RFC 9221 datagrams: `[session_id u32 BE][payload]`, and
//! `[session_id][0xFF][PROXY v2 header]` to open a session. A datagram too large for one QUIC
//! datagram travels on a unidirectional "overflow" stream as `[session_id][len u32][payload]`,
//! and UDP_CLOSE travels on the control stream with the session id as payload (both reliable).

use bytes::{Buf, BufMut, Bytes, BytesMut};

use super::frame::{Frame, FrameType};
use crate::proxy_protocol::v2::SIGNATURE;

/// One UDP message of a session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UdpMessage {
    /// A new session; `header` is the PROXY v2 DGRAM header with client and edge addresses.
    Open { session: u32, header: Bytes },
    /// One datagram of a session.
    Data { session: u32, payload: Bytes },
    /// The session ended (idle, or unknown to the peer).
    Close { session: u32 },
}

impl UdpMessage {
    /// The TLS mux's frame for this message; `hub_side` picks UDP_DATA_BACK for data.
    pub fn into_frame(self, hub_side: bool) -> Frame {
        match self {
            Self::Open { session, header } => Frame::udp_open(session, header),
            Self::Data { session, payload } => Frame::udp_data(session, hub_side, payload),
            Self::Close { session } => Frame::udp_close(session),
        }
    }

    /// The message a UDP_* frame carries; `None` for any other frame.
    pub fn from_frame(frame: Frame) -> Option<Self> {
        let session = frame.stream_id;
        Some(match frame.frame_type {
            FrameType::UdpOpen => Self::Open {
                session,
                header: frame.payload,
            },
            FrameType::UdpData | FrameType::UdpDataBack => Self::Data {
                session,
                payload: frame.payload,
            },
            FrameType::UdpClose => Self::Close { session },
            _ => return None,
        })
    }
}

/// A UDP message could not be queued (either transport).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum UdpSendError {
    /// The caller drops (and counts) the datagram.
    #[error("the tunnel's datagram queue is full")]
    Full,
    #[error("the tunnel is closed")]
    Closed,
}

/// Marker byte after the session id of a QUIC session-open datagram.
pub(crate) const OPEN_MARKER: u8 = 0xFF;
/// Largest UDP payload (IPv4: 65,535 - 20 - 8).
pub(crate) const MAX_UDP_PAYLOAD: usize = 65_507;
/// Overflow-stream record header: session id and length.
const OVERFLOW_HEADER: usize = 8;

/// A malformed QUIC datagram or overflow record.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum DatagramError {
    #[error("datagram of {0} bytes is shorter than its 4-byte session id")]
    TooShort(usize),
    #[error("overflow record of {0} bytes exceeds the {MAX_UDP_PAYLOAD}-byte UDP limit")]
    TooLong(usize),
}

/// Encodes a session open as one QUIC datagram.
pub fn encode_open(session: u32, header: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(5 + header.len());
    out.put_u32(session);
    out.put_u8(OPEN_MARKER);
    out.put_slice(header);
    out.freeze()
}

/// Encodes one datagram of a session as one QUIC datagram.
pub(crate) fn encode_data(session: u32, payload: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(4 + payload.len());
    out.put_u32(session);
    out.put_slice(payload);
    out.freeze()
}

/// Decodes a QUIC datagram. An open is recognised by the marker *followed by the PROXY v2
/// signature*, so a data payload that merely starts with 0xFF is not mistaken for one.
pub(crate) fn decode(mut datagram: Bytes) -> Result<UdpMessage, DatagramError> {
    if datagram.len() < 4 {
        return Err(DatagramError::TooShort(datagram.len()));
    }
    let session = datagram.get_u32();
    let is_open = datagram.first() == Some(&OPEN_MARKER)
        && datagram.get(1..1 + SIGNATURE.len()) == Some(&SIGNATURE[..]);
    if is_open {
        datagram.advance(1);
        return Ok(UdpMessage::Open {
            session,
            header: datagram,
        });
    }
    Ok(UdpMessage::Data {
        session,
        payload: datagram,
    })
}

/// Appends one overflow-stream record.
pub(crate) fn encode_overflow(session: u32, payload: &[u8], out: &mut BytesMut) {
    out.reserve(OVERFLOW_HEADER + payload.len());
    out.put_u32(session);
    out.put_u32(u32::try_from(payload.len()).unwrap_or(u32::MAX));
    out.put_slice(payload);
}

/// Splits one overflow record off `buf`; `Ok(None)` until it is complete.
pub(crate) fn decode_overflow(buf: &mut BytesMut) -> Result<Option<(u32, Bytes)>, DatagramError> {
    let Some(header) = buf.get(..OVERFLOW_HEADER) else {
        return Ok(None);
    };
    let mut header = header;
    let session = header.get_u32();
    let len = usize::try_from(header.get_u32()).unwrap_or(usize::MAX);
    if len > MAX_UDP_PAYLOAD {
        return Err(DatagramError::TooLong(len));
    }
    if buf.len() < OVERFLOW_HEADER + len {
        buf.reserve(OVERFLOW_HEADER + len - buf.len());
        return Ok(None);
    }
    buf.advance(OVERFLOW_HEADER);
    Ok(Some((session, buf.split_to(len).freeze())))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn open_and_data_round_trip_and_are_told_apart() {
        let mut header = vec![];
        header.extend_from_slice(&SIGNATURE);
        header.extend_from_slice(&[0x21, 0x12, 0, 12]);
        let open = encode_open(7, &header);
        assert_eq!(&open[..5], &[0, 0, 0, 7, 0xFF]);
        assert_eq!(
            decode(open).unwrap(),
            UdpMessage::Open {
                session: 7,
                header: Bytes::from(header)
            }
        );
        // A payload starting with 0xFF but no signature is data.
        let data = encode_data(9, &[0xFF, 1, 2]);
        assert_eq!(
            decode(data).unwrap(),
            UdpMessage::Data {
                session: 9,
                payload: Bytes::from_static(&[0xFF, 1, 2])
            }
        );
        assert_eq!(
            decode(Bytes::from_static(&[1, 2])),
            Err(DatagramError::TooShort(2))
        );
        assert_eq!(
            decode(encode_data(3, &[])).unwrap(),
            UdpMessage::Data {
                session: 3,
                payload: Bytes::new()
            }
        );
    }

    #[test]
    fn overflow_records_split_and_refuse_oversized() {
        let mut buf = BytesMut::new();
        encode_overflow(1, &[5; 70], &mut buf);
        encode_overflow(2, &[6; 65_507], &mut buf);
        let mut partial = buf.split_to(40);
        assert_eq!(decode_overflow(&mut partial).unwrap(), None);
        partial.unsplit(buf);
        let mut buf = partial;
        assert_eq!(
            decode_overflow(&mut buf).unwrap(),
            Some((1, Bytes::from(vec![5; 70])))
        );
        let (session, payload) = decode_overflow(&mut buf).unwrap().unwrap();
        assert_eq!((session, payload.len()), (2, 65_507));
        assert!(buf.is_empty());
        let mut bad = BytesMut::from(&[0, 0, 0, 1, 0, 1, 0, 0][..]);
        assert_eq!(
            decode_overflow(&mut bad),
            Err(DatagramError::TooLong(65_536))
        );
    }

    proptest! {
        #[test]
        fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = decode(Bytes::from(bytes.clone()));
            let mut buf = BytesMut::from(&bytes[..]);
            let _ = decode_overflow(&mut buf);
        }

        #[test]
        fn data_round_trips(session in any::<u32>(), payload in proptest::collection::vec(any::<u8>(), 0..256)) {
            let decoded = decode(encode_data(session, &payload)).unwrap();
            let is_open = matches!(decoded, UdpMessage::Open { .. });
            if !is_open {
                prop_assert_eq!(decoded, UdpMessage::Data { session, payload: Bytes::from(payload) });
            }
        }
    }
}
