#!/usr/bin/env python3
"""A real OpenSSH sshd behind the hub, a target that does not speak PROXY (issue #28 item 3).

client (ssh-keyscan) -> edge 127.0.0.2:P ==TLS==> hub -> sshd 127.0.0.1:S
The hub starts from a TOML file whose edge has two public ports mapped to the same sshd: one with
`proxyProtocol = "none"` (sshd must see the client's SSH banner first and hand out its host key)
and one left at the hub's v1 (sshd reads the PROXY line as the client's banner and drops the
connection: the failure operators saw). The TOML file is the documented way to configure it.
"""
import os
import shutil
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tools"))
import harness  # noqa: E402


def keyscan(port):
    """The host keys ssh-keyscan reads from the edge's `port` (empty when sshd dropped it)."""
    result = subprocess.run([shutil.which("ssh-keyscan"), "-T", "10", "-t", "ed25519", "-p", str(port), "127.0.0.2"],
                            capture_output=True, text=True, timeout=30)
    return [line for line in result.stdout.splitlines() if line and not line.startswith("#")]


def main():
    sshd_binary = shutil.which("sshd") or ("/usr/sbin/sshd" if os.path.exists("/usr/sbin/sshd") else None)
    if not sshd_binary or not shutil.which("ssh-keyscan") or not shutil.which("ssh-keygen"):
        print("openssh-server and openssh-client are not installed (scripts/setup.sh installs them)")
        return 1
    report = harness.Report()
    with harness.stopping() as processes, tempfile.TemporaryDirectory(prefix="ri-sshd-") as workdir:
        host_key = os.path.join(workdir, "host_ed25519")
        harness.run(shutil.which("ssh-keygen"), "-q", "-t", "ed25519", "-N", "", "-f", host_key)
        with open(host_key + ".pub") as f:
            public_key = f.read().split()[1]
        # sshd's privilege separation directory; the openssh-server package's unit makes it.
        os.makedirs("/run/sshd", mode=0o755, exist_ok=True)
        sshd_port = harness.free_port("127.0.0.1")
        sshd_config = os.path.join(workdir, "sshd_config")
        with open(sshd_config, "w") as f:
            f.write(f"ListenAddress 127.0.0.1:{sshd_port}\nHostKey {host_key}\nPidFile none\n"
                    "PasswordAuthentication no\nKbdInteractiveAuthentication no\nUsePAM no\n")
        sshd = harness.Process([sshd_binary, "-D", "-e", "-f", sshd_config], "sshd")
        processes.append(sshd)
        harness.wait_port("127.0.0.1", sshd_port)

        plain, with_header = (harness.free_port("127.0.0.2", also_free_on=("127.0.0.1",)) for _ in range(2))
        tunnel_port = harness.free_port()
        secret = "sshd-secret-0123456789"
        config = os.path.join(workdir, "hub.toml")
        with open(config, "w") as f:
            f.write(f"""[hub]
tunnelPort = {tunnel_port}
stateDir = "{workdir}"

[[edges]]
id = "edge-ssh"
secret = "{secret}"
listenPorts = [{plain}, {with_header}]
targetPorts = [{{ port = {plain}, targetPort = {sshd_port}, proxyProtocol = "none" }},
               {{ port = {with_header}, targetPort = {sshd_port} }}]
""")
        hub = harness.Process([harness.binary(), "hub", "--config", config, "--json"], "sshd-hub")
        processes.append(hub)
        hub.wait_event("started")
        token = harness.token("127.0.0.1", tunnel_port, "edge-ssh", secret)
        edge = harness.Process([harness.binary(), "edge", "--token", token, "--bind-address", "127.0.0.2",
                                "--transport-mode", "tcpTls", "--no-stun", "--json"], "sshd-edge")
        processes.append(edge)
        edge.wait_event("tunnelConnected", timeout=20)
        edge.wait_event("portsAssigned")

        keys = keyscan(plain)
        report.check("proxyProtocol none: sshd hands out its host key through the tunnel",
                     len(keys) == 1 and keys[0].split()[-1] == public_key, keys)
        report.check("the port left at v1: sshd reads the PROXY line as garbage and drops the client",
                     keyscan(with_header) == [], sshd.log_tail())
        report.check("sshd said why: the PROXY line was not an SSH banner",
                     'invalid protocol identifier "PROXY TCP4 ' in sshd.log_text(),
                     sshd.log_tail())
    return report.finish()


if __name__ == "__main__":
    sys.exit(main())
