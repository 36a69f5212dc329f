//! The hub's identity across restarts and the ways an edge can check it: a state directory keeps
//! the generated certificate (so a pinned edge gets back in after a restart), a corrupt one is an
//! error, `token issue` and `hub --json` hand out the fingerprint, and an edge can verify the hub
//! by a CA instead of a pin (with the hub's name checked).

mod common;

use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use common::{edge_start, Managed, EDGE_ID, EDGE_SECRET};
use serde_json::{json, Value};

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "ri-{name}-{}-{:x}",
        std::process::id(),
        rand::random::<u32>()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

/// Starts a hub with `config` allowing the test edge; returns its status.
async fn start_hub(hub: &mut Managed, config: Value) -> Value {
    let status = hub
        .ok("start", Some(json!({"role": "hub", "config": config})))
        .await;
    hub.ok(
        "updateAllowedEdges",
        Some(json!({"edges": [{"id": EDGE_ID, "secret": EDGE_SECRET}]})),
    )
    .await;
    status
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_hub_keeps_its_identity_and_a_pinned_edge_gets_back_in() {
    let dir = temp_dir("state");
    let state_dir = dir.to_string_lossy().into_owned();
    let mut hub = Managed::spawn().await;
    let status = start_hub(&mut hub, json!({"tunnelPort": 0, "stateDir": state_dir})).await;
    let port = status["tunnelPort"].as_u64().unwrap() as u16;
    let fingerprint = status["certSha256"].as_str().unwrap().to_owned();
    let file = dir.join("hub-identity.pem");
    assert_eq!(
        std::fs::metadata(&file).unwrap().permissions().mode() & 0o777,
        0o600
    );

    let mut edge = Managed::spawn().await;
    edge.ok("start", Some(edge_start(port, Some(&fingerprint))))
        .await;
    edge.event("tunnelConnected").await;
    // The edge names the hub process it is connected to.
    let first_instance = status["instanceId"].as_str().unwrap().to_owned();
    assert_eq!(first_instance.len(), 36, "{status}");
    let edge_status = edge.ok("getStatus", None).await;
    assert_eq!(
        edge_status["hubInstanceId"],
        first_instance.as_str(),
        "{edge_status}"
    );

    // kill -9 and a restart on the same port with the same state directory.
    hub.child.start_kill().unwrap();
    hub.wait_exit().await;
    edge.event("tunnelDisconnected").await;
    let mut hub = Managed::spawn().await;
    let config = json!({"tunnelPort": port, "stateDir": state_dir});
    let restarted =
        common::start_retrying(&mut hub, json!({"role": "hub", "config": config})).await;
    assert_eq!(restarted["certSha256"], fingerprint.as_str());
    hub.ok(
        "updateAllowedEdges",
        Some(json!({"edges": [{"id": EDGE_ID, "secret": EDGE_SECRET}]})),
    )
    .await;
    edge.event("tunnelConnected").await;
    // Same identity, another process: the edge tells them apart.
    let edge_status = edge.ok("getStatus", None).await;
    assert_eq!(
        edge_status["hubInstanceId"], restarted["instanceId"],
        "{edge_status}"
    );
    assert_ne!(
        edge_status["hubInstanceId"],
        first_instance.as_str(),
        "{edge_status}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_identity_is_a_clear_error_and_is_left_alone() {
    let dir = temp_dir("corrupt");
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("hub-identity.pem");
    std::fs::write(&file, "not a certificate").unwrap();
    let mut hub = Managed::spawn().await;
    let error = hub
        .err(
            "start",
            Some(json!({"role": "hub", "config": {"tunnelPort": 0,
                "stateDir": dir.to_string_lossy()}})),
            "start_failed",
        )
        .await;
    assert!(error.contains("not a valid hub identity"), "{error}");
    assert!(error.contains("hub-identity.pem"), "{error}");
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "not a certificate");
    let _ = std::fs::remove_dir_all(&dir);
}

/// Runs `remoteingress-bin hub --json` with `args`; returns the child and its first stdout line.
fn cli_hub(args: &[&str]) -> (std::process::Child, Value) {
    let mut child = Command::new(common::binary())
        .arg("hub")
        .args(args)
        .arg("--json")
        .env("REMOTEINGRESS_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line).unwrap();
    let value: Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line}"));
    (child, value)
}

#[test]
fn hub_json_announces_its_port_and_fingerprint_and_token_issue_uses_them() {
    let dir = temp_dir("issue");
    std::fs::create_dir_all(&dir).unwrap();
    let edges = dir.join("edges.json");
    std::fs::write(
        &edges,
        json!([{"id": "edge-a", "secret": "secret-a-0123456789", "listenPorts": [443]}])
            .to_string(),
    )
    .unwrap();
    let state = dir.join("state");
    let (mut child, started) = cli_hub(&[
        "--tunnel-port",
        "0",
        "--state-dir",
        &state.to_string_lossy(),
        "--edges",
        &edges.to_string_lossy(),
    ]);
    assert_eq!(started["event"], "started", "{started}");
    let port = started["data"]["tunnelPort"].as_u64().unwrap();
    assert!(port > 0, "{started}");
    let fingerprint = started["data"]["certSha256"].as_str().unwrap().to_owned();
    // SAFETY: kill(2) on the PID of our own child, which has not been waited for yet.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let _ = child.wait();

    let issue = |edge_id: &str| {
        Command::new(common::binary())
            .args(["token", "issue", "--state-dir"])
            .arg(&state)
            .arg("--edges")
            .arg(&edges)
            .args(["--edge-id", edge_id, "--hub-host", "hub.example.com"])
            .args(["--hub-port", &port.to_string()])
            .output()
            .unwrap()
    };
    let output = issue("edge-a");
    assert!(output.status.success(), "{output:?}");
    let decoded = common::decode_token(&String::from_utf8(output.stdout).unwrap());
    assert_eq!(decoded["hubCertSha256"], fingerprint.as_str());
    assert_eq!(decoded["secret"], "secret-a-0123456789");
    assert_eq!(decoded["hubPort"], port);

    let unknown = issue("edge-b");
    assert_eq!(unknown.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("no edge \"edge-b\""));
    let missing = Command::new(common::binary())
        .args(["token", "issue", "--state-dir"])
        .arg(dir.join("nowhere"))
        .arg("--edges")
        .arg(&edges)
        .args(["--edge-id", "edge-a", "--hub-host", "h"])
        .output()
        .unwrap();
    assert_eq!(missing.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("start the hub once"));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn token_issue_reads_the_hubs_toml_file_like_the_hub() {
    let dir = common::temp_dir("issue-toml");
    let state = dir.join("state");
    let config = dir.join("hub.toml");
    std::fs::write(
        &config,
        format!(
            "[hub]\ntunnelPort = 9555\nstateDir = {:?}\n\n[[edges]]\nid = \"edge-t\"\n\
             secret = \"secret-t-0123456789\"\nlistenPorts = [443]\n",
            state.to_string_lossy()
        ),
    )
    .unwrap();
    // The hub makes its identity in the file's stateDir (the flag moves it off port 9555).
    let (mut child, started) =
        cli_hub(&["--config", &config.to_string_lossy(), "--tunnel-port", "0"]);
    let fingerprint = started["data"]["certSha256"].as_str().unwrap().to_owned();
    // SAFETY: kill(2) on the PID of our own child, which has not been waited for yet.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let _ = child.wait();

    let issue = |args: &[&str], env: &[(&str, &str)]| {
        let output = Command::new(common::binary())
            .args([
                "token",
                "issue",
                "--edge-id",
                "edge-t",
                "--hub-host",
                "hub.example.com",
            ])
            .args(args)
            .env_remove("REMOTEINGRESS_TUNNEL_PORT")
            .env_remove("REMOTEINGRESS_STATE_DIR")
            .env_remove("REMOTEINGRESS_EDGES_FILE")
            .envs(env.iter().copied())
            .output()
            .unwrap();
        assert!(output.status.success(), "{output:?}");
        common::decode_token(&String::from_utf8(output.stdout).unwrap())
    };
    let path = config.to_string_lossy().into_owned();
    for decoded in [
        issue(&["--config", &path], &[]),
        issue(&[], &[("REMOTEINGRESS_CONFIG", &path)]),
    ] {
        assert_eq!(decoded["hubPort"], 9555, "the file's tunnelPort, not 8443");
        assert_eq!(decoded["secret"], "secret-t-0123456789");
        assert_eq!(
            decoded["hubCertSha256"],
            fingerprint.as_str(),
            "the file's stateDir"
        );
    }
    let forwarded = issue(
        &["--config", &path],
        &[("REMOTEINGRESS_TUNNEL_PORT", "7443")],
    );
    assert_eq!(
        forwarded["hubPort"], 7443,
        "the variable wins, as for the hub"
    );
    let explicit = issue(&["--config", &path, "--hub-port", "443"], &[]);
    assert_eq!(explicit["hubPort"], 443);
    let _ = std::fs::remove_dir_all(&dir);
}

/// A CA and a hub certificate it signed for `name`, as PEM (ca, cert, key).
fn ca_and_hub_cert(name: &str) -> (String, String, String) {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    // A name of its own, so that another test CA is not mistaken for this one's issuer.
    ca_params.distinguished_name.push(
        rcgen::DnType::CommonName,
        format!("test CA {:x}", rand::random::<u64>()),
    );
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let hub_key = rcgen::KeyPair::generate().unwrap();
    let hub = rcgen::CertificateParams::new(vec![name.to_owned()])
        .unwrap()
        .signed_by(&hub_key, &ca, &ca_key)
        .unwrap();
    (ca.pem(), hub.pem(), hub_key.serialize_pem())
}

/// A hub serving `cert`; returns it and its tunnel port.
async fn hub_with_cert(cert: String, key: String) -> (Managed, u16) {
    let mut hub = Managed::spawn().await;
    let status = start_hub(
        &mut hub,
        json!({"tunnelPort": 0, "tls": {"certPem": cert, "keyPem": key}}),
    )
    .await;
    (hub, status["tunnelPort"].as_u64().unwrap() as u16)
}

async fn edge_with_ca(port: u16, ca: &str, transport: &str) -> Managed {
    let mut params = edge_start(port, None);
    params["config"]["hubHost"] = json!("localhost");
    params["config"]["hubCaPem"] = json!(ca);
    params["config"]["transportMode"] = json!(transport);
    let mut edge = Managed::spawn().await;
    edge.ok("start", Some(params)).await;
    edge
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edge_verifies_the_hub_by_its_ca_and_name() {
    for transport in ["tcpTls", "quic"] {
        let (ca, cert, key) = ca_and_hub_cert("localhost");
        let (_hub, port) = hub_with_cert(cert, key).await;
        let mut edge = edge_with_ca(port, &ca, transport).await;
        edge.event("tunnelConnected").await;
        let status = edge.ok("getStatus", None).await;
        assert_eq!(status["hubVerified"], true, "{status}");

        // Another CA's edge refuses the same hub.
        let (other_ca, _, _) = ca_and_hub_cert("localhost");
        let mut refusing = edge_with_ca(port, &other_ca, transport).await;
        let error = wait_error(&mut refusing).await;
        assert!(error.contains("UnknownIssuer"), "{transport}: {error}");
    }
    // A certificate from the right CA but for another name is refused too.
    let (ca, cert, key) = ca_and_hub_cert("elsewhere.test");
    let (_hub, port) = hub_with_cert(cert, key).await;
    let mut edge = edge_with_ca(port, &ca, "tcpTls").await;
    let error = wait_error(&mut edge).await;
    assert!(error.contains("not valid for name"), "{error}");
}

async fn wait_error(edge: &mut Managed) -> String {
    common::wait_edge_error(edge).await["lastError"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}
