#!/usr/bin/env python3
"""`systemctl reload remoteingress-hub` as the unit in deploy/ defines it: its ExecReload= lines
run in order, with the environment of its EnvironmentFile (deploy/hub.env.example, paths moved
into a scratch directory), against a hub started the way ExecStart starts it. A reload with an
edges file the hub would refuse must fail and leave the hub alone (no SIGHUP, the old edges
stay); a good file is reloaded. systemd runs each ExecReload= line and stops at the first that
fails, which is what this does (no systemd is needed to run the commands)."""
import json
import os
import re
import shlex
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tools"))
import harness  # noqa: E402

DEPLOY = os.path.join(harness.REPO, "deploy")
INSTALLED = "/usr/local/bin/remoteingress-bin"


def unit_lines(unit, key):
    """Every `key=` value of a unit file, in order."""
    return [value.strip() for value in re.findall(rf"^{key}=(.*)$", open(os.path.join(DEPLOY, unit)).read(), re.M)]


def env_file(path, moved):
    """The variables of an EnvironmentFile, with `moved` replacing some values."""
    variables = {}
    for line in open(path):
        line = line.strip()
        if line and not line.startswith("#") and "=" in line:
            key, value = line.split("=", 1)
            variables[key] = value
    variables.update(moved)
    return variables


def reload(commands, env, main_pid):
    """Runs the ExecReload= commands as systemd does: in order, stopping at the first failure.
    Returns (succeeded, output of the failed or last command)."""
    output = ""
    for command in commands:
        # systemd's prefixes ("-", "@", ...) are not used by the unit; $MAINPID is substituted.
        argv = [harness.binary() if word == INSTALLED else word.replace("$MAINPID", str(main_pid))
                for word in shlex.split(command)]
        run = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=20)
        output = run.stdout + run.stderr
        if run.returncode != 0:
            return False, output
    return True, output


def main():
    report = harness.Report()
    commands = unit_lines("remoteingress-hub.service", "ExecReload")
    report.check("the hub unit checks the configuration before it signals the hub",
                 len(commands) >= 2 and commands[0].split()[:2] == [INSTALLED, "check"] and "-HUP" in commands[-1], commands)
    with tempfile.TemporaryDirectory(prefix="ri-reload-") as workdir, harness.stopping() as processes:
        edges_path = os.path.join(workdir, "edges.json")

        def write_edges(edges):
            with open(edges_path, "w") as f:
                json.dump(edges, f)

        def edge(edge_id):
            return {"id": edge_id, "secret": f"{edge_id}-secret-0123456789", "listenPorts": []}

        write_edges([edge("one")])
        env = {key: value for key, value in os.environ.items() if not key.startswith("REMOTEINGRESS_")}
        env.update(env_file(os.path.join(DEPLOY, "hub.env.example"), {
            "REMOTEINGRESS_EDGES_FILE": edges_path,
            "REMOTEINGRESS_TUNNEL_PORT": "0",
            "REMOTEINGRESS_METRICS_ADDR": f"127.0.0.1:{harness.free_port()}",
            "REMOTEINGRESS_STATE_DIR": os.path.join(workdir, "state"),
            "REMOTEINGRESS_LOG_FORMAT": "text",
        }))
        start = [harness.binary() if word == INSTALLED else word for word in shlex.split(unit_lines("remoteingress-hub.service", "ExecStart")[-1])]
        hub = harness.Process(start + ["--json"], "reload-hub", env=env)
        processes.append(hub)
        started = hub.wait_event("started")
        report.check("the hub starts from the unit's environment with its edge", started.get("allowedEdges") == 1, started)

        # A mistake the hub would refuse (a secret under 16 bytes): the reload fails and says why.
        write_edges([edge("one"), {"id": "two", "secret": "short"}])
        ok, output = reload(commands, env, hub.proc.pid)
        report.check("systemctl reload fails for an edges file the hub would refuse", not ok, output)
        report.check("and says what is wrong, with the file and the field",
                     f"{edges_path}:1: edges[1].secret" in output and "secret new" in output, output)
        report.check("the hub was not signalled", "SIGHUP" not in hub.log_text(), hub.log_text()[-500:])

        # A good file: the reload succeeds and the hub applies it.
        write_edges([edge("one"), edge("two")])
        ok, output = reload(commands, env, hub.proc.pid)
        report.check("systemctl reload succeeds for a good edges file", ok, output)
        deadline = time.monotonic() + 10
        log = hub.log_text()
        while "SIGHUP: allowed edges reloaded" not in log and time.monotonic() < deadline:
            time.sleep(0.02)
            log = hub.log_text()
        report.check("and the hub reloads it", "SIGHUP: allowed edges reloaded" in log and "edges=2" in log, log[-500:])
    return report.finish()


if __name__ == "__main__":
    sys.exit(main())
