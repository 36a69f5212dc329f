#!/usr/bin/env python3
"""Egress end to end: the hub asks an edge to dial out, under the edge's policy.

    hub ns 10.88.0.1 --veth-- 10.88.0.2 edge ns (edges eg-quic and eg-tls), also 10.89.0.5:
                                        an SMTP-like target that speaks first

The hub runs in --management mode (startEgressTcpProxy is an IPC method); clients of its
one-shot proxy connect to 127.0.0.1 inside the hub's namespace. Names resolve through
/etc/netns/<edge ns>/hosts (ip netns exec mounts it over /etc/hosts), never the machine's DNS.
Prints the time to the banner through the proxy next to a direct dial in the edge's namespace.
"""
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tools"))
import harness  # noqa: E402

HUB_IP, EDGE_IP, TARGET_IP, NOBODY_IP = "10.88.0.1", "10.88.0.2", "10.89.0.5", "10.89.0.99"
SMTP_PORT, OTHER_PORT, TUNNEL_PORT = 2525, 2526, 18446
SECRET = "egress-secret-1-0123456789"

# Server-first target: a banner, then "250 <line>" for each line.
TARGET = r"""
import socket, sys, threading
server = socket.create_server((sys.argv[1], int(sys.argv[2])))
print("listening", flush=True)
def serve(conn):
    with conn:
        conn.sendall(b"220 egress-test ESMTP\r\n")
        f = conn.makefile("rb")
        for line in f:
            conn.sendall(b"250 " + line)
while True:
    conn, _ = server.accept()
    threading.Thread(target=serve, args=(conn,), daemon=True).start()
"""

# Connects to host:port; prints one JSON line: the banner, the reply to one line, the time to
# the banner in ms, or the error.
CLIENT = r"""
import json, socket, sys, time
started = time.monotonic()
try:
    s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=15)
    f = s.makefile("rb")
    hold = float(sys.argv[3]) if len(sys.argv) > 3 else 0
    send_first = len(sys.argv) > 4 and sys.argv[4] == "send-first"
    if send_first:
        s.sendall(b"EHLO egress.test\r\n")
    banner = f.readline().decode().strip()
    ttfb = (time.monotonic() - started) * 1000
    if not send_first:
        s.sendall(b"EHLO egress.test\r\n")
    reply = f.readline().decode().strip()
    time.sleep(hold)
    print(json.dumps({"banner": banner, "reply": reply, "ttfbMs": ttfb}), flush=True)
except OSError as e:
    print(json.dumps({"error": type(e).__name__}), flush=True)
"""


def main():
    if os.geteuid() != 0:
        print("needs root for network namespaces")
        return 1
    report = harness.Report()
    namespaces = harness.linked_namespaces("rieg", [f"{HUB_IP}/24"], [f"{EDGE_IP}/24"])
    with namespaces as (hub_ns, edge_ns, _, edge_dev), harness.stopping() as processes:
        etc = f"/etc/netns/{edge_ns}"
        try:
            os.makedirs(etc, exist_ok=True)
            with open(f"{etc}/hosts", "w") as hosts:
                hosts.write(f"127.0.0.1 localhost\n{TARGET_IP} mail.lan.test\n127.0.0.1 rebind.lan.test\n")
            scenario(report, processes, hub_ns, edge_ns, edge_dev)
        finally:
            subprocess.run(["rm", "-rf", etc], check=False)
    return report.finish()


def scenario(report, processes, hub_ns, edge_ns, edge_dev):
    in_hub = lambda argv: ["ip", "netns", "exec", hub_ns, *argv]  # noqa: E731
    in_edge = lambda argv: ["ip", "netns", "exec", edge_ns, *argv]  # noqa: E731
    # The target's private address sits on the edge's side; the unreachable one is routed to
    # the hub's namespace, which does not forward: a black hole, as a dead host looks.
    harness.run(*in_edge(["ip", "addr", "add", f"{TARGET_IP}/32", "dev", edge_dev]))
    harness.run(*in_edge(["ip", "route", "add", f"{NOBODY_IP}/32", "via", HUB_IP]))
    target = harness.Process(in_edge([sys.executable, "-c", TARGET, TARGET_IP, str(SMTP_PORT)]), "eg-target")
    processes.append(target)
    target.wait_line(lambda line: line == "listening")

    def client(port, host="127.0.0.1", hold=0, inside=in_hub, order="banner-first"):
        out = subprocess.run(inside([sys.executable, "-c", CLIENT, host, str(port), str(hold), order]),
                             capture_output=True, text=True, timeout=30).stdout.strip()
        return json.loads(out) if out else {"error": "no output"}

    with tempfile.TemporaryDirectory(prefix="ri-eg-") as workdir:
        hub = harness.Management(in_hub([harness.binary(), "--management"]), "eg-hub")
        processes.append(hub)
        hub.wait_line(lambda line: '"ready"' in line)
        started = hub.call("start", {"role": "hub", "config": {"tunnelPort": TUNNEL_PORT, "stateDir": workdir}})
        report.check("hub started", started.get("success"), started)

        def allow(**egress):
            policy = {"enabled": True, "allowedPorts": [SMTP_PORT], "allowPrivateRanges": True,
                      "maxConcurrentStreams": 2, **egress}
            edges = [{"id": "eg-quic", "secret": SECRET, "egress": policy},
                     {"id": "eg-tls", "secret": SECRET, "egress": policy}]
            answer = hub.call("updateAllowedEdges", {"edges": edges})
            assert answer.get("success"), answer

        allow()
        since = time.monotonic()
        for edge_id, transport in (("eg-quic", "quic"), ("eg-tls", "tcpTls")):
            processes.append(harness.Process(in_edge([
                harness.binary(), "edge", "--hub-host", HUB_IP, "--hub-port", str(TUNNEL_PORT), "--edge-id", edge_id,
                "--secret", SECRET, "--transport-mode", transport, "--no-stun", "--json"]), edge_id))
        for edge_id in ("eg-quic", "eg-tls"):
            hub.wait_event_time("edgeConnected", since, lambda d, e=edge_id: d.get("edgeId") == e, timeout=20)

        def proxy(host, port=SMTP_PORT, edge="eg-quic", **extra):
            answer = hub.call("startEgressTcpProxy", {"edgeId": edge, "logicalHost": host, "port": port,
                                                      "serverFirst": True, **extra})
            return answer

        def outcome(proxy_id, timeout=15):
            match = lambda d: d.get("proxyId") == proxy_id  # noqa: E731
            hub.wait_event_time("egressConnection", 0, match, timeout=timeout)
            for at, line in reversed(hub.timed):
                event = json.loads(line) if line.startswith("{") else {}
                if event.get("event") == "egressConnection" and match(event["data"]):
                    return event["data"]
            return {}

        # Connected: banner through the proxy, a reply back, the event names the address.
        started = proxy(TARGET_IP)
        report.check("startEgressTcpProxy answers", started.get("success"), started)
        info = started.get("result", {})
        report.check("the proxy listens on 127.0.0.1 only", info.get("listenHost") == "127.0.0.1", info)
        result = client(info["listenPort"])
        report.check("the banner arrives through the proxy", result.get("banner") == "220 egress-test ESMTP", result)
        report.check("a reply goes back", result.get("reply") == "250 EHLO egress.test", result)
        event = outcome(info["proxyId"])
        report.check("egressConnection: connected with the resolved address",
                     event.get("outcome") == "connected" and event.get("resolvedIp") == TARGET_IP, event)
        again = client(info["listenPort"])
        report.check("one-shot: a second connection to the proxy is refused", again.get("error") == "ConnectionRefusedError", again)
        outside = proxy(TARGET_IP)
        info = outside["result"]
        from_edge = client(info["listenPort"], host=HUB_IP, inside=in_edge)
        report.check("the proxy is not reachable on the hub's other addresses", from_edge.get("error") == "ConnectionRefusedError",
                     from_edge)
        hub.call("stopEgressTcpProxy", {"proxyId": info["proxyId"]})

        # Without serverFirst the edge is asked at the client's first byte.
        client_first = proxy(TARGET_IP, serverFirst=False)["result"]
        result = client(client_first["listenPort"], order="send-first")
        report.check("serverFirst false: the request goes out with the client's first bytes",
                     result.get("banner", "").startswith("220") and result.get("reply") == "250 EHLO egress.test", result)

        # A name from the edge's hosts file; a matching name that points at loopback is denied.
        named = proxy("mail.lan.test")["result"]
        result = client(named["listenPort"])
        report.check("a host name is resolved on the edge", result.get("banner", "").startswith("220"), result)
        rebind = proxy("rebind.lan.test")["result"]
        result = client(rebind["listenPort"])
        event = outcome(rebind["proxyId"])
        report.check("DNS rebinding to loopback is denied", event.get("outcome") == "denied" and "loopback" in event.get("rule", ""),
                     event)
        report.check("the client of a denied request sees the connection fail", "error" in result, result)

        # Policy: a port outside allowedPorts, a private address without allowPrivateRanges.
        other = proxy(TARGET_IP, port=OTHER_PORT)["result"]
        client(other["listenPort"])
        event = outcome(other["proxyId"])
        report.check("a port outside allowedPorts is denied", event.get("outcome") == "denied" and "allowedPorts" in event.get("rule", ""),
                     event)
        allow(allowPrivateRanges=False)
        wait_for_push = time.monotonic() + 10
        while True:
            closed = proxy(TARGET_IP)["result"]
            client(closed["listenPort"])
            event = outcome(closed["proxyId"])
            if event.get("outcome") == "denied" or time.monotonic() > wait_for_push:
                break
            time.sleep(0.2)
        report.check("a private address without allowPrivateRanges is denied",
                     event.get("outcome") == "denied" and "private" in event.get("rule", ""), event)
        allow()

        # Unreachable: timeout within connectTimeoutMs plus a margin.
        black_hole = proxy(NOBODY_IP, connectTimeoutMs=1500)["result"]
        asked = time.monotonic()
        client(black_hole["listenPort"])
        event = outcome(black_hole["proxyId"])
        took = time.monotonic() - asked
        report.check(f"an unreachable address times out ({took:.1f} s for connectTimeoutMs 1500)",
                     event.get("outcome") == "timeout" and took < 3.0, event)

        # maxConcurrentStreams 2: two held connections, the third is refused.
        held = []
        for _ in range(2):
            info = proxy(TARGET_IP)["result"]
            held.append(subprocess.Popen(in_hub([sys.executable, "-c", CLIENT, "127.0.0.1", str(info["listenPort"]), "3"]),
                                         stdout=subprocess.PIPE, text=True))
            outcome(info["proxyId"])
        third = proxy(TARGET_IP)["result"]
        client(third["listenPort"])
        event = outcome(third["proxyId"])
        report.check("maxConcurrentStreams + 1: the last is denied",
                     event.get("outcome") == "denied" and "maxConcurrentStreams" in event.get("rule", ""), event)
        status = hub.call("getStatus")["result"]
        quic_edge = next(e for e in status["connectedEdges"] if e["edgeId"] == "eg-quic")
        report.check("status: capabilities, egressEnabled, open egress streams",
                     "egress" in quic_edge["capabilities"] and quic_edge["egressEnabled"] and quic_edge["egressStreams"] == 2,
                     quic_edge)
        for process in held:
            process.communicate(timeout=20)

        # Lifecycle: stopEgressTcpProxy removes a proxy; an unused one expires.
        unused = proxy(TARGET_IP)["result"]
        stopped = hub.call("stopEgressTcpProxy", {"proxyId": unused["proxyId"]})
        report.check("stopEgressTcpProxy removes the proxy", stopped.get("success") and
                     client(unused["listenPort"]).get("error") == "ConnectionRefusedError", stopped)
        again = hub.call("stopEgressTcpProxy", {"proxyId": unused["proxyId"]})
        report.check("stopping it again: unknown_proxy", again.get("code") == "unknown_proxy", again)
        expiring = proxy(TARGET_IP, idleTimeoutMs=500)["result"]
        deadline = time.monotonic() + 5
        while client(expiring["listenPort"]).get("error") != "ConnectionRefusedError" and time.monotonic() < deadline:
            time.sleep(0.1)
        gone = hub.call("stopEgressTcpProxy", {"proxyId": expiring["proxyId"]})
        report.check("an unused proxy expires after idleTimeoutMs", gone.get("code") == "unknown_proxy", gone)

        # Fail closed over TLS.
        tls = proxy(TARGET_IP, edge="eg-tls")
        report.check("over tcpTls: egress_needs_quic", tls.get("code") == "egress_needs_quic", tls)
        missing = proxy(TARGET_IP, edge="nobody")
        report.check("an edge that is not connected: edge_not_connected", missing.get("code") == "edge_not_connected", missing)

        from_typescript(report, processes, in_hub, in_edge, workdir)

        # Overhead: time to the banner through the proxy vs a direct dial in the edge's namespace.
        through, direct = [], []
        for _ in range(10):
            info = proxy(TARGET_IP)["result"]
            through.append(client(info["listenPort"])["ttfbMs"])
            direct.append(client(SMTP_PORT, host=TARGET_IP, inside=in_edge)["ttfbMs"])
        print(f"time to the banner, median of 10: through the egress proxy {statistics.median(through):.2f} ms, "
              f"direct in the edge's namespace {statistics.median(direct):.2f} ms")


def from_typescript(report, processes, in_hub, in_edge, workdir):
    """One egress round trip with the hub driven by the TypeScript wrapper (its own hub, on
    another tunnel port, in the same namespaces)."""
    script = os.path.join(os.path.dirname(os.path.abspath(__file__)), "egress_hub.mjs")
    if not os.path.exists(os.path.join(harness.REPO, "ts-wrapper", "dist", "src", "index.js")):
        report.check("TypeScript: the wrapper is built (npm run build in ts-wrapper)", False)
        return
    tunnel_port = TUNNEL_PORT + 1
    state = os.path.join(workdir, "ts-hub")
    ts_hub = harness.Process(in_hub(["node", script, harness.binary(), str(tunnel_port), state, "eg-ts", SECRET,
                                     "mail.lan.test", str(SMTP_PORT)]), "eg-ts-hub")
    processes.append(ts_hub)
    ts_hub.wait_line(lambda line: line == "ready", timeout=30)
    processes.append(harness.Process(in_edge([
        harness.binary(), "edge", "--hub-host", HUB_IP, "--hub-port", str(tunnel_port), "--edge-id", "eg-ts",
        "--secret", SECRET, "--transport-mode", "quic", "--no-stun", "--json"]), "eg-ts-edge"))
    result = json.loads(ts_hub.wait_line(lambda line: line.startswith("{"), timeout=60))
    event = result.get("event", {})
    report.check("TypeScript: one egress round trip (banner, reply, connected event)",
                 result.get("banner") == "220 egress-test ESMTP" and result.get("reply") == "250 EHLO from typescript"
                 and event.get("outcome") == "connected" and event.get("resolvedIp") == TARGET_IP, result)


if __name__ == "__main__":
    sys.exit(main())
