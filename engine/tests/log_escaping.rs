//! Strings a peer chooses reach the hub's text log escaped (issue #23 item 7): a hello's edge id
//! and a logged-in edge's report that quote a forged log line and terminal escapes leave no raw
//! newline-forged line and no ESC byte on the hub's stderr.

#[macro_use]
mod common;

use std::time::Duration;

use common::{hand_edge, Managed, EDGE_ID, EDGE_SECRET};
use remoteingress::testing::ControlMessage;
use serde_json::json;

/// A line a peer would like the operator to read as the hub's own.
const FORGED: &str = "2030-01-01T00:00:00.000000Z ERROR remoteingress::hub: FORGED";

/// Polls the hub's stderr (bounded) until it contains `needle`; returns it.
async fn stderr_until(hub: &Managed, needle: &str) -> String {
    let end = tokio::time::Instant::now() + common::DEADLINE;
    loop {
        let text = String::from_utf8_lossy(&hub.stderr_text()).into_owned();
        if text.contains(needle) {
            return text;
        }
        assert!(
            tokio::time::Instant::now() < end,
            "no {needle:?} on stderr: {text}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peer_strings_cannot_forge_log_lines_or_reach_the_terminal() {
    let mut hub = Managed::spawn_capturing_stderr_with_env(&[("REMOTEINGRESS_LOG", "info")]).await;
    let port = common::start_hub_allowing_test_edge(&mut hub).await;

    // A hello whose edge id carries a terminal escape (a newline would end the hello line).
    let hello = format!("EDGE ev\x1b[31mil {}\n", "00".repeat(32));
    let reply = hand_edge::tls_raw(port, hello.as_bytes()).await;
    assert!(!reply.unwrap_or_default().contains("\"ok\":true"));
    stderr_until(&hub, "edge authentication failed").await;

    // A logged-in edge reports a firewall state that is a forged line with escapes: serde's
    // error quotes the unknown variant as it is.
    let edge = hand_edge::login("tcpTls", port, EDGE_ID, EDGE_SECRET)
        .await
        .expect("login");
    let report = json!({"firewall": {"digest": "d", "state": format!("x\n{FORGED}\x1b[31m\r")}});
    edge.tunnel
        .send_control(ControlMessage::config(report.to_string()))
        .expect("send the report");
    let text = stderr_until(&hub, "bad report from edge").await;

    assert!(!text.contains('\x1b'), "raw ESC on stderr: {text:?}");
    assert!(!text.contains('\r'), "raw CR on stderr: {text:?}");
    assert!(
        !text.lines().any(|line| line.starts_with(FORGED)),
        "a forged line on stderr: {text}"
    );
    assert!(
        text.contains(&format!("x\\n{FORGED}\\u{{1b}}[31m\\r")),
        "{text}"
    );
    drop(edge);
}
