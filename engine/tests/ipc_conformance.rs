//! IPC conformance: the real binary, spoken to over JSON lines (docs/architecture.md, "IPC contract").

mod common;

use std::time::Duration;

use common::Managed;
use serde_json::{json, Value};

fn hub_start() -> Value {
    json!({"role": "hub", "config": {"tunnelPort": 0, "targetHost": "127.0.0.1"}})
}

fn edge_start() -> Value {
    json!({"role": "edge", "config": {
        "hubHost": "127.0.0.1", "hubPort": 1, "edgeId": "edge-1", "secret": "s3cret-0123456789",
        "transportMode": "tcpTls", "stunServers": []
    }})
}

#[tokio::test]
async fn ready_event_comes_first_with_version_protocol_and_pid() {
    let mut bin = Managed::spawn().await;
    // spawn() already consumed and checked `ready`; check its data by restarting the check on a
    // fresh process so the fields can be compared with the child's pid.
    let pid = bin.pid();
    let status = bin.ok("getStatus", None).await;
    assert_eq!(status, json!({"running": false}));
    assert_eq!(bin.close_stdin_and_wait().await, 0);

    let mut command = tokio::process::Command::new(common::binary());
    let output = command
        .arg("--management")
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8(output.stdout).unwrap();
    let first: Value = serde_json::from_str(stdout.lines().next().unwrap()).unwrap();
    assert_eq!(first["event"], "ready");
    assert_eq!(first["data"]["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(first["data"]["protocol"], 1);
    assert!(first["data"]["pid"].as_u64().unwrap() > 0);
    assert_ne!(first["data"]["pid"].as_i64().unwrap(), i64::from(pid));
    assert_eq!(output.status.code(), Some(0), "EOF on stdin exits 0");
}

#[tokio::test]
async fn hub_lifecycle_start_status_stop() {
    let mut bin = Managed::spawn().await;
    assert_eq!(
        bin.ok("getStatus", Some(json!({}))).await,
        json!({"running": false})
    );
    let started = bin.ok("start", Some(hub_start())).await;
    assert_eq!(started["role"], "hub");
    assert_eq!(started["running"], true);
    let status = bin.ok("getStatus", None).await;
    assert_eq!(status["role"], "hub");
    assert_eq!(status["targetHost"], "127.0.0.1");
    assert_eq!(status["allowedEdges"], 0);

    let result = bin
        .ok(
            "updateAllowedEdges",
            Some(json!({"edges": [
                {"id": "edge-a", "secret": "secret-a-0123456789", "listenPorts": [8080]},
                {"id": "edge-b", "secret": "secret-b-0123456789"}
            ]})),
        )
        .await;
    assert_eq!(result["edges"], 2);
    assert_eq!(bin.ok("getStatus", None).await["allowedEdges"], 2);

    assert_eq!(bin.ok("stop", None).await, json!({}));
    assert_eq!(bin.ok("stop", None).await, json!({}), "stop is idempotent");
    assert_eq!(bin.ok("getStatus", None).await, json!({"running": false}));
    // A stopped process can start again, even in the other role.
    assert_eq!(bin.ok("start", Some(edge_start())).await["role"], "edge");
    assert_eq!(bin.close_stdin_and_wait().await, 0);
}

#[tokio::test]
async fn edge_lifecycle_reports_its_config() {
    let mut bin = Managed::spawn().await;
    let status = bin.ok("start", Some(edge_start())).await;
    assert_eq!(status["role"], "edge");
    assert_eq!(status["edgeId"], "edge-1");
    assert_eq!(status["hub"], "127.0.0.1:1");
    assert_eq!(status["transportMode"], "tcpTls");
    assert_eq!(bin.close_stdin_and_wait().await, 0);
}

#[tokio::test]
async fn concurrent_requests_complete_out_of_order_matched_by_id() {
    let mut bin = Managed::spawn().await;
    let slow = bin.send("ping", Some(json!({"delayMs": 1500}))).await;
    let fast = bin.send("getStatus", None).await;
    let first = bin.next_line().await.expect("a response");
    assert_eq!(first["id"], fast, "the fast request answers first: {first}");
    let second = bin.next_line().await.expect("a response");
    assert_eq!(second["id"], slow);
    assert_eq!(second["result"]["pong"], true);
}

/// Clients that number their requests (JSON-RPC style) get the number back, as a number.
#[tokio::test]
async fn numeric_ids_are_echoed_as_numbers() {
    let mut bin = Managed::spawn().await;
    bin.write_raw(b"{\"id\":7,\"method\":\"ping\"}\n{\"id\":8,\"method\":\"nope\"}\n")
        .await;
    // Requests run concurrently: the answers may come in either order.
    let mut answers = [
        bin.next_line().await.expect("a response"),
        bin.next_line().await.expect("a response"),
    ];
    answers.sort_by_key(|answer| answer["id"].as_u64());
    let [ping, unknown] = answers;
    assert_eq!(ping["id"], json!(7), "{ping}");
    assert_eq!(ping["result"]["pong"], true, "{ping}");
    assert_eq!(unknown["id"], json!(8), "{unknown}");
    assert_eq!(unknown["code"], "unknown_method", "{unknown}");
}

#[tokio::test]
async fn bad_lines_become_ipc_errors_and_the_process_keeps_serving() {
    let mut bin = Managed::spawn().await;
    bin.ok("start", Some(hub_start())).await;
    let cases: [(&str, &str); 4] = [
        ("this is not json", "not valid JSON"),
        ("[1,2,3]", "not a JSON object"),
        (r#"{"method":"getStatus"}"#, "no \"id\""),
        (
            r#"{"id":[7],"method":"getStatus"}"#,
            "\"id\" must be a string or a number",
        ),
    ];
    for (line, message) in cases {
        bin.write_raw(format!("{line}\n").as_bytes()).await;
        let event = bin.event("ipcError").await;
        assert!(
            event["message"].as_str().unwrap().contains(message),
            "{event}"
        );
        assert_eq!(event["line"], line);
    }
    // Whenever the id can be read, the caller gets a response with it (it would wait forever
    // for an ipcError it cannot match).
    for (line, message) in [
        (r#"{"id":"x1"}"#, "no \"method\""),
        (
            r#"{"id":"x2","method":"getStatus","extra":1}"#,
            "unknown field",
        ),
        (
            r#"{"id":"x3","method":"ping","params":{"delayMs":1e400}}"#,
            "params.delayMs",
        ),
    ] {
        bin.write_raw(format!("{line}\n").as_bytes()).await;
        let id = line.split('"').nth(3).unwrap();
        let response = bin.response(id).await;
        assert_eq!(response["success"], false, "{response}");
        assert_eq!(response["code"], "invalid_params", "{response}");
        assert!(
            response["error"].as_str().unwrap().contains(message),
            "{response}"
        );
    }
    let long = format!("{{{}", "x".repeat(500));
    bin.write_raw(format!("{long}\n").as_bytes()).await;
    let event = bin.event("ipcError").await;
    assert_eq!(event["line"].as_str().unwrap().chars().count(), 200);

    // The hub is still running after all of that.
    assert_eq!(bin.ok("getStatus", None).await["role"], "hub");
}

#[tokio::test]
async fn oversized_line_is_discarded_and_reading_continues() {
    let mut bin = Managed::spawn().await;
    bin.ok("start", Some(hub_start())).await;
    let mut big = Vec::with_capacity(17 * 1024 * 1024 + 64);
    big.extend_from_slice(br#"{"id":"big","method":"ping","params":{"pad":""#);
    big.resize(17 * 1024 * 1024, b'a');
    big.extend_from_slice(b"\"}}\n");
    bin.write_raw(&big).await;
    let event = bin.event("ipcError").await;
    assert!(
        event["message"].as_str().unwrap().contains("exceeds"),
        "{event}"
    );
    assert!(event["line"]
        .as_str()
        .unwrap()
        .starts_with(r#"{"id":"big""#));
    assert_eq!(bin.ok("getStatus", None).await["role"], "hub");
}

#[tokio::test]
async fn method_errors_have_codes_and_field_paths() {
    let mut bin = Managed::spawn().await;
    bin.err("noSuchMethod", None, "unknown_method").await;

    let message = bin
        .err(
            "start",
            Some(json!({"role": "hub", "config": {"tunnelPort": "eighty"}})),
            "invalid_params",
        )
        .await;
    assert!(message.starts_with("params.config.tunnelPort"), "{message}");

    let message = bin
        .err(
            "start",
            Some(json!({"role": "hub", "config": {"tunelPort": 1}})),
            "invalid_params",
        )
        .await;
    assert!(
        message.contains("unknown field") && message.contains("tunelPort"),
        "{message}"
    );

    let message = bin
        .err(
            "start",
            Some(json!({"role": "proxy", "config": {}})),
            "invalid_params",
        )
        .await;
    assert!(message.contains("proxy"), "{message}");

    bin.err("start", None, "invalid_params").await;
    bin.err(
        "getStatus",
        Some(json!({"verbose": true})),
        "invalid_params",
    )
    .await;
    bin.err("ping", Some(json!({"delayMs": 600000})), "invalid_params")
        .await;

    // Well-formed but invalid configuration names the field too.
    let message = bin
        .err(
            "start",
            Some(json!({"role": "edge", "config": {"hubHost": "h", "edgeId": "has space", "secret": "0123456789abcdef"}})),
            "invalid_config",
        )
        .await;
    assert!(message.starts_with("config.edgeId"), "{message}");

    // Role methods before start.
    bin.err(
        "updateAllowedEdges",
        Some(json!({"edges": []})),
        "not_running",
    )
    .await;

    bin.ok("start", Some(hub_start())).await;
    bin.err("start", Some(hub_start()), "already_started").await;
    bin.err("start", Some(edge_start()), "already_started")
        .await;
    let message = bin
        .err(
            "updateAllowedEdges",
            Some(json!({"edges": [{"id": "a", "secret": "0123456789abcdef", "listenPorts": [70000]}]})),
            "invalid_params",
        )
        .await;
    assert!(
        message.starts_with("params.edges[0].listenPorts[0]"),
        "{message}"
    );
    let message = bin
        .err(
            "updateAllowedEdges",
            Some(json!({"edges": [{"id": "a", "secret": "0123456789abcdef"}, {"id": "a", "secret": "fedcba9876543210"}]})),
            "invalid_config",
        )
        .await;
    assert!(message.starts_with("edges[1].id"), "{message}");
    bin.ok("stop", None).await;

    bin.ok("start", Some(edge_start())).await;
    bin.err(
        "updateAllowedEdges",
        Some(json!({"edges": []})),
        "wrong_role",
    )
    .await;
    bin.err(
        "startEgressTcpProxy",
        Some(json!({"edgeId": "e", "logicalHost": "mx.example.net", "port": 25})),
        "wrong_role",
    )
    .await;
    assert_eq!(bin.ok("getStatus", None).await["role"], "edge");
}

#[tokio::test]
async fn sigterm_shuts_down_gracefully_with_exit_zero() {
    let mut bin = Managed::spawn().await;
    bin.ok("start", Some(hub_start())).await;
    let pid = bin.pid();
    // SAFETY-free: `kill` via the command line keeps the test free of unsafe code.
    let status = std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    assert_eq!(bin.wait_exit().await, 0);
}

#[tokio::test]
async fn eof_while_a_request_is_in_flight_still_exits_zero_promptly() {
    let mut bin = Managed::spawn().await;
    bin.send("ping", Some(json!({"delayMs": 60000}))).await;
    let started = std::time::Instant::now();
    assert_eq!(bin.close_stdin_and_wait().await, 0);
    assert!(started.elapsed() < Duration::from_secs(8));
}

/// Peak resident memory of a process (VmHWM) in KiB.
fn peak_rss_kib(pid: i32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

#[tokio::test]
async fn a_line_just_under_the_cap_costs_about_its_size_not_a_value_tree() {
    let mut bin = Managed::spawn().await;
    let before = peak_rss_kib(bin.pid());
    // 15 MiB of numbers in params: as a serde_json::Value tree this was over a GiB.
    let mut line = Vec::with_capacity(15 << 20);
    line.extend_from_slice(br#"{"id":"huge","method":"ping","params":{"pad":["#);
    while line.len() < (15 << 20) {
        line.extend_from_slice(b"0,");
    }
    line.extend_from_slice(b"0]}}\n");
    bin.write_raw(&line).await;
    let response = bin.response("huge").await;
    assert_eq!(response["code"], "invalid_params", "{response}");
    let grown_mib = peak_rss_kib(bin.pid()).saturating_sub(before) / 1024;
    eprintln!("peak memory grew by {grown_mib} MiB for a 15 MiB line");
    assert!(grown_mib < 128, "{grown_mib} MiB");
}

#[test]
fn requests_from_a_caller_that_does_not_read_answers_are_held_back_not_buffered() {
    use std::io::{BufRead, BufReader, Write};
    const REQUESTS: usize = 200_000;
    let mut child = std::process::Command::new(common::binary())
        .arg("--management")
        .env("REMOTEINGRESS_LOG", "warn")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id() as i32;
    let mut stdin = child.stdin.take().unwrap();
    let written = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let progress = written.clone();
    let writer = std::thread::spawn(move || {
        for i in 0..REQUESTS {
            if stdin
                .write_all(format!("{{\"id\":\"{i}\",\"method\":\"ping\"}}\n").as_bytes())
                .is_err()
            {
                return;
            }
            progress.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
    });
    // Nobody reads stdout yet: the binary must stop reading stdin rather than buffer.
    let mut last = usize::MAX;
    let end = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        std::thread::sleep(Duration::from_millis(500));
        let now = written.load(std::sync::atomic::Ordering::Relaxed);
        if now == last {
            break;
        }
        last = now;
        assert!(std::time::Instant::now() < end, "writes never stalled");
    }
    assert!(
        last < REQUESTS,
        "all {REQUESTS} requests were taken without their answers read"
    );
    let held_mib = common::rss_kib(pid) / 1024;
    eprintln!("stalled after {last} requests at {held_mib} MiB");
    assert!(
        held_mib < 64,
        "{held_mib} MiB while the caller does not read"
    );
    // Reading resumes everything: every request gets its answer.
    let stdout = child.stdout.take().unwrap();
    let mut answered = 0;
    for line in BufReader::new(stdout).lines() {
        let line = line.unwrap();
        if line.contains("\"pong\":true") {
            answered += 1;
            if answered == REQUESTS {
                break;
            }
        }
    }
    assert_eq!(answered, REQUESTS);
    writer.join().unwrap();
    let _ = child.kill();
    let _ = child.wait();
}
