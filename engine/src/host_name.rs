//! The one check of a host name or address that the configuration, tokens and egress listeners
//! share: what can be dialled at all. Stricter rules stay where they belong (the egress policy's
//! DNS labels, the token's ASCII).

/// Longest DNS name (RFC 1035); a longer one can never be resolved.
pub(crate) const MAX_HOST_LEN: usize = 253;

/// A host name or IP address: non-empty, at most [`MAX_HOST_LEN`] bytes, no whitespace or
/// control characters. The error says what is wrong.
pub(crate) fn check_host(host: &str) -> Result<(), &'static str> {
    if host.is_empty() {
        return Err("must not be empty");
    }
    if host.len() > MAX_HOST_LEN {
        return Err("is longer than 253 bytes");
    }
    if host.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err("must not contain whitespace or control characters");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_addresses_pass_and_the_rest_says_why() {
        for host in [
            "hub.example.net",
            "192.0.2.1",
            "2001:db8::1",
            &"a".repeat(253),
        ] {
            assert_eq!(check_host(host), Ok(()), "{host}");
        }
        assert_eq!(check_host(""), Err("must not be empty"));
        assert_eq!(
            check_host(&"a".repeat(254)),
            Err("is longer than 253 bytes")
        );
        assert!(check_host("a b").is_err());
        assert!(check_host("a\u{7}").is_err());
    }
}
