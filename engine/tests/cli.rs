//! The command line of the real binary: schema, token encode/decode, usage errors.

use std::process::{Command, Output};

/// The binary under test; `REMOTEINGRESS_TEST_BINARY` runs these tests against another build
/// (to show that a test fails without its change).
fn bin() -> Command {
    let binary = std::env::var("REMOTEINGRESS_TEST_BINARY")
        .unwrap_or_else(|_| env!("CARGO_BIN_EXE_remoteingress-bin").to_owned());
    let mut command = Command::new(binary);
    // Tests must not pick up an operator's environment.
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("REMOTEINGRESS_") {
            command.env_remove(key);
        }
    }
    command
}

fn run(args: &[&str]) -> Output {
    bin().args(args).output().expect("run binary")
}

/// Runs the binary for at most 20 s (a command that should fail at once may instead start a
/// daemon, e.g. an older build): killed by its PID at the deadline.
fn run_bounded(args: &[&str]) -> Output {
    use std::process::Stdio;
    let mut child = bin()
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run binary");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while child.try_wait().expect("wait").is_none() {
        if std::time::Instant::now() > deadline {
            child.kill().ok();
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    child.wait_with_output().expect("output")
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn schema_command_prints_the_committed_schema() {
    let output = run(&["schema"]);
    assert!(output.status.success());
    let committed = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../ipc-schema/remoteingress-ipc.schema.json"
    ))
    .unwrap();
    assert_eq!(
        stdout(&output),
        committed,
        "run REMOTEINGRESS_UPDATE_SCHEMA=1 cargo test -p remoteingress-ipc-schema"
    );
}

#[test]
fn token_encode_then_decode_round_trips() {
    let fingerprint = "AB".repeat(32);
    let output = run(&[
        "token",
        "encode",
        "--hub-host",
        "hub.example.com",
        "--hub-port",
        "9443",
        "--edge-id",
        "edge-fra-01",
        "--secret",
        "s3cret-0123456789",
        "--cert-sha256",
        &fingerprint,
    ]);
    assert!(output.status.success(), "{}", stderr(&output));
    let token = stdout(&output).trim().to_owned();
    assert!(!token.contains('=') && !token.contains('+') && !token.contains('/'));

    let output = run(&["token", "decode", &token]);
    assert!(output.status.success(), "{}", stderr(&output));
    let decoded: serde_json::Value = serde_json::from_str(&stdout(&output)).unwrap();
    assert_eq!(
        decoded,
        serde_json::json!({
            "hubHost": "hub.example.com", "hubPort": 9443, "edgeId": "edge-fra-01",
            "secret": "s3cret-0123456789", "hubCertSha256": "ab".repeat(32)
        })
    );
}

#[test]
fn token_known_vector_matches_the_documented_format() {
    let output = run(&[
        "token",
        "encode",
        "--hub-host",
        "hub.example.com",
        "--hub-port",
        "8443",
        "--edge-id",
        "edge-1",
        "--secret",
        "correct-horse-battery",
    ]);
    assert!(output.status.success());
    use base64::Engine;
    let json = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(stdout(&output).trim())
        .unwrap();
    assert_eq!(
        String::from_utf8(json).unwrap(),
        r#"{"h":"hub.example.com","p":8443,"e":"edge-1","s":"correct-horse-battery"}"#
    );
}

#[test]
fn malformed_tokens_are_refused_with_a_clear_message_and_exit_64() {
    use base64::Engine;
    let b64 = |text: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(text);
    let cases = [
        ("!!!not-base64!!!".to_owned(), "base64"),
        (b64("not json"), "JSON"),
        (b64(r#"{"h":"hub","p":8443,"e":"edge"}"#), "secret"),
        (b64(r#"{"h":"hub","p":0,"e":"edge","s":"x"}"#), "port"),
        (b64(r#"{"h":"hub","p":70000,"e":"edge","s":"x"}"#), "port"),
        (b64(r#"{"h":"hub","p":8443,"e":"","s":"x"}"#), "edge id"),
        (b64(r#"{"h":"hub","p":8443,"e":"edge","s":""}"#), "secret"),
        (
            b64(r#"{"h":"hub","p":8443,"e":"edge","s":"fifteen-bytes.."}"#),
            "secret new",
        ),
    ];
    for (token, expected) in cases {
        let output = run(&["token", "decode", &token]);
        assert_eq!(output.status.code(), Some(64), "{token}");
        let message = stderr(&output);
        assert!(
            message.to_lowercase().contains(&expected.to_lowercase()),
            "{token}: {message}"
        );
        assert!(stdout(&output).is_empty());
    }
    let output = run(&[
        "token",
        "encode",
        "--hub-host",
        "h",
        "--edge-id",
        "bad id",
        "--secret",
        "s",
    ]);
    assert_eq!(output.status.code(), Some(64));
    assert!(stderr(&output).contains("edge id"));
}

#[test]
fn help_explains_the_environment_variables() {
    let output = run(&["hub", "--help"]);
    assert!(output.status.success());
    let help = stdout(&output);
    for needle in [
        "REMOTEINGRESS_TUNNEL_PORT",
        "REMOTEINGRESS_TARGET_HOST",
        "REMOTEINGRESS_ALLOWED_EDGES_JSON",
        "REMOTEINGRESS_PERFORMANCE_JSON",
        "REMOTEINGRESS_STREAM_EVENT_MODE",
        "--edges",
    ] {
        assert!(help.contains(needle), "hub --help lacks {needle}");
    }
    let help = stdout(&run(&["edge", "--help"]));
    for needle in [
        "REMOTEINGRESS_TOKEN",
        "REMOTEINGRESS_HUB_HOST",
        "REMOTEINGRESS_HUB_PORT",
        "REMOTEINGRESS_EDGE_ID",
        "REMOTEINGRESS_SECRET",
    ] {
        assert!(help.contains(needle), "edge --help lacks {needle}");
    }
}

/// `--help` names the variables but never prints a secret-bearing variable's value (clap shows
/// `[env: NAME=value]` unless `hide_env_values`).
#[test]
fn help_never_prints_secret_values_from_the_environment() {
    let marker = "MARKER-7f3a9c";
    let edges = format!(r#"[{{"id":"a","secret":"{marker}-edges-json"}}]"#);
    let hub = bin()
        .args(["hub", "--help"])
        .env("REMOTEINGRESS_ALLOWED_EDGES_JSON", &edges)
        .output()
        .unwrap();
    assert!(hub.status.success());
    assert!(stdout(&hub).contains("REMOTEINGRESS_ALLOWED_EDGES_JSON"));
    let edge = bin()
        .args(["edge", "--help"])
        .env("REMOTEINGRESS_SECRET", format!("{marker}-secret"))
        .env("REMOTEINGRESS_TOKEN", format!("{marker}-token"))
        .output()
        .unwrap();
    assert!(edge.status.success());
    for output in [&hub, &edge] {
        let text = stdout(output) + &stderr(output);
        assert!(!text.contains(marker), "help printed a secret: {text}");
    }
}

#[test]
fn usage_errors_exit_64() {
    let output = bin().env("REMOTEINGRESS_MODE", "proxy").output().unwrap();
    assert_eq!(output.status.code(), Some(64));
    assert!(stderr(&output).contains("REMOTEINGRESS_MODE"));

    let output = run(&[]);
    assert_eq!(output.status.code(), Some(64));

    let dir = std::env::temp_dir().join(format!("ri-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let edges = dir.join("edges.json");
    std::fs::write(&edges, r#"[{"id":"a","secret":"s","listenPort":[80]}]"#).unwrap();
    let output = run(&[
        "hub",
        "--tunnel-port",
        "0",
        "--edges",
        edges.to_str().unwrap(),
    ]);
    assert_eq!(output.status.code(), Some(64), "{}", stderr(&output));
    assert!(
        stderr(&output).contains("listenPort"),
        "{}",
        stderr(&output)
    );

    let output = bin()
        .args(["edge"])
        .env("REMOTEINGRESS_HUB_HOST", "h")
        .env("REMOTEINGRESS_EDGE_ID", "has space")
        .env("REMOTEINGRESS_SECRET", "s")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(64));
    assert!(stderr(&output).contains("edgeId"), "{}", stderr(&output));
    std::fs::remove_dir_all(dir).ok();
}

/// Secrets under 16 bytes are refused wherever they enter (edge flags, hub edges file, token),
/// each time saying how to make one; `secret new` makes one.
#[test]
fn short_secrets_are_refused_and_secret_new_makes_strong_ones() {
    let made: Vec<String> = (0..2)
        .map(|_| {
            let output = run(&["secret", "new"]);
            assert!(output.status.success(), "{}", stderr(&output));
            stdout(&output).trim().to_owned()
        })
        .collect();
    for secret in &made {
        assert_eq!(secret.len(), 43, "{secret}");
        assert!(
            secret
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'),
            "{secret}"
        );
    }
    assert_ne!(made[0], made[1]);

    let weak = "fifteen-bytes..";
    let refused = |output: Output, what: &str| {
        assert_eq!(
            output.status.code(),
            Some(64),
            "{what}: {}",
            stderr(&output)
        );
        let message = stderr(&output);
        assert!(
            message.contains("shorter than 16 bytes") && message.contains("secret new"),
            "{what}: {message}"
        );
        assert!(
            !message.contains(weak),
            "{what} quoted the secret: {message}"
        );
    };
    refused(
        run(&[
            "edge",
            "--hub-host",
            "h",
            "--edge-id",
            "e",
            "--secret",
            weak,
        ]),
        "edge --secret",
    );
    let encode = |secret: &str| {
        run(&[
            "token",
            "encode",
            "--hub-host",
            "h",
            "--edge-id",
            "e",
            "--secret",
            secret,
        ])
    };
    refused(encode(weak), "token encode");
    let dir = std::env::temp_dir().join(format!("ri-cli-weak-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let edges = dir.join("edges.json");
    std::fs::write(&edges, format!(r#"[{{"id":"a","secret":"{weak}"}}]"#)).unwrap();
    refused(
        run(&[
            "hub",
            "--tunnel-port",
            "0",
            "--edges",
            edges.to_str().unwrap(),
        ]),
        "hub --edges",
    );
    // The made secret itself is accepted, and so is one that starts with '-' (base64url makes
    // one in 64; it once was taken for a flag).
    let output = encode(&made[0]);
    assert!(output.status.success(), "{}", stderr(&output));
    let output = encode("-BpQ7yJk2mZr4Xv9LwTn3Hc");
    assert!(output.status.success(), "{}", stderr(&output));
    std::fs::remove_dir_all(dir).ok();
}

/// Words of `text` that are flags (`--name`) or variables (`REMOTEINGRESS_NAME`).
fn flags_and_variables(text: &str) -> std::collections::BTreeSet<String> {
    text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '-' || c == '_'))
        .filter(|word| {
            (word.starts_with("--") && word.len() > 2) || word.starts_with("REMOTEINGRESS_")
        })
        .map(str::to_owned)
        .collect()
}

/// The subcommands `help` lists under "Commands:" (without `help` itself).
fn subcommands(help: &str) -> Vec<String> {
    help.lines()
        .skip_while(|line| !line.starts_with("Commands:"))
        .skip(1)
        .take_while(|line| line.starts_with("  "))
        .filter_map(|line| line.split_whitespace().next())
        .filter(|name| *name != "help")
        .map(str::to_owned)
        .collect()
}

/// README.md names every flag and variable of every `--help`, the subcommands' included (they
/// are found in the help, so a new subcommand is covered without touching this test).
#[test]
fn the_readme_names_every_flag_and_variable_of_the_help() {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md"))
        .expect("README.md");
    let documented = flags_and_variables(&readme);
    let mut commands: Vec<Vec<String>> = vec![vec![]];
    let mut seen = Vec::new();
    while let Some(path) = commands.pop() {
        let mut args = path.clone();
        args.push("--help".to_owned());
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let help = stdout(&run(&args));
        for sub in subcommands(&help) {
            let mut deeper = path.clone();
            deeper.push(sub);
            commands.push(deeper);
        }
        let missing: Vec<_> = flags_and_variables(&help)
            .into_iter()
            .filter(|name| name != "--help" && !documented.contains(name))
            .collect();
        assert!(
            missing.is_empty(),
            "README.md does not name {missing:?} from `{}`",
            args.join(" ")
        );
        if let Some(name) = path.first() {
            assert!(
                readme.contains(&format!("remoteingress-bin {name}"))
                    || readme.contains(&format!("`{name}`")),
                "README.md does not mention the subcommand {name}"
            );
        }
        seen.push(path.join(" "));
    }
    for expected in [
        "hub",
        "edge",
        "check",
        "completions",
        "status",
        "token issue",
        "secret new",
    ] {
        assert!(
            seen.iter().any(|s| s == expected),
            "{expected} not reached: {seen:?}"
        );
    }
}

/// A scratch directory for one test, removed by the caller.
fn scratch(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("ri-cli-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

const HUB_TOML: &str = "[hub]\ntunnelPort = 9443\n\n[[edges]]\nid = \"a\"\nsecret = \"s3cret-0123456789abc\"\nlistenPorts = [80]\n";
const EDGE_TOML: &str =
    "[edge]\nhubHost = \"hub.example.com\"\nedgeId = \"e\"\nsecret = \"s3cret-0123456789abc\"\n";

#[test]
fn version_names_the_commit() {
    let output = run(&["--version"]);
    assert!(output.status.success());
    let text = stdout(&output);
    let commit = text
        .split("(commit ")
        .nth(1)
        .and_then(|rest| rest.split(')').next())
        .unwrap_or_else(|| panic!("no commit in {text:?}"));
    assert!(
        commit == "unknown" || (commit.len() >= 7 && commit.chars().all(|c| c.is_ascii_hexdigit())),
        "{text}"
    );
    assert!(text.contains(env!("CARGO_PKG_VERSION")), "{text}");
}

#[test]
fn completions_are_printed_for_bash_zsh_and_fish() {
    for shell in ["bash", "zsh", "fish"] {
        let output = run(&["completions", shell]);
        assert!(output.status.success(), "{shell}: {}", stderr(&output));
        let script = stdout(&output);
        for word in ["remoteingress-bin", "check", "tunnel-bind", "token"] {
            assert!(script.contains(word), "{shell} completion lacks {word}");
        }
    }
    let output = run(&["completions", "tcsh"]);
    assert_eq!(output.status.code(), Some(64));
}

/// Every variable the binary reads (the constants of `cli::env_vars`) is listed in `--help`.
#[test]
fn help_lists_every_environment_variable() {
    let source = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/src/cli.rs"))
        .expect("cli.rs");
    let module = source
        .split("pub mod env_vars {")
        .nth(1)
        .and_then(|rest| rest.split('}').next())
        .expect("cli::env_vars");
    let declared: Vec<&str> = module
        .split('"')
        .filter(|word| {
            word.starts_with("REMOTEINGRESS_")
                && word[14..]
                    .chars()
                    .all(|c| c.is_ascii_uppercase() || c == '_' || c.is_ascii_digit())
        })
        .collect();
    assert!(declared.len() > 25, "{declared:?}");
    let help = stdout(&run(&["--help"]));
    let missing: Vec<_> = declared
        .iter()
        .filter(|name| !help.contains(&format!("  {name} ")))
        .collect();
    assert!(
        missing.is_empty(),
        "--help does not list {missing:?}:\n{help}"
    );
}

/// `check` validates hub files, edge files and edges files without starting anything: exit 0
/// when valid, 64 with the message (file, line, field) the daemon would give.
#[test]
fn check_validates_without_starting() {
    let dir = scratch("check");
    let write = |name: &str, text: &str| {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path.to_str().unwrap().to_owned()
    };
    let hub = write("hub.toml", HUB_TOML);
    let output = run(&["check", "--config", &hub]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(
        stdout(&output).contains("1 allowed edges"),
        "{}",
        stdout(&output)
    );

    let edge = write("edge.toml", EDGE_TOML);
    let output = run(&["check", "--config", &edge]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(stdout(&output).contains("edge e of hub hub.example.com:8443"));

    // A semantic mistake in the edges: the file, the line and the field.
    let bad = write(
        "bad.toml",
        &format!("{HUB_TOML}\n[[edges]]\nid = \"b\"\nsecret = \"s3cret-0123456789abc\"\nlistenPorts = [81,\n  81]\n"),
    );
    let output = run(&["check", "--config", &bad]);
    assert_eq!(output.status.code(), Some(64));
    assert!(
        stderr(&output).contains(&format!(
            "{bad}:12: edges[1].listenPorts: port 81 is listed more than once"
        )),
        "{}",
        stderr(&output)
    );
    // The hub says the same, before it listens.
    let output = run_bounded(&["hub", "--config", &bad, "--tunnel-port", "0"]);
    assert_eq!(output.status.code(), Some(64));
    let said = stderr(&output);
    assert!(
        said.contains(&format!("{bad}:12: edges[1].listenPorts")),
        "{said}"
    );
    assert!(
        !said.contains("hub listening"),
        "the hub listened first: {said}"
    );

    // The [hub] settings and the edge's are checked as the daemons check them.
    let output = run(&[
        "check",
        "--config",
        &write("port.toml", "[hub]\nmetricsAddr = \"nope\"\n"),
    ]);
    assert_eq!(output.status.code(), Some(64));
    assert!(
        stderr(&output).contains("config.metricsAddr"),
        "{}",
        stderr(&output)
    );
    let output = run(&[
        "check",
        "--config",
        &write("e2.toml", "[edge]\nhubHost = \"h\"\n"),
    ]);
    assert_eq!(output.status.code(), Some(64));
    assert!(
        stderr(&output).contains("config.edgeId"),
        "{}",
        stderr(&output)
    );

    // An edges file, named by the variable the hub's unit sets, as ExecReload runs it.
    let edges = write(
        "edges.json",
        "[\n  {\"id\":\"a\",\"secret\":\"s3cret-0123456789abc\"},\n  {\"id\":\"b\",\n   \"secret\":\"short\"}\n]\n",
    );
    let output = bin()
        .arg("check")
        .env("REMOTEINGRESS_EDGES_FILE", &edges)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(64));
    assert!(
        stderr(&output).contains(&format!("{edges}:4: edges[1].secret")),
        "{}",
        stderr(&output)
    );
    let edges = write(
        "good.json",
        r#"[{"id":"a","secret":"s3cret-0123456789abc"}]"#,
    );
    let output = bin()
        .arg("check")
        .env("REMOTEINGRESS_EDGES_FILE", &edges)
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", stderr(&output));
    let output = bin()
        .arg("check")
        .env("REMOTEINGRESS_CONFIG", &hub)
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", stderr(&output));

    // Nothing to check, or a file for no role.
    assert_eq!(run(&["check"]).status.code(), Some(64));
    let output = run(&["check", "--config", &write("empty.toml", "")]);
    assert_eq!(output.status.code(), Some(64));
    assert!(
        stderr(&output).contains("nothing to check"),
        "{}",
        stderr(&output)
    );
    std::fs::remove_dir_all(dir).ok();
}

/// A hub given an edge's file (or an edge a hub's) refuses it instead of running on defaults.
#[test]
fn a_file_for_the_other_role_is_refused() {
    let dir = scratch("roles");
    let hub = dir.join("hub.toml");
    let edge = dir.join("edge.toml");
    std::fs::write(&hub, HUB_TOML).unwrap();
    std::fs::write(&edge, EDGE_TOML).unwrap();
    let output = run_bounded(&[
        "hub",
        "--config",
        edge.to_str().unwrap(),
        "--tunnel-port",
        "0",
    ]);
    assert_eq!(output.status.code(), Some(64), "{}", stderr(&output));
    assert!(
        stderr(&output).contains("is an edge's configuration"),
        "{}",
        stderr(&output)
    );
    let output = run_bounded(&["edge", "--config", hub.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(64), "{}", stderr(&output));
    assert!(
        stderr(&output).contains("is a hub's configuration"),
        "{}",
        stderr(&output)
    );
    std::fs::remove_dir_all(dir).ok();
}

/// `plan hub|edge` prints what the role would start with (the same flags, variables and files)
/// and starts nothing; its errors are the role's own, word for word, with exit 64.
#[test]
fn plan_prints_what_the_role_would_start_with() {
    let dir = scratch("plan");
    let hub = dir.join("hub.toml");
    std::fs::write(
        &hub,
        format!("{HUB_TOML}\n[[egress]]\nlistenAddr = \"127.0.0.1:2525\"\nedgeId = \"a\"\nlogicalHost = \"mx.example.com\"\nport = 25\n"),
    )
    .unwrap();
    let hub = hub.to_str().unwrap();
    let output = bin()
        .args(["plan", "hub", "--config", hub, "--tunnel-port", "9444"])
        .args(["--worker-threads", "3", "--json"])
        .env("REMOTEINGRESS_TARGET_HOST", "10.0.0.5")
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", stderr(&output));
    let plan: serde_json::Value = serde_json::from_str(&stdout(&output)).unwrap();
    assert_eq!(plan["role"], "hub");
    assert_eq!(
        plan["config"]["tunnelPort"], 9444,
        "the flag wins over the file"
    );
    assert_eq!(
        plan["config"]["targetHost"], "10.0.0.5",
        "the variable is read"
    );
    assert_eq!(plan["edges"][0]["secret"], "s3cret-0123456789abc");
    assert_eq!(plan["egress"][0]["listenAddr"], "127.0.0.1:2525");
    assert_eq!(plan["reload"], serde_json::json!({ "configFile": hub }));
    assert_eq!(
        (&plan["json"], &plan["logFormat"], &plan["workerThreads"]),
        (
            &serde_json::json!(true),
            &serde_json::json!("text"),
            &serde_json::json!(3)
        )
    );

    let output = run(&["plan", "edge", "--token-file", "/nonexistent/token"]);
    assert_eq!(output.status.code(), Some(64));
    let token = stdout(&run(&[
        "token",
        "encode",
        "--hub-host",
        "h",
        "--edge-id",
        "e",
        "--secret",
        "s3cret-0123456789abc",
    ]));
    let output = run(&["plan", "edge", "--token", token.trim(), "--no-stun"]);
    assert!(output.status.success(), "{}", stderr(&output));
    let plan: serde_json::Value = serde_json::from_str(&stdout(&output)).unwrap();
    assert_eq!(
        plan["config"],
        serde_json::json!({"token": token.trim(), "transportMode": "quicWithFallback", "stunServers": []})
    );

    // The role's error, word for word: a bad edge in the file, a missing edge id.
    let bad = dir.join("bad.toml");
    std::fs::write(
        &bad,
        format!("{HUB_TOML}\n[[edges]]\nid = \"b\"\nsecret = \"short\"\n"),
    )
    .unwrap();
    let bad = bad.to_str().unwrap();
    let last_line = |output: &Output| stderr(output).lines().last().unwrap_or("").to_owned();
    for (plan, role) in [
        (
            run(&["plan", "hub", "--config", bad, "--tunnel-port", "0"]),
            run_bounded(&["hub", "--config", bad, "--tunnel-port", "0"]),
        ),
        (
            run(&["plan", "edge", "--hub-host", "h"]),
            run_bounded(&["edge", "--hub-host", "h"]),
        ),
    ] {
        assert_eq!(plan.status.code(), Some(64), "{}", stderr(&plan));
        assert_eq!(role.status.code(), Some(64), "{}", stderr(&role));
        assert_eq!(last_line(&plan), last_line(&role));
        assert!(stdout(&plan).is_empty());
    }
    std::fs::remove_dir_all(dir).ok();
}
