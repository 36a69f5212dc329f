#!/usr/bin/env python3
"""Drives remoteingress-bin --management from a second language (standard library only).

Proves that any program that can spawn a process and speak JSON lines can use the binary:
ready event, getStatus, start, a bad line, a bad method, updateAllowedEdges, stop, EOF exit 0.
Usage: drive_from_python.py PATH_TO_BINARY
"""
import json
import subprocess
import sys
import threading
import queue

DEADLINE_S = 10


class Binary:
    def __init__(self, path):
        self.proc = subprocess.Popen(
            [path, "--management"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            bufsize=1,
        )
        self.lines = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()
        self.next_id = 0

    def _read(self):
        for line in self.proc.stdout:
            self.lines.put(json.loads(line))
        self.lines.put(None)

    def line(self):
        item = self.lines.get(timeout=DEADLINE_S)
        assert item is not None, "binary closed stdout"
        return item

    def call(self, method, params=None):
        self.next_id += 1
        request = {"id": f"py_{self.next_id}", "method": method}
        if params is not None:
            request["params"] = params
        self.proc.stdin.write(json.dumps(request) + "\n")
        self.proc.stdin.flush()
        response = self.line()
        assert response.get("id") == request["id"], response
        return response


def main(path):
    passed = 0
    failed = 0

    def check(name, condition, detail=""):
        nonlocal passed, failed
        if condition:
            passed += 1
        else:
            failed += 1
            print(f"FAIL {name}: {detail}", file=sys.stderr)

    binary = Binary(path)
    try:
        ready = binary.line()
        check("ready", ready.get("event") == "ready" and ready["data"]["protocol"] == 1, ready)
        check("ready pid", ready["data"]["pid"] == binary.proc.pid, ready)

        status = binary.call("getStatus")
        check("idle status", status == {"id": "py_1", "success": True, "result": {"running": False}}, status)

        started = binary.call("start", {"role": "hub", "config": {"tunnelPort": 0}})
        check("start hub", started["success"] and started["result"]["role"] == "hub", started)

        binary.proc.stdin.write("definitely not json\n")
        binary.proc.stdin.flush()
        error = binary.line()
        check("ipcError", error.get("event") == "ipcError" and error["data"]["line"] == "definitely not json", error)

        unknown = binary.call("frobnicate")
        check("unknown method", unknown["success"] is False and unknown["code"] == "unknown_method", unknown)

        update = binary.call("updateAllowedEdges", {"edges": [{"id": "py-edge", "secret": "py-secret-0123456789", "listenPorts": [8080]}]})
        check("updateAllowedEdges", update["success"] and update["result"]["edges"] == 1, update)

        stopped = binary.call("stop")
        check("stop", stopped == {"id": stopped["id"], "success": True, "result": {}}, stopped)

        binary.proc.stdin.close()
        code = binary.proc.wait(timeout=DEADLINE_S)
        check("exit code on EOF", code == 0, code)
    finally:
        if binary.proc.poll() is None:
            binary.proc.kill()
            binary.proc.wait()

    print(f"{passed} passed, {failed} failed")
    return 0 if failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
