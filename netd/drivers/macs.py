"""MAC address validation for endpoint records (pure).

A static MAC asked for by a user (CNI runtimeConfig ``mac``, ``--mac-address``) must be a
unicast Ethernet address: a multicast bit set would make the kernel refuse it with a bare
EADDRNOTAVAIL, and all-zero is not an address. :func:`random_mac` makes one for a record
before any link exists (an endpoint of a network across hosts: the other nodes program
forwarding to the MAC its first etcd record carries); the kernel helpers have their own
(``netd.kernel.links.random_mac``) for links they make.
"""

from __future__ import annotations

import hashlib
import os
import re

from ..errors import InvalidInput

_MAC = re.compile(r"[0-9a-f]{2}(:[0-9a-f]{2}){5}\Z")


def random_mac() -> str:
    """A random unicast, locally administered MAC (what the kernel's eth_random_addr makes)."""
    raw = bytearray(os.urandom(6))
    raw[0] = (raw[0] & 0xFE) | 0x02
    return raw.hex(":")


def check_mac(value: object, field: str = "mac") -> str:
    """``value`` lower-cased if it is a unicast, non-zero ``aa:bb:cc:dd:ee:ff`` MAC."""
    if not isinstance(value, str):
        raise InvalidInput(field, value, "must be a MAC address string like 02:42:ac:11:00:02")
    mac = value.strip().lower().replace("-", ":")
    if not _MAC.match(mac):
        raise InvalidInput(field, value, "must be six hex octets like 02:42:ac:11:00:02")
    if int(mac[:2], 16) & 1:
        raise InvalidInput(field, value, "must be a unicast MAC (lowest bit of the first octet 0)")
    if mac == "00:00:00:00:00:00":
        raise InvalidInput(field, value, "must not be all zeros")
    return mac


def bridge_mac(network_id: str) -> str:
    """The MAC of a network's bridge: derived from its id, so a re-created bridge has the same.

    Containers keep the gateway's MAC in their neighbour tables for up to ~45 s
    (base_reachable_time); a bridge re-created with a new MAC (after someone deleted it) would
    be unreachable from them until then. Unicast, locally administered.
    """
    raw = bytearray(hashlib.sha256(f"netd-bridge:{network_id}".encode()).digest()[:6])
    raw[0] = (raw[0] & 0xFE) | 0x02
    return ":".join(f"{b:02x}" for b in raw)
