//! TLS material for both transports: the hub's certificate (given as PEM or generated with rcgen),
//! its SHA-256 fingerprint, and the edge's verifier that pins that fingerprint.
//!
//! Edges reach hubs by address or by names that rarely have a public CA certificate, so trust is
//! by fingerprint (docs/architecture.md, "Login and handshake"): with `hubCertSha256` the edge refuses any
//! other certificate; without it the edge accepts any certificate but reports
//! `hubVerified: false`. Either way the handshake signature is verified, so the hub proves it
//! holds the key of the certificate it presents, and the login is bound to the TLS session
//! (see [`crate::transport::login`]).
//!
//! Both sides speak TLS 1.3 only: the login's channel binding is the RFC 8446 exporter, which in
//! TLS 1.2 without extended master secret is not unique per session (the triple-handshake
//! attack). QUIC is TLS 1.3 anyway, and hub and edge are the same software.

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::pem::{Error as PemError, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use sha2::{Digest, Sha256};

/// ALPN protocol id of the tunnel, on TLS and QUIC alike.
pub(crate) const ALPN: &[u8] = b"remoteingress/1";

/// Subject name of the generated self-signed hub certificate.
const SELF_SIGNED_NAME: &str = "remoteingress-hub";

/// Why TLS material could not be built; each variant keeps the library's error as its source.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("certificate PEM: {0}")]
    CertPem(#[source] PemError),
    #[error("the certificate PEM contains no certificate")]
    NoCertificate,
    #[error("private key PEM: {0}")]
    KeyPem(#[source] PemError),
    #[error("cannot generate a self-signed certificate: {0}")]
    Generate(#[source] rcgen::Error),
    /// rcgen's key in a form rustls does not take (rustls says why in words only).
    #[error("cannot generate a self-signed certificate: {0}")]
    GeneratedKey(&'static str),
    #[error("certificate and key do not work together: {0}")]
    Config(#[source] rustls::Error),
    /// A `hubCaPem` certificate the root store refuses.
    #[error("certificate and key do not work together: hub CA certificate: {0}")]
    CaCertificate(#[source] rustls::Error),
    /// No verifier can be built from the `hubCaPem` roots.
    #[error("certificate and key do not work together: {0}")]
    CaVerifier(#[source] rustls::client::VerifierBuilderError),
}

/// The hub's certificate chain and key, plus the leaf's fingerprint.
#[derive(Debug)]
pub struct HubIdentity {
    pub chain: Vec<CertificateDer<'static>>,
    pub key: PrivateKeyDer<'static>,
    /// Lowercase hex SHA-256 of the leaf certificate (DER).
    pub fingerprint: String,
}

impl HubIdentity {
    /// From PEM text (leaf first in the chain).
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<Self, TlsError> {
        let chain = CertificateDer::pem_slice_iter(cert_pem.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .map_err(TlsError::CertPem)?;
        let leaf = chain.first().ok_or(TlsError::NoCertificate)?;
        let fingerprint = fingerprint_hex(leaf);
        let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).map_err(TlsError::KeyPem)?;
        Ok(Self {
            chain,
            key,
            fingerprint,
        })
    }

    /// A fresh self-signed certificate and its key as PEM (what the state directory stores).
    pub fn generate_pem() -> Result<(String, String), TlsError> {
        let certified = rcgen::generate_simple_self_signed(vec![SELF_SIGNED_NAME.to_owned()])
            .map_err(TlsError::Generate)?;
        Ok((certified.cert.pem(), certified.key_pair.serialize_pem()))
    }

    /// A fresh self-signed certificate (used when the operator gives none).
    pub fn self_signed() -> Result<Self, TlsError> {
        let certified = rcgen::generate_simple_self_signed(vec![SELF_SIGNED_NAME.to_owned()])
            .map_err(TlsError::Generate)?;
        let leaf = certified.cert.der().clone();
        let key = PrivateKeyDer::try_from(certified.key_pair.serialize_der())
            .map_err(TlsError::GeneratedKey)?;
        Ok(Self {
            fingerprint: fingerprint_hex(&leaf),
            chain: vec![leaf],
            key,
        })
    }

    /// The key of the hub's QUIC stateless resets, derived from its private key: the same for
    /// as long as the identity is (see `state_dir`), and unguessable without the key.
    pub fn quic_reset_key(&self) -> [u8; 32] {
        let mut hash = Sha256::new();
        hash.update(b"remoteingress/1 QUIC stateless reset key");
        hash.update(self.key.secret_der());
        hash.finalize().into()
    }

    /// The rustls server configuration for the tunnel listener.
    pub fn server_config(&self) -> Result<Arc<rustls::ServerConfig>, TlsError> {
        let mut config = rustls::ServerConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(TlsError::Config)?
            .with_no_client_auth()
            .with_single_cert(self.chain.clone(), self.key.clone_key())
            .map_err(TlsError::Config)?;
        config.alpn_protocols = vec![ALPN.to_vec()];
        Ok(Arc::new(config))
    }
}

/// The crypto provider used everywhere (ring: no C toolchain surprises on build machines).
pub(crate) fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Lowercase hex SHA-256 of a certificate.
pub(crate) fn fingerprint_hex(cert: &CertificateDer<'_>) -> String {
    hex::encode(Sha256::digest(cert.as_ref()))
}

/// Why `hubCaPem` was refused (the field's path is the caller's [`crate::config::ConfigError`]'s).
#[derive(Debug, thiserror::Error)]
pub(crate) enum BadCaPem {
    #[error("is not PEM: {0}")]
    NotPem(#[source] PemError),
    #[error("contains no certificate")]
    NoCertificate,
}

/// Parses the PEM CA certificates of `hubCaPem` (at least one).
pub(crate) fn parse_ca_pem(text: &str) -> Result<Vec<CertificateDer<'static>>, BadCaPem> {
    let certificates = CertificateDer::pem_slice_iter(text.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(BadCaPem::NotPem)?;
    if certificates.is_empty() {
        return Err(BadCaPem::NoCertificate);
    }
    Ok(certificates)
}

/// The rustls client configuration for an edge; `pin` is the expected leaf SHA-256, `ca` the
/// roots the hub's certificate must chain to (with the hub's name checked). Either, both, or
/// neither (then any certificate is accepted and the edge reports `hubVerified: false`).
pub fn edge_client_config(
    pin: Option<[u8; 32]>,
    ca: Option<&[CertificateDer<'static>]>,
) -> Result<Arc<rustls::ClientConfig>, TlsError> {
    let provider = provider();
    let chain = match ca {
        Some(roots) => {
            let mut store = rustls::RootCertStore::empty();
            for root in roots {
                store.add(root.clone()).map_err(TlsError::CaCertificate)?;
            }
            Some(
                rustls::client::WebPkiServerVerifier::builder_with_provider(
                    Arc::new(store),
                    provider.clone(),
                )
                .build()
                .map_err(TlsError::CaVerifier)?,
            )
        }
        None => None,
    };
    let verifier = Arc::new(PinnedHubVerifier {
        pin,
        chain,
        provider: provider.clone(),
    });
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(TlsError::Config)?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    config.alpn_protocols = vec![ALPN.to_vec()];
    Ok(Arc::new(config))
}

/// Begins the message of a refused hub certificate whose fingerprint is not the pinned one,
/// which passes through rustls and quinn as text: the edge recognises it by this.
pub(crate) const FINGERPRINT_MISMATCH: &str = "hub certificate fingerprint mismatch";

/// What a fingerprint mismatch says: both fingerprints, the likely cause and the fix.
fn fingerprint_mismatch(actual: &str, pinned: &str) -> String {
    format!(
        "{FINGERPRINT_MISMATCH}: the hub presents {actual}, this edge pins {pinned}. Either the \
         hub's identity changed (its state directory was lost or moved: restore \
         hub-identity.pem there, or give this edge a new token from `remoteingress-bin token \
         issue`, or pin the new fingerprint with --hub-cert-sha256 once you have checked it on \
         the hub), or this is not your hub"
    )
}

/// The server name an edge presents. Hub certificates are checked by fingerprint, not by name,
/// so a host that is not a valid TLS name (rare) falls back to a fixed address; SNI is then
/// simply not meaningful.
pub fn server_name(host: &str) -> ServerName<'static> {
    ServerName::try_from(host.to_owned())
        .unwrap_or_else(|_| ServerName::IpAddress(std::net::Ipv4Addr::LOCALHOST.into()))
}

/// Accepts the hub certificate that chains to the configured CA and names the hub (when a CA
/// is given) and whose SHA-256 equals the pin (when a pin is given); without either, any. The
/// handshake signatures are always verified with the provider's algorithms.
#[derive(Debug)]
struct PinnedHubVerifier {
    pin: Option<[u8; 32]>,
    chain: Option<Arc<rustls::client::WebPkiServerVerifier>>,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for PinnedHubVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if let Some(chain) = &self.chain {
            chain.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)?;
        }
        let Some(pin) = self.pin else {
            return Ok(ServerCertVerified::assertion());
        };
        let actual: [u8; 32] = Sha256::digest(end_entity.as_ref()).into();
        if subtle::ConstantTimeEq::ct_eq(&actual[..], &pin[..]).into() {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::General(fingerprint_mismatch(
                &hex::encode(actual),
                &hex::encode(pin),
            )))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// One handshake and four bytes; the edge's error when it fails (a refused pin is a
    /// rustls error inside the I/O error).
    async fn handshake(
        identity: &HubIdentity,
        pin: Option<[u8; 32]>,
    ) -> Result<(), std::io::Error> {
        let acceptor = tokio_rustls::TlsAcceptor::from(identity.server_config().unwrap());
        let connector = tokio_rustls::TlsConnector::from(edge_client_config(pin, None).unwrap());
        let (a, b) = tokio::io::duplex(64 * 1024);
        let server = tokio::spawn(async move {
            let mut tls = acceptor.accept(a).await?;
            let mut buf = [0u8; 4];
            tls.read_exact(&mut buf).await?;
            Ok::<_, std::io::Error>(buf)
        });
        let mut tls = connector.connect(server_name("127.0.0.1"), b).await?;
        assert_eq!(tls.get_ref().1.alpn_protocol(), Some(ALPN));
        tls.write_all(b"ping").await?;
        tls.flush().await?;
        assert_eq!(&server.await.unwrap()?, b"ping");
        Ok(())
    }

    #[tokio::test]
    async fn pinned_fingerprint_is_accepted_and_a_wrong_one_refused() {
        let identity = HubIdentity::self_signed().unwrap();
        let pin = crate::config::parse_fingerprint(&identity.fingerprint).unwrap();
        handshake(&identity, Some(pin)).await.unwrap();
        handshake(&identity, None).await.unwrap();
        let error = handshake(&identity, Some([7; 32]))
            .await
            .unwrap_err()
            .to_string();
        assert!(error.contains(FINGERPRINT_MISMATCH), "{error}");
        assert!(error.contains(&identity.fingerprint), "{error}");
        assert!(error.contains(&"07".repeat(32)), "{error}");
    }

    #[test]
    fn pem_round_trip_keeps_the_fingerprint() {
        let certified = rcgen::generate_simple_self_signed(vec!["hub.test".to_owned()]).unwrap();
        let identity =
            HubIdentity::from_pem(&certified.cert.pem(), &certified.key_pair.serialize_pem())
                .unwrap();
        assert_eq!(identity.fingerprint, fingerprint_hex(certified.cert.der()));
        assert_eq!(identity.fingerprint.len(), 64);
        assert!(identity.server_config().is_ok());
        assert!(matches!(
            HubIdentity::from_pem("nothing here", "x"),
            Err(TlsError::NoCertificate)
        ));
        assert!(matches!(
            HubIdentity::from_pem(&certified.cert.pem(), "no key"),
            Err(TlsError::KeyPem(_))
        ));
    }
}
