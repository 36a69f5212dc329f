//! The committed JSON Schema must equal what the types generate (linkerd's bootstrap-test idea).
//! Run with `REMOTEINGRESS_UPDATE_SCHEMA=1` to rewrite the committed file after changing a type.

use std::path::PathBuf;

#[test]
fn committed_schema_matches_the_types() {
    let path =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(remoteingress_ipc_schema::SCHEMA_FILE);
    let generated = remoteingress_ipc_schema::schema_text();
    if std::env::var_os("REMOTEINGRESS_UPDATE_SCHEMA").is_some() {
        std::fs::write(&path, &generated).expect("write schema");
        return;
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == generated,
        "{} is out of date: run `REMOTEINGRESS_UPDATE_SCHEMA=1 cargo test -p remoteingress-ipc-schema` and commit it",
        path.display()
    );
}

#[test]
fn schema_names_every_public_type() {
    let schema = remoteingress_ipc_schema::schema();
    let defs = schema["$defs"].as_object().expect("$defs");
    for name in [
        "IHubConfig",
        "IEdgeConfig",
        "TAllowedEdge",
        "IFirewallConfig",
        "IFirewallRateLimit",
        "IFirewallRule",
        "IEgressPolicy",
        "IEgressTcpProxyRequest",
        "IEgressTcpProxyInfo",
        "IPerformanceConfig",
        "IHubStatus",
        "IEdgeStatus",
        "Event",
        "Request",
        "Response",
        "StartParams",
        "UpdateAllowedEdgesParams",
        "UpdateAllowedEdgesResult",
        "ErrorCode",
    ] {
        assert!(defs.contains_key(name), "schema lacks {name}");
    }
}
