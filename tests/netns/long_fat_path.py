#!/usr/bin/env python3
"""Receive windows grow to a long path's bandwidth-delay product (auto-tuning), through the real
binary, over an emulated WAN link.

    edge ns (edge on 127.0.0.2, the client)  --ri-loadgen delay-line--  hub ns (hub, target)
    10.95.0.2                                  200 ms RTT, 400 Mbit/s     10.95.0.1

A fixed 4 MiB window (what a stream started with before auto-tuning) moves at most
4 MiB / 200 ms = 168 Mbit/s; the link carries 400. One timed download through a tcpTls tunnel
must exceed 1.4 x that bound, which it can only do if the edge's receive window grew beyond
4 MiB. Both namespaces allow 32 MiB TCP socket buffers (the tunnel's own TCP needs them as much
as any long-path TCP). Prints the rate next to a direct download over the same link.
Namespaces and processes are created here and removed.
"""
import json
import os
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tools"))
import harness  # noqa: E402

HUB_IP, EDGE_IP = "10.95.0.1", "10.95.0.2"
PORT, TUNNEL_PORT = 18090, 18447
RTT_MS, RATE_MBIT = 200, 400
FIXED_WINDOW_MBIT = (4 << 20) * 8 / (RTT_MS / 1000) / 1e6


def loadgen():
    """The delay line and load generator: $RI_LOADGEN, else the debug build."""
    return os.environ.get("RI_LOADGEN") or os.path.join(harness.REPO, "target", "debug", "ri-loadgen")


def main():
    if os.geteuid() != 0:
        print("long_fat_path: needs root (network namespaces, TUN devices)")
        return 1
    report = harness.Report()
    buffers = ["net.ipv4.tcp_rmem=4096 131072 33554432", "net.ipv4.tcp_wmem=4096 16384 33554432"]
    with harness.namespaces("ri-lfp", 2, buffers) as (hub_ns, edge_ns), harness.stopping() as processes:
        in_hub = lambda argv: ["ip", "netns", "exec", hub_ns, *argv]  # noqa: E731
        in_edge = lambda argv: ["ip", "netns", "exec", edge_ns, *argv]  # noqa: E731
        link = harness.Process([loadgen(), "delay-line", "--a-netns", edge_ns, "--a-address", EDGE_IP, "--b-netns", hub_ns,
                                "--b-address", HUB_IP, "--rtt-ms", str(RTT_MS), "--rate-mbit", str(RATE_MBIT)], "lfp-link")
        processes.append(link)
        link.wait_line(lambda line: "ready" in line)
        target = harness.Process(in_hub([loadgen(), "serve", "--listen", f"0.0.0.0:{PORT}"]), "lfp-target")
        processes.append(target)
        target.wait_line(lambda line: "listening" in line)
        with tempfile.TemporaryDirectory(prefix="ri-lfp-") as workdir:
            edges_file = os.path.join(workdir, "edges.json")
            with open(edges_file, "w") as f:
                json.dump([{"id": "lfp-tcpTls", "secret": "lfp-secret-0123456789", "listenPorts": [PORT],
                           "privateClients": True}], f)
            harness.hub_and_edges(report, processes, in_hub, in_edge, HUB_IP, TUNNEL_PORT, edges_file,
                                  os.path.join(workdir, "hub"), {"tcpTls": "127.0.0.2"}, "lfp", "lfp-secret-0123456789")

            def download(address):
                out = subprocess.run(in_edge([loadgen(), "tcp", "--addr", f"{address}:{PORT}", "--direction", "down",
                                              "--seconds", "4", "--warmup", "4"]), capture_output=True, text=True, timeout=60)
                return json.loads(out.stdout) if out.returncode == 0 else {"error": out.stderr.strip()[-300:]}

            direct = download(HUB_IP)
            tunnel = download("127.0.0.2")
        mbit = lambda result: result.get("gbps", 0) * 1000  # noqa: E731
        print(f"{RTT_MS} ms, {RATE_MBIT} Mbit/s link: direct {mbit(direct):.0f} Mbit/s, tcpTls {mbit(tunnel):.0f} Mbit/s; "
              f"a fixed 4 MiB window allows {FIXED_WINDOW_MBIT:.0f}")
        report.check("the direct download fills most of the link (the link emulation works)",
                     mbit(direct) > 0.6 * RATE_MBIT, direct)
        report.check(f"tcpTls: one stream beyond 1.4 x what a fixed 4 MiB window allows ({FIXED_WINDOW_MBIT:.0f} Mbit/s)",
                     mbit(tunnel) > 1.4 * FIXED_WINDOW_MBIT, tunnel)
    return report.finish()


if __name__ == "__main__":
    sys.exit(main())
