"""Shared helpers for the scenario tests: processes stopped by PID, bounded waits, free ports,
network namespaces that are always removed. Standard library only."""
import contextlib
import json
import os
import queue
import signal
import socket
import subprocess
import threading
import time

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def binary():
    """The remoteingress-bin to test: $REMOTEINGRESS_BINARY, else the debug build."""
    return os.environ.get("REMOTEINGRESS_BINARY") or os.path.join(REPO, "target", "debug", "remoteingress-bin")


class Process:
    """A child process whose stdout lines are collected; killed by PID on stop()."""

    def __init__(self, argv, name, env=None, stdin=subprocess.DEVNULL):
        full_env = dict(os.environ)
        full_env.update(env or {})
        full_env.setdefault("REMOTEINGRESS_LOG", "info")
        # A value of None unsets the variable (REMOTEINGRESS_LOG: None runs the default filter).
        full_env = {key: value for key, value in full_env.items() if value is not None}
        self.name = name
        self.stderr_path = f"/tmp/ri-test-{name}-{os.getpid()}.log"
        self.stderr = open(self.stderr_path, "w")
        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=self.stderr, stdin=stdin,
                                     text=True, env=full_env, start_new_session=True)
        self.lines = queue.Queue()
        # Every stdout line with the monotonic time it arrived, for measuring when things happened.
        self.timed = []
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self):
        for line in self.proc.stdout:
            line = line.rstrip("\n")
            self.timed.append((time.monotonic(), line))
            self.lines.put(line)
        self.lines.put(None)

    def event_times(self, name, since, match=lambda data: True):
        """For --json processes: arrival times (monotonic) of the events called `name` that
        arrived after `since` and whose data satisfies `match`, so far."""
        times = []
        for at, line in list(self.timed):
            if at < since:
                continue
            try:
                event = json.loads(line)
            except ValueError:
                continue
            if event.get("event") == name and match(event.get("data") or {}):
                times.append(at)
        return times

    def wait_event_time(self, name, since, match=lambda data: True, timeout=15.0):
        """Waits (polling, bounded) for an event as in event_times; returns its arrival time."""
        deadline = time.monotonic() + timeout
        while True:
            times = self.event_times(name, since, match)
            if times:
                return times[0]
            if time.monotonic() >= deadline:
                raise TimeoutError(f"{self.name}: no {name} event within {timeout}s\n{self.log_tail()}")
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited (code {self.proc.poll()})\n{self.log_tail()}")
            time.sleep(0.05)

    def wait_line(self, predicate, timeout=15.0):
        """The first stdout line for which predicate(line) is true, within timeout seconds."""
        deadline = time.monotonic() + timeout
        seen = []
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"{self.name}: no matching line in {timeout}s; saw {seen[-5:]}\n{self.log_tail()}")
            try:
                line = self.lines.get(timeout=remaining)
            except queue.Empty:
                continue
            if line is None:
                raise RuntimeError(f"{self.name} exited (code {self.proc.poll()}); saw {seen[-5:]}\n{self.log_tail()}")
            seen.append(line)
            if predicate(line):
                return line

    def wait_event(self, name, timeout=15.0):
        """For --json processes: the data of the first event called `name`."""
        def is_event(line):
            try:
                return json.loads(line).get("event") == name
            except ValueError:
                return False
        return json.loads(self.wait_line(is_event, timeout))["data"]

    def log_tail(self, lines=20):
        try:
            with open(self.stderr_path) as log:
                return "".join(log.readlines()[-lines:])
        except OSError:
            return ""

    def stop(self):
        """Stops the process (SIGTERM, then SIGKILL) and deletes its log (unless KEEP_TEST_LOGS)."""
        self.stop_keeping_log()
        if os.environ.get("KEEP_TEST_LOGS"):
            print(f"{self.name}: log kept in {self.stderr_path}")
            return
        self.discard_log()

    def stop_keeping_log(self):
        if self.proc.poll() is None:
            try:
                os.kill(self.proc.pid, signal.SIGTERM)
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=5)
            except ProcessLookupError:
                pass
        self.stderr.close()

    def log_text(self):
        """Everything the process wrote to stderr."""
        try:
            with open(self.stderr_path, errors="replace") as log:
                return log.read()
        except OSError:
            return ""

    def discard_log(self):
        try:
            os.unlink(self.stderr_path)
        except OSError:
            pass


class Management(Process):
    """remoteingress-bin --management: JSON requests on stdin, responses matched by id. The
    events stay readable through `timed` / `event_times` (wait_line skips them)."""

    def __init__(self, argv, name, env=None):
        super().__init__(argv, name, env=env, stdin=subprocess.PIPE)
        self.next_id = 0

    def call(self, method, params=None, timeout=15):
        self.next_id += 1
        request_id = f"r_{self.next_id}"
        self.proc.stdin.write(json.dumps({"id": request_id, "method": method, "params": params or {}}) + "\n")
        self.proc.stdin.flush()
        return json.loads(self.wait_line(lambda line: f'"id":"{request_id}"' in line, timeout=timeout))


@contextlib.contextmanager
def stopping():
    """A list for the processes a scenario starts; however the block is left, each is stopped
    (by PID, the last started first)."""
    processes = []
    try:
        yield processes
    finally:
        for process in reversed(processes):
            process.stop()


@contextlib.contextmanager
def namespaces(prefix, count, sysctls=()):
    """`count` new network namespaces, loopback up and each `sysctls` entry ("key=value") set in
    each; yields their names and always deletes them (with everything in them)."""
    tag = os.urandom(2).hex()
    names = [f"{prefix}-{index}-{tag}" for index in range(count)]
    try:
        for ns in names:
            run("ip", "netns", "add", ns)
            run("ip", "-n", ns, "link", "set", "lo", "up")
            if sysctls:
                run("ip", "netns", "exec", ns, "sysctl", "-q", "-w", *sysctls)
        yield names
    finally:
        for ns in names:
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)


@contextlib.contextmanager
def linked_namespaces(prefix, a_addresses, b_addresses):
    """Two new network namespaces (loopback up) joined by a veth pair with the given CIDR
    addresses on each end; yields (ns_a, ns_b, dev_a, dev_b) and always deletes both."""
    tag = os.urandom(2).hex()
    dev_a, dev_b = f"{prefix}a{tag}", f"{prefix}b{tag}"
    with namespaces(prefix, 2) as (ns_a, ns_b):
        run("ip", "link", "add", dev_a, "netns", ns_a, "type", "veth", "peer", "name", dev_b, "netns", ns_b)
        for ns, dev, addresses in ((ns_a, dev_a, a_addresses), (ns_b, dev_b, b_addresses)):
            for address in addresses:
                run("ip", "-n", ns, "addr", "add", address, "dev", dev)
            run("ip", "-n", ns, "link", "set", dev, "up")
        yield ns_a, ns_b, dev_a, dev_b


@contextlib.contextmanager
def namespaces_linked_to_host(prefix, links):
    """One new network namespace (loopback up) per entry of `links` ({key: (host_addresses,
    namespace_addresses)}, CIDR), each joined to this process's namespace by its own veth pair;
    yields {key: namespace name} and always deletes them (which deletes the veth pairs)."""
    tag = os.urandom(2).hex()
    names = {key: f"{prefix}-{index}-{tag}" for index, key in enumerate(links)}
    try:
        for index, (key, (host_addresses, ns_addresses)) in enumerate(links.items()):
            ns, host_dev, ns_dev = names[key], f"{prefix}{index}h{tag}", f"{prefix}{index}n{tag}"
            run("ip", "netns", "add", ns)
            run("ip", "-n", ns, "link", "set", "lo", "up")
            run("ip", "link", "add", host_dev, "type", "veth", "peer", "name", ns_dev, "netns", ns)
            for address in host_addresses:
                run("ip", "addr", "add", address, "dev", host_dev)
            for address in ns_addresses:
                run("ip", "-n", ns, "addr", "add", address, "dev", ns_dev)
            run("ip", "link", "set", host_dev, "up")
            run("ip", "-n", ns, "link", "set", ns_dev, "up")
        yield names
    finally:
        for ns in names.values():
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)


def hub_and_edges(report, processes, in_hub, in_edge, hub_ip, tunnel_port, edges_file, state_dir, edges, prefix, secret):
    """A hub (in_hub) serving `edges_file` and one edge per transport (in_edge, edge id
    `<prefix>-<transport>`, bound to `edges[transport]`), each checked connected with its ports
    assigned. Returns (hub, {transport: edge}); every process is appended to `processes`."""
    hub = Process(in_hub([binary(), "hub", "--tunnel-port", str(tunnel_port), "--edges", edges_file,
                          "--state-dir", state_dir, "--json"]), f"{prefix}-hub")
    processes.append(hub)
    hub.wait_event("started")
    started = {}
    for transport, address in edges.items():
        started[transport] = Process(in_edge([
            binary(), "edge", "--hub-host", hub_ip, "--hub-port", str(tunnel_port), "--edge-id", f"{prefix}-{transport}",
            "--secret", secret, "--transport-mode", transport, "--bind-address", address, "--no-stun", "--json"]),
            f"{prefix}-edge-{transport}")
        processes.append(started[transport])
    for transport, edge in started.items():
        connected = edge.wait_event("tunnelConnected", timeout=20)
        report.check(f"{transport}: connected", connected["transport"] == transport, connected)
        edge.wait_event("portsAssigned", timeout=10)
    return hub, started


def free_port(host="127.0.0.1", also_free_on=()):
    """A TCP port free on host (and on every address in also_free_on)."""
    for _ in range(100):
        with socket.socket() as s:
            s.bind((host, 0))
            port = s.getsockname()[1]
        ok = True
        for other in also_free_on:
            with socket.socket() as t:
                try:
                    t.bind((other, port))
                except OSError:
                    ok = False
        if ok:
            return port
    raise RuntimeError("no free port")


def wait_port(host, port, timeout=10.0):
    """Waits until a TCP port accepts connections."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection((host, port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"{host}:{port} not listening after {timeout}s")


def wait_for(what, check, timeout=15):
    """check()'s first true value, polled every 0.1 s; TimeoutError(what) after timeout seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(what)
        time.sleep(0.1)


def run(*argv, check=True):
    return subprocess.run(argv, check=check, capture_output=True, text=True)


def token(hub_host, hub_port, edge_id, secret):
    return run(binary(), "token", "encode", "--hub-host", hub_host, "--hub-port", str(hub_port),
               "--edge-id", edge_id, f"--secret={secret}").stdout.strip()  # may start with "-"


def recv_to_eof(sock):
    """Everything the peer sends until it closes (bounded by the socket's timeout)."""
    data = b""
    while True:
        chunk = sock.recv(65536)
        if not chunk:
            return data
        data += chunk


class Report:
    """Counts checks and prints the closing line test runners recognise."""

    def __init__(self):
        self.passed = 0
        self.failed = 0

    def check(self, name, condition, detail=""):
        if condition:
            self.passed += 1
            print(f"ok   {name}")
        else:
            self.failed += 1
            print(f"FAIL {name}: {detail}")

    def finish(self):
        print(f"{self.passed} passed, {self.failed} failed")
        return 0 if self.failed == 0 and self.passed > 0 else 1
