//! Test harness: drive the real `remoteingress-bin --management` as a child process.
//!
//! Every wait has a deadline; nothing sleeps to synchronise. The child is killed on drop.
#![allow(dead_code, unreachable_pub)]

use std::collections::VecDeque;
use std::process::Stdio;
use std::time::Duration;

use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, Command};
use tokio::sync::mpsc;

/// Default deadline for one expected line.
pub const DEADLINE: Duration = Duration::from_secs(10);

pub fn binary() -> &'static str {
    env!("CARGO_BIN_EXE_remoteingress-bin")
}

/// A running `remoteingress-bin --management`.
pub struct Managed {
    pub child: Child,
    stdin: Option<ChildStdin>,
    lines: mpsc::Receiver<Value>,
    /// Lines read but not yet claimed by a wait.
    pending: VecDeque<Value>,
    next_id: u64,
}

impl Managed {
    /// Spawns the binary and waits for its `ready` event.
    pub async fn spawn() -> Self {
        Self::spawn_with_env(&[]).await
    }

    pub async fn spawn_with_env(env: &[(&str, &str)]) -> Self {
        let mut command = Command::new(binary());
        command
            .arg("--management")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true);
        for (key, value) in env {
            command.env(key, value);
        }
        let mut child = command.spawn().expect("spawn remoteingress-bin");
        let stdout = child.stdout.take().expect("stdout");
        let stdin = child.stdin.take();
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
