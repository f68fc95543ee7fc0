"""A Service on a real SQLite store with the null driver and firewall, for unit tests."""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Any

from netd.drivers.null import NullDriver
from netd.firewall.base import NullFirewall
from netd.ipam.subnets import parse_pool
from netd.service import Service
from netd.store.sqlite import SqliteStore

ULA = ipaddress.IPv6Network("fd00:1234:5678::/48")


def make_service(tmp_path: Path, driver: Any = None, **kw: Any) -> Service:
    """Pools 10.89.0.0/16 in /24s, the ULA above; ``kw`` overrides any Service argument."""
    args: dict[str, Any] = {
        "store": SqliteStore(tmp_path / "netd.db"),
        "drivers": {"bridge": driver or NullDriver()},
        "firewall": NullFirewall(),
        "pools": [parse_pool("10.89.0.0/16:24")],
        "ula": ULA,
        **kw,
    }
    return Service(**args)
