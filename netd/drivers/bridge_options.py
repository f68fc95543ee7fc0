"""Validation and normalisation of the bridge driver's options (pure; no kernel access).

Users may spell an option the netd way (``mtu``) or the Docker way
(``com.docker.network.driver.mtu``); :func:`validate_bridge_options` returns canonical keys only,
with values normalised (``"True"`` → ``"true"``, ``" 1400"`` → ``"1400"``), so the stored network
record is the same whichever spelling was used. It is idempotent: validating its own output
gives the same dict back.

The firewall and DNS read some of these options (``host_ipv4``, ``dns_servers``...); they are
validated here because the bridge driver owns the option namespace of bridge networks.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable

from ..errors import InvalidInput
from ..names import check_ifname

MIN_MTU = 68  # RFC 791: every IPv4 host must handle 68-octet datagrams; the kernel's ETH_MIN_MTU
MAX_MTU = 65535  # IP_MAX_MTU

# Docker's option names (libnetwork drivers/bridge/labels.go and netlabel) → netd's.
DOCKER_ALIASES: dict[str, str] = {
    "com.docker.network.bridge.name": "bridge",
    "com.docker.network.driver.mtu": "mtu",
    "com.docker.network.bridge.enable_icc": "enable_icc",
    "com.docker.network.bridge.enable_ip_masquerade": "enable_ip_masquerade",
    "com.docker.network.host_ipv4": "host_ipv4",
    "com.docker.network.host_ipv6": "host_ipv6",
}

_TRUE = {"true", "1", "yes", "on"}
_FALSE = {"false", "0", "no", "off"}


def _bridge(key: str, value: str) -> str:
    try:
        return check_ifname(value.strip(), f"options.{key}")
    except InvalidInput as exc:
        raise InvalidInput(f"options.{key}", value, exc.rule) from None


def _mtu(key: str, value: str) -> str:
    text = value.strip()
    if not text.isdigit() or not MIN_MTU <= int(text) <= MAX_MTU:
        raise InvalidInput(
            f"options.{key}", value, f"must be an integer from {MIN_MTU} to {MAX_MTU}"
        )
    return str(int(text))


def _bool(key: str, value: str) -> str:
    text = value.strip().lower()
    if text in _TRUE:
        return "true"
    if text in _FALSE:
        return "false"
    raise InvalidInput(f"options.{key}", value, 'must be "true" or "false"')


def _address(version: int) -> Callable[[str, str], str]:
    def check(key: str, value: str) -> str:
        try:
            addr = ipaddress.ip_address(value.strip())
        except ValueError:
            addr = None
        if addr is None or addr.version != version:
            raise InvalidInput(f"options.{key}", value, f"must be an IPv{version} address")
        return str(addr)

    return check


def _address_list(key: str, value: str) -> str:
    items = [item.strip() for item in value.split(",")]
    out: list[str] = []
    for item in items:
        try:
            out.append(str(ipaddress.ip_address(item)))
        except ValueError:
            raise InvalidInput(
                f"options.{key}",
                value,
                f"must be a comma-separated list of IP addresses; {item!r} is not one",
            ) from None
    return ",".join(out)


VALIDATORS: dict[str, Callable[[str, str], str]] = {
    "bridge": _bridge,
    "mtu": _mtu,
    "enable_icc": _bool,
    "enable_ip_masquerade": _bool,
    "host_ipv4": _address(4),
    "host_ipv6": _address(6),
    "dns_servers": _address_list,
    "dns": _bool,  # "false" turns the network's DNS server off
    "dns_forward_internal": _bool,  # internal networks forward to upstreams only if "true"
    "isolate": _bool,
    "anti_spoof": _bool,  # containers send only from their own addresses (nftables backend)
}


def known_options() -> list[str]:
    """Every accepted option key, canonical ones first, then the Docker aliases."""
    return [*VALIDATORS, *DOCKER_ALIASES]


def validate_bridge_options(options: dict[str, str]) -> dict[str, str]:
    """Canonical, normalised options; InvalidInput naming the first unknown key or bad value.

    An option given under both spellings must agree, else it is ambiguous and refused.
    """
    out: dict[str, str] = {}
    for key in sorted(options, key=lambda k: (k in DOCKER_ALIASES, k)):
        value = options[key]
        canonical = DOCKER_ALIASES.get(key, key)
        check = VALIDATORS.get(canonical)
        if check is None:
            raise InvalidInput(
                "options",
                key,
                "unknown option for driver bridge; known: " + ", ".join(known_options()),
            )
        if not isinstance(value, str):
            raise InvalidInput(f"options.{key}", value, "must be a string")
        normalised = check(key, value)
        if canonical in out and out[canonical] != normalised:
            raise InvalidInput(
                f"options.{key}", value, f"conflicts with options.{canonical}={out[canonical]!r}"
            )
        out[canonical] = normalised
    return out
