#!/usr/bin/env python3
"""Clients at two different addresses, each in its own network namespace, connect through the
edge; the target behind the hub must see each client's own address in the PROXY header.

Topology (all namespaces are created here and always deleted):
    c1 10.201.0.2 --veth-- 10.201.0.1 \\
                                        edge ns (remoteingress-bin edge, wildcard bind) --veth-- hub ns
    c2 10.202.0.2 --veth-- 10.202.0.1 /      10.203.0.1                 10.203.0.2 (hub + target on lo)
"""
import os
import secrets
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tools"))
import harness  # noqa: E402

TOOLS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tools")


def ip(*args):
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True)


class Topology:
    def __init__(self):
        tag = secrets.token_hex(2)
        self.ns = {name: f"ri{name}-{tag}" for name in ("edge", "hub", "c1", "c2")}
        self.tag = tag
        self.created = []

    def __enter__(self):
        for ns in self.ns.values():
            ip("netns", "add", ns)
            self.created.append(ns)
            ip("-n", ns, "link", "set", "lo", "up")
        self.link("hub", "10.203.0.1", "10.203.0.2", "h")
        self.link("c1", "10.201.0.1", "10.201.0.2", "a")
        self.link("c2", "10.202.0.1", "10.202.0.2", "b")
        return self

    def link(self, peer, edge_addr, peer_addr, letter):
        edge_ns, peer_ns = self.ns["edge"], self.ns[peer]
        edge_if, peer_if = f"ve{letter}{self.tag}", f"vp{letter}{self.tag}"
        ip("link", "add", edge_if, "netns", edge_ns, "type", "veth", "peer", "name", peer_if, "netns", peer_ns)
        ip("-n", edge_ns, "addr", "add", f"{edge_addr}/24", "dev", edge_if)
        ip("-n", peer_ns, "addr", "add", f"{peer_addr}/24", "dev", peer_if)
        ip("-n", edge_ns, "link", "set", edge_if, "up")
        ip("-n", peer_ns, "link", "set", peer_if, "up")

    def exec(self, name, argv):
        return ["ip", "netns", "exec", self.ns[name], *argv]

    def __exit__(self, *exc):
        for ns in self.created:
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)


def client(topology, name, edge_addr, port):
    code = (
        "import socket,sys;"
        f"s=socket.create_connection(('{edge_addr}',{port}),timeout=10);"
        "s.sendall(b'hello');s.shutdown(socket.SHUT_WR);d=b''\n"
        "while True:\n c=s.recv(65536)\n if not c: break\n d+=c\n"
        "sys.stdout.write(d.decode())"
    )
    result = subprocess.run(topology.exec(name, [sys.executable, "-c", code]), capture_output=True, text=True, timeout=20)
    return result.stdout, result.stderr


def main():
    if os.geteuid() != 0:
        print("needs root for network namespaces")
        return 1
    report = harness.Report()
    port, tunnel_port = 18080, 18443
    with Topology() as topology, tempfile.TemporaryDirectory(prefix="ri-netns-") as workdir:
        with harness.stopping() as processes:
            edges = os.path.join(workdir, "edges.json")
            with open(edges, "w") as f:
                f.write(f'[{{"id":"edge-ns","secret":"ns-secret-0123456789","listenPorts":[{port}]}}]')
            target = harness.Process(topology.exec("hub", [sys.executable, os.path.join(TOOLS, "proxy_target.py"),
                                                           "--port", str(port)]), "netns-target")
            processes.append(target)
            target.wait_line(lambda line: line.startswith("listening"))
            hub = harness.Process(topology.exec("hub", [harness.binary(), "hub", "--tunnel-port", str(tunnel_port),
                                                        "--edges", edges, "--json"]), "netns-hub")
            processes.append(hub)
            token = harness.token("10.203.0.2", tunnel_port, "edge-ns", "ns-secret-0123456789")
            edge = harness.Process(topology.exec("edge", [harness.binary(), "edge", "--token", token,
                                                          "--transport-mode", "tcpTls", "--no-stun", "--json"]), "netns-edge")
            processes.append(edge)
            edge.wait_event("tunnelConnected", timeout=20)
            edge.wait_event("portsAssigned")
            for name, edge_addr, client_addr in (("c1", "10.201.0.1", "10.201.0.2"), ("c2", "10.202.0.1", "10.202.0.2")):
                out, err = client(topology, name, edge_addr, port)
                first, _, rest = out.partition("\n")
                report.check(f"{name}: target saw {client_addr}", first.startswith(f"target saw client {client_addr}:")
                             and f"via edge {edge_addr}:{port}" in first, f"{out!r} {err!r}")
                report.check(f"{name}: bytes echoed", rest == "hello", repr(rest))
            seen = [target.wait_line(lambda line: line.startswith("client ")) for _ in range(2)]
            report.check("target log has both clients", any("10.201.0.2" in s for s in seen) and any("10.202.0.2" in s for s in seen), seen)
    return report.finish()


if __name__ == "__main__":
    sys.exit(main())
