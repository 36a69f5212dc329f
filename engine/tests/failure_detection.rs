//! How fast a failure is noticed, on both transports, with the default timing: a hub killed and
//! restarted (with its state directory) has its edge back within about two seconds; a peer that
//! vanishes without a word (SIGSTOP: no FIN, no RST, no reset) is noticed within 15 s; a hub
//! restarted with another allowed-edges list lets the kept edges back and keeps the removed out.

#[macro_use]
mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::{edge_start, Managed, EDGE_ID, EDGE_SECRET};
use serde_json::{json, Value};

over_both_transports!(
    a_hub_restarted_after_three_seconds_has_its_edge_back_within_two,
    a_vanished_hub_is_noticed_within_fifteen_seconds,
    a_vanished_edge_is_noticed_within_fifteen_seconds,
    a_hub_restarted_with_another_list_lets_kept_edges_back_and_keeps_removed_ones_out,
);

const EDGES: fn() -> Value = || json!({"edges": [{"id": EDGE_ID, "secret": EDGE_SECRET}]});

fn state_dir() -> PathBuf {
    std::env::temp_dir().join(format!(
        "ri-detect-{}-{:x}",
        std::process::id(),
        rand::random::<u64>()
    ))
}

/// A hub with a state directory and a pinned edge on `transport`, connected.
async fn connected(transport: &str, dir: &Path) -> (Managed, Managed, u16) {
    let mut hub = Managed::spawn().await;
    let status = hub
        .ok(
            "start",
            Some(json!({"role": "hub", "config": {"tunnelPort": 0,
                "stateDir": dir.to_string_lossy()}})),
        )
        .await;
    hub.ok("updateAllowedEdges", Some(EDGES())).await;
    let port = status["tunnelPort"].as_u64().unwrap() as u16;
    let mut edge = Managed::spawn().await;
    let mut params = edge_start(port, status["certSha256"].as_str());
    params["config"]["transportMode"] = json!(transport);
    edge.ok("start", Some(params)).await;
    edge.event("tunnelConnected").await;
    hub.event("edgeConnected").await;
    (hub, edge, port)
}

fn signal(pid: i32, signal: i32) {
    // SAFETY: kill(2) on the PID of a child this test spawned and still holds.
    unsafe { libc::kill(pid, signal) };
}

async fn a_hub_restarted_after_three_seconds_has_its_edge_back_within_two(transport: &str) {
    let _heavy = common::heavy().await;
    let dir = state_dir();
    let (mut hub, mut edge, port) = connected(transport, &dir).await;
    hub.child.start_kill().unwrap();
    hub.wait_exit().await;
    // The scenario: the hub is down for three seconds.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let mut hub = Managed::spawn().await;
    let config = json!({"role": "hub", "config": {"tunnelPort": port,
        "stateDir": dir.to_string_lossy()}});
    common::start_retrying(&mut hub, config).await;
    let restarted = Instant::now();
    hub.ok("updateAllowedEdges", Some(EDGES())).await;
    hub.event("edgeConnected").await;
    let back = restarted.elapsed();
    eprintln!("{transport}: edge back {back:?} after the hub restarted");
    // The target is 2 s; the bound leaves room for a loaded CI machine.
    assert!(back < Duration::from_secs(3), "{transport}: {back:?}");
    let _ = edge.close_stdin_and_wait().await;
    let _ = std::fs::remove_dir_all(&dir);
}

async fn a_vanished_hub_is_noticed_within_fifteen_seconds(transport: &str) {
    let dir = state_dir();
    let (hub, mut edge, _) = connected(transport, &dir).await;
    let vanished = Instant::now();
    signal(hub.pid(), libc::SIGSTOP);
    let event = edge
        .wait_for(
            |line| line["event"] == "tunnelDisconnected",
            Duration::from_secs(15),
        )
        .await;
    let noticed = vanished.elapsed();
    signal(hub.pid(), libc::SIGCONT);
    eprintln!("{transport}: vanished hub noticed after {noticed:?}: {event}");
    let _ = std::fs::remove_dir_all(&dir);
}

async fn a_vanished_edge_is_noticed_within_fifteen_seconds(transport: &str) {
    let dir = state_dir();
    let (mut hub, edge, _) = connected(transport, &dir).await;
    let vanished = Instant::now();
    signal(edge.pid(), libc::SIGSTOP);
    let event = hub
        .wait_for(
            |line| line["event"] == "edgeDisconnected",
            Duration::from_secs(15),
        )
        .await;
    let noticed = vanished.elapsed();
    signal(edge.pid(), libc::SIGCONT);
    eprintln!("{transport}: vanished edge noticed after {noticed:?}: {event}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// An edge logged in as `id` to the hub on `port`, connected.
async fn edge_as(id: &str, port: u16, fingerprint: Option<&str>, transport: &str) -> Managed {
    let mut edge = Managed::spawn().await;
    let mut params = edge_start(port, fingerprint);
    params["config"]["edgeId"] = json!(id);
    params["config"]["secret"] = json!(format!("{id}-secret-0123456789"));
    params["config"]["transportMode"] = json!(transport);
    edge.ok("start", Some(params)).await;
    edge.event("tunnelConnected").await;
    edge
}

async fn a_hub_restarted_with_another_list_lets_kept_edges_back_and_keeps_removed_ones_out(
    transport: &str,
) {
    let _heavy = common::heavy().await;
    let dir = state_dir();
    let list = |ids: &[&str]| {
        let edges: Vec<Value> = ids
            .iter()
            .map(|id| json!({"id": id, "secret": format!("{id}-secret-0123456789")}))
            .collect();
        json!({ "edges": edges })
    };
    let config = |port: u16| json!({"role": "hub", "config": {"tunnelPort": port, "stateDir": dir.to_string_lossy()}});
    let mut hub = Managed::spawn().await;
    let status = hub.ok("start", Some(config(0))).await;
    hub.ok("updateAllowedEdges", Some(list(&["kept", "removed"])))
        .await;
    let port = status["tunnelPort"].as_u64().unwrap() as u16;
    let fingerprint = status["certSha256"].as_str();
    let mut kept = edge_as("kept", port, fingerprint, transport).await;
    let mut removed = edge_as("removed", port, fingerprint, transport).await;

    hub.child.start_kill().unwrap();
    hub.wait_exit().await;
    let mut hub = Managed::spawn().await;
    common::start_retrying(&mut hub, config(port)).await;
    hub.ok("updateAllowedEdges", Some(list(&["kept"]))).await;
    let restarted = Instant::now();

    kept.event("tunnelConnected").await;
    let back = restarted.elapsed();
    // The removed edge keeps trying and is refused as unauthorized, every time.
    let refused = removed
        .wait_for(
            |line| {
                line["event"] == "tunnelConnectFailed" && line["data"]["reason"] == "unauthorized"
            },
            Duration::from_secs(15),
        )
        .await;
    let failure = hub
        .wait_for(
            |line| line["event"] == "edgeAuthFailed" && line["data"]["edgeId"] == "removed",
            Duration::from_secs(15),
        )
        .await;
    let connected: Vec<Value> = hub.ok("getStatus", None).await["connectedEdges"]
        .as_array()
        .unwrap()
        .iter()
        .map(|edge| edge["edgeId"].clone())
        .collect();
    assert_eq!(connected, vec![json!("kept")], "only the kept edge is back");
    assert_eq!(
        removed.ok("getStatus", None).await["connected"],
        false,
        "the removed edge stays out"
    );
    eprintln!(
        "{transport}: kept edge back {back:?} after the restart; removed edge refused: {} / {}",
        refused["data"]["message"], failure["data"]["reason"]
    );
    let _ = kept.close_stdin_and_wait().await;
    let _ = removed.close_stdin_and_wait().await;
    let _ = std::fs::remove_dir_all(&dir);
}
