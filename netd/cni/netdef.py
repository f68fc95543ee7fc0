"""The inline network definition a CNI config may carry, and its comparison with netd's network.

A conflist's ``name`` is a netd network. When that network does not exist yet, the plugin
config may define it in host-local style (``ipam.ranges`` or ``ipam.subnet``/``rangeStart``/
``rangeEnd``/``gateway``) plus ``internal``, ``mtu`` and ``bridge``; the daemon then creates it.
When it exists, every key the config states must agree with it, or ADD fails with code 7
naming each difference. Pure: no I/O; subnet rules proper (overlaps, pools) stay in netd.ipam.

In IPAM-only mode (another main plugin names ``"ipam": {"type": "netd"}``) the network is
created with the ``ipam`` driver, which makes no kernel object; a network of the other kind is a
conflict either way (netd's bridge beside the main plugin's, with the same gateway address, or
netd as the main plugin on a network it has no bridge for).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Any

from ..drivers.ipam import IPAM_DRIVER
from ..model import Network, NetworkSpec, SubnetRequest
from . import spec
from .config import invalid
from .spec import CniError

_DEFAULT_DSTS = ("0.0.0.0/0", "::/0")


@dataclass(frozen=True)
class NetDefinition:
    """What the config says about the network; ``None`` fields were not stated."""

    subnets: tuple[SubnetRequest, ...] = ()
    internal: bool | None = None
    mtu: int | None = None
    bridge: str | None = None
    ipam_only: bool = False

    @property
    def defines(self) -> bool:
        """True when the config says enough to create the network."""
        return bool(self.subnets) or any(
            v is not None for v in (self.internal, self.mtu, self.bridge)
        )


@dataclass(frozen=True)
class Route:
    """A route from ``ipam.routes``: destination and optional gateway."""

    dst: str
    gw: str | None = None

    def to_json(self) -> dict[str, str]:
        """The result's route object."""
        return {"dst": self.dst, "gw": self.gw} if self.gw else {"dst": self.dst}


def _ip(where: str, raw: object) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    """An IP address given as a string (``ip_address`` would also take an int)."""
    try:
        if isinstance(raw, str):
            return ipaddress.ip_address(raw)
    except ValueError:
        pass
    raise invalid(spec.INVALID_CONFIG, where, raw, "must be an IP address string")


def _range(where: str, item: object) -> SubnetRequest:
    """One host-local range ``{subnet, rangeStart, rangeEnd, gateway}`` as a SubnetRequest."""
    if not isinstance(item, dict):
        raise invalid(spec.INVALID_CONFIG, where, item, "must be an object with a subnet")
    raw = item.get("subnet")
    try:
        subnet = ipaddress.ip_network(raw, strict=False) if isinstance(raw, str) else None
    except ValueError:
        subnet = None
    if subnet is None:
        raise invalid(
            spec.INVALID_CONFIG, f"{where}.subnet", raw, "must be a CIDR like 10.88.0.0/16"
        )
    gateway = item.get("gateway")
    if gateway is not None:
        gateway = str(_ip(f"{where}.gateway", gateway))
    return SubnetRequest(
        subnet=str(subnet), gateway=gateway, ip_range=_ip_range(where, item, subnet)
    )


def _ip_range(where: str, item: dict[str, Any], subnet: Any) -> str | None:
    """host-local's rangeStart/rangeEnd as netd's ``ip_range``, which is one CIDR block."""
    start_raw, end_raw = item.get("rangeStart"), item.get("rangeEnd")
    if start_raw is None and end_raw is None:
        return None
    bounds = []
    for key, raw, default in (
        ("rangeStart", start_raw, subnet.network_address),
        ("rangeEnd", end_raw, subnet.broadcast_address),
    ):
        address = _ip(f"{where}.{key}", raw) if raw is not None else default
        if address not in subnet:
            raise invalid(spec.INVALID_CONFIG, f"{where}.{key}", raw, f"not inside {subnet}")
        bounds.append(address)
    try:
        blocks = list(ipaddress.summarize_address_range(bounds[0], bounds[1]))
    except (TypeError, ValueError) as exc:
        raise invalid(
            spec.INVALID_CONFIG, f"{where}.rangeStart", start_raw, "must not be after rangeEnd"
        ) from exc
    if len(blocks) != 1:
        raise CniError(
            spec.UNSUPPORTED_FIELD,
            f"unsupported {where}.rangeStart/rangeEnd {bounds[0]}-{bounds[1]}: netd's dynamic "
            f"range is one CIDR block and this range spans {len(blocks)} "
            f"({', '.join(map(str, blocks[:3]))}...); choose bounds of one block",
        )
    return str(blocks[0])


def _ranges(ipam: dict[str, Any]) -> tuple[SubnetRequest, ...]:
    ranges = ipam.get("ranges")
    if ranges is None:
        return (_range("ipam", ipam),) if "subnet" in ipam else ()
    if not isinstance(ranges, list) or not all(isinstance(s, list) for s in ranges):
        raise invalid(spec.INVALID_CONFIG, "ipam.ranges", ranges, "must be a list of range lists")
    return tuple(
        _range(f"ipam.ranges[{i}][{j}]", item)
        for i, rangeset in enumerate(ranges)
        for j, item in enumerate(rangeset)
    )


def parse_definition(config: dict[str, Any], ipam_only: bool) -> NetDefinition:
    """The definition stated by the config (empty when it states nothing)."""
    ipam = config.get("ipam") or {}
    if not isinstance(ipam, dict):
        raise invalid(spec.INVALID_CONFIG, "ipam", ipam, "must be an object")
    kind = ipam.get("type")
    if not ipam_only and kind not in (None, "netd"):
        raise CniError(
            spec.UNSUPPORTED_FIELD,
            f"unsupported ipam.type {kind!r}: netd allocates addresses itself; "
            'omit ipam.type or set it to "netd"',
        )
    if ipam_only:  # the main plugin owns the link: only addressing is netd's business
        return NetDefinition(subnets=_ranges(ipam), ipam_only=True)
    internal = config.get("internal")
    if internal is not None and not isinstance(internal, bool):
        raise invalid(spec.INVALID_CONFIG, "internal", internal, "must be true or false")
    mtu = config.get("mtu")
    if mtu is not None and (
        isinstance(mtu, bool) or not isinstance(mtu, int) or not 68 <= mtu <= 65535
    ):
        raise invalid(spec.INVALID_CONFIG, "mtu", mtu, "must be an integer 68-65535")
    bridge = config.get("bridge")
    if bridge is not None and (not isinstance(bridge, str) or not bridge):
        raise invalid(spec.INVALID_CONFIG, "bridge", bridge, "must be an interface name")
    return NetDefinition(subnets=_ranges(ipam), internal=internal, mtu=mtu, bridge=bridge)


def parse_routes(config: dict[str, Any], ipam_only: bool) -> tuple[Route, ...]:
    """``ipam.routes``; as the main plugin netd installs only default routes (code 2 otherwise)."""
    ipam = config.get("ipam") or {}
    routes = ipam.get("routes") if isinstance(ipam, dict) else None
    if routes is None:
        return ()
    if not isinstance(routes, list):
        raise invalid(spec.INVALID_CONFIG, "ipam.routes", routes, "must be a list of {dst, gw}")
    out = []
    for i, item in enumerate(routes):
        where = f"ipam.routes[{i}]"
        if not isinstance(item, dict) or not isinstance(item.get("dst"), str):
            raise invalid(spec.INVALID_CONFIG, where, item, "must be an object with a dst")
        try:
            dst = str(ipaddress.ip_network(item["dst"], strict=False))
        except ValueError as exc:
            raise invalid(spec.INVALID_CONFIG, f"{where}.dst", item["dst"], "not a CIDR") from exc
        gw = str(_ip(f"{where}.gw", item["gw"])) if item.get("gw") else None
        if not ipam_only and dst not in _DEFAULT_DSTS:
            raise CniError(
                spec.UNSUPPORTED_FIELD,
                f"unsupported {where}.dst {dst!r}: netd installs only default routes in the "
                "container; use netd as an IPAM plugin for custom routes",
            )
        out.append(Route(dst, gw))
    return tuple(out)


def to_spec(name: str, definition: NetDefinition) -> NetworkSpec:
    """The NetworkSpec that creates the network the config defines."""
    versions = {ipaddress.ip_network(s.subnet or "").version for s in definition.subnets}
    # IPAM-only: netd has no address of its own on the network to serve DNS from.
    options: dict[str, str] = {"dns": "false"} if definition.ipam_only else {}
    if definition.mtu is not None:
        options["mtu"] = str(definition.mtu)
    if definition.bridge is not None:
        options["bridge"] = definition.bridge
    return NetworkSpec(
        name=name,
        driver=IPAM_DRIVER if definition.ipam_only else "bridge",
        subnets=definition.subnets,
        ipv4=4 in versions or not versions,
        ipv6=6 in versions,
        internal=bool(definition.internal),
        options=options,
        labels={"netd.created-by": "cni"},
    )


def conflicts(
    network: Network, definition: NetDefinition, bridge: str, plumbs: bool = True
) -> list[str]:
    """Every way ``definition`` disagrees with the existing ``network`` (empty: it agrees).

    ``plumbs``: whether netd makes the network's interfaces (its driver's capabilities).
    """
    problems = []
    if definition.ipam_only == plumbs:
        problems.append(
            f"mode: netd as the IPAM plugin of another main plugin in the config, a bridge "
            f"network with netd's own bridge {bridge} in netd (use a network created for IPAM "
            "only: `netd network create --driver ipam`, or let the config define it)"
            if definition.ipam_only
            else "mode: netd as the main plugin in the config, an IPAM-only network (driver "
            "ipam, no bridge) in netd"
        )
    if definition.subnets:
        have = {str(s.subnet): s for s in network.subnets}
        want = {str(ipaddress.ip_network(s.subnet or "")): s for s in definition.subnets}
        if set(want) != set(have):
            problems.append(
                f"subnets {', '.join(sorted(want))} in the config, "
                f"{', '.join(sorted(have)) or 'none'} in netd"
            )
        for key, req in want.items():
            sub = have.get(key)
            if sub is None:
                continue
            if req.gateway and (
                sub.gateway is None or ipaddress.ip_address(req.gateway) != sub.gateway
            ):
                problems.append(
                    f"gateway of {key}: {req.gateway} in the config, {sub.gateway} in netd"
                )
            if req.ip_range and str(sub.ip_range) != req.ip_range:
                problems.append(
                    f"range of {key}: {req.ip_range} in the config, {sub.ip_range or 'all'} in netd"
                )
    if definition.internal is not None and definition.internal != network.internal:
        problems.append(
            f"internal: {str(definition.internal).lower()} in the config, "
            f"{str(network.internal).lower()} in netd"
        )
    if definition.mtu is not None:
        have_mtu = network.opts.mtu
        if have_mtu != definition.mtu:
            problems.append(f"mtu: {definition.mtu} in the config, {have_mtu or 'default'} in netd")
    if definition.bridge is not None and definition.bridge != bridge:
        problems.append(f"bridge: {definition.bridge} in the config, {bridge} in netd")
    return problems
