#!/usr/bin/env bash
# Benchmarks, each next to a direct loopback figure measured in the same run:
#   TCP throughput (1 and 8 streams, upload and download) and UDP echo (512 B, 8 flows)
#   direct to the target, through a tcpTls tunnel, and through a quic tunnel.
# Prints a table and writes target/bench.json. BENCH_BYTES (per single stream, default 1 GiB)
# and BENCH_UDP_SECONDS (default 5) make it shorter; BENCH_QUICK=1 runs a smoke version.
set -euo pipefail
cd "$(dirname "$0")/.."

BYTES="${BENCH_BYTES:-1073741824}"
UDP_SECONDS="${BENCH_UDP_SECONDS:-5}"
if [[ "${BENCH_QUICK:-0}" == 1 ]]; then BYTES=67108864; UDP_SECONDS=1; fi

cargo build --release --quiet --bin remoteingress-bin --bin ri-loadgen
BIN="$PWD/target/release/remoteingress-bin"
LOADGEN="$PWD/target/release/ri-loadgen"
source scripts/lib.sh

PORT="$(free_port 127.0.0.2 127.0.0.3)"
TUNNEL_PORT="$(free_port)"
"$LOADGEN" serve --listen "127.0.0.1:$PORT" > "$WORK/tcp-target.log" 2>&1 & PIDS+=($!)
"$LOADGEN" udp-echo --listen "127.0.0.1:$PORT" > "$WORK/udp-target.log" 2>&1 & PIDS+=($!)
wait_for "$WORK/tcp-target.log" listening 10
wait_for "$WORK/udp-target.log" listening 10

printf '[{"id":"bench-tls","secret":"bench-secret","listenPorts":[%s],"listenPortsUdp":[%s]},{"id":"bench-quic","secret":"bench-secret","listenPorts":[%s],"listenPortsUdp":[%s]}]\n' \
  "$PORT" "$PORT" "$PORT" "$PORT" > "$WORK/edges.json"
REMOTEINGRESS_LOG=warn "$BIN" hub --tunnel-port "$TUNNEL_PORT" --edges "$WORK/edges.json" \
  --stream-event-mode off --json > "$WORK/hub.events" 2> "$WORK/hub.log" & PIDS+=($!)
for spec in "bench-tls 127.0.0.2 tcpTls" "bench-quic 127.0.0.3 quic"; do
  read -r id addr mode <<< "$spec"
  token="$("$BIN" token encode --hub-host 127.0.0.1 --hub-port "$TUNNEL_PORT" --edge-id "$id" --secret bench-secret)"
  REMOTEINGRESS_LOG=warn "$BIN" edge --token "$token" --bind-address "$addr" --transport-mode "$mode" \
    --no-stun --json > "$WORK/$id.events" 2> "$WORK/$id.log" & PIDS+=($!)
done
wait_for "$WORK/bench-tls.events" portsAssigned 20
wait_for "$WORK/bench-quic.events" portsAssigned 20

RESULTS="$WORK/results.jsonl"
measure() { # path addr name args...
  local path="$1" addr="$2" name="$3"; shift 3
  local line
  line="$("$LOADGEN" "$@" --addr "$addr:$PORT")"
  printf '{"path":"%s","test":"%s","result":%s}\n' "$path" "$name" "$line" >> "$RESULTS"
}
for spec in "direct 127.0.0.1" "tcpTls 127.0.0.2" "quic 127.0.0.3"; do
  read -r path addr <<< "$spec"
  echo "bench: $path" >&2
  measure "$path" "$addr" "tcp 1 stream up" tcp --streams 1 --bytes "$BYTES" --direction up
  measure "$path" "$addr" "tcp 1 stream down" tcp --streams 1 --bytes "$BYTES" --direction down
  measure "$path" "$addr" "tcp 8 streams up" tcp --streams 8 --bytes $((BYTES / 8)) --direction up
  measure "$path" "$addr" "tcp 8 streams down" tcp --streams 8 --bytes $((BYTES / 8)) --direction down
  measure "$path" "$addr" "udp 512B x8 flows" udp --flows 8 --size 512 --window 16 --seconds "$UDP_SECONDS"
done

mkdir -p target
python3 - "$RESULTS" target/bench.json <<'PY'
import json, os, platform, sys
rows = [json.loads(line) for line in open(sys.argv[1])]
direct = {r["test"]: r["result"] for r in rows if r["path"] == "direct"}
def figure(r):
    return r["gbps"] if r["kind"] == "tcp" else r["pps"]
print(f"{'test':<22}{'path':<8}{'figure':>16}{'vs direct':>11}{'p99 (us)':>11}{'loss':>8}")
for r in rows:
    res = r["result"]; base = direct[r["test"]]
    value = figure(res); ratio = value / figure(base) if figure(base) else 0
    unit = "Gbit/s" if res["kind"] == "tcp" else "pkt/s"
    extra = f"{res['p99_us']:>11.0f}{res['loss']*100:>7.2f}%" if res["kind"] == "udp" else ""
    print(f"{r['test']:<22}{r['path']:<8}{value:>10.2f} {unit:<6}{ratio:>10.0%}{extra}")
machine = {"nproc": os.cpu_count(), "kernel": platform.release(), "cpu": next((l.split(":")[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")}
json.dump({"machine": machine, "results": rows}, open(sys.argv[2], "w"), indent=2)
print(f"machine: {machine['nproc']} cores, {machine['cpu']}, kernel {machine['kernel']}; JSON: {sys.argv[2]}")
PY
