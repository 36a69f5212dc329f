#!/usr/bin/env python3
"""Chaos soak: TCP and UDP traffic through a tcpTls edge and a quic edge, and egress through the
quic edge, while a driver kills (-9) and restarts the hub, the edges and the target at random
moments, pushes port changes and firewall snapshots, and rotates edge secrets. Every TCP transfer
must end complete with its SHA-256 verified, or reported to the client as a failure (reset,
refused) -- never truncated silently, never corrupted, never hung; every UDP reply must equal its
request; every firewall snapshot must reach the edge's kernel and act on packets. After the run,
file descriptors, open streams and memory of the hub and the edges are back to their baseline.

    soak.py [--seconds 600] [--workers 8] [--seed N]

Topology: the hub (driven over --management, as the TypeScript wrapper drives it), the target and
the traffic workers run here; each edge runs in its own network namespace (its own nftables, so
the two edges' firewalls never meet), joined to this one by a veth pair: 10.97.N.1 here,
10.97.N.2 the edge, 10.97.N.3 a second client address the firewall snapshots block and unblock.

The target (tests/soak/target.py) arms SO_LINGER 0 on its sockets (disarmed before a normal
close), as the tunnel does: a target that dies mid-transfer then resets its connections. (A
target that dies and sends a plain FIN cannot be told from one that finished, by any proxy; HTTP
has Content-Length for that.) Prints one summary line at the end; exits 1 if a check failed.
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
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tools"))
import harness  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import target  # noqa: E402

# Transport -> N of its link: 10.97.N.1 here, 10.97.N.2 the edge, 10.97.N.3 the blocked client.
LINKS = {"tcpTls": 1, "quic": 2}
EDGES = {transport: f"10.97.{n}.2" for transport, n in LINKS.items()}
BLOCKABLE = {transport: f"10.97.{n}.3" for transport, n in LINKS.items()}
HUB_SIDE = {transport: f"10.97.{n}.1" for transport, n in LINKS.items()}
EDGE_METRICS_PORT = 9464
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


def tcp_transfer(address, port, rng, stats, size=None, download=None, source=None):
    """One transfer of `size` bytes (default: log-uniform 1 KiB .. 8 MiB), up or down."""
    size = size or int(2 ** rng.uniform(10, 23))
    download = rng.random() < 0.5 if download is None else download
    seed = rng.randbytes(8)
    try:
        s = socket.create_connection((address, port), timeout=5, source_address=(source, 0) if source else None)
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
    """Hub, edges and target as processes that the driver kills and restarts, and the hub's
    configuration that it pushes (over --management, one call at a time)."""

    def __init__(self, workdir, namespaces, port, tunnel_port):
        self.workdir, self.namespaces, self.port, self.tunnel_port = workdir, namespaces, port, tunnel_port
        self.extra_port = harness.free_port()
        self.egress_port = harness.free_port()
        self.procs = {}
        self.metrics = {}
        self.secrets = {t: "soak-secret-0123456789-0" for t in EDGES}
        self.blocked = {t: False for t in EDGES}
        self.extra = False
        self.hub_lock = threading.Lock()

    def allowed_edges(self):
        ports = [self.port] + ([self.extra_port] if self.extra else [])
        edges = []
        for transport in EDGES:
            edge = {"id": f"soak-{transport}", "secret": self.secrets[transport], "listenPorts": ports,
                    "listenPortsUdp": [self.port], "limits": {"maxConnectionsPerSource": 100000},
                    "firewallConfig": {"blockedIps": [BLOCKABLE[transport]] if self.blocked[transport] else []}}
            if transport == "quic":
                edge["egress"] = {"enabled": True, "allowedPorts": [self.egress_port], "allowPrivateRanges": True,
                                  "maxConcurrentStreams": 64}
            edges.append(edge)
        return edges

    def hub_call(self, method, params, timeout=15):
        """One management call to the current hub; raises if it is down or does not answer."""
        with self.hub_lock:
            answer = self.procs["hub"].call(method, params, timeout=timeout)
        if not answer.get("success"):
            raise RuntimeError(f"{method}: {answer}")
        return answer.get("result")

    def push(self):
        """The allowed-edges list (ports, secrets, firewall snapshots, egress policy) pushed."""
        self.hub_call("updateAllowedEdges", {"edges": self.allowed_edges()})

    def start(self, name):
        binary = harness.binary()
        env = {"REMOTEINGRESS_LOG": "warn"}
        if name == "target":
            argv = [sys.executable, TARGET, str(self.port), f"{HUB_SIDE['quic']}:{self.egress_port}"]
            process = harness.Process(argv, "soak-target", env=env)
            process.wait_line(lambda line: line.startswith("listening"))
        elif name == "hub":
            metrics = f"127.0.0.1:{harness.free_port()}"
            process = harness.Management([binary, "--management"], "soak-hub", env=env)
            self.procs[name], self.metrics[name] = process, metrics
            process.wait_line(lambda line: '"ready"' in line)
            # Each UDP exchange comes from a new client port, so a new session with its own
            # socket on the hub: short idle time, so they are gone when leaks are counted.
            self.hub_call("start", {"role": "hub", "config": {
                "tunnelPort": self.tunnel_port, "stateDir": os.path.join(self.workdir, "hub"), "streamEventMode": "off",
                "metricsAddr": metrics, "performance": {"udpSessionIdleSecs": 5}}})
            self.push()
        else:
            transport = name.split("-", 1)[1]
            metrics = f"{EDGES[transport]}:{EDGE_METRICS_PORT}"
            argv = ["ip", "netns", "exec", self.namespaces[transport], binary, "edge", "--hub-host", HUB_SIDE[transport],
                    "--hub-port", str(self.tunnel_port), "--edge-id", f"soak-{transport}", "--secret", self.secrets[transport],
                    "--transport-mode", transport, "--bind-address", EDGES[transport], "--no-stun", "--metrics-addr", metrics,
                    "--json"]
            process = harness.Process(argv, f"soak-{name}", env=env)  # `ip netns exec` execs: the PID is the edge's
            self.metrics[name] = metrics
        self.procs[name] = process
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

    def firewall_blocks(self, transport):
        """Whether the edge's kernel (nft, read in its namespace) holds the blockable address."""
        listing = subprocess.run(["ip", "netns", "exec", self.namespaces[transport], "nft", "list", "set", "inet",
                                  "remoteingress", "blocked_v4"], capture_output=True, text=True)
        return BLOCKABLE[transport] in listing.stdout


def probe(address, port, deadline, source=None):
    """Seconds until a 1 KiB download through `address` completes, or None by the deadline."""
    started = time.monotonic()
    while time.monotonic() < deadline:
        stats = Stats()
        tcp_transfer(address, port, random.Random(1), stats, size=1024, download=True, source=source)
        if stats.counts["complete"]:
            return time.monotonic() - started
        time.sleep(0.05)
    return None


def refused_from(source, address, port):
    """Whether a connection from `source` fails (dropped or reset) within 1.5 s."""
    try:
        socket.create_connection((address, port), timeout=1.5, source_address=(source, 0)).close()
        return False
    except OSError:
        return True


def process_usage(pid):
    fds = len(os.listdir(f"/proc/{pid}/fd"))
    with open(f"/proc/{pid}/status") as f:
        rss = int(re.search(r"VmRSS:\s+(\d+)", f.read()).group(1))
    return fds, rss


def active_streams(metrics):
    text = urllib.request.urlopen(f"http://{metrics}/metrics", timeout=5).read().decode()
    return sum(float(v) for v in re.findall(r"^remoteingress_(?:hub_edge|edge)_streams_active(?:\{[^}]*\})? (\S+)$", text, re.M))


def poll(condition, seconds):
    """Seconds until condition() holds (polled every 20 ms), or None after `seconds`."""
    started = time.monotonic()
    while time.monotonic() - started < seconds:
        if condition():
            return time.monotonic() - started
        time.sleep(0.02)
    return None


class Driver:
    """The faults, one at a time, each followed by the check that the fleet recovered."""

    def __init__(self, fleet, report, rng):
        self.fleet, self.report, self.rng = fleet, report, rng
        self.faults, self.recoveries, self.firewall_applied = {}, [], []

    def act(self, action):
        fleet, rng = self.fleet, self.rng
        self.faults[action] = self.faults.get(action, 0) + 1
        if action == "ports":
            fleet.extra = not fleet.extra
            fleet.push()
            return
        if action == "firewall":
            self.toggle_firewall(rng.choice(list(EDGES)))
            return
        if action == "secret":
            # Rotation: the hub gets the new secret first (its tunnel to that edge ends,
            # the old secret no longer logs in), then the edge restarts with it.
            transport = rng.choice(list(EDGES))
            fleet.secrets[transport] = f"soak-secret-0123456789-{self.faults['secret']}"
            fleet.push()
            action = f"edge-{transport}"
        fleet.kill(action)
        time.sleep(rng.uniform(0.2, 2))  # how long it stays down: part of the fault, not a synchronisation
        fleet.start(action)
        if action != "target":
            affected = list(EDGES) if action == "hub" else [action.split("-", 1)[1]]
            took = [probe(EDGES[t], fleet.port, time.monotonic() + 60) for t in affected]
            self.recoveries.extend(t for t in took if t is not None)
            self.report.check(f"{action} killed and restarted: traffic back", all(t is not None for t in took), took)

    def toggle_firewall(self, transport):
        """A snapshot that blocks (or no longer blocks) 10.97.N.3 at that edge: read back from
        the edge's kernel, then acting on that client while the others' traffic goes on."""
        fleet = self.fleet
        fleet.blocked[transport] = not fleet.blocked[transport]
        blocked = fleet.blocked[transport]
        fleet.push()
        took = poll(lambda: fleet.firewall_blocks(transport) == blocked, 10)
        if took is not None:
            self.firewall_applied.append(took)
        source, address = BLOCKABLE[transport], EDGES[transport]
        if blocked:
            acts = refused_from(source, address, fleet.port)
        else:
            acts = probe(address, fleet.port, time.monotonic() + 10, source=source) is not None
        self.report.check(f"{transport}: firewall snapshot {'blocking' if blocked else 'unblocking'} {source} "
                          f"in the kernel and acting", took is not None and acts, {"applied_after": took, "acts": acts})


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=600)
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--seed", type=int, default=int(time.time()))
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("soak: needs root (network namespaces, nftables)")
        return 1
    rng = random.Random(args.seed)
    report = harness.Report()
    stats, egress = Stats(), Stats()
    links = {t: ([f"10.97.{n}.1/24", f"10.97.{n}.3/24"], [f"10.97.{n}.2/24"]) for t, n in LINKS.items()}
    with tempfile.TemporaryDirectory(prefix="ri-soak-") as workdir, \
            harness.namespaces_linked_to_host("rsk", links) as namespaces:
        port = harness.free_port()
        fleet = Fleet(workdir, namespaces, port, harness.free_port())
        driver = Driver(fleet, report, rng)
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

            def egress_worker():
                """Transfers the hub asks the quic edge to dial out for (startEgressTcpProxy)."""
                local = random.Random(args.seed * 1000 + 999)
                while not stop.is_set():
                    try:
                        proxy = fleet.hub_call("startEgressTcpProxy", {
                            "edgeId": "soak-quic", "logicalHost": HUB_SIDE["quic"], "port": fleet.egress_port,
                            "connectTimeoutMs": 3000}, timeout=5)
                    except (RuntimeError, TimeoutError, OSError, KeyError):
                        egress.add("refused")
                        time.sleep(0.2)  # the hub is down or the edge not connected: pace the retries
                        continue
                    complete = egress.counts["complete"]
                    tcp_transfer(proxy["listenHost"], proxy["listenPort"], local, egress)
                    if egress.counts["complete"] == complete:
                        # The dial failed fast (the edge's old tunnel not yet replaced, the target down):
                        # pace the next attempt, as a client would, so the counts say how often, not how fast.
                        time.sleep(0.2)

            workers = [threading.Thread(target=worker, args=(i,)) for i in range(args.workers)]
            workers.append(threading.Thread(target=egress_worker))
            for thread in workers:
                thread.start()
            # Every kind of fault once, in a random order, then at random: a short run still
            # covers each one.
            kinds = ["hub", "edge-tcpTls", "edge-quic", "target", "ports", "secret", "firewall"]
            first_round = rng.sample(kinds, len(kinds))
            while time.monotonic() < end - 5:
                time.sleep(rng.uniform(2, 6))  # the time between faults, not a synchronisation
                driver.act(first_round.pop() if first_round else rng.choice(kinds))
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
    c, e = stats.counts, egress.counts
    transfers = c["complete"] + c["reset"] + c["refused"] + c["corrupted"] + c["truncated"] + c["hung"]
    examples = stats.examples + egress.examples
    report.check("no corrupted transfer or datagram", c["corrupted"] + c["udp_corrupted"] + e["corrupted"] == 0, examples)
    report.check("no silently truncated transfer", c["truncated"] + e["truncated"] == 0, examples)
    report.check("no hung transfer", c["hung"] + e["hung"] == 0, examples)
    report.check("most transfers complete", c["complete"] > transfers // 2, c)
    report.check("egress transfers complete", e["complete"] > 0, e)
    recoveries = driver.recoveries
    median = statistics.median(recoveries) if recoveries else float("nan")
    worst = max(recoveries) if recoveries else float("nan")
    applied = driver.firewall_applied
    print(f"soak summary: transfers {transfers}, bytes {stats.bytes}, complete {c['complete']}, resets {c['reset']}, "
          f"refused {c['refused']}, corruptions {c['corrupted'] + c['udp_corrupted'] + e['corrupted']}, "
          f"silent truncations {c['truncated'] + e['truncated']}, hangs {c['hung'] + e['hung']}, "
          f"udp {c['udp_ok']} ok / {c['udp_lost']} lost, egress {e['complete']} complete / {e['reset']} reset / "
          f"{e['refused']} refused ({egress.bytes} bytes), firewall snapshots {len(applied)} in the kernel after "
          f"max {max(applied, default=float('nan')):.2f} s, recoveries {len(recoveries)} "
          f"(median {median:.2f} s, max {worst:.2f} s, from restart to a verified transfer), leaks {len(leaks)}; "
          f"faults {driver.faults}", flush=True)
    return report.finish()


if __name__ == "__main__":
    sys.exit(main())
