"""Capture what crosses an underlay namespace between nodes: ESP and VXLAN, for the IPsec tests.

Run inside the underlay namespace (``ip netns exec <ns> python esp_capture.py``): one AF_PACKET
socket sees every interface of that namespace; it prints ``ready`` once it listens and records
every IPv4 packet that is ESP (IP protocol 50: source, destination, SPI, sequence number) or
UDP to port 4789 (source, destination, VNI) until its stdin closes, then prints them as one
JSON list. A packet is seen once per bridge port it crosses. Standard library only (no tcpdump).
"""

from __future__ import annotations

import json
import select
import socket
import struct
import sys
from typing import Any

ETH_P_ALL = 0x0003
VXLAN_PORT = 4789
ESP = 50


def decode(frame: bytes) -> dict[str, Any] | None:
    """ESP or VXLAN in an Ethernet frame, None for anything else."""
    if len(frame) < 14 + 20 + 8 or struct.unpack("!H", frame[12:14])[0] != 0x0800:
        return None
    ip = 14
    ihl = (frame[ip] & 0x0F) * 4
    proto = frame[ip + 9]
    src = socket.inet_ntoa(frame[ip + 12 : ip + 16])
    dst = socket.inet_ntoa(frame[ip + 16 : ip + 20])
    body = ip + ihl
    if proto == ESP:
        spi, seq = struct.unpack("!II", frame[body : body + 8])
        return {"proto": "esp", "src": src, "dst": dst, "spi": spi, "seq": seq}
    if proto == socket.IPPROTO_UDP and len(frame) >= body + 16:
        if struct.unpack("!H", frame[body + 2 : body + 4])[0] != VXLAN_PORT:
            return None
        vni = int.from_bytes(frame[body + 12 : body + 15], "big")
        return {"proto": "vxlan", "src": src, "dst": dst, "vni": vni}
    return None


def main() -> None:
    """Capture until stdin closes, then print what was seen."""
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
    print("ready", flush=True)
    seen: list[dict[str, Any]] = []
    while True:
        readable, _, _ = select.select([sock, sys.stdin], [], [])
        if sys.stdin in readable and not sys.stdin.readline():
            break
        if sock in readable:
            found = decode(sock.recv(65535))
            if found is not None:
                seen.append(found)
    sock.setblocking(False)
    while True:
        try:
            found = decode(sock.recv(65535))
        except BlockingIOError:
            break
        if found is not None:
            seen.append(found)
    print(json.dumps(seen), flush=True)


if __name__ == "__main__":
    main()
