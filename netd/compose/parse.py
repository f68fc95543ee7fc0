"""Validation of a merged compose tree into a :class:`Project` (pure; no daemon, no kernel).

Only networking keys are looked at; everything else (image, volumes, environment, healthcheck,
depends_on, ``x-`` extensions...) is accepted and ignored. Each invalid value raises
:class:`ComposeError` naming the file, line and key path, e.g.
``compose.yaml:12: services.web.networks.front.ipv4_address: "10.0.0.300" is not an IPv4
address``. Checks that need the daemon's state (does an external network exist, is a static
address free) live in :mod:`netd.compose.plan`.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Any

from ..drivers.bridge_options import DOCKER_ALIASES, validate_bridge_options
from ..drivers.macvlan_options import validate_vlan_options
from ..errors import InvalidInput
from ..names import check_network_name
from .errors import ComposeError
from .merge import as_map
from .model import (
    LABEL_NETWORK,
    LABEL_PROJECT,
    IpamConfig,
    NetworkDef,
)
from .source import LocDict, position

DRIVERS = ("bridge", "macvlan", "ipvlan", "overlay")
NETWORK_KEYS = {
    "name",
    "driver",
    "driver_opts",
    "internal",
    "enable_ipv4",
    "enable_ipv6",
    "attachable",
    "labels",
    "external",
    "ipam",
}
ATTACH_KEYS = {
    "aliases",
    "ipv4_address",
    "ipv6_address",
    "mac_address",
    "interface_name",
    "priority",
    "gw_priority",
    "link_local_ips",
    "driver_opts",
}
_MAC = re.compile(r"[0-9a-fA-F]{2}([:-][0-9a-fA-F]{2}){5}\Z")
_SERVICE = re.compile(r"[a-zA-Z0-9][a-zA-Z0-9._-]*\Z")


class _Ctx:
    """Where we are in the tree, for error messages."""

    def __init__(self, container: Any, key: Any, path: str) -> None:
        self.where = position(container, key)
        self.path = path

    def fail(self, value: Any, rule: str) -> ComposeError:
        return ComposeError(self.where, self.path, value, rule)


def _at(container: Any, key: Any, path: str) -> _Ctx:
    return _Ctx(container, key, f"{path}.{key}" if path else str(key))


def _bool(c: _Ctx, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    raise c.fail(value, "must be true or false")


def _int(c: _Ctx, value: Any, low: int = -(2**31)) -> int:
    if isinstance(value, bool):
        raise c.fail(value, "must be an integer")
    if isinstance(value, float) and not value.is_integer():  # also .inf and .nan (YAML)
        raise c.fail(value, "must be an integer")
    try:
        out = int(value)
    except (TypeError, ValueError, OverflowError):
        raise c.fail(value, "must be an integer") from None
    if out < low:
        raise c.fail(value, f"must be at least {low}")
    return out


def _map(c: _Ctx, value: Any, key: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, (dict, list)):
        raise c.fail(value, "must be a mapping or a list")
    return dict(as_map(value, key))


def _strings(c: _Ctx, value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        return (value,)
    if not isinstance(value, list) or not all(isinstance(v, (str, int)) for v in value):
        raise c.fail(value, "must be a string or a list of strings")
    return tuple(str(v) for v in value)


def _address(c: _Ctx, value: Any, version: int) -> str:
    try:
        addr = ipaddress.ip_address(str(value))
    except ValueError:
        addr = None
    if addr is None or addr.version != version or isinstance(value, bool):
        raise c.fail(value, f"is not an IPv{version} address")
    return str(addr)


def _labels(c: _Ctx, value: Any) -> dict[str, str]:
    return {str(k): "" if v is None else str(v) for k, v in _map(c, value, "labels").items()}


def parse_network(tree: dict[Any, Any], key: str, project: str, warnings: list[str]) -> NetworkDef:
    """One ``networks.<key>`` entry."""
    path = f"networks.{key}"
    raw = tree.get(key)
    if raw is None:
        raw = LocDict()
    if not isinstance(raw, dict):
        raise _at(tree, key, "networks").fail(raw, "must be a mapping")
    for k in raw:
        if k not in NETWORK_KEYS and not str(k).startswith("x-"):
            raise _at(raw, k, path).fail(None, "is not a network attribute")
    name = raw.get("name")
    external = raw.get("external", False)
    if isinstance(external, dict):  # legacy form: external: {name: x}
        name = external.get("name", name)
        external = True
    external = _bool(_at(raw, "external", path), external)
    if name is not None:
        name = str(name)
    # docker compose: an external network without `name:` is the key itself, never prefixed.
    full = name if name else (key if external else f"{project}_{key}")
    try:
        check_network_name(full)
    except InvalidInput as exc:
        raise _at(raw, "name", path).fail(full, exc.rule) from None
    if external:
        extra = [k for k in raw if k not in ("external", "name") and not str(k).startswith("x-")]
        if extra:
            raise _at(raw, extra[0], path).fail(
                None, "external networks may have no other attribute than name"
            )
        return NetworkDef(key=key, name=full, external=True)
    driver = str(raw.get("driver") or "bridge")
    if driver not in DRIVERS:
        raise _at(raw, "driver", path).fail(
            driver, "is not a known network driver (netd supports: " + ", ".join(DRIVERS) + ")"
        )
    ipam = raw.get("ipam") or {}
    ipam_c = _at(raw, "ipam", path)
    if not isinstance(ipam, dict):
        raise ipam_c.fail(ipam, "must be a mapping")
    if str(ipam.get("driver") or "default") != "default":
        raise _at(ipam, "driver", f"{path}.ipam").fail(
            ipam.get("driver"), "is not a known IPAM driver (netd supports: default)"
        )
    configs = ipam.get("config") or []
    if not isinstance(configs, list):
        raise _at(ipam, "config", f"{path}.ipam").fail(configs, "must be a list")
    subnets = tuple(
        _ipam_config(configs, i, f"{path}.ipam.config[{i}]") for i in range(len(configs))
    )
    enable_ipv6 = _bool(_at(raw, "enable_ipv6", path), raw.get("enable_ipv6", False))
    enable_ipv4 = _bool(_at(raw, "enable_ipv4", path), raw.get("enable_ipv4", True))
    if not enable_ipv4 and not enable_ipv6:
        raise _at(raw, "enable_ipv4", path).fail(False, "needs enable_ipv6: true")
    for i, s in enumerate(subnets):
        version = ipaddress.ip_network(s.subnet).version if s.subnet else 4
        if version == 6 and not enable_ipv6:
            raise _at(configs, i, f"{path}.ipam.config[{i}]").fail(
                s.subnet, "is an IPv6 subnet but enable_ipv6 is not true"
            )
    return NetworkDef(
        key=key,
        name=full,
        driver=driver,
        options=_driver_opts(raw, path, warnings, driver),
        internal=_bool(_at(raw, "internal", path), raw.get("internal", False)),
        enable_ipv4=enable_ipv4,
        enable_ipv6=enable_ipv6,
        labels={
            **_labels(_at(raw, "labels", path), raw.get("labels")),
            LABEL_PROJECT: project,
            LABEL_NETWORK: key,
        },
        ipam=subnets,
    )


def _driver_opts(raw: Any, path: str, warnings: list[str], driver: str) -> dict[str, str]:
    c = _at(raw, "driver_opts", path)
    opts = {str(k): str(v) for k, v in _map(c, raw.get("driver_opts"), "driver_opts").items()}
    kept = {}
    for k, v in opts.items():
        if k.startswith("com.docker.") and k not in DOCKER_ALIASES:
            warnings.append(f"{path}.driver_opts.{k}: not supported by netd, ignored")
            continue
        kept[k] = v
    try:
        if driver == "bridge":
            return validate_bridge_options(kept)
        if driver == "overlay":
            return kept  # vni, mtu: the daemon's overlay driver checks them at create
        return validate_vlan_options(driver, kept)  # macvlan, ipvlan: Docker's option names
    except InvalidInput as exc:
        key = exc.field.partition(".")[2] if exc.field and "." in exc.field else str(exc.value)
        sub = _at(raw["driver_opts"], key, f"{path}.driver_opts")
        raise sub.fail(exc.value if "." in (exc.field or "") else None, exc.rule) from None


def _ipam_config(configs: Any, i: int, path: str) -> IpamConfig:
    raw = configs[i]
    c = _Ctx(configs, i, path)
    if not isinstance(raw, dict):
        raise c.fail(raw, "must be a mapping")
    net = None
    if raw.get("subnet") is not None:
        try:
            net = ipaddress.ip_network(str(raw["subnet"]), strict=True)
        except ValueError as exc:
            raise _at(raw, "subnet", path).fail(raw["subnet"], f"is not a subnet ({exc})") from None
    out: dict[str, Any] = {"subnet": str(net) if net else None}
    for k in ("ip_range", "gateway"):
        if raw.get(k) is None:
            continue
        kc = _at(raw, k, path)
        try:
            val: Any = (
                ipaddress.ip_network(str(raw[k]))
                if k == "ip_range"
                else ipaddress.ip_address(str(raw[k]))
            )
        except ValueError:
            raise kc.fail(
                raw[k], "is not a subnet" if k == "ip_range" else "is not an IP address"
            ) from None
        if net is None:
            raise kc.fail(raw[k], "needs a subnet in the same ipam.config entry")
        inside = val.subnet_of(net) if k == "ip_range" else val in net
        if val.version != net.version or not inside:
            raise kc.fail(raw[k], f"is not inside subnet {net}")
        out[k] = str(val)
    aux = {}
    for name, addr in _map(
        _at(raw, "aux_addresses", path), raw.get("aux_addresses"), "aux"
    ).items():
        ac = _at(raw["aux_addresses"], name, f"{path}.aux_addresses")
        try:
            ip = ipaddress.ip_address(str(addr))
        except ValueError:
            raise ac.fail(addr, "is not an IP address") from None
        if net is not None and ip not in net:
            raise ac.fail(addr, f"is not inside subnet {net}")
        aux[str(name)] = str(ip)
    return IpamConfig(out["subnet"], out.get("ip_range"), out.get("gateway"), aux)
