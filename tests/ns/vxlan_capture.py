"""Capture the VXLAN frames crossing an underlay namespace, for the overlay tests.

Run inside the underlay namespace (``ip netns exec <ns> python vxlan_capture.py``): it opens
one AF_PACKET socket for every interface of that namespace, prints ``ready`` once it listens,
and records every IPv4/UDP packet to port 4789 until its stdin closes; then it prints one JSON
list with, per packet, the VNI and the inner frame's destination MAC, source MAC and
ethertype (an ARP request has ethertype 0x0806 and destination ff:ff:ff:ff:ff:ff). A frame is
seen once per port it crosses. Standard library only, so the tests need no tcpdump.
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


def _mac(raw: bytes) -> str:
    return ":".join(f"{b:02x}" for b in raw)


def decode(frame: bytes) -> dict[str, Any] | None:
    """The VXLAN header and inner Ethernet header of an outer frame, None if it is not one."""
    if len(frame) < 14 + 20 + 8 + 8 + 14 or struct.unpack("!H", frame[12:14])[0] != 0x0800:
        return None
    ihl = (frame[14] & 0x0F) * 4
    if frame[14 + 9] != socket.IPPROTO_UDP:
        return None
    udp = 14 + ihl
    if struct.unpack("!H", frame[udp + 2 : udp + 4])[0] != VXLAN_PORT:
        return None
    vx = udp + 8
    vni = int.from_bytes(frame[vx + 4 : vx + 7], "big")
    inner = vx + 8
    return {
        "vni": vni,
        "dst": _mac(frame[inner : inner + 6]),
        "src": _mac(frame[inner + 6 : inner + 12]),
        "type": f"0x{struct.unpack('!H', frame[inner + 12 : inner + 14])[0]:04x}",
    }


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
    # Drain what arrived before stdin closed.
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
