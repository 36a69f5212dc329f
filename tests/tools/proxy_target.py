#!/usr/bin/env python3
"""A sample target for the hub: reads the PROXY header of each connection (v1 text or v2
binary), answers with one line saying what it saw, then echoes whatever else the client sends.

    proxy_target.py --port 8080 [--host 127.0.0.1] [--once]

The first line of stdout is "listening <host>:<port>"; then one "client <addr>:<port> via
<edge addr>:<port> (<version>)" line per connection, so scripts can follow along.
"""
import argparse
import ipaddress
import socket
import struct
import sys
import threading

V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"


def read_exact(conn, n):
    data = b""
    while len(data) < n:
        chunk = conn.recv(n - len(data))
        if not chunk:
            raise ConnectionError("closed inside the PROXY header")
        data += chunk
    return data


def read_header(conn):
    """Returns (client, edge, version) from the PROXY header at the start of conn."""
    first = read_exact(conn, 12)
    if first == V2_SIGNATURE:
        ver_cmd, fam, length = struct.unpack("!BBH", read_exact(conn, 4))
        body = read_exact(conn, length)
        if fam >> 4 == 1:
            src, dst, sport, dport = struct.unpack("!4s4sHH", body[:12])
            return (f"{ipaddress.IPv4Address(src)}:{sport}", f"{ipaddress.IPv4Address(dst)}:{dport}", "v2")
        src, dst, sport, dport = struct.unpack("!16s16sHH", body[:36])
        return (f"[{ipaddress.IPv6Address(src)}]:{sport}", f"[{ipaddress.IPv6Address(dst)}]:{dport}", "v2")
    line = first
    while not line.endswith(b"\r\n"):
        if len(line) > 107:
            raise ValueError("PROXY v1 line too long")
        line += read_exact(conn, 1)
    parts = line.decode("ascii").strip().split(" ")
    if parts[0] != "PROXY" or len(parts) != 6:
        raise ValueError(f"not a PROXY v1 line: {line!r}")
    _, proto, src, dst, sport, dport = parts
    if proto == "TCP6":
        return (f"[{src}]:{sport}", f"[{dst}]:{dport}", "v1")
    return (f"{src}:{sport}", f"{dst}:{dport}", "v1")


def serve(conn):
    with conn:
        try:
            client, edge, version = read_header(conn)
        except (ValueError, ConnectionError) as error:
            print(f"bad header: {error}", flush=True)
            return
        print(f"client {client} via {edge} ({version})", flush=True)
        conn.sendall(f"target saw client {client} via edge {edge} ({version})\n".encode())
        while True:
            data = conn.recv(65536)
            if not data:
                break
            conn.sendall(data)
        try:
            conn.shutdown(socket.SHUT_WR)
        except OSError:
            pass


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--once", action="store_true", help="exit after one connection")
    args = parser.parse_args()
    server = socket.socket(socket.AF_INET6 if ":" in args.host else socket.AF_INET)
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind((args.host, args.port))
    server.listen(128)
    print(f"listening {args.host}:{args.port}", flush=True)
    while True:
        conn, _ = server.accept()
        if args.once:
            serve(conn)
            return
        threading.Thread(target=serve, args=(conn,), daemon=True).start()


if __name__ == "__main__":
    sys.exit(main())
