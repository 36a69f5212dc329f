#!/usr/bin/env python3
"""`--config FILE.toml` on loopback: a hub and edges started from files only (the edges' tokens
from `--token-file`), then SIGHUP reloads that add an edge, remove one and add a port while a
long transfer on an unaffected edge keeps going; a file with an error is refused with its file,
line and field, and the previous configuration stays; the same error at start exits 64."""
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tools"))
import harness  # noqa: E402

TOOLS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tools")


def hub_toml(tunnel_port, state, edges):
    lines = ["[hub]", f"tunnelPort = {tunnel_port}", f'stateDir = "{state}"', ""]
    for edge_id, ports in edges:
        lines += ["[[edges]]", f'id = "{edge_id}"', f'secret = "{edge_id}-secret-0123456789"', f"listenPorts = {list(ports)}", ""]
    return "\n".join(lines)


def write(path, text):
    with open(path, "w") as f:
        f.write(text)


def main():
    report = harness.Report()
    with harness.stopping() as processes:
        with tempfile.TemporaryDirectory(prefix="ri-toml-") as workdir:
            p1, p2, p3, p4 = (harness.free_port("127.0.0.1", also_free_on=["127.0.0.2", "127.0.0.3", "127.0.0.4"])
                              for _ in range(4))
            tunnel_port = harness.free_port()
            for port in (p1, p2, p3, p4):
                target = harness.Process([sys.executable, os.path.join(TOOLS, "proxy_target.py"), "--port", str(port)],
                                         f"toml-target-{port}")
                processes.append(target)
                target.wait_line(lambda line: line.startswith("listening"))
            config = os.path.join(workdir, "hub.toml")
            write(config, hub_toml(tunnel_port, workdir, [("keep", [p1]), ("drop", [p2])]))
            hub = harness.Process([harness.binary(), "hub", "--config", config, "--json"], "toml-hub")
            processes.append(hub)
            started = hub.wait_event("started")
            report.check("the hub starts from the file alone", started["tunnelPort"] == tunnel_port, started)
            edges = {}

            def start_edge(edge_id, address):
                token = harness.token("127.0.0.1", tunnel_port, edge_id, f"{edge_id}-secret-0123456789")
                token_file = os.path.join(workdir, f"{edge_id}.token")
                write(token_file, token + "\n")
                edge_config = os.path.join(workdir, f"{edge_id}.toml")
                write(edge_config, f'[edge]\ntransportMode = "tcpTls"\nbindAddress = "{address}"\nstunServers = []\n')
                edge = harness.Process([harness.binary(), "edge", "--config", edge_config, "--token-file", token_file, "--json"],
                                       f"toml-edge-{edge_id}")
                processes.append(edge)
                edges[edge_id] = edge
                edge.wait_event("tunnelConnected", timeout=20)
                return edge

            start_edge("keep", "127.0.0.2")
            edges["keep"].wait_event("portsAssigned")
            start_edge("drop", "127.0.0.3")
            edges["drop"].wait_event("portsAssigned")

            # A long transfer on the edge that stays: it must not notice any reload.
            held = socket.create_connection(("127.0.0.2", p1), timeout=10)
            reader = held.makefile("rb")
            greeting = reader.readline()
            report.check("edges from files carry traffic", greeting.startswith(b"target saw client"), greeting)

            def echo_on_held(text):
                held.sendall(text)
                return reader.readline()

            report.check("held transfer before the reload", echo_on_held(b"before\n") == b"before\n")

            # Reload: drop "drop", add "new", give "keep" a second port.
            write(config, hub_toml(tunnel_port, workdir, [("keep", [p1, p3]), ("new", [p4])]))
            reloaded_at = time.monotonic()
            os.kill(hub.proc.pid, signal.SIGHUP)
            hub.wait_event_time("edgeDisconnected", reloaded_at, lambda d: d.get("edgeId") == "drop", timeout=10)
            report.check("a removed edge is disconnected", True)
            updated = edges["keep"].wait_event("portsUpdated", timeout=10)
            report.check("the kept edge gets its new port", sorted(updated["listenPorts"]) == sorted([p1, p3]), updated)
            start_edge("new", "127.0.0.4")
            report.check("an added edge can connect", True)
            report.check("the held transfer carries on through the reload", echo_on_held(b"after\n") == b"after\n")
            lost = edges["keep"].event_times("tunnelDisconnected", 0)
            report.check("the kept edge never lost its tunnel", not lost, lost)
            with socket.create_connection(("127.0.0.2", p3), timeout=10) as client:
                line = client.makefile("rb").readline()
            report.check("the added port serves", line.startswith(b"target saw client"), line)

            # A file with an error: refused with file, line and field; nothing changes.
            write(config, hub_toml(tunnel_port, workdir, [("keep", [p1])]) + "\n[[edges]]\nid = \"bad\"\nsecret = \"x-0123456789abcdef\"\nlistenPorts = [70000]\n")
            os.kill(hub.proc.pid, signal.SIGHUP)
            log = ""
            deadline = time.monotonic() + 10
            while "not reloaded" not in log and time.monotonic() < deadline:
                time.sleep(0.1)
                log = hub.log_text()
            report.check("an invalid file is refused with file, line and field",
                         f"{config}:" in log and "edges[1].listenPorts[0]" in log and "not reloaded" in log, log[-600:])
            report.check("the previous configuration stays (the held transfer, the added port)",
                         echo_on_held(b"still\n") == b"still\n")
            edges_now = subprocess.run([sys.executable, "-c", "import socket;s=socket.create_connection(('127.0.0.2',%d),timeout=10);"
                                        "print(s.makefile().readline().strip())" % p3], capture_output=True, text=True).stdout
            report.check("port added before the bad file still served", edges_now.startswith("target saw client"), edges_now)
            held.close()

            # The same error at start: exit 64 with the file and line.
            bad = subprocess.run([harness.binary(), "hub", "--config", config], capture_output=True, text=True, timeout=20)
            report.check("an invalid file at start exits 64 with file:line", bad.returncode == 64 and f"{config}:" in bad.stderr,
                         (bad.returncode, bad.stderr[-300:]))
    return report.finish()


if __name__ == "__main__":
    sys.exit(main())
