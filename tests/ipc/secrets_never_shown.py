#!/usr/bin/env python3
"""Secrets never appear in any output: a hub (management mode) and edges (CLI, one with text
and one with JSON logs) at debug level on loopback, with a real connection through the tunnel, a
refused login, an invalid config, status calls (IPC, the hub's and the edge's /status, the
`status` subcommand) and stops; then every stdout line, log line, event, status and error of
every process is searched for the secrets and the token."""
import os
import secrets
import socket
import sys
import tempfile
import urllib.request

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tools"))
import harness  # noqa: E402

TOOLS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tools")


def main():
    report = harness.Report()
    secret = f"s3cr3t-{secrets.token_hex(8)}"
    wrong = f"wr0ng-{secrets.token_hex(8)}"
    debug = {"REMOTEINGRESS_LOG": "debug"}
    processes = []
    fetched = {}
    try:
        with tempfile.TemporaryDirectory(prefix="ri-secrets-") as workdir:
            port = harness.free_port("127.0.0.1", also_free_on=["127.0.0.2"])
            target = harness.Process([sys.executable, os.path.join(TOOLS, "proxy_target.py"), "--port", str(port)],
                                     "sec-target")
            processes.append(target)
            target.wait_line(lambda line: line.startswith("listening"))
            hub = harness.Management([harness.binary(), "--management"], "sec-hub", env=debug)
            processes.append(hub)
            hub.wait_line(lambda line: '"ready"' in line)
            hub_metrics, edge_metrics = harness.free_port(), harness.free_port()
            started = hub.call("start", {"role": "hub", "config": {"tunnelPort": 0, "stateDir": workdir,
                                                                   "metricsAddr": f"127.0.0.1:{hub_metrics}"}})
            tunnel_port = started["result"]["tunnelPort"]
            fingerprint = started["result"]["certSha256"]
            edges = [{"id": "sec-edge", "secret": secret, "listenPorts": [port]}]
            report.check("edges allowed", hub.call("updateAllowedEdges", {"edges": edges}).get("success"))
            refused = hub.call("updateAllowedEdges", {"edges": [{"id": "bad", "secret": secret + " \u0001"}]})
            report.check("an invalid secret is refused", refused.get("code") == "invalid_config", refused)

            token = harness.run(harness.binary(), "token", "encode", "--hub-host", "127.0.0.1", "--hub-port",
                                str(tunnel_port), "--edge-id", "sec-edge", f"--secret={secret}",
                                "--hub-cert-sha256", fingerprint).stdout.strip()
            edge = harness.Process([harness.binary(), "--log-format", "json", "edge", "--token", token, "--bind-address",
                                    "127.0.0.2", "--no-stun", "--json", "--metrics-addr", f"127.0.0.1:{edge_metrics}"],
                                   "sec-edge", env=debug)
            processes.append(edge)
            edge.wait_event("tunnelConnected", timeout=20)
            edge.wait_event("portsAssigned", timeout=10)
            harness.wait_port("127.0.0.2", port)
            with socket.create_connection(("127.0.0.2", port), timeout=10) as client:
                greeting = client.makefile().readline()
            report.check("a connection through the tunnel", greeting.startswith("target saw client"), greeting)

            intruder = harness.Process([harness.binary(), "edge", "--hub-host", "127.0.0.1", "--hub-port", str(tunnel_port),
                                        "--edge-id", "sec-edge", f"--secret={wrong}", "--transport-mode", "tcpTls",
                                        "--no-stun", "--json"], "sec-intruder", env=debug)
            processes.append(intruder)
            failed = intruder.wait_event("tunnelConnectFailed", timeout=20)
            report.check("the wrong secret is refused", failed.get("reason") == "unauthorized", failed)
            status = hub.call("getStatus")
            report.check("status while connected", status.get("success"), status)
            for name, metrics_port in (("hub", hub_metrics), ("edge", edge_metrics)):
                with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/status", timeout=5) as response:
                    fetched[f"{name} /status"] = response.read().decode()
                for flags in ((), ("--json",)):
                    done = harness.run(harness.binary(), "status", "--metrics-addr", f"127.0.0.1:{metrics_port}", *flags,
                                       check=False)
                    fetched[f"{name} status {' '.join(flags)}"] = done.stdout + done.stderr
            report.check("the hub's /status lists the edge", "sec-edge" in fetched["hub /status"], fetched["hub /status"])
            edge_status = harness.Management([harness.binary(), "--management"], "sec-ipc-edge", env=debug)
            processes.append(edge_status)
            edge_status.wait_line(lambda line: '"ready"' in line)
            edge_status.call("start", {"role": "edge", "config": {"token": token, "stunServers": [], "transportMode": "tcpTls",
                                                                  "bindAddress": "127.0.0.3"}})
            edge_status.call("getStatus")
            edge_status.call("start", {"role": "edge", "config": {"token": token + "x"}})
            edge_status.call("stop")
            hub.call("stop")
    finally:
        for process in reversed(processes):
            process.stop_keeping_log()
    outputs = {}
    for process in processes:
        lines = [line for _, line in process.timed]
        outputs[f"{process.name} stdout"] = "\n".join(lines)
        outputs[f"{process.name} log"] = process.log_text()
        process.discard_log()
    outputs.update(fetched)
    total = sum(len(text) for text in outputs.values())
    report.check(f"outputs collected ({total} bytes)", total > 10_000, total)
    for name, text in outputs.items():
        for label, value in (("secret", secret), ("wrong secret", wrong), ("token", token)):
            report.check(f"no {label} in {name}", value not in text, text[max(0, text.find(value) - 200):text.find(value) + 50])
    return report.finish()


if __name__ == "__main__":
    sys.exit(main())
