#!/usr/bin/env bash
# Runs every check and test suite. This is the README's test command and what CI runs.
set -euo pipefail
cd "$(dirname "$0")/.."

# Each step's wall time, printed as it ends and as a table at the end (the CI budget is 25 min).
timings=()
step_name=""
step_started=$SECONDS
end_step() {
  if [[ -n "$step_name" ]]; then
    timings+=("$(printf '%5d s  %s' $((SECONDS - step_started)) "$step_name")")
  fi
}
step() {
  end_step
  step_name="$*"
  step_started=$SECONDS
  printf '\n==> %s\n' "$*"
}

step "setup"
./scripts/setup.sh

step "cargo fmt --check"
cargo fmt --all --check

step "layering: no import between the roles, none from shared code into a role"
python3 tests/tools/layers.py

step "cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings

step "cargo clippy with the fuzzing entry points (engine/src/fuzzing.rs)"
cargo clippy -p remoteingress --features fuzzing --locked -- -D warnings

step "cargo build"
cargo build --workspace --locked --bins

step "cargo test (unit, IPC conformance, CLI, schema drift)"
cargo test --workspace --locked

step "TypeScript wrapper: generated types match the IPC schema"
(cd ts-wrapper && npm run check:types)

step "TypeScript wrapper: tsc (strict) and node --test"
(cd ts-wrapper && npm run build && REMOTEINGRESS_BINARY="$PWD/../target/debug/remoteingress-bin" npm test)

step "IPC driven from a second language (python3)"
python3 tests/ipc/drive_from_python.py target/debug/remoteingress-bin

step "secrets never appear in any output (logs at debug, text and JSON, events, status, errors)"
python3 tests/ipc/secrets_never_shown.py

step "metrics, /status and health endpoints (Prometheus text and OpenMetrics parsers), the status subcommand"
python3 tests/metrics/scrape.py

step "JSON log lines are structured (event fields, nested status, wire enum names, default filter)"
python3 tests/logs/json_lines.py

step "TOML config files: start from files, SIGHUP reloads under a live transfer, invalid files refused"
python3 tests/config/toml_files.py

step "the install of docs/operations.md run literally as root (overlays, systemd-sysusers, systemd-analyze verify, units run as systemd runs them, Type=notify, reload)"
python3 tests/deploy/install.py

step "systemctl reload as the hub unit runs it: check first, a refused file fails the reload"
python3 tests/deploy/reload.py

step "HAProxy as the PROXY-protocol consumer (v1 and v2)"
python3 tests/haproxy/accept_proxy.py

step "a real sshd behind the hub: proxyProtocol none per port, the port left at v1 refused by sshd"
python3 tests/plain_targets/sshd.py

step "distinct client addresses through network namespaces"
python3 tests/netns/distinct_client_ips.py

step "quicWithFallback: UDP blocked by nftables, then unblocked; three migrations without refusals"
python3 tests/netns/quic_fallback.py

step "link between edge and hub cut for 5 s and 60 s (both transports, measured)"
python3 tests/netns/link_cut.py

step "packet loss on the link between edge and hub (nftables numgen drop, both transports, SHA-256 and UDP checked)"
python3 tests/netns/lossy_link.py

step "QUIC through a relay that reorders, drops and duplicates the tunnel's packets (SHA-256 and UDP checked)"
python3 tests/faults/reordering.py

step "a long fat path (emulated 200 ms, 400 Mbit/s): tcpTls receive windows grow beyond 4 MiB"
python3 tests/netns/long_fat_path.py

step "edge firewall in the kernel: two namespaces, real tunnel, nft read back"
python3 tests/netns/edge_firewall.py

step "egress through a QUIC edge under its policy (namespaces, SMTP-like target, one-shot proxies, [[egress]] listeners from hub.toml with SIGHUP, startEgressTcpListener, TypeScript round trip)"
python3 tests/netns/egress.py

step "fuzzing: every decoder that reads untrusted input, 8 s per target from the committed seeds"
FUZZ_QUICK=1 FUZZ_SECONDS=8 ./scripts/fuzz.sh

step "chaos soak, 60 s: traffic on both transports and egress while hub, edges and target are killed and restarted, ports, secrets and firewall snapshots pushed"
SOAK_SECONDS=60 ./scripts/soak.sh

# Both on the debug build made above: an optimised build would add about 4 minutes.
step "demo (README's first command)"
REMOTEINGRESS_DEBUG_BUILD=1 ./scripts/demo.sh

step "benchmark smoke run (every figure produced, nothing lost; debug build)"
REMOTEINGRESS_DEBUG_BUILD=1 BENCH_QUICK=1 ./scripts/bench.sh

end_step
printf '\n==> all suites passed in %d s\n' "$SECONDS"
printf '%s\n' "${timings[@]}"
