"""The compose ``ports`` and ``expose`` syntaxes, parsed into :class:`Port` records (pure).

Short syntax ``[[HOST_IP:][HOST_PORT[-END]]:]PORT[-END][/PROTOCOL]`` (an IPv6 host address in
brackets: ``[::1]:8080:80``) and the long syntax ``{target, published, host_ip, protocol, mode,
name, app_protocol}``. Ranges of equal length map port to port; a host range with one container
port gives replica n the range's n-th port (the first one with a single replica). A port with
no host port is recorded as exposed only: netd does not pick ephemeral host ports. ``[::1]``
is refused (see :data:`netd.firewall.policy.LOOPBACK6_RULE`).
"""

from __future__ import annotations

import ipaddress
from typing import Any

from ..firewall.policy import LOOPBACK6_RULE
from .errors import ComposeError
from .model import Port
from .source import Where

PROTOCOLS = ("tcp", "udp", "sctp")


def _range(text: str, where: Where | None, path: str, value: Any) -> list[int]:
    first, sep, last = text.partition("-")
    try:
        lo = int(first)
        hi = int(last) if sep else lo
    except ValueError:
        raise ComposeError(where, path, value, f"{text!r} is not a port or port range") from None
    if not (1 <= lo <= hi <= 65535):
        raise ComposeError(where, path, value, f"{text!r} is not a port range within 1-65535")
    return list(range(lo, hi + 1))


def _host_ip(text: str, where: Where | None, path: str, value: Any) -> str | None:
    if not text:
        return None
    try:
        ip = ipaddress.ip_address(text.strip("[]"))
    except ValueError:
        raise ComposeError(where, path, value, f"{text!r} is not an IP address") from None
    if ip.version == 6 and ip.is_loopback:
        raise ComposeError(where, path, value, f"host address {ip} {LOOPBACK6_RULE}")
    return str(ip)


def _pairs(
    host: str, container: str, proto: str, ip: str | None, where: Where | None, path: str, v: Any
) -> list[Port]:
    if proto not in PROTOCOLS:
        raise ComposeError(where, path, v, f"protocol {proto!r} is not one of tcp, udp, sctp")
    targets = _range(container, where, path, v)
    if not host:
        return [Port(t, None, proto, ip) for t in targets]
    published = _range(host, where, path, v)
    if len(targets) == 1:
        end = published[-1] if len(published) > 1 else None
        return [Port(targets[0], published[0], proto, ip, end)]
    if len(published) != len(targets):
        raise ComposeError(where, path, v, "host and container port ranges differ in length")
    return [Port(t, h, proto, ip) for h, t in zip(published, targets, strict=True)]


def parse_port(value: Any, where: Where | None, path: str) -> list[Port]:
    """One ``ports`` entry (short string/int or long mapping) as Port records."""
    if isinstance(value, bool):
        raise ComposeError(where, path, value, "is not a port specification")
    if isinstance(value, int):
        return _pairs("", str(value), "tcp", None, where, path, value)
    if isinstance(value, dict):
        if "target" not in value:
            raise ComposeError(where, f"{path}.target", None, "is required in the long syntax")
        proto = str(value.get("protocol") or "tcp").lower()
        ip = _host_ip(str(value.get("host_ip") or ""), where, f"{path}.host_ip", value)
        published = value.get("published")
        host = "" if published in (None, "") else str(published)
        return _pairs(host, str(value["target"]), proto, ip, where, path, value)
    if not isinstance(value, str):
        raise ComposeError(where, path, value, "is not a port specification")
    text, _, proto = value.partition("/")
    proto = (proto or "tcp").lower()
    ip = None
    if text.startswith("["):
        end = text.find("]")
        if end < 0 or text[end + 1 : end + 2] != ":":
            raise ComposeError(where, path, value, "has an unterminated [IPv6] host address")
        ip = _host_ip(text[1:end], where, path, value)
        text = text[end + 2 :]
        host, _, container = text.rpartition(":")
    else:
        parts = text.rsplit(":", 2)
        if len(parts) == 3:
            ip = _host_ip(parts[0], where, path, value)
        host, container = (parts[-2], parts[-1]) if len(parts) > 1 else ("", parts[0])
    return _pairs(host, container, proto, ip, where, path, value)


def parse_expose(value: Any, where: Where | None, path: str) -> list[str]:
    """One ``expose`` entry (``80``, ``"8000-8010"``, ``"53/udp"``), normalised to text."""
    text, _, proto = str(value).partition("/")
    proto = (proto or "tcp").lower()
    if proto not in PROTOCOLS:
        raise ComposeError(where, path, value, f"protocol {proto!r} is not one of tcp, udp, sctp")
    ports = _range(text, where, path, value)
    span = str(ports[0]) if len(ports) == 1 else f"{ports[0]}-{ports[-1]}"
    return [f"{span}/{proto}"]
