//! What an edge reports about itself is checked and bounded by the hub (issue #23 item 7): a
//! hand-driven edge sends a report whose `publicIp` is not an address (refused whole), one with
//! 10 kB error texts and a list of 5,000 bind failures (kept capped), and a valid address
//! (kept, canonical).

#[macro_use]
mod common;

use common::{hand_edge, Managed, EDGE_ID, EDGE_SECRET};
use remoteingress::testing::handshake::MAX_REPORTED_BIND_FAILURES;
use remoteingress::testing::ControlMessage;
use remoteingress::testing::MAX_TEXT_LEN;
use serde_json::{json, Value};

fn send(edge: &hand_edge::HandEdge, report: &Value) {
    edge.tunnel
        .send_control(ControlMessage::config(report.to_string()))
        .expect("send the report");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bogus_reports_are_refused_and_long_ones_capped() {
    let mut hub = Managed::spawn().await;
    let port = common::start_hub_allowing_test_edge(&mut hub).await;
    let edge = hand_edge::login("tcpTls", port, EDGE_ID, EDGE_SECRET)
        .await
        .expect("login");
    hub.event("edgeConnected").await;

    let failure =
        |port: u32, error: String| json!({"port": port, "protocol": "tcp", "error": error});
    send(
        &edge,
        &json!({"publicIp": "not-an-ip\n\u{1b}[31m", "portBindFailures": [failure(1, "x".into())]}),
    );
    let many: Vec<Value> = (0..5000).map(|p| failure(p + 2, "busy".into())).collect();
    send(&edge, &json!({"portBindFailures": many}));
    send(
        &edge,
        &json!({"firewall": {"digest": "ab".repeat(32), "state": "failed", "error": "€".repeat(3400)},
                "portBindFailures": [failure(2, "y".repeat(10_000))]}),
    );
    // Reports are handled in order: once the last is in, the earlier ones were handled.
    let status = common::status_until(&mut hub, "the last report", common::DEADLINE, |s| {
        s["connectedEdges"][0]["firewall"]["state"] == "failed"
    })
    .await;
    let shown = &status["connectedEdges"][0];
    assert_eq!(shown["publicIp"], Value::Null, "{shown}");
    let error = shown["firewall"]["error"].as_str().unwrap();
    assert!(
        error.len() <= MAX_TEXT_LEN && error.ends_with('…'),
        "{}",
        error.len()
    );
    let failures = shown["portBindFailures"].as_array().unwrap();
    assert_eq!(failures.len(), 1, "{shown}");
    assert!(failures[0]["error"].as_str().unwrap().len() <= MAX_TEXT_LEN);

    send(
        &edge,
        &json!({"portBindFailures": (0..5000).map(|p| failure(p + 2, "busy".into())).collect::<Vec<_>>()}),
    );
    common::status_until(&mut hub, "a long list capped", common::DEADLINE, |s| {
        s["connectedEdges"][0]["portBindFailures"]
            .as_array()
            .map(Vec::len)
            == Some(MAX_REPORTED_BIND_FAILURES)
    })
    .await;

    send(&edge, &json!({"publicIp": "2001:DB8::7"}));
    common::status_until(&mut hub, "a valid address", common::DEADLINE, |s| {
        s["connectedEdges"][0]["publicIp"] == "2001:db8::7"
    })
    .await;
    drop(edge);
}
