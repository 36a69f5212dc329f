//! STUN (RFC 5389) Binding requests for public IP discovery.
//!
//! Written by hand on purpose: the edge needs one request and one attribute
//! (XOR-MAPPED-ADDRESS, with MAPPED-ADDRESS as a fallback), and the STUN crates on crates.io
//! either pull in a whole WebRTC stack or are unmaintained. The codec is sans-IO, reads with
//! `bytes::Buf`'s checked getters, and is property-tested against arbitrary bytes.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use bytes::Buf;
use rand::RngCore;

/// The magic cookie every RFC 5389 message carries.
pub(crate) const MAGIC_COOKIE: u32 = 0x2112_A442;
const BINDING_REQUEST: u16 = 0x0001;
const BINDING_SUCCESS: u16 = 0x0101;
const ATTR_MAPPED_ADDRESS: u16 = 0x0001;
const ATTR_XOR_MAPPED_ADDRESS: u16 = 0x0020;
const HEADER_LEN: usize = 20;
/// How long one server gets to answer one request.
pub(crate) const REQUEST_TIMEOUT: Duration = Duration::from_secs(3);

/// A malformed or unexpected STUN response.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum StunError {
    #[error("response shorter than a STUN header")]
    Truncated,
    #[error("not a STUN Binding success response (type {0:#06x})")]
    NotBindingSuccess(u16),
    #[error("response has no magic cookie")]
    NoMagicCookie,
    #[error("response answers another transaction")]
    WrongTransaction,
    #[error("attribute runs past the end of the message")]
    BadAttribute,
    #[error("response has no (XOR-)MAPPED-ADDRESS")]
    NoAddress,
}

/// A Binding request and its transaction id.
pub(crate) fn binding_request() -> ([u8; HEADER_LEN], [u8; 12]) {
    let mut transaction = [0u8; 12];
    rand::rng().fill_bytes(&mut transaction);
    let mut request = [0u8; HEADER_LEN];
    request[0..2].copy_from_slice(&BINDING_REQUEST.to_be_bytes());
    // Length 0: no attributes.
    request[4..8].copy_from_slice(&MAGIC_COOKIE.to_be_bytes());
    request[8..20].copy_from_slice(&transaction);
    (request, transaction)
}

/// The next `n` bytes of `input`, which then starts after them; `None` if fewer remain.
fn take<'a>(input: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
    let (head, rest) = input.split_at_checked(n)?;
    *input = rest;
    Some(head)
}

/// Parses a Binding success response for `transaction`; returns the mapped address.
pub(crate) fn parse_response(
    response: &[u8],
    transaction: &[u8; 12],
) -> Result<SocketAddr, StunError> {
    let mut input = response;
    let message_type = input.try_get_u16().map_err(|_| StunError::Truncated)?;
    let length = usize::from(input.try_get_u16().map_err(|_| StunError::Truncated)?);
    let cookie = take(&mut input, 4).ok_or(StunError::Truncated)?;
    let id = take(&mut input, 12).ok_or(StunError::Truncated)?;
    if message_type != BINDING_SUCCESS {
        return Err(StunError::NotBindingSuccess(message_type));
    }
    if cookie != MAGIC_COOKIE.to_be_bytes() {
        return Err(StunError::NoMagicCookie);
    }
    if id != transaction {
        return Err(StunError::WrongTransaction);
    }
    let mut attributes = take(&mut input, length).ok_or(StunError::BadAttribute)?;
    let mut mapped = None;
    while !attributes.is_empty() {
        let kind = attributes
            .try_get_u16()
            .map_err(|_| StunError::BadAttribute)?;
        let len = usize::from(
            attributes
                .try_get_u16()
                .map_err(|_| StunError::BadAttribute)?,
        );
        let value = take(&mut attributes, len).ok_or(StunError::BadAttribute)?;
        // Attributes are padded to 4 bytes; the last one may omit its padding.
        let _ = take(&mut attributes, (4 - len % 4) % 4);
        match kind {
            ATTR_XOR_MAPPED_ADDRESS => {
                if let Some(addr) = parse_address(value, Some(transaction)) {
                    return Ok(addr);
                }
            }
            ATTR_MAPPED_ADDRESS => mapped = mapped.or_else(|| parse_address(value, None)),
            _ => {}
        }
    }
    mapped.ok_or(StunError::NoAddress)
}

/// An (XOR-)MAPPED-ADDRESS value; `xor` carries the transaction id for the XOR form.
fn parse_address(value: &[u8], xor: Option<&[u8; 12]>) -> Option<SocketAddr> {
    let mut input = value;
    let _reserved = input.try_get_u8().ok()?;
    let family = input.try_get_u8().ok()?;
    let mut port = input.try_get_u16().ok()?;
    let cookie = MAGIC_COOKIE.to_be_bytes();
    if xor.is_some() {
        port ^= (MAGIC_COOKIE >> 16) as u16;
    }
    let ip = match family {
        0x01 => {
            let mut octets = *input.first_chunk::<4>()?;
            if xor.is_some() {
                for (octet, key) in octets.iter_mut().zip(cookie) {
                    *octet ^= key;
                }
            }
            IpAddr::V4(Ipv4Addr::from(octets))
        }
        0x02 => {
            let mut octets = *input.first_chunk::<16>()?;
            if let Some(transaction) = xor {
                let key = cookie.iter().chain(transaction.iter());
                for (octet, key) in octets.iter_mut().zip(key) {
                    *octet ^= key;
                }
            }
            IpAddr::V6(Ipv6Addr::from(octets))
        }
        _ => return None,
    };
    Some(SocketAddr::new(ip, port))
}

/// Encodes a Binding success response with XOR-MAPPED-ADDRESS (for test responders).
pub fn encode_success(transaction: &[u8; 12], mapped: SocketAddr) -> Vec<u8> {
    let cookie = MAGIC_COOKIE.to_be_bytes();
    let mut value = vec![0u8];
    let port = mapped.port() ^ (MAGIC_COOKIE >> 16) as u16;
    match mapped.ip() {
        IpAddr::V4(v4) => {
            value.push(0x01);
            value.extend_from_slice(&port.to_be_bytes());
            value.extend(v4.octets().iter().zip(cookie).map(|(o, k)| o ^ k));
        }
        IpAddr::V6(v6) => {
            value.push(0x02);
            value.extend_from_slice(&port.to_be_bytes());
            let key: Vec<u8> = cookie.iter().chain(transaction.iter()).copied().collect();
            value.extend(v6.octets().iter().zip(key).map(|(o, k)| o ^ k));
        }
    }
    let mut out = Vec::with_capacity(HEADER_LEN + 4 + value.len());
    out.extend_from_slice(&BINDING_SUCCESS.to_be_bytes());
    out.extend_from_slice(&u16::try_from(4 + value.len()).unwrap_or(0).to_be_bytes());
    out.extend_from_slice(&cookie);
    out.extend_from_slice(transaction);
    out.extend_from_slice(&ATTR_XOR_MAPPED_ADDRESS.to_be_bytes());
    out.extend_from_slice(&u16::try_from(value.len()).unwrap_or(0).to_be_bytes());
    out.extend_from_slice(&value);
    out
}

/// Why one STUN server gave no address.
#[derive(Debug, thiserror::Error)]
pub(crate) enum QueryError {
    #[error("no STUN server configured")]
    NoServer,
    #[error("cannot resolve: {0}")]
    Resolve(std::io::Error),
    #[error("the name has no address")]
    NoAddress,
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("no answer within {REQUEST_TIMEOUT:?}")]
    NoAnswer,
    #[error(transparent)]
    Response(#[from] StunError),
}

/// Asks the servers in order; returns the first mapped address, or the last server's error.
pub(crate) async fn discover(servers: &[String]) -> Result<SocketAddr, (String, QueryError)> {
    let mut last_error = (String::new(), QueryError::NoServer);
    for server in servers {
        match query(server).await {
            Ok(addr) => return Ok(addr),
            Err(error) => {
                tracing::debug!(%server, %error, "STUN query failed");
                last_error = (server.clone(), error);
            }
        }
    }
    Err(last_error)
}

async fn query(server: &str) -> Result<SocketAddr, QueryError> {
    let target = tokio::net::lookup_host(server)
        .await
        .map_err(QueryError::Resolve)?
        .next()
        .ok_or(QueryError::NoAddress)?;
    let local: SocketAddr = if target.is_ipv6() {
        (Ipv6Addr::UNSPECIFIED, 0).into()
    } else {
        (Ipv4Addr::UNSPECIFIED, 0).into()
    };
    let socket = tokio::net::UdpSocket::bind(local).await?;
    socket.connect(target).await?;
    let (request, transaction) = binding_request();
    socket.send(&request).await?;
    let mut buffer = [0u8; 1024];
    let deadline = tokio::time::Instant::now() + REQUEST_TIMEOUT;
    loop {
        let len = tokio::time::timeout_at(deadline, socket.recv(&mut buffer))
            .await
            .map_err(|_| QueryError::NoAnswer)??;
        match parse_response(buffer.get(..len).unwrap_or_default(), &transaction) {
            Ok(addr) => return Ok(addr),
            // A stray or stale datagram: keep waiting for ours.
            Err(StunError::WrongTransaction) => continue,
            Err(error) => return Err(error.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn request_has_the_rfc_layout() {
        let (request, transaction) = binding_request();
        assert_eq!(&request[0..4], &[0, 1, 0, 0]);
        assert_eq!(&request[4..8], &[0x21, 0x12, 0xA4, 0x42]);
        assert_eq!(&request[8..], &transaction);
    }

    #[test]
    fn parses_the_rfc5769_ipv4_vector() {
        // RFC 5769 section 2.2 (with its SOFTWARE and FINGERPRINT attributes left out).
        let transaction = [
            0xb7, 0xe7, 0xa7, 0x01, 0xbc, 0x34, 0xd6, 0x86, 0xfa, 0x87, 0xdf, 0xae,
        ];
        let mut response = vec![0x01, 0x01, 0x00, 0x0c, 0x21, 0x12, 0xa4, 0x42];
        response.extend_from_slice(&transaction);
        response.extend_from_slice(&[
            0x00, 0x20, 0x00, 0x08, 0x00, 0x01, 0xa1, 0x47, 0xe1, 0x12, 0xa6, 0x43,
        ]);
        assert_eq!(
            parse_response(&response, &transaction),
            Ok("192.0.2.1:32853".parse().unwrap())
        );
    }

    #[test]
    fn round_trips_v4_and_v6_and_refuses_bad_input() {
        let (_, transaction) = binding_request();
        for mapped in ["203.0.113.7:40000", "[2001:db8::1]:443"] {
            let mapped: SocketAddr = mapped.parse().unwrap();
            let response = encode_success(&transaction, mapped);
            assert_eq!(parse_response(&response, &transaction), Ok(mapped));
        }
        let response = encode_success(&transaction, "203.0.113.7:1".parse().unwrap());
        assert_eq!(
            parse_response(&response, &[0; 12]),
            Err(StunError::WrongTransaction)
        );
        assert_eq!(
            parse_response(&response[..10], &transaction),
            Err(StunError::Truncated)
        );
        assert_eq!(
            parse_response(&response[..24], &transaction),
            Err(StunError::BadAttribute)
        );
        let mut wrong_type = response.clone();
        wrong_type[1] = 0x11;
        assert_eq!(
            parse_response(&wrong_type, &transaction),
            Err(StunError::NotBindingSuccess(0x0111))
        );
    }

    proptest! {
        #[test]
        fn parse_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..128), id in any::<[u8; 12]>()) {
            let _ = parse_response(&bytes, &id);
        }
    }

    #[tokio::test]
    async fn discover_asks_a_local_responder() {
        let responder = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let server = responder.local_addr().unwrap().to_string();
        tokio::spawn(async move {
            let mut buf = [0u8; 64];
            let (len, from) = responder.recv_from(&mut buf).await.unwrap();
            let mut transaction = [0u8; 12];
            transaction.copy_from_slice(&buf[8..20]);
            assert_eq!(len, 20);
            let reply = encode_success(&transaction, "198.51.100.9:5555".parse().unwrap());
            responder.send_to(&reply, from).await.unwrap();
        });
        let servers = vec!["127.0.0.1:1".to_owned(), server];
        // The first server does not answer in time or refuses; the second one answers.
        let found = discover(&servers).await.unwrap();
        assert_eq!(found, "198.51.100.9:5555".parse().unwrap());
    }
}
