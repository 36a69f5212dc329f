//! Test harness: drive the real `remoteingress-bin --management` as a child process.
//!
//! Every wait has a deadline; nothing sleeps to synchronise. The child is killed on drop.
#![allow(dead_code, unreachable_pub)]

/// Runs one scenario over each transport: `mod name { tcp_tls, quic }`.
#[allow(unused_macros)] // not every test binary runs scenarios over both transports
macro_rules! over_both_transports {
    ($($scenario:ident),* $(,)?) => {$(
        mod $scenario {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn tcp_tls() {
                super::$scenario("tcpTls").await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn quic() {
                super::$scenario("quic").await;
            }
        }
    )*};
}

pub mod hand_edge;
pub mod netns;
pub mod target;
pub mod udp_target;

use std::collections::VecDeque;
use std::process::Stdio;
use std::time::Duration;

use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, Command};
use tokio::sync::mpsc;

/// Default deadline for one expected line.
pub const DEADLINE: Duration = Duration::from_secs(10);

/// The binary under test; `REMOTEINGRESS_TEST_BINARY` runs a scenario against another build
/// (e.g. the previous release, to show that a regression test fails without its fix).
pub fn binary() -> String {
    std::env::var("REMOTEINGRESS_TEST_BINARY")
        .unwrap_or_else(|_| env!("CARGO_BIN_EXE_remoteingress-bin").to_owned())
}

/// A running `remoteingress-bin --management`.
pub struct Managed {
    pub child: Child,
    stdin: Option<ChildStdin>,
    lines: mpsc::Receiver<Value>,
    /// Lines read but not yet claimed by a wait.
    pending: VecDeque<Value>,
    next_id: u64,
    /// Bytes the binary wrote to stderr, when spawned with [`Managed::spawn_capturing_stderr`].
    pub stderr_bytes: Option<std::sync::Arc<std::sync::atomic::AtomicU64>>,
    /// The first [`STDERR_KEPT`] bytes of that stderr, to search.
    stderr_text: Option<std::sync::Arc<std::sync::Mutex<Vec<u8>>>>,
}

/// Bytes of a captured stderr kept for [`Managed::stderr_text`].
const STDERR_KEPT: usize = 1 << 20;

impl Managed {
    /// Spawns the binary and waits for its `ready` event.
    pub async fn spawn() -> Self {
        Self::spawn_with_env(&[]).await
    }

    pub async fn spawn_with_env(env: &[(&str, &str)]) -> Self {
        Self::spawn_configured(env, None, false).await
    }

    /// Spawns the binary counting (not showing) what it writes to stderr.
    pub async fn spawn_capturing_stderr() -> Self {
        Self::spawn_configured(&[], None, true).await
    }

    /// Like [`Managed::spawn_capturing_stderr`], with extra environment variables.
    pub async fn spawn_capturing_stderr_with_env(env: &[(&str, &str)]) -> Self {
        Self::spawn_configured(env, None, true).await
    }

    /// What the binary wrote to stderr so far (its first MiB), when spawned capturing it.
    pub fn stderr_text(&self) -> Vec<u8> {
        let text = self.stderr_text.as_ref().expect("spawned capturing stderr");
        text.lock().unwrap().clone()
    }

    /// Spawns the binary with its open-file limit (RLIMIT_NOFILE) set to `nofile`, soft and
    /// hard, as `ulimit -n` would: the binary cannot raise it.
    pub async fn spawn_with_nofile(nofile: u64) -> Self {
        Self::spawn_configured(&[], Some(nofile), false).await
    }

    async fn spawn_configured(
        env: &[(&str, &str)],
        nofile: Option<u64>,
        capture_stderr: bool,
    ) -> Self {
        let mut command = Command::new(binary());
        if let Some(limit) = nofile {
            // SAFETY: setrlimit is async-signal-safe; the closure touches nothing else.
            unsafe {
                command.pre_exec(move || rlimit::setrlimit(rlimit::Resource::NOFILE, limit, limit));
            }
        }
        command
            .arg("--management")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(if capture_stderr {
                Stdio::piped()
            } else {
                Stdio::inherit()
            })
            .env(
                "REMOTEINGRESS_LOG",
                std::env::var("REMOTEINGRESS_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .kill_on_drop(true);
        for (key, value) in env {
            command.env(key, value);
        }
        let mut child = command.spawn().expect("spawn remoteingress-bin");
        let stdout = child.stdout.take().expect("stdout");
        let stdin = child.stdin.take();
        let stderr_text = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let kept = stderr_text.clone();
        let stderr_bytes = child.stderr.take().map(|mut stderr| {
            let counter = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
            let count = counter.clone();
            tokio::spawn(async move {
                use tokio::io::AsyncReadExt;
                let mut buf = vec![0u8; 64 * 1024];
                while let Ok(n) = stderr.read(&mut buf).await {
                    if n == 0 {
                        break;
                    }
                    count.fetch_add(n as u64, std::sync::atomic::Ordering::Relaxed);
                    let mut kept = kept.lock().unwrap();
                    let room = STDERR_KEPT.saturating_sub(kept.len()).min(n);
                    kept.extend_from_slice(&buf[..room]);
                }
            });
            counter
        });
        let (tx, lines) = mpsc::channel(10_000);
        tokio::spawn(async move {
            let mut reader = BufReader::new(stdout).lines();
            while let Ok(Some(line)) = reader.next_line().await {
                let value: Value = serde_json::from_str(&line)
                    .unwrap_or_else(|e| panic!("stdout line is not JSON ({e}): {line}"));
                if tx.send(value).await.is_err() {
                    break;
                }
            }
        });
        let mut managed = Self {
            child,
            stdin,
            lines,
            pending: VecDeque::new(),
            next_id: 0,
            stderr_text: stderr_bytes.as_ref().map(|_| stderr_text),
            stderr_bytes,
        };
        let ready = managed.next_line().await.expect("ready line");
        assert_eq!(ready["event"], "ready", "first line must be ready: {ready}");
        managed
    }

    /// Writes raw bytes to stdin.
    pub async fn write_raw(&mut self, bytes: &[u8]) {
        let stdin = self.stdin.as_mut().expect("stdin open");
        stdin.write_all(bytes).await.expect("write stdin");
        stdin.flush().await.expect("flush stdin");
    }

    /// Sends a request and returns its id.
    pub async fn send(&mut self, method: &str, params: Option<Value>) -> String {
        self.next_id += 1;
        let id = format!("req_{}", self.next_id);
        let mut request = json!({"id": id, "method": method});
        if let Some(params) = params {
            request["params"] = params;
        }
        let mut line = serde_json::to_vec(&request).unwrap();
        line.push(b'\n');
        self.write_raw(&line).await;
        id
    }

    /// Sends a request and waits for its response.
    pub async fn call(&mut self, method: &str, params: Option<Value>) -> Value {
        let id = self.send(method, params).await;
        self.response(&id).await
    }

    /// Like [`Managed::call`], asserting success; returns `result`.
    pub async fn ok(&mut self, method: &str, params: Option<Value>) -> Value {
        let response = self.call(method, params).await;
        assert_eq!(response["success"], true, "{method} failed: {response}");
        response["result"].clone()
    }

    /// Like [`Managed::call`], asserting failure with `code`; returns the error message.
    pub async fn err(&mut self, method: &str, params: Option<Value>, code: &str) -> String {
        let response = self.call(method, params).await;
        assert_eq!(response["success"], false, "{method} succeeded: {response}");
        assert_eq!(response["code"], code, "{response}");
        response["error"]
            .as_str()
            .expect("error message")
            .to_owned()
    }

    /// Waits for the response with this id (other lines stay pending).
    pub async fn response(&mut self, id: &str) -> Value {
        self.wait_for(|line| line["id"] == id, DEADLINE).await
    }

    /// Waits for an event by name.
    pub async fn event(&mut self, name: &str) -> Value {
        let event = self.wait_for(|line| line["event"] == name, DEADLINE).await;
        event["data"].clone()
    }

    /// Waits, up to `deadline`, for a line matching `predicate`.
    pub async fn wait_for(
        &mut self,
        predicate: impl Fn(&Value) -> bool,
        deadline: Duration,
    ) -> Value {
        if let Some(index) = self.pending.iter().position(&predicate) {
            return self.pending.remove(index).expect("index valid");
        }
        let end = tokio::time::Instant::now() + deadline;
        loop {
            let line = tokio::time::timeout_at(end, self.lines.recv())
                .await
                .unwrap_or_else(|_| {
                    panic!(
                        "no matching line within {deadline:?}; pending: {:?}",
                        self.pending
                    )
                })
                .expect("binary closed stdout");
            if predicate(&line) {
                return line;
            }
            self.pending.push_back(line);
        }
    }

    /// How many events named `name` were read but not claimed by a wait: after a request's
    /// response, the events the binary wrote before it are all counted here.
    pub fn unclaimed(&self, name: &str) -> usize {
        self.pending
            .iter()
            .filter(|line| line["event"] == name)
            .count()
    }

    /// The next line in order (pending first).
    pub async fn next_line(&mut self) -> Option<Value> {
        if let Some(line) = self.pending.pop_front() {
            return Some(line);
        }
        tokio::time::timeout(DEADLINE, self.lines.recv())
            .await
            .ok()
            .flatten()
    }

    /// Closes stdin and waits for the exit code.
    pub async fn close_stdin_and_wait(&mut self) -> i32 {
        drop(self.stdin.take());
        self.wait_exit().await
    }

    pub async fn wait_exit(&mut self) -> i32 {
        let status = tokio::time::timeout(DEADLINE, self.child.wait())
            .await
            .expect("binary did not exit in time")
            .expect("wait");
        status.code().unwrap_or(-1)
    }

    pub fn pid(&self) -> i32 {
        self.child.id().expect("running") as i32
    }
}

/// Serialises the heavy scenarios of one test binary (hundreds of connections, floods,
/// 256 MiB transfers): run together on a 2-core machine they starve each other's deadlines.
pub static HEAVY: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(1);

/// Waits for the heavy-test slot.
pub async fn heavy() -> tokio::sync::SemaphorePermit<'static> {
    HEAVY.acquire().await.expect("semaphore never closed")
}

/// Polls `check` every 20 ms until it returns `Some`, or panics after `deadline`.
pub async fn eventually<T>(
    what: &str,
    deadline: Duration,
    mut check: impl AsyncFnMut() -> Option<T>,
) -> T {
    let end = tokio::time::Instant::now() + deadline;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        if tokio::time::Instant::now() >= end {
            panic!("{what}: not within {deadline:?}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Sends `payload` to the edge's TCP `port` (on [`EDGE_ADDR`]), ends the request and reads the
/// answer to its end; returns it (empty when the stream was refused with a reset) and the
/// client's address.
pub async fn tcp_round_trip(port: u16, payload: &[u8]) -> (Vec<u8>, std::net::SocketAddr) {
    use tokio::io::AsyncReadExt;
    let socket = tokio::net::TcpSocket::new_v4().expect("a socket");
    socket
        .bind("127.0.0.1:0".parse().expect("an address"))
        .expect("bind");
    let local = socket.local_addr().expect("local address");
    // A refusal is a reset right after the accept: on a busy machine it can come before this
    // task sees the connection complete, and then connect itself reports it.
    let edge: std::net::SocketAddr = (
        EDGE_ADDR.parse::<std::net::IpAddr>().expect("an address"),
        port,
    )
        .into();
    let mut client = match socket.connect(edge).await {
        Ok(client) => client,
        Err(error) if error.kind() == std::io::ErrorKind::ConnectionReset => {
            return (Vec::new(), local)
        }
        Err(error) => panic!("connect to the edge: {error}"),
    };
    if client.write_all(payload).await.is_err() || client.shutdown().await.is_err() {
        return (Vec::new(), local);
    }
    let mut back = Vec::new();
    let _ = tokio::time::timeout(DEADLINE, client.read_to_end(&mut back))
        .await
        .expect("an answer or a refusal in time");
    (back, local)
}

/// Sends `payload` from a new client socket (so a new UDP session) to the edge's UDP `port`
/// (on [`EDGE_ADDR`]) until an answer comes back; returns it.
pub async fn udp_round_trip(port: u16, payload: &[u8]) -> Vec<u8> {
    let socket = tokio::net::UdpSocket::bind("127.0.0.1:0")
        .await
        .expect("bind");
    eventually("a UDP answer through the tunnel", DEADLINE, || async {
        let mut buf = [0u8; 2048];
        socket.send_to(payload, (EDGE_ADDR, port)).await.ok()?;
        let (len, _) = tokio::time::timeout(Duration::from_millis(300), socket.recv_from(&mut buf))
            .await
            .ok()?
            .ok()?;
        Some(buf[..len].to_vec())
    })
    .await
}

/// Starts a role with `params`, retrying while it fails (a restarted hub waits for its old
/// tunnel port to be free); the `start` result.
pub async fn start_retrying(managed: &mut Managed, params: Value) -> Value {
    eventually("start succeeds", DEADLINE, async || {
        let response = managed.call("start", Some(params.clone())).await;
        (response["success"] == true).then(|| response["result"].clone())
    })
    .await
}

/// Sends `signal` (a name such as `TERM`) to `pid` with the `kill` command (no unsafe code).
pub fn signal(pid: i32, signal: &str) {
    let status = std::process::Command::new("kill")
        .args([&format!("-{signal}"), &pid.to_string()])
        .status()
        .expect("run kill");
    assert!(status.success(), "kill -{signal} {pid}");
}

/// Open file descriptors of a process, from /proc.
pub fn fd_count(pid: i32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, Iterator::count)
}

/// Raises this (test) process's soft open-file limit to its hard limit, so that a test can hold
/// thousands of client sockets; returns the new soft limit.
pub fn raise_own_nofile() -> u64 {
    rlimit::increase_nofile_limit(u64::MAX).expect("raise RLIMIT_NOFILE")
}

/// Resident set size of a process in KiB, from /proc.
pub fn rss_kib(pid: i32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// A hub and an edge, each a real `remoteingress-bin --management`, connected over loopback.
/// The edge binds 127.0.0.2 so that its public ports can equal the targets' ports on 127.0.0.1.
pub struct Pair {
    pub hub: Managed,
    pub edge: Managed,
    pub tunnel_port: u16,
    pub fingerprint: String,
}

pub const EDGE_ID: &str = "edge-test";
pub const EDGE_SECRET: &str = "test-secret-0123456789";
pub const EDGE_ADDR: &str = "127.0.0.2";

impl Pair {
    /// Starts a hub allowing [`EDGE_ID`] with `ports`, and an edge connected to it.
    pub async fn start(ports: &[u16], hub_config: Value, transport: &str) -> Self {
        Self::start_with(json!({"listenPorts": ports}), hub_config, transport).await
    }

    /// Like [`Pair::start`], with the allowed edge's fields (`listenPorts`, `listenPortsUdp`).
    pub async fn start_with(edge_fields: Value, hub_config: Value, transport: &str) -> Self {
        Self::start_configured(edge_fields, hub_config, json!({}), transport).await
    }

    /// Like [`Pair::start_with`], with extra fields for the hub's and the edge's `start` config.
    pub async fn start_configured(
        edge_fields: Value,
        hub_config: Value,
        edge_config: Value,
        transport: &str,
    ) -> Self {
        let mut allowed = json!({"id": EDGE_ID, "secret": EDGE_SECRET});
        merge(&mut allowed, &edge_fields);
        Self::launch_configured(None, json!([allowed]), hub_config, edge_config, transport).await
    }

    /// A hub and an edge (tunnel over `transport`), both with their open-file limit at
    /// `nofile`; the hub allows `edges` (a list whose first entry is [`EDGE_ID`]).
    pub async fn start_with_nofile(
        nofile: u64,
        edges: Value,
        hub_config: Value,
        transport: &str,
    ) -> Self {
        Self::launch_configured(Some(nofile), edges, hub_config, json!({}), transport).await
    }

    async fn launch_configured(
        nofile: Option<u64>,
        edges: Value,
        hub_config: Value,
        edge_config: Value,
        transport: &str,
    ) -> Self {
        let mut hub = Managed::spawn_configured(&[], nofile, false).await;
        let (tunnel_port, fingerprint) = start_hub(&mut hub, hub_config).await;
        hub.ok("updateAllowedEdges", Some(json!({"edges": edges})))
            .await;
        let mut edge = Managed::spawn_configured(&[], nofile, false).await;
        let mut params = edge_start(tunnel_port, Some(&fingerprint));
        params["config"]["transportMode"] = json!(transport);
        merge(&mut params["config"], &edge_config);
        edge.ok("start", Some(params)).await;
        let connected = edge.event("tunnelConnected").await;
        let expected = if transport == "tcpTls" {
            "tcpTls"
        } else {
            "quic"
        };
        assert_eq!(connected["transport"], expected, "{connected}");
        hub.event("edgeConnected").await;
        Self {
            hub,
            edge,
            tunnel_port,
            fingerprint,
        }
    }

    /// Waits until the edge reports UDP `port` as listening.
    pub async fn wait_listening_udp(&mut self, port: u16) {
        status_until(&mut self.edge, "UDP port listening", DEADLINE, |s| {
            s["listenPortsUdp"]
                .as_array()
                .is_some_and(|ports| ports.iter().any(|p| p == port))
        })
        .await;
    }

    /// Replaces the hub's allowed edges with [`EDGE_ID`] and `edge_fields` (as
    /// [`Pair::start_with`] gives them).
    pub async fn update_test_edge(&mut self, edge_fields: &Value) {
        let mut allowed = json!({"id": EDGE_ID, "secret": EDGE_SECRET});
        merge(&mut allowed, edge_fields);
        self.hub
            .ok("updateAllowedEdges", Some(json!({"edges": [allowed]})))
            .await;
    }

    /// Waits until the edge reports `port` as listening.
    pub async fn wait_listening(&mut self, port: u16) {
        let edge = &mut self.edge;
        for _ in 0..250 {
            let status = edge.ok("getStatus", None).await;
            if status["listenPorts"]
                .as_array()
                .is_some_and(|ports| ports.iter().any(|p| p == port))
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("edge never listened on {port}");
    }
}

/// Sets every field of the object `extra` on the object `into`.
fn merge(into: &mut Value, extra: &Value) {
    for (key, value) in extra.as_object().expect("an object of fields") {
        into[key] = value.clone();
    }
}

/// Starts a hub on an OS-chosen tunnel port; returns the port and certificate fingerprint.
pub async fn start_hub(hub: &mut Managed, mut config: Value) -> (u16, String) {
    if config.get("tunnelPort").is_none() {
        config["tunnelPort"] = json!(0);
    }
    let status = hub
        .ok("start", Some(json!({"role": "hub", "config": config})))
        .await;
    let port = status["tunnelPort"].as_u64().expect("tunnelPort") as u16;
    let fingerprint = status["certSha256"]
        .as_str()
        .expect("certSha256")
        .to_owned();
    (port, fingerprint)
}

/// Starts `hub` on an OS-chosen tunnel port allowing [`EDGE_ID`] (no ports); returns the port.
pub async fn start_hub_allowing_test_edge(hub: &mut Managed) -> u16 {
    let (port, _) = start_hub(hub, json!({})).await;
    hub.ok(
        "updateAllowedEdges",
        Some(json!({"edges": [{"id": EDGE_ID, "secret": EDGE_SECRET}]})),
    )
    .await;
    port
}

/// Waits for the hub's `edgeAuthFailed` for [`EDGE_ID`] with a wrong secret.
pub async fn assert_wrong_secret(hub: &mut Managed) {
    let event = hub.event("edgeAuthFailed").await;
    assert!(
        event["reason"]
            .as_str()
            .unwrap()
            .starts_with("wrong secret"),
        "{event}"
    );
    assert_eq!(event["edgeId"], EDGE_ID);
}

/// Polls `who`'s status every 20 ms until `check` holds; panics with `what` and the last status
/// after `deadline`.
pub async fn status_until(
    who: &mut Managed,
    what: &str,
    deadline: Duration,
    check: impl Fn(&Value) -> bool,
) -> Value {
    let end = tokio::time::Instant::now() + deadline;
    loop {
        let status = who.ok("getStatus", None).await;
        if check(&status) {
            return status;
        }
        assert!(tokio::time::Instant::now() < end, "{what}: {status}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Polls an edge's status (bounded) until it reports an error while not connected; returns it.
pub async fn wait_edge_error(edge: &mut Managed) -> Value {
    let end = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let status = edge.ok("getStatus", None).await;
        if status["lastError"].is_string() && status["connected"] == false {
            return status;
        }
        assert!(tokio::time::Instant::now() < end, "no error: {status}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// `start` params of an edge bound to [`EDGE_ADDR`].
pub fn edge_start(tunnel_port: u16, fingerprint: Option<&str>) -> Value {
    let mut config = json!({
        "hubHost": "127.0.0.1", "hubPort": tunnel_port, "edgeId": EDGE_ID,
        "secret": EDGE_SECRET, "bindAddress": EDGE_ADDR, "transportMode": "tcpTls",
        // Tests talk to loopback only: no STUN to public servers.
        "stunServers": [],
    });
    if let Some(fingerprint) = fingerprint {
        config["hubCertSha256"] = json!(fingerprint);
    }
    json!({"role": "edge", "config": config})
}

/// A new, empty directory for one test, under the system's temporary directory.
pub fn temp_dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "ri-{name}-{}-{:x}",
        std::process::id(),
        rand::random::<u32>()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A token from the real binary's `token encode` (hub 127.0.0.1:`hub_port`, no pin).
pub fn encode_token(hub_port: u16, edge_id: &str, secret: &str) -> String {
    let output = std::process::Command::new(binary())
        .args(["token", "encode", "--hub-host", "127.0.0.1"])
        .args(["--hub-port", &hub_port.to_string()])
        .args(["--edge-id", edge_id, "--secret", secret])
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    String::from_utf8(output.stdout).unwrap().trim().to_owned()
}

/// The fields of a token, from the real binary's `token decode`.
pub fn decode_token(token: &str) -> Value {
    let output = std::process::Command::new(binary())
        .args(["token", "decode", token.trim()])
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    serde_json::from_slice(&output.stdout).unwrap()
}
