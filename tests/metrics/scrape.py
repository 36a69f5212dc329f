#!/usr/bin/env python3
"""/metrics, /healthz and /readyz of a real hub and edge on loopback, read with the Prometheus
client library's own OpenMetrics parser: the byte counters match what a client sent and got,
a refused login is counted by kind, and the edge's /readyz turns 503 while its hub is down and
200 again when it is back."""
import json
import os
import socket
import sys
import tempfile
import time
import urllib.error
import urllib.request

from prometheus_client.openmetrics.parser import text_string_to_metric_families

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tools"))
import harness  # noqa: E402

TOOLS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tools")
SECRET = "metrics-secret-1"


def get(port, path):
    """(status, body) of GET http://127.0.0.1:port/path."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()
    except OSError as error:
        return 0, str(error)


def scrape(port):
    """{(name, labels as a sorted tuple): value} of every sample."""
    status, text = get(port, "/metrics")
    assert status == 200, (status, text)
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def wait_for(what, check, timeout=15):
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(what)
        time.sleep(0.1)


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
                json.dump([{"id": "m-edge", "secret": SECRET, "listenPorts": [port, dead_port]}], f)
            hub_argv = [harness.binary(), "hub", "--tunnel-port", str(tunnel_port), "--edges", edges, "--state-dir", workdir,
                        "--metrics-addr", f"127.0.0.1:{hub_metrics}", "--json"]
            hub = harness.Process(hub_argv, "m-hub")
            processes.append(hub)
            hub.wait_event("started")
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
