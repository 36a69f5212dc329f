//! Validation of edge ids and secrets, wherever they enter (IPC config, token, CLI, handshake).
//!
//! The id travels in the handshake line `EDGE <id> <proof>\n` and both travel in tokens and
//! CLI arguments, so neither may be empty or contain whitespace or control characters; a length
//! cap keeps the line under its 4 KiB limit. (The secret itself never crosses the tunnel: see
//! [`crate::transport::login`].)

use thiserror::Error;

/// Longest accepted edge id or secret, in bytes.
pub(crate) const MAX_IDENT_LEN: usize = 1024;

/// Why an edge id or secret was refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum IdentError {
    #[error("{what} must not be empty")]
    Empty { what: &'static str },
    #[error("{what} is longer than {MAX_IDENT_LEN} bytes")]
    TooLong { what: &'static str },
    #[error("{what} must not contain whitespace or control characters")]
    BadCharacter { what: &'static str },
}

/// Checks an edge id.
pub(crate) fn validate_edge_id(id: &str) -> Result<(), IdentError> {
    validate("edge id", id)
}

/// Checks an edge secret.
pub(crate) fn validate_secret(secret: &str) -> Result<(), IdentError> {
    validate("secret", secret)
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
        assert_eq!(validate_secret("s3cr3t/+=_.~"), Ok(()));
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
}
