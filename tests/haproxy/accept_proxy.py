#!/usr/bin/env python3
"""HAProxy as the real PROXY-protocol consumer behind the hub.

client (source 127.0.0.3) -> edge 127.0.0.2:P ==TLS==> hub -> HAProxy 127.0.0.1:P (accept-proxy,
mode http, option forwardfor) -> HTTP backend that answers with the headers it received.
The backend must see X-Forwarded-For: 127.0.0.3, an address only the PROXY header can carry
(the hub itself connects from 127.0.0.1). Run for proxyProtocol v1 and v2.
"""
import http.server
import os
import shutil
import socket
import sys
import tempfile
import threading

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tools"))
import harness  # noqa: E402

CLIENT_SOURCE = "127.0.0.3"


class EchoHeaders(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = "".join(f"{k.lower()}: {v}\n" for k, v in self.headers.items()).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def http_get(host, port, source):
    with socket.create_connection((host, port), timeout=10, source_address=(source, 0)) as s:
        s.sendall(b"GET /whoami HTTP/1.0\r\nHost: test\r\n\r\n")
        return harness.recv_to_eof(s).decode(errors="replace")


def scenario(report, version, workdir):
    backend = http.server.ThreadingHTTPServer(("127.0.0.1", 0), EchoHeaders)
    threading.Thread(target=backend.serve_forever, daemon=True).start()
    port = harness.free_port("127.0.0.1", also_free_on=("127.0.0.2",))
    config = os.path.join(workdir, f"haproxy-{version}.cfg")
    with open(config, "w") as f:
        f.write(f"""global
    maxconn 256
defaults
    mode http
    timeout connect 5s
    timeout client 15s
    timeout server 15s
frontend public
    bind 127.0.0.1:{port} accept-proxy
    option forwardfor
    default_backend whoami
backend whoami
    server backend 127.0.0.1:{backend.server_address[1]}
""")
    tunnel_port = harness.free_port()
    edges = os.path.join(workdir, f"edges-{version}.json")
    with open(edges, "w") as f:
        f.write(f'[{{"id":"edge-ha","secret":"ha-secret-0123456789","listenPorts":[{port}]}}]')
    with harness.stopping() as processes:
        try:
            haproxy = harness.Process([shutil.which("haproxy"), "-f", config, "-db"], f"haproxy-{version}")
            processes.append(haproxy)
            harness.wait_port("127.0.0.1", port)
            hub = harness.Process([harness.binary(), "hub", "--tunnel-port", str(tunnel_port), "--edges", edges,
                                   "--proxy-protocol", version, "--json"], f"hub-{version}")
            processes.append(hub)
            token = harness.token("127.0.0.1", tunnel_port, "edge-ha", "ha-secret-0123456789")
            edge = harness.Process([harness.binary(), "edge", "--token", token, "--bind-address", "127.0.0.2",
                                    "--transport-mode", "tcpTls", "--no-stun", "--json"], f"edge-{version}")
            processes.append(edge)
            edge.wait_event("tunnelConnected", timeout=20)
            edge.wait_event("portsAssigned")
            hub.wait_event("edgeConnected")
            response = http_get("127.0.0.2", port, CLIENT_SOURCE)
            report.check(f"{version}: HAProxy answered through the tunnel", response.startswith("HTTP/1.0 200"), response[:200])
            report.check(f"{version}: backend saw the original client address",
                         f"x-forwarded-for: {CLIENT_SOURCE}" in response, response)
            opened = hub.wait_event("streamOpened")
            report.check(f"{version}: hub reported the client", opened["clientAddr"].startswith(CLIENT_SOURCE + ":"), opened)
        finally:
            backend.shutdown()
            backend.server_close()


def main():
    if not shutil.which("haproxy"):
        print("haproxy is not installed (scripts/setup.sh installs it)")
        return 1
    report = harness.Report()
    with tempfile.TemporaryDirectory(prefix="ri-haproxy-") as workdir:
        for version in ("v1", "v2"):
            scenario(report, version, workdir)
    return report.finish()


if __name__ == "__main__":
    sys.exit(main())
