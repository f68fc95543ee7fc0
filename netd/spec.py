"""Validation of network creation requests: a NetworkSpec becomes a Network or an InvalidInput.

Pure: everything the checks need (existing networks, host routes, pools, the ULA prefix, the
driver's option validator) is passed in. Subnet rules live in ``netd.ipam.subnets``; driver
options in the driver. This module checks the rest and assembles the record.
"""

from __future__ import annotations

import ipaddress
import secrets
import time
from collections.abc import Callable, Sequence

from .errors import Conflict, InvalidInput
from .ipam.subnets import DefaultPool, plan_subnets
from .model import IPNetwork, Network, NetworkSpec
from .names import check_network_name
from .options import stored_options

MAX_LABELS = 64
MAX_LABEL_LEN = 1024


def check_labels(labels: object, field: str = "labels") -> dict[str, str]:
    """Labels are a small string→string map with non-empty keys."""
    if not isinstance(labels, dict):
        raise InvalidInput(field, labels, "must be a map of strings")
    if len(labels) > MAX_LABELS:
        raise InvalidInput(field, len(labels), f"at most {MAX_LABELS} labels")
    for key, value in labels.items():
        if not isinstance(key, str) or not key or len(key) > MAX_LABEL_LEN:
            raise InvalidInput(
                f"{field}.key", key, f"a non-empty string of at most {MAX_LABEL_LEN}"
            )
        if not isinstance(value, str) or len(value) > MAX_LABEL_LEN:
            raise InvalidInput(f"{field}.{key}", value, f"a string of at most {MAX_LABEL_LEN}")
    return dict(labels)


IPV6_MIN_MTU = 1280  # RFC 8200 section 5: every IPv6 link carries 1280-octet packets


def build_network(
    spec: NetworkSpec,
    *,
    existing: Sequence[Network],
    host_routes: Sequence[IPNetwork],
    pools: Sequence[DefaultPool],
    ula: ipaddress.IPv6Network,
    validate_options: Callable[[dict[str, str]], dict[str, str]],
    owner_uid: int = 0,
) -> Network:
    """Validate ``spec`` fully and return the Network record to create (no side effects)."""
    name = check_network_name(spec.name)
    for net in existing:
        if net.name == name:
            raise Conflict(
                f"network {name!r} already exists (id {net.short_id})", field="name", value=name
            )
    if not spec.ipv4 and not spec.ipv6:
        raise InvalidInput("enable_ipv4", False, "a network needs IPv4 or IPv6 enabled")
    options = validate_options(dict(spec.options))
    labels = check_labels(spec.labels)
    subnets = plan_subnets(
        spec.subnets,
        network_name=name,
        ipv4=spec.ipv4,
        ipv6=spec.ipv6,
        existing=existing,
        host_routes=host_routes,
        pools=pools,
        ula=ula,
    )
    typed = stored_options(options)  # the driver's output: canonical keys, normalised
    has_v6 = any(s.version == 6 for s in subnets)
    if has_v6 and typed.mtu is not None and typed.mtu < IPV6_MIN_MTU:
        # The kernel refuses IPv6 addresses on a smaller link (EINVAL), after the link exists.
        raise InvalidInput(
            "options.mtu",
            typed.canonical["mtu"],
            f"must be at least {IPV6_MIN_MTU} on a network with IPv6",
        )
    return Network(
        id=secrets.token_hex(32),
        name=name,
        driver=spec.driver,
        subnets=subnets,
        ipv6=has_v6,
        internal=bool(spec.internal),
        dns_enabled=typed.dns,
        options=options,
        labels=labels,
        created=time.time(),
        owner_uid=owner_uid,
    )
