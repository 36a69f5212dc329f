#!/usr/bin/env python3
"""Measures how long an edge needs to log in: from starting `remoteingress-bin edge --json` to its
`tunnelConnected` event (process start, TCP/QUIC, TLS, hello and reply), median of N runs per
transport, against a hub of the same build on loopback.

    python3 tests/tools/login_time.py [BINARY] [RUNS]

Used for the login figures in docs/performance.md (run it on two builds to compare them).
"""
import json
import os
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402


def main():
    binary = sys.argv[1] if len(sys.argv) > 1 else harness.binary()
    runs = int(sys.argv[2]) if len(sys.argv) > 2 else 20
    port = harness.free_port()
    edges = tempfile.NamedTemporaryFile("w", suffix=".json", delete=False)
    json.dump([{"id": "edge-t", "secret": "s" * 43}], edges)
    edges.close()
    hub = harness.Process([binary, "hub", "--tunnel-port", str(port), "--edges", edges.name, "--json"],
                          "login-hub", env={"REMOTEINGRESS_LOG": "warn"})
    try:
        harness.wait_port("127.0.0.1", port)
        for transport in ("tcpTls", "quic"):
            times = []
            for _ in range(runs):
                started = time.monotonic()
                edge = harness.Process([binary, "edge", "--hub-host", "127.0.0.1", "--hub-port", str(port),
                                        "--edge-id", "edge-t", "--secret", "s" * 43,
                                        "--transport-mode", transport, "--no-stun", "--json"],
                                       "login-edge", env={"REMOTEINGRESS_LOG": "error"})
                try:
                    edge.wait_event("tunnelConnected", timeout=15)
                    times.append((time.monotonic() - started) * 1000)
                finally:
                    edge.stop()
            print(f"{transport}: median {statistics.median(times):.1f} ms, "
                  f"min {min(times):.1f} ms, max {max(times):.1f} ms ({runs} logins)")
    finally:
        hub.stop()
        os.unlink(edges.name)
    return 0


if __name__ == "__main__":
    sys.exit(main())
