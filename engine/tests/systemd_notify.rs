//! `Type=notify`: run with `$NOTIFY_SOCKET` as systemd runs it, the binary reports READY=1 once
//! the role serves (after the hub's `started` line), RELOADING=1 then READY=1 around a SIGHUP,
//! and STOPPING=1 on SIGTERM.

mod common;

use std::io::{BufRead, BufReader};
use std::os::unix::net::UnixDatagram;
use std::process::{Command, Stdio};
use std::time::Duration;

/// The next notification, within 10 s.
fn next(socket: &UnixDatagram) -> String {
    let mut buffer = [0u8; 4096];
    let n = socket
        .recv(&mut buffer)
        .expect("a notification within 10 s");
    String::from_utf8_lossy(&buffer[..n]).into_owned()
}

fn signal(child: &std::process::Child, signal: i32) {
    // SAFETY: kill(2) on the PID of our own child, which has not been waited for yet.
    unsafe { libc::kill(child.id() as i32, signal) };
}

#[test]
fn the_hub_and_the_edge_tell_systemd_when_they_serve_reload_and_stop() {
    let dir = common::temp_dir("notify");
    let path = dir.join("notify.sock");
    let socket = UnixDatagram::bind(&path).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let edges = dir.join("edges.json");
    std::fs::write(&edges, "[]").unwrap();
    let state = dir.join("state");
    let hub_args = [
        "hub",
        "--tunnel-port",
        "0",
        "--edges",
        &edges.to_string_lossy(),
        "--state-dir",
        &state.to_string_lossy(),
    ]
    .map(str::to_owned);
    let token = common::encode_token(9, "edge-a", "secret-a-0123456789");
    let edge_args = ["edge", "--no-stun", "--token", &token].map(str::to_owned);
    for (role, args) in [("hub", &hub_args[..]), ("edge", &edge_args[..])] {
        let mut child = Command::new(common::binary())
            .args(args)
            .arg("--json")
            .env("NOTIFY_SOCKET", &path)
            .env("REMOTEINGRESS_LOG", "warn")
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut started = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut started)
            .unwrap();
        assert!(started.contains("\"started\""), "{role}: {started}");
        let ready = next(&socket);
        assert!(
            ready.lines().any(|line| line == "READY=1"),
            "{role}: {ready}"
        );
        if role == "hub" {
            signal(&child, libc::SIGHUP);
            let reloading = next(&socket);
            assert!(
                reloading.lines().any(|line| line == "RELOADING=1"),
                "{reloading}"
            );
            assert!(reloading.contains("MONOTONIC_USEC="), "{reloading}");
            let ready = next(&socket);
            assert!(ready.lines().any(|line| line == "READY=1"), "{ready}");
        }
        signal(&child, libc::SIGTERM);
        let stopping = next(&socket);
        assert!(
            stopping.lines().any(|line| line == "STOPPING=1"),
            "{role}: {stopping}"
        );
        assert!(child.wait().unwrap().success(), "{role}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}
