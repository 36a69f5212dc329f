//! What the `hub` and `edge` daemons tell their operator, through the real binary on loopback:
//! the started status counts the edges, SIGHUP names [hub] settings that need a restart (and an
//! edge says it has nothing to reload), a refused login says what to do and counts once, the
//! tunnel port binds where it is told, and "Address already in use" names the address.

mod common;

use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::process::{Child, Command};

const SECRET: &str = "s3cret-0123456789abc";

/// A `hub` or `edge` daemon run with `--json`: its stdout events and its stderr log, kept.
struct Daemon {
    child: Child,
    events: Arc<Mutex<Vec<Value>>>,
    log: Arc<Mutex<String>>,
}

impl Daemon {
    fn spawn(args: &[&str]) -> Self {
        let mut command = Command::new(common::binary());
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("REMOTEINGRESS_") {
                command.env_remove(key);
            }
        }
        command
            .args(args)
            .arg("--json")
            .env("REMOTEINGRESS_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = command.spawn().expect("spawn remoteingress-bin");
        let events = Arc::new(Mutex::new(Vec::new()));
        let log = Arc::new(Mutex::new(String::new()));
        let stdout = child.stdout.take().expect("stdout");
        let kept = events.clone();
        tokio::spawn(async move {
            let mut lines = BufReader::new(stdout).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                if let Ok(value) = serde_json::from_str::<Value>(&line) {
                    kept.lock().unwrap().push(value);
                }
            }
        });
        let mut stderr = child.stderr.take().expect("stderr");
        let kept = log.clone();
        tokio::spawn(async move {
            let mut buffer = vec![0u8; 16 * 1024];
            while let Ok(n) = stderr.read(&mut buffer).await {
                if n == 0 {
                    break;
                }
                kept.lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buffer[..n]));
            }
        });
        Self { child, events, log }
    }

    fn pid(&self) -> i32 {
        self.child.id().expect("running") as i32
    }

    /// The events called `name` so far.
    fn events_named(&self, name: &str) -> Vec<Value> {
        self.events
            .lock()
            .unwrap()
            .iter()
            .filter(|event| event["event"] == name)
            .map(|event| event["data"].clone())
            .collect()
    }

    /// The first event called `name` whose data satisfies `matches`, waiting for it.
    async fn event(&self, name: &str, matches: impl Fn(&Value) -> bool) -> Value {
        common::eventually(
            &format!("event {name}; log: {}", self.log_text()),
            common::DEADLINE,
            async || self.events_named(name).into_iter().find(&matches),
        )
        .await
    }

    fn log_text(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// Waits until the log has a line containing every one of `needles`; returns that line.
    async fn log_line(&self, needles: &[&str]) -> String {
        common::eventually(
            &format!("a log line with {needles:?}; log: {}", self.log_text()),
            common::DEADLINE,
            async || {
                self.log_text()
                    .lines()
                    .find(|line| needles.iter().all(|needle| line.contains(needle)))
                    .map(str::to_owned)
            },
        )
        .await
    }

    /// Waits for the process to end by itself (bounded); its exit code.
    async fn exit_code(&mut self) -> Option<i32> {
        tokio::time::timeout(common::DEADLINE, self.child.wait())
            .await
            .expect("the process ends by itself")
            .expect("wait")
            .code()
    }
}

/// A scratch directory (the hub's state directory and files), removed on drop.
struct Scratch(std::path::PathBuf);

impl Scratch {
    fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("ri-daemon-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }

    fn write(&self, name: &str, text: &str) -> String {
        let path = self.0.join(name);
        std::fs::write(&path, text).unwrap();
        path.to_str().unwrap().to_owned()
    }

    fn path(&self) -> &str {
        self.0.to_str().unwrap()
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        std::fs::remove_dir_all(&self.0).ok();
    }
}

/// A hub TOML with `[hub]` lines and edges `ids` (no ports).
fn hub_toml(hub: &str, ids: &[&str]) -> String {
    let mut text = format!("[hub]\n{hub}\n");
    for id in ids {
        text.push_str(&format!(
            "\n[[edges]]\nid = \"{id}\"\nsecret = \"{SECRET}\"\n"
        ));
    }
    text
}

/// A hub from `config` with its state in `dir`, on an OS-chosen tunnel port unless `extra`
/// names one.
fn start_hub(dir: &Scratch, config: &str, extra: &[&str]) -> Daemon {
    let mut args = vec!["hub", "--config", config, "--state-dir", dir.path()];
    if !extra.contains(&"--tunnel-port") {
        args.extend(["--tunnel-port", "0"]);
    }
    args.extend(extra);
    Daemon::spawn(&args)
}

/// An edge `edge_id` with `secret` of the hub at `host:port` over `transport`, without STUN.
fn start_edge(
    host: &str,
    port: &str,
    edge_id: &str,
    secret: &str,
    transport: &str,
    extra: &[&str],
) -> Daemon {
    let mut args = vec![
        "edge",
        "--hub-host",
        host,
        "--hub-port",
        port,
        "--edge-id",
        edge_id,
        "--secret",
        secret,
        "--no-stun",
        "--transport-mode",
        transport,
    ];
    args.extend(extra);
    Daemon::spawn(&args)
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_started_status_counts_the_edges_loaded() {
    let dir = Scratch::new("started");
    let config = dir.write("hub.toml", &hub_toml("", &["a", "b", "c"]));
    let hub = start_hub(&dir, &config, &[]);
    let started = hub.event("started", |_| true).await;
    assert_eq!(started["allowedEdges"], 3, "{started}");
    let first = hub.events.lock().unwrap()[0].clone();
    assert_eq!(
        first["event"], "started",
        "started must come first: {first}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_names_the_hub_settings_that_need_a_restart() {
    let dir = Scratch::new("sighup");
    let config = dir.write("hub.toml", &hub_toml("targetHost = \"127.0.0.1\"", &["a"]));
    let hub = start_hub(&dir, &config, &[]);
    hub.event("started", |_| true).await;
    dir.write(
        "hub.toml",
        &hub_toml(
            "targetHost = \"127.0.0.9\"\nproxyProtocol = \"v2\"",
            &["a", "b"],
        ),
    );
    common::signal(hub.pid(), "HUP");
    hub.log_line(&["SIGHUP: allowed edges reloaded", "edges=2"])
        .await;
    let line = hub.log_line(&["need a restart"]).await;
    assert!(
        line.contains("WARN") && line.contains("proxyProtocol, targetHost"),
        "{line}"
    );
    // A reload that changes nothing in [hub] says nothing about a restart.
    dir.write("hub.toml", &hub_toml("targetHost = \"127.0.0.1\"", &["a"]));
    common::signal(hub.pid(), "HUP");
    hub.log_line(&["SIGHUP: allowed edges reloaded", "edges=1"])
        .await;
    assert_eq!(
        hub.log_text().matches("need a restart").count(),
        1,
        "{}",
        hub.log_text()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edge_says_it_has_nothing_to_reload() {
    let closed = free_port().to_string();
    let edge = start_edge("127.0.0.1", &closed, "e", SECRET, "tcpTls", &[]);
    edge.event("started", |_| true).await;
    common::signal(edge.pid(), "HUP");
    edge.log_line(&["SIGHUP", "nothing to reload"]).await;
    assert!(edge.event("started", |_| true).await.is_object());
}

/// A wrong secret under quicWithFallback: the edge says what to do, the hub warns with the
/// reason, and the attempt counts once (QUIC only, no TLS retry).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_login_says_what_to_do_and_counts_once() {
    let dir = Scratch::new("refused");
    let config = dir.write("hub.toml", &hub_toml("", &["a"]));
    let hub = start_hub(&dir, &config, &[]);
    let started = hub.event("started", |_| true).await;
    let port = started["tunnelPort"].to_string();
    let mut edge = start_edge(
        "127.0.0.1",
        &port,
        "a",
        "wrong-secret-0123456789",
        "quicWithFallback",
        &[],
    );
    let failed = edge.event("tunnelConnectFailed", |_| true).await;
    assert_eq!(failed["reason"], "unauthorized", "{failed}");
    let message = failed["message"].as_str().unwrap();
    assert!(
        message.contains(
            "the hub refused edge a: wrong secret or unknown id; check the token, re-issue it \
             after a secret rotation"
        ),
        "{message}"
    );
    assert!(!message.contains("QUIC: "), "retried over TLS: {message}");
    edge.child.start_kill().ok();
    edge.child.wait().await.ok();
    hub.log_line(&["WARN", "login refused", "edge_id=\"a\"", "wrong secret"])
        .await;
    // The edge's one attempt was one login at the hub. An older edge's TLS retry came right
    // after its QUIC one: give it a moment to show (bounded), then count.
    let refused = || {
        hub.events_named("edgeAuthFailed")
            .into_iter()
            .filter(|event| event["loginRefused"] == true)
            .count()
    };
    let end = tokio::time::Instant::now() + Duration::from_secs(2);
    while refused() < 2 && tokio::time::Instant::now() < end {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(refused(), 1, "{:?}", hub.events_named("edgeAuthFailed"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tunnel_port_binds_where_it_is_told() {
    let dir = Scratch::new("bind");
    let config = dir.write("hub.toml", &hub_toml("", &["a"]));
    let hub = start_hub(&dir, &config, &["--tunnel-bind", "127.0.0.3"]);
    let started = hub.event("started", |_| true).await;
    let port = started["tunnelPort"].as_u64().unwrap() as u16;
    tokio::net::TcpStream::connect(("127.0.0.3", port))
        .await
        .expect("the bound address accepts");
    let elsewhere = tokio::net::TcpStream::connect(("127.0.0.1", port)).await;
    assert!(elsewhere.is_err(), "the tunnel port answered on 127.0.0.1");
    // An edge reaches it there, over QUIC (the UDP socket is bound there too).
    let edge = start_edge("127.0.0.3", &port.to_string(), "a", SECRET, "quic", &[]);
    edge.event("tunnelConnected", |_| true).await;
}

/// "Address already in use" names the address: the hub's tunnel port and metrics listener, and
/// the edge's public ports.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn address_in_use_names_the_address() {
    let dir = Scratch::new("inuse");
    let taken = std::net::TcpListener::bind("0.0.0.0:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let config = dir.write("hub.toml", &hub_toml("", &["a"]));
    let mut hub = start_hub(&dir, &config, &["--tunnel-port", &port.to_string()]);
    assert_eq!(hub.exit_code().await, Some(64), "{}", hub.log_text());
    let said = hub.log_text();
    assert!(
        said.contains(&format!("[::]:{port}")) && said.contains("in use"),
        "{said}"
    );

    let metrics = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let metrics_addr = metrics.local_addr().unwrap().to_string();
    let mut hub = start_hub(&dir, &config, &["--metrics-addr", &metrics_addr]);
    assert_eq!(hub.exit_code().await, Some(64), "{}", hub.log_text());
    assert!(hub.log_text().contains(&metrics_addr), "{}", hub.log_text());

    // The edge's public port, taken on its bind address.
    let public = std::net::TcpListener::bind("127.0.0.4:0").unwrap();
    let public_port = public.local_addr().unwrap().port();
    let config = dir.write(
        "ports.toml",
        &format!("[hub]\n\n[[edges]]\nid = \"a\"\nsecret = \"{SECRET}\"\nlistenPorts = [{public_port}]\n"),
    );
    let hub = start_hub(&dir, &config, &[]);
    let started = hub.event("started", |_| true).await;
    let edge = start_edge(
        "127.0.0.1",
        &started["tunnelPort"].to_string(),
        "a",
        SECRET,
        "tcpTls",
        &["--bind-address", "127.0.0.4"],
    );
    let failed = edge.event("portBindFailed", |_| true).await;
    let error = failed["error"].as_str().unwrap();
    assert!(
        error.contains(&format!("127.0.0.4:{public_port}")) && error.contains("in use"),
        "{error}"
    );
}
