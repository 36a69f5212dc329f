//! The tunnel handshake, identical on TLS and QUIC.
//!
//! 1. The edge sends `EDGE <edgeId> <proof>\n`, where the proof is 64 hex digits of an HMAC of
//!    the TLS channel binding under the edge's secret ([`super::login`]): the secret itself never
//!    crosses the wire.
//! 2. The hub answers one JSON line: the edge's configuration ([`EdgeConfigPush`]) with the hub's
//!    own proof in `hubProof`, or `{"error":"unauthorized"}`. The edge checks `hubProof` before
//!    it uses anything else in the reply.
//!
//! After that the TLS transport switches to frames ([`super::frame`]), the QUIC transport to
//! control messages ([`super::control`]). Whatever bytes followed the reply's newline in the
//! same read already belong to that next layer, which is why [`read_line`] hands them back in
//! its buffer instead of discarding them.

use bytes::{Buf, Bytes, BytesMut};
use remoteingress_ipc_schema::FirewallConfig;
use serde::{Deserialize, Serialize};
use std::io;
use thiserror::Error;
use tokio::io::{AsyncRead, AsyncReadExt};

use super::login::LoginProof;
use crate::ident::{validate_edge_id, IdentError};

/// Longest accepted hello line (without its `\n`). An edge id is at most 1 KiB (see
/// `crate::ident`) and a proof 64 bytes, so a valid hello is far below this.
pub const MAX_HELLO_LEN: usize = 4096;

/// Longest accepted hub reply line (without its `\n`): it carries the whole firewall snapshot.
pub const MAX_REPLY_LEN: usize = 2 * 1024 * 1024;

/// The hello keyword.
const HELLO_KEYWORD: &str = "EDGE";

/// How much room [`read_line`] makes per read.
const READ_CHUNK: usize = 4096;

/// Why a handshake line was refused. No variant includes the secret or the raw line, so these
/// errors are safe to log.
#[derive(Debug, Error)]
pub enum HandshakeError {
    #[error("handshake line of {len} bytes exceeds the {max}-byte limit")]
    TooLong { len: usize, max: usize },
    #[error("hello line ends in a carriage return; handshake lines end with a bare \\n")]
    CarriageReturn,
    #[error("hello line is not valid UTF-8")]
    NotUtf8,
    #[error("hello line has {found} space-separated fields, expected 3: EDGE <edgeId> <proof>")]
    FieldCount { found: usize },
    #[error("hello line does not start with the keyword EDGE")]
    NotEdgeHello,
    #[error("invalid edge id: {0}")]
    InvalidEdgeId(#[source] IdentError),
    #[error(
        "the login proof is not 64 hex digits (an edge older than the channel-bound login sends \
         its secret here: upgrade it)"
    )]
    BadProof,
    #[error("the hub's reply has no hubProof: it did not prove that it knows this edge's secret")]
    MissingHubProof,
    #[error("hub reply is not a valid config or error object: {0}")]
    BadReply(#[source] serde_json::Error),
    #[error("config JSON is invalid: {0}")]
    BadConfig(#[source] serde_json::Error),
    #[error("failed to serialise handshake JSON: {0}")]
    Encode(#[source] serde_json::Error),
}

/// Why [`read_line`] did not return a line.
#[derive(Debug, Error)]
pub enum LineError {
    #[error("line exceeds {max_len} bytes without a newline")]
    TooLong { max_len: usize },
    #[error("peer closed the connection before a complete line ({pending} bytes pending)")]
    Eof { pending: usize },
    #[error("i/o error while reading a line: {0}")]
    Io(#[from] io::Error),
}

/// The edge's hello: who it claims to be and its proof for this channel.
#[derive(Debug, Clone)]
pub(crate) struct EdgeHello {
    pub edge_id: String,
    pub proof: LoginProof,
}

/// Builds `EDGE <edgeId> <proof>\n`. The id is checked here as well as where it entered the
/// process: an id with a space would shift the fields and be rejected by the hub as a confusing
/// authentication failure, so refuse it locally with a clear error.
pub fn encode_hello(edge_id: &str, proof: &LoginProof) -> Result<Vec<u8>, HandshakeError> {
    validate_edge_id(edge_id).map_err(HandshakeError::InvalidEdgeId)?;
    Ok(format!("{HELLO_KEYWORD} {edge_id} {}\n", proof.to_hex()).into_bytes())
}

/// Parses a hello line given without its `\n`.
///
/// Strict on purpose: exactly three fields separated by single spaces, the keyword `EDGE` in
/// upper case, 64 hex digits of proof and no trailing `\r`. Tolerating CRLF or extra spaces
/// would give one hello several spellings and hide a peer that frames lines differently; our
/// encoder never produces them, so only a foreign or broken peer would.
pub(crate) fn parse_hello(line: &[u8]) -> Result<EdgeHello, HandshakeError> {
    if line.len() > MAX_HELLO_LEN {
        return Err(HandshakeError::TooLong {
            len: line.len(),
            max: MAX_HELLO_LEN,
        });
    }
    if line.last() == Some(&b'\r') {
        return Err(HandshakeError::CarriageReturn);
    }
    let text = std::str::from_utf8(line).map_err(|_| HandshakeError::NotUtf8)?;
    let mut fields = text.split(' ');
    let (Some(keyword), Some(edge_id), Some(proof), None) =
        (fields.next(), fields.next(), fields.next(), fields.next())
    else {
        return Err(HandshakeError::FieldCount {
            found: text.split(' ').count(),
        });
    };
    if keyword != HELLO_KEYWORD {
        return Err(HandshakeError::NotEdgeHello);
    }
    validate_edge_id(edge_id).map_err(HandshakeError::InvalidEdgeId)?;
    let proof = LoginProof::from_hex(proof).ok_or(HandshakeError::BadProof)?;
    Ok(EdgeHello {
        edge_id: edge_id.to_owned(),
        proof,
    })
}

/// STUN re-discovery interval used when the hub does not send one.
fn default_stun_interval_secs() -> u32 {
    crate::config::DEFAULT_STUN_INTERVAL_SECS
}

/// The configuration the hub pushes to an edge: in the handshake reply and, later, as the
/// payload of every CONFIG frame / control message (see [`encode_config`]).
///
/// Unknown fields are ignored rather than refused: hub and edge are upgraded independently, and
/// a newer hub adding a field must not lock out older edges. (The nested [`FirewallConfig`] is
/// the IPC schema's type and keeps that crate's strict `deny_unknown_fields`.)
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct EdgeConfigPush {
    pub listen_ports: Vec<u16>,
    pub listen_ports_udp: Vec<u16>,
    /// How often the edge re-discovers its public IP by STUN; 300 when absent.
    #[serde(default = "default_stun_interval_secs")]
    pub stun_interval_secs: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub firewall_config: Option<FirewallConfig>,
    /// The hub's heartbeat timeout: an edge that hears nothing from the hub for this long
    /// treats the tunnel as dead. Absent from older hubs (the edge then uses its own default,
    /// `PerformanceSettings::default().heartbeat_timeout`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub heartbeat_timeout_secs: Option<u32>,
    /// Idle time after which UDP sessions close (the hub's `udpSessionIdleSecs`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub udp_session_idle_secs: Option<u32>,
    /// Caps on the edge's public clients (the allowed edge's `limits`); absent from older
    /// hubs (the edge then uses the defaults).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limits: Option<crate::config::EdgeLimitSettings>,
    /// The hub's performance settings, which the edge's side of the tunnel follows too (its
    /// receive windows carry the downloads); absent from older hubs (the edge then uses its
    /// defaults).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub performance: Option<crate::config::PerformancePush>,
    /// What the edge may dial for the hub (validated at the hub, again at the edge); absent:
    /// egress disabled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub egress: Option<remoteingress_ipc_schema::EgressPolicy>,
}

/// What the edge tells the hub about itself, as a CONFIG message in the edge-to-hub direction
/// (the hub shows it in its status).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct EdgeReport {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub public_ip: Option<String>,
    /// Where the edge's firewall stands; absent from older edges.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub firewall: Option<FirewallReport>,
    /// Assigned ports the edge could not bind (and keeps retrying); absent from older edges.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port_bind_failures: Option<Vec<remoteingress_ipc_schema::PortBindFailure>>,
}

/// Most port bind failures the hub keeps from one report (an edge has at most one per assigned
/// port and protocol; a list past this is not from a sane edge).
pub const MAX_REPORTED_BIND_FAILURES: usize = 1024;

/// Why a report was refused as a whole. Never quotes the edge's bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub(crate) enum ReportError {
    #[error(transparent)]
    PublicIp(#[from] crate::reported::NotAnIp),
    #[error("firewall.digest is not 64 hex digits")]
    Digest,
}

impl EdgeReport {
    /// The report as the hub may keep and show it: `publicIp` an IP address (canonical),
    /// `firewall.digest` 64 hex digits, error texts capped at [`crate::reported::MAX_TEXT_LEN`]
    /// bytes, at most [`MAX_REPORTED_BIND_FAILURES`] bind failures.
    pub(crate) fn checked(mut self) -> Result<Self, ReportError> {
        use crate::reported::{capped, ip};
        if let Some(public_ip) = &self.public_ip {
            self.public_ip = Some(ip("publicIp", public_ip)?);
        }
        if let Some(firewall) = &mut self.firewall {
            if firewall.digest.len() != 64
                || !firewall.digest.bytes().all(|b| b.is_ascii_hexdigit())
            {
                return Err(ReportError::Digest);
            }
            firewall.error = firewall.error.take().map(capped);
        }
        if let Some(failures) = &mut self.port_bind_failures {
            failures.truncate(MAX_REPORTED_BIND_FAILURES);
            for failure in failures {
                failure.error = capped(std::mem::take(&mut failure.error));
            }
        }
        Ok(self)
    }
}

/// The firewall part of an [`EdgeReport`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct FirewallReport {
    /// [`crate::firewall::digest`] of the last snapshot the edge received and handled.
    pub digest: String,
    pub state: remoteingress_ipc_schema::FirewallState,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// The hub's answer to a hello.
#[derive(Debug, Clone)]
pub enum HubReply {
    /// Authenticated; the edge's configuration and the hub's proof (check it before using the
    /// configuration).
    Accepted {
        config: Box<EdgeConfigPush>,
        hub_proof: LoginProof,
    },
    /// Refused, e.g. `unauthorized`.
    Rejected { error: String },
}

/// Wire form of [`HubReply::Rejected`].
#[derive(Serialize, Deserialize)]
struct Rejection {
    error: String,
}

/// Wire form of [`HubReply::Accepted`]: the configuration's fields with `hubProof` beside them
/// (`C` is the configuration, borrowed to encode, owned when decoded).
#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Acceptance<C> {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    hub_proof: Option<String>,
    #[serde(flatten)]
    config: C,
}

/// Serialises the reply as one JSON line (with `\n`). Refuses a reply over [`MAX_REPLY_LEN`],
/// which the edge would reject: a large firewall snapshot can get there.
pub(crate) fn encode_reply(reply: &HubReply) -> Result<Vec<u8>, HandshakeError> {
    let mut line = match reply {
        HubReply::Accepted { config, hub_proof } => serde_json::to_vec(&Acceptance {
            hub_proof: Some(hub_proof.to_hex()),
            config,
        }),
        HubReply::Rejected { error } => serde_json::to_vec(&Rejection {
            error: error.clone(),
        }),
    }
    .map_err(HandshakeError::Encode)?;
    if line.len() > MAX_REPLY_LEN {
        return Err(HandshakeError::TooLong {
            len: line.len(),
            max: MAX_REPLY_LEN,
        });
    }
    line.push(b'\n');
    Ok(line)
}

/// Parses the hub's reply line given without its `\n`. An object with an `error` key is a
/// rejection (even if it has other fields); anything else must be an `EdgeConfigPush` with a
/// well-formed `hubProof` (a missing one is `HandshakeError::MissingHubProof`).
pub fn parse_reply(line: &[u8]) -> Result<HubReply, HandshakeError> {
    if line.len() > MAX_REPLY_LEN {
        return Err(HandshakeError::TooLong {
            len: line.len(),
            max: MAX_REPLY_LEN,
        });
    }
    let value: serde_json::Value =
        serde_json::from_slice(line).map_err(HandshakeError::BadReply)?;
    if value.get("error").is_some() {
        let rejection: Rejection =
            serde_json::from_value(value).map_err(HandshakeError::BadReply)?;
        return Ok(HubReply::Rejected {
            error: rejection.error,
        });
    }
    let acceptance: Acceptance<EdgeConfigPush> =
        serde_json::from_value(value).map_err(HandshakeError::BadReply)?;
    let hub_proof = acceptance
        .hub_proof
        .ok_or(HandshakeError::MissingHubProof)
        .and_then(|hex| LoginProof::from_hex(&hex).ok_or(HandshakeError::MissingHubProof))?;
    Ok(HubReply::Accepted {
        config: Box::new(acceptance.config),
        hub_proof,
    })
}

/// The JSON payload of a CONFIG frame / control message (no newline). Its size is checked
/// against CONFIG's cap when the frame is encoded.
pub(crate) fn encode_config(config: &EdgeConfigPush) -> Result<Bytes, HandshakeError> {
    serde_json::to_vec(config)
        .map(Bytes::from)
        .map_err(HandshakeError::Encode)
}

/// Parses the payload of a CONFIG frame / control message.
pub(crate) fn parse_config(payload: &[u8]) -> Result<EdgeConfigPush, HandshakeError> {
    serde_json::from_slice(payload).map_err(HandshakeError::BadConfig)
}

/// Reads one `\n`-terminated line, returning it without the `\n`.
///
/// Bytes are read into `buf` in chunks; anything after the newline stays in `buf` for the
/// next layer (the frame or control decoder), so start that decoder on the same buffer. A line
/// already complete in `buf` is returned without reading.
///
/// Fails with `LineError::TooLong` as soon as more than `max_len` bytes are buffered without
/// a newline (or the newline comes after them), without waiting for the rest; with
/// `LineError::Eof` if the peer closes first. There is no deadline here: wrap the call in
/// `tokio::time::timeout`. Cancelling is safe, since every byte read is already in `buf`.
pub async fn read_line<R: AsyncRead + Unpin>(
    reader: &mut R,
    buf: &mut BytesMut,
    max_len: usize,
) -> Result<Bytes, LineError> {
    // Bytes before `scanned` are known to hold no newline; each byte is searched once.
    let mut scanned = 0;
    loop {
        let newline = buf
            .get(scanned..)
            .and_then(|unscanned| unscanned.iter().position(|&b| b == b'\n'));
        if let Some(at) = newline.map(|pos| scanned + pos) {
            if at > max_len {
                return Err(LineError::TooLong { max_len });
            }
            let line = buf.split_to(at).freeze();
            buf.advance(1);
            return Ok(line);
        }
        if buf.len() > max_len {
            return Err(LineError::TooLong { max_len });
        }
        scanned = buf.len();
        buf.reserve(READ_CHUNK);
        if reader.read_buf(buf).await? == 0 {
            return Err(LineError::Eof { pending: buf.len() });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ident::MAX_IDENT_LEN;
    use crate::transport::frame::{self, Frame};
    use proptest::prelude::*;
    use std::collections::VecDeque;
    use std::pin::Pin;
    use std::task::{Context, Poll};
    use std::time::Duration;
    use tokio::io::{AsyncWriteExt, ReadBuf};

    /// Yields the given chunks, one per read, then end of file; counts the reads.
    struct Chunked {
        chunks: VecDeque<Vec<u8>>,
        reads: usize,
    }

    impl Chunked {
        fn new<I: IntoIterator<Item = Vec<u8>>>(chunks: I) -> Self {
            Self {
                chunks: chunks.into_iter().collect(),
                reads: 0,
            }
        }

        fn rest(&self) -> Vec<u8> {
            self.chunks.iter().flatten().copied().collect()
        }
    }

    impl AsyncRead for Chunked {
        fn poll_read(
            mut self: Pin<&mut Self>,
            _cx: &mut Context<'_>,
            out: &mut ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            self.reads += 1;
            if let Some(chunk) = self.chunks.front_mut() {
                let n = chunk.len().min(out.remaining());
                out.put_slice(&chunk[..n]);
                chunk.drain(..n);
                if chunk.is_empty() {
                    self.chunks.pop_front();
                }
            }
            Poll::Ready(Ok(()))
        }
    }

    struct Failing;

    impl AsyncRead for Failing {
        fn poll_read(
            self: Pin<&mut Self>,
            _cx: &mut Context<'_>,
            _out: &mut ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            Poll::Ready(Err(io::Error::new(io::ErrorKind::ConnectionReset, "reset")))
        }
    }

    const PROOF_HEX: &str = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";

    fn proof() -> LoginProof {
        LoginProof::from_hex(PROOF_HEX).unwrap()
    }

    // ---- hello ----

    #[test]
    fn hello_vector() {
        let line = encode_hello("edge-fra-01", &proof()).unwrap();
        assert_eq!(line, format!("EDGE edge-fra-01 {PROOF_HEX}\n").into_bytes());
        let hello = parse_hello(format!("EDGE edge-fra-01 {PROOF_HEX}").as_bytes()).unwrap();
        assert_eq!(hello.edge_id, "edge-fra-01");
        assert_eq!(hello.proof.as_bytes(), proof().as_bytes());
        let unicode = parse_hello(format!("EDGE kante-ü {PROOF_HEX}").as_bytes()).unwrap();
        assert_eq!(unicode.edge_id, "kante-ü");
    }

    #[test]
    fn encode_hello_refuses_invalid_ids() {
        assert!(matches!(
            encode_hello("a b", &proof()),
            Err(HandshakeError::InvalidEdgeId(
                IdentError::BadCharacter { .. }
            ))
        ));
        let longest = encode_hello(&"i".repeat(MAX_IDENT_LEN), &proof()).unwrap();
        assert!(longest.len() <= MAX_HELLO_LEN);
    }

    #[test]
    fn parse_hello_errors() {
        let too_long = vec![b'x'; MAX_HELLO_LEN + 1];
        assert!(matches!(
            parse_hello(&too_long),
            Err(HandshakeError::TooLong {
                len: 4097,
                max: 4096
            })
        ));
        assert!(matches!(
            parse_hello(format!("EDGE id {PROOF_HEX}\r").as_bytes()),
            Err(HandshakeError::CarriageReturn)
        ));
        assert!(matches!(
            parse_hello(b"EDGE id s\xffcret"),
            Err(HandshakeError::NotUtf8)
        ));
        for (line, found) in [
            (&b""[..], 1),
            (b"EDGE", 1),
            (b"EDGE id", 2),
            (b"EDGE id secret extra", 4),
            (b"EDGE id  secret", 4),
            (b"EDGE id secret ", 4),
        ] {
            match parse_hello(line) {
                Err(HandshakeError::FieldCount { found: f }) => assert_eq!(f, found, "{line:?}"),
                other => panic!("{line:?}: {other:?}"),
            }
        }
        for line in [
            &b"edge id secret"[..],
            b"HELLO id secret",
            b"EDGE\tid secret x",
        ] {
            assert!(
                matches!(parse_hello(line), Err(HandshakeError::NotEdgeHello)),
                "{line:?}"
            );
        }
        assert!(matches!(
            parse_hello(format!("EDGE  {PROOF_HEX}").as_bytes()),
            Err(HandshakeError::InvalidEdgeId(IdentError::Empty { .. }))
        ));
        assert!(matches!(
            parse_hello(format!("EDGE a\u{a0}b {PROOF_HEX}").as_bytes()),
            Err(HandshakeError::InvalidEdgeId(
                IdentError::BadCharacter { .. }
            ))
        ));
        // The old hello carried the secret itself: refused with a hint to upgrade.
        for line in [
            &b"EDGE id s3cret"[..],
            b"EDGE id 00112233445566778899aabbccddeeff00112233445566778899aabbccddeeffaa",
            b"EDGE id 00112233445566778899aabbccddeeff00112233445566778899aabbccddeefg",
        ] {
            let error = parse_hello(line).unwrap_err();
            assert!(matches!(error, HandshakeError::BadProof), "{line:?}");
            assert!(error.to_string().contains("upgrade"), "{error}");
        }
    }

    #[test]
    fn hello_errors_do_not_leak_the_line() {
        for line in [
            &b"EDGE id topsecret x"[..],
            b"topsecret id x",
            b"EDGE id topsecret\r",
            b"EDGE id topsecret",
        ] {
            let err = parse_hello(line).unwrap_err();
            let text = format!("{err} {err:?}");
            assert!(!text.contains("topsecret"), "{text}");
        }
    }

    // ---- reply ----

    fn sample_config() -> EdgeConfigPush {
        EdgeConfigPush {
            heartbeat_timeout_secs: None,
            udp_session_idle_secs: None,
            performance: None,
            listen_ports: vec![80, 443],
            listen_ports_udp: vec![53],
            stun_interval_secs: 300,
            firewall_config: None,
            limits: None,
            egress: None,
        }
    }

    fn accepted(config: EdgeConfigPush) -> HubReply {
        HubReply::Accepted {
            config: Box::new(config),
            hub_proof: proof(),
        }
    }

    /// Replies compare by their wire form (proofs have no `PartialEq` on purpose).
    fn same(a: &HubReply, b: &HubReply) -> bool {
        encode_reply(a).unwrap() == encode_reply(b).unwrap()
    }

    #[test]
    fn accepted_reply_vector() {
        let line = encode_reply(&accepted(sample_config())).unwrap();
        assert_eq!(
            String::from_utf8(line.clone()).unwrap(),
            format!(
                "{{\"hubProof\":\"{PROOF_HEX}\",\"listenPorts\":[80,443],\"listenPortsUdp\":[53],\"stunIntervalSecs\":300}}\n"
            )
        );
        let parsed = parse_reply(line.strip_suffix(b"\n").unwrap()).unwrap();
        assert!(same(&parsed, &accepted(sample_config())));
    }

    #[test]
    fn a_reply_without_a_valid_hub_proof_is_refused() {
        for line in [
            &br#"{"listenPorts":[80],"listenPortsUdp":[]}"#[..],
            br#"{"hubProof":"abc","listenPorts":[80],"listenPortsUdp":[]}"#,
        ] {
            assert!(
                matches!(parse_reply(line), Err(HandshakeError::MissingHubProof)),
                "{}",
                String::from_utf8_lossy(line)
            );
        }
    }

    #[test]
    fn accepted_reply_with_firewall_and_unknown_fields() {
        let line = format!(
            r#"{{"hubProof":"{PROOF_HEX}","listenPorts":[22],"listenPortsUdp":[],"stunIntervalSecs":60,
            "firewallConfig":{{"blockedIps":["10.0.0.0/8"]}},"someFutureField":{{"x":1}}}}"#
        );
        let HubReply::Accepted { config, .. } = parse_reply(line.as_bytes()).unwrap() else {
            panic!("expected accepted");
        };
        assert_eq!(config.listen_ports, vec![22]);
        assert_eq!(config.stun_interval_secs, 60);
        let firewall = config.firewall_config.clone().unwrap();
        assert_eq!(firewall.blocked_ips, Some(vec!["10.0.0.0/8".to_owned()]));
        // Round trip through the encoder keeps the firewall config.
        let again = encode_reply(&accepted(*config.clone())).unwrap();
        assert!(same(
            &parse_reply(&again[..again.len() - 1]).unwrap(),
            &accepted(*config)
        ));
    }

    #[test]
    fn stun_interval_defaults_to_300() {
        let line = format!(r#"{{"hubProof":"{PROOF_HEX}","listenPorts":[],"listenPortsUdp":[]}}"#);
        let reply = parse_reply(line.as_bytes()).unwrap();
        let HubReply::Accepted { config, .. } = reply else {
            panic!("expected accepted");
        };
        assert_eq!(config.stun_interval_secs, 300);
        assert_eq!(config.firewall_config, None);
    }

    #[test]
    fn rejected_reply_vector() {
        let reply = HubReply::Rejected {
            error: "unauthorized".to_owned(),
        };
        let line = encode_reply(&reply).unwrap();
        assert_eq!(line, b"{\"error\":\"unauthorized\"}\n");
        assert!(same(
            &parse_reply(br#"{"error":"unauthorized"}"#).unwrap(),
            &reply
        ));
        // An error key wins over anything else in the object.
        assert!(same(
            &parse_reply(br#"{"error":"unauthorized","listenPorts":[1],"listenPortsUdp":[]}"#)
                .unwrap(),
            &reply
        ));
    }

    #[test]
    fn bad_replies() {
        for line in [
            &b""[..],
            b"not json",
            b"[]",
            b"null",
            br#"{"error":42}"#,
            br#"{"listenPortsUdp":[]}"#,
            br#"{"listenPorts":[70000],"listenPortsUdp":[]}"#,
            br#"{"listenPorts":[],"listenPortsUdp":[],"stunIntervalSecs":-1}"#,
            br#"{"listenPorts":[],"listenPortsUdp":[],"firewallConfig":{"bogus":1}}"#,
            br#"{"listenPorts":[],"listenPortsUdp":[]} trailing"#,
        ] {
            assert!(
                matches!(parse_reply(line), Err(HandshakeError::BadReply(_))),
                "{}",
                String::from_utf8_lossy(line)
            );
        }
        let huge = vec![b' '; MAX_REPLY_LEN + 1];
        assert!(matches!(
            parse_reply(&huge),
            Err(HandshakeError::TooLong { .. })
        ));
    }

    #[test]
    fn encode_reply_refuses_more_than_the_limit() {
        let mut config = sample_config();
        config.listen_ports = vec![65535; MAX_REPLY_LEN / 6 + 1];
        assert!(matches!(
            encode_reply(&accepted(config)),
            Err(HandshakeError::TooLong { .. })
        ));
    }

    #[test]
    fn config_payload_round_trip_and_frame() {
        let payload = encode_config(&sample_config()).unwrap();
        assert_eq!(parse_config(&payload).unwrap(), sample_config());
        let mut wire = BytesMut::new();
        frame::encode(&Frame::config(payload.clone()), &mut wire).unwrap();
        let decoded = frame::decode(&mut wire).unwrap().unwrap();
        assert_eq!(decoded.payload, payload);
        assert!(matches!(
            parse_config(b"{}"),
            Err(HandshakeError::BadConfig(_))
        ));
    }

    // ---- read_line ----

    #[tokio::test]
    async fn reads_a_line_and_keeps_the_following_frame_bytes() {
        let mut wire = b"{\"error\":\"unauthorized\"}\n".to_vec();
        let mut frame_bytes = BytesMut::new();
        frame::encode(&Frame::ping(7), &mut frame_bytes).unwrap();
        wire.extend_from_slice(&frame_bytes);
        let mut reader = &wire[..];
        let mut buf = BytesMut::new();
        let line = read_line(&mut reader, &mut buf, MAX_REPLY_LEN)
            .await
            .unwrap();
        assert_eq!(&line[..], br#"{"error":"unauthorized"}"#);
        assert_eq!(&buf[..], &frame_bytes[..]);
        assert_eq!(frame::decode(&mut buf), Ok(Some(Frame::ping(7))));
    }

    #[tokio::test]
    async fn line_split_across_reads() {
        let mut reader = Chunked::new([
            b"ED".to_vec(),
            b"GE id".to_vec(),
            b" sec".to_vec(),
            b"ret\nrest".to_vec(),
            b"more".to_vec(),
        ]);
        let mut buf = BytesMut::new();
        let line = read_line(&mut reader, &mut buf, MAX_HELLO_LEN)
            .await
            .unwrap();
        assert_eq!(&line[..], b"EDGE id secret");
        assert_eq!(&buf[..], b"rest");
        assert_eq!(reader.rest(), b"more");
    }

    #[tokio::test]
    async fn lines_already_buffered_need_no_read() {
        let mut buf = BytesMut::from(&b"one\n\ntwo\nx"[..]);
        let mut reader = Failing;
        for expected in [&b"one"[..], b"", b"two"] {
            let line = read_line(&mut reader, &mut buf, 16).await.unwrap();
            assert_eq!(&line[..], expected);
        }
        assert!(matches!(
            read_line(&mut reader, &mut buf, 16).await,
            Err(LineError::Io(_))
        ));
        assert_eq!(&buf[..], b"x");
    }

    #[tokio::test]
    async fn reads_in_chunks_not_bytes() {
        let mut wire = vec![b'a'; 3000];
        wire.push(b'\n');
        let mut reader = Chunked::new([wire]);
        let mut buf = BytesMut::new();
        let line = read_line(&mut reader, &mut buf, MAX_HELLO_LEN)
            .await
            .unwrap();
        assert_eq!(line.len(), 3000);
        assert_eq!(reader.reads, 1);
    }

    #[tokio::test]
    async fn exactly_max_len_is_accepted() {
        let mut buf = BytesMut::new();
        let line = read_line(&mut &b"abcd\n"[..], &mut buf, 4).await.unwrap();
        assert_eq!(&line[..], b"abcd");
        let result = read_line(&mut &b"abcde\n"[..], &mut BytesMut::new(), 4).await;
        assert!(matches!(result, Err(LineError::TooLong { max_len: 4 })));
    }

    #[tokio::test]
    async fn too_long_is_reported_without_waiting_for_more() {
        let (mut client, mut server) = tokio::io::duplex(64 * 1024);
        client.write_all(&[b'x'; 101]).await.unwrap();
        // `client` stays open: a reader waiting for the newline would hang here.
        let mut buf = BytesMut::new();
        let result = tokio::time::timeout(
            Duration::from_secs(5),
            read_line(&mut server, &mut buf, 100),
        )
        .await
        .expect("read_line must not wait for a newline once over the limit");
        assert!(matches!(result, Err(LineError::TooLong { max_len: 100 })));
        assert_eq!(
            result.unwrap_err().to_string(),
            "line exceeds 100 bytes without a newline"
        );
        drop(client);
    }

    #[tokio::test]
    async fn too_long_over_several_reads() {
        let chunks = (0..5).map(|_| vec![b'y'; 1000]);
        let mut reader = Chunked::new(chunks);
        let result = read_line(&mut reader, &mut BytesMut::new(), 2500).await;
        assert!(matches!(result, Err(LineError::TooLong { max_len: 2500 })));
        assert!(
            !reader.rest().is_empty(),
            "stopped before draining the peer"
        );
    }

    #[tokio::test]
    async fn eof_mid_line_and_before_any_byte() {
        let mut buf = BytesMut::new();
        let result = read_line(&mut &b"EDGE id"[..], &mut buf, MAX_HELLO_LEN).await;
        assert!(matches!(result, Err(LineError::Eof { pending: 7 })));
        let result = read_line(&mut &b""[..], &mut BytesMut::new(), MAX_HELLO_LEN).await;
        assert!(matches!(result, Err(LineError::Eof { pending: 0 })));
    }

    #[tokio::test]
    async fn io_errors_pass_through() {
        let result = read_line(&mut Failing, &mut BytesMut::new(), 10).await;
        match result {
            Err(LineError::Io(err)) => assert_eq!(err.kind(), io::ErrorKind::ConnectionReset),
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn works_over_a_duplex_with_a_slow_writer() {
        let (mut client, mut server) = tokio::io::duplex(16);
        let writer = tokio::spawn(async move {
            for piece in [
                &b"EDGE edge-1 "[..],
                PROOF_HEX.as_bytes(),
                b"\n",
                b"\x00\x00",
            ] {
                client.write_all(piece).await.unwrap();
                tokio::task::yield_now().await;
            }
        });
        let mut buf = BytesMut::new();
        let line = tokio::time::timeout(
            Duration::from_secs(5),
            read_line(&mut server, &mut buf, MAX_HELLO_LEN),
        )
        .await
        .unwrap()
        .unwrap();
        assert_eq!(parse_hello(&line).unwrap().proof.to_hex(), PROOF_HEX);
        writer.await.unwrap();
        let mut rest = Vec::new();
        server.read_to_end(&mut rest).await.unwrap();
        buf.extend_from_slice(&rest);
        assert_eq!(&buf[..], b"\x00\x00");
    }

    // ---- properties ----

    fn ident() -> impl Strategy<Value = String> {
        "[!-~]{1,64}|[a-zäöü0-9._-]{1,16}"
    }

    proptest! {
        #[test]
        fn hello_round_trip(edge_id in ident(), bytes in any::<[u8; 32]>()) {
            let line = encode_hello(&edge_id, &LoginProof::from_bytes(bytes)).unwrap();
            let body = line.strip_suffix(b"\n").unwrap();
            let hello = parse_hello(body).unwrap();
            prop_assert_eq!(hello.edge_id, edge_id);
            prop_assert_eq!(hello.proof.as_bytes(), &bytes);
        }

        #[test]
        fn parsers_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = parse_hello(&bytes);
            let _ = parse_reply(&bytes);
            let _ = parse_config(&bytes);
        }

        #[test]
        fn reply_round_trip(
            listen_ports in proptest::collection::vec(any::<u16>(), 0..32),
            listen_ports_udp in proptest::collection::vec(any::<u16>(), 0..32),
            stun_interval_secs in any::<u32>(),
        ) {
            let reply = accepted(EdgeConfigPush {
                heartbeat_timeout_secs: None,
            udp_session_idle_secs: None,
            performance: None,
                listen_ports,
                listen_ports_udp,
                stun_interval_secs,
                firewall_config: None,
                limits: None,
                egress: None,
            });
            let line = encode_reply(&reply).unwrap();
            prop_assert_eq!(line.iter().filter(|&&b| b == b'\n').count(), 1);
            prop_assert!(same(&parse_reply(&line[..line.len() - 1]).unwrap(), &reply));
        }

        #[test]
        fn read_line_any_split_keeps_leftover(
            line in proptest::collection::vec(any::<u8>().prop_filter("no newline", |b| *b != b'\n'), 0..200),
            leftover in proptest::collection::vec(any::<u8>(), 0..200),
            cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..10),
        ) {
            let mut wire = line.clone();
            wire.push(b'\n');
            wire.extend_from_slice(&leftover);
            let mut points: Vec<usize> = cuts.iter().map(|i| i.index(wire.len() + 1)).collect();
            points.push(0);
            points.push(wire.len());
            points.sort_unstable();
            points.dedup();
            let chunks = points.windows(2).map(|w| wire[w[0]..w[1]].to_vec());
            let mut reader = Chunked::new(chunks);
            let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
            let mut buf = BytesMut::new();
            let got = runtime.block_on(read_line(&mut reader, &mut buf, 200)).unwrap();
            prop_assert_eq!(&got[..], &line[..]);
            let mut rest = buf.to_vec();
            rest.extend_from_slice(&reader.rest());
            prop_assert_eq!(rest, leftover);
        }
    }
}
