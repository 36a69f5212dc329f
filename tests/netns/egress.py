#!/usr/bin/env python3
"""Egress end to end: the hub asks an edge to dial out, under the edge's policy.

    hub ns 10.88.0.1 --veth-- 10.88.0.2 edge ns (edges eg-quic and eg-tls), also 10.89.0.5:
                                        an SMTP-like target that speaks first

One hub runs in --management mode (startEgressTcpProxy and startEgressTcpListener are IPC
methods); another runs from a hub.toml with [[egress]] listeners, reloaded on SIGHUP. Clients of
the proxies and listeners connect to 127.0.0.1 inside the hub's namespace. Names resolve through
/etc/netns/<edge ns>/hosts (ip netns exec mounts it over /etc/hosts), never the machine's DNS.
Prints the time to the banner through the proxy next to a direct dial in the edge's namespace.
"""
import json
import os
import signal
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

# Connects, prints {"banner": ...} (or {"error": ...}), then at each stdin line sends it and
# prints {"reply": ...}: a connection the test holds open across other events.
HELD = r"""
import json, socket, sys
try:
    s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=15)
    f = s.makefile("rb")
    print(json.dumps({"banner": f.readline().decode().strip()}), flush=True)
    for line in sys.stdin:
        s.sendall(line.strip().encode() + b"\r\n")
        print(json.dumps({"reply": f.readline().decode().strip()}), flush=True)
except OSError as e:
    print(json.dumps({"error": type(e).__name__}), flush=True)
"""

# Prints {"name|label=value,...": value} of every sample of http://127.0.0.1:PORT/metrics, read
# with the Prometheus client library's OpenMetrics parser (asked for, as Prometheus asks).
SCRAPE = r"""
import json, sys, urllib.request
from prometheus_client.openmetrics.parser import text_string_to_metric_families
request = urllib.request.Request(f"http://127.0.0.1:{sys.argv[1]}/metrics",
                                 headers={"Accept": "application/openmetrics-text;version=1.0.0"})
text = urllib.request.urlopen(request, timeout=5).read().decode()
samples = {}
for family in text_string_to_metric_families(text):
    for sample in family.samples:
        labels = ",".join(f"{k}={v}" for k, v in sorted(sample.labels.items()))
        samples[f"{sample.name}|{labels}"] = sample.value
print(json.dumps(samples))
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

        ipc_listener(report, hub, client, outcome)
        from_typescript(report, processes, in_hub, in_edge, workdir)
        from_config_file(report, processes, in_hub, in_edge, client, workdir)

        # Overhead: time to the banner through the proxy vs a direct dial in the edge's namespace.
        through, direct = [], []
        for _ in range(10):
            info = proxy(TARGET_IP)["result"]
            through.append(client(info["listenPort"])["ttfbMs"])
            direct.append(client(SMTP_PORT, host=TARGET_IP, inside=in_edge)["ttfbMs"])
        print(f"time to the banner, median of 10: through the egress proxy {statistics.median(through):.2f} ms, "
              f"direct in the edge's namespace {statistics.median(direct):.2f} ms")


def ipc_listener(report, hub, client, outcome):
    """startEgressTcpListener: a persistent listener serves one connection after another until
    stopEgressTcpListener closes it."""
    started = hub.call("startEgressTcpListener", {"listenAddr": "127.0.0.1:0", "edgeId": "eg-quic",
                                                   "logicalHost": TARGET_IP, "port": SMTP_PORT, "serverFirst": True})
    report.check("startEgressTcpListener answers with its id and port", started.get("success"), started)
    if not started.get("success"):
        return
    info = started["result"]
    results = [client(info["listenPort"]) for _ in range(3)]
    report.check("IPC listener: three connections one after another each get the banner and a reply",
                 all(r.get("banner") == "220 egress-test ESMTP" and r.get("reply") == "250 EHLO egress.test" for r in results),
                 results)
    event = outcome(info["listenerId"])
    report.check("IPC listener: egressConnection carries the listener's id",
                 event.get("outcome") == "connected" and event.get("resolvedIp") == TARGET_IP, event)
    status = hub.call("getStatus")["result"]
    listed = [entry for entry in status.get("egressListeners", []) if entry.get("listenerId") == info["listenerId"]]
    report.check("IPC listener: in getStatus with its counts",
                 len(listed) == 1 and listed[0]["source"] == "ipc" and listed[0]["connected"] == 3
                 and listed[0]["listenAddr"] == f"127.0.0.1:{info['listenPort']}", status.get("egressListeners"))
    missing = hub.call("startEgressTcpListener", {"listenAddr": "127.0.0.1:0", "edgeId": "nobody",
                                                   "logicalHost": TARGET_IP, "port": SMTP_PORT, "serverFirst": True})
    if missing.get("success"):
        asked = time.monotonic()
        result = client(missing["result"]["listenPort"])
        took = time.monotonic() - asked
        report.check(f"IPC listener for an edge that is not connected: refused at once ({took * 1000:.0f} ms)",
                     result.get("error") in ("ConnectionResetError", "ConnectionAbortedError") and took < 2, result)
        hub.call("stopEgressTcpListener", {"listenerId": missing["result"]["listenerId"]})
    else:
        report.check("IPC listener for an edge that is not connected starts", False, missing)
    stopped = hub.call("stopEgressTcpListener", {"listenerId": info["listenerId"]})
    after = client(info["listenPort"])
    report.check("stopEgressTcpListener closes the listener",
                 stopped.get("success") and after.get("error") == "ConnectionRefusedError", (stopped, after))
    again = hub.call("stopEgressTcpListener", {"listenerId": info["listenerId"]})
    report.check("stopping it again: unknown_listener", again.get("code") == "unknown_listener", again)
    taken = hub.call("startEgressTcpListener", {"listenAddr": f"127.0.0.1:{info['listenPort']}", "edgeId": "eg-quic",
                                                 "logicalHost": TARGET_IP, "port": SMTP_PORT})
    if taken.get("success"):
        busy = hub.call("startEgressTcpListener", {"listenAddr": f"127.0.0.1:{info['listenPort']}", "edgeId": "eg-quic",
                                                    "logicalHost": TARGET_IP, "port": SMTP_PORT})
        report.check("a taken address: bind_failed naming it",
                     busy.get("code") == "bind_failed" and f"127.0.0.1:{info['listenPort']}" in busy.get("error", ""), busy)
        hub.call("stopEgressTcpListener", {"listenerId": taken["result"]["listenerId"]})
    else:
        report.check("the released address can be listened on again", False, taken)


def hub_toml(tunnel_port, state_dir, metrics_port, listeners):
    """hub.toml for the config-file hub: edge eg-cfg may dial SMTP_PORT, and `listeners` as
    [[egress]] entries ({listenAddr, edgeId, logicalHost, extra TOML})."""
    lines = ["[hub]", f"tunnelPort = {tunnel_port}", f'stateDir = "{state_dir}"', f'metricsAddr = "127.0.0.1:{metrics_port}"', "",
             "[[edges]]", 'id = "eg-cfg"', f'secret = "{SECRET}"',
             f"egress = {{ enabled = true, allowedPorts = [{SMTP_PORT}], allowPrivateRanges = true, maxConcurrentStreams = 16 }}"]
    for listen_addr, edge_id, host, extra in listeners:
        lines += ["", "[[egress]]", f'listenAddr = "{listen_addr}"', f'edgeId = "{edge_id}"', f'logicalHost = "{host}"',
                  f"port = {SMTP_PORT}", "serverFirst = true", *extra]
    return "\n".join(lines) + "\n"


def from_config_file(report, processes, in_hub, in_edge, client, workdir):
    """A hub started from hub.toml with [[egress]] entries: a stable local port for an MTA,
    connections one after another and at once, the cap, an edge that is not connected, a
    reload that adds and removes listeners while a connection stays open, a taken address."""
    tunnel_port, metrics_port = TUNNEL_PORT + 2, 19190
    mta, absent, added = "127.0.0.1:12525", "127.0.0.1:12526", "127.0.0.1:12527"
    mta_port, absent_port, added_port = 12525, 12526, 12527
    path = os.path.join(workdir, "hub.toml")
    entries = [(mta, "eg-cfg", "mail.lan.test", ["maxConnections = 3"]), (absent, "eg-absent", TARGET_IP, [])]
    with open(path, "w") as f:
        f.write(hub_toml(tunnel_port, os.path.join(workdir, "cfg-hub"), metrics_port, entries))
    hub = harness.Process(in_hub([harness.binary(), "hub", "--config", path, "--json"]), "eg-cfg-hub")
    processes.append(hub)
    try:
        hub.wait_event("started", timeout=15)
    except Exception:  # noqa: BLE001 - the binary may refuse the file: say so, and stop here
        report.check("a hub starts from hub.toml with [[egress]] entries", False, hub.log_tail())
        return
    held = []

    def reach(port, until, timeout=10):
        """client(port) until `until(result)` or the deadline; the last result."""
        deadline = time.monotonic() + timeout
        while True:
            result = client(port)
            if until(result) or time.monotonic() > deadline:
                return result
            time.sleep(0.1)

    # Before the edge connects, and for an edge that never does: refused at once, never held.
    opened = lambda r: r.get("error") != "ConnectionRefusedError"  # noqa: E731
    reach(mta_port, opened)
    asked = time.monotonic()
    early = client(mta_port)
    took = time.monotonic() - asked
    report.check(f"[[egress]] before its edge connects: the connection is refused at once ({took * 1000:.0f} ms)",
                 early.get("error") in ("ConnectionResetError", "ConnectionAbortedError") and took < 2, early)
    processes.append(harness.Process(in_edge([
        harness.binary(), "edge", "--hub-host", HUB_IP, "--hub-port", str(tunnel_port), "--edge-id", "eg-cfg",
        "--secret", SECRET, "--transport-mode", "quic", "--no-stun", "--json"]), "eg-cfg-edge"))
    banner = lambda r: r.get("banner") == "220 egress-test ESMTP"  # noqa: E731
    first = reach(mta_port, banner, timeout=20)
    sequential = [first] + [client(mta_port) for _ in range(4)]
    report.check("[[egress]]: five connections one after another each reach the destination through the edge",
                 all(banner(r) and r.get("reply") == "250 EHLO egress.test" for r in sequential), sequential)

    def hold(port, name):
        process = harness.Process(in_hub([sys.executable, "-c", HELD, "127.0.0.1", str(port)]), name, stdin=subprocess.PIPE)
        processes.append(process)
        held.append(process)
        return json.loads(process.wait_line(lambda line: line.startswith("{"), timeout=20))

    def reply(process):
        process.proc.stdin.write("EHLO held.test\n")
        process.proc.stdin.flush()
        return json.loads(process.wait_line(lambda line: line.startswith("{"), timeout=20))

    at_once = [hold(mta_port, f"eg-held-{index}") for index in range(3)]
    report.check("[[egress]]: three connections open at once each get the banner", all(banner(r) for r in at_once), at_once)
    asked = time.monotonic()
    over = client(mta_port)
    took = time.monotonic() - asked
    report.check(f"maxConnections 3: a fourth is refused at once ({took * 1000:.0f} ms)",
                 over.get("error") in ("ConnectionResetError", "ConnectionAbortedError") and took < 2, over)
    replies = [reply(process) for process in held[1:]]
    report.check("the connections held at once each get their reply",
                 all(r.get("reply") == "250 EHLO held.test" for r in replies), replies)
    absent_result = client(absent_port)
    report.check("[[egress]] for an edge that is not connected: refused", "error" in absent_result, absent_result)

    out = subprocess.run(in_hub([sys.executable, "-c", SCRAPE, str(metrics_port)]), capture_output=True, text=True, timeout=20)
    samples = json.loads(out.stdout) if out.returncode == 0 else {}
    counted = lambda addr, result: samples.get(f"remoteingress_hub_egress_listener_connections_total|listen_addr={addr},result={result}")  # noqa: E731
    report.check("metrics: per listener, connected / refused_full / refused_edge_not_connected counted",
                 counted(mta, "connected") == 8 and counted(mta, "refused_full") == 1
                 and counted(mta, "refused_edge_not_connected") >= 1 and counted(absent, "refused_edge_not_connected") == 1
                 and counted(absent, "failed") == 0,
                 {k: v for k, v in samples.items() if "egress_listener" in k} or out.stderr[-2000:])

    # Reload: the MTA listener and the absent one go, a new one comes; the held connection of
    # the removed listener finishes.
    with open(path, "w") as f:
        f.write(hub_toml(tunnel_port, os.path.join(workdir, "cfg-hub"), metrics_port,
                         [(added, "eg-cfg", TARGET_IP, [])]))
    os.kill(hub.proc.pid, signal.SIGHUP)
    result = reach(added_port, banner)
    report.check("SIGHUP: an [[egress]] entry added to the file is listened on", banner(result), result)
    gone = reach(mta_port, lambda r: r.get("error") == "ConnectionRefusedError")
    report.check("SIGHUP: an entry removed from the file is no longer listened on",
                 gone.get("error") == "ConnectionRefusedError" and client(absent_port).get("error") == "ConnectionRefusedError", gone)
    last = reply(held[0])
    report.check("a connection of a removed listener stays open and finishes", last.get("reply") == "250 EHLO held.test", last)

    # A file that does not check out changes nothing; a changed entry replaces its listener.
    with open(path, "w") as f:
        f.write(hub_toml(tunnel_port, os.path.join(workdir, "cfg-hub"), metrics_port,
                         [(added, "eg-cfg", TARGET_IP, []), ("not-an-address", "eg-cfg", TARGET_IP, [])]))
    os.kill(hub.proc.pid, signal.SIGHUP)
    deadline = time.monotonic() + 10
    while "configuration not reloaded" not in hub.log_tail(50) and time.monotonic() < deadline:
        time.sleep(0.05)
    kept = client(added_port)
    report.check("SIGHUP with a bad [[egress]] entry: refused, naming it; the listeners stay",
                 "egress[1].listenAddr" in hub.log_tail(50) and banner(kept), (kept, hub.log_tail(5)))
    with open(path, "w") as f:
        f.write(hub_toml(tunnel_port, os.path.join(workdir, "cfg-hub"), metrics_port,
                         [(added, "eg-cfg", "mail.lan.test", [])]))
    since = time.monotonic()
    os.kill(hub.proc.pid, signal.SIGHUP)
    named = lambda d: d.get("logicalHost") == "mail.lan.test"  # noqa: E731
    deadline = time.monotonic() + 10
    while not hub.event_times("egressConnection", since, named) and time.monotonic() < deadline:
        changed = client(added_port)
        time.sleep(0.05)
    report.check("SIGHUP: a changed entry on the same address is replaced", bool(hub.event_times("egressConnection", since, named))
                 and banner(changed), changed)

    # A second hub whose [[egress]] address is taken (by the first hub's new listener).
    other = os.path.join(workdir, "taken.toml")
    with open(other, "w") as f:
        f.write(hub_toml(tunnel_port + 1, os.path.join(workdir, "taken-hub"), metrics_port + 1,
                         [(added, "eg-cfg", TARGET_IP, [])]))
    taken = subprocess.run(in_hub([harness.binary(), "hub", "--config", other]), capture_output=True, text=True, timeout=30)
    report.check("an [[egress]] address that is taken: the hub exits 64 naming it",
                 taken.returncode == 64 and added in taken.stderr and "egress" in taken.stderr,
                 (taken.returncode, taken.stderr[-500:]))


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
    report.check("TypeScript: startEgressTcpListener serves two connections, then stopEgressTcpListener",
                 result.get("listener") == [["220 egress-test ESMTP", "250 EHLO from typescript"]] * 2, result)


if __name__ == "__main__":
    sys.exit(main())
