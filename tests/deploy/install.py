#!/usr/bin/env python3
"""The install of docs/operations.md, run literally: its blocks marked `deploy-test` run as root
with bash, in a private mount namespace whose /etc, /usr/local/bin and /var/lib are overlays
(writes land in a temporary directory, the host is untouched). `systemctl` is the one command
not run for real (no systemd here): the blocks' `systemctl` calls are recorded, and this script
does what systemd would. `daemon-reload`: `systemd-analyze verify` the installed units.
`enable --now UNIT`: start the unit's ExecStart as the unit says: its User= and Group= (with
their groups), AmbientCapabilities=, NoNewPrivileges=, LimitNOFILE=, UMask=, a clean environment
from Environment= and EnvironmentFile=, StateDirectory=, and a NOTIFY_SOCKET it must report
READY=1 on (Type=notify). The hub and the edge each get a network namespace of their own, joined
by a veth pair; hub.example.net resolves to the hub through the overlay's /etc/hosts.

Then it checks what an operator would: the files have the documented owners and modes, the
roles run as their users and say nothing about exposed secrets, the edge is ready, a client
reaches the target through the tunnel with its address in the PROXY header, and `systemctl
reload` (the unit's ExecReload= lines, run as the unit) applies a firewall change in the edge's
kernel."""
import grp
import json
import os
import pwd
import re
import resource
import shlex
import shutil
import socket
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tools"))
import harness  # noqa: E402

DOC = os.path.join(harness.REPO, "docs", "operations.md")
TOOLS = os.path.join(harness.REPO, "tests", "tools")
OVERLAID = ("/etc", "/usr/local/bin", "/var/lib")
INSIDE = "REMOTEINGRESS_DEPLOY_TEST_INSIDE"
HUB_IP, EDGE_IP = "10.77.0.1", "10.77.0.2"
# systemd's PATH for services.
SERVICE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def doc_blocks():
    """{name: shell text} of the blocks marked `<!-- deploy-test: NAME -->` in operations.md."""
    text = open(DOC).read()
    return {name: body for name, body in re.findall(r"<!-- deploy-test: (\w+) -->\n```sh\n(.*?)```", text, re.S)}


def overlay(workdir):
    """Mounts an overlay over each of OVERLAID (this process is in a private mount namespace)."""
    for index, path in enumerate(OVERLAID):
        upper, work = os.path.join(workdir, f"upper{index}"), os.path.join(workdir, f"work{index}")
        os.makedirs(upper)
        os.makedirs(work)
        harness.run("mount", "-t", "overlay", "overlay", "-o", f"lowerdir={path},upperdir={upper},workdir={work}", path)


def run_block(report, name, body, cwd, requests):
    """Runs one doc block with bash as root (errexit), recording `systemctl` calls."""
    script = f"set -euo pipefail\nsystemctl() {{ printf '%s\\n' \"$*\" >> {shlex.quote(requests)}; }}\n{body}"
    out = subprocess.run(["bash", "-c", script], cwd=cwd, capture_output=True, text=True, timeout=120,
                         env={"PATH": SERVICE_PATH, "HOME": "/root"})
    report.check(f"operations.md block '{name}' runs as written", out.returncode == 0, out.stdout + out.stderr)
    return out.returncode == 0


def unit_settings(unit):
    """The installed unit's settings: {key: [values in order]}."""
    settings = {}
    for line in open(f"/etc/systemd/system/{unit}"):
        line = line.strip()
        if line and not line.startswith(("#", ";", "[")) and "=" in line:
            key, value = line.split("=", 1)
            settings.setdefault(key, []).append(value)
    return settings


def environment_file(path):
    """KEY=VALUE lines as systemd reads an EnvironmentFile (comments and blank lines skipped)."""
    env = {}
    for line in open(path):
        line = line.strip()
        if line and not line.startswith(("#", ";")):
            key, value = line.split("=", 1)
            env[key.strip()] = value.strip().strip('"')
    return env


def as_unit(unit, argv, nofile, extra_env=None):
    """argv (and its environment) as systemd runs the unit's commands; `extra_env` is what
    systemd itself adds (NOTIFY_SOCKET)."""
    settings = unit_settings(unit)
    env = {"PATH": SERVICE_PATH, **(extra_env or {})}
    for path in settings.get("EnvironmentFile", []):
        env.update(environment_file(path))
    for assignment in settings.get("Environment", []):
        key, value = assignment.split("=", 1)
        env[key] = value.replace("%S", "/var/lib")
    user, group = settings["User"][-1], settings["Group"][-1]
    caps = [cap.removeprefix("CAP_").lower() for cap in " ".join(settings.get("AmbientCapabilities", [])).split()]
    bounding = "-all" + "".join(f",+{cap}" for cap in caps)
    privileges = ["setpriv", "--reuid", user, "--regid", group, "--init-groups", "--bounding-set", bounding]
    if settings.get("NoNewPrivileges", ["no"])[-1] == "yes":
        privileges.append("--no-new-privs")
    if caps:
        arg = ",".join(f"+{cap}" for cap in caps)
        privileges += ["--inh-caps", arg, "--ambient-caps", arg]
    umask = settings.get("UMask", ["0022"])[-1]
    env_argv = ["env", "-i", *(f"{key}={value}" for key, value in env.items())]
    return ["prlimit", f"--nofile={nofile}:{nofile}", *privileges, *env_argv, "sh", "-c", f"umask {umask}; exec \"$@\"", "sh", *argv]


def make_state_directory(unit):
    settings = unit_settings(unit)
    for name in settings.get("StateDirectory", []):
        path = os.path.join("/var/lib", name)
        os.makedirs(path, exist_ok=True)
        uid, gid = pwd.getpwnam(settings["User"][-1]).pw_uid, grp.getgrnam(settings["Group"][-1]).gr_gid
        # As systemd does: what is in an existing directory changes owner with it.
        for root, dirs, files in os.walk(path):
            for name in [root, *(os.path.join(root, entry) for entry in dirs + files)]:
                os.chown(name, uid, gid)
        os.chmod(path, int(settings.get("StateDirectoryMode", ["0755"])[-1], 8))


def start_unit(report, unit, netns, notify, nofile, processes):
    """`systemctl start UNIT`: ExecStart as the unit runs it, in `netns`; returns the process once
    it reported READY=1 (None if it did not)."""
    make_state_directory(unit)
    argv = shlex.split(unit_settings(unit)["ExecStart"][-1])
    process = harness.Process(["ip", "netns", "exec", netns,
                               *as_unit(unit, argv, nofile, {"NOTIFY_SOCKET": notify.getsockname()})], unit)
    processes.append(process)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and process.proc.poll() is None:
        try:
            message = notify.recv(4096).decode()
        except socket.timeout:
            continue
        if "READY=1" in message.splitlines():
            report.check(f"{unit} reports READY=1 (Type=notify)", True)
            return process
    state = subprocess.run(["ls", "-lan", "/var/lib/remoteingress"], capture_output=True, text=True).stdout
    report.check(f"{unit} reports READY=1 (Type=notify)", False, open(process.stderr_path).read()[-3000:] + state)
    return None


def mode_of(path):
    info = os.stat(path)
    return (pwd.getpwuid(info.st_uid).pw_name, grp.getgrgid(info.st_gid).gr_name, f"{info.st_mode & 0o777:04o}")


def check_runs_as(report, process, user, nofile):
    status = open(f"/proc/{process.proc.pid}/status").read()
    uid = int(re.search(r"^Uid:\s+(\d+)", status, re.M).group(1))
    report.check(f"{process.name} runs as {user}", uid == pwd.getpwnam(user).pw_uid, uid)
    limits = open(f"/proc/{process.proc.pid}/limits").read()
    report.check(f"{process.name} has the open-file limit it was given ({nofile})",
                 re.search(rf"Max open files\s+{nofile}\s+{nofile}", limits) is not None, limits)


def reload_unit(report, unit, process, netns, nofile):
    """`systemctl reload UNIT`: each ExecReload= line as the unit runs it, in order."""
    for line in unit_settings(unit).get("ExecReload", []):
        argv = shlex.split(line.replace("$MAINPID", str(process.proc.pid)))
        out = subprocess.run(["ip", "netns", "exec", netns, *as_unit(unit, argv, nofile)], capture_output=True, text=True,
                             timeout=30)
        report.check(f"ExecReload {line!r} succeeds", out.returncode == 0, out.stdout + out.stderr)


def http_ok(netns, url, timeout=20.0):
    """Polls `url` inside `netns` until it answers 200 (bounded); returns the last body."""
    deadline = time.monotonic() + timeout
    body = ""
    while time.monotonic() < deadline:
        out = subprocess.run(["ip", "netns", "exec", netns, sys.executable, "-c",
                              f"import urllib.request;print(urllib.request.urlopen({url!r},timeout=2).read().decode())"],
                             capture_output=True, text=True)
        body = out.stdout + out.stderr
        if out.returncode == 0:
            return True, body
        time.sleep(0.2)
    return False, body


def inside():
    report = harness.Report()
    blocks = doc_blocks()
    report.check("operations.md marks the install, hub, token and edge blocks",
                 sorted(blocks) == ["edge", "hub", "install", "token"], sorted(blocks))
    nofile = min(1048576, resource.getrlimit(resource.RLIMIT_NOFILE)[1])
    with tempfile.TemporaryDirectory(prefix="ri-install-") as workdir:
        os.chmod(workdir, 0o755)
        overlay(workdir)
        # The checkout the operator runs the blocks in: the repository's deploy/ and a release
        # build (here: the binary under test).
        checkout = os.path.join(workdir, "checkout")
        os.makedirs(os.path.join(checkout, "target", "release"))
        shutil.copytree(os.path.join(harness.REPO, "deploy"), os.path.join(checkout, "deploy"))
        shutil.copy(harness.binary(), os.path.join(checkout, "target", "release", "remoteingress-bin"))
        with open("/etc/hosts", "a") as hosts:
            hosts.write(f"{HUB_IP} hub.example.net\n")
        requests = os.path.join(workdir, "systemctl")
        notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        notify.bind(os.path.join(workdir, "notify"))
        os.chmod(os.path.join(workdir, "notify"), 0o777)
        notify.settimeout(0.2)

        def systemctl_calls():
            calls = open(requests).read().splitlines() if os.path.exists(requests) else []
            open(requests, "w").close()
            return calls

        with harness.linked_namespaces("ridp", [f"{HUB_IP}/24"], [f"{EDGE_IP}/24"]) as (hub_ns, edge_ns, _, _), \
                harness.stopping() as processes:
            if not run_block(report, "install", blocks["install"], checkout, requests):
                return report.finish()
            report.check("the install block ends with systemctl daemon-reload", systemctl_calls() == ["daemon-reload"])
            for unit in ("remoteingress-hub.service", "remoteingress-edge.service"):
                out = subprocess.run(["systemd-analyze", "verify", f"/etc/systemd/system/{unit}"], capture_output=True, text=True)
                report.check(f"systemd-analyze verify {unit} (installed)", out.returncode == 0 and not (out.stdout + out.stderr).strip(),
                             out.stdout + out.stderr)

            target = harness.Process(["ip", "netns", "exec", hub_ns, sys.executable, os.path.join(TOOLS, "proxy_target.py"),
                                      "--port", "443"], "install-target")
            processes.append(target)
            target.wait_line(lambda line: line.startswith("listening"))
            if not run_block(report, "hub", blocks["hub"], checkout, requests):
                return report.finish()
            report.check("the hub block starts the hub unit", systemctl_calls() == ["enable --now remoteingress-hub"])
            report.check("edges.json is root:remoteingress 0640", mode_of("/etc/remoteingress/edges.json") == ("root", "remoteingress", "0640"),
                         mode_of("/etc/remoteingress/edges.json"))
            report.check("hub.env is root:root 0600", mode_of("/etc/remoteingress/hub.env") == ("root", "root", "0600"))
            hub = start_unit(report, "remoteingress-hub.service", hub_ns, notify, nofile, processes)
            if hub is None:
                return report.finish()
            check_runs_as(report, hub, "remoteingress", nofile)
            report.check("the hub keeps its identity as its user, 0600",
                         mode_of("/var/lib/remoteingress/hub-identity.pem")[::2] == ("remoteingress", "0600"),
                         mode_of("/var/lib/remoteingress/hub-identity.pem"))

            if not run_block(report, "token", blocks["token"], checkout, requests):
                return report.finish()
            if not run_block(report, "edge", blocks["edge"], checkout, requests):
                return report.finish()
            report.check("the edge block starts the edge unit", systemctl_calls() == ["enable --now remoteingress-edge"])
            report.check("edge.token is root:remoteingress-edge 0640",
                         mode_of("/etc/remoteingress/edge.token") == ("root", "remoteingress-edge", "0640"),
                         mode_of("/etc/remoteingress/edge.token"))
            edge = start_unit(report, "remoteingress-edge.service", edge_ns, notify, nofile, processes)
            if edge is None:
                return report.finish()
            check_runs_as(report, edge, "remoteingress-edge", nofile)
            ready, body = http_ok(edge_ns, "http://127.0.0.1:9102/readyz")
            report.check("the edge is ready: tunnel up, ports 80 and 443 bound (/readyz)", ready, body)

            out = subprocess.run(["ip", "netns", "exec", hub_ns, sys.executable, "-c",
                                  f"import socket;s=socket.create_connection(({EDGE_IP!r},443),timeout=10);"
                                  "print(s.makefile().readline().strip())"], capture_output=True, text=True, timeout=20)
            report.check("a client on port 443 reaches the target, its address in the PROXY header",
                         out.stdout.startswith(f"target saw client {HUB_IP}:") and f"via edge {EDGE_IP}:443" in out.stdout,
                         out.stdout + out.stderr)

            # An everyday change: block an address, then `systemctl reload remoteingress-hub`.
            edges = json.load(open("/etc/remoteingress/edges.json"))
            edges[0]["firewallConfig"] = {"blockedIps": ["203.0.113.7"]}
            with open("/etc/remoteingress/edges.json", "w") as f:
                json.dump(edges, f)
            reload_unit(report, "remoteingress-hub.service", hub, hub_ns, nofile)
            deadline, table = time.monotonic() + 20, ""
            while time.monotonic() < deadline and "203.0.113.7" not in table:
                table = subprocess.run(["ip", "netns", "exec", edge_ns, "nft", "list", "table", "inet", "remoteingress"],
                                       capture_output=True, text=True).stdout
                time.sleep(0.1)
            report.check("after the reload the edge's kernel blocks the address (CAP_NET_ADMIN only)", "203.0.113.7" in table, table)

            for process in (edge, hub):
                process.proc.terminate()
                code = process.proc.wait(timeout=40)
                log = open(process.stderr_path).read()
                report.check(f"{process.name} stops cleanly on SIGTERM", code == 0, log[-2000:])
                report.check(f"{process.name} read every file it needed (no 'Permission denied')", "ermission denied" not in log, log[-2000:])
                report.check(f"{process.name} found no secret file readable by every user", "every local user can read" not in log, log[-2000:])
    return report.finish()


def main():
    if os.geteuid() != 0:
        print("needs root (mount namespace, setpriv, network namespaces)")
        return 1
    if os.environ.get(INSIDE) == "1":
        return inside()
    for tool in ("systemd-analyze", "systemd-sysusers", "setpriv"):
        if not shutil.which(tool):
            print(f"{tool} is missing (setup.sh installs systemd and util-linux)")
            return 1
    # A private mount namespace: the overlays and everything the blocks write vanish with it.
    return subprocess.run(["unshare", "--mount", "--propagation", "private", sys.executable, os.path.abspath(__file__)],
                          env={**os.environ, INSIDE: "1"}).returncode


if __name__ == "__main__":
    sys.exit(main())
