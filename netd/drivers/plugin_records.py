"""The external driver contract ``netd.driver/1`` as data: requests, answers, errors (pure).

What a driver plugin is sent and what it may answer is defined in docs/plugin-contract.md;
this module is that document in code. It builds the *public* records of a network and an
endpoint (only what a data plane needs: never the owner, the store state, labels, IPAM ranges
or DNS names), parses and checks every answer strictly, and turns a plugin's ``{"error": ...}``
into the netd error of the same meaning. No I/O: running the plugin is
:mod:`netd.drivers.plugin_exec`, the Driver built on both is :mod:`netd.drivers.external`.

The names netd gives a plugin's host-side objects (interface names and ifalias tags) are made
here, so a plugin never has to invent a name netd must later recognise.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from typing import Any

from ..errors import (
    Conflict,
    InvalidInput,
    KernelError,
    NetdError,
    NotFound,
    Unavailable,
)
from ..model import Endpoint, Network
from ..names import MAX_IFNAME, Tag, check_ifname, parse_tag
from ..options import COMMON_KEYS
from .base import Capabilities, default_gateways
from .macs import check_mac

CONTRACT = "netd.driver/1"
VERBS = (
    "capabilities",
    "validate_options",
    "network_create",
    "network_remove",
    "endpoint_attach",
    "endpoint_detach",
    "endpoint_check",
    "inventory",
    "object_remove",
)
HOST_IFNAME_PREFIX = "nx"
# Option keys that are netd's, not the driver's (netd.options: the network-wide keys, and the
# firewall keys an external driver refuses): netd keeps and applies them (``mtu`` reaches the
# plugin as the record's ``mtu``), the plugin never sees them as options.
NETWORK_OPTION_KEYS = COMMON_KEYS
_FIELD = re.compile(r"[A-Za-z0-9_.\[\]-]{1,128}\Z")
_MAX_TEXT = 1024  # longest message, problem or field value kept from a plugin's answer


def network_tag(driver: str, network_id: str) -> str:
    """The ifalias a plugin puts on a host-side object of a whole network:
    ``netd:ext:<driver>:<net12>`` (netd.names, kind ``ext``)."""
    return Tag.for_external(driver, network_id).text


def endpoint_tag(driver: str, network_id: str, container_id: str, ifname: str) -> str:
    """The ifalias a plugin puts on an endpoint's host-side interface (cut to IFALIASZ):
    ``netd:ext:<driver>:<net12>:<ifname>:<container id>``."""
    return Tag.for_external(driver, network_id, container_id, ifname).text


def host_ifname(network_id: str, container_id: str, ifname: str) -> str:
    """The host-side interface name of an endpoint: ``nx`` + 13 hex characters (IFNAMSIZ).

    Derived from the attachment key like the bridge's veths (netd.names.host_veth_name), with
    a prefix of its own so ``ip link`` tells a plugin's interface from the bridge's.
    """
    digest = hashlib.sha256(f"{network_id}\0{container_id}\0{ifname}".encode()).hexdigest()
    return (HOST_IFNAME_PREFIX + digest)[:MAX_IFNAME]


def driver_options(options: Mapping[str, str]) -> dict[str, str]:
    """The options a plugin sees: the network's options minus netd's network-wide keys."""
    return {k: v for k, v in options.items() if k not in NETWORK_OPTION_KEYS}


def network_record(network: Network) -> dict[str, Any]:
    """The public record of ``network`` (docs/plugin-contract.md "Network record")."""
    mtu = network.options.get("mtu")
    return {
        "id": network.id,
        "name": network.name,
        "driver": network.driver,
        "subnets": [
            {"subnet": str(s.subnet), "gateway": str(s.gateway) if s.gateway else None}
            for s in network.subnets
        ],
        "options": driver_options(network.options),
        "internal": network.internal,
        "ipv6": network.ipv6,
        "mtu": int(mtu) if mtu else None,
        "tag": network_tag(network.driver, network.id),
    }


def endpoint_record(network: Network, endpoint: Endpoint, *, host_side: bool) -> dict[str, Any]:
    """The public record of ``endpoint`` (docs/plugin-contract.md "Endpoint record")."""
    return {
        "network_id": endpoint.network_id,
        "container_id": endpoint.container_id,
        "ifname": endpoint.ifname,
        "netns": endpoint.netns,
        "host_ifname": (
            host_ifname(network.id, endpoint.container_id, endpoint.ifname) if host_side else ""
        ),
        "tag": endpoint_tag(network.driver, network.id, endpoint.container_id, endpoint.ifname),
        "addresses": [str(a) for a in endpoint.addresses],
        "gateways": [str(g) for g in default_gateways(network, endpoint)],
        "mac": endpoint.mac,
        "host_mac": endpoint.host_mac,
    }


def request(verb: str, driver: str, **payload: Any) -> bytes:
    """The JSON document written to the plugin's stdin for one call."""
    return json.dumps({"contract": CONTRACT, "verb": verb, "driver": driver, **payload}).encode()


# --- answers ---------------------------------------------------------------------------------


class BadAnswer(Exception):
    """A plugin's stdout is not an answer the contract allows (the reason, in words)."""


def parse_answer(stdout: bytes) -> dict[str, Any]:
    """The JSON object a plugin printed; BadAnswer for anything else (empty, garbage, a list)."""
    text = stdout.strip()
    if not text:
        raise BadAnswer("printed nothing on stdout")
    try:
        answer = json.loads(text)
    except (UnicodeDecodeError, ValueError) as exc:
        raise BadAnswer(f"printed something that is not JSON ({_clip(repr(text[:80]))})") from exc
    if not isinstance(answer, dict):
        raise BadAnswer(f"printed JSON that is not an object ({type(answer).__name__})")
    return answer


def _clip(text: str, limit: int = _MAX_TEXT) -> str:
    return text if len(text) <= limit else text[:limit] + "…"


_ERRORS: dict[str, type[NetdError]] = {
    "not_found": NotFound,
    "conflict": Conflict,
    "unavailable": Unavailable,
    "kernel": KernelError,
    "kernel_error": KernelError,
    "internal": KernelError,
}


def plugin_error(driver: str, verb: str, error: object) -> NetdError:
    """The netd error for a plugin's ``{"error": {code, message, field?, value?}}``."""
    where = f'driver plugin "{driver}" {verb}'
    if not isinstance(error, dict):
        return KernelError(f"{where}: malformed error {_clip(repr(error))}")
    code = error.get("code")
    message = _clip(str(error.get("message") or "failed without a message"))
    field = error.get("field")
    value = error.get("value")
    if value is not None and not isinstance(value, str | int | float | bool):
        value = _clip(json.dumps(value))
    elif isinstance(value, str):
        value = _clip(value)
    if code == "invalid_input":
        if not isinstance(field, str) or not _FIELD.match(field):
            field, value = "driver", driver
        return InvalidInput(field, value, f"{message} (driver {driver})")
    cls = _ERRORS.get(code) if isinstance(code, str) else None
    if cls is None:
        return KernelError(f"{where}: {message} (unknown error code {_clip(repr(code), 64)})")
    safe_field = field if isinstance(field, str) and _FIELD.match(field) else None
    return cls(f"{where}: {message}", field=safe_field, value=value if safe_field else None)


_CAPABILITY_KEYS = {
    "plumbs",
    "firewall",
    "port_mappings",
    "icc",
    "host_interface",
    "network_object",
    "dns",
    "scope",
    "kernel_features",
}
# Capabilities contract 1 cannot grant: netd's firewall keys on one host interface per network,
# which the contract has no way to name yet (docs/plugin-contract.md "Not in version 1").
_MUST_BE = {"plumbs": True, "firewall": False, "port_mappings": False, "icc": False}


def parse_capabilities(driver: str, answer: Mapping[str, Any]) -> tuple[Capabilities, bool]:
    """The driver's Capabilities and whether it makes a network-wide host object; BadAnswer
    naming the key for an unknown key, a wrong type, or a value contract 1 does not allow."""
    contract = answer.get("contract")
    if contract != CONTRACT:
        raise BadAnswer(f"speaks contract {contract!r}; this netd speaks {CONTRACT!r}")
    caps = answer.get("capabilities")
    if not isinstance(caps, dict):
        raise BadAnswer('has no "capabilities" object')
    unknown = sorted(set(caps) - _CAPABILITY_KEYS)
    if unknown:
        raise BadAnswer(
            f"declares unknown capabilities {unknown}; known: {sorted(_CAPABILITY_KEYS)}"
        )
    for key in ("plumbs", "firewall", "port_mappings", "icc", "host_interface", "network_object"):
        if key in caps and not isinstance(caps[key], bool):
            raise BadAnswer(f"capability {key!r} is {caps[key]!r}, not true or false")
    for key, allowed in _MUST_BE.items():
        if caps.get(key, allowed) != allowed:
            raise BadAnswer(
                f"capability {key!r} must be {str(allowed).lower()} under {CONTRACT} "
                "(see docs/plugin-contract.md)"
            )
    dns = caps.get("dns", "none")
    if dns not in ("gateway", "netns", "none"):
        raise BadAnswer(f'capability "dns" is {dns!r}; one of "gateway", "netns", "none"')
    scope = caps.get("scope", "local")
    if scope not in ("local", "global"):
        raise BadAnswer(f'capability "scope" is {scope!r}; one of "local", "global"')
    features = caps.get("kernel_features", [])
    if not isinstance(features, list) or not all(
        isinstance(f, str) and re.fullmatch(r"[a-z0-9_]{1,32}", f) for f in features
    ):
        raise BadAnswer(
            f'capability "kernel_features" is {_clip(repr(features), 120)}; '
            'a list of link kinds like "veth"'
        )
    host = caps.get("host_interface", True)
    return (
        Capabilities(
            plumbs=True,
            firewall=False,
            port_mappings=False,
            icc=False,
            host_interface=host,
            dns=dns,
            scope=scope,
            kernel_features=tuple(features),
        ),
        bool(caps.get("network_object", False)),
    )


def parse_options(answer: Mapping[str, Any]) -> dict[str, str]:
    """``{"options": {str: str}}`` of validate_options."""
    options = answer.get("options")
    if not isinstance(options, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in options.items()
    ):
        raise BadAnswer('"options" must be an object of strings')
    return dict(options)


def parse_attach(answer: Mapping[str, Any], *, host_side: bool) -> tuple[str, str | None]:
    """(container MAC, host MAC or None) of endpoint_attach."""
    try:
        mac = check_mac(answer.get("mac"), "mac")
        host_mac = check_mac(answer.get("host_mac"), "host_mac") if host_side else None
    except InvalidInput as exc:
        raise BadAnswer(f"{exc.field} {exc.value!r}: {exc.rule}") from None
    return mac, host_mac


def parse_strings(answer: Mapping[str, Any], key: str) -> list[str]:
    """A list of messages (``problems`` of endpoint_check, ``failures`` of the removals)."""
    items = answer.get(key, [])
    if not isinstance(items, list) or not all(isinstance(i, str) for i in items):
        raise BadAnswer(f'"{key}" must be a list of strings')
    return [_clip(i) for i in items]


def parse_inventory(driver: str, answer: Mapping[str, Any]) -> dict[str, str]:
    """``{tag: ifname}`` of inventory, keeping only this driver's tags with valid names."""
    objects = answer.get("objects")
    if not isinstance(objects, list):
        raise BadAnswer('"objects" must be a list of {"tag", "ifname"}')
    out: dict[str, str] = {}
    for item in objects:
        if not isinstance(item, dict):
            raise BadAnswer(f"inventory entry {_clip(repr(item), 120)} is not an object")
        tag, ifname = item.get("tag"), item.get("ifname")
        parsed = parse_tag(tag) if isinstance(tag, str) else None
        if parsed is None or parsed.kind != "ext" or parsed.driver != driver:
            continue  # not one of this driver's objects: never this driver's to remove
        try:
            out[str(tag)] = check_ifname(ifname, "ifname")
        except InvalidInput as exc:
            raise BadAnswer(f"inventory entry {tag!r}: {exc.rule}") from None
    return out
