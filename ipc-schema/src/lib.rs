//! IPC message types of `remoteingress-bin --management` (JSON lines on stdin/stdout).
//!
//! Every request parameter, result and event is a Rust type here, deriving `serde` and
//! `schemars::JsonSchema`. [`schema`] builds the JSON Schema that is committed beside this crate
//! (`ipc-schema/remoteingress-ipc.schema.json`) and from which the TypeScript types are generated.
//! Field names are camelCase; every params type rejects unknown fields.

pub mod config;
pub mod envelope;
pub mod events;
pub mod methods;
pub mod status;

pub use config::*;
pub use envelope::*;
pub use events::*;
pub use methods::*;
pub use status::*;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A secret string (edge secret, token, private key). It serialises as the plain string, but its
/// `Debug` output is masked so a secret never reaches a log line by accident, and it compares
/// only in constant time.
#[derive(Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(transparent)]
#[schemars(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The secret's text; use only where the secret is actually needed.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

/// Constant time: both sides are hashed first, so neither the content nor the length of either
/// secret shows in the comparison's timing.
impl PartialEq for Secret {
    fn eq(&self, other: &Self) -> bool {
        use sha2::{Digest, Sha256};
        use subtle::ConstantTimeEq;
        let mine = Sha256::digest(self.0.as_bytes());
        let theirs = Sha256::digest(other.0.as_bytes());
        mine.ct_eq(&theirs).into()
    }
}

impl Eq for Secret {}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("\"***\"")
    }
}

impl From<&str> for Secret {
    fn from(value: &str) -> Self {
        Self(value.to_owned())
    }
}

impl From<String> for Secret {
    fn from(value: String) -> Self {
        Self(value)
    }
}

/// The JSON Schema of the whole IPC protocol: every type under `$defs`.
pub fn schema() -> serde_json::Value {
    let mut generator = schemars::generate::SchemaSettings::draft2020_12().into_generator();
    // Envelopes.
    generator.subschema_for::<Request>();
    generator.subschema_for::<Response>();
    generator.subschema_for::<Event>();
    // Method params and results.
    generator.subschema_for::<StartParams>();
    generator.subschema_for::<NoParams>();
    generator.subschema_for::<EmptyResult>();
    generator.subschema_for::<PingParams>();
    generator.subschema_for::<PingResult>();
    generator.subschema_for::<UpdateAllowedEdgesParams>();
    generator.subschema_for::<UpdateAllowedEdgesResult>();
    generator.subschema_for::<EgressTcpProxyRequest>();
    generator.subschema_for::<EgressTcpProxyInfo>();
    generator.subschema_for::<StopEgressTcpProxyParams>();
    generator.subschema_for::<EgressListenerConfig>();
    generator.subschema_for::<EgressListenerInfo>();
    generator.subschema_for::<StopEgressTcpListenerParams>();
    generator.subschema_for::<StatusResult>();
    // Configuration types used on their own (CLI edges file, tokens).
    generator.subschema_for::<HubConfig>();
    generator.subschema_for::<EdgeConfig>();
    generator.subschema_for::<AllowedEdge>();
    generator.subschema_for::<PerformanceConfig>();
    let defs = generator.take_definitions(true);
    serde_json::json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": "https://remoteingress.dev/ipc/v1.schema.json",
        "title": "remoteingress IPC protocol",
        "description": "JSON lines spoken by `remoteingress-bin --management` (protocol version 1). Requests are Request, answers Response, unprompted lines Event.",
        "$defs": defs,
    })
}

/// [`schema`] as pretty-printed JSON with a trailing newline, exactly as committed.
pub fn schema_text() -> String {
    let mut text = serde_json::to_string_pretty(&schema()).unwrap_or_default();
    text.push('\n');
    text
}

/// File name of the committed schema, relative to this crate's directory.
pub const SCHEMA_FILE: &str = "remoteingress-ipc.schema.json";

#[cfg(test)]
mod tests {
    use super::Secret;

    #[test]
    fn secrets_compare_by_value() {
        assert_eq!(Secret::new("s3cret"), Secret::new("s3cret"));
        assert_ne!(Secret::new("s3cret"), Secret::new("s3cres"));
        assert_ne!(Secret::new("s3cret"), Secret::new("s3cret-longer"));
        assert_ne!(Secret::new("s3cret"), Secret::new(""));
        assert_eq!(format!("{:?}", Secret::new("s3cret")), "\"***\"");
    }
}
