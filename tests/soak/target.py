#!/usr/bin/env python3
"""The soak's target (tests/soak/soak.py starts it, kills it, starts it again).

    target.py PORT [EGRESS_HOST:EGRESS_PORT]

TCP on 127.0.0.1:PORT, after the PROXY header (proxy_target.read_header): 'D' size seed -> `size`
bytes of the seed's stream (soak.stream computes the same to check them), then FIN; 'U' size seed
-> reads `size` bytes, answers their SHA-256, then FIN. UDP on the same port echoes each datagram,
without the PROXY v2 header the hub puts in front of a session's first one. Its sockets are armed
with SO_LINGER 0 and disarmed before a normal close: a target killed mid-transfer resets its
connections, as the tunnel's own sockets do. With EGRESS_HOST:EGRESS_PORT, the same TCP service
without a PROXY header there, as the destination an edge dials for egress. Prints "listening"
when ready.
"""
import hashlib
import os
import socket
import struct
import sys
import threading

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tools"))
from proxy_target import V2_SIGNATURE, read_exact, read_header  # noqa: E402

LINGER_ON = struct.pack("ii", 1, 0)
LINGER_OFF = struct.pack("ii", 0, 0)


def blocks(seed, size):
    """The download stream of `seed`: SHA-256 of seed + counter, repeated to 64 KiB blocks."""
    counter = 0
    while size > 0:
        block = (hashlib.sha256(seed + counter.to_bytes(8, "big")).digest() * 2048)[:size]
        yield block
        size -= len(block)
        counter += 1


def serve(conn, proxied):
    conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, LINGER_ON)
    try:
        if proxied:
            read_header(conn)
        kind, size, seed = struct.unpack("!cQ8s", read_exact(conn, 17))
        if kind == b"D":
            for block in blocks(seed, size):
                conn.sendall(block)
        else:
            digest, left = hashlib.sha256(), size
            while left:
                chunk = conn.recv(min(1 << 20, left))
                if not chunk:
                    raise ConnectionError("short upload")
                digest.update(chunk)
                left -= len(chunk)
            conn.sendall(digest.digest())
        conn.shutdown(socket.SHUT_WR)
        while conn.recv(65536):
            pass
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, LINGER_OFF)
    except (OSError, ValueError):
        pass
    finally:
        conn.close()


def udp_echo(port):
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", port))
    while True:
        data, peer = sock.recvfrom(65535)
        if data.startswith(V2_SIGNATURE):
            data = data[16 + struct.unpack("!H", data[14:16])[0]:]
        sock.sendto(data, peer)


def accept_loop(server, proxied):
    while True:
        conn, _ = server.accept()
        threading.Thread(target=serve, args=(conn, proxied), daemon=True).start()


def listen(host, port):
    server = socket.socket()
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind((host, port))
    server.listen(512)
    return server


def main():
    port = int(sys.argv[1])
    threading.Thread(target=udp_echo, args=(port,), daemon=True).start()
    server = listen("127.0.0.1", port)
    if len(sys.argv) > 2:
        host, egress_port = sys.argv[2].rsplit(":", 1)
        threading.Thread(target=accept_loop, args=(listen(host, int(egress_port)), False), daemon=True).start()
    print("listening", flush=True)
    accept_loop(server, True)


if __name__ == "__main__":
    main()
