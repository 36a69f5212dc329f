#!/usr/bin/env python3
"""The link between edge and hub cut for 5 s and for 60 s, on tcpTls and on quic at once, with
the default timing (hub PING every 3 s, dead after 10 s; QUIC idle timeout 10 s).

    client -> edge ns (two edges: tcpTls on 127.0.0.2, quic on 127.0.0.3) --veth-- hub ns
                                 10.77.0.2                              10.77.0.1 (hub + target)

The cut is an nftables rule in the edge namespace that silently drops everything on the veth,
as a failed WAN path does (a link taken down would answer with errors at once instead).

- 5 s: shorter than the heartbeat timeout, so both tunnels must survive with their open
  connection intact (no reconnect, no reset).
- 60 s: each side must notice within 15 s, the open connection must end with a reset (never
  hang, never look complete), and each edge must be back soon after the link returns.

Prints the measured times. Everything runs in namespaces created here and always deleted.
"""
import json
import os
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tools"))
import harness  # noqa: E402

TOOLS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tools")
HUB_IP, EDGE_IP = "10.77.0.1", "10.77.0.2"
PORT, TUNNEL_PORT = 18082, 18445
EDGES = {"tcpTls": "127.0.0.2", "quic": "127.0.0.3"}
DETECT_WITHIN = 15.0
# After the link returns: the edge retries with backoff (1 s doubling to 30 s, +-50 %) once its
# 15 s of fast retries are over, so the next attempt may be up to that far away.
BACK_WITHIN = 35.0

# A held-open client: prints the target's greeting, then for each stdin line sends it and prints
# the echo, or the name of the error that ended the connection.
CLIENT = r"""
import socket, sys
s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=60)
f = s.makefile("rwb", buffering=0)
print(f.readline().decode().strip(), flush=True)
for line in sys.stdin:
    try:
        s.sendall(line.encode())
        reply = f.readline().decode().strip()
        print(reply if reply else "end of file", flush=True)
    except OSError as e:
        print(type(e).__name__, flush=True)
"""


class Client:
    def __init__(self, inside, address):
        self.proc = subprocess.Popen(inside([sys.executable, "-c", CLIENT, address, str(PORT)]), stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True, bufsize=1)
        self.greeting = self.proc.stdout.readline().strip()

    def exchange(self, line):
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()
        return self.proc.stdout.readline().strip()

    def close(self):
        try:
            self.proc.stdin.close()
        except OSError:
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def main():
    if os.geteuid() != 0:
        print("needs root for network namespaces")
        return 1
    report = harness.Report()
    clients = []
    namespaces = harness.linked_namespaces("rilc", [f"{HUB_IP}/24"], [f"{EDGE_IP}/24"])
    with namespaces as (hub_ns, edge_ns, _, edge_dev), harness.stopping() as processes:
        try:
            scenario(report, processes, clients, hub_ns, edge_ns, edge_dev)
        finally:
            for client in clients:
                client.close()
    return report.finish()


def scenario(report, processes, clients, hub_ns, edge_ns, edge_dev):
    in_hub = lambda argv: ["ip", "netns", "exec", hub_ns, *argv]  # noqa: E731
    in_edge = lambda argv: ["ip", "netns", "exec", edge_ns, *argv]  # noqa: E731
    with tempfile.TemporaryDirectory(prefix="ri-lc-") as workdir:
        edges_file = os.path.join(workdir, "edges.json")
        with open(edges_file, "w") as f:
            json.dump([{"id": f"lc-{t}", "secret": "lc-secret-1-0123456789", "listenPorts": [PORT],
                        "privateClients": True} for t in EDGES], f)
        target = harness.Process(in_hub([sys.executable, os.path.join(TOOLS, "proxy_target.py"), "--port", str(PORT)]), "lc-target")
        processes.append(target)
        target.wait_line(lambda line: line.startswith("listening"))
        hub, edges = harness.hub_and_edges(report, processes, in_hub, in_edge, HUB_IP, TUNNEL_PORT, edges_file, workdir,
                                           EDGES, "lc", "lc-secret-1-0123456789")

        def held_clients():
            held = {}
            for transport, address in EDGES.items():
                client = Client(in_edge, address)
                clients.append(client)
                report.check(f"{transport}: a connection through the tunnel", client.greeting.startswith("target saw client"),
                             client.greeting)
                held[transport] = client
            return held

        def cut():
            rules = ("table inet ri_cut {\n"
                     "  chain input { type filter hook input priority -10; iifname \"" + edge_dev + "\" drop; }\n"
                     "  chain output { type filter hook output priority -10; oifname \"" + edge_dev + "\" drop; }\n"
                     "}\n")
            subprocess.run(in_edge(["nft", "-f", "-"]), input=rules, text=True, check=True)
            return time.monotonic()

        def restore():
            subprocess.run(in_edge(["nft", "delete", "table", "inet", "ri_cut"]), check=True)
            return time.monotonic()

        # --- 5 s: survived, nothing reset ---
        held = held_clients()
        cut_at = cut()
        time.sleep(5)  # the length of the cut, not a synchronisation
        restored_at = restore()
        for transport, client in held.items():
            reply = client.exchange("after a 5 s cut")
            report.check(f"{transport}: 5 s cut: the open connection carries on", reply == "after a 5 s cut", reply)
            lost = edges[transport].event_times("tunnelDisconnected", cut_at)
            report.check(f"{transport}: 5 s cut: the tunnel was kept", not lost, lost)
            client.close()
        print(f"5 s cut: restored {restored_at - cut_at:.1f} s after the cut; both tunnels kept")

        # --- 60 s: noticed, reset, back ---
        held = held_clients()
        cut_at = cut()
        noticed = {}
        for transport, edge in edges.items():
            edge_at = edge.wait_event_time("tunnelDisconnected", cut_at, timeout=30)
            hub_at = hub.wait_event_time("edgeDisconnected", cut_at, lambda d, t=transport: d.get("edgeId") == f"lc-{t}",
                                         timeout=30)
            noticed[transport] = (edge_at - cut_at, hub_at - cut_at)
            report.check(f"{transport}: 60 s cut: edge noticed within {DETECT_WITHIN:.0f} s ({edge_at - cut_at:.1f} s)",
                         edge_at - cut_at <= DETECT_WITHIN)
            report.check(f"{transport}: 60 s cut: hub noticed within {DETECT_WITHIN:.0f} s ({hub_at - cut_at:.1f} s)",
                         hub_at - cut_at <= DETECT_WITHIN)
            reply = held[transport].exchange("during the cut")
            report.check(f"{transport}: 60 s cut: the open connection was reset", reply == "ConnectionResetError", reply)
            held[transport].close()
        time.sleep(max(0.0, cut_at + 60 - time.monotonic()))  # the length of the cut
        restored_at = restore()
        for transport, edge in edges.items():
            back_at = edge.wait_event_time("tunnelConnected", restored_at, timeout=90)
            back = back_at - restored_at
            report.check(f"{transport}: 60 s cut: back within {BACK_WITHIN:.0f} s of the link ({back:.1f} s)",
                         back <= BACK_WITHIN)
            edge_noticed, hub_noticed = noticed[transport]
            print(f"{transport}: 60 s cut: edge noticed after {edge_noticed:.1f} s, hub after {hub_noticed:.1f} s; "
                  f"tunnel back {back:.1f} s after the link returned")
        deadline = time.monotonic() + 10
        for transport, address in EDGES.items():
            while True:
                client = Client(in_edge, address)
                clients.append(client)
                if client.greeting.startswith("target saw client") or time.monotonic() > deadline:
                    break
                time.sleep(0.2)
            report.check(f"{transport}: new connections work after the cut", client.greeting.startswith("target saw client"),
                         client.greeting)


if __name__ == "__main__":
    sys.exit(main())
