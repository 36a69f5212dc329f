//! `proxyProtocol: none` (issue #28 item 3): a target that does not speak PROXY (sshd, DNS,
//! WireGuard, a game server) gets exactly what the client sent, when the hub, the allowed edge or
//! the port (`targetPorts[].proxyProtocol`) says so; the most specific choice wins, and the other
//! ports keep their header. UDP: `none` sends the bare datagram; an explicit v1 (which has no UDP
//! form) is refused on a UDP-only port, and elsewhere sends v2 with a warning that says so.

#[macro_use]
mod common;

use std::os::unix::fs::DirBuilderExt;

use common::target::{expected_header, Behaviour, RawTarget, Target};
use common::udp_target::UdpEchoTarget;
use common::{tcp_round_trip, udp_round_trip, Managed, Pair};
use serde_json::json;
use tokio::io::{AsyncBufReadExt, BufReader};

over_both_transports!(none_per_port_and_per_edge_leaves_other_ports_their_header,);

/// What an SSH client sends first: a target that does not speak PROXY must see these bytes first.
const SSH_HELLO: &[u8] = b"SSH-2.0-OpenSSH_9.6\r\n";

/// The PROXY v2 signature, the first 12 bytes of every v2 header.
const V2_SIGNATURE: &[u8] = b"\r\n\r\n\0\r\nQUIT\n";

async fn none_per_port_and_per_edge_leaves_other_ports_their_header(transport: &str) {
    let plain = RawTarget::start().await;
    let proxied = Target::start(Behaviour::Echo).await;
    let udp_plain = UdpEchoTarget::start().await;
    let udp_proxied = UdpEchoTarget::start().await;
    let ports = json!({"listenPorts": [plain.port, proxied.port],
        "listenPortsUdp": [udp_plain.port, udp_proxied.port]});
    let mut per_port = ports.clone();
    per_port["targetPorts"] = json!([{"port": plain.port, "proxyProtocol": "none"},
        {"port": udp_plain.port, "proxyProtocol": "none"}]);
    let mut pair = Pair::start_with(per_port, json!({}), transport).await;
    pair.wait_listening(plain.port).await;
    pair.wait_listening(proxied.port).await;
    pair.wait_listening_udp(udp_plain.port).await;
    pair.wait_listening_udp(udp_proxied.port).await;

    // Per port: the plain target sees the client's bytes and nothing else.
    let (back, _) = tcp_round_trip(plain.port, SSH_HELLO).await;
    assert_eq!(back, SSH_HELLO);
    assert_eq!(
        plain.received(),
        vec![SSH_HELLO.to_vec()],
        "no PROXY header"
    );
    let (back, client) = tcp_round_trip(proxied.port, b"proxied").await;
    assert_eq!(back, b"proxied");
    assert_eq!(
        proxied.headers(),
        vec![expected_header(client, proxied.port)],
        "the other TCP port keeps its v1 header"
    );
    assert_eq!(
        udp_round_trip(udp_plain.port, b"dns query").await,
        b"dns query"
    );
    let datagrams = udp_plain.datagrams();
    assert!(
        !datagrams.is_empty() && datagrams.iter().all(|d| d == b"dns query"),
        "bare datagrams only: {datagrams:?}"
    );
    assert_eq!(udp_round_trip(udp_proxied.port, b"quic").await, b"quic");
    let headers = udp_proxied.headers();
    assert_eq!(headers.len(), 1, "the other UDP port keeps its v2 header");
    assert_eq!(headers[0].edge.port(), udp_proxied.port);

    // Per edge, with one port of each transport put back by its own entry (port > edge).
    let mut per_edge = ports.clone();
    per_edge["proxyProtocol"] = json!("none");
    per_edge["targetPorts"] = json!([{"port": proxied.port, "proxyProtocol": "v1"},
        {"port": udp_proxied.port, "proxyProtocol": "v2"}]);
    pair.update_test_edge(&per_edge).await;
    let (back, _) = tcp_round_trip(plain.port, b"second").await;
    assert_eq!(back, b"second");
    assert_eq!(plain.received()[1], b"second", "no PROXY header");
    let (back, client) = tcp_round_trip(proxied.port, b"again").await;
    assert_eq!(back, b"again");
    assert_eq!(
        proxied.headers()[1],
        expected_header(client, proxied.port),
        "the port's v1 wins over the edge's none"
    );
    let before = udp_plain.datagrams().len();
    assert_eq!(
        udp_round_trip(udp_plain.port, b"wg handshake").await,
        b"wg handshake"
    );
    assert!(
        udp_plain.datagrams()[before..]
            .iter()
            .all(|d| d == b"wg handshake"),
        "bare datagrams only: {:?}",
        udp_plain.datagrams()
    );
    assert_eq!(udp_round_trip(udp_proxied.port, b"quic 2").await, b"quic 2");
    assert_eq!(
        udp_proxied.headers().len(),
        2,
        "the port's v2 wins over the edge's none"
    );
}

/// The hub's `none` applies to every edge and port that says nothing; a port's `v2` wins.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_hub_s_none_applies_where_edge_and_port_say_nothing() {
    let plain = RawTarget::start().await;
    let v2 = RawTarget::start().await;
    let udp_plain = UdpEchoTarget::start().await;
    let mut pair = Pair::start_with(
        json!({"listenPorts": [plain.port, v2.port], "listenPortsUdp": [udp_plain.port],
            "targetPorts": [{"port": v2.port, "proxyProtocol": "v2"}]}),
        json!({"proxyProtocol": "none"}),
        "tcpTls",
    )
    .await;
    pair.wait_listening(plain.port).await;
    pair.wait_listening(v2.port).await;
    pair.wait_listening_udp(udp_plain.port).await;

    let (back, _) = tcp_round_trip(plain.port, SSH_HELLO).await;
    assert_eq!(back, SSH_HELLO);
    assert_eq!(plain.received(), vec![SSH_HELLO.to_vec()]);
    let (back, _) = tcp_round_trip(v2.port, b"payload").await;
    assert_eq!(back[..V2_SIGNATURE.len()], *V2_SIGNATURE, "the port's v2");
    assert!(back.ends_with(b"payload"));
    assert_eq!(udp_round_trip(udp_plain.port, b"bare").await, b"bare");
    assert!(udp_plain.datagrams().iter().all(|d| d == b"bare"));
}

/// v1 has no UDP form: on a UDP-only port it is refused, naming the field; an explicit v1 that
/// reaches a UDP port from the edge or the hub is a warning naming the edge and the port.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v1_for_udp_is_refused_per_port_and_warned_about_otherwise() {
    let mut hub = Managed::spawn_capturing_stderr().await;
    common::start_hub(&mut hub, json!({"proxyProtocol": "v1"})).await;
    let edge = |id: &str, fields: serde_json::Value| {
        let mut edge = json!({"id": id, "secret": "test-secret-0123456789"});
        for (key, value) in fields.as_object().unwrap() {
            edge[key] = value.clone();
        }
        edge
    };
    let error = hub
        .err(
            "updateAllowedEdges",
            Some(
                json!({"edges": [edge("udp-only", json!({"listenPortsUdp": [51820],
                "targetPorts": [{"port": 51820, "proxyProtocol": "v1"}]}))]}),
            ),
            "invalid_config",
        )
        .await;
    assert!(
        error.contains("edges[0].targetPorts[0].proxyProtocol") && error.contains("UDP"),
        "{error}"
    );
    // Said per port: no warning for this edge. Given by the hub: a warning for the other.
    hub.ok(
        "updateAllowedEdges",
        Some(json!({"edges": [
            edge("said-v2", json!({"listenPortsUdp": [443],
                "targetPorts": [{"port": 443, "proxyProtocol": "v2"}]})),
            edge("from-hub", json!({"listenPortsUdp": [53, 443]})),
        ]})),
    )
    .await;
    let warning = common::eventually("the v1-on-UDP warning", common::DEADLINE, async || {
        let text = String::from_utf8_lossy(&hub.stderr_text()).into_owned();
        text.lines()
            .find(|line| line.contains("has no UDP form") && line.contains("from-hub"))
            .map(str::to_owned)
    })
    .await;
    assert!(warning.contains("[53, 443]"), "{warning}");
    let text = String::from_utf8_lossy(&hub.stderr_text()).into_owned();
    assert!(!text.contains("said-v2"), "{text}");

    let error = hub
        .err(
            "start",
            Some(json!({"role": "hub", "config": {"proxyProtocol": "v3"}})),
            "invalid_params",
        )
        .await;
    assert!(error.starts_with("params.config.proxyProtocol"), "{error}");
}

/// The same from a TOML file through the CLI: `[hub]`, `[[edges]]` and `targetPorts` entries
/// take `proxyProtocol`, and the warning is in the hub's log at start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_toml_file_sets_proxy_protocol_and_the_hub_warns_at_start() {
    let dir = std::env::temp_dir().join(format!("ri-proxy-choice-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::DirBuilder::new().mode(0o700).create(&dir).unwrap();
    let config = dir.join("hub.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[hub]
tunnelPort = 0
stateDir = "{}"
proxyProtocol = "v1"

[[edges]]
id = "game-edge"
secret = "test-secret-0123456789"
listenPorts = [22]
listenPortsUdp = [27015, 53]
targetPorts = [{{ port = 22, proxyProtocol = "none" }}, {{ port = 53, proxyProtocol = "none" }}]
"#,
            dir.display()
        ),
    )
    .unwrap();
    let mut hub = tokio::process::Command::new(common::binary())
        .args(["hub", "--config"])
        .arg(&config)
        .env("REMOTEINGRESS_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(hub.stderr.take().unwrap()).lines();
    let warning = tokio::time::timeout(common::DEADLINE, async {
        while let Some(line) = lines.next_line().await.unwrap() {
            if line.contains("has no UDP form") {
                return line;
            }
        }
        panic!("the hub's stderr ended without the warning");
    })
    .await
    .expect("the v1-on-UDP warning at start");
    assert!(
        warning.contains("game-edge") && warning.contains("[27015]"),
        "{warning}"
    );
    hub.kill().await.unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}
