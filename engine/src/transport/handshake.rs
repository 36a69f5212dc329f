//! The tunnel handshake, identical on TLS and QUIC.
//!
//! 1. The edge sends `EDGE <edgeId> <proof> <instanceId>\n`, where the proof is 64 hex digits of
//!    an HMAC of the TLS channel binding under the edge's secret ([`super::login`]): the secret
//!    itself never crosses the wire. The instance id ([`InstanceId`]) names the edge process, so
//!    that the hub can tell a reconnect from a second process with the same edge id; edges from
//!    before it send only the first three fields.
//! 2. The hub answers one JSON line: the edge's configuration ([`EdgeConfigPush`]) with the hub's
//!    own proof in `hubProof`; `{"error":"unauthorized"}`; or, to a second instance of an edge
//!    that is connected, `{"error":"duplicateEdge",...}` ([`DuplicateRefusal`], also with
//!    `hubProof`). The edge checks `hubProof` before it uses anything else in the reply.
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
/// `crate::ident`), a proof 64 bytes and an instance id 36, so a valid hello is far below this.
pub const MAX_HELLO_LEN: usize = 4096;

/// Longest accepted hub reply line (without its `\n`): it carries the whole firewall snapshot.
pub const MAX_REPLY_LEN: usize = 2 * 1024 * 1024;

/// The hello keyword.
const HELLO_KEYWORD: &str = "EDGE";

/// The `error` of a [`HubReply::Duplicate`] on the wire.
const DUPLICATE_ERROR: &str = "duplicateEdge";

/// Length of an [`InstanceId`]: a hyphenated UUID.
const INSTANCE_ID_LEN: usize = 36;

/// The instance id of one edge process: a random UUID (v4), made once per process, sent in every
/// hello. The hub lets the same instance replace its own tunnel (a reconnect, or later more
/// tunnels of one process) and refuses a different instance while the first is connected: two
/// machines given the same edge id would otherwise take the tunnel from each other every few
/// seconds. Not a secret and not a credential: the login proof is what admits an edge.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct InstanceId(String);

impl InstanceId {
    /// A new random instance id.
    pub fn random() -> Self {
        Self(uuid::Uuid::new_v4().hyphenated().to_string())
    }

    /// Parses the hello's instance field: exactly a UUID in its canonical form (36 characters,
    /// lowercase hex, hyphens at 8-13-18-23), so that one instance has one spelling and the
    /// hub's comparison is a plain string comparison. Any UUID version is accepted.
    pub fn parse(text: &str) -> Option<Self> {
        if text.len() != INSTANCE_ID_LEN {
            return None;
        }
        let uuid = uuid::Uuid::try_parse(text).ok()?;
        let canonical = uuid.hyphenated().to_string();
        (canonical == text).then_some(Self(canonical))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for InstanceId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

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
    #[error(
        "hello line has {found} space-separated fields, expected 4 (or 3 from older edges): \
         EDGE <edgeId> <proof> <instanceId>"
    )]
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
    #[error("the instance id is not a UUID in lowercase hyphenated form")]
    BadInstanceId,
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

/// The edge's hello: who it claims to be, its proof for this channel and which process it is.
#[derive(Debug, Clone)]
pub(crate) struct EdgeHello {
    pub edge_id: String,
    pub proof: LoginProof,
    /// `None` from an edge older than instance ids: the hub cannot tell its reconnects from a
    /// second process, and lets it replace the connected one as before.
    pub instance: Option<InstanceId>,
}

/// Builds `EDGE <edgeId> <proof> <instanceId>\n` (without the instance: the older three-field
/// form, which only tests still send). The id is checked here as well as where it entered the
/// process: an id with a space would shift the fields and be rejected by the hub as a confusing
/// authentication failure, so refuse it locally with a clear error.
pub fn encode_hello(
    edge_id: &str,
    proof: &LoginProof,
    instance: Option<&InstanceId>,
) -> Result<Vec<u8>, HandshakeError> {
    validate_edge_id(edge_id).map_err(HandshakeError::InvalidEdgeId)?;
    let proof = proof.to_hex();
    Ok(match instance {
        Some(instance) => format!("{HELLO_KEYWORD} {edge_id} {proof} {instance}\n"),
        None => format!("{HELLO_KEYWORD} {edge_id} {proof}\n"),
    }
    .into_bytes())
}

/// Parses a hello line given without its `\n`.
///
/// Strict on purpose: four fields (three from older edges) separated by single spaces, the
/// keyword `EDGE` in upper case, 64 hex digits of proof, a canonical instance id
/// ([`InstanceId::parse`]) and no trailing `\r`. Tolerating CRLF or extra spaces would give one
/// hello several spellings and hide a peer that frames lines differently; our encoder never
/// produces them, so only a foreign or broken peer would.
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
    let (Some(keyword), Some(edge_id), Some(proof), instance, None) = (
        fields.next(),
        fields.next(),
        fields.next(),
        fields.next(),
        fields.next(),
    ) else {
        return Err(HandshakeError::FieldCount {
            found: text.split(' ').count(),
        });
    };
    if keyword != HELLO_KEYWORD {
        return Err(HandshakeError::NotEdgeHello);
    }
    validate_edge_id(edge_id).map_err(HandshakeError::InvalidEdgeId)?;
    let proof = LoginProof::from_hex(proof).ok_or(HandshakeError::BadProof)?;
    let instance = instance
        .map(|text| InstanceId::parse(text).ok_or(HandshakeError::BadInstanceId))
        .transpose()?;
    Ok(EdgeHello {
        edge_id: edge_id.to_owned(),
        proof,
        instance,
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
    /// The hub process that pushed this (a random id it makes at start, as an edge does): the
    /// edge shows which hub process it is connected to, and a restarted hub is told apart.
    /// Absent from older hubs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hub_instance_id: Option<String>,
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
    /// Refused because another instance of this edge is connected (check `hub_proof` before
    /// believing the rest: only the hub knows the edge's secret).
    Duplicate(Box<DuplicateRefusal>),
}

/// Wire form of [`HubReply::Rejected`].
#[derive(Serialize, Deserialize)]
struct Rejection {
    error: String,
}

/// A login refused because another process (instance) with the same edge id holds the tunnel.
/// Sent only to an edge whose proof was right: it knows the secret, so it may learn where the
/// other instance connects from, which is what its operator needs to find the second machine.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DuplicateRefusal {
    /// Always [`DUPLICATE_ERROR`]; the key that makes older edges read this as a refusal.
    error: String,
    /// The hub's proof for this channel, as in an acceptance.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    hub_proof: Option<String>,
    /// The address the connected instance's tunnel comes from, as the hub sees it.
    pub connected_from: String,
    /// When to try again: the hub notices a first instance that died silently within its
    /// heartbeat timeout, and this is a few of those.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after_secs: Option<u32>,
}

impl DuplicateRefusal {
    pub fn new(hub_proof: &LoginProof, connected_from: String, retry_after_secs: u32) -> Self {
        Self {
            error: DUPLICATE_ERROR.to_owned(),
            hub_proof: Some(hub_proof.to_hex()),
            connected_from,
            retry_after_secs: Some(retry_after_secs),
        }
    }

    /// The hub's proof, when well-formed.
    pub fn hub_proof(&self) -> Option<LoginProof> {
        self.hub_proof.as_deref().and_then(LoginProof::from_hex)
    }
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
        HubReply::Duplicate(refusal) => serde_json::to_vec(refusal),
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
/// rejection (even if it has other fields): a `DuplicateRefusal` when the error is
/// `duplicateEdge`, else `HubReply::Rejected`; anything else must be an `EdgeConfigPush` with
/// a well-formed `hubProof` (a missing one is `HandshakeError::MissingHubProof`).
pub fn parse_reply(line: &[u8]) -> Result<HubReply, HandshakeError> {
    if line.len() > MAX_REPLY_LEN {
        return Err(HandshakeError::TooLong {
            len: line.len(),
            max: MAX_REPLY_LEN,
        });
    }
    let value: serde_json::Value =
        serde_json::from_slice(line).map_err(HandshakeError::BadReply)?;
    if value.get("error").and_then(serde_json::Value::as_str) == Some(DUPLICATE_ERROR) {
        let refusal: DuplicateRefusal =
            serde_json::from_value(value).map_err(HandshakeError::BadReply)?;
        return Ok(HubReply::Duplicate(Box::new(refusal)));
    }
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

    const INSTANCE: &str = "0f1e2d3c-4b5a-4697-8877-a6b5c4d3e2f1";

    fn instance() -> InstanceId {
        InstanceId::parse(INSTANCE).unwrap()
    }

    #[test]
    fn hello_vector() {
        let line = encode_hello("edge-fra-01", &proof(), Some(&instance())).unwrap();
        assert_eq!(
            line,
            format!("EDGE edge-fra-01 {PROOF_HEX} {INSTANCE}\n").into_bytes()
        );
        let hello = parse_hello(line.strip_suffix(b"\n").unwrap()).unwrap();
        assert_eq!(hello.edge_id, "edge-fra-01");
        assert_eq!(hello.proof.as_bytes(), proof().as_bytes());
        assert_eq!(hello.instance, Some(instance()));
        let unicode = parse_hello(format!("EDGE kante-ü {PROOF_HEX} {INSTANCE}").as_bytes());
        assert_eq!(unicode.unwrap().edge_id, "kante-ü");
    }

    /// An edge from before instance ids sends three fields: accepted, with no instance (the
    /// hub then lets it replace a connected one, as before).
    #[test]
    fn hello_without_an_instance_from_older_edges() {
        let line = encode_hello("edge-fra-01", &proof(), None).unwrap();
        assert_eq!(line, format!("EDGE edge-fra-01 {PROOF_HEX}\n").into_bytes());
        let hello = parse_hello(format!("EDGE edge-fra-01 {PROOF_HEX}").as_bytes()).unwrap();
        assert_eq!(hello.edge_id, "edge-fra-01");
        assert_eq!(hello.instance, None);
    }

    #[test]
    fn instance_ids_are_canonical_uuids_only() {
        let made = InstanceId::random();
        assert_eq!(InstanceId::parse(made.as_str()), Some(made.clone()));
        assert_ne!(made, InstanceId::random());
        for bad in [
            "",
            "x",
            "0F1E2D3C-4B5A-4697-8877-A6B5C4D3E2F1",
            "0f1e2d3c4b5a46978877a6b5c4d3e2f1",
            "{0f1e2d3c-4b5a-4697-8877-a6b5c4d3e2f1}",
            "urn:uuid:0f1e2d3c-4b5a-4697-8877-a6b5c4d3e2f1",
            "0f1e2d3c-4b5a-4697-8877-a6b5c4d3e2f",
            "0f1e2d3c-4b5a-4697-8877-a6b5c4d3e2f1a",
            "0f1e2d3c-4b5a-4697-8877-a6b5c4d3e2fg",
            "0f1e2d3c-4b5a4-697-8877-a6b5c4d3e2f1",
            "0f1e2d3c-4b5a-4697-8877-a6b5c4d3e2f\u{e9}",
        ] {
            assert_eq!(InstanceId::parse(bad), None, "{bad:?}");
            let line = format!("EDGE id {PROOF_HEX} {bad}");
            assert!(
                matches!(
                    parse_hello(line.as_bytes()),
                    Err(HandshakeError::BadInstanceId)
                ),
                "{line:?}"
            );
        }
    }

    #[test]
    fn encode_hello_refuses_invalid_ids() {
        assert!(matches!(
            encode_hello("a b", &proof(), Some(&instance())),
            Err(HandshakeError::InvalidEdgeId(
                IdentError::BadCharacter { .. }
            ))
        ));
        let longest =
            encode_hello(&"i".repeat(MAX_IDENT_LEN), &proof(), Some(&instance())).unwrap();
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
            (b"EDGE id secret instance extra", 5),
            (b"EDGE id  secret instance", 5),
            (b"EDGE id secret instance ", 5),
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
        // A trailing space is an empty fourth field, not a three-field hello.
        assert!(matches!(
            parse_hello(format!("EDGE id {PROOF_HEX} ").as_bytes()),
            Err(HandshakeError::BadInstanceId)
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
            hub_instance_id: None,
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
    fn duplicate_refusal_vector() {
        let reply = HubReply::Duplicate(Box::new(DuplicateRefusal::new(
            &proof(),
            "198.51.100.7:40000".to_owned(),
            30,
        )));
        let line = encode_reply(&reply).unwrap();
        assert_eq!(
            String::from_utf8(line.clone()).unwrap(),
            format!(
                "{{\"error\":\"duplicateEdge\",\"hubProof\":\"{PROOF_HEX}\",\
                 \"connectedFrom\":\"198.51.100.7:40000\",\"retryAfterSecs\":30}}\n"
            )
        );
        let HubReply::Duplicate(parsed) = parse_reply(&line[..line.len() - 1]).unwrap() else {
            panic!("expected a duplicate refusal");
        };
        assert_eq!(parsed.connected_from, "198.51.100.7:40000");
        assert_eq!(parsed.retry_after_secs, Some(30));
        assert_eq!(parsed.hub_proof().unwrap().as_bytes(), proof().as_bytes());
        // Without its proof it parses, and the edge refuses to believe it (no hub_proof).
        let HubReply::Duplicate(unproven) =
            parse_reply(br#"{"error":"duplicateEdge","connectedFrom":"x"}"#).unwrap()
        else {
            panic!("expected a duplicate refusal");
        };
        assert!(unproven.hub_proof().is_none());
        assert!(matches!(
            parse_reply(br#"{"error":"duplicateEdge"}"#),
            Err(HandshakeError::BadReply(_))
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
        fn hello_round_trip(edge_id in ident(), bytes in any::<[u8; 32]>(), with in any::<bool>()) {
            let instance = with.then(InstanceId::random);
            let line = encode_hello(&edge_id, &LoginProof::from_bytes(bytes), instance.as_ref()).unwrap();
            let body = line.strip_suffix(b"\n").unwrap();
            let hello = parse_hello(body).unwrap();
            prop_assert_eq!(hello.edge_id, edge_id);
            prop_assert_eq!(hello.proof.as_bytes(), &bytes);
            prop_assert_eq!(hello.instance, instance);
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
                hub_instance_id: Some(InstanceId::random().to_string()),
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
