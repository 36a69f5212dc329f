#!/usr/bin/env python3
"""Chaos soak: TCP and UDP traffic through a tcpTls edge and a quic edge while a driver kills
(-9) and restarts the hub, the edges and the target at random moments, pushes port changes and
rotates edge secrets (the edges file rewritten, SIGHUP; the edge restarted with its new secret). Every TCP transfer must end complete with its SHA-256
verified, or reported to the client as a failure (reset, refused) -- never truncated silently,
never corrupted, never hung; every UDP reply must equal its request. After the run, file
descriptors, open streams and memory of the hub and the edges are back to their baseline.

    soak.py [--seconds 600] [--workers 8] [--seed N]

The target (tests/soak/target.py) arms SO_LINGER 0 on its sockets (disarmed before a normal
close), as the tunnel does: a target that dies mid-transfer then resets its connections. (A target that dies and sends a
plain FIN cannot be told from one that finished, by any proxy; HTTP has Content-Length for that.)
Prints one summary line at the end; exits 1 if a check failed.
"""
import argparse
import hashlib
import json
import os
import random
import re
import signal
import socket
import statistics
import struct
import sys
import tempfile
import threading
import time
import urllib.request

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tools"))
import harness  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import target  # noqa: E402

EDGES = {"tcpTls": "127.0.0.2", "quic": "127.0.0.3"}
TARGET = os.path.join(os.path.dirname(os.path.abspath(__file__)), "target.py")

def stream_digest(seed, size):
    """SHA-256 of what the target sends for a download of `size` bytes with `seed`."""
    digest = hashlib.sha256()
    for block in target.blocks(seed, size):
        digest.update(block)
    return digest.digest()


class Stats:
    def __init__(self):
        self.lock = threading.Lock()
        self.counts = {"complete": 0, "reset": 0, "refused": 0, "corrupted": 0, "truncated": 0, "hung": 0,
                       "udp_ok": 0, "udp_lost": 0, "udp_corrupted": 0}
        self.bytes = 0
        self.examples = []

    def add(self, outcome, moved=0, detail=None):
        with self.lock:
            self.counts[outcome] += 1
            self.bytes += moved
            if detail and len(self.examples) < 10:
                self.examples.append(f"{outcome}: {detail}")


def tcp_transfer(address, port, rng, stats, size=None, download=None):
    """One transfer of `size` bytes (default: log-uniform 1 KiB .. 8 MiB), up or down."""
    size = size or int(2 ** rng.uniform(10, 23))
    download = rng.random() < 0.5 if download is None else download
    seed = rng.randbytes(8)
    try:
        s = socket.create_connection((address, port), timeout=5)
    except OSError:
        stats.add("refused")
        return
    s.settimeout(30)
    try:
        if download:
            s.sendall(struct.pack("!cQ8s", b"D", size, seed))
            h, got = hashlib.sha256(), 0
            while True:
                chunk = s.recv(1 << 20)
                if not chunk:
                    break
                got += len(chunk)
                h.update(chunk)
            if got < size:
                stats.add("truncated", got, f"download {got}/{size} via {address}")
            elif got > size or h.digest() != stream_digest(seed, size):
                stats.add("corrupted", got, f"download of {size} via {address}")
            else:
                stats.add("complete", size)
        else:
            data = rng.randbytes(size)
            s.sendall(struct.pack("!cQ8s", b"U", size, seed) + data)
            s.shutdown(socket.SHUT_WR)
            digest = harness.recv_to_eof(s)
            if len(digest) < 32:
                stats.add("truncated", 0, f"upload of {size} via {address}: {len(digest)}-byte answer")
            elif digest != hashlib.sha256(data).digest():
                stats.add("corrupted", size, f"upload of {size} via {address}")
            else:
                stats.add("complete", size)
    except socket.timeout:
        stats.add("hung", 0, f"{'download' if download else 'upload'} of {size} via {address}")
    except OSError:
        stats.add("reset")
    finally:
        s.close()


def udp_exchange(address, port, rng, stats):
    payload = rng.randbytes(rng.randint(1, 1200))
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
        u.settimeout(1)
        try:
            u.sendto(payload, (address, port))
            reply = u.recv(65535)
        except OSError:
            stats.add("udp_lost")
            return
    stats.add("udp_ok" if reply == payload else "udp_corrupted", len(payload))


class Fleet:
    """Hub, edges and target as processes that the driver kills and restarts."""

    def __init__(self, workdir, port, tunnel_port):
        self.workdir, self.port, self.tunnel_port = workdir, port, tunnel_port
        self.extra_port = harness.free_port("127.0.0.1", also_free_on=list(EDGES.values()))
        self.procs = {}
        self.metrics = {}
        self.secrets = {t: "soak-secret-0" for t in EDGES}
        self.extra = False
        self.write_edges()

    def write_edges(self):
        ports = [self.port] + ([self.extra_port] if self.extra else [])
        with open(os.path.join(self.workdir, "edges.json"), "w") as f:
            json.dump([{"id": f"soak-{t}", "secret": self.secrets[t], "listenPorts": ports, "listenPortsUdp": [self.port],
                        "limits": {"maxConnectionsPerSource": 100000}} for t in EDGES], f)

    def push(self):
        """The edges file rewritten and re-read by the hub (SIGHUP), as an operator does."""
        self.write_edges()
        os.kill(self.procs["hub"].proc.pid, signal.SIGHUP)

    def start(self, name):
        binary = harness.binary()
        metrics = f"127.0.0.1:{harness.free_port()}"
        if name == "target":
            argv = [sys.executable, TARGET, str(self.port)]
        elif name == "hub":
            argv = [binary, "hub", "--tunnel-port", str(self.tunnel_port), "--edges", os.path.join(self.workdir, "edges.json"),
                    "--state-dir", os.path.join(self.workdir, "hub"), "--stream-event-mode", "off", "--metrics-addr", metrics,
                    # Each UDP exchange comes from a new client port, so a new session with its own
                    # socket on the hub: short idle time, so they are gone when leaks are counted.
                    "--performance-json", json.dumps({"udpSessionIdleSecs": 5}), "--json"]
        else:
            transport = name.split("-", 1)[1]
            argv = [binary, "edge", "--hub-host", "127.0.0.1", "--hub-port", str(self.tunnel_port), "--edge-id",
                    f"soak-{transport}", "--secret", self.secrets[transport], "--transport-mode", transport, "--bind-address",
                    EDGES[transport], "--no-stun", "--metrics-addr", metrics, "--json"]
        process = harness.Process(argv, f"soak-{name}", env={"REMOTEINGRESS_LOG": "warn"})
        self.procs[name], self.metrics[name] = process, metrics
        if name == "target":
            process.wait_line(lambda line: line.startswith("listening"))
        elif name == "hub":
            process.wait_event("started")
        return process

    def kill(self, name):
        process = self.procs[name]
        os.kill(process.proc.pid, signal.SIGKILL)
        process.proc.wait(timeout=10)
        process.stderr.close()
        process.discard_log()

    def stop_all(self):
        for process in self.procs.values():
            process.stop()


def probe(address, port, deadline):
    """Seconds until a 1 KiB download through `address` completes, or None by the deadline."""
    started = time.monotonic()
    while time.monotonic() < deadline:
        stats = Stats()
        tcp_transfer(address, port, random.Random(1), stats, size=1024, download=True)
        if stats.counts["complete"]:
            return time.monotonic() - started
        time.sleep(0.05)
    return None


def process_usage(pid):
    fds = len(os.listdir(f"/proc/{pid}/fd"))
    with open(f"/proc/{pid}/status") as f:
        rss = int(re.search(r"VmRSS:\s+(\d+)", f.read()).group(1))
    return fds, rss


def active_streams(metrics):
    text = urllib.request.urlopen(f"http://{metrics}/metrics", timeout=5).read().decode()
    return sum(float(v) for v in re.findall(r"^remoteingress_(?:hub_edge|edge)_streams_active(?:\{[^}]*\})? (\S+)$", text, re.M))


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=600)
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--seed", type=int, default=int(time.time()))
    args = parser.parse_args()
    rng = random.Random(args.seed)
    report = harness.Report()
    stats = Stats()
    recoveries = []
    faults = {}
    with tempfile.TemporaryDirectory(prefix="ri-soak-") as workdir:
        port = harness.free_port("127.0.0.1", also_free_on=list(EDGES.values()))
        fleet = Fleet(workdir, port, harness.free_port())
        try:
            for name in ["target", "hub", "edge-tcpTls", "edge-quic"]:
                fleet.start(name)
            for transport, address in EDGES.items():
                took = probe(address, port, time.monotonic() + 30)
                report.check(f"{transport}: traffic flows at the start", took is not None)
            time.sleep(1)  # let start-up allocations settle before the baseline
            baseline = {name: process_usage(fleet.procs[name].proc.pid) for name in ("hub", "edge-tcpTls", "edge-quic")}
            print(f"soak: seed {args.seed}, {args.seconds:.0f} s, {args.workers} workers; baseline {baseline}", flush=True)

            end = time.monotonic() + args.seconds
            stop = threading.Event()

            def worker(index):
                local = random.Random(args.seed * 1000 + index)
                while not stop.is_set():
                    address = EDGES[local.choice(list(EDGES))]
                    if local.random() < 0.8:
                        tcp_transfer(address, port, local, stats)
                    else:
                        udp_exchange(address, port, local, stats)

            workers = [threading.Thread(target=worker, args=(i,)) for i in range(args.workers)]
            for thread in workers:
                thread.start()
            while time.monotonic() < end - 5:
                time.sleep(rng.uniform(2, 6))  # the time between faults, not a synchronisation
                action = rng.choice(["hub", "edge-tcpTls", "edge-quic", "target", "ports", "secret"])
                faults[action] = faults.get(action, 0) + 1
                if action == "ports":
                    fleet.extra = not fleet.extra
                    fleet.push()
                    continue
                if action == "secret":
                    # Rotation: the hub gets the new secret first (its tunnel to that edge ends,
                    # the old secret no longer logs in), then the edge restarts with it.
                    transport = rng.choice(list(EDGES))
                    fleet.secrets[transport] = f"soak-secret-{faults['secret']}"
                    fleet.push()
                    action = f"edge-{transport}"
                fleet.kill(action)
                time.sleep(rng.uniform(0.2, 2))  # how long it stays down
                fleet.start(action)
                if action != "target":
                    affected = EDGES.values() if action == "hub" else [EDGES[action.split("-", 1)[1]]]
                    took = [probe(address, port, time.monotonic() + 60) for address in affected]
                    recoveries.extend(t for t in took if t is not None)
                    report.check(f"{action} killed and restarted: traffic back", all(t is not None for t in took), took)
            stop.set()
            for thread in workers:
                thread.join(timeout=60)
            report.check("every traffic worker finished", not any(t.is_alive() for t in workers))

            # After the run: back to the baseline once the last streams are gone.
            for transport, address in EDGES.items():
                report.check(f"{transport}: traffic flows after the run", probe(address, port, time.monotonic() + 60) is not None)
            leaks = []
            settle = time.monotonic() + 30
            while True:
                streams = {name: active_streams(fleet.metrics[name]) for name in ("hub", "edge-tcpTls", "edge-quic")}
                usage = {name: process_usage(fleet.procs[name].proc.pid) for name in baseline}
                leaks = [f"{name}: {streams[name]:.0f} streams, fds {usage[name][0]} vs {baseline[name][0]}, "
                         f"RSS {usage[name][1] // 1024} vs {baseline[name][1] // 1024} MiB"
                         for name in baseline
                         if streams[name] > 0 or usage[name][0] > baseline[name][0] + 8
                         or usage[name][1] > baseline[name][1] + 96 * 1024]
                if not leaks or time.monotonic() > settle:
                    break
                time.sleep(0.5)
            report.check("hub and edges back to baseline (streams 0, fds +8, RSS +96 MiB at most)", not leaks, leaks)
        finally:
            fleet.stop_all()
    c = stats.counts
    transfers = c["complete"] + c["reset"] + c["refused"] + c["corrupted"] + c["truncated"] + c["hung"]
    report.check("no corrupted transfer or datagram", c["corrupted"] == 0 and c["udp_corrupted"] == 0, stats.examples)
    report.check("no silently truncated transfer", c["truncated"] == 0, stats.examples)
    report.check("no hung transfer", c["hung"] == 0, stats.examples)
    report.check("most transfers complete", c["complete"] > transfers // 2, c)
    median = statistics.median(recoveries) if recoveries else float("nan")
    worst = max(recoveries) if recoveries else float("nan")
    print(f"soak summary: transfers {transfers}, bytes {stats.bytes}, complete {c['complete']}, resets {c['reset']}, "
          f"refused {c['refused']}, corruptions {c['corrupted'] + c['udp_corrupted']}, silent truncations {c['truncated']}, "
          f"hangs {c['hung']}, udp {c['udp_ok']} ok / {c['udp_lost']} lost, recoveries {len(recoveries)} "
          f"(median {median:.2f} s, max {worst:.2f} s, from restart to a verified transfer), leaks {len(leaks)}; "
          f"faults {faults}", flush=True)
    return report.finish()


if __name__ == "__main__":
    sys.exit(main())
