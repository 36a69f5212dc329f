//! Messages on the QUIC control stream: `[type: u8][length: u32 BE][payload]`.
//!
//! QUIC gives every TCP stream its own QUIC stream and carries UDP as datagrams, so no stream
//! id is needed here. The type codes, payload caps and length check are the TLS frames' own
//! ([`FrameType`]); only CONFIG, PING, PONG and the UDP session control types (UDP_OPEN,
//! UDP_CLOSE) may appear on this stream, everything else is a protocol violation.

use bytes::{BufMut, Bytes, BytesMut};

use super::frame::{FrameError, FrameType};

/// Length of a control message header in bytes.
pub(crate) const HEADER_LEN: usize = 5;

/// One control message. `encode` re-checks the public fields before writing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ControlMessage {
    pub frame_type: FrameType,
    pub payload: Bytes,
}

/// Whether `frame_type` may travel on the QUIC control stream.
pub(crate) const fn is_allowed(frame_type: FrameType) -> bool {
    matches!(
        frame_type,
        FrameType::Config
            | FrameType::Ping
            | FrameType::Pong
            | FrameType::UdpOpen
            | FrameType::UdpClose
    )
}

/// Type and length checks for one message, shared by encoding and decoding.
fn check(frame_type: FrameType, len: usize) -> Result<u32, FrameError> {
    if !is_allowed(frame_type) {
        return Err(FrameError::NotAControlMessage { frame_type });
    }
    frame_type.check_payload_len(len)
}

impl ControlMessage {
    /// A message, checked against the allowed types and the type's payload cap.
    pub fn new(frame_type: FrameType, payload: impl Into<Bytes>) -> Result<Self, FrameError> {
        let message = Self {
            frame_type,
            payload: payload.into(),
        };
        check(message.frame_type, message.payload.len())?;
        Ok(message)
    }

    /// CONFIG; `json` is the [`super::handshake::EdgeConfigPush`] JSON.
    pub fn config(json: impl Into<Bytes>) -> Self {
        Self {
            frame_type: FrameType::Config,
            payload: json.into(),
        }
    }

    /// PING carrying `value` as u64 BE.
    pub fn ping(value: u64) -> Self {
        Self {
            frame_type: FrameType::Ping,
            payload: Bytes::copy_from_slice(&value.to_be_bytes()),
        }
    }

    /// The PONG answering `ping`: its opaque payload echoed unchanged.
    pub fn pong_for(ping: &Self) -> Self {
        Self {
            frame_type: FrameType::Pong,
            payload: ping.payload.clone(),
        }
    }
}

/// Appends `message` to `dst`, or refuses (writing nothing) a type not allowed here or a
/// payload over its cap.
pub(crate) fn encode(message: &ControlMessage, dst: &mut BytesMut) -> Result<(), FrameError> {
    let len = check(message.frame_type, message.payload.len())?;
    dst.reserve(HEADER_LEN + message.payload.len());
    dst.put_u8(message.frame_type.code());
    dst.put_u32(len);
    dst.put_slice(&message.payload);
    Ok(())
}

/// Splits one complete message off the front of `buf` without copying its payload.
///
/// `Ok(None)`: not enough bytes yet (nothing consumed). `Err`: unknown or disallowed type, or
/// a length over the cap, decided from the 5 header bytes alone.
pub(crate) fn decode(buf: &mut BytesMut) -> Result<Option<ControlMessage>, FrameError> {
    let Some(&[code, l0, l1, l2, l3]) = buf.first_chunk::<HEADER_LEN>() else {
        return Ok(None);
    };
    let frame_type = FrameType::try_from(code)?;
    if !is_allowed(frame_type) {
        return Err(FrameError::NotAControlMessage { frame_type });
    }
    let len = u32::from_be_bytes([l0, l1, l2, l3]);
    let payload = super::take_payload(buf, HEADER_LEN, frame_type, len)?;
    Ok(payload.map(|payload| ControlMessage {
        frame_type,
        payload,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const ALLOWED: [FrameType; 5] = [
        FrameType::Config,
        FrameType::Ping,
        FrameType::Pong,
        FrameType::UdpOpen,
        FrameType::UdpClose,
    ];

    #[test]
    fn allowed_types() {
        for frame_type in FrameType::ALL {
            assert_eq!(is_allowed(frame_type), ALLOWED.contains(&frame_type));
        }
    }

    #[test]
    fn hand_written_vectors() {
        let cases: [(ControlMessage, &[u8]); 4] = [
            (
                ControlMessage::ping(0x0102_0304_0506_0708),
                &[0x07, 0, 0, 0, 8, 1, 2, 3, 4, 5, 6, 7, 8],
            ),
            (
                ControlMessage::config(&b"{\"a\":1}"[..]),
                &[0x06, 0, 0, 0, 7, b'{', b'"', b'a', b'"', b':', b'1', b'}'],
            ),
            (
                ControlMessage::new(FrameType::UdpClose, Bytes::new()).unwrap(),
                &[0x0E, 0, 0, 0, 0],
            ),
            (
                ControlMessage::new(FrameType::UdpOpen, &b"\r\n\r\n"[..]).unwrap(),
                &[0x0B, 0, 0, 0, 4, b'\r', b'\n', b'\r', b'\n'],
            ),
        ];
        for (message, bytes) in cases {
            let mut out = BytesMut::new();
            encode(&message, &mut out).unwrap();
            assert_eq!(&out[..], bytes);
            let mut input = BytesMut::from(bytes);
            input.put_u8(0x07); // start of a next message stays in the buffer
            assert_eq!(decode(&mut input), Ok(Some(message)));
            assert_eq!(&input[..], &[0x07]);
            assert_eq!(decode(&mut input), Ok(None));
        }
    }

    #[test]
    fn refuses_stream_types_with_a_clear_error() {
        for frame_type in FrameType::ALL.into_iter().filter(|t| !is_allowed(*t)) {
            let mut b = BytesMut::from(&[frame_type.code(), 0, 0, 0, 0][..]);
            assert_eq!(
                decode(&mut b),
                Err(FrameError::NotAControlMessage { frame_type })
            );
            let message = ControlMessage {
                frame_type,
                payload: Bytes::new(),
            };
            assert_eq!(
                encode(&message, &mut BytesMut::new()),
                Err(FrameError::NotAControlMessage { frame_type })
            );
            assert!(ControlMessage::new(frame_type, Bytes::new()).is_err());
        }
        assert_eq!(
            FrameError::NotAControlMessage {
                frame_type: FrameType::Data
            }
            .to_string(),
            "DATA is not allowed on the QUIC control stream"
        );
    }

    #[test]
    fn refuses_unknown_type_and_oversized_length_from_the_header() {
        let mut b = BytesMut::from(&[0x42, 0, 0, 0, 0][..]);
        assert_eq!(decode(&mut b), Err(FrameError::UnknownType(0x42)));
        // CONFIG claiming 1 MiB + 1 with no payload present.
        let mut b = BytesMut::from(&[0x06, 0, 0x10, 0, 1][..]);
        assert_eq!(
            decode(&mut b),
            Err(FrameError::PayloadTooLong {
                frame_type: FrameType::Config,
                len: (1 << 20) + 1,
                max: 1 << 20
            })
        );
        let mut b = BytesMut::from(&[0x0E, 0, 0, 0, 5, 0][..]);
        assert!(matches!(
            decode(&mut b),
            Err(FrameError::PayloadTooLong { max: 4, .. })
        ));
        let mut b = BytesMut::from(&[0x0B, 0xFF, 0xFF, 0xFF, 0xFF][..]);
        assert!(matches!(
            decode(&mut b),
            Err(FrameError::PayloadTooLong { .. })
        ));
        assert!(b.capacity() < 1024);
        let oversized = ControlMessage::config(vec![0; (1 << 20) + 1]);
        assert!(encode(&oversized, &mut BytesMut::new()).is_err());
    }

    fn arb_message() -> impl Strategy<Value = ControlMessage> {
        proptest::sample::select(ALLOWED.to_vec()).prop_flat_map(|frame_type| {
            let max = frame_type.max_payload().min(2048);
            proptest::collection::vec(any::<u8>(), 0..=max).prop_map(move |payload| {
                ControlMessage {
                    frame_type,
                    payload: payload.into(),
                }
            })
        })
    }

    proptest! {
        #[test]
        fn round_trip(messages in proptest::collection::vec(arb_message(), 1..8)) {
            let mut b = BytesMut::new();
            for message in &messages {
                encode(message, &mut b).unwrap();
            }
            for message in &messages {
                prop_assert_eq!(decode(&mut b), Ok(Some(message.clone())));
            }
            prop_assert_eq!(decode(&mut b), Ok(None));
            prop_assert!(b.is_empty());
        }

        #[test]
        fn byte_at_a_time(message in arb_message()) {
            let mut encoded = BytesMut::new();
            encode(&message, &mut encoded).unwrap();
            let (last, init) = encoded.split_last().unwrap();
            let mut b = BytesMut::new();
            for &byte in init {
                b.put_u8(byte);
                prop_assert_eq!(decode(&mut b), Ok(None));
            }
            b.put_u8(*last);
            prop_assert_eq!(decode(&mut b), Ok(Some(message)));
            prop_assert!(b.is_empty());
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            let mut b = BytesMut::from(&bytes[..]);
            while let Ok(Some(message)) = decode(&mut b) {
                prop_assert!(is_allowed(message.frame_type));
                prop_assert!(message.payload.len() <= message.frame_type.max_payload());
            }
        }
    }
}
