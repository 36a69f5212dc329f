#!/usr/bin/env bash
# Benchmarks, each next to a direct loopback figure measured in the same run, for three paths:
# direct to the target, through a tcpTls tunnel and through a quic tunnel (each tunnel its own
# hub and edge, so memory and CPU readings are per path), plus rathole's TLS transport as a peer
# row (`rathole-tls`) when it can be installed (once, into target/rathole):
#   idle      N idle connections held open (confirmed by a 1-byte round trip): edge+hub RSS per conn
#   tcp       throughput, 1 and 8 streams, upload and download; edge+hub CPU seconds per GB moved
#   udp       echo rate and p99, 512 B datagrams, 8 flows
#   rr        64 B request -> 64 B response over 1 and 64 persistent connections: req/s, p50/p99/p999
#   conn rate 32 workers: connect, one 64 B request, reply, close: conn/s, p99
#   mice      8 connections doing 64 B request/response, p99 alone and beside one saturating upload
#   wan       downloads (1 and 8 streams, timed) over an emulated WAN link between two network
#             namespaces (ri-loadgen delay-line: RTT, 1 Gbit/s cap, random loss), for direct,
#             tcpTls, quic and rathole-tls; one set of rows per profile in BENCH_WAN_PROFILES
#             ("RTT_MS:LOSS ...", default "20:0 80:0 20:0.001 80:0.001"; root only); each cell
#             runs BENCH_WAN_RUNS times (default 3; quick: 1) and shows the median and range
# Prints a table and writes target/bench.json; exits non-zero if a figure is missing or a TCP test
# saw an error. Knobs: BENCH_BYTES (per single stream, default 1 GiB), BENCH_SECONDS (per timed
# test, default 5), BENCH_IDLE_CONNS (default 10000), BENCH_ONLY (the groups to run, default
# "idle tcp udp rr connrate mice wan"), BENCH_RATHOLE=0 (no rathole row), BENCH_METRICS=1 (hub and
# edge serve /metrics, scraped every second during the run), BENCH_BASELINE_BIN=PATH (another
# remoteingress-bin, e.g. a build of an earlier commit: adds tcpTls-baseline and quic-baseline rows
# measured in the same run, for before/after comparisons). BENCH_PERF=DIR records a perf profile
# of each path's processes during its "tcp 1 stream up" (DIR/PATH.txt: top symbols, by DSO and
# symbol; needs perf). BENCH_QUICK=1 is a smoke run
# (64 MiB, 1 s, 1,500 idle connections: past the QUIC stream limit's first step; one WAN profile;
# no rathole). REMOTEINGRESS_DEBUG_BUILD=1 runs the debug build (a smoke run's figures are not
# performance figures anyway; ./scripts/test.sh does this).
set -euo pipefail
cd "$(dirname "$0")/.."

QUICK="${BENCH_QUICK:-0}"
BYTES="${BENCH_BYTES:-1073741824}"
SECS="${BENCH_SECONDS:-5}"
IDLE_CONNS="${BENCH_IDLE_CONNS:-10000}"
WAN_PROFILES="${BENCH_WAN_PROFILES:-20:0 80:0 20:0.001 80:0.001}"
WAN_RATE_MBIT="${BENCH_WAN_RATE_MBIT:-1000}"
WAN_SECS="${BENCH_WAN_SECONDS:-8}"
WAN_RUNS="${BENCH_WAN_RUNS:-3}"
WAN_WARMUP=2
if [[ "$QUICK" == 1 ]]; then
  BYTES=67108864; SECS=1; IDLE_CONNS=1500
  WAN_PROFILES="${BENCH_WAN_PROFILES:-20:0}"; WAN_SECS=2; WAN_WARMUP=1; WAN_RUNS="${BENCH_WAN_RUNS:-1}"
fi
ONLY="${BENCH_ONLY:-idle tcp udp rr connrate mice wan}"
# want GROUP: whether BENCH_ONLY selects the test group.
want() { [[ " $ONLY " == *" $1 "* ]]; }

# The load generator, the target, each edge and each hub hold one descriptor per idle connection;
# every process started below inherits this limit. All idle clients come from one address, and an
# edge lets one address hold half of what its limit leaves after a reserve of 1,024: the limit
# must be about twice the connections. Where it cannot be raised (a container's hard limit), the
# default count shrinks to fit and says so; an explicit BENCH_IDLE_CONNS that does not fit fails.
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
if [[ "$(ulimit -n)" != unlimited ]] && (($(ulimit -n) < 2 * IDLE_CONNS + 2048)); then
  fits=$((($(ulimit -n) - 2048) / 2 / 100 * 100))
  if [[ -n "${BENCH_IDLE_CONNS:-}" || "$fits" -lt 100 ]]; then
    echo "bench: $IDLE_CONNS idle connections need an open-file limit of $((2 * IDLE_CONNS + 2048))," \
      "but 'ulimit -n' is $(ulimit -n) and cannot be raised (hard limit $(ulimit -Hn))." \
      "Raise the hard limit (as root: ulimit -Hn 65536) or set BENCH_IDLE_CONNS lower." >&2
    exit 1
  fi
  echo "bench: 'ulimit -n' is $(ulimit -n) (hard limit): the idle test holds $fits connections" >&2
  IDLE_CONNS=$fits
fi

source scripts/lib.sh
cargo_build remoteingress-bin ri-loadgen
BIN="$BUILD_DIR/remoteingress-bin"
LOADGEN="$BUILD_DIR/ri-loadgen"
RATHOLE_ROOT="$PWD/target/rathole"

PORT="$(free_port 127.0.0.2 127.0.0.3 127.0.0.4 127.0.0.5 127.0.0.6)"
"$LOADGEN" serve --listen "127.0.0.1:$PORT" > "$WORK/tcp-target.log" 2>&1 & PIDS+=($!)
"$LOADGEN" udp-echo --listen "127.0.0.1:$PORT" > "$WORK/udp-target.log" 2>&1 & PIDS+=($!)
wait_for "$WORK/tcp-target.log" listening 10
wait_for "$WORK/udp-target.log" listening 10

declare -A ADDR=([direct]=127.0.0.1 [tcpTls]=127.0.0.2 [quic]=127.0.0.3 [rathole-tls]=127.0.0.4
  [tcpTls-baseline]=127.0.0.5 [quic-baseline]=127.0.0.6)
declare -A WATCHED=([direct]="") # path -> "name=pid ..." of the processes the path runs through

# Where the processes of a path run. Loopback rows: all here. WAN rows: the hub (and rathole's
# client) and the target in HUB_NS, the edge (and rathole's server) and the load generator in
# EDGE_NS, HUB_HOST / EDGE_HOST their addresses on the emulated link; logs under LOGS.
HUB_NS="" EDGE_NS="" HUB_HOST=127.0.0.1 EDGE_HOST=127.0.0.1 LOGS="$WORK"
in_hub_ns() { if [[ -n "$HUB_NS" ]]; then echo ip netns exec "$HUB_NS"; fi; }
in_edge_ns() { if [[ -n "$EDGE_NS" ]]; then echo ip netns exec "$EDGE_NS"; fi; }

# start_tunnel PATH MODE [BINARY]: a hub (own tunnel port) and an edge on ADDR[PATH] using MODE.
start_tunnel() {
  local path="$1" mode="$2" bin="${3:-$BIN}" id="bench-$1" tunnel_port token hub
  local -a in_hub in_edge
  read -r -a in_hub <<< "$(in_hub_ns)"
  read -r -a in_edge <<< "$(in_edge_ns)"
  tunnel_port="$(free_port)"
  # The load comes from one loopback address: lift the per-address cap (production keeps it)
  # and believe loopback clients (privateClients) when the edge reaches the hub over a link.
  printf '[{"id":"%s","secret":"bench-secret-0123456789","listenPorts":[%s],"listenPortsUdp":[%s],"limits":{"maxConnectionsPerSource":1000000},"privateClients":true}]\n' \
    "$id" "$PORT" "$PORT" > "$LOGS/$path-edges.json"
  local -a hub_metrics=() edge_metrics=()
  if [[ "${BENCH_METRICS:-0}" == 1 && -z "$HUB_NS" ]]; then
    hub_metrics=(--metrics-addr "127.0.0.1:$(free_port)")
    edge_metrics=(--metrics-addr "127.0.0.1:$(free_port)")
  fi
  REMOTEINGRESS_LOG=warn "${in_hub[@]}" "$bin" hub --tunnel-port "$tunnel_port" --edges "$LOGS/$path-edges.json" \
    --stream-event-mode off "${hub_metrics[@]}" --json > "$LOGS/$path-hub.events" 2> "$LOGS/$path-hub.log" & PIDS+=($!)
  hub=$!
  token="$("$bin" token encode --hub-host "$HUB_HOST" --hub-port "$tunnel_port" --edge-id "$id" \
    --secret bench-secret-0123456789)"
  REMOTEINGRESS_LOG=warn "${in_edge[@]}" "$bin" edge --token "$token" --bind-address "${ADDR[$path]}" \
    --transport-mode "$mode" --no-stun "${edge_metrics[@]}" --json > "$LOGS/$path-edge.events" 2> "$LOGS/$path-edge.log" &
  PIDS+=($!)
  if [[ "${BENCH_METRICS:-0}" == 1 ]]; then
    # A scraper, as Prometheus would be: one process reading both endpoints every second.
    python3 -c 'import sys, time, urllib.request
while True:
    for url in sys.argv[1:]:
        try:
            urllib.request.urlopen(url, timeout=2).read()
        except OSError:
            pass
    time.sleep(1)' "http://${hub_metrics[1]}/metrics" "http://${edge_metrics[1]}/metrics" & PIDS+=($!)
  fi
  WATCHED[$path]="edge=$! hub=$hub"
  # Also tells that the hub listens, so the next free_port cannot pick its port.
  wait_for "$LOGS/$path-edge.events" portsAssigned 20
}

# find_rathole: sets RATHOLE_BIN to rathole 0.5 (installing it once), or fails setting RATHOLE_WHY.
find_rathole() {
  local log="$RATHOLE_ROOT/install.log"
  RATHOLE_BIN="$RATHOLE_ROOT/bin/rathole"
  if [[ -x "$RATHOLE_BIN" ]]; then return; fi
  if ! command -v openssl > /dev/null; then RATHOLE_WHY="openssl not found"; return 1; fi
  if [[ -f "$RATHOLE_ROOT/FAILED" ]]; then
    RATHOLE_WHY="install failed before, see $log; delete $RATHOLE_ROOT/FAILED to retry"; return 1
  fi
  mkdir -p "$RATHOLE_ROOT"
  echo "bench: installing rathole 0.5 into $RATHOLE_ROOT (once; a few minutes)" >&2
  if ! timeout "${BENCH_RATHOLE_INSTALL_TIMEOUT:-1200}" \
    cargo install rathole --version '^0.5' --root "$RATHOLE_ROOT" > "$log" 2>&1; then
    touch "$RATHOLE_ROOT/FAILED"
    RATHOLE_WHY="cargo install failed or timed out, see $log"; return 1
  fi
}

# rathole_identity DIR: a CA and a certificate for "localhost", as PKCS#12 for rathole's server.
rathole_identity() {
  local dir="$1"
  openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=bench-ca \
    -keyout "$dir/ca.key" -out "$dir/ca.pem" 2> /dev/null
  openssl req -newkey rsa:2048 -nodes -subj /CN=localhost \
    -keyout "$dir/server.key" -out "$dir/server.csr" 2> /dev/null
  printf 'subjectAltName=DNS:localhost\n' > "$dir/san.ext"
  openssl x509 -req -days 2 -in "$dir/server.csr" -CA "$dir/ca.pem" -CAkey "$dir/ca.key" \
    -CAcreateserial -extfile "$dir/san.ext" -out "$dir/server.pem" 2> /dev/null
  openssl pkcs12 -export -inkey "$dir/server.key" -in "$dir/server.pem" -certfile "$dir/ca.pem" \
    -passout pass:bench -out "$dir/identity.p12"
}

# start_rathole BIN: rathole server (public port on ADDR[rathole-tls], TCP and UDP) and client
# (next to the target, forwarding to 127.0.0.1:PORT) over its TLS transport: every loopback
# figure gets a rathole row.
start_rathole() {
  local bin="$1" dir="$LOGS/rathole" control server
  local -a in_hub in_edge
  read -r -a in_hub <<< "$(in_hub_ns)"
  read -r -a in_edge <<< "$(in_edge_ns)"
  mkdir -p "$dir"
  rathole_identity "$dir"
  control="$(free_port)"
  cat > "$dir/server.toml" <<EOF
[server]
bind_addr = "$EDGE_HOST:$control"
[server.transport]
type = "tls"
[server.transport.tls]
pkcs12 = "$dir/identity.p12"
pkcs12_password = "bench"
[server.services.bench]
token = "bench-token"
bind_addr = "${ADDR[rathole-tls]}:$PORT"
[server.services.bench-udp]
type = "udp"
token = "bench-token"
bind_addr = "${ADDR[rathole-tls]}:$PORT"
EOF
  cat > "$dir/client.toml" <<EOF
[client]
remote_addr = "$EDGE_HOST:$control"
[client.transport]
type = "tls"
[client.transport.tls]
trusted_root = "$dir/ca.pem"
hostname = "localhost"
[client.services.bench]
token = "bench-token"
local_addr = "127.0.0.1:$PORT"
[client.services.bench-udp]
type = "udp"
token = "bench-token"
local_addr = "127.0.0.1:$PORT"
EOF
  "${in_edge[@]}" "$bin" --server "$dir/server.toml" > "$dir/server.log" 2>&1 & PIDS+=($!)
  server=$!
  "${in_hub[@]}" "$bin" --client "$dir/client.toml" > "$dir/client.log" 2>&1 & PIDS+=($!)
  WATCHED[rathole-tls]="server=$server client=$!"
  wait_for "$dir/server.log" "Listening at ${ADDR[rathole-tls]}:$PORT" 20
}

# start_tunnels: a tcpTls and a quic tunnel (and the baseline binary's, with
# BENCH_BASELINE_BIN); sets TUNNEL_PATHS to their paths.
start_tunnels() {
  TUNNEL_PATHS=(tcpTls quic)
  start_tunnel tcpTls tcpTls
  start_tunnel quic quic
  if [[ -n "${BENCH_BASELINE_BIN:-}" ]]; then
    start_tunnel tcpTls-baseline tcpTls "$BENCH_BASELINE_BIN"
    start_tunnel quic-baseline quic "$BENCH_BASELINE_BIN"
    TUNNEL_PATHS+=(tcpTls-baseline quic-baseline)
  fi
}

start_tunnels
PATHS=(direct "${TUNNEL_PATHS[@]}")
RATHOLE_STATUS="skipped (BENCH_QUICK=1 or BENCH_RATHOLE=0)"
if [[ "$QUICK" != 1 && "${BENCH_RATHOLE:-1}" != 0 ]]; then
  if find_rathole; then
    start_rathole "$RATHOLE_BIN"
    PATHS+=(rathole-tls)
    RATHOLE_STATUS="rathole $("$RATHOLE_BIN" --version | sed -n 's/^Build Version: *//p')"
  else
    RATHOLE_STATUS="not available ($RATHOLE_WHY)"
  fi
  echo "rathole: $RATHOLE_STATUS" >&2
fi

RESULTS="$WORK/results.jsonl"
# measure PATH TEST ARGS...: runs the load generator against PATH, appends its JSON line.
measure() {
  local path="$1" name="$2" line; shift 2
  local -a in_edge
  read -r -a in_edge <<< "$(in_edge_ns)"
  line="$("${in_edge[@]}" "$LOADGEN" "$@" --addr "${ADDR[$path]}:$PORT")"
  printf '{"path":"%s","test":"%s","result":%s}\n' "$path" "$name" "$line" >> "$RESULTS"
}

pids_of() { local w; for w in ${WATCHED[$1]}; do printf '%s ' "${w#*=}"; done; }
watch_args() { local w; for w in ${WATCHED[$1]}; do printf -- '--watch %s ' "$w"; done; }

# cpu_ticks PID...: utime + stime of the processes, in clock ticks.
cpu_ticks() {
  local total=0 pid stat fields
  for pid in "$@"; do
    stat="$(< "/proc/$pid/stat")"
    read -r -a fields <<< "${stat##*) }" # fields[0] is field 3 (state): utime is 14, stime 15
    total=$((total + fields[11] + fields[12]))
  done
  echo "$total"
}

# profile_start PATH / profile_stop PATH: with BENCH_PERF, a perf profile of the path's processes
# between the two calls, summarised to $BENCH_PERF/PATH.txt.
PROFILER=""
profile_start() {
  [[ -n "${BENCH_PERF:-}" && -n "${WATCHED[$1]:-}" ]] || return 0
  local pids
  pids="$(pids_of "$1")"; pids="${pids% }"
  mkdir -p "$BENCH_PERF"
  perf record -F 999 -g -o "$BENCH_PERF/$1.data" -p "${pids// /,}" > /dev/null 2>&1 &
  PROFILER=$!
}
profile_stop() {
  [[ -n "$PROFILER" ]] || return 0
  kill -INT "$PROFILER"
  wait "$PROFILER" || true
  PROFILER=""
  local report=(perf report -i "$BENCH_PERF/$1.data" --no-children --stdio)
  {
    echo "# by binary"
    "${report[@]}" --sort dso 2> /dev/null | grep -E '^ +[0-9.]+%' | head -8
    echo "# by symbol"
    "${report[@]}" --sort dso,symbol 2> /dev/null | grep -E '^ +[0-9.]+%' | head -30
  } | sed -E 's/[ -]+$//' > "$BENCH_PERF/$1.txt" || true
}

# throughput PATH: the four TCP throughput runs, with the CPU time of the path's processes.
throughput() {
  local path="$1" before moved=$((2 * BYTES + 2 * 8 * (BYTES / 8)))
  # shellcheck disable=SC2046 # one word per PID
  before="$(cpu_ticks $(pids_of "$path"))"
  profile_start "$path"
  measure "$path" "tcp 1 stream up" tcp --streams 1 --bytes "$BYTES" --direction up
  profile_stop "$path"
  measure "$path" "tcp 1 stream down" tcp --streams 1 --bytes "$BYTES" --direction down
  measure "$path" "tcp 8 streams up" tcp --streams 8 --bytes $((BYTES / 8)) --direction up
  measure "$path" "tcp 8 streams down" tcp --streams 8 --bytes $((BYTES / 8)) --direction down
  if [[ -n "${WATCHED[$path]}" ]]; then
    # shellcheck disable=SC2046
    printf '{"path":"%s","test":"cpu per GB (tcp)","result":{"kind":"cpu","ticks":%d,"clk_tck":%d,"bytes":%d,"processes":"%s"}}\n' \
      "$path" $(($(cpu_ticks $(pids_of "$path")) - before)) "$(getconf CLK_TCK)" "$moved" \
      "${WATCHED[$path]}" >> "$RESULTS"
  fi
}

for path in "${PATHS[@]}"; do
  echo "bench: $path" >&2
  # Idle first, while the path's processes have not grown their heaps with other tests.
  if want idle; then
    # shellcheck disable=SC2046
    measure "$path" "idle $IDLE_CONNS conns" idle --conns "$IDLE_CONNS" $(watch_args "$path")
    sleep 1 # let the closes drain before timing anything
  fi
  if want tcp; then throughput "$path"; fi
  if want udp; then
    measure "$path" "udp 512B x8 flows" udp --flows 8 --size 512 --window 16 --seconds "$SECS"
  fi
  if want rr; then
    measure "$path" "rr 64B x1 conn" rr --conns 1 --size 64 --seconds "$SECS"
    measure "$path" "rr 64B x64 conns" rr --conns 64 --size 64 --seconds "$SECS"
  fi
  if want connrate; then
    measure "$path" "conn rate x32" conn-rate --concurrency 32 --size 64 --seconds "$SECS"
  fi
  if want mice; then
    measure "$path" "mice 8x64B +elephant" mice --conns 8 --size 64 --seconds "$SECS"
  fi
done

# wan_profile RTT_MS LOSS: two network namespaces joined by ri-loadgen's delay line; per path a
# tunnel (or rathole) across it, then timed downloads from the edge's side. Both namespaces allow
# TCP 32 MiB socket buffers (the default 4 MiB send buffer alone caps one TCP stream at
# 400 Mbit/s at 80 ms, tunnel or not), as a server tuned for long paths would.
wan_profile() {
  local rtt="$1" loss="$2" tag first label path
  tag="$(printf '%04x' $((RANDOM)))"
  label="wan ${rtt}ms"
  if [[ "$loss" != 0 ]]; then label+="+$(awk -v loss="$loss" 'BEGIN { printf "%g", loss * 100 }')%"; fi
  first=${#PIDS[@]}
  HUB_NS="ri-wan-h-$tag" EDGE_NS="ri-wan-e-$tag" HUB_HOST=10.96.0.1 EDGE_HOST=10.96.0.2
  LOGS="$WORK/wan-$rtt-$loss"
  mkdir -p "$LOGS"
  for ns in "$HUB_NS" "$EDGE_NS"; do
    ip netns add "$ns"
    NETNS+=("$ns")
    ip -n "$ns" link set lo up
    ip netns exec "$ns" sysctl -q -w net.ipv4.tcp_rmem="4096 131072 33554432" \
      net.ipv4.tcp_wmem="4096 16384 33554432"
  done
  "$LOADGEN" delay-line --a-netns "$EDGE_NS" --a-address "$EDGE_HOST" --b-netns "$HUB_NS" \
    --b-address "$HUB_HOST" --rtt-ms "$rtt" --rate-mbit "$WAN_RATE_MBIT" --loss "$loss" \
    > "$LOGS/delay-line.log" 2>&1 & PIDS+=($!)
  wait_for "$LOGS/delay-line.log" ready 10
  ip netns exec "$HUB_NS" "$LOADGEN" serve --listen "0.0.0.0:$PORT" > "$LOGS/target.log" 2>&1 & PIDS+=($!)
  wait_for "$LOGS/target.log" listening 10
  start_tunnels
  local -a wan_paths=(direct "${TUNNEL_PATHS[@]}")
  if [[ " ${PATHS[*]} " == *" rathole-tls "* ]]; then
    start_rathole "$RATHOLE_BIN"
    wan_paths+=(rathole-tls)
  fi
  ADDR[direct]="$HUB_HOST"
  for path in "${wan_paths[@]}"; do
    echo "bench: $label, $path" >&2
    for streams in 1 8; do
      # One draw can move by a third (a loss early or late in slow start, from the random
      # loss or the drop-tail queue), so each cell is measured WAN_RUNS times and the table
      # shows the median (and the range).
      for _ in $(seq "$WAN_RUNS"); do
        measure "$path" "$label $streams stream$([[ $streams == 1 ]] || echo s)" tcp \
          --streams "$streams" --direction down --seconds "$WAN_SECS" --warmup "$WAN_WARMUP"
      done
    done
  done
  ADDR[direct]=127.0.0.1
  for pid in "${PIDS[@]:first}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]:first}"; do wait "$pid" 2>/dev/null || true; done
  PIDS=("${PIDS[@]:0:first}")
  ip netns del "$HUB_NS"
  ip netns del "$EDGE_NS"
  HUB_NS="" EDGE_NS="" HUB_HOST=127.0.0.1 EDGE_HOST=127.0.0.1 LOGS="$WORK"
}

if want wan; then
  if [[ "$(id -u)" != 0 ]]; then
    echo "bench: the WAN rows need root (network namespaces, TUN devices); skipped" >&2
  else
    for profile in $WAN_PROFILES; do wan_profile "${profile%%:*}" "${profile#*:}"; done
  fi
fi

mkdir -p target
export RATHOLE_STATUS BENCH_SETTINGS
BENCH_SETTINGS="$(printf '{"build":"%s","quick":%s,"bytes_per_stream":%d,"seconds":%s,"idle_conns":%d,"wan":{"profiles":"%s","rate_mbit":%s,"seconds":%s,"warmup":%s},"metrics":%s}' \
  "$(basename "$BUILD_DIR")" "$([[ "$QUICK" == 1 ]] && echo true || echo false)" "$BYTES" "$SECS" "$IDLE_CONNS" \
  "$WAN_PROFILES" "$WAN_RATE_MBIT" "$WAN_SECS" "$WAN_WARMUP" \
  "$([[ "${BENCH_METRICS:-0}" == 1 ]] && echo true || echo false)")"
python3 - "$RESULTS" target/bench.json <<'PY'
import json, math, os, platform, sys

rows = []
for line in open(sys.argv[1]):
    row = json.loads(line)
    same = next((r for r in rows if (r["path"], r["test"]) == (row["path"], row["test"])), None)
    if same and row["result"]["kind"] == "tcp":  # a repeated WAN cell: keep every run
        same["result"].setdefault("runs", [same["result"]["gbps"]]).append(row["result"]["gbps"])
        same["result"]["gbps"] = sorted(same["result"]["runs"])[len(same["result"]["runs"]) // 2]
    else:
        rows.append(row)
for row in rows:  # CPU rows arrive as clock ticks and bytes
    res = row["result"]
    if res["kind"] == "cpu":
        res["cpu_s"] = res["ticks"] / res["clk_tck"]
        res["s_per_gb"] = res["cpu_s"] / (res["bytes"] / 1e9)

def lines(row):
    """Table lines of one result: (test, figure, unit, p99 in us or None, note)."""
    test, r = row["test"], row["result"]
    kind = r["kind"]
    if kind == "tcp":
        runs = r.get("runs", [])
        note = (f"median of {len(runs)}: {min(runs):.2f}-{max(runs):.2f}" if runs else "")
        yield test, r["gbps"], "Gbit/s", None, note
    elif kind == "udp":
        yield test, r["pps"], "pkt/s", r["p99_us"], f"loss {r['loss']:.2%}"
    elif kind in ("rr", "connrate"):
        rate, unit = ("rps", "req/s") if kind == "rr" else ("cps", "conn/s")
        yield test, r[rate], unit, r["p99_us"], f"p50 {r['p50_us']:.0f} p999 {r['p999_us']:.0f} us"
    elif kind == "mice":
        note = (f"alone p99 {r['p99_alone_us']:.0f} us, x{r['p99_ratio']:.1f} with; "
                f"elephant {r['elephant_gbps']:.2f} Gbit/s; CPUs {r['cpu_busy']:.0%} busy")
        yield test, r["p99_us"], "us p99", None, note
    elif kind == "idle":
        yield test + " held", r["held"], "conns", None, f"opened in {r['open_seconds']:.1f} s"
        rss = r["rss"]
        if rss:
            total = rss.pop("total")
            parts = ", ".join(f"{name} {v['bytes_per_conn'] / 1024:.1f}" for name, v in rss.items())
            rss["total"] = total
            note = (f"RSS {total['before_kib'] / 1024:.0f} -> {total['with_kib'] / 1024:.0f} MiB; "
                    f"{parts} KiB/conn")
            yield test + " RSS", total["bytes_per_conn"] / 1024, "KiB/conn", None, note
    elif kind == "cpu":
        note = f"{r['cpu_s']:.1f} CPU s for {r['bytes'] / 1e9:.1f} GB ({r['processes']})"
        yield test, r["s_per_gb"], "CPU s/GB", None, note

table = [dict(zip(("test", "figure", "unit", "p99_us", "note"), line), path=row["path"])
         for row in rows for line in lines(row)]
direct = {line["test"]: line["figure"] for line in table if line["path"] == "direct"}
print(f"{'test':<24}{'path':<16}{'figure':>12} {'unit':<9}{'vs direct':>9}{'p99 us':>9}  note")
for line in table:
    base = direct.get(line["test"])
    line["vs_direct"] = line["figure"] / base if base and line["path"] != "direct" else None
    ratio = f"{line['vs_direct']:.0%}" if line["vs_direct"] is not None else ""
    p99 = f"{line['p99_us']:.0f}" if line["p99_us"] is not None else ""
    figure = f"{line['figure']:,.0f}" if abs(line["figure"]) >= 1000 else f"{line['figure']:.2f}"
    print(f"{line['test']:<24}{line['path']:<16}{figure:>12} {line['unit']:<9}"
          f"{ratio:>9}{p99:>9}  {line['note']}")

# Missing figures and TCP errors fail the run.
problems = []
tests_of = {}
for line in table:
    tests_of.setdefault(line["path"], set()).add(line["test"])
    if not (isinstance(line["figure"], (int, float)) and math.isfinite(line["figure"])
            and line["figure"] > 0):
        problems.append(f"{line['path']} {line['test']}: figure {line['figure']!r}")
expected = set().union(*(tests_of.get(p, set()) for p in ("tcpTls", "quic")))
for path in ("direct", "tcpTls", "quic"):
    wanted = expected - ({t for t in expected if t.endswith(" RSS") or t.startswith("cpu")}
                         if path == "direct" else set())
    problems += [f"{path} {test}: missing" for test in sorted(wanted - tests_of.get(path, set()))]
for row in rows:
    r = row["result"]
    if r.get("errors"):
        problems.append(f"{row['path']} {row['test']}: {r['errors']} errors")
    if r["kind"] == "idle" and not r["held"] == r["opened"] == r["requested"]:
        problems.append(f"{row['path']} {row['test']}: opened {r['opened']}, held {r['held']}")

machine = {
    "nproc": os.cpu_count(), "kernel": platform.release(),
    "cpu": next((l.split(":")[1].strip() for l in open("/proc/cpuinfo")
                 if l.startswith("model name")), "?"),
}
report = {"machine": machine, "settings": json.loads(os.environ["BENCH_SETTINGS"]),
          "rathole": os.environ["RATHOLE_STATUS"], "problems": problems, "table": table,
          "results": rows}
json.dump(report, open(sys.argv[2], "w"), indent=2)
print(f"machine: {machine['nproc']} cores, {machine['cpu']}, kernel {machine['kernel']}; "
      f"{report['settings']['build']} build; rathole: {report['rathole']}; JSON: {sys.argv[2]}")
for problem in problems:
    print(f"bench: FAILED: {problem}", file=sys.stderr)
sys.exit(1 if problems else 0)
PY
