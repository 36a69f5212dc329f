#!/usr/bin/env bash
# Chaos soak (tests/soak/soak.py): TCP and UDP traffic through a tcpTls and a quic edge (each in
# its own network namespace) and egress through the quic edge, while hub, edges and target are
# killed (-9) and restarted at random and ports, secrets and firewall snapshots are pushed; every
# transfer verified by SHA-256, each snapshot read back with nft, leaks checked at the end. Root.
# SOAK_SECONDS (default 600), SOAK_WORKERS (default 8), SOAK_SEED (default: the clock; printed,
# so a run can be repeated). Uses the debug build unless REMOTEINGRESS_BINARY says otherwise.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --quiet --locked --bin remoteingress-bin
args=(--seconds "${SOAK_SECONDS:-600}" --workers "${SOAK_WORKERS:-8}")
if [[ -n "${SOAK_SEED:-}" ]]; then args+=(--seed "$SOAK_SEED"); fi
exec python3 tests/soak/soak.py "${args[@]}"
