//! Mutual, channel-bound login: each side proves it knows the edge's secret without sending it.
//!
//! Both sides derive a 32-byte *channel binding* from the TLS session they share (the RFC 8446
//! exporter, [`EXPORTER_LABEL`]; QUIC runs TLS 1.3 too). The exporter value depends on both
//! sides' handshake randomness and key shares, so it is fresh for every tunnel connection and
//! serves as the hub's nonce: the login needs no extra round trip.
//!
//! - The edge sends `HMAC-SHA256(secret, "remoteingress/1 edge proof" ‖ binding ‖ edgeId)`.
//! - The hub checks it and answers with `HMAC-SHA256(secret, "remoteingress/1 hub proof" ‖ ...)`;
//!   the edge accepts no configuration and opens no stream before it has checked that.
//!
//! A party that terminates TLS itself (a man in the middle without a pinned certificate) has a
//! different TLS session on each side, so a proof it relays is worthless to the hub and it never
//! learns the secret; a hub that does not know the secret cannot produce the hub proof.

use hmac::{Hmac, Mac};
use remoteingress_ipc_schema::Secret;
use sha2::Sha256;

/// RFC 5705/8446 exporter label of the login binding.
pub(crate) const EXPORTER_LABEL: &[u8] = b"EXPORTER-remoteingress-login-v1";

/// Length of a proof (an HMAC-SHA256 tag) and of the channel binding.
pub(crate) const PROOF_LEN: usize = 32;

const EDGE_PROOF_LABEL: &[u8] = b"remoteingress/1 edge proof";
const HUB_PROOF_LABEL: &[u8] = b"remoteingress/1 hub proof";

type HmacSha256 = Hmac<Sha256>;

/// Why the channel binding could not be derived, with the library's error.
#[derive(Debug, thiserror::Error)]
pub enum BindingError {
    #[error("cannot derive the TLS channel binding: {0}")]
    Tls(#[source] rustls::Error),
    /// quinn's error has no Display: its Debug name is the message.
    #[error("cannot derive the TLS channel binding: {0:?}")]
    Quic(quinn::crypto::ExportKeyingMaterialError),
}

/// Keying material exported from the tunnel's TLS session; equal on both ends of one session.
#[derive(Clone, Copy)]
pub struct ChannelBinding([u8; PROOF_LEN]);

impl std::fmt::Debug for ChannelBinding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ChannelBinding(..)")
    }
}

impl ChannelBinding {
    /// From a TLS connection whose handshake is complete (either side).
    pub fn from_tls<Data>(
        connection: &rustls::ConnectionCommon<Data>,
    ) -> Result<Self, BindingError> {
        connection
            .export_keying_material([0u8; PROOF_LEN], EXPORTER_LABEL, Some(b""))
            .map(Self)
            .map_err(BindingError::Tls)
    }

    /// From an established QUIC connection (either side).
    pub fn from_quic(connection: &quinn::Connection) -> Result<Self, BindingError> {
        let mut out = [0u8; PROOF_LEN];
        connection
            .export_keying_material(&mut out, EXPORTER_LABEL, b"")
            .map_err(BindingError::Quic)?;
        Ok(Self(out))
    }

    /// A binding from raw bytes (tests, and the hub's decoy for unknown edge ids).
    pub fn from_bytes(bytes: [u8; PROOF_LEN]) -> Self {
        Self(bytes)
    }
}

/// An HMAC tag proving knowledge of the secret for one channel. Compared only through the
/// `verify_*` functions, which are constant-time.
#[derive(Clone, Copy)]
pub struct LoginProof([u8; PROOF_LEN]);

impl std::fmt::Debug for LoginProof {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LoginProof(..)")
    }
}

impl LoginProof {
    pub fn from_bytes(bytes: [u8; PROOF_LEN]) -> Self {
        Self(bytes)
    }

    pub fn as_bytes(&self) -> &[u8; PROOF_LEN] {
        &self.0
    }

    /// Lowercase hex, as on the wire.
    pub fn to_hex(self) -> String {
        hex::encode(self.0)
    }

    /// Parses exactly 64 hex digits.
    pub fn from_hex(text: &str) -> Option<Self> {
        let mut out = [0u8; PROOF_LEN];
        hex::decode_to_slice(text, &mut out).ok()?;
        Some(Self(out))
    }
}

fn mac(key: &[u8], label: &[u8], binding: &ChannelBinding, edge_id: &str) -> HmacSha256 {
    // HMAC takes keys of any length, so `new_from_slice` cannot fail; the fallback keeps this
    // total without an unwrap.
    let mut mac = HmacSha256::new_from_slice(key)
        .unwrap_or_else(|_| <HmacSha256 as hmac::digest::KeyInit>::new(&Default::default()));
    mac.update(label);
    mac.update(&[0]);
    mac.update(&binding.0);
    mac.update(edge_id.as_bytes());
    mac
}

fn tag(key: &[u8], label: &[u8], binding: &ChannelBinding, edge_id: &str) -> LoginProof {
    LoginProof(
        mac(key, label, binding, edge_id)
            .finalize()
            .into_bytes()
            .into(),
    )
}

fn verify(
    key: &[u8],
    label: &[u8],
    binding: &ChannelBinding,
    edge_id: &str,
    proof: &LoginProof,
) -> bool {
    mac(key, label, binding, edge_id)
        .verify_slice(&proof.0)
        .is_ok()
}

/// The edge's proof for this channel.
pub fn edge_proof(secret: &Secret, binding: &ChannelBinding, edge_id: &str) -> LoginProof {
    tag(
        secret.expose().as_bytes(),
        EDGE_PROOF_LABEL,
        binding,
        edge_id,
    )
}

/// Checks an edge's proof in constant time. `key` is the edge's secret, or a decoy for an
/// unknown edge id so that both cases cost the same.
pub(crate) fn verify_edge_proof(
    key: &[u8],
    binding: &ChannelBinding,
    edge_id: &str,
    proof: &LoginProof,
) -> bool {
    verify(key, EDGE_PROOF_LABEL, binding, edge_id, proof)
}

/// The hub's proof for this channel.
pub(crate) fn hub_proof(secret: &Secret, binding: &ChannelBinding, edge_id: &str) -> LoginProof {
    tag(
        secret.expose().as_bytes(),
        HUB_PROOF_LABEL,
        binding,
        edge_id,
    )
}

/// Checks the hub's proof in constant time.
pub fn verify_hub_proof(
    secret: &Secret,
    binding: &ChannelBinding,
    edge_id: &str,
    proof: &LoginProof,
) -> bool {
    verify(
        secret.expose().as_bytes(),
        HUB_PROOF_LABEL,
        binding,
        edge_id,
        proof,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn binding(byte: u8) -> ChannelBinding {
        ChannelBinding::from_bytes([byte; PROOF_LEN])
    }

    #[test]
    fn proofs_verify_only_for_the_same_secret_channel_edge_and_direction() {
        let secret = Secret::new("s3cret");
        let proof = edge_proof(&secret, &binding(1), "edge-a");
        assert!(verify_edge_proof(b"s3cret", &binding(1), "edge-a", &proof));
        assert!(!verify_edge_proof(b"s3creT", &binding(1), "edge-a", &proof));
        assert!(!verify_edge_proof(b"s3cret", &binding(2), "edge-a", &proof));
        assert!(!verify_edge_proof(b"s3cret", &binding(1), "edge-b", &proof));
        // An edge proof is not a hub proof (no reflection).
        assert!(!verify_hub_proof(&secret, &binding(1), "edge-a", &proof));
        let hub = hub_proof(&secret, &binding(1), "edge-a");
        assert!(verify_hub_proof(&secret, &binding(1), "edge-a", &hub));
        assert!(!verify_hub_proof(
            &Secret::new("other"),
            &binding(1),
            "edge-a",
            &hub
        ));
    }

    #[test]
    fn hex_round_trip_and_strictness() {
        let proof = edge_proof(&Secret::new("x"), &binding(9), "e");
        let hex = proof.to_hex();
        assert_eq!(hex.len(), 64);
        assert_eq!(
            LoginProof::from_hex(&hex).unwrap().as_bytes(),
            proof.as_bytes()
        );
        assert!(LoginProof::from_hex(&hex[..63]).is_none());
        assert!(LoginProof::from_hex(&format!("{}0", hex)).is_none());
        assert!(LoginProof::from_hex(&"g".repeat(64)).is_none());
        assert!(LoginProof::from_hex(&"+1".repeat(32)).is_none());
        assert!(LoginProof::from_hex(&"é".repeat(32)).is_none());
        assert!(!format!("{proof:?}").contains(&hex[..8]));
    }

    #[tokio::test]
    async fn both_ends_of_a_tls_session_derive_the_same_binding_and_other_sessions_differ() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let identity = crate::tls::HubIdentity::self_signed().unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(identity.server_config().unwrap());
        let connector =
            tokio_rustls::TlsConnector::from(crate::tls::edge_client_config(None, None).unwrap());
        let mut bindings = Vec::new();
        for _ in 0..2 {
            let (a, b) = tokio::io::duplex(64 * 1024);
            let acceptor = acceptor.clone();
            let server = tokio::spawn(async move {
                let mut tls = acceptor.accept(a).await.unwrap();
                let mut byte = [0u8; 1];
                tls.read_exact(&mut byte).await.unwrap();
                ChannelBinding::from_tls(tls.get_ref().1).unwrap()
            });
            let mut tls = connector
                .connect(crate::tls::server_name("127.0.0.1"), b)
                .await
                .unwrap();
            tls.write_all(b"x").await.unwrap();
            tls.flush().await.unwrap();
            let client = ChannelBinding::from_tls(tls.get_ref().1).unwrap();
            let server = server.await.unwrap();
            assert_eq!(client.0, server.0);
            bindings.push(client.0);
        }
        assert_ne!(bindings[0], bindings[1]);
    }
}
