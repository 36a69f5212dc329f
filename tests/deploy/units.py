#!/usr/bin/env python3
"""The systemd units in deploy/: `systemd-analyze verify` accepts them (with ExecStart pointed at
the built binary), and the binary runs the way they run it — as an unprivileged user, the hub
with no capability, the edge with only CAP_NET_ADMIN and CAP_NET_BIND_SERVICE (ambient),
no-new-privs, the units' open-file limit — and carries traffic: the edge binds port 443, applies
the hub's firewall snapshot, and a client reaches the target through the tunnel. Runs in a
network namespace created here."""
import json
import os
import pwd
import re
import resource
import shutil
import socket
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tools"))
import harness  # noqa: E402

DEPLOY = os.path.join(harness.REPO, "deploy")
TOOLS = os.path.join(harness.REPO, "tests", "tools")
USER, GROUP = "nobody", "nogroup"


def unit_setting(unit, key):
    """The value of `key=` in a unit file (the last one)."""
    values = re.findall(rf"^{key}=(.*)$", open(os.path.join(DEPLOY, unit)).read(), re.M)
    return values[-1].strip() if values else ""


def verify(report, workdir):
    for unit in ("remoteingress-hub.service", "remoteingress-edge.service"):
        text = open(os.path.join(DEPLOY, unit)).read()
        text = text.replace("/usr/local/bin/remoteingress-bin", harness.binary())
        path = os.path.join(workdir, unit)
        with open(path, "w") as f:
            f.write(text)
        out = subprocess.run(["systemd-analyze", "verify", path], capture_output=True, text=True)
        report.check(f"systemd-analyze verify {unit}", out.returncode == 0 and not out.stdout.strip() and not out.stderr.strip(),
                     out.stdout + out.stderr)


def as_unit(argv, caps, nofile):
    """argv run as the units run it: unprivileged user, these ambient capabilities only,
    no-new-privs, the units' open-file limit."""
    caps_arg = ",".join(f"+{cap}" for cap in caps) or "-all"
    bounding = "-all" + "".join(f",+{cap}" for cap in caps)
    privileges = ["setpriv", "--reuid", USER, "--regid", GROUP, "--clear-groups", "--no-new-privs",
                  "--bounding-set", bounding]
    if caps:
        privileges += ["--inh-caps", caps_arg, "--ambient-caps", caps_arg]
    return ["prlimit", f"--nofile={nofile}:{nofile}", *privileges, *argv]


def main():
    if os.geteuid() != 0:
        print("needs root (setpriv, network namespaces)")
        return 1
    report = harness.Report()
    if not shutil.which("systemd-analyze"):
        report.check("systemd-analyze is installed (setup.sh installs systemd)", False)
        return report.finish()
    inside = lambda argv: ["ip", "netns", "exec", ns, *argv]  # noqa: E731
    with tempfile.TemporaryDirectory(prefix="ri-deploy-") as workdir:
        verify(report, workdir)
        # The units' limit, or this machine's hard limit where that is lower (a container may not
        # allow raising it).
        nofile = min(int(unit_setting("remoteingress-edge.service", "LimitNOFILE")),
                     resource.getrlimit(resource.RLIMIT_NOFILE)[1])
        edge_caps = [cap.removeprefix("CAP_").lower() for cap in unit_setting("remoteingress-edge.service", "AmbientCapabilities").split()]
        report.check("the edge unit grants exactly NET_ADMIN and NET_BIND_SERVICE", sorted(edge_caps) == ["net_admin", "net_bind_service"],
                     edge_caps)
        report.check("the hub unit grants no capability", unit_setting("remoteingress-hub.service", "AmbientCapabilities") == "")
        state = os.path.join(workdir, "state")
        os.mkdir(state, 0o700)
        user = pwd.getpwnam(USER)
        os.chown(state, user.pw_uid, user.pw_gid)
        os.chmod(workdir, 0o755)
        edges = os.path.join(workdir, "edges.json")
        with open(edges, "w") as f:
            json.dump([{"id": "unit-edge", "secret": "unit-secret-1-0123456789", "listenPorts": [443],
                        "targetPorts": [{"port": 443, "targetPort": 18443}],
                        "firewallConfig": {"blockedIps": ["192.0.2.1"]}}], f)
        os.chmod(edges, 0o644)
        with harness.namespaces("ridp", 1) as (ns,), harness.stopping() as processes:
            target = harness.Process(inside([sys.executable, os.path.join(TOOLS, "proxy_target.py"), "--port", "18443"]),
                                     "unit-target")
            processes.append(target)
            target.wait_line(lambda line: line.startswith("listening"))
            hub = harness.Process(inside(as_unit([harness.binary(), "hub", "--tunnel-port", "18447", "--edges", edges,
                                                  "--state-dir", state, "--json"], [], nofile)), "unit-hub")
            processes.append(hub)
            started = hub.wait_event("started")
            fingerprint = started["certSha256"]
            identity = os.stat(os.path.join(state, "hub-identity.pem"))
            report.check("the hub keeps its identity as the unprivileged user, 0600",
                         identity.st_uid == user.pw_uid and identity.st_mode & 0o777 == 0o600, oct(identity.st_mode))
            token = harness.token("127.0.0.1", 18447, "unit-edge", "unit-secret-1-0123456789")
            edge = harness.Process(inside(as_unit([harness.binary(), "edge", "--token", token, "--hub-cert-sha256", fingerprint,
                                                   "--bind-address", "127.0.0.2", "--no-stun", "--json"], edge_caps, nofile)),
                                   "unit-edge")
            processes.append(edge)
            edge.wait_event("tunnelConnected", timeout=20)
            applied = edge.wait_event("firewallConfigUpdated", timeout=20)
            report.check("the edge applies the firewall with CAP_NET_ADMIN only", applied.get("blockedRanges") == 1, applied)
            # ip netns exec, prlimit and setpriv each exec the next: the PID is the binary's.
            status = open(f"/proc/{edge.proc.pid}/status").read()
            uid = re.search(r"^Uid:\s+(\d+)", status, re.M).group(1)
            report.check(f"the edge runs as {USER}", int(uid) == user.pw_uid, uid)
            limits = open(f"/proc/{edge.proc.pid}/limits").read()
            report.check(f"with the open-file limit it was given ({nofile})", re.search(rf"Max open files\s+{nofile}\s+{nofile}", limits)
                         is not None, limits)
            out = subprocess.run(inside([sys.executable, "-c",
                                         "import socket;s=socket.create_connection(('127.0.0.2',443),timeout=10);"
                                         "print(s.makefile().readline().strip())"]), capture_output=True, text=True, timeout=20)
            report.check("a client on port 443 reaches the target through the tunnel",
                         out.stdout.startswith("target saw client 127.0.0.1:") and "via edge 127.0.0.2:443" in out.stdout,
                         out.stdout + out.stderr)
            tables = subprocess.run(inside(["nft", "list", "tables"]), capture_output=True, text=True).stdout
            report.check("the firewall table is in the kernel", "inet remoteingress" in tables, tables)
    return report.finish()


if __name__ == "__main__":
    sys.exit(main())
