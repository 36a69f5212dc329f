//! Connection tokens: one opaque string that carries everything an edge needs to reach its hub.
//!
//! # Format
//!
//! A token is base64url (RFC 4648 §5, URL-safe alphabet) **without padding** of the compact JSON
//! object
//!
//! ```text
//! {"h":hubHost,"p":hubPort,"e":edgeId,"s":secret}
//! {"h":hubHost,"p":hubPort,"e":edgeId,"s":secret,"f":certSha256}
//! ```
//!
//! with the keys in exactly that order, no whitespace, and `f` left out when there is no pinned
//! hub certificate. [`ConnectionToken::encode`] writes exactly these bytes, so the TypeScript side
//! produces a byte-identical token with
//!
//! ```text
//! Buffer.from(JSON.stringify({ h, p, e, s, f }), "utf8").toString("base64url")
//! ```
//!
//! (`JSON.stringify` drops `f` when it is `undefined`). String escaping agrees: both sides escape
//! only `"`, `\` and the control characters below U+0020 (as `\b \f \n \r \t` or lowercase
//! `\u00xx`) and write every other character, U+007F, U+2028, U+2029 and all non-ASCII
//! included, as raw UTF-8. Two caveats for the TypeScript side, because that is where a mismatch
//! could come from:
//!
//! * the JSON text must be encoded as UTF-8 (`Buffer.from(.., "utf8")` or `TextEncoder`), never
//!   with `btoa`, which throws on, or Latin-1-encodes, non-ASCII; edge ids and secrets may be
//!   non-ASCII (see [`crate::ident`]);
//! * `f` must be lower-case hex, as [`ConnectionToken::encode`] always writes it lower-case.
//!
//! The hub host must be ASCII (see [`TokenError::HubHostNotAscii`]), so the only non-ASCII that
//! can occur is in the edge id and the secret, where UTF-8 is the same on both sides.
//!
//! # What decoding accepts
//!
//! Decoding is strict about content and lenient only where leniency cannot change the meaning:
//!
//! * whitespace around the token is trimmed (copy and paste adds newlines); whitespace inside it
//!   is an error;
//! * canonical `=` padding (`==` or `=` completing the last block) is accepted and ignored,
//!   because some base64url encoders pad and padding carries no information; partial or excess
//!   padding, the standard alphabet's `+` and `/`, and non-zero trailing bits in the last
//!   character (a truncated or altered token) are refused;
//! * the JSON may have any key order and whitespace; duplicate keys, unknown keys and `null`
//!   values are refused, so every field has exactly one reading;
//! * the hub certificate fingerprint may be in either case and is returned lower-case; the
//!   `AA:BB:..` form with colons is refused, since tokens are made by programs, which should
//!   write the canonical form (strip the colons where a person typed it, before building a token).
//!
//! A token longer than [`MAX_TOKEN_LEN`] is refused before it is decoded at all. No error message
//! ever contains the secret, nor the token (which contains the secret, merely encoded).

use std::fmt;
use std::str::FromStr;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::{DecodeError, Engine as _};
use remoteingress_ipc_schema::Secret;
use serde::de::{Deserialize, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::Value;
use thiserror::Error;

use crate::ident::{validate_edge_id, validate_secret, IdentError};

/// Longest accepted token, in bytes after trimming. The largest valid token (host, edge id and
/// secret at their length limits, all made of characters JSON escapes, plus a fingerprint) is
/// 6274 bytes, so this refuses only garbage, and bounds the work done on it.
pub const MAX_TOKEN_LEN: usize = 8 * 1024;

/// Longest accepted hub host, in bytes: the longest DNS name (RFC 1035).
pub const MAX_HUB_HOST_LEN: usize = 253;

/// Length of a hex SHA-256 digest.
const CERT_SHA256_HEX_LEN: usize = 64;

/// Longest unknown key quoted back in an error, in characters; the rest is cut.
const MAX_QUOTED_KEY_CHARS: usize = 40;

/// Everything an edge needs to connect to its hub.
///
/// `Debug` is safe to log: the secret prints as `"***"`. There is deliberately no `Display`; use
/// [`ConnectionToken::encode`] where the token itself is wanted.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct ConnectionToken {
    /// Hub host name or IP address (ASCII; international names in punycode).
    pub hub_host: String,
    /// Hub tunnel port, 1..=65535.
    pub hub_port: u16,
    /// This edge's id.
    pub edge_id: String,
    /// This edge's secret.
    pub secret: Secret,
    /// Hex SHA-256 of the hub certificate to pin; lower-case when decoded.
    pub hub_cert_sha256: Option<String>,
}

/// A field of the token, named in errors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenField {
    HubHost,
    HubPort,
    EdgeId,
    Secret,
    HubCertSha256,
}

impl TokenField {
    /// The JSON key of this field in a token.
    pub const fn key(self) -> &'static str {
        match self {
            Self::HubHost => "h",
            Self::HubPort => "p",
            Self::EdgeId => "e",
            Self::Secret => "s",
            Self::HubCertSha256 => "f",
        }
    }

    /// What the field holds, for people.
    pub const fn description(self) -> &'static str {
        match self {
            Self::HubHost => "hub host",
            Self::HubPort => "hub port",
            Self::EdgeId => "edge id",
            Self::Secret => "secret",
            Self::HubCertSha256 => "hub certificate fingerprint",
        }
    }

    fn from_key(key: &str) -> Option<Self> {
        match key {
            "h" => Some(Self::HubHost),
            "p" => Some(Self::HubPort),
            "e" => Some(Self::EdgeId),
            "s" => Some(Self::Secret),
            "f" => Some(Self::HubCertSha256),
            _ => None,
        }
    }
}

/// Reads as "the hub host (field "h")", to slot into a sentence.
impl fmt::Display for TokenField {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "the {} (field \"{}\")", self.description(), self.key())
    }
}

/// Why a token could not be decoded, or a [`ConnectionToken`] could not be encoded.
///
/// No variant holds or prints the secret or the token.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum TokenError {
    #[error("connection token is empty")]
    Empty,
    #[error("connection token is {len} bytes long, more than the limit of {MAX_TOKEN_LEN}")]
    TooLong { len: usize },
    /// `position` is the 0-based byte offset in the trimmed token.
    #[error(
        "connection token is not valid base64url: unexpected character {character:?} at offset \
         {position}{}",
        alphabet_hint(*character)
    )]
    InvalidCharacter { character: char, position: usize },
    #[error(
        "connection token is not valid base64url: {symbols} characters cannot be a complete \
         encoding (truncated token?)"
    )]
    InvalidLength { symbols: usize },
    /// `position` is the 0-based byte offset in the trimmed token.
    #[error(
        "connection token is not valid base64url: its last character {character:?} at offset \
         {position} has bits that decode to nothing (truncated or altered token?)"
    )]
    InvalidLastCharacter { character: char, position: usize },
    #[error("connection token has malformed '=' padding")]
    InvalidPadding,
    /// `offset` is the 0-based offset of the first bad byte in the decoded bytes.
    #[error("decoded connection token is not UTF-8 (invalid byte at offset {offset})")]
    NotUtf8 { offset: usize },
    /// The message is serde_json's, which names a position but never quotes the input.
    #[error("decoded connection token is not valid JSON: {0}")]
    Json(String),
    #[error("decoded connection token is {found}, not a JSON object")]
    NotAnObject { found: &'static str },
    #[error("token is missing {field}")]
    MissingField { field: TokenField },
    #[error("token has {field} more than once")]
    DuplicateField { field: TokenField },
    /// `key` is cut to a few dozen characters.
    #[error("token has an unknown field {key:?} (known fields: h, p, e, s, f)")]
    UnknownField { key: String },
    #[error("{field} must be a JSON {expected}, found {found}")]
    WrongType {
        field: TokenField,
        expected: &'static str,
        found: &'static str,
    },
    /// `got` is the port as written (a JSON number), e.g. `0`, `-1`, `70000` or `8443.5`.
    #[error("hub port must be 1..65535 (field \"p\" is {got})")]
    PortOutOfRange { got: String },
    #[error("{} must not be empty", TokenField::HubHost)]
    HubHostEmpty,
    #[error(
        "{} is {len} bytes long, more than {MAX_HUB_HOST_LEN}",
        TokenField::HubHost
    )]
    HubHostTooLong { len: usize },
    #[error(
        "{} must not contain whitespace or control characters",
        TokenField::HubHost
    )]
    HubHostBadCharacter,
    /// TLS server names and DNS look-ups need the ASCII form of a name, so a non-ASCII host could
    /// never be connected to; refusing it here gives the clearer error, early.
    #[error(
        "{} must be ASCII; write an international name in its punycode (xn--) form",
        TokenField::HubHost
    )]
    HubHostNotAscii,
    #[error("token field \"e\": {0}")]
    EdgeId(IdentError),
    #[error("token field \"s\": {0}")]
    Secret(IdentError),
    #[error(
        "{} must be {CERT_SHA256_HEX_LEN} hex digits (a SHA-256 digest), found {len} characters",
        TokenField::HubCertSha256
    )]
    CertSha256Length { len: usize },
    /// `position` is the 0-based byte offset in the fingerprint.
    #[error(
        "{} must be hex digits only, found {character:?} at offset {position}{}",
        TokenField::HubCertSha256,
        colon_hint(*character)
    )]
    CertSha256NotHex { character: char, position: usize },
}

fn alphabet_hint(character: char) -> &'static str {
    match character {
        '+' | '/' => " (tokens use the URL-safe alphabet, with '-' and '_')",
        _ => "",
    }
}

fn colon_hint(character: char) -> &'static str {
    match character {
        ':' => " (write it without ':' separators)",
        _ => "",
    }
}

impl ConnectionToken {
    /// Validates the token, then encodes it in the canonical form described in the module docs.
    ///
    /// The fingerprint is written lower-case, whatever its case here.
    pub fn encode(&self) -> Result<String, TokenError> {
        self.validate()?;
        let mut json = String::with_capacity(
            32 + self.hub_host.len()
                + self.edge_id.len()
                + self.secret.expose().len()
                + CERT_SHA256_HEX_LEN,
        );
        json.push_str("{\"h\":");
        push_json_string(&mut json, &self.hub_host);
        json.push_str(",\"p\":");
        json.push_str(&self.hub_port.to_string());
        json.push_str(",\"e\":");
        push_json_string(&mut json, &self.edge_id);
        json.push_str(",\"s\":");
        push_json_string(&mut json, self.secret.expose());
        if let Some(fingerprint) = &self.hub_cert_sha256 {
            json.push_str(",\"f\":");
            push_json_string(&mut json, &fingerprint.to_ascii_lowercase());
        }
        json.push('}');
        Ok(URL_SAFE_NO_PAD.encode(json))
    }

    /// Decodes and validates a token; see the module docs for exactly what is accepted.
    pub fn decode(token: &str) -> Result<Self, TokenError> {
        let token = token.trim();
        if token.is_empty() {
            return Err(TokenError::Empty);
        }
        if token.len() > MAX_TOKEN_LEN {
            return Err(TokenError::TooLong { len: token.len() });
        }
        if let Some((position, character)) = find_invalid_character(token) {
            return Err(TokenError::InvalidCharacter {
                character,
                position,
            });
        }
        let unpadded = strip_padding(token)?;
        let bytes = URL_SAFE_NO_PAD
            .decode(unpadded)
            .map_err(|error| base64_error(token, error))?;
        let text = std::str::from_utf8(&bytes).map_err(|error| TokenError::NotUtf8 {
            offset: error.valid_up_to(),
        })?;
        let entries = match serde_json::from_str::<Document>(text) {
            Ok(Document::Object(entries)) => entries,
            Ok(Document::Other(found)) => return Err(TokenError::NotAnObject { found }),
            Err(error) => return Err(TokenError::Json(error.to_string())),
        };
        Fields::collect(entries)?.into_token()
    }

    /// Checks every field as [`ConnectionToken::decode`] would; `encode` calls this first, so a
    /// token that encodes also decodes.
    pub fn validate(&self) -> Result<(), TokenError> {
        validate_hub_host(&self.hub_host)?;
        if self.hub_port == 0 {
            return Err(TokenError::PortOutOfRange {
                got: self.hub_port.to_string(),
            });
        }
        validate_edge_id(&self.edge_id).map_err(TokenError::EdgeId)?;
        validate_secret(self.secret.expose()).map_err(TokenError::Secret)?;
        if let Some(fingerprint) = &self.hub_cert_sha256 {
            validate_cert_sha256(fingerprint)?;
        }
        Ok(())
    }
}

impl FromStr for ConnectionToken {
    type Err = TokenError;

    fn from_str(token: &str) -> Result<Self, Self::Err> {
        Self::decode(token)
    }
}

/// The first character that cannot stand where it is in a token: one outside the URL-safe
/// alphabet, or an `=` before the trailing run of padding.
///
/// Checked here rather than left to the base64 crate, whose reported offset is not always the
/// first bad byte (it decodes in blocks), and may fall inside a multi-byte character.
fn find_invalid_character(token: &str) -> Option<(usize, char)> {
    let padding_start = token.trim_end_matches('=').len();
    token.char_indices().find(|&(position, character)| {
        let valid = character.is_ascii_alphanumeric()
            || character == '-'
            || character == '_'
            || (character == '=' && position >= padding_start);
        !valid
    })
}

/// Strips `=` padding, which must be absent or exactly what the last block needs (`==` after a
/// block of 2 characters, `=` after 3).
fn strip_padding(token: &str) -> Result<&str, TokenError> {
    let unpadded = token.trim_end_matches('=');
    let padding = token.len() - unpadded.len();
    let canonical = match unpadded.len() % 4 {
        2 => 2,
        3 => 1,
        _ => 0,
    };
    if padding == 0 || padding == canonical {
        Ok(unpadded)
    } else {
        Err(TokenError::InvalidPadding)
    }
}

/// Maps the base64 crate's error onto ours. [`find_invalid_character`] has run first, so the token
/// is ASCII and any offset is on a character boundary.
fn base64_error(token: &str, error: DecodeError) -> TokenError {
    let character_at = |position: usize| {
        token
            .get(position..)
            .and_then(|rest| rest.chars().next())
            .unwrap_or(char::REPLACEMENT_CHARACTER)
    };
    match error {
        DecodeError::InvalidByte(position, _) => TokenError::InvalidCharacter {
            character: character_at(position),
            position,
        },
        DecodeError::InvalidLength(symbols) => TokenError::InvalidLength { symbols },
        DecodeError::InvalidLastSymbol(position, _) => TokenError::InvalidLastCharacter {
            character: character_at(position),
            position,
        },
        DecodeError::InvalidPadding => TokenError::InvalidPadding,
    }
}

/// Appends `value` as a JSON string literal exactly as `JSON.stringify` writes it (which is also
/// what serde_json writes): `"` and `\` escaped, `\b \f \n \r \t`, other control characters below
/// U+0020 as lower-case `\u00xx`, everything else raw. Written out here rather than left to
/// serde_json so that the byte format is explicit and encoding cannot fail.
fn push_json_string(out: &mut String, value: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.push('"');
    for character in value.chars() {
        match character {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\0'..='\u{1f}' => {
                let byte = character as u8;
                out.push_str("\\u00");
                out.push(char::from(HEX[usize::from(byte >> 4)]));
                out.push(char::from(HEX[usize::from(byte & 0xf)]));
            }
            other => out.push(other),
        }
    }
    out.push('"');
}

/// The top level of the decoded JSON: an object's entries in order, duplicates kept (so they can
/// be refused, where `serde_json::Value` would silently keep the last), or what else it was.
enum Document {
    Object(Vec<(String, Value)>),
    Other(&'static str),
}

impl<'de> Deserialize<'de> for Document {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(DocumentVisitor)
    }
}

struct DocumentVisitor;

impl<'de> Visitor<'de> for DocumentVisitor {
    type Value = Document;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_bool<E>(self, _: bool) -> Result<Document, E> {
        Ok(Document::Other("a boolean"))
    }

    fn visit_i64<E>(self, _: i64) -> Result<Document, E> {
        Ok(Document::Other("a number"))
    }

    fn visit_u64<E>(self, _: u64) -> Result<Document, E> {
        Ok(Document::Other("a number"))
    }

    fn visit_f64<E>(self, _: f64) -> Result<Document, E> {
        Ok(Document::Other("a number"))
    }

    fn visit_str<E>(self, _: &str) -> Result<Document, E> {
        Ok(Document::Other("a string"))
    }

    fn visit_unit<E>(self) -> Result<Document, E> {
        Ok(Document::Other("null"))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Document, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Document::Other("an array"))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Document, A::Error> {
        let mut entries = Vec::new();
        while let Some(key) = map.next_key::<String>()? {
            let value = map.next_value::<Value>()?;
            entries.push((key, value));
        }
        Ok(Document::Object(entries))
    }
}

/// The token's fields as found, each at most once, not yet type-checked.
#[derive(Default)]
struct Fields {
    hub_host: Option<Value>,
    hub_port: Option<Value>,
    edge_id: Option<Value>,
    secret: Option<Value>,
    hub_cert_sha256: Option<Value>,
}

impl Fields {
    /// Sorts the entries into their fields, refusing unknown and repeated keys.
    fn collect(entries: Vec<(String, Value)>) -> Result<Self, TokenError> {
        let mut fields = Self::default();
        for (key, value) in entries {
            let Some(field) = TokenField::from_key(&key) else {
                return Err(TokenError::UnknownField {
                    key: key.chars().take(MAX_QUOTED_KEY_CHARS).collect(),
                });
            };
            let slot = fields.slot(field);
            if slot.is_some() {
                return Err(TokenError::DuplicateField { field });
            }
            *slot = Some(value);
        }
        Ok(fields)
    }

    fn slot(&mut self, field: TokenField) -> &mut Option<Value> {
        match field {
            TokenField::HubHost => &mut self.hub_host,
            TokenField::HubPort => &mut self.hub_port,
            TokenField::EdgeId => &mut self.edge_id,
            TokenField::Secret => &mut self.secret,
            TokenField::HubCertSha256 => &mut self.hub_cert_sha256,
        }
    }

    /// Type-checks and validates the fields in key order, so the first problem is reported.
    fn into_token(self) -> Result<ConnectionToken, TokenError> {
        let hub_host = required_string(self.hub_host, TokenField::HubHost)?;
        validate_hub_host(&hub_host)?;
        let hub_port = port(self.hub_port)?;
        let edge_id = required_string(self.edge_id, TokenField::EdgeId)?;
        validate_edge_id(&edge_id).map_err(TokenError::EdgeId)?;
        let secret = Secret::new(required_string(self.secret, TokenField::Secret)?);
        validate_secret(secret.expose()).map_err(TokenError::Secret)?;
        let hub_cert_sha256 = match self.hub_cert_sha256 {
            None => None,
            Some(value) => {
                let fingerprint = string(value, TokenField::HubCertSha256)?;
                validate_cert_sha256(&fingerprint)?;
                Some(fingerprint.to_ascii_lowercase())
            }
        };
        Ok(ConnectionToken {
            hub_host,
            hub_port,
            edge_id,
            secret,
            hub_cert_sha256,
        })
    }
}

fn required_string(value: Option<Value>, field: TokenField) -> Result<String, TokenError> {
    string(value.ok_or(TokenError::MissingField { field })?, field)
}

fn string(value: Value, field: TokenField) -> Result<String, TokenError> {
    match value {
        Value::String(text) => Ok(text),
        other => Err(TokenError::WrongType {
            field,
            expected: "string",
            found: json_kind(&other),
        }),
    }
}

/// A port is a JSON integer 1..=65535; `8443.0` is refused too, as no encoder writes it.
fn port(value: Option<Value>) -> Result<u16, TokenError> {
    let field = TokenField::HubPort;
    match value.ok_or(TokenError::MissingField { field })? {
        Value::Number(number) => number
            .as_u64()
            .and_then(|port| u16::try_from(port).ok())
            .filter(|&port| port != 0)
            .ok_or_else(|| TokenError::PortOutOfRange {
                got: number.to_string(),
            }),
        other => Err(TokenError::WrongType {
            field,
            expected: "number",
            found: json_kind(&other),
        }),
    }
}

fn json_kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn validate_hub_host(host: &str) -> Result<(), TokenError> {
    if host.is_empty() {
        return Err(TokenError::HubHostEmpty);
    }
    if host.len() > MAX_HUB_HOST_LEN {
        return Err(TokenError::HubHostTooLong { len: host.len() });
    }
    if host.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(TokenError::HubHostBadCharacter);
    }
    if !host.is_ascii() {
        return Err(TokenError::HubHostNotAscii);
    }
    Ok(())
}

/// Accepts exactly 64 hex digits, either case. Characters are checked before the length so that
/// a colon-separated fingerprint gets the more helpful error.
fn validate_cert_sha256(fingerprint: &str) -> Result<(), TokenError> {
    if let Some((position, character)) = fingerprint
        .char_indices()
        .find(|(_, c)| !c.is_ascii_hexdigit())
    {
        return Err(TokenError::CertSha256NotHex {
            character,
            position,
        });
    }
    if fingerprint.len() != CERT_SHA256_HEX_LEN {
        return Err(TokenError::CertSha256Length {
            len: fingerprint.len(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const KNOWN_TOKEN: &str =
        "eyJoIjoiaHViLmV4YW1wbGUuY29tIiwicCI6ODQ0MywiZSI6ImVkZ2UtMSIsInMiOiJzZWNyZXQifQ";
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
        token("hub.example.com", 8443, "edge-1", "secret", None)
    }

    /// Encodes raw JSON text as a token, bypassing validation.
    fn raw(json: &str) -> String {
        URL_SAFE_NO_PAD.encode(json)
    }

    fn decode_json(json: &str) -> Result<ConnectionToken, TokenError> {
        ConnectionToken::decode(&raw(json))
    }

    #[test]
    fn known_vector() {
        // base64url of {"h":"hub.example.com","p":8443,"e":"edge-1","s":"secret"}, as produced by
        // Buffer.from(JSON.stringify({h, p, e, s}), "utf8").toString("base64url") in Node.
        assert_eq!(known().encode(), Ok(KNOWN_TOKEN.to_owned()));
        assert_eq!(ConnectionToken::decode(KNOWN_TOKEN), Ok(known()));
        assert_eq!(KNOWN_TOKEN.parse::<ConnectionToken>(), Ok(known()));
    }

    #[test]
    fn known_vector_with_escapes_non_ascii_and_fingerprint() {
        // From Node: JSON.stringify({h: "hub.example.com", p: 443, e: "kante-ü",
        // s: 'p"w\\d€😀', f: "ab".repeat(32)}), UTF-8, base64url.
        let expected = "eyJoIjoiaHViLmV4YW1wbGUuY29tIiwicCI6NDQzLCJlIjoia2FudGUtw7wiLCJzIjoicFwid1xcZOKCrPCfmIAiLCJmIjoiYWJhYmFiYWJhYmFiYWJhYmFiYWJhYmFiYWJhYmFiYWJhYmFiYWJhYmFiYWJhYmFiYWJhYmFiYWJhYmFiYWJhYiJ9";
        let fingerprint = "ab".repeat(32);
        let value = token(
            "hub.example.com",
            443,
            "kante-ü",
            "p\"w\\d€😀",
            Some(&fingerprint),
        );
        assert_eq!(value.encode(), Ok(expected.to_owned()));
        assert_eq!(ConnectionToken::decode(expected), Ok(value));
    }

    #[test]
    fn round_trips_with_and_without_fingerprint() {
        for value in [
            known(),
            token("10.0.0.1", 1, "e", "s", Some(FINGERPRINT)),
            token("[::1]", 65535, "edge-ü", "x/+=_.~", None),
        ] {
            let encoded = value.encode().unwrap();
            assert!(!encoded.contains('='), "{encoded}");
            assert_eq!(ConnectionToken::decode(&encoded), Ok(value));
        }
    }

    #[test]
    fn fingerprint_is_normalised_to_lower_case() {
        let upper = FINGERPRINT.to_ascii_uppercase();
        let encoded = token("h", 1, "e", "s", Some(&upper)).encode().unwrap();
        assert_eq!(
            encoded,
            token("h", 1, "e", "s", Some(FINGERPRINT)).encode().unwrap()
        );
        let decoded = decode_json(&format!(
            r#"{{"h":"h","p":1,"e":"e","s":"s","f":"{upper}"}}"#
        ));
        assert_eq!(
            decoded.unwrap().hub_cert_sha256.as_deref(),
            Some(FINGERPRINT)
        );
    }

    #[test]
    fn accepts_surrounding_whitespace_padding_and_any_key_order() {
        assert_eq!(
            ConnectionToken::decode(&format!(" \n\t{KNOWN_TOKEN}\r\n")),
            Ok(known())
        );
        // The JSON is 58 bytes, so canonical padding is two '='.
        assert_eq!(
            ConnectionToken::decode(&format!("{KNOWN_TOKEN}==")),
            Ok(known())
        );
        assert_eq!(
            decode_json(r#" { "s" : "secret", "e":"edge-1", "p":8443, "h":"hub.example.com" } "#),
            Ok(known())
        );
    }

    #[test]
    fn debug_masks_the_secret() {
        let debug = format!("{:?}", token("h", 1, "e", "hunter2", None));
        assert!(!debug.contains("hunter2"), "{debug}");
        assert!(debug.contains("***"), "{debug}");
    }

    #[test]
    fn refuses_empty_and_too_long_before_decoding() {
        assert_eq!(ConnectionToken::decode(""), Err(TokenError::Empty));
        assert_eq!(ConnectionToken::decode(" \n "), Err(TokenError::Empty));
        // Not base64 at all: the length check must come first.
        let long = "!".repeat(MAX_TOKEN_LEN + 1);
        assert_eq!(
            ConnectionToken::decode(&long),
            Err(TokenError::TooLong {
                len: MAX_TOKEN_LEN + 1
            })
        );
    }

    #[test]
    fn largest_valid_token_fits_the_limit() {
        let value = token(
            &"\"".repeat(MAX_HUB_HOST_LEN),
            65535,
            &"\"".repeat(crate::ident::MAX_IDENT_LEN),
            &"\\".repeat(crate::ident::MAX_IDENT_LEN),
            Some(FINGERPRINT),
        );
        let encoded = value.encode().unwrap();
        assert_eq!(encoded.len(), 6274);
        assert!(encoded.len() <= MAX_TOKEN_LEN);
        assert_eq!(ConnectionToken::decode(&encoded), Ok(value));
    }

    #[test]
    fn refuses_bad_base64url() {
        let cases = [
            (
                format!("{}+{}", &KNOWN_TOKEN[..10], &KNOWN_TOKEN[11..]),
                TokenError::InvalidCharacter {
                    character: '+',
                    position: 10,
                },
            ),
            (
                format!("eyJ/{}", &KNOWN_TOKEN[4..]),
                TokenError::InvalidCharacter {
                    character: '/',
                    position: 3,
                },
            ),
            (
                format!("{} {}", &KNOWN_TOKEN[..5], &KNOWN_TOKEN[5..]),
                TokenError::InvalidCharacter {
                    character: ' ',
                    position: 5,
                },
            ),
            (
                "abcé".to_owned(),
                TokenError::InvalidCharacter {
                    character: 'é',
                    position: 3,
                },
            ),
            (
                "ab=cd".to_owned(),
                TokenError::InvalidCharacter {
                    character: '=',
                    position: 2,
                },
            ),
            ("abcde".to_owned(), TokenError::InvalidLength { symbols: 5 }),
            (
                "AB".to_owned(),
                TokenError::InvalidLastCharacter {
                    character: 'B',
                    position: 1,
                },
            ),
            (
                "abcd😀x".to_owned(),
                TokenError::InvalidCharacter {
                    character: '😀',
                    position: 4,
                },
            ),
            (format!("{KNOWN_TOKEN}="), TokenError::InvalidPadding),
            (format!("{KNOWN_TOKEN}==="), TokenError::InvalidPadding),
            (
                format!("{}=", &KNOWN_TOKEN[..76]),
                TokenError::InvalidPadding,
            ),
            ("abcde=".to_owned(), TokenError::InvalidPadding),
        ];
        for (input, expected) in cases {
            assert_eq!(ConnectionToken::decode(&input), Err(expected), "{input:?}");
        }
        let message = ConnectionToken::decode("ab+c").unwrap_err().to_string();
        assert_eq!(
            message,
            "connection token is not valid base64url: unexpected character '+' at offset 2 \
             (tokens use the URL-safe alphabet, with '-' and '_')"
        );
    }

    #[test]
    fn refuses_non_utf8_and_non_json() {
        assert_eq!(
            ConnectionToken::decode(&URL_SAFE_NO_PAD.encode(b"{\"h\xff")),
            Err(TokenError::NotUtf8 { offset: 3 })
        );
        let error = decode_json(r#"{"h":"x","s":"hunter2"#).unwrap_err();
        assert!(matches!(error, TokenError::Json(_)), "{error:?}");
        let message = error.to_string();
        assert!(message.starts_with("decoded connection token is not valid JSON: EOF"));
        assert!(!message.contains("hunter2"), "{message}");
        assert!(matches!(
            decode_json(r#"{"h":"x"} x"#),
            Err(TokenError::Json(_))
        ));
    }

    #[test]
    fn refuses_non_objects() {
        for (json, found) in [
            ("[1,{\"h\":2}]", "an array"),
            ("\"x\"", "a string"),
            ("8443", "a number"),
            ("-1.5", "a number"),
            ("null", "null"),
            ("true", "a boolean"),
        ] {
            assert_eq!(
                decode_json(json),
                Err(TokenError::NotAnObject { found }),
                "{json}"
            );
        }
        assert_eq!(
            decode_json("[]").unwrap_err().to_string(),
            "decoded connection token is an array, not a JSON object"
        );
    }

    #[test]
    fn refuses_missing_fields() {
        let cases = [
            (r#"{"p":1,"e":"e","s":"s"}"#, TokenField::HubHost),
            (r#"{"h":"h","e":"e","s":"s"}"#, TokenField::HubPort),
            (r#"{"h":"h","p":1,"s":"s"}"#, TokenField::EdgeId),
            (r#"{"h":"h","p":1,"e":"e"}"#, TokenField::Secret),
        ];
        for (json, field) in cases {
            assert_eq!(
                decode_json(json),
                Err(TokenError::MissingField { field }),
                "{json}"
            );
        }
        assert_eq!(
            decode_json("{}").unwrap_err().to_string(),
            "token is missing the hub host (field \"h\")"
        );
        assert_eq!(
            decode_json(r#"{"h":"h","p":1,"e":"e"}"#)
                .unwrap_err()
                .to_string(),
            "token is missing the secret (field \"s\")"
        );
    }

    #[test]
    fn refuses_wrong_types() {
        let cases = [
            (
                r#"{"h":1,"p":1,"e":"e","s":"s"}"#,
                TokenField::HubHost,
                "string",
                "a number",
            ),
            (
                r#"{"h":"h","p":"1","e":"e","s":"s"}"#,
                TokenField::HubPort,
                "number",
                "a string",
            ),
            (
                r#"{"h":"h","p":1,"e":null,"s":"s"}"#,
                TokenField::EdgeId,
                "string",
                "null",
            ),
            (
                r#"{"h":"h","p":1,"e":"e","s":["s"]}"#,
                TokenField::Secret,
                "string",
                "an array",
            ),
            (
                r#"{"h":"h","p":1,"e":"e","s":"s","f":null}"#,
                TokenField::HubCertSha256,
                "string",
                "null",
            ),
            (
                r#"{"h":"h","p":true,"e":"e","s":"s"}"#,
                TokenField::HubPort,
                "number",
                "a boolean",
            ),
            (
                r#"{"h":{},"p":1,"e":"e","s":"s"}"#,
                TokenField::HubHost,
                "string",
                "an object",
            ),
        ];
        for (json, field, expected, found) in cases {
            assert_eq!(
                decode_json(json),
                Err(TokenError::WrongType {
                    field,
                    expected,
                    found
                }),
                "{json}"
            );
        }
        assert_eq!(
            decode_json(r#"{"h":"h","p":"8443","e":"e","s":"s"}"#)
                .unwrap_err()
                .to_string(),
            "the hub port (field \"p\") must be a JSON number, found a string"
        );
    }

    #[test]
    fn refuses_unknown_and_duplicate_fields() {
        assert_eq!(
            decode_json(r#"{"h":"h","p":1,"e":"e","s":"s","x":0}"#),
            Err(TokenError::UnknownField {
                key: "x".to_owned()
            })
        );
        let long_key = "k".repeat(1000);
        let error = decode_json(&format!(r#"{{"{long_key}":1}}"#)).unwrap_err();
        assert_eq!(
            error,
            TokenError::UnknownField {
                key: "k".repeat(MAX_QUOTED_KEY_CHARS)
            }
        );
        assert_eq!(
            decode_json(r#"{"h":"h","p":1,"e":"e","s":"s","h":"other"}"#),
            Err(TokenError::DuplicateField {
                field: TokenField::HubHost
            })
        );
        assert_eq!(
            decode_json(r#"{"h":"h","p":1,"e":"e","s":"a","s":"b"}"#)
                .unwrap_err()
                .to_string(),
            "token has the secret (field \"s\") more than once"
        );
    }

    #[test]
    fn refuses_ports_out_of_range() {
        for got in [
            "0", "-1", "65536", "70000", "8443.5", "8443.0", "1e3", "1e30",
        ] {
            let error =
                decode_json(&format!(r#"{{"h":"h","p":{got},"e":"e","s":"s"}}"#)).unwrap_err();
            assert!(
                matches!(error, TokenError::PortOutOfRange { .. }),
                "{got}: {error:?}"
            );
            assert!(
                error.to_string().starts_with("hub port must be 1..65535"),
                "{got}: {error}"
            );
        }
        assert_eq!(
            decode_json(r#"{"h":"h","p":65536,"e":"e","s":"s"}"#)
                .unwrap_err()
                .to_string(),
            "hub port must be 1..65535 (field \"p\" is 65536)"
        );
        assert_eq!(
            token("h", 0, "e", "s", None).encode(),
            Err(TokenError::PortOutOfRange {
                got: "0".to_owned()
            })
        );
        for port in ["1", "65535"] {
            assert!(decode_json(&format!(r#"{{"h":"h","p":{port},"e":"e","s":"s"}}"#)).is_ok());
        }
    }

    #[test]
    fn refuses_bad_hub_hosts() {
        let cases = [
            (String::new(), TokenError::HubHostEmpty),
            ("   ".to_owned(), TokenError::HubHostBadCharacter),
            ("hub example".to_owned(), TokenError::HubHostBadCharacter),
            ("hub\u{0}".to_owned(), TokenError::HubHostBadCharacter),
            ("hub\u{7f}".to_owned(), TokenError::HubHostBadCharacter),
            ("hub\u{a0}x".to_owned(), TokenError::HubHostBadCharacter),
            ("bücher.example".to_owned(), TokenError::HubHostNotAscii),
            (
                "h".repeat(MAX_HUB_HOST_LEN + 1),
                TokenError::HubHostTooLong {
                    len: MAX_HUB_HOST_LEN + 1,
                },
            ),
        ];
        for (host, expected) in cases {
            let value = token(&host, 1, "e", "s", None);
            assert_eq!(value.validate(), Err(expected.clone()), "{host:?}");
            assert_eq!(value.encode(), Err(expected.clone()), "{host:?}");
            let json = format!(
                r#"{{"h":{},"p":1,"e":"e","s":"s"}}"#,
                serde_json::to_string(&host).unwrap()
            );
            assert_eq!(decode_json(&json), Err(expected), "{host:?}");
        }
        assert!(token(&"h".repeat(MAX_HUB_HOST_LEN), 1, "e", "s", None)
            .encode()
            .is_ok());
        assert!(token("xn--bcher-kva.example", 1, "e", "s", None)
            .encode()
            .is_ok());
        assert_eq!(
            TokenError::HubHostEmpty.to_string(),
            "the hub host (field \"h\") must not be empty"
        );
    }

    #[test]
    fn refuses_bad_edge_ids_and_secrets_without_quoting_them() {
        assert_eq!(
            decode_json(r#"{"h":"h","p":1,"e":"","s":"s"}"#),
            Err(TokenError::EdgeId(IdentError::Empty { what: "edge id" }))
        );
        assert_eq!(
            decode_json(r#"{"h":"h","p":1,"e":"a b","s":"s"}"#)
                .unwrap_err()
                .to_string(),
            "token field \"e\": edge id must not contain whitespace or control characters"
        );
        let secret = "hunter2 with space";
        let error = token("h", 1, "e", secret, None).encode().unwrap_err();
        assert_eq!(
            error,
            TokenError::Secret(IdentError::BadCharacter { what: "secret" })
        );
        assert!(!error.to_string().contains("hunter2"));
        assert!(!format!("{error:?}").contains("hunter2"));
        let error = decode_json(r#"{"h":"h","p":1,"e":"e","s":"hunter2\n"}"#).unwrap_err();
        assert_eq!(
            error.to_string(),
            "token field \"s\": secret must not contain whitespace or control characters"
        );
        let long = "x".repeat(crate::ident::MAX_IDENT_LEN + 1);
        assert_eq!(
            token("h", 1, "e", &long, None).validate(),
            Err(TokenError::Secret(IdentError::TooLong { what: "secret" }))
        );
    }

    #[test]
    fn refuses_bad_fingerprints() {
        let colons = FINGERPRINT
            .as_bytes()
            .chunks(2)
            .map(|pair| String::from_utf8_lossy(pair).into_owned())
            .collect::<Vec<_>>()
            .join(":");
        let cases = [
            (String::new(), TokenError::CertSha256Length { len: 0 }),
            (
                FINGERPRINT[..63].to_owned(),
                TokenError::CertSha256Length { len: 63 },
            ),
            (
                format!("{FINGERPRINT}0"),
                TokenError::CertSha256Length { len: 65 },
            ),
            (
                format!("{}g", &FINGERPRINT[..63]),
                TokenError::CertSha256NotHex {
                    character: 'g',
                    position: 63,
                },
            ),
            (
                colons,
                TokenError::CertSha256NotHex {
                    character: ':',
                    position: 2,
                },
            ),
        ];
        for (fingerprint, expected) in cases {
            let value = token("h", 1, "e", "s", Some(&fingerprint));
            assert_eq!(value.encode(), Err(expected.clone()), "{fingerprint:?}");
            let json = format!(r#"{{"h":"h","p":1,"e":"e","s":"s","f":"{fingerprint}"}}"#);
            assert_eq!(decode_json(&json), Err(expected), "{fingerprint:?}");
        }
        assert_eq!(
            TokenError::CertSha256NotHex {
                character: ':',
                position: 2
            }
            .to_string(),
            "the hub certificate fingerprint (field \"f\") must be hex digits only, found ':' at \
             offset 2 (write it without ':' separators)"
        );
    }

    #[test]
    fn no_error_message_quotes_the_secret() {
        let secret = "hunter2";
        let jsons = [
            format!(r#"{{"h":"","p":1,"e":"e","s":"{secret}"}}"#),
            format!(r#"{{"h":"h","p":0,"e":"e","s":"{secret}"}}"#),
            format!(r#"{{"h":"h","p":1,"e":"e","s":"{secret}","f":"zz"}}"#),
            format!(r#"{{"h":"h","p":1,"e":"e","s":"{secret}","s":"{secret}"}}"#),
            format!(r#"{{"h":"h","p":1,"e":"e","s":"{secret}","other":1}}"#),
            format!(r#"{{"h":"h","p":"1","e":"e","s":"{secret}"}}"#),
            format!(r#"{{"h":"h","p":1,"e":"e","s":"{secret}"#),
            format!(r#"{{"h":"h","p":1,"e":"e","s":"{secret}\u0000"}}"#),
            format!(r#"{{"h":"h","p":1,"e":"e","s":"{secret}"}} trailing"#),
        ];
        for json in jsons {
            let error = decode_json(&json).unwrap_err();
            assert!(!error.to_string().contains(secret), "{error}");
            assert!(!format!("{error:?}").contains(secret), "{error:?}");
        }
    }

    fn valid_token() -> impl Strategy<Value = ConnectionToken> {
        let host = "[a-zA-Z0-9.:\\[\\]_-]{1,253}";
        // Any characters but whitespace and controls, including quotes, backslashes, non-ASCII.
        let ident = "[^\\s\\p{Cc}]{1,64}";
        let fingerprint = proptest::option::of("[0-9a-f]{64}");
        (host, 1..=u16::MAX, ident, ident, fingerprint).prop_map(|(h, p, e, s, f)| {
            ConnectionToken {
                hub_host: h,
                hub_port: p,
                edge_id: e,
                secret: Secret::new(s),
                hub_cert_sha256: f,
            }
        })
    }

    proptest! {
        #[test]
        fn round_trip(value in valid_token()) {
            let encoded = value.encode().unwrap();
            prop_assert!(encoded.len() <= MAX_TOKEN_LEN);
            prop_assert!(encoded
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
            prop_assert_eq!(ConnectionToken::decode(&encoded), Ok(value));
        }

        #[test]
        fn encoding_matches_serde_json_struct_order(value in valid_token()) {
            // serde_json writes a derived struct's fields in declaration order: the same bytes
            // JSON.stringify writes for {h, p, e, s, f}.
            #[derive(serde::Serialize)]
            struct Wire<'a> {
                h: &'a str,
                p: u16,
                e: &'a str,
                s: &'a str,
                #[serde(skip_serializing_if = "Option::is_none")]
                f: Option<&'a str>,
            }
            let json = serde_json::to_string(&Wire {
                h: &value.hub_host,
                p: value.hub_port,
                e: &value.edge_id,
                s: value.secret.expose(),
                f: value.hub_cert_sha256.as_deref(),
            })
            .unwrap();
            prop_assert_eq!(value.encode().unwrap(), URL_SAFE_NO_PAD.encode(json));
        }

        #[test]
        fn json_string_escaping_matches_serde_json(text in any::<String>()) {
            let mut ours = String::new();
            push_json_string(&mut ours, &text);
            prop_assert_eq!(ours, serde_json::to_string(&text).unwrap());
        }

        #[test]
        fn decode_never_panics_on_arbitrary_strings(input in any::<String>()) {
            let _ = ConnectionToken::decode(&input);
        }

        #[test]
        fn decode_never_panics_on_arbitrary_base64url(input in "[A-Za-z0-9_=-]{0,200}") {
            let _ = ConnectionToken::decode(&input);
        }

        #[test]
        fn decode_never_panics_on_arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = ConnectionToken::decode(&URL_SAFE_NO_PAD.encode(bytes));
        }

        #[test]
        fn decode_never_panics_on_json_like_text(
            json in "\\{(\"[hpesfx]\":(\"[^\"]{0,8}\"|-?[0-9]{1,6}(\\.[0-9])?|null|true|\\[\\]|\\{\\}),?){0,7}\\}"
        ) {
            let _ = decode_json(&json);
        }
    }
}
