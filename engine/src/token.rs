//! Connection tokens: one opaque string that carries everything an edge needs to reach its hub.
//!
//! A token is base64url (RFC 4648 §5) of the JSON object `{"h":hubHost,"p":hubPort,"e":edgeId,
//! "s":secret,"f":certSha256}`, `f` left out when no hub certificate is pinned. Encoding writes
//! no padding and the keys in that order; the TypeScript wrapper writes the same with
//! `Buffer.from(JSON.stringify({h, p, e, s, f})).toString("base64url")`, and each side decodes
//! the other's tokens (`ts-wrapper/test/token.test.ts` checks both directions against this
//! binary).
//!
//! Decoding trims surrounding whitespace (copy and paste adds newlines), accepts canonical `=`
//! padding, and refuses the standard alphabet's `+`/`/`, non-zero trailing bits (a truncated or
//! altered token), unknown, missing and duplicate keys, and any field that fails the same checks
//! the IPC config applies (`crate::ident`, a non-empty ASCII host, a port 1..65535, a 64-digit
//! hex fingerprint, returned lower-case). The TypeScript side reads JSON with `JSON.parse`, which
//! keeps the last of duplicate keys and reads `8443.0` as `8443`; it accepts those two spellings,
//! which no encoder writes. No error message contains the secret or the token.

use std::str::FromStr;

use base64::alphabet::URL_SAFE;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use base64::Engine as _;
use remoteingress_ipc_schema::Secret;
use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::ident::{validate_edge_id, validate_secret, IdentError};

/// Longest accepted token, in bytes after trimming: the largest valid token (every field at its
/// length limit, all characters escaped) is about 6 KiB, so this refuses only garbage.
pub const MAX_TOKEN_LEN: usize = 8 * 1024;

/// Writes without padding; reads with or without canonical padding.
const BASE64URL: GeneralPurpose = GeneralPurpose::new(
    &URL_SAFE,
    GeneralPurposeConfig::new()
        .with_encode_padding(false)
        .with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// Everything an edge needs to connect to its hub; the serde form is the token's JSON.
///
/// `Debug` is safe to log: the secret prints as `"***"`.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConnectionToken {
    /// Hub host name or IP address (ASCII; international names in punycode).
    #[serde(rename = "h")]
    pub hub_host: String,
    /// Hub tunnel port, 1..=65535.
    #[serde(rename = "p")]
    pub hub_port: u16,
    /// This edge's id.
    #[serde(rename = "e")]
    pub edge_id: String,
    /// This edge's secret.
    #[serde(rename = "s")]
    pub secret: Secret,
    /// Hex SHA-256 of the hub certificate to pin; lower-case when decoded.
    #[serde(rename = "f", default, skip_serializing_if = "Option::is_none")]
    pub hub_cert_sha256: Option<String>,
}

/// Why a token could not be decoded, or a [`ConnectionToken`] could not be encoded. No variant
/// holds the secret or the token (serde_json's messages quote a wrongly typed value, and the
/// secret is never one: a string `s` is well typed).
#[derive(Debug, Error)]
pub enum TokenError {
    #[error("connection token is empty")]
    Empty,
    #[error("connection token is {len} bytes long, more than the limit of {MAX_TOKEN_LEN}")]
    TooLong { len: usize },
    #[error("connection token is not base64url (alphabet A-Z a-z 0-9 - _): {0}")]
    Base64(#[from] base64::DecodeError),
    /// serde_json names the key (`missing field `s``); the legend says what it is.
    #[error(
        "decoded connection token is not JSON of the form {{h: hub host, p: hub port 1-65535, \
         e: edge id, s: secret, f: hub certificate SHA-256 (optional)}}: {0}"
    )]
    Json(#[from] serde_json::Error),
    #[error("token field \"h\" (hub host) {0}")]
    HubHost(&'static str),
    #[error("token field \"p\" (hub port) must be 1..65535")]
    PortZero,
    #[error("token field \"e\": {0}")]
    EdgeId(IdentError),
    #[error("token field \"s\": {0}")]
    Secret(IdentError),
    #[error("token field \"f\" (hub certificate fingerprint) must be 64 hex digits, no ':'")]
    CertSha256,
}

impl ConnectionToken {
    /// Validates the token, then encodes it; the fingerprint is written lower-case.
    pub fn encode(&self) -> Result<String, TokenError> {
        self.validate()?;
        let mut canonical = self.clone();
        canonical.hub_cert_sha256 = self.hub_cert_sha256.as_deref().map(str::to_ascii_lowercase);
        Ok(BASE64URL.encode(serde_json::to_vec(&canonical)?))
    }

    /// Decodes and validates a token; see the module docs for what is accepted.
    pub fn decode(token: &str) -> Result<Self, TokenError> {
        let token = token.trim();
        if token.is_empty() {
            return Err(TokenError::Empty);
        }
        if token.len() > MAX_TOKEN_LEN {
            return Err(TokenError::TooLong { len: token.len() });
        }
        let mut decoded: Self = serde_json::from_slice(&BASE64URL.decode(token)?)?;
        decoded.validate()?;
        if let Some(fingerprint) = &mut decoded.hub_cert_sha256 {
            fingerprint.make_ascii_lowercase();
        }
        Ok(decoded)
    }

    /// Checks every field as [`ConnectionToken::decode`] does; `encode` calls it first, so a token
    /// that encodes also decodes.
    pub fn validate(&self) -> Result<(), TokenError> {
        let host = &self.hub_host;
        crate::host_name::check_host(host).map_err(TokenError::HubHost)?;
        // TLS server names and DNS need the ASCII form: a non-ASCII host could never connect.
        if !host.is_ascii() {
            return Err(TokenError::HubHost(
                "must be ASCII (write an international name in punycode, xn--)",
            ));
        }
        if self.hub_port == 0 {
            return Err(TokenError::PortZero);
        }
        validate_edge_id(&self.edge_id).map_err(TokenError::EdgeId)?;
        validate_secret(self.secret.expose()).map_err(TokenError::Secret)?;
        match &self.hub_cert_sha256 {
            Some(f) if f.len() != 64 || !f.bytes().all(|b| b.is_ascii_hexdigit()) => {
                Err(TokenError::CertSha256)
            }
            _ => Ok(()),
        }
    }
}

impl FromStr for ConnectionToken {
    type Err = TokenError;

    fn from_str(token: &str) -> Result<Self, Self::Err> {
        Self::decode(token)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const KNOWN_TOKEN: &str =
        "eyJoIjoiaHViLmV4YW1wbGUuY29tIiwicCI6ODQ0MywiZSI6ImVkZ2UtMSIsInMiOiJjb3JyZWN0LWhvcnNlLWJhdHRlcnkifQ";
    /// A secret of the shortest accepted length.
    const S16: &str = "0123456789abcdef";
    const FINGERPRINT: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    fn token(host: &str, port: u16, id: &str, secret: &str, f: Option<&str>) -> ConnectionToken {
        ConnectionToken {
            hub_host: host.to_owned(),
            hub_port: port,
            edge_id: id.to_owned(),
            secret: Secret::new(secret),
            hub_cert_sha256: f.map(str::to_owned),
        }
    }

    fn known() -> ConnectionToken {
        token(
            "hub.example.com",
            8443,
            "edge-1",
            "correct-horse-battery",
            None,
        )
    }

    /// Encodes raw JSON text as a token, bypassing validation.
    fn decode_json(json: &str) -> Result<ConnectionToken, TokenError> {
        ConnectionToken::decode(&BASE64URL.encode(json))
    }

    fn refusal(json: &str) -> String {
        match decode_json(json) {
            Ok(decoded) => panic!("{json} decoded to {decoded:?}"),
            Err(error) => error.to_string(),
        }
    }

    #[test]
    fn known_vectors_from_node() {
        // Buffer.from(JSON.stringify({h, p, e, s}), "utf8").toString("base64url") in Node.
        assert_eq!(known().encode().unwrap(), KNOWN_TOKEN);
        assert_eq!(ConnectionToken::decode(KNOWN_TOKEN).unwrap(), known());
        assert_eq!(KNOWN_TOKEN.parse::<ConnectionToken>().unwrap(), known());
        // JSON.stringify({h: "hub.example.com", p: 443, e: "kante-ü", s: 'p"w\\d€😀-secret',
        // f: "ab".repeat(32)}): escapes and non-ASCII agree.
        let expected = "eyJoIjoiaHViLmV4YW1wbGUuY29tIiwicCI6NDQzLCJlIjoia2FudGUtw7wiLCJzIjoicFwid1xcZOKCrPCfmIAtc2VjcmV0IiwiZiI6ImFiYWJhYmFiYWJhYmFiYWJhYmFiYWJhYmFiYWJhYmFiYWJhYmFiYWJhYmFiYWJhYmFiYWJhYmFiYWJhYmFiYWIifQ";
        let fingerprint = "ab".repeat(32);
        let value = token(
            "hub.example.com",
            443,
            "kante-ü",
            "p\"w\\d€😀-secret",
            Some(&fingerprint),
        );
        assert_eq!(value.encode().unwrap(), expected);
        assert_eq!(ConnectionToken::decode(expected).unwrap(), value);
    }

    #[test]
    fn fingerprint_is_written_and_read_lower_case() {
        let upper = FINGERPRINT.to_ascii_uppercase();
        let encoded = token("h", 1, "e", S16, Some(&upper)).encode().unwrap();
        let lower = token("h", 1, "e", S16, Some(FINGERPRINT));
        assert_eq!(encoded, lower.encode().unwrap());
        let json = format!(r#"{{"h":"h","p":1,"e":"e","s":"{S16}","f":"{upper}"}}"#);
        assert_eq!(decode_json(&json).unwrap(), lower);
    }

    #[test]
    fn accepts_surrounding_whitespace_canonical_padding_any_key_order_and_null_f() {
        let decode = |text: &str| ConnectionToken::decode(text).unwrap();
        assert_eq!(decode(&format!(" \n\t{KNOWN_TOKEN}\r\n")), known());
        // The JSON is 73 bytes, so canonical padding is two '='.
        assert_eq!(decode(&format!("{KNOWN_TOKEN}==")), known());
        let reordered =
            r#" { "s" : "correct-horse-battery", "e":"edge-1", "p":8443, "h":"hub.example.com" } "#;
        assert_eq!(decode_json(reordered).unwrap(), known());
        let null_f =
            r#"{"h":"hub.example.com","p":8443,"e":"edge-1","s":"correct-horse-battery","f":null}"#;
        assert_eq!(decode_json(null_f).unwrap(), known());
    }

    #[test]
    fn debug_masks_the_secret() {
        let debug = format!("{:?}", token("h", 1, "e", "hunter2", None));
        assert!(
            !debug.contains("hunter2") && debug.contains("***"),
            "{debug}"
        );
    }

    #[test]
    fn refuses_malformed_base64url() {
        let too_long = "A".repeat(MAX_TOKEN_LEN + 1);
        for bad in [
            "",
            " \n ",
            &too_long,
            &format!("{}+{}", &KNOWN_TOKEN[..10], &KNOWN_TOKEN[11..]),
            &format!("{}.{}", &KNOWN_TOKEN[..5], &KNOWN_TOKEN[5..]),
            &KNOWN_TOKEN[..77],                  // a length no encoding has
            &format!("{}R", &KNOWN_TOKEN[..78]), // trailing bits set
            &format!("{KNOWN_TOKEN}==="),        // excess padding
            &format!("{}={}", &KNOWN_TOKEN[..8], &KNOWN_TOKEN[8..]),
            "ab cd",
        ] {
            assert!(ConnectionToken::decode(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn refuses_bad_json_and_bad_fields_with_a_reason() {
        let f = FINGERPRINT;
        for (json, reason) in [
            ("not json", "expected"),
            ("[1,2]", "expected"),
            (r#"{"h":"h","p":1,"e":"e"}"#, "missing field `s`"),
            (
                r#"{"h":"h","p":1,"e":"e","s":"0123456789abcdef","x":0}"#,
                "unknown field `x`",
            ),
            (
                r#"{"h":"h","p":1,"e":"e","s":"a","s":"b"}"#,
                "duplicate field `s`",
            ),
            (
                r#"{"h":"h","p":"8443","e":"e","s":"0123456789abcdef"}"#,
                "invalid type",
            ),
            (
                r#"{"h":"h","p":70000,"e":"e","s":"0123456789abcdef"}"#,
                "u16",
            ),
            (
                r#"{"h":"h","p":0,"e":"e","s":"0123456789abcdef"}"#,
                "hub port",
            ),
            (
                r#"{"h":"","p":1,"e":"e","s":"0123456789abcdef"}"#,
                "hub host) must not be empty",
            ),
            (
                r#"{"h":"a b","p":1,"e":"e","s":"0123456789abcdef"}"#,
                "whitespace",
            ),
            (
                r#"{"h":"bücher.de","p":1,"e":"e","s":"0123456789abcdef"}"#,
                "punycode",
            ),
            (
                &format!(
                    r#"{{"h":"{}","p":1,"e":"e","s":"0123456789abcdef"}}"#,
                    "h".repeat(254)
                ),
                "253",
            ),
            (
                r#"{"h":"h","p":1,"e":"","s":"0123456789abcdef"}"#,
                "edge id must not be empty",
            ),
            (
                r#"{"h":"h","p":1,"e":"e","s":"a\tb"}"#,
                "secret must not contain",
            ),
            (
                r#"{"h":"h","p":1,"e":"e","s":"fifteen-bytes.."}"#,
                "shorter than 16 bytes",
            ),
            (
                r#"{"h":"h","p":1,"e":"e","s":"0123456789abcdef","f":"zz"}"#,
                "64 hex digits",
            ),
            (
                &format!(r#"{{"h":"h","p":1,"e":"e","s":"0123456789abcdef","f":"{f}0"}}"#),
                "64 hex",
            ),
        ] {
            let message = refusal(json);
            assert!(message.contains(reason), "{json}: {message}");
        }
    }

    #[test]
    fn no_error_message_quotes_the_secret() {
        let secret = "hunter2";
        for json in [
            format!(r#"{{"h":"","p":1,"e":"e","s":"{secret}"}}"#),
            format!(r#"{{"h":"h","p":0,"e":"e","s":"{secret}"}}"#),
            format!(r#"{{"h":"h","p":1,"e":"e","s":"{secret}","f":"zz"}}"#),
            format!(r#"{{"h":"h","p":1,"e":"e","s":"{secret}","s":"{secret}"}}"#),
            format!(r#"{{"h":"h","p":1,"e":"e","s":"{secret}","other":1}}"#),
            format!(r#"{{"h":"h","p":"1","e":"e","s":"{secret}"}}"#),
            format!(r#"{{"h":"h","p":1,"e":"e","s":"{secret}"#),
            format!(r#"{{"h":"h","p":1,"e":"e","s":"{secret}\u0000"}}"#),
            format!(r#"{{"h":"h","p":1,"e":"e","s":"{secret}"}} trailing"#),
        ] {
            let error = decode_json(&json).unwrap_err();
            assert!(!error.to_string().contains(secret), "{error}");
            assert!(!format!("{error:?}").contains(secret), "{error:?}");
        }
    }

    fn valid_token() -> impl Strategy<Value = ConnectionToken> {
        let host = "[a-zA-Z0-9.:\\[\\]_-]{1,253}";
        // Any characters but whitespace and controls, including quotes, backslashes, non-ASCII.
        let ident = "[^\\s\\p{Cc}]{1,64}";
        let secret = "[^\\s\\p{Cc}]{16,64}";
        let fingerprint = proptest::option::of("[0-9a-f]{64}");
        (host, 1..=u16::MAX, ident, secret, fingerprint)
            .prop_map(|(h, p, e, s, f)| token(&h, p, &e, &s, f.as_deref()))
    }

    proptest! {
        #[test]
        fn round_trip(value in valid_token()) {
            let encoded = value.encode().unwrap();
            prop_assert!(encoded.len() <= MAX_TOKEN_LEN);
            prop_assert!(encoded
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
            prop_assert_eq!(ConnectionToken::decode(&encoded).unwrap(), value);
        }

        #[test]
        fn decode_never_panics(input in any::<String>(), b64 in "[A-Za-z0-9_=-]{0,200}") {
            let _ = ConnectionToken::decode(&input);
            let _ = ConnectionToken::decode(&b64);
        }
    }
}
