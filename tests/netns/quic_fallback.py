#!/usr/bin/env python3
"""quicWithFallback with UDP to the hub blocked by a real kernel firewall, then unblocked.

Everything runs in one network namespace created here (and always deleted): hub, target, edge.
An nftables rule drops UDP to the tunnel port, so the edge must fall back to TLS within about
5 s. Then the rule is removed: the edge must move to QUIC by itself, while a TCP connection
opened over TLS keeps working.

Then the migration race: UDP is blocked again until the edge is back on TLS, and unblocked while
clients connect continuously; in the instant the hub replaces the TLS connection by the QUIC
login, streams still opened on TLS must be forwarded, not refused. Repeated a few times.
"""
import json
import os
import socket
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tools"))
import harness  # noqa: E402

TOOLS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tools")
CLIENT = r"""
import socket, sys, time
port = int(sys.argv[1])
s = socket.create_connection(("127.0.0.2", port), timeout=10)
f = s.makefile("rwb", buffering=0)
print(f.readline().decode().strip(), flush=True)          # the target's greeting
for line in sys.stdin:                                   # echo each line we are given
    s.sendall(line.encode())
    print(f.readline().decode().strip(), flush=True)
"""

# Connects continuously from `workers` threads until stdin closes; prints "<ok> <failed>", then
# up to five failures.
CLIENT_LOOP = r"""
import socket, sys, threading, time
port, workers = int(sys.argv[1]), int(sys.argv[2])
stop, lock, ok, failed = threading.Event(), threading.Lock(), [0], []
def work():
    while not stop.is_set():
        try:
            with socket.create_connection(("127.0.0.2", port), timeout=5) as s:
                line = s.makefile("rb").readline()
        except OSError as e:
            line = repr(e).encode()
        with lock:
            if line.startswith(b"target saw client"):
                ok[0] += 1
            else:
                failed.append(f"{time.monotonic():.3f} {line!r}")
threads = [threading.Thread(target=work) for _ in range(workers)]
for t in threads:
    t.start()
sys.stdin.read()
stop.set()
for t in threads:
    t.join()
print(ok[0], len(failed), flush=True)
for f in failed[:5]:
    print(f, flush=True)
"""
MIGRATIONS = 3


def block_udp(inside, tunnel_port):
    rules = (
        "table inet ri_block {\n"
        "  chain input {\n"
        "    type filter hook input priority 0;\n"
        f"    udp dport {tunnel_port} drop\n"
        "  }\n"
        "}\n"
    )
    subprocess.run(inside(["nft", "-f", "-"]), input=rules, text=True, check=True)


def unblock_udp(inside):
    subprocess.run(inside(["nft", "delete", "table", "inet", "ri_block"]), check=True)


def migrations_lose_nothing(report, inside, edge, port, tunnel_port):
    """Falls back to TLS and returns to QUIC `MIGRATIONS` times; clients connect throughout
    each return and none may be refused."""
    for round_ in range(1, MIGRATIONS + 1):
        block_udp(inside, tunnel_port)
        fallback = edge.wait_event("tunnelConnected", timeout=40)
        report.check(f"round {round_}: back on TLS while UDP is blocked", fallback["transport"] == "tcpTls", fallback)
        clients = subprocess.Popen(inside([sys.executable, "-c", CLIENT_LOOP, str(port), "4"]), stdin=subprocess.PIPE,
                                   stdout=subprocess.PIPE, text=True)
        try:
            unblock_udp(inside)
            moved = edge.wait_event("tunnelConnected", timeout=40)
            report.check(f"round {round_}: returns to QUIC", moved["transport"] == "quic", moved)
            # Keep connecting past the edge's and the hub's hand-over of the old connection.
            time.sleep(1.5)
        finally:
            out, _ = clients.communicate(input="", timeout=30)
        counts, *failures = out.splitlines()
        ok, failed = (int(n) for n in counts.split())
        report.check(f"round {round_}: {ok} connections during the move, none refused", ok > 0 and failed == 0,
                     failures)


METRICS_PORT = 19444


def wait_for_firewall_in_sync(inside, timeout=10.0):
    """The firewall status of the QUIC session of edge-qf in the hub's /status once it is in sync
    (polled, bounded), else the last one seen."""
    deadline, firewall = time.monotonic() + timeout, {}
    while time.monotonic() < deadline:
        out = subprocess.run(inside([sys.executable, "-c",
                                     "import urllib.request;print(urllib.request.urlopen("
                                     f"'http://127.0.0.1:{METRICS_PORT}/status',timeout=2).read().decode())"]),
                             capture_output=True, text=True, timeout=10).stdout
        try:
            edges = json.loads(out).get("connectedEdges", [])
        except ValueError:
            edges = []
        for edge in edges:
            if edge.get("edgeId") == "edge-qf" and edge.get("transport") == "quic":
                firewall = edge.get("firewall") or {}
                if firewall.get("inSync"):
                    return firewall
        time.sleep(0.2)
    return firewall


def main():
    if os.geteuid() != 0:
        print("needs root for network namespaces")
        return 1
    report = harness.Report()
    with harness.namespaces("riqf", 1) as (ns,), harness.stopping() as processes:
        inside = lambda argv: ["ip", "netns", "exec", ns, *argv]  # noqa: E731
        port, tunnel_port = 18081, 18444
        block_udp(inside, tunnel_port)
        with tempfile.TemporaryDirectory(prefix="ri-qf-") as workdir:
            edges = os.path.join(workdir, "edges.json")
            with open(edges, "w") as f:
                f.write(f'[{{"id":"edge-qf","secret":"qf-secret-0123456789","listenPorts":[{port}],"privateClients":true}}]')
            target = harness.Process(inside([sys.executable, os.path.join(TOOLS, "proxy_target.py"), "--port", str(port)]), "qf-target")
            processes.append(target)
            target.wait_line(lambda line: line.startswith("listening"))
            hub = harness.Process(inside([harness.binary(), "hub", "--tunnel-port", str(tunnel_port), "--edges", edges, "--json",
                                          "--metrics-addr", f"127.0.0.1:{METRICS_PORT}",
                                          # A blocked QUIC tunnel is noticed in 3 s (each round blocks it).
                                          "--performance-json", '{"heartbeatIntervalSecs":1,"heartbeatTimeoutSecs":3}']), "qf-hub")
            processes.append(hub)
            token = harness.token("127.0.0.1", tunnel_port, "edge-qf", "qf-secret-0123456789")
            started = time.monotonic()
            edge = harness.Process(inside([harness.binary(), "edge", "--token", token, "--bind-address", "127.0.0.2",
                                           "--transport-mode", "quicWithFallback", "--no-stun", "--json"]), "qf-edge")
            processes.append(edge)
            first = edge.wait_event("tunnelConnected", timeout=20)
            elapsed = time.monotonic() - started
            report.check("falls back to TLS while UDP is blocked", first["transport"] == "tcpTls", first)
            report.check(f"fallback within ~5 s (took {elapsed:.1f} s)", elapsed < 9, elapsed)
            edge.wait_event("portsAssigned")

            client = subprocess.Popen(inside([sys.executable, "-c", CLIENT, str(port)]), stdin=subprocess.PIPE,
                                      stdout=subprocess.PIPE, text=True, bufsize=1)
            try:
                greeting = client.stdout.readline().strip()
                report.check("connection over TLS reaches the target", greeting.startswith("target saw client 127.0.0.1:"), greeting)
                client.stdin.write("before\n")
                client.stdin.flush()
                report.check("echo before the move", client.stdout.readline().strip() == "before")

                unblock_udp(inside)
                moved = edge.wait_event("tunnelConnected", timeout=30)
                report.check("moves to QUIC once UDP works", moved["transport"] == "quic", moved)
                connected = hub.wait_event("edgeConnected", timeout=10)
                while connected.get("transport") != "quic":
                    connected = hub.wait_event("edgeConnected", timeout=10)
                report.check("hub sees the edge on QUIC", connected["transport"] == "quic", connected)
                # The hub's new QUIC session has the edge's report (its firewall in sync): the
                # edge reports with every push it applies, the upgrade's included.
                firewall = wait_for_firewall_in_sync(inside)
                report.check("after the move the hub has the edge's report (firewall in sync)", firewall.get("inSync") is True,
                             firewall)

                client.stdin.write("after\n")
                client.stdin.flush()
                report.check("the TLS connection survived the move", client.stdout.readline().strip() == "after")
            finally:
                client.stdin.close()
                client.wait(timeout=10)
            out = subprocess.run(inside([sys.executable, "-c",
                                         "import socket;s=socket.create_connection(('127.0.0.2',%d),timeout=10);"
                                         "print(s.makefile().readline().strip())" % port]),
                                 capture_output=True, text=True, timeout=20).stdout.strip()
            report.check("new connections work over QUIC", out.startswith("target saw client"), out)
            migrations_lose_nothing(report, inside, edge, port, tunnel_port)
    return report.finish()


if __name__ == "__main__":
    sys.exit(main())
