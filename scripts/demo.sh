#!/usr/bin/env bash
# The main job on loopback: a sample target, a hub and an edge (bound to 127.0.0.2), a token with
# the hub's pinned certificate, and real connections through the tunnel showing the client
# address the target saw. Everything started here is stopped by PID on exit.
set -euo pipefail
cd "$(dirname "$0")/.."

command -v python3 >/dev/null || { echo "demo: python3 is needed for the sample target and client" >&2; exit 1; }

source scripts/lib.sh

echo "==> building remoteingress-bin"
cargo_build remoteingress-bin
BIN="$BUILD_DIR/remoteingress-bin"

PORT="$(free_port 127.0.0.2)"
TUNNEL_PORT="$(free_port)"
EDGE_ID="demo-edge"
SECRET="$(python3 -c 'import secrets; print(secrets.token_urlsafe(24))')"

echo "==> target: a sample service on 127.0.0.1:$PORT that prints the PROXY header it receives"
python3 tests/tools/proxy_target.py --port "$PORT" > "$WORK/target.log" 2>&1 &
PIDS+=($!)
wait_for "$WORK/target.log" listening 10

echo "==> hub: tunnel port $TUNNEL_PORT, forwarding to 127.0.0.1, edge '$EDGE_ID' gets public port $PORT"
printf '[{"id":"%s","secret":"%s","listenPorts":[%s]}]\n' "$EDGE_ID" "$SECRET" "$PORT" > "$WORK/edges.json"
# The hub keeps its identity in a state directory (here the demo's own, not the system default).
REMOTEINGRESS_LOG=info "$BIN" hub --tunnel-port "$TUNNEL_PORT" --edges "$WORK/edges.json" \
  --state-dir "$WORK/state" --json > "$WORK/hub.events" 2> "$WORK/hub.log" &
PIDS+=($!)
wait_for "$WORK/hub.events" '"event":"started"' 10
FINGERPRINT="$(head -1 "$WORK/hub.events" | python3 -c 'import json,sys; print(json.load(sys.stdin)["data"]["certSha256"])')"
echo "    hub certificate SHA-256: $FINGERPRINT"

# The hub's side hands out the token: the edge's secret from the edges file, the fingerprint
# from the state directory.
TOKEN="$("$BIN" token issue --state-dir "$WORK/state" --edges "$WORK/edges.json" \
  --edge-id "$EDGE_ID" --hub-host 127.0.0.1 --hub-port "$TUNNEL_PORT")"
echo "==> edge: connection token ${TOKEN:0:32}... (pins the hub certificate); public side on 127.0.0.2"
"$BIN" edge --token "$TOKEN" --bind-address 127.0.0.2 --transport-mode tcpTls --no-stun --json \
  > "$WORK/edge.events" 2> "$WORK/edge.log" &
PIDS+=($!)
wait_for "$WORK/edge.events" portsAssigned 20
echo "    edge events: $(tr '\n' ' ' < "$WORK/edge.events")"

for source in 127.0.0.1 127.0.0.3; do
  echo "==> client at $source connects to the edge at 127.0.0.2:$PORT"
  python3 - "$source" "$PORT" <<'PY'
import socket, sys
source, port = sys.argv[1], int(sys.argv[2])
with socket.create_connection(("127.0.0.2", port), timeout=10, source_address=(source, 0)) as s:
    s.sendall(b"hello through the tunnel\n")
    s.shutdown(socket.SHUT_WR)
    data = b""
    while chunk := s.recv(65536):
        data += chunk
for line in data.decode().splitlines():
    print("    answer:", line)
PY
done

wait_for "$WORK/hub.events" streamClosed 10
echo "==> hub events"
sed 's/^/    /' "$WORK/hub.events"
echo "==> done: the target saw each client's own address through the tunnel"
