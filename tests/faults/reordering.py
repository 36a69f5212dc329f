#!/usr/bin/env python3
"""A QUIC tunnel through a userspace relay that reorders (a random 0-15 ms delay per packet),
drops 2 % and duplicates 1 % of the tunnel's UDP packets in both directions (tc netem is not
available here; nftables can drop but not delay). Over it: a 2 MiB echo must come back byte
for byte (SHA-256) and every UDP reply must be a datagram that was sent.

    client -> edge (127.0.0.2, quic) -> relay (127.0.0.1:R) -> hub (127.0.0.1:T) -> target

Prints how many packets the relay reordered, dropped and duplicated. Loopback only; every
process started here is stopped by PID.
"""
import asyncio
import json
import os
import random
import sys
import tempfile
import threading

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tools"))
import harness  # noqa: E402

TOOLS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tools")
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "netns"))
import lossy_link  # noqa: E402  (its client and UDP target)

EDGE_ADDR = "127.0.0.2"
# Reordering far beyond the path's RTT (0-15 ms on a 0.1 ms loopback) makes QUIC's loss detection
# retransmit a lot: 8 MiB takes ~40 s here, so this test moves 2 MiB. (A WAN RTT of 10-150 ms
# would hide most of this jitter; measuring that is the WAN delay line's job.)
TCP_BYTES = 2 << 20


class Relay(asyncio.DatagramProtocol):
    """One edge <-> hub: packets from the edge go to the hub and back, each after a random delay."""

    def __init__(self, hub, rng, stats):
        self.hub, self.rng, self.stats = hub, rng, stats
        self.edge = None
        self.last_due = {"up": 0.0, "down": 0.0}

    def connection_made(self, transport):
        self.transport = transport

    def datagram_received(self, data, addr):
        direction = "down" if addr == self.hub else "up"
        if direction == "up":
            self.edge = addr
        target = self.hub if direction == "up" else self.edge
        if target is None:
            return
        if self.rng.random() < 0.02:
            self.stats["dropped"] += 1
            return
        copies = 2 if self.rng.random() < 0.01 else 1
        self.stats["duplicated"] += copies - 1
        loop = asyncio.get_running_loop()
        for _ in range(copies):
            due = loop.time() + self.rng.uniform(0, 0.015)
            if due < self.last_due[direction]:
                self.stats["reordered"] += 1
            self.last_due[direction] = max(self.last_due[direction], due)
            loop.call_at(due, self.transport.sendto, data, target)
        self.stats["relayed"] += 1


def run_relay(port, hub, stats, ready):
    async def main():
        loop = asyncio.get_running_loop()
        await loop.create_datagram_endpoint(lambda: Relay(hub, random.Random(7), stats), local_addr=("127.0.0.1", port))
        ready.set()
        await asyncio.Event().wait()
    asyncio.run(main())


def main():
    report = harness.Report()
    stats = {"relayed": 0, "reordered": 0, "dropped": 0, "duplicated": 0}
    port = harness.free_port("127.0.0.1", also_free_on=[EDGE_ADDR])
    tunnel_port, relay_port = harness.free_port(), harness.free_port()
    with harness.stopping() as processes:
        with tempfile.TemporaryDirectory(prefix="ri-ro-") as workdir:
            edges_file = os.path.join(workdir, "edges.json")
            with open(edges_file, "w") as f:
                json.dump([{"id": "ro", "secret": "ro-secret-1-0123456789", "listenPorts": [port], "listenPortsUdp": [port]}], f)
            target = harness.Process([sys.executable, os.path.join(TOOLS, "proxy_target.py"), "--port", str(port)], "ro-target")
            processes.append(target)
            target.wait_line(lambda line: line.startswith("listening"))
            udp_target = harness.Process([sys.executable, "-c", lossy_link.UDP_TARGET, "127.0.0.1", str(port)], "ro-udp-target")
            processes.append(udp_target)
            udp_target.wait_line(lambda line: line.startswith("listening"))
            hub = harness.Process([harness.binary(), "hub", "--tunnel-port", str(tunnel_port), "--edges", edges_file,
                                   "--state-dir", workdir, "--json"], "ro-hub")
            processes.append(hub)
            hub.wait_event("started")
            ready = threading.Event()
            threading.Thread(target=run_relay, args=(relay_port, ("127.0.0.1", tunnel_port), stats, ready), daemon=True).start()
            ready.wait(10)
            edge = harness.Process([harness.binary(), "edge", "--hub-host", "127.0.0.1", "--hub-port", str(relay_port),
                                    "--edge-id", "ro", "--secret", "ro-secret-1-0123456789", "--transport-mode", "quic",
                                    "--bind-address", EDGE_ADDR, "--no-stun", "--json"], "ro-edge")
            processes.append(edge)
            connected = edge.wait_event("tunnelConnected", timeout=30)
            report.check("quic through the reordering relay: connected", connected["transport"] == "quic", connected)
            edge.wait_event("portsAssigned", timeout=10)
            out = harness.run(sys.executable, "-c", lossy_link.CLIENT, EDGE_ADDR, str(port), str(TCP_BYTES),
                              str(lossy_link.UDP_COUNT), check=False)
            result = json.loads(out.stdout) if out.returncode == 0 else {"error": out.stderr[-400:]}
            report.check("2 MiB echoed intact (SHA-256) over a reordering, lossy, duplicating path",
                         result.get("tcp_intact") is True, result)
            report.check("every UDP reply is a datagram that was sent", result.get("udp_foreign") == 0, result)
            report.check("most UDP datagrams answered", result.get("udp_replies", 0) >= lossy_link.UDP_COUNT * 8 // 10, result)
            report.check("the relay reordered packets", stats["reordered"] > 0, stats)
            lost = edge.event_times("tunnelDisconnected", 0)
            report.check("the tunnel survived", not lost, lost)
            print(f"reordering relay: {stats}; 2 MiB echo in {result.get('tcp_seconds')} s; "
                  f"UDP {result.get('udp_replies')}/{lossy_link.UDP_COUNT}")
    return report.finish()


if __name__ == "__main__":
    sys.exit(main())
