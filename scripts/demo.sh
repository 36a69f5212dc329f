#!/usr/bin/env bash
# Demo of the main job on loopback: hub, edge and a sample target, one real connection through
# the tunnel, showing the client address the target saw.
set -euo pipefail
cd "$(dirname "$0")/.."
echo "The tunnel demo arrives with the TLS tunnel (issue: TLS tunnel with TCP forwarding)."
echo "Until then, here is the management protocol answering by hand:"
cargo build --release --quiet --bin remoteingress-bin
printf '%s\n' \
  '{"id":"1","method":"getStatus"}' \
  '{"id":"2","method":"start","params":{"role":"hub","config":{"tunnelPort":0}}}' \
  '{"id":"3","method":"getStatus"}' \
  | REMOTEINGRESS_LOG=warn target/release/remoteingress-bin --management
