//! Validation of edge ids and secrets, wherever they enter (IPC config, token, CLI, handshake).
//!
//! The id travels in the handshake line `EDGE <id> <proof>\n` and both travel in tokens and
//! CLI arguments, so neither may be empty or contain whitespace or control characters; a length
//! cap keeps the line under its 4 KiB limit. (The secret itself never crosses the tunnel: see
//! [`crate::transport::login`].)
//!
//! A secret must also be at least [`MIN_SECRET_LEN`] bytes: the login proof is an HMAC under it,
//! so anyone who records one login (or runs a hub the edge connects to) can test guesses
//! offline, at no cost to the hub's login throttle. [`new_secret`] makes a strong one.

use base64::Engine as _;
use thiserror::Error;

/// Longest accepted edge id or secret, in bytes.
pub(crate) const MAX_IDENT_LEN: usize = 1024;
/// Shortest accepted secret, in bytes.
pub(crate) const MIN_SECRET_LEN: usize = 16;
/// Random bytes in a secret made by [`new_secret`].
const NEW_SECRET_BYTES: usize = 32;

/// Why an edge id or secret was refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum IdentError {
    #[error("{what} must not be empty")]
    Empty { what: &'static str },
    #[error("{what} is longer than {MAX_IDENT_LEN} bytes")]
    TooLong { what: &'static str },
    #[error("{what} must not contain whitespace or control characters")]
    BadCharacter { what: &'static str },
    #[error(
        "secret is shorter than {MIN_SECRET_LEN} bytes: generate one with \
         `remoteingress-bin secret new` (32 random bytes)"
    )]
    TooShort,
}

/// Checks an edge id.
pub(crate) fn validate_edge_id(id: &str) -> Result<(), IdentError> {
    validate("edge id", id)
}

/// Checks an edge secret.
pub(crate) fn validate_secret(secret: &str) -> Result<(), IdentError> {
    validate("secret", secret)?;
    if secret.len() < MIN_SECRET_LEN {
        return Err(IdentError::TooShort);
    }
    Ok(())
}

/// A new secret: `NEW_SECRET_BYTES` bytes from the OS's random source, base64url without
/// padding (43 characters, safe in URLs, shells, TOML and JSON).
pub fn new_secret() -> Result<String, ring::error::Unspecified> {
    let mut bytes = [0u8; NEW_SECRET_BYTES];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes)?;
    Ok(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes))
}

fn validate(what: &'static str, value: &str) -> Result<(), IdentError> {
    if value.is_empty() {
        return Err(IdentError::Empty { what });
    }
    if value.len() > MAX_IDENT_LEN {
        return Err(IdentError::TooLong { what });
    }
    if value.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(IdentError::BadCharacter { what });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_ordinary_values() {
        assert_eq!(validate_edge_id("edge-fra-01"), Ok(()));
        assert_eq!(validate_secret("s3cr3t/+=_.~abcd"), Ok(()));
        assert_eq!(validate_edge_id("kante-ü"), Ok(()));
    }

    #[test]
    fn refuses_empty_whitespace_control_and_long() {
        assert_eq!(
            validate_edge_id(""),
            Err(IdentError::Empty { what: "edge id" })
        );
        for bad in ["a b", "a\tb", "a\nb", "a\u{0}b", "a\u{7f}b", "a\u{a0}b"] {
            assert_eq!(
                validate_secret(bad),
                Err(IdentError::BadCharacter { what: "secret" }),
                "{bad:?}"
            );
        }
        assert_eq!(
            validate_secret(&"x".repeat(MAX_IDENT_LEN + 1)),
            Err(IdentError::TooLong { what: "secret" })
        );
    }

    #[test]
    fn refuses_short_secrets_and_says_how_to_make_one() {
        let short = validate_secret(&"x".repeat(MIN_SECRET_LEN - 1)).unwrap_err();
        assert_eq!(short, IdentError::TooShort);
        assert!(
            short.to_string().contains("remoteingress-bin secret new"),
            "{short}"
        );
        assert_eq!(validate_secret(&"x".repeat(MIN_SECRET_LEN)), Ok(()));
        // An edge id has no minimum.
        assert_eq!(validate_edge_id("e"), Ok(()));
    }

    #[test]
    fn new_secrets_are_valid_long_and_distinct() {
        let (a, b) = (new_secret().unwrap(), new_secret().unwrap());
        assert_eq!(a.len(), 43);
        assert_eq!(validate_secret(&a), Ok(()));
        assert_ne!(a, b);
    }
}
