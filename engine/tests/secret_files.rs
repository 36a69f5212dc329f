//! Files that hold secrets (edges file, a config file with edges, the edge's token file): the
//! binary warns, naming the file and its mode, when every local user can read one, and says
//! nothing at the documented mode (0640).

mod common;

use std::io::{BufRead, BufReader, Read};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};

const WARNING: &str = "every local user can read it";

/// Runs the binary with `args` until its first event line (`--json`), stops it with SIGTERM
/// and returns what it wrote to stderr.
fn stderr_until_started(args: &[&str]) -> String {
    let mut command = Command::new(common::binary());
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("REMOTEINGRESS_") {
            command.env_remove(key);
        }
    }
    let mut child = command
        .args(args)
        .arg("--json")
        .env("REMOTEINGRESS_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert!(line.contains("\"started\""), "{line}");
    // SAFETY: kill(2) on the PID of our own child, which has not been waited for yet.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    let _ = child.wait();
    stderr
}

fn chmod(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

#[test]
fn the_hub_warns_about_an_edges_file_or_config_file_everyone_can_read() {
    let dir = common::temp_dir("secret-files-hub");
    let state = dir.join("state");
    let edges = dir.join("edges.json");
    std::fs::write(
        &edges,
        r#"[{"id": "edge-a", "secret": "secret-a-0123456789", "listenPorts": [443]}]"#,
    )
    .unwrap();
    let config = dir.join("hub.toml");
    std::fs::write(
        &config,
        "[hub]\ntunnelPort = 0\n\n[[edges]]\nid = \"edge-a\"\nsecret = \"secret-a-0123456789\"\n",
    )
    .unwrap();
    let state = state.to_string_lossy().into_owned();
    let with_edges = [
        "hub",
        "--tunnel-port",
        "0",
        "--state-dir",
        &state,
        "--edges",
    ];
    let with_config = ["hub", "--state-dir", &state, "--config"];
    for (args, file) in [(&with_edges[..], &edges), (&with_config[..], &config)] {
        let path = file.to_string_lossy().into_owned();
        let run = |mode| {
            chmod(file, mode);
            stderr_until_started(&[args, &[path.as_str()]].concat())
        };
        let exposed = run(0o644);
        assert!(exposed.contains(WARNING), "{exposed}");
        assert!(
            exposed.contains(&path) && exposed.contains("0644"),
            "{exposed}"
        );
        let private = run(0o640);
        assert!(!private.contains(WARNING), "{private}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn the_edge_warns_about_a_token_file_everyone_can_read() {
    let dir = common::temp_dir("secret-files-edge");
    let token = Command::new(common::binary())
        .args([
            "token",
            "encode",
            "--hub-host",
            "127.0.0.1",
            "--hub-port",
            "9",
        ])
        .args(["--edge-id", "edge-a", "--secret", "secret-a-0123456789"])
        .output()
        .unwrap();
    let file = dir.join("edge.token");
    std::fs::write(&file, &token.stdout).unwrap();
    let path = file.to_string_lossy().into_owned();
    let args = ["edge", "--no-stun", "--token-file", path.as_str()];
    chmod(&file, 0o604);
    let exposed = stderr_until_started(&args);
    assert!(
        exposed.contains(WARNING) && exposed.contains(&path),
        "{exposed}"
    );
    chmod(&file, 0o640);
    let private = stderr_until_started(&args);
    assert!(!private.contains(WARNING), "{private}");
    let _ = std::fs::remove_dir_all(&dir);
}
