#!/usr/bin/env python3
"""JSON log lines are structured (issue 28 item 8): a hub and a QUIC edge run from the command line
with `--log-format json` and the default filter (no REMOTEINGRESS_LOG) on loopback, then every
stderr line of both is read as JSON: event lines carry `event` and the event's data as fields
(not an escaped JSON string in `message`), the started line's status is a nested object, enum
values use the wire spelling (`quic`, not `Quic`), and nothing from rustls or quinn appears below
WARN."""
import json
import os
import sys
import tempfile

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tools"))
import harness  # noqa: E402

SECRET = "json-logs-secret-0123456789"


def json_lines(process):
    """Every stderr line of `process` parsed as JSON (a line that is not JSON is kept as a str)."""
    lines = []
    for line in process.log_text().splitlines():
        try:
            lines.append(json.loads(line))
        except ValueError:
            lines.append(line)
    return lines


def main():
    report = harness.Report()
    # The default filter is under test: the harness's REMOTEINGRESS_LOG=info default is removed.
    env = {"REMOTEINGRESS_LOG": None}
    with harness.stopping() as processes:
        with tempfile.TemporaryDirectory(prefix="ri-json-logs-") as workdir:
            tunnel_port = harness.free_port()
            edges = os.path.join(workdir, "edges.json")
            with open(edges, "w") as f:
                json.dump([{"id": "j-edge", "secret": SECRET, "listenPorts": []}], f)
            hub = harness.Process([harness.binary(), "--log-format", "json", "hub", "--tunnel-port", str(tunnel_port),
                                   "--edges", edges, "--state-dir", workdir], "j-hub", env=env)
            processes.append(hub)
            edge = harness.Process([harness.binary(), "--log-format", "json", "edge", "--hub-host", "127.0.0.1",
                                    "--hub-port", str(tunnel_port), "--edge-id", "j-edge", "--secret", SECRET,
                                    "--transport-mode", "quic", "--no-stun"], "j-edge", env=env)
            processes.append(edge)

            def hub_event(name):
                return next((line for line in json_lines(hub)
                             if isinstance(line, dict) and line.get("event") == name), None)
            connected = None
            try:
                connected = harness.wait_for("edgeConnected", lambda: hub_event("edgeConnected"), timeout=20)
            except TimeoutError:
                pass
            edge.stop_keeping_log()
            try:
                harness.wait_for("edgeDisconnected", lambda: hub_event("edgeDisconnected"), timeout=20)
            except TimeoutError:
                pass
            hub.stop_keeping_log()
            hub_lines, edge_lines = json_lines(hub), json_lines(edge)
            for process in (hub, edge):
                process.discard_log()

    not_json = [line for line in hub_lines + edge_lines if not isinstance(line, dict)]
    report.check("every stderr line is a JSON object", not not_json, not_json[:3])
    report.check("edgeConnected line: event and its data as fields",
                 connected is not None and connected.get("edgeId") == "j-edge"
                 and connected.get("transport") == "quic" and "remoteAddr" in connected
                 and "message" not in connected and connected.get("level") == "INFO", connected)
    disconnected = next((line for line in hub_lines if isinstance(line, dict) and line.get("event") == "edgeDisconnected"),
                        None)
    report.check("edgeDisconnected line: its reason as a field",
                 disconnected is not None and disconnected.get("edgeId") == "j-edge"
                 and isinstance(disconnected.get("reason"), str), disconnected)
    escaped = [line for line in hub_lines + edge_lines
               if isinstance(line, dict) and '"event"' in str(line.get("message", ""))]
    report.check("no event as an escaped JSON string in message", not escaped, escaped[:2])
    for name, lines in (("hub", hub_lines), ("edge", edge_lines)):
        started = next((line for line in lines if isinstance(line, dict) and line.get("message") == "started"), {})
        status = started.get("status")
        report.check(f"{name}: the started line's status is a nested object",
                     isinstance(status, dict) and status.get("role") == name, started)
    hub_connected = next((line for line in hub_lines
                          if isinstance(line, dict) and line.get("message") == "edge connected"), {})
    edge_connected = next((line for line in edge_lines
                           if isinstance(line, dict) and line.get("message") == "tunnel to the hub connected"), {})
    report.check("enum values in log fields use the wire spelling (quic)",
                 hub_connected.get("transport") == "quic" and edge_connected.get("transport") == "quic",
                 (hub_connected, edge_connected))
    libraries = [line for line in hub_lines + edge_lines if isinstance(line, dict)
                 and str(line.get("target", "")).startswith(("rustls", "quinn"))
                 and line.get("level") not in ("WARN", "ERROR")]
    report.check("default filter: nothing from rustls or quinn below WARN", not libraries, libraries[:3])
    return report.finish()


if __name__ == "__main__":
    sys.exit(main())
