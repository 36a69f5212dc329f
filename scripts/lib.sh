# Shared helpers of demo.sh and bench.sh: processes stopped by PID on exit (and network
# namespaces listed in NETNS deleted), free loopback ports, and waiting for a line in a file with a
# deadline. Source it; it sets an EXIT trap.

WORK="$(mktemp -d /tmp/remoteingress.XXXXXX)"
PIDS=()
NETNS=()
cleanup() {
  local status=$?
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  for ns in "${NETNS[@]}"; do ip netns del "$ns" 2>/dev/null || true; done
  if [[ "$status" == 0 ]]; then
    rm -rf "$WORK"
  else
    echo "the processes' logs are kept in $WORK" >&2
  fi
}
trap cleanup EXIT

# cargo_build BIN...: builds those binaries, optimised, or the debug build with
# REMOTEINGRESS_DEBUG_BUILD=1 (./scripts/test.sh: it has that build already, and its smoke runs
# need no optimiser); sets BUILD_DIR to where they are.
cargo_build() {
  local -a bins=()
  local bin
  for bin in "$@"; do bins+=(--bin "$bin"); done
  if [[ "${REMOTEINGRESS_DEBUG_BUILD:-0}" == 1 ]]; then
    BUILD_DIR="$PWD/target/debug"
    cargo build --quiet "${bins[@]}"
  else
    BUILD_DIR="$PWD/target/release"
    cargo build --release --quiet "${bins[@]}"
  fi
}

# A port free for TCP and UDP on 127.0.0.1 and on every address given as an argument.
free_port() {
  python3 - "$@" <<'PY'
import socket, sys
for _ in range(200):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0)); port = s.getsockname()[1]
    ok = True
    for host in ["127.0.0.1"] + sys.argv[1:]:
        for kind in (socket.SOCK_STREAM, socket.SOCK_DGRAM):
            try:
                with socket.socket(socket.AF_INET, kind) as t:
                    t.bind((host, port))
            except OSError:
                ok = False
    if ok:
        print(port); break
PY
}

# wait_for FILE PATTERN SECONDS: until FILE contains PATTERN, or fail.
wait_for() {
  local deadline=$((SECONDS + $3))
  until grep -q "$2" "$1" 2>/dev/null; do
    if ((SECONDS >= deadline)); then
      echo "timed out waiting for '$2' in $1" >&2
      cat "$1" >&2 || true
      exit 1
    fi
    sleep 0.1
  done
}
