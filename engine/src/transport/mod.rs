//! The edge–hub tunnel. [`tunnel`] is the transport-agnostic face the hub and edge use; below it,
//! [`tls_mux`] multiplexes streams over one TLS connection. The wire formats ([`frame`],
//! [`control`], [`handshake`]) are sans-IO except the handshake's line reader.

pub(crate) mod control;
pub(crate) mod datagram;
pub(crate) mod frame;
pub(crate) mod handshake;
pub(crate) mod login;
pub(crate) mod path_rtt;
pub(crate) mod quic;
pub(crate) mod side;
pub(crate) mod tls_mux;
pub(crate) mod tunnel;

use bytes::{Buf, Bytes, BytesMut};

use self::frame::{FrameError, FrameType};

/// Second half of the check-then-parse decoding shared by [`frame::decode`] and
/// [`control::decode`], called once the caller has read a complete header of `header_len` bytes.
///
/// It checks `declared_len` against the type's cap *before* anything is allocated or awaited, so
/// an oversized message is refused from its header alone. While the payload is incomplete it
/// returns `Ok(None)` (reserving the missing, already capped, room so the next read can fill it);
/// otherwise it drops the header and splits the payload off the front of `buf` without copying.
fn take_payload(
    buf: &mut BytesMut,
    header_len: usize,
    frame_type: FrameType,
    declared_len: u32,
) -> Result<Option<Bytes>, FrameError> {
    // A u32 that does not fit a usize (16-bit targets) is certainly over every cap.
    let len = usize::try_from(declared_len).unwrap_or(usize::MAX);
    frame_type.check_payload_len(len)?;
    // Cannot overflow after the cap check (caps are at most 1 MiB), but stay panic-free anyway.
    let total = header_len.saturating_add(len);
    if buf.len() < total {
        buf.reserve(total - buf.len());
        return Ok(None);
    }
    buf.advance(header_len);
    Ok(Some(buf.split_to(len).freeze()))
}
