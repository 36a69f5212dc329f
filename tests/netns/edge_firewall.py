#!/usr/bin/env python3
"""The edge firewall in the kernel, through the real binary and the real tunnel.

Two network namespaces created here (and always deleted): `edge` holds the hub (driven over
--management), the targets and the edges; `clients` reaches the edge over a veth pair from
several addresses (10.99.7.2-6). The hub pushes firewall snapshots; `nft` reads the edge's
namespace back, and clients check what the kernel does with their packets:

- an invalid snapshot is refused at the hub with the field's JSON path, nothing accepted;
- a pushed snapshot shows in the edge's namespace within 1 s;
- a blocked address is dropped while another passes; an accept rule exempts a blocked source;
- a reject rule gives a refusal (RST), not a timeout;
- a burst of new connections over a per-source limit is cut to about the limit, another source
  is unaffected, and a long transfer on one established connection is not throttled;
- a later push with one more blocked address takes effect without dropping the tunnel or an
  open connection;
- while snapshots alternate, a blocked source streaming UDP never gets a datagram through and a
  concurrent `nft list` never finds the table missing;
- an edge without CAP_NET_ADMIN (setpriv) tunnels and reports the firewall unavailable;
- a push cannot brick its edge: a snapshot that blocks every address (the hub's included) and
  drops all input and output is applied, yet the tunnel stays up, carries the edge's report
  back, and a corrected push arrives and is applied;
- SIGTERM removes the table;
- a table left by a SIGKILLed edge: an edge that starts while the hub is unreachable keeps it
  in force (with its exemption inserted at the head) and SIGTERM removes it; an edge that
  starts against a hub with no snapshot for it removes it on the hub's first configuration.
"""
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tools"))
import harness  # noqa: E402

TOOLS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tools")
EDGE_IP = "10.99.7.1"
PORT, REJECT_PORT, NOCAP_PORT, UDP_SINK_PORT, TUNNEL_PORT = 18180, 18181, 18182, 18199, 18443

# Runs in the clients' namespace: one command per invocation, prints one JSON line.
CLIENT = r"""
import json, select, socket, sys, time
cmd, src, dst, port = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
def conn(timeout):
    s = socket.socket(); s.bind((src, 0)); s.settimeout(timeout); s.connect((dst, port)); return s
if cmd == "connect":
    started = time.monotonic()
    try:
        s = conn(float(sys.argv[5])); s.settimeout(5)
        greeting = s.makefile().readline().strip(); s.close()
        print(json.dumps({"ok": True, "greeting": greeting}))
    except ConnectionRefusedError:
        print(json.dumps({"ok": False, "refused": True, "secs": time.monotonic() - started}))
    except OSError as e:
        print(json.dumps({"ok": False, "refused": False, "error": str(e), "secs": time.monotonic() - started}))
elif cmd == "burst":
    n, wait = int(sys.argv[5]), float(sys.argv[6])
    socks = []
    for _ in range(n):
        s = socket.socket(); s.bind((src, 0)); s.setblocking(False); s.connect_ex((dst, port)); socks.append(s)
    deadline = time.monotonic() + wait
    done = set()
    while time.monotonic() < deadline:
        _, writable, _ = select.select([], [s for s in socks if s not in done], [], max(0, deadline - time.monotonic()))
        for s in writable:
            done.add(s)
        if len(done) == n:
            break
    ok = sum(1 for s in done if s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0)
    print(json.dumps({"ok": ok, "of": n}))
elif cmd == "transfer":
    total = int(sys.argv[5]); s = conn(3); s.settimeout(20)
    f = s.makefile("rb"); f.readline()
    chunk = b"x" * 65536; sent = received = 0; started = time.monotonic()
    while received < total:
        if sent < total and sent - received < 1 << 20:
            s.sendall(chunk); sent += len(chunk)
        else:
            data = s.recv(1 << 20)
            if not data: break
            received += len(data)
    print(json.dumps({"received": received, "secs": time.monotonic() - started}))
elif cmd == "hold":
    s = conn(3); f = s.makefile("rwb", buffering=0)
    print(json.dumps({"greeting": f.readline().decode().strip()}), flush=True)
    for line in sys.stdin:
        s.sendall(line.encode()); print(json.dumps({"echo": f.readline().decode().strip()}), flush=True)
elif cmd == "udp":
    secs = float(sys.argv[5]); s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind((src, 0))
    end = time.monotonic() + secs; sent = 0
    while time.monotonic() < end:
        s.sendto(b"p", (dst, port)); sent += 1; time.sleep(0.0005)
    print(json.dumps({"sent": sent}))
"""

# Runs in the edge's namespace: counts datagrams per source address until stdin closes.
SINK = r"""
import json, socket, sys, threading
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind((sys.argv[1], int(sys.argv[2]))); s.settimeout(0.2)
counts = {}; stop = threading.Event()
threading.Thread(target=lambda: (sys.stdin.read(), stop.set()), daemon=True).start()
print("listening", flush=True)
while not stop.is_set():
    try:
        _, (addr, _) = s.recvfrom(2048); counts[addr] = counts.get(addr, 0) + 1
    except socket.timeout:
        pass
print(json.dumps(counts), flush=True)
"""

SNAPSHOT_A = {
    "blockedIps": ["10.99.7.3", "10.99.7.6"],
    "rateLimits": [{"id": "burst", "port": PORT, "protocol": "tcp", "rate": "5/second", "burst": 5, "perSourceIP": True}],
    "rules": [
        {"id": "exempt", "direction": "input", "action": "accept", "sourceIP": "10.99.7.6"},
        {"id": "refuse", "direction": "input", "action": "reject", "protocol": "tcp", "destPort": REJECT_PORT},
    ],
}
SNAPSHOT_B = dict(SNAPSHOT_A, blockedIps=SNAPSHOT_A["blockedIps"] + ["10.99.7.5"])
# Everything an operator could get wrong at once: every address blocked (the hub, on
# 127.0.0.1, included) and all input and output dropped.
BRICK = {
    "blockedIps": ["0.0.0.0/0", "::/0"],
    "rules": [
        {"id": "drop-in", "direction": "input", "action": "drop"},
        {"id": "drop-out", "direction": "output", "action": "drop"},
    ],
}


def main():
    if os.geteuid() != 0:
        print("needs root for network namespaces")
        return 1
    report = harness.Report()
    clients = [f"10.99.7.{host}/24" for host in range(2, 7)]
    with harness.linked_namespaces("rifw", [f"{EDGE_IP}/24"], clients) as (ns_edge, ns_clients, _, _):
        edge_ns = lambda argv: ["ip", "netns", "exec", ns_edge, *argv]  # noqa: E731
        client_ns = lambda argv: ["ip", "netns", "exec", ns_clients, *argv]  # noqa: E731
        with harness.stopping() as processes:
            scenario(report, processes, edge_ns, client_ns)
    return report.finish()


def client(client_ns, *args, timeout=30):
    out = subprocess.run(client_ns([sys.executable, "-c", CLIENT, *map(str, args)]), capture_output=True, text=True, timeout=timeout)
    try:
        return json.loads(out.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        return {"error": out.stderr[-500:]}


def nft_listing(edge_ns):
    out = subprocess.run(edge_ns(["nft", "list", "table", "inet", "remoteingress"]), capture_output=True, text=True)
    return out.stdout if out.returncode == 0 else None


def poll(what, deadline_s, check):
    """The first truthy check() result within deadline_s, else None (polls every 10 ms)."""
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.01)
    print(f"     (gave up waiting for {what})")
    return None


def edge_status(hub, edge_id):
    status = hub.call("getStatus")["result"]
    return next((e for e in status["connectedEdges"] if e["edgeId"] == edge_id), None)


def scenario(report, processes, edge_ns, client_ns):
    for port in (PORT, REJECT_PORT, NOCAP_PORT):
        target = harness.Process(edge_ns([sys.executable, os.path.join(TOOLS, "proxy_target.py"), "--port", str(port)]), f"fw-target-{port}")
        processes.append(target)
        target.wait_line(lambda line: line.startswith("listening"))
    hub = harness.Management(edge_ns([harness.binary(), "--management"]), "fw-hub")
    processes.append(hub)
    hub.wait_event("ready")
    started = hub.call("start", {"role": "hub", "config": {"tunnelPort": TUNNEL_PORT}})
    report.check("hub starts", started.get("success"), started)

    def edges(firewall):
        fw = {"id": "edge-fw", "secret": "fw-secret-0123456789", "listenPorts": [PORT, REJECT_PORT]}
        if firewall is not None:
            fw["firewallConfig"] = firewall
        nocap = {"id": "edge-nocap", "secret": "nocap-secret-0123456789", "listenPorts": [NOCAP_PORT], "firewallConfig": SNAPSHOT_A}
        return {"edges": [fw, nocap]}

    bad = hub.call("updateAllowedEdges", edges({"blockedIps": ["1.2.3.4", "10.0.0.0/8", "nope"], "rateLimits": [{"id": "x", "port": 80, "rate": "fast"}]}))
    # Well-formed JSON with unacceptable values is `invalid_config` in this project (docs/decisions.md);
    # unknown fields or enum values fail earlier as `invalid_params`.
    report.check("invalid snapshot refused (invalid_config)", bad.get("code") == "invalid_config", bad)
    report.check("the error names edges[0].firewallConfig.blockedIps[2]", "edges[0].firewallConfig.blockedIps[2]" in bad.get("error", ""), bad)
    report.check("nothing was accepted", hub.call("getStatus")["result"]["allowedEdges"] == 0)
    report.check("edges without a firewall accepted", hub.call("updateAllowedEdges", edges(None)).get("success"))

    edge = start_edge(processes, edge_ns, "fw-edge")
    edge.wait_event("tunnelConnected", timeout=20)
    edge.wait_event("portsAssigned")
    report.check("no table while no snapshot is configured", nft_listing(edge_ns) is None)
    connected_at = poll("edge-fw in hub status", 5, lambda: edge_status(hub, "edge-fw"))["connectedAtMs"]

    # End to end: push A, the namespace shows it within 1 s.
    pushed_at = time.monotonic()
    result = hub.call("updateAllowedEdges", edges(SNAPSHOT_A))
    report.check("snapshot pushed", result.get("result", {}).get("pushed") == 1, result)
    listing = poll("snapshot A in the kernel", 5, lambda: (nft_listing(edge_ns) or "").find("10.99.7.3") >= 0 and nft_listing(edge_ns))
    active_ms = (time.monotonic() - pushed_at) * 1000
    report.check(f"rules active in the edge's namespace within 1 s (took {active_ms:.0f} ms)", listing and active_ms < 1000, active_ms)
    updated = edge.wait_event("firewallConfigUpdated")
    report.check("firewallConfigUpdated carries counts", updated["ruleCount"] >= 7 and updated["blockedRanges"] == 2, updated)
    in_sync = poll("hub sees the edge in sync", 5, lambda: (edge_status(hub, "edge-fw") or {}).get("firewall", {}).get("inSync"))
    report.check("hub status: the edge applied the latest snapshot", in_sync, edge_status(hub, "edge-fw"))

    # Blocklist, accept exception, reject.
    allowed = client(client_ns, "connect", "10.99.7.2", EDGE_IP, PORT, 3)
    report.check("an unblocked address passes through the tunnel", allowed.get("greeting", "").startswith("target saw client 10.99.7.2:"), allowed)
    blocked = client(client_ns, "connect", "10.99.7.3", EDGE_IP, PORT, 1.5)
    report.check("a blocked address is dropped (timeout, not refusal)", not blocked.get("ok") and not blocked.get("refused"), blocked)
    exempt = client(client_ns, "connect", "10.99.7.6", EDGE_IP, PORT, 3)
    report.check("an accept rule exempts an otherwise blocked source", exempt.get("ok"), exempt)
    refused = client(client_ns, "connect", "10.99.7.2", EDGE_IP, REJECT_PORT, 5)
    report.check("a reject rule gives a refusal, not a timeout", refused.get("refused") and refused.get("secs", 9) < 1, refused)

    # Per-source rate limit on new connections.
    burst = client(client_ns, "burst", "10.99.7.4", EDGE_IP, PORT, 40, 0.8)
    report.check(f"a burst of 40 new connections is cut to about the limit (5/s burst 5: {burst.get('ok')} passed)", 3 <= burst.get("ok", -1) <= 15, burst)
    others = [client(client_ns, "connect", "10.99.7.5", EDGE_IP, PORT, 3).get("ok") for _ in range(4)]
    report.check("another source is unaffected", all(others), others)
    transfer = client(client_ns, "transfer", "10.99.7.2", EDGE_IP, PORT, 32 << 20)
    report.check(f"32 MiB on one established connection is not throttled ({transfer.get('secs', 0):.1f} s)", transfer.get("received", 0) >= 32 << 20, transfer)

    # A later push with one more blocked address: the tunnel and an open connection survive.
    holder = subprocess.Popen(client_ns([sys.executable, "-c", CLIENT, "hold", "10.99.7.2", EDGE_IP, str(PORT)]),
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1)
    try:
        greeting = poll_line(holder)
        report.check("a connection is open before the second push", "target saw client" in greeting, greeting)
        hub.call("updateAllowedEdges", edges(SNAPSHOT_B))
        report.check("the second snapshot is in the kernel", poll("snapshot B", 3, lambda: "10.99.7.5" in (nft_listing(edge_ns) or "")))
        holder.stdin.write("still there\n")
        holder.stdin.flush()
        report.check("the open connection survived the update", "still there" in poll_line(holder))
        newly_blocked = client(client_ns, "connect", "10.99.7.5", EDGE_IP, PORT, 1.5)
        report.check("the newly blocked address is dropped", not newly_blocked.get("ok"), newly_blocked)
        status = edge_status(hub, "edge-fw")
        report.check("the tunnel was not re-established", status and status["connectedAtMs"] == connected_at, status)
    finally:
        holder.stdin.close()
        holder.wait(timeout=10)

    atomicity(report, processes, hub, edges, edge_ns, client_ns)
    no_capability(report, processes, hub, edge_ns, client_ns)
    cannot_brick(report, hub, edges, edge_ns, client_ns, connected_at)

    os.kill(edge.proc.pid, signal.SIGTERM)
    edge.proc.wait(timeout=10)
    report.check("SIGTERM removes the table", poll("table removed", 5, lambda: nft_listing(edge_ns) is None))
    stale_table(report, processes, hub, edges, edge_ns, client_ns)


def start_edge(processes, edge_ns, name, tunnel_port=TUNNEL_PORT):
    """The edge `edge-fw` (over TLS, to the hub on 127.0.0.1:tunnel_port), started and tracked."""
    token = harness.token("127.0.0.1", tunnel_port, "edge-fw", "fw-secret-0123456789")
    edge = harness.Process(edge_ns([harness.binary(), "edge", "--token", token, "--bind-address", EDGE_IP, "--transport-mode", "tcpTls", "--no-stun", "--json"]), name)
    processes.append(edge)
    return edge


def cannot_brick(report, hub, edges, edge_ns, client_ns, connected_at):
    """A snapshot that would cut everything, hub included: the tunnel stays and carries the fix."""
    result = hub.call("updateAllowedEdges", edges(BRICK))
    report.check("the all-blocking snapshot is pushed", result.get("result", {}).get("pushed") == 1, result)
    report.check("and applied", poll("BRICK in the kernel", 5, lambda: "rule:drop-out" in (nft_listing(edge_ns) or "")))
    report.check(f"the hub's endpoint the edge resolved (127.0.0.1:{TUNNEL_PORT}) is exempt both ways",
                 f"ip saddr 127.0.0.1 meta l4proto @tcp_udp th sport {TUNNEL_PORT}" in (nft_listing(edge_ns) or "")
                 and f"ip daddr 127.0.0.1 meta l4proto @tcp_udp th dport {TUNNEL_PORT}" in (nft_listing(edge_ns) or ""),
                 nft_listing(edge_ns))
    # The edge's report (applied, with its digest) travels back over the tunnel through it.
    in_sync = poll("hub sees the BRICK applied", 5, lambda: (edge_status(hub, "edge-fw") or {}).get("firewall", {}).get("inSync"))
    report.check("the edge's report crosses it: the hub sees the edge in sync", in_sync, edge_status(hub, "edge-fw"))
    dropped = client(client_ns, "connect", "10.99.7.2", EDGE_IP, PORT, 1.5)
    report.check("clients are dropped while it is in force", not dropped.get("ok") and not dropped.get("refused"), dropped)
    hub_packets = sum(int(line.split("counter packets ")[1].split()[0])
                      for line in (nft_listing(edge_ns) or "").splitlines() if "exempt:hub" in line)
    report.check(f"the hub's exemption is what lets the tunnel through ({hub_packets} packets)", hub_packets > 0, hub_packets)
    result = hub.call("updateAllowedEdges", edges(SNAPSHOT_A))
    report.check("the correction is pushed", result.get("result", {}).get("pushed") == 1, result)
    fixed = poll("the correction in the kernel", 3, lambda: (lambda text: "10.99.7.3" in text and "0.0.0.0/0" not in text)(nft_listing(edge_ns) or ""))
    report.check("the correction arrives and is applied within 3 s", fixed, nft_listing(edge_ns))
    through = client(client_ns, "connect", "10.99.7.2", EDGE_IP, PORT, 3)
    report.check("clients pass through the tunnel again", through.get("ok"), through)
    status = edge_status(hub, "edge-fw")
    report.check("the tunnel was never re-established", status and status["connectedAtMs"] == connected_at, status)


def stale_table(report, processes, hub, edges, edge_ns, client_ns):
    """Tables left by a SIGKILLed edge, found by the next edge that starts."""
    def kill_with_table(name):
        edge = start_edge(processes, edge_ns, name)
        edge.wait_event("firewallConfigUpdated", timeout=20)
        os.kill(edge.proc.pid, signal.SIGKILL)
        edge.proc.wait(timeout=10)
        return "10.99.7.3" in (nft_listing(edge_ns) or "")

    report.check("SIGKILL leaves the table in force", kill_with_table("fw-edge-killed-1"))
    # The hub is unreachable (nothing listens on the port): the stale rules stay in force, with
    # the new edge's exemption put at the head of its chains; SIGTERM removes them.
    lone = start_edge(processes, edge_ns, "fw-edge-no-hub", tunnel_port=TUNNEL_PORT + 1)
    lone.wait_event("tunnelConnectFailed", timeout=20)
    exempted = poll("the exemption in the stale table", 5, lambda: (nft_listing(edge_ns) or "").count("exempt:own-flows") == 4)
    report.check("a starting edge puts its exemption at the head of a stale table", exempted, nft_listing(edge_ns))
    report.check("and keeps its rules while the hub is unreachable", "10.99.7.3" in (nft_listing(edge_ns) or ""))
    report.check("the endpoint it resolved the hub to is exempted in it",
                 poll("the new hub endpoint in the stale table", 5, lambda: f"th sport {TUNNEL_PORT + 1}" in (nft_listing(edge_ns) or "")),
                 nft_listing(edge_ns))
    blocked = client(client_ns, "connect", "10.99.7.3", EDGE_IP, PORT, 1.5)
    unblocked = client(client_ns, "connect", "10.99.7.2", EDGE_IP, PORT, 1.5)
    report.check("(a blocked source is still dropped; another is refused: nothing listens)",
                 not blocked.get("ok") and not blocked.get("refused") and unblocked.get("refused"), (blocked, unblocked))
    os.kill(lone.proc.pid, signal.SIGTERM)
    lone.proc.wait(timeout=15)
    report.check("SIGTERM removes a stale table too", poll("stale table removed", 5, lambda: nft_listing(edge_ns) is None))

    # The hub has no snapshot for the edge any more: its first configuration removes the table.
    report.check("SIGKILL leaves the table in force (again)", kill_with_table("fw-edge-killed-2"))
    report.check("the hub drops the edge's snapshot", hub.call("updateAllowedEdges", edges(None)).get("success"))
    restarted = start_edge(processes, edge_ns, "fw-edge-restarted")
    restarted.wait_event("tunnelConnected", timeout=20)
    report.check("a hub without a snapshot for the edge removes the stale table", poll("stale table removed", 5, lambda: nft_listing(edge_ns) is None), nft_listing(edge_ns))
    restarted.stop()


def poll_line(process, timeout=10):
    ready = [process.stdout]
    import select
    readable, _, _ = select.select(ready, [], [], timeout)
    return process.stdout.readline().strip() if readable else ""


def atomicity(report, processes, hub, edges, edge_ns, client_ns):
    """Snapshots alternate while a blocked source streams UDP and `nft list` runs in a loop."""
    sink = subprocess.Popen(edge_ns([sys.executable, "-c", SINK, EDGE_IP, str(UDP_SINK_PORT)]), stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    try:
        report.check("UDP sink listening", sink.stdout.readline().strip() == "listening")
        missing = {"checks": 0, "missing": 0}
        stop = threading.Event()

        def lister():
            while not stop.is_set():
                missing["checks"] += 1
                if nft_listing(edge_ns) is None:
                    missing["missing"] += 1

        threads = [threading.Thread(target=lister)]
        streams = {}
        for src in ("10.99.7.3", "10.99.7.2"):
            threads.append(threading.Thread(target=lambda s=src: streams.__setitem__(s, client(client_ns, "udp", s, EDGE_IP, UDP_SINK_PORT, 4))))
        for thread in threads:
            thread.start()
        updates = 0
        deadline = time.monotonic() + 3.5
        while time.monotonic() < deadline:
            hub.call("updateAllowedEdges", edges(SNAPSHOT_A if updates % 2 else SNAPSHOT_B))
            updates += 1
        for thread in threads[1:]:
            thread.join(timeout=30)
        stop.set()
        threads[0].join(timeout=30)
        sink.stdin.close()
        counts = json.loads(sink.stdout.readline())
    finally:
        sink.kill()
        sink.wait(timeout=5)
    report.check(f"{updates} alternating snapshots pushed", updates >= 20, updates)
    report.check(f"the control source's datagrams arrive ({counts.get('10.99.7.2', 0)} of {streams.get('10.99.7.2')})", counts.get("10.99.7.2", 0) > 100, counts)
    report.check(f"the blocked source never gets a datagram through (sent {streams.get('10.99.7.3')})", counts.get("10.99.7.3", 0) == 0, counts)
    report.check(f"nft list never found the table missing ({missing['checks']} listings)", missing["missing"] == 0 and missing["checks"] > 10, missing)


def no_capability(report, processes, hub, edge_ns, client_ns):
    token = harness.token("127.0.0.1", TUNNEL_PORT, "edge-nocap", "nocap-secret-0123456789")
    argv = ["setpriv", "--inh-caps=-net_admin", "--bounding-set=-net_admin",
            harness.binary(), "edge", "--token", token, "--bind-address", EDGE_IP, "--transport-mode", "tcpTls", "--no-stun", "--json"]
    edge = harness.Process(edge_ns(argv), "fw-nocap")
    processes.append(edge)
    edge.wait_event("tunnelConnected", timeout=20)
    unavailable = edge.wait_event("firewallUnavailable", timeout=10)
    report.check("without NET_ADMIN the edge reports the firewall unavailable", "CAP_NET_ADMIN" in unavailable.get("error", ""), unavailable)
    through = client(client_ns, "connect", "10.99.7.2", EDGE_IP, NOCAP_PORT, 3)
    report.check("and keeps tunnelling", through.get("ok"), through)
    state = poll("hub sees unavailable", 5, lambda: (edge_status(hub, "edge-nocap") or {}).get("firewall", {}).get("state") == "unavailable")
    report.check("hub status shows the firewall unavailable", state, edge_status(hub, "edge-nocap"))
    edge.stop()


if __name__ == "__main__":
    sys.exit(main())
