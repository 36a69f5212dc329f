#!/usr/bin/env python3
"""Writes the committed seed corpus (fuzz/seeds/<target>/): one or a few valid inputs per target,
so the fuzzer starts from the formats' shapes instead of discovering them byte by byte. Run it
again after a format changes; ./scripts/fuzz.sh copies the seeds into its working corpus."""
import base64
import json
import pathlib
import struct

ROOT = pathlib.Path(__file__).parent / "seeds"
PROOF = "ab" * 32
V2_SIG = b"\r\n\r\n\x00\r\nQUIT\n"


def frame(stream, kind, payload=b""):
    return struct.pack(">IBI", stream, kind, len(payload)) + payload


def seeds():
    yield "frames", "open_data_close", frame(1, 0x01, b"PROXY TCP4 1.2.3.4 5.6.7.8 1111 443\r\n") + frame(1, 0x02, b"hello") + frame(1, 0x03)
    yield "frames", "control", frame(0, 0x06, b'{"listenPorts":[443]}') + frame(0, 0x07, b"\x00" * 8) + frame(3, 0x09, struct.pack(">I", 65536))
    yield "frames", "udp", frame(7, 0x0B, V2_SIG + b"\x21\x12\x00\x0c" + bytes(12)) + frame(7, 0x0C, b"dns?") + frame(7, 0x0E)
    yield "frames", "quic_control", bytes([0x06]) + struct.pack(">I", 2) + b"{}" + bytes([0x07]) + struct.pack(">I", 8) + bytes(8)
    yield "handshake_lines", "hello", f"EDGE edge-1 {PROOF}".encode()
    yield "handshake_lines", "reply", json.dumps({"hubProof": PROOF, "listenPorts": [80, 443], "listenPortsUdp": [53], "stunIntervalSecs": 300}).encode()
    yield "handshake_lines", "rejected", b'{"error":"unauthorized"}'
    yield "handshake_lines", "hello_instance", f"EDGE edge-1 {PROOF} 0f1e2d3c-4b5a-4697-8877-a6b5c4d3e2f1".encode()
    yield "handshake_lines", "duplicate", json.dumps({"error": "duplicateEdge", "hubProof": PROOF, "connectedFrom": "192.0.2.1:40000", "retryAfterSecs": 30}).encode()
    yield "proxy_headers", "v1_tcp4", b"PROXY TCP4 192.0.2.1 198.51.100.2 51000 443\r\n"
    yield "proxy_headers", "v1_tcp6", b"PROXY TCP6 2001:db8::1 2001:db8::2 51000 443\r\nGET /"
    yield "proxy_headers", "v2_udp4", V2_SIG + b"\x21\x12\x00\x0c" + bytes([10, 0, 0, 1, 10, 0, 0, 2, 0, 53, 0xFF, 0xFF])
    yield "proxy_headers", "v2_tcp6", V2_SIG + b"\x21\x21\x00\x24" + bytes(range(32)) + b"\x01\xbb\x20\xfb"
    token = {"h": "hub.example.com", "p": 8443, "e": "edge-1", "s": "correct-horse-battery", "f": "0f" * 32}
    yield "token", "with_pin", base64.urlsafe_b64encode(json.dumps(token, separators=(",", ":")).encode()).rstrip(b"=")
    del token["f"]
    yield "token", "plain", base64.urlsafe_b64encode(json.dumps(token, separators=(",", ":")).encode()).rstrip(b"=")
    transaction = bytes(range(12))
    xor_addr = bytes([0, 1]) + struct.pack(">H", 3478 ^ 0x2112) + bytes(a ^ b for a, b in zip([203, 0, 113, 7], [0x21, 0x12, 0xA4, 0x42]))
    stun = struct.pack(">HHI", 0x0101, 4 + len(xor_addr), 0x2112A442) + transaction + struct.pack(">HH", 0x0020, len(xor_addr)) + xor_addr
    yield "stun_response", "xor_mapped", transaction + stun
    yield "udp_datagrams", "open", struct.pack(">I", 5) + b"\xff" + V2_SIG + b"\x21\x12\x00\x0c" + bytes(12)
    yield "udp_datagrams", "data", struct.pack(">I", 5) + b"payload"
    yield "udp_datagrams", "overflow", struct.pack(">II", 5, 3) + b"abc" + struct.pack(">II", 6, 0)
    yield "ipc_lines", "requests", b'{"id":1,"method":"getStatus"}\n{"id":"x","method":"start","params":{"role":"hub","config":{}}}\r\nnot json\n' + b"x" * 100 + b"\n{}"
    yield "firewall_snapshot", "full", json.dumps({
        "blockedIps": ["192.0.2.1", "10.0.0.0/8", "2001:db8::/32"],
        "rateLimits": [{"id": "http", "port": 80, "protocol": "tcp", "rate": "100/second", "perSourceIP": True, "burst": 20}],
        "rules": [{"id": "ssh", "direction": "input", "action": "accept", "sourceIP": "10.0.0.0/24", "destPort": 22, "protocol": "tcp"}],
    }).encode()
    policy = {"enabled": True, "allowedPorts": [25, 587], "allowedHostPatterns": ["*.example.net", "mx.example.org"], "deniedCidrs": ["198.51.100.0/24"], "allowPrivateRanges": False}
    addresses = bytes(10) + b"\xff\xff" + bytes([93, 184, 216, 34]) + bytes(10) + b"\xff\xff" + bytes([127, 0, 0, 1]) + bytes([0x20, 0x01, 0x0d, 0xb8]) + bytes(12)
    yield "egress_policy", "mx", json.dumps(policy).encode() + b"\x00mx1.example.net\x00" + addresses
    yield "egress_policy", "literal", json.dumps(policy).encode() + b"\x000x7f.1\x00"


def main():
    for target, name, data in seeds():
        folder = ROOT / target
        folder.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(data)


if __name__ == "__main__":
    main()
