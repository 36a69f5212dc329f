#!/usr/bin/env python3
"""/metrics, /status, /healthz and /readyz of a real hub and edge on loopback, read with the
Prometheus client library's own parsers (OpenMetrics when asked for, the plain text format
otherwise, counters typed as counters in both): the byte counters match what a client sent and
got and survive the edge's reconnect, a refused login is counted by kind, every failure reason
reads 0 before it happens, every allowed edge has an edge_connected series (a never-connected one
at 0), build_info names the version and commit, non-GET requests get 405, `/` is an index,
/status serves the status JSON and `remoteingress-bin status` summarises it; the edge's /readyz
turns 503 while its hub is down and 200 again when it is back."""
import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request

from prometheus_client.openmetrics.parser import text_string_to_metric_families
from prometheus_client.parser import text_string_to_metric_families as plain_text_families

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tools"))
import harness  # noqa: E402

TOOLS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tools")
SECRET = "metrics-secret-1"
NEVER_SECRET = "metrics-secret-never-2"
# What Prometheus sends.
OPENMETRICS_ACCEPT = ("application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,"
                      "text/plain;version=0.0.4;q=0.5,*/*;q=0.1")
CONNECT_FAILURE_REASONS = ["unreachable", "handshake", "unauthorized", "hubNotVerified", "timeout", "protocol"]


def request(port, path, method="GET", headers=None):
    """(status, body, headers) of METHOD http://127.0.0.1:port/path."""
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=5) as response:
            return response.status, response.read().decode(), response.headers
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode(), error.headers
    except OSError as error:
        return 0, str(error), {}


def get(port, path):
    """(status, body) of GET http://127.0.0.1:port/path."""
    status, body, _ = request(port, path)
    return status, body


def scrape(port):
    """{(name, labels as a sorted tuple): value} of every sample, read as OpenMetrics."""
    status, text, _ = request(port, "/metrics", headers={"Accept": OPENMETRICS_ACCEPT})
    assert status == 200, (status, text)
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def status_json(port):
    status, body = get(port, "/status")
    try:
        return json.loads(body) if status == 200 else {}
    except ValueError:
        return {}


def status_command(*args, env=None):
    """(exit code, stdout, stderr) of `remoteingress-bin status ARGS`."""
    full_env = dict(os.environ)
    full_env.pop("REMOTEINGRESS_METRICS_ADDR", None)
    full_env.update(env or {})
    done = subprocess.run([harness.binary(), "status", *args], capture_output=True, text=True, env=full_env,
                          timeout=30)
    return done.returncode, done.stdout, done.stderr


def check_endpoints(report, hub_metrics):
    """405, the index, the content types and the plain text format's types."""
    status, _, headers = request(hub_metrics, "/metrics", method="POST")
    report.check("POST /metrics: 405 naming GET", status == 405 and "GET" in (headers.get("Allow") or ""),
                 (status, dict(headers)))
    status, _, _ = request(hub_metrics, "/healthz", method="DELETE")
    report.check("DELETE /healthz: 405", status == 405, status)
    status, body, _ = request(hub_metrics, "/")
    report.check("/ is an index of the endpoints", status == 200 and all(
        path in body for path in ("/metrics", "/status", "/healthz", "/readyz")), (status, body))
    status, text, headers = request(hub_metrics, "/metrics")
    content_type = headers.get("Content-Type") or ""
    report.check("plain GET /metrics: the Prometheus text format's content type",
                 content_type.startswith("text/plain; version=0.0.4"), content_type)
    try:
        families = {family.name: family.type for family in plain_text_families(text)}
    except ValueError as error:
        families = {"unparsed": str(error)}
    untyped = sorted(name for name, kind in families.items() if kind in ("unknown", "untyped"))
    report.check("plain text parser: no untyped family", not untyped and families, untyped)
    # The parser names a counter family without its `_total`; what matters is that the samples
    # land in a family typed counter.
    typed = {sample.name: family.type for family in plain_text_families(text) for sample in family.samples} \
        if "unparsed" not in families else {}
    report.check("plain text parser: counters typed as counters",
                 typed.get("remoteingress_hub_login_failures_total") == "counter"
                 and typed.get("remoteingress_hub_edge_tunnels_total") == "counter",
                 {name: kind for name, kind in typed.items() if "total" in name})
    _, _, headers = request(hub_metrics, "/metrics", headers={"Accept": OPENMETRICS_ACCEPT})
    report.check("GET /metrics asking for OpenMetrics gets it",
                 (headers.get("Content-Type") or "").startswith("application/openmetrics-text"),
                 headers.get("Content-Type"))


def check_build_info(report, samples):
    builds = [dict(labels) for (name, labels), value in samples.items()
              if name == "remoteingress_build_info" and value == 1]
    # `remoteingress-bin VERSION (commit COMMIT)`: the metric says the same.
    line = harness.run(harness.binary(), "--version").stdout.strip()
    match = re.fullmatch(r"remoteingress-bin (\S+) \(commit (unknown|[0-9a-f]{7,})\)", line)
    report.check(f"build_info: the version and commit of --version ({line})",
                 match is not None and builds == [{"version": match.group(1), "commit": match.group(2)}], builds)


def wait_or_last(check, last, timeout=15):
    """check()'s first true value within timeout, else last() (for checks that report rather
    than stop the run)."""
    try:
        return wait_for("", check, timeout)
    except TimeoutError:
        return last()


wait_for = harness.wait_for


def main():
    report = harness.Report()
    with harness.stopping() as processes:
        with tempfile.TemporaryDirectory(prefix="ri-metrics-") as workdir:
            port = harness.free_port("127.0.0.1", also_free_on=["127.0.0.2"])
            dead_port = harness.free_port("127.0.0.1", also_free_on=["127.0.0.2"])  # nothing listens there
            tunnel_port, hub_metrics, edge_metrics = harness.free_port(), harness.free_port(), harness.free_port()
            target = harness.Process([sys.executable, os.path.join(TOOLS, "proxy_target.py"), "--port", str(port)], "m-target")
            processes.append(target)
            target.wait_line(lambda line: line.startswith("listening"))
            edges = os.path.join(workdir, "edges.json")
            with open(edges, "w") as f:
                json.dump([{"id": "m-edge", "secret": SECRET, "listenPorts": [port, dead_port]},
                           {"id": "m-never", "secret": NEVER_SECRET, "listenPorts": []}], f)
            hub_argv = [harness.binary(), "hub", "--tunnel-port", str(tunnel_port), "--edges", edges, "--state-dir", workdir,
                        "--metrics-addr", f"127.0.0.1:{hub_metrics}", "--json"]
            hub = harness.Process(hub_argv, "m-hub")
            processes.append(hub)
            started = hub.wait_event("started")
            check_endpoints(report, hub_metrics)
            before = scrape(hub_metrics)
            check_build_info(report, before)
            report.check("hub: every login failure kind at 0 before any",
                         all(before.get(("remoteingress_hub_login_failures_total", (("reason", kind),))) == 0
                             for kind in ("refused", "handshake")), before)
            never = (("edge_id", "m-never"),)
            report.check("hub: egress outcomes of an allowed edge at 0",
                         all(before.get(("remoteingress_hub_egress_connections_total",
                                         (("edge_id", "m-never"), ("outcome", outcome)))) == 0
                             for outcome in ("connected", "denied", "failed", "timeout")))
            edge = harness.Process([harness.binary(), "edge", "--hub-host", "127.0.0.1", "--hub-port", str(tunnel_port),
                                    "--edge-id", "m-edge", "--secret", SECRET, "--transport-mode", "tcpTls",
                                    "--bind-address", "127.0.0.2", "--no-stun", "--metrics-addr", f"127.0.0.1:{edge_metrics}",
                                    "--json"], "m-edge")
            processes.append(edge)
            edge.wait_event("tunnelConnected", timeout=20)
            # Listening by the time portsAssigned is out (no probe connection: it would count).
            edge.wait_event("portsAssigned")
            report.check("/healthz", get(hub_metrics, "/healthz")[0] == 200 and get(edge_metrics, "/healthz")[0] == 200)
            report.check("edge /readyz: ready with the tunnel up", get(edge_metrics, "/readyz")[0] == 200,
                         get(edge_metrics, "/readyz"))
            connected = wait_or_last(lambda: (
                (lambda m: m if m.get(("remoteingress_hub_edge_connected", (("edge_id", "m-edge"),))) == 1 else None)(
                    scrape(hub_metrics))), lambda: scrape(hub_metrics), timeout=10)
            report.check("hub: edge_connected 1 for the connected edge, 0 for one that never connected",
                         connected.get(("remoteingress_hub_edge_connected", (("edge_id", "m-edge"),))) == 1
                         and connected.get(("remoteingress_hub_edge_connected", never)) == 0, connected)
            edge_first = scrape(edge_metrics)
            report.check("edge: every connect failure reason at 0",
                         all(edge_first.get(("remoteingress_edge_connect_failures_total", (("reason", reason),))) == 0
                             for reason in CONNECT_FAILURE_REASONS),
                         {k: v for k, v in edge_first.items() if "connect_failures" in k[0]})

            # One transfer; the counters must match it byte for byte once it has ended.
            payload = os.urandom(200_000)
            with socket.create_connection(("127.0.0.2", port), timeout=10) as client:
                reader = client.makefile("rb")
                greeting = reader.readline()
                client.sendall(payload)
                client.shutdown(socket.SHUT_WR)
                echoed = reader.read()
            received = len(greeting) + len(echoed)
            report.check("the transfer came back whole", echoed == payload)
            edge_label = (("edge_id", "m-edge"),)
            hub_in = wait_for("hub byte counters", lambda: (
                (lambda m: m if m.get(("remoteingress_hub_edge_bytes_in_total", edge_label)) == len(payload) else None)(
                    scrape(hub_metrics))))
            report.check(f"hub: bytes in = {len(payload)} sent", hub_in[("remoteingress_hub_edge_bytes_in_total", edge_label)]
                         == len(payload))
            report.check(f"hub: bytes out = {received} received",
                         hub_in[("remoteingress_hub_edge_bytes_out_total", edge_label)] == received,
                         hub_in.get(("remoteingress_hub_edge_bytes_out_total", edge_label)))
            report.check("hub: one stream", hub_in[("remoteingress_hub_edge_streams_total", edge_label)] == 1)
            report.check("hub: refused client sources counted (none: the edge is on the hub's host)",
                         hub_in.get(("remoteingress_hub_edge_refused_sources_total", edge_label)) == 0)
            report.check("hub: one edge on tcpTls", hub_in[("remoteingress_hub_connected_edges", (("transport", "tcpTls"),))] == 1)
            edge_samples = wait_for("edge byte counters", lambda: (
                (lambda m: m if m.get(("remoteingress_edge_bytes_in_total", ())) == len(payload) else None)(scrape(edge_metrics))))
            report.check("edge: bytes in and out match", edge_samples[("remoteingress_edge_bytes_out_total", ())] == received)
            report.check("edge: tunnel connected", edge_samples[("remoteingress_edge_tunnel_connected", ())] == 1)

            # A port whose target is down: the client is reset, the hub counts a connect error.
            try:
                with socket.create_connection(("127.0.0.2", dead_port), timeout=10) as client:
                    client.recv(1)
            except OSError:
                pass
            errors = wait_for("a target connect error", lambda: scrape(hub_metrics).get(
                ("remoteingress_hub_edge_target_connect_errors_total", edge_label), 0) >= 1)
            report.check("hub: target connect errors counted", errors)

            # The heartbeat's round trips (a PING every 3 s) land in the RTT histogram.
            rtt = wait_for("a heartbeat RTT observation", lambda: (
                (lambda m: m if m.get(("remoteingress_hub_heartbeat_rtt_seconds_count", edge_label), 0) >= 1 else None)(
                    scrape(hub_metrics))), timeout=15)
            total = rtt[("remoteingress_hub_heartbeat_rtt_seconds_sum", edge_label)]
            report.check(f"hub: heartbeat RTT histogram ({total * 1000:.2f} ms in all)", 0 < total < 1, total)

            # A refused login is counted by kind, never labelled by address.
            intruder = harness.Process([harness.binary(), "edge", "--hub-host", "127.0.0.1", "--hub-port", str(tunnel_port),
                                        "--edge-id", "m-edge", "--secret", "wrong-secret-0123456789", "--transport-mode", "tcpTls",
                                        "--no-stun", "--json"], "m-intruder")
            processes.append(intruder)
            intruder.wait_event("tunnelConnectFailed", timeout=20)
            intruder.stop()
            refused = scrape(hub_metrics).get(("remoteingress_hub_login_failures_total", (("reason", "refused"),)), 0)
            report.check(f"hub: refused logins counted ({refused:.0f})", refused >= 1)
            status, text = get(hub_metrics, "/metrics")
            report.check("no client address as a label", "127.0.0.1" not in text and "127.0.0.2" not in text)

            # /status: the same JSON as the status the hub started with (getStatus), with every
            # allowed edge and what became of it.
            hub_status = status_json(hub_metrics)
            report.check("/status: the getStatus JSON (same keys as the started status)",
                         hub_status.get("role") == "hub" and set(hub_status) == set(started), sorted(hub_status))
            edges_state = {edge.get("edgeId"): edge for edge in hub_status.get("edges", [])}
            report.check("/status: m-edge connected over tcpTls, m-never not",
                         edges_state.get("m-edge", {}).get("connected") is True
                         and edges_state.get("m-edge", {}).get("transport") == "tcpTls"
                         and edges_state.get("m-never", {}).get("connected") is False, edges_state)
            report.check("/status: m-edge's last error is the refused login",
                         "login refused" in (edges_state.get("m-edge", {}).get("lastError") or ""), edges_state)
            code, out, err = status_command("--metrics-addr", f"127.0.0.1:{hub_metrics}")
            report.check("status: the hub summary names each edge, transport, tunnels, last error",
                         code == 0 and "m-edge: connected over tcpTls" in out and "1 tunnel" in out
                         and "m-never: not connected" in out and "login refused" in out
                         and "slowed" in out, (code, out, err))
            code, out, err = status_command("--json", env={"REMOTEINGRESS_METRICS_ADDR": f"127.0.0.1:{hub_metrics}"})
            try:
                printed = json.loads(out)
            except ValueError:
                printed = {}
            report.check("status --json with REMOTEINGRESS_METRICS_ADDR: the /status JSON",
                         code == 0 and printed.get("role") == "hub" and printed.get("tunnelPort") == tunnel_port,
                         (code, out[:300], err))
            code, out, err = status_command("--metrics-addr", f"127.0.0.1:{edge_metrics}")
            report.check("status of the edge: connected over tcpTls, its ports",
                         code == 0 and "edge m-edge: connected over tcpTls" in out and str(port) in out, (code, out, err))
            code, out, err = status_command("--metrics-addr", f"127.0.0.1:{dead_port}")
            report.check("status with nothing listening: exit 1 and why", code == 1 and "cannot reach" in err, (code, err))
            code, out, err = status_command()
            report.check("status without an address: exit 64 naming the flag and variable",
                         code == 64 and "--metrics-addr" in err and "REMOTEINGRESS_METRICS_ADDR" in err, (code, err))

            # The edge reconnects: its counters go on from where they were.
            before_reconnect = scrape(hub_metrics)
            edge.stop()
            wait_or_last(lambda: scrape(hub_metrics).get(("remoteingress_hub_edge_connected", edge_label)) == 0,
                         lambda: None)
            edge = harness.Process(edge.proc.args, "m-edge-2")
            processes.append(edge)
            edge.wait_event("tunnelConnected", timeout=20)
            after = wait_or_last(lambda: (
                (lambda m: m if m.get(("remoteingress_hub_edge_tunnels_total", edge_label)) == 2
                 and m.get(("remoteingress_hub_edge_connected", edge_label)) == 1 else None)(scrape(hub_metrics))),
                lambda: scrape(hub_metrics))
            kept = [name for name in ("remoteingress_hub_edge_bytes_in_total", "remoteingress_hub_edge_bytes_out_total",
                                      "remoteingress_hub_edge_streams_total",
                                      "remoteingress_hub_edge_target_connect_errors_total")
                    if after.get((name, edge_label)) != before_reconnect.get((name, edge_label))]
            report.check("hub: per-edge counters survive the edge's reconnect", not kept and
                         after.get(("remoteingress_hub_edge_bytes_in_total", edge_label)) == len(payload),
                         {name: (before_reconnect.get((name, edge_label)), after.get((name, edge_label)))
                          for name in kept})
            edge.wait_event("portsAssigned")

            # /readyz follows the tunnel.
            hub.stop()
            wait_for("edge /readyz 503 while the hub is down", lambda: get(edge_metrics, "/readyz")[0] == 503)
            status, body = get(edge_metrics, "/readyz")
            report.check("edge /readyz: 503 with the reason while the hub is down", status == 503 and "tunnel" in body, body)
            down = scrape(edge_metrics)
            report.check("edge: tunnel_connected 0, one disconnect counted",
                         down[("remoteingress_edge_tunnel_connected", ())] == 0
                         and down[("remoteingress_edge_tunnel_disconnects_total", ())] >= 1, down)
            hub = harness.Process(hub_argv, "m-hub-2")
            processes.append(hub)
            hub.wait_event("started")
            wait_for("edge /readyz 200 again", lambda: get(edge_metrics, "/readyz")[0] == 200, timeout=30)
            report.check("edge /readyz: ready again when the hub is back", True)
    return report.finish()


if __name__ == "__main__":
    sys.exit(main())
