//! Multiplexing frames of the TLS transport.
//!
//! Every frame is `[stream_id: u32 BE][type: u8][length: u32 BE][payload]`. Stream 0 is the
//! control stream (CONFIG, PING, PONG); every other type belongs to a TCP stream or UDP session
//! and so needs a non-zero stream id. Each type has a payload cap, checked from the header alone,
//! so a peer can never make us buffer more than the largest cap (1 MiB) for one frame.
//!
//! The type table, the caps and the length check live on [`FrameType`] and are shared with the
//! QUIC control messages in [`super::control`].

use bytes::{BufMut, Bytes, BytesMut};
use std::fmt;
use thiserror::Error;

/// Length of a frame header in bytes.
/// Payload of a CLOSE / CLOSE_BACK that aborts its stream.
pub(crate) const ABORT: u8 = 1;

pub(crate) const HEADER_LEN: usize = 9;

/// The control stream's id.
pub(crate) const CONTROL_STREAM: u32 = 0;

/// Payload cap of the data types: 64 KiB, so a UDP datagram (at most 65,507 bytes) fits one frame.
pub(crate) const MAX_DATA_PAYLOAD: usize = 64 * 1024;

/// Payload cap of CONFIG: the config JSON including the firewall snapshot.
pub(crate) const MAX_CONFIG_PAYLOAD: usize = 1024 * 1024;

/// Payload cap of OPEN: one PROXY protocol v1 line (107 bytes is that protocol's own maximum).
pub(crate) const MAX_OPEN_PAYLOAD: usize = 107;

/// Payload cap of UDP_OPEN: one PROXY protocol v2 header with addresses and a few TLVs.
pub(crate) const MAX_UDP_OPEN_PAYLOAD: usize = 256;

/// Payload length of WINDOW_UPDATE(_BACK): the consumed byte count as a u32 BE.
pub(crate) const WINDOW_UPDATE_LEN: usize = 4;

/// Payload cap of UDP_CLOSE: on the QUIC control stream, the session id (u32 BE).
pub(crate) const UDP_CLOSE_SESSION_LEN: usize = 4;

/// Payload cap of PING/PONG: an opaque u64 BE the peer echoes back.
pub(crate) const MAX_PING_PAYLOAD: usize = 8;

/// Why a frame (or control message) was refused. Every variant means the peer broke the
/// protocol, so the connection should be dropped.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum FrameError {
    #[error("unknown frame type 0x{0:02x}")]
    UnknownType(u8),
    #[error("{frame_type} payload of {len} bytes exceeds its cap of {max} bytes")]
    PayloadTooLong {
        frame_type: FrameType,
        len: usize,
        max: usize,
    },
    #[error("{frame_type} payload must be exactly {expected} bytes, got {len}")]
    WrongPayloadLen {
        frame_type: FrameType,
        len: usize,
        expected: usize,
    },
    #[error("{frame_type} belongs to the control stream 0 but was sent on stream {stream_id}")]
    NotOnControlStream {
        frame_type: FrameType,
        stream_id: u32,
    },
    #[error("{frame_type} needs a non-zero stream id but was sent on the control stream 0")]
    OnControlStream { frame_type: FrameType },
    #[error("{frame_type} is not allowed on the QUIC control stream")]
    NotAControlMessage { frame_type: FrameType },
    #[error("expected WINDOW_UPDATE or WINDOW_UPDATE_BACK, got {frame_type}")]
    NotWindowUpdate { frame_type: FrameType },
}

/// Frame type codes. The numbers are the wire format and must never change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum FrameType {
    /// Edge → hub: new TCP stream; payload is the client's PROXY v1 line.
    Open = 0x01,
    /// Edge → hub: TCP stream bytes.
    Data = 0x02,
    /// Edge → hub: the client side of a stream closed.
    Close = 0x03,
    /// Hub → edge: TCP stream bytes.
    DataBack = 0x04,
    /// Hub → edge: the upstream side of a stream closed.
    CloseBack = 0x05,
    /// Hub → edge, stream 0: new configuration (the handshake's config JSON).
    Config = 0x06,
    /// Stream 0: liveness probe with an opaque payload.
    Ping = 0x07,
    /// Stream 0: echo of a PING's payload.
    Pong = 0x08,
    /// Edge → hub: the edge consumed that many bytes of DATA_BACK (credit for the hub).
    WindowUpdate = 0x09,
    /// Hub → edge: the hub consumed that many bytes of DATA (credit for the edge).
    WindowUpdateBack = 0x0A,
    /// Edge → hub: new UDP session; payload is a PROXY v2 header.
    UdpOpen = 0x0B,
    /// Edge → hub: one UDP datagram.
    UdpData = 0x0C,
    /// Hub → edge: one UDP datagram.
    UdpDataBack = 0x0D,
    /// Either way: the UDP session ended.
    UdpClose = 0x0E,
}

impl FrameType {
    /// Every frame type, in code order.
    pub const ALL: [Self; 14] = [
        Self::Open,
        Self::Data,
        Self::Close,
        Self::DataBack,
        Self::CloseBack,
        Self::Config,
        Self::Ping,
        Self::Pong,
        Self::WindowUpdate,
        Self::WindowUpdateBack,
        Self::UdpOpen,
        Self::UdpData,
        Self::UdpDataBack,
        Self::UdpClose,
    ];

    /// The wire code.
    pub const fn code(self) -> u8 {
        self as u8
    }

    /// The protocol's name of the type, as used in error messages.
    pub const fn name(self) -> &'static str {
        match self {
            Self::Open => "OPEN",
            Self::Data => "DATA",
            Self::Close => "CLOSE",
            Self::DataBack => "DATA_BACK",
            Self::CloseBack => "CLOSE_BACK",
            Self::Config => "CONFIG",
            Self::Ping => "PING",
            Self::Pong => "PONG",
            Self::WindowUpdate => "WINDOW_UPDATE",
            Self::WindowUpdateBack => "WINDOW_UPDATE_BACK",
            Self::UdpOpen => "UDP_OPEN",
            Self::UdpData => "UDP_DATA",
            Self::UdpDataBack => "UDP_DATA_BACK",
            Self::UdpClose => "UDP_CLOSE",
        }
    }

    /// Largest payload this type may carry. For WINDOW_UPDATE(_BACK) it is also the only
    /// allowed length (see [`Self::has_fixed_len`]).
    pub const fn max_payload(self) -> usize {
        match self {
            Self::Data | Self::DataBack | Self::UdpData | Self::UdpDataBack => MAX_DATA_PAYLOAD,
            Self::Config => MAX_CONFIG_PAYLOAD,
            Self::Open => MAX_OPEN_PAYLOAD,
            Self::UdpOpen => MAX_UDP_OPEN_PAYLOAD,
            Self::WindowUpdate | Self::WindowUpdateBack => WINDOW_UPDATE_LEN,
            Self::Ping | Self::Pong => MAX_PING_PAYLOAD,
            // Empty: the sender's half closed (FIN). One byte, [`ABORT`]: the stream was aborted.
            Self::Close | Self::CloseBack => 1,
            // In a TLS frame the session id is the frame's stream id and the payload is empty;
            // on the QUIC control stream (no stream ids) it carries the session id, u32 BE.
            Self::UdpClose => UDP_CLOSE_SESSION_LEN,
        }
    }

    /// Whether the payload must be exactly [`Self::max_payload`] bytes: a window update is a
    /// fixed-width counter, and a shorter one cannot be read unambiguously.
    pub const fn has_fixed_len(self) -> bool {
        matches!(self, Self::WindowUpdate | Self::WindowUpdateBack)
    }

    /// Whether the type travels on the control stream 0 (and only there).
    pub const fn is_control(self) -> bool {
        matches!(self, Self::Config | Self::Ping | Self::Pong)
    }

    /// UDP_OPEN, UDP_DATA, UDP_DATA_BACK, UDP_CLOSE.
    pub const fn is_udp(self) -> bool {
        matches!(
            self,
            Self::UdpOpen | Self::UdpData | Self::UdpDataBack | Self::UdpClose
        )
    }

    /// Checks a payload length against this type's cap and returns it as the header's u32.
    /// Used when decoding (on the header's length, before waiting for the payload) and when
    /// encoding, by both the frame and the control-message codec.
    pub fn check_payload_len(self, len: usize) -> Result<u32, FrameError> {
        let max = self.max_payload();
        if self.has_fixed_len() && len != max {
            return Err(FrameError::WrongPayloadLen {
                frame_type: self,
                len,
                expected: max,
            });
        }
        if len > max {
            return Err(FrameError::PayloadTooLong {
                frame_type: self,
                len,
                max,
            });
        }
        u32::try_from(len).map_err(|_| FrameError::PayloadTooLong {
            frame_type: self,
            len,
            max,
        })
    }

    /// Checks that control types use stream 0 and all other types a non-zero stream id.
    pub fn check_stream_id(self, stream_id: u32) -> Result<(), FrameError> {
        match (self.is_control(), stream_id == CONTROL_STREAM) {
            (true, false) => Err(FrameError::NotOnControlStream {
                frame_type: self,
                stream_id,
            }),
            (false, true) => Err(FrameError::OnControlStream { frame_type: self }),
            _ => Ok(()),
        }
    }
}

impl TryFrom<u8> for FrameType {
    type Error = FrameError;

    fn try_from(code: u8) -> Result<Self, Self::Error> {
        Self::ALL
            .into_iter()
            .find(|t| t.code() == code)
            .ok_or(FrameError::UnknownType(code))
    }
}

impl From<FrameType> for u8 {
    fn from(frame_type: FrameType) -> Self {
        frame_type.code()
    }
}

impl fmt::Display for FrameType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A validated frame header, for readers that read the 9 header bytes and the payload
/// separately (e.g. with `read_exact`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FrameHeader {
    pub stream_id: u32,
    pub frame_type: FrameType,
    /// Payload length, already checked against the type's cap.
    pub len: u32,
}

/// One frame. The fields are public for pattern matching; [`encode`] re-checks them, so a
/// frame built by hand can never put an invalid frame on the wire.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pub stream_id: u32,
    pub frame_type: FrameType,
    pub payload: Bytes,
}

impl Frame {
    /// A frame, checked against the stream id rule and the type's payload cap.
    pub fn new(
        stream_id: u32,
        frame_type: FrameType,
        payload: impl Into<Bytes>,
    ) -> Result<Self, FrameError> {
        let frame = Self {
            stream_id,
            frame_type,
            payload: payload.into(),
        };
        frame.validate()?;
        Ok(frame)
    }

    /// Checks the stream id rule and the payload length.
    pub fn validate(&self) -> Result<(), FrameError> {
        self.frame_type.check_stream_id(self.stream_id)?;
        self.frame_type.check_payload_len(self.payload.len())?;
        Ok(())
    }

    /// OPEN carrying the client's PROXY v1 line.
    pub fn open(stream_id: u32, proxy_line: impl Into<Bytes>) -> Self {
        Self::unchecked(stream_id, FrameType::Open, proxy_line.into())
    }

    /// DATA (edge → hub) or, with `back`, DATA_BACK (hub → edge).
    pub fn data(stream_id: u32, back: bool, payload: impl Into<Bytes>) -> Self {
        let frame_type = if back {
            FrameType::DataBack
        } else {
            FrameType::Data
        };
        Self::unchecked(stream_id, frame_type, payload.into())
    }

    /// CLOSE (edge → hub) or, with `back`, CLOSE_BACK (hub → edge).
    pub fn close(stream_id: u32, back: bool) -> Self {
        Self::unchecked(stream_id, Self::close_type(back), Bytes::new())
    }

    /// CLOSE / CLOSE_BACK with the [`ABORT`] byte: the stream was aborted (its data is
    /// incomplete); the peer resets its side instead of closing it normally.
    pub fn abort(stream_id: u32, back: bool) -> Self {
        Self::unchecked(
            stream_id,
            Self::close_type(back),
            Bytes::from_static(&[ABORT]),
        )
    }

    /// Whether a CLOSE / CLOSE_BACK frame aborts its stream (rather than closing it).
    pub fn is_abort(&self) -> bool {
        !self.payload.is_empty()
    }

    fn close_type(back: bool) -> FrameType {
        if back {
            FrameType::CloseBack
        } else {
            FrameType::Close
        }
    }

    /// WINDOW_UPDATE (sent by the edge: credit for DATA_BACK) or, with `back`,
    /// WINDOW_UPDATE_BACK (sent by the hub: credit for DATA), granting `consumed` bytes.
    pub fn window_update(stream_id: u32, back: bool, consumed: u32) -> Self {
        let frame_type = if back {
            FrameType::WindowUpdateBack
        } else {
            FrameType::WindowUpdate
        };
        let payload = Bytes::copy_from_slice(&consumed.to_be_bytes());
        Self::unchecked(stream_id, frame_type, payload)
    }

    /// CONFIG on the control stream; `json` is the [`super::handshake::EdgeConfigPush`] JSON.
    pub fn config(json: impl Into<Bytes>) -> Self {
        Self::unchecked(CONTROL_STREAM, FrameType::Config, json.into())
    }

    /// PING on the control stream carrying `value` (e.g. a send timestamp) as u64 BE.
    pub fn ping(value: u64) -> Self {
        let payload = Bytes::copy_from_slice(&value.to_be_bytes());
        Self::unchecked(CONTROL_STREAM, FrameType::Ping, payload)
    }

    /// The PONG answering `ping`: its payload echoed unchanged (the payload is opaque).
    pub fn pong_for(ping: &Self) -> Self {
        Self::unchecked(CONTROL_STREAM, FrameType::Pong, ping.payload.clone())
    }

    /// UDP_OPEN carrying a PROXY v2 header.
    pub fn udp_open(stream_id: u32, proxy_header: impl Into<Bytes>) -> Self {
        Self::unchecked(stream_id, FrameType::UdpOpen, proxy_header.into())
    }

    /// UDP_DATA (edge → hub) or, with `back`, UDP_DATA_BACK (hub → edge): one datagram.
    pub fn udp_data(stream_id: u32, back: bool, datagram: impl Into<Bytes>) -> Self {
        let frame_type = if back {
            FrameType::UdpDataBack
        } else {
            FrameType::UdpData
        };
        Self::unchecked(stream_id, frame_type, datagram.into())
    }

    /// UDP_CLOSE.
    pub fn udp_close(stream_id: u32) -> Self {
        Self::unchecked(stream_id, FrameType::UdpClose, Bytes::new())
    }

    /// The constructors above leave checking to [`encode`], so they stay infallible even for
    /// data-dependent payload sizes.
    fn unchecked(stream_id: u32, frame_type: FrameType, payload: Bytes) -> Self {
        Self {
            stream_id,
            frame_type,
            payload,
        }
    }
}

/// The 9 header bytes. Does not check anything: callers that write header and payload
/// separately should have checked the length with [`FrameType::check_payload_len`].
pub(crate) fn encode_header(stream_id: u32, frame_type: FrameType, len: u32) -> [u8; HEADER_LEN] {
    let [s0, s1, s2, s3] = stream_id.to_be_bytes();
    let [l0, l1, l2, l3] = len.to_be_bytes();
    [s0, s1, s2, s3, frame_type.code(), l0, l1, l2, l3]
}

/// Parses and checks a header: known type, stream id rule, payload cap.
pub(crate) fn decode_header(header: [u8; HEADER_LEN]) -> Result<FrameHeader, FrameError> {
    let [s0, s1, s2, s3, code, l0, l1, l2, l3] = header;
    let stream_id = u32::from_be_bytes([s0, s1, s2, s3]);
    let frame_type = FrameType::try_from(code)?;
    let len = u32::from_be_bytes([l0, l1, l2, l3]);
    frame_type.check_stream_id(stream_id)?;
    frame_type.check_payload_len(usize::try_from(len).unwrap_or(usize::MAX))?;
    Ok(FrameHeader {
        stream_id,
        frame_type,
        len,
    })
}

/// Appends `frame` to `dst`. Refuses (writing nothing) a frame the peer would reject: bad
/// stream id or payload over the cap. The payload size is data-dependent (a large firewall
/// snapshot can exceed CONFIG's 1 MiB), so this is an error, not a panic.
pub fn encode(frame: &Frame, dst: &mut BytesMut) -> Result<(), FrameError> {
    let header = checked_header(frame)?;
    dst.reserve(HEADER_LEN + frame.payload.len());
    dst.put_slice(&header);
    dst.put_slice(&frame.payload);
    Ok(())
}

/// The header of `frame` after the checks the peer makes (stream id rule, payload cap): what
/// [`encode`] and the TLS mux's batching writer put in front of the payload.
pub(crate) fn checked_header(frame: &Frame) -> Result<[u8; HEADER_LEN], FrameError> {
    frame.frame_type.check_stream_id(frame.stream_id)?;
    let len = frame.frame_type.check_payload_len(frame.payload.len())?;
    Ok(encode_header(frame.stream_id, frame.frame_type, len))
}

/// Splits one complete frame off the front of `buf` without copying its payload.
///
/// `Ok(None)`: not enough bytes yet (read more and call again; nothing was consumed).
/// `Err`: the header is invalid (unknown type, bad stream id, length over the cap); this is
/// decided as soon as the 9 header bytes are there, without waiting for the payload.
pub(crate) fn decode(buf: &mut BytesMut) -> Result<Option<Frame>, FrameError> {
    let Some(&header) = buf.first_chunk::<HEADER_LEN>() else {
        return Ok(None);
    };
    let header = decode_header(header)?;
    let payload = super::take_payload(buf, HEADER_LEN, header.frame_type, header.len)?;
    Ok(payload.map(|payload| Frame {
        stream_id: header.stream_id,
        frame_type: header.frame_type,
        payload,
    }))
}

/// The consumed-byte count of a WINDOW_UPDATE or WINDOW_UPDATE_BACK frame.
pub(crate) fn window_update_value(frame: &Frame) -> Result<u32, FrameError> {
    if !matches!(
        frame.frame_type,
        FrameType::WindowUpdate | FrameType::WindowUpdateBack
    ) {
        return Err(FrameError::NotWindowUpdate {
            frame_type: frame.frame_type,
        });
    }
    let bytes: [u8; WINDOW_UPDATE_LEN] =
        frame
            .payload
            .as_ref()
            .try_into()
            .map_err(|_| FrameError::WrongPayloadLen {
                frame_type: frame.frame_type,
                len: frame.payload.len(),
                expected: WINDOW_UPDATE_LEN,
            })?;
    Ok(u32::from_be_bytes(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn buf(bytes: &[u8]) -> BytesMut {
        BytesMut::from(bytes)
    }

    #[test]
    fn type_codes_are_the_wire_format() {
        let expected = [
            (FrameType::Open, 0x01),
            (FrameType::Data, 0x02),
            (FrameType::Close, 0x03),
            (FrameType::DataBack, 0x04),
            (FrameType::CloseBack, 0x05),
            (FrameType::Config, 0x06),
            (FrameType::Ping, 0x07),
            (FrameType::Pong, 0x08),
            (FrameType::WindowUpdate, 0x09),
            (FrameType::WindowUpdateBack, 0x0A),
            (FrameType::UdpOpen, 0x0B),
            (FrameType::UdpData, 0x0C),
            (FrameType::UdpDataBack, 0x0D),
            (FrameType::UdpClose, 0x0E),
        ];
        for (frame_type, code) in expected {
            assert_eq!(frame_type.code(), code);
            assert_eq!(u8::from(frame_type), code);
            assert_eq!(FrameType::try_from(code), Ok(frame_type));
        }
        for code in [0x00, 0x0F, 0x10, 0x7F, 0xFF] {
            assert_eq!(
                FrameType::try_from(code),
                Err(FrameError::UnknownType(code))
            );
        }
    }

    #[test]
    fn caps_match_the_protocol() {
        assert_eq!(FrameType::Data.max_payload(), 65536);
        assert_eq!(FrameType::DataBack.max_payload(), 65536);
        assert_eq!(FrameType::UdpData.max_payload(), 65536);
        assert_eq!(FrameType::UdpDataBack.max_payload(), 65536);
        assert!(FrameType::UdpData.max_payload() >= 65_507);
        assert_eq!(FrameType::Config.max_payload(), 1 << 20);
        assert_eq!(FrameType::Open.max_payload(), 107);
        assert_eq!(FrameType::UdpOpen.max_payload(), 256);
        assert_eq!(FrameType::WindowUpdate.max_payload(), 4);
        assert_eq!(FrameType::WindowUpdateBack.max_payload(), 4);
        assert_eq!(FrameType::Ping.max_payload(), 8);
        assert_eq!(FrameType::Pong.max_payload(), 8);
        assert_eq!(FrameType::Close.max_payload(), 1);
        assert_eq!(FrameType::CloseBack.max_payload(), 1);
        assert!(Frame::abort(3, false).is_abort());
        assert!(!Frame::close(3, true).is_abort());
        assert_eq!(FrameType::UdpClose.max_payload(), 4);
    }

    #[test]
    fn decodes_hand_written_data_frame_and_keeps_the_rest() {
        let mut b = buf(&[
            0, 0, 0, 7, 0x02, 0, 0, 0, 3, b'a', b'b', b'c', // DATA stream 7 "abc"
            0, 0, 0, 7, // start of the next frame
        ]);
        let frame = decode(&mut b).unwrap().unwrap();
        assert_eq!(frame, Frame::data(7, false, &b"abc"[..]));
        assert_eq!(&b[..], &[0, 0, 0, 7]);
        assert_eq!(decode(&mut b), Ok(None));
        assert_eq!(b.len(), 4, "an incomplete frame is not consumed");
    }

    #[test]
    fn encodes_hand_written_vectors() {
        let cases: [(Frame, &[u8]); 5] = [
            (
                Frame::window_update(0x0102_0304, true, 0xAABB_CCDD),
                &[1, 2, 3, 4, 0x0A, 0, 0, 0, 4, 0xAA, 0xBB, 0xCC, 0xDD],
            ),
            (
                Frame::ping(0x0102_0304_0506_0708),
                &[0, 0, 0, 0, 0x07, 0, 0, 0, 8, 1, 2, 3, 4, 5, 6, 7, 8],
            ),
            (Frame::close(9, false), &[0, 0, 0, 9, 0x03, 0, 0, 0, 0]),
            (
                Frame::udp_close(0xFFFF_FFFF),
                &[0xFF, 0xFF, 0xFF, 0xFF, 0x0E, 0, 0, 0, 0],
            ),
            (
                Frame::config(&b"{}"[..]),
                &[0, 0, 0, 0, 0x06, 0, 0, 0, 2, b'{', b'}'],
            ),
        ];
        for (frame, bytes) in cases {
            let mut out = BytesMut::new();
            encode(&frame, &mut out).unwrap();
            assert_eq!(&out[..], bytes, "{frame:?}");
            assert_eq!(decode(&mut out), Ok(Some(frame)));
            assert!(out.is_empty());
        }
        assert_eq!(
            encode_header(1, FrameType::Open, 107),
            [0, 0, 0, 1, 0x01, 0, 0, 0, 107]
        );
    }

    #[test]
    fn unknown_type_is_an_error() {
        let mut b = buf(&[0, 0, 0, 1, 0x0F, 0, 0, 0, 0]);
        assert_eq!(decode(&mut b), Err(FrameError::UnknownType(0x0F)));
        let mut b = buf(&[0, 0, 0, 1, 0x00, 0, 0, 0, 0]);
        assert_eq!(decode(&mut b), Err(FrameError::UnknownType(0x00)));
    }

    #[test]
    fn oversized_length_is_refused_from_the_header_alone() {
        // DATA declaring 64 KiB + 1, with no payload bytes present at all.
        let mut b = buf(&[0, 0, 0, 1, 0x02, 0, 1, 0, 1]);
        assert_eq!(
            decode(&mut b),
            Err(FrameError::PayloadTooLong {
                frame_type: FrameType::Data,
                len: 65537,
                max: 65536
            })
        );
        // A 4 GiB claim must not allocate.
        let mut b = buf(&[0, 0, 0, 0, 0x06, 0xFF, 0xFF, 0xFF, 0xFF]);
        assert!(matches!(
            decode(&mut b),
            Err(FrameError::PayloadTooLong { .. })
        ));
        assert!(b.capacity() < 1024);
        // CLOSE carries at most its one abort byte.
        let mut b = buf(&[0, 0, 0, 1, 0x03, 0, 0, 0, 2, 1, 1]);
        assert!(matches!(
            decode(&mut b),
            Err(FrameError::PayloadTooLong { max: 1, .. })
        ));
        // Every other capped type one byte over its cap.
        for (frame_type, stream_id, len) in [
            (FrameType::Open, 1, 108),
            (FrameType::UdpOpen, 1, 257),
            (FrameType::Ping, 0, 9),
            (FrameType::Pong, 0, 9),
            (FrameType::Config, 0, (1 << 20) + 1),
            (FrameType::UdpDataBack, 1, 65537),
        ] {
            let mut b = BytesMut::from(&encode_header(stream_id, frame_type, len)[..]);
            assert_eq!(
                decode(&mut b),
                Err(FrameError::PayloadTooLong {
                    frame_type,
                    len: len as usize,
                    max: frame_type.max_payload()
                })
            );
        }
    }

    #[test]
    fn exact_caps_are_accepted() {
        for frame_type in FrameType::ALL {
            let stream_id = if frame_type.is_control() { 0 } else { 1 };
            let payload = vec![0x5A; frame_type.max_payload()];
            let frame = Frame::new(stream_id, frame_type, payload).unwrap();
            let mut out = BytesMut::new();
            encode(&frame, &mut out).unwrap();
            assert_eq!(decode(&mut out), Ok(Some(frame)));
        }
    }

    #[test]
    fn window_update_needs_exactly_four_bytes() {
        for len in [0u8, 3, 5, 8] {
            let mut b = buf(&[0, 0, 0, 1, 0x09, 0, 0, 0, len]);
            assert_eq!(
                decode(&mut b),
                Err(FrameError::WrongPayloadLen {
                    frame_type: FrameType::WindowUpdate,
                    len: usize::from(len),
                    expected: 4
                })
            );
        }
        let bad = Frame {
            stream_id: 1,
            frame_type: FrameType::WindowUpdateBack,
            payload: Bytes::from_static(&[1, 2, 3]),
        };
        assert!(matches!(
            window_update_value(&bad),
            Err(FrameError::WrongPayloadLen { len: 3, .. })
        ));
        assert!(matches!(
            encode(&bad, &mut BytesMut::new()),
            Err(FrameError::WrongPayloadLen { .. })
        ));
        assert_eq!(
            window_update_value(&Frame::window_update(3, false, 65_536)),
            Ok(65_536)
        );
        assert_eq!(
            window_update_value(&Frame::ping(1)),
            Err(FrameError::NotWindowUpdate {
                frame_type: FrameType::Ping
            })
        );
    }

    #[test]
    fn stream_id_rules() {
        // CONFIG/PING/PONG only on stream 0.
        for code in [0x06u8, 0x07, 0x08] {
            let mut b = buf(&[0, 0, 0, 5, code, 0, 0, 0, 0]);
            assert!(matches!(
                decode(&mut b),
                Err(FrameError::NotOnControlStream { stream_id: 5, .. })
            ));
        }
        // Every stream type never on stream 0.
        for frame_type in FrameType::ALL.into_iter().filter(|t| !t.is_control()) {
            let len = if frame_type.has_fixed_len() { 4 } else { 0 };
            let mut b = BytesMut::from(&encode_header(0, frame_type, len)[..]);
            assert_eq!(
                decode(&mut b),
                Err(FrameError::OnControlStream { frame_type })
            );
        }
        assert!(matches!(
            encode(&Frame::close(0, true), &mut BytesMut::new()),
            Err(FrameError::OnControlStream { .. })
        ));
        assert!(Frame::new(0, FrameType::Data, Bytes::new()).is_err());
        assert!(Frame::new(1, FrameType::Pong, Bytes::new()).is_err());
    }

    #[test]
    fn encode_refuses_oversized_payload_and_writes_nothing() {
        let mut out = BytesMut::from(&b"keep"[..]);
        let frame = Frame::config(vec![b' '; MAX_CONFIG_PAYLOAD + 1]);
        assert!(matches!(
            encode(&frame, &mut out),
            Err(FrameError::PayloadTooLong { .. })
        ));
        assert_eq!(&out[..], b"keep");
    }

    #[test]
    fn pong_echoes_the_ping_payload() {
        let ping = Frame::ping(42);
        let pong = Frame::pong_for(&ping);
        assert_eq!(pong.frame_type, FrameType::Pong);
        assert_eq!(pong.stream_id, 0);
        assert_eq!(pong.payload, ping.payload);
    }

    #[test]
    fn error_messages_are_readable() {
        assert_eq!(
            FrameError::UnknownType(0x2a).to_string(),
            "unknown frame type 0x2a"
        );
        assert_eq!(
            FrameError::OnControlStream {
                frame_type: FrameType::DataBack
            }
            .to_string(),
            "DATA_BACK needs a non-zero stream id but was sent on the control stream 0"
        );
    }

    fn arb_frame_type() -> impl Strategy<Value = FrameType> {
        proptest::sample::select(FrameType::ALL.to_vec())
    }

    /// Payloads valid for `frame_type` (large caps are sampled up to 2 KiB to keep tests fast;
    /// the exact caps are covered by `exact_caps_are_accepted`).
    fn arb_payload(frame_type: FrameType) -> BoxedStrategy<Bytes> {
        let max = frame_type.max_payload();
        let range = if frame_type.has_fixed_len() {
            max..=max
        } else {
            0..=max.min(2048)
        };
        proptest::collection::vec(any::<u8>(), range)
            .prop_map(Bytes::from)
            .boxed()
    }

    fn arb_frame() -> impl Strategy<Value = Frame> {
        arb_frame_type().prop_flat_map(|frame_type| {
            let ids = if frame_type.is_control() {
                Just(0u32).boxed()
            } else {
                (1..=u32::MAX).boxed()
            };
            (ids, arb_payload(frame_type)).prop_map(move |(stream_id, payload)| Frame {
                stream_id,
                frame_type,
                payload,
            })
        })
    }

    proptest! {
        #[test]
        fn round_trip(frames in proptest::collection::vec(arb_frame(), 1..8)) {
            let mut b = BytesMut::new();
            for frame in &frames {
                encode(frame, &mut b).unwrap();
            }
            for frame in &frames {
                prop_assert_eq!(decode(&mut b), Ok(Some(frame.clone())));
            }
            prop_assert_eq!(decode(&mut b), Ok(None));
            prop_assert!(b.is_empty());
        }

        #[test]
        fn byte_at_a_time(frame in arb_frame()) {
            let mut encoded = BytesMut::new();
            encode(&frame, &mut encoded).unwrap();
            let mut b = BytesMut::new();
            let (last, init) = encoded.split_last().unwrap();
            for &byte in init {
                b.put_u8(byte);
                prop_assert_eq!(decode(&mut b), Ok(None));
            }
            b.put_u8(*last);
            prop_assert_eq!(decode(&mut b), Ok(Some(frame)));
            prop_assert!(b.is_empty());
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            let mut b = BytesMut::from(&bytes[..]);
            while let Ok(Some(frame)) = decode(&mut b) {
                prop_assert!(frame.validate().is_ok());
            }
        }

        #[test]
        fn plausible_headers_never_panic(
            stream_id in prop_oneof![Just(0u32), any::<u32>()],
            code in 0u8..=0x10,
            len in prop_oneof![0u32..=300, any::<u32>()],
            tail in proptest::collection::vec(any::<u8>(), 0..300),
        ) {
            let mut b = BytesMut::new();
            b.put_u32(stream_id);
            b.put_u8(code);
            b.put_u32(len);
            b.put_slice(&tail);
            match decode(&mut b) {
                Ok(Some(frame)) => prop_assert!(frame.validate().is_ok()),
                Ok(None) => prop_assert_eq!(b.len(), HEADER_LEN + tail.len()),
                Err(_) => {}
            }
        }
    }
}
