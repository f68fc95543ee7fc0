"""The syntax of the API's string fields, as regular expressions the OpenAPI document publishes.

Each pattern is written once here and used twice: pydantic enforces it on the request (so a
value the document calls invalid is refused with a 400 naming the field) and ``/openapi.json``
publishes it (so a client or a fuzzer generating from the document only sends values the API
accepts). The checks behind them (``netd.names``, ``ipaddress``, the bridge options, the
namespace checks) stay as they are; tests/unit/test_api_formats.py proves that every string
these patterns match passes them.

The patterns use only what ECMA-262 (JSON Schema's dialect), Rust's regex (pydantic's engine)
and Python's ``re`` read alike: no look-around, no inline flags. What a pattern cannot say
(a subnet that overlaps another, an address outside its subnet, a namespace file that does not
exist) is a rule of the request as a whole and is written in the field's description.
"""

from __future__ import annotations

from typing import Any

from ..drivers.bridge_options import BRIDGE_KEYS
from ..drivers.ipam import IpamOnlyDriver
from ..drivers.macvlan_options import IPVLAN_KEYS, MACVLAN_KEYS
from ..drivers.overlay_options import OVERLAY_KEYS
from ..ipam.subnets import MAX_PREFIX
from ..names import MAX_IFNAME, NAME_PATTERN
from ..options import (
    DOCKER_ALIASES,
    FALSE_WORDS,
    MAX_MTU,
    MAX_VNI,
    MIN_MTU,
    MIN_VNI,
    TRUE_WORDS,
    DriverKeys,
    OptionDef,
)

_HEX4 = "[0-9a-fA-F]{1,4}"
_OCTET = "(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
IPV4 = rf"{_OCTET}(\.{_OCTET}){{3}}"
# RFC 4291 §2.2 text forms, compressed or not, with an embedded IPv4 tail; no zone index.
IPV6 = (
    "("
    + "|".join(
        [
            rf"({_HEX4}:){{7}}{_HEX4}",
            rf"({_HEX4}:){{1,7}}:",
            rf"({_HEX4}:){{1,6}}:{_HEX4}",
            rf"({_HEX4}:){{1,5}}(:{_HEX4}){{1,2}}",
            rf"({_HEX4}:){{1,4}}(:{_HEX4}){{1,3}}",
            rf"({_HEX4}:){{1,3}}(:{_HEX4}){{1,4}}",
            rf"({_HEX4}:){{1,2}}(:{_HEX4}){{1,5}}",
            rf"{_HEX4}:(:{_HEX4}){{1,6}}",
            rf":((:{_HEX4}){{1,7}}|:)",
            rf"({_HEX4}:){{6}}{IPV4}",
            rf"::(ffff(:0{{1,4}})?:)?{IPV4}",
            rf"({_HEX4}:){{1,4}}:{IPV4}",
        ]
    )
    + ")"
)
IP = f"({IPV4}|{IPV6})"
CIDR = rf"({IPV4}/(3[0-2]|[12]?[0-9])|{IPV6}/(12[0-8]|1[01][0-9]|[1-9]?[0-9]))"
# A network's subnet: room for a gateway and a container (netd.ipam.subnets.MAX_PREFIX: /30, /126).
SUBNET = rf"({IPV4}/(30|[12]?[0-9])|{IPV6}/(12[0-6]|1[01][0-9]|[1-9]?[0-9]))"
_PORT = "([1-9][0-9]{0,3}|[1-5][0-9]{4}|6[0-4][0-9]{3}|65[0-4][0-9]{2}|655[0-2][0-9]|6553[0-5])"
# netd.dns.upstreams.parse_server: addr, IPv4:port, [IPv6]:port.
DNS_SERVER = rf"({IP}|{IPV4}:{_PORT}|\[{IPV6}\](:{_PORT})?)"
# A unicast MAC (lowest bit of the first octet clear), ':' or '-' separated, any case.
MAC = "[0-9a-fA-F][02468aceACE]([:-][0-9a-fA-F]{2}){5}"
ZERO_MAC = "00([:-]00){5}"
# An absolute path without NUL (open(2) cannot take one); PATH_MAX is 4096 with the NUL.
NETNS_PATH = "/[^\\x00]*"
MAX_PATH = 4095


assert MAX_PREFIX == {4: 30, 6: 126}, "update SUBNET with the limits"


def anchored(pattern: str) -> str:
    """``pattern`` matching the whole string."""
    return f"^({pattern})$"


def _nocase(word: str) -> str:
    return "".join(f"[{c.lower()}{c.upper()}]" if c.isalpha() else c for c in word)


def _mtu() -> str:
    # MIN_MTU..MAX_MTU (68..65535) spelled as a regular expression.
    assert (MIN_MTU, MAX_MTU) == (68, 65535), "update the MTU pattern with the limits"
    return (
        "(6[89]|[7-9][0-9]|[1-9][0-9]{2,3}|[1-5][0-9]{4}|6[0-4][0-9]{3}|65[0-4][0-9]{2}"
        "|655[0-2][0-9]|6553[0-5])"
    )


def _vni() -> str:
    # MIN_VNI..MAX_VNI (1..16777215) spelled as a regular expression.
    assert (MIN_VNI, MAX_VNI) == (1, 16777215), "update the VNI pattern with the limits"
    return (
        "([1-9][0-9]{0,6}|1[0-5][0-9]{6}|16[0-6][0-9]{5}|167[0-6][0-9]{4}|1677[0-6][0-9]{3}"
        "|16777[01][0-9]{2}|1677720[0-9]|1677721[0-5])"
    )


_BOOL = "(" + "|".join(_nocase(w) for w in (*TRUE_WORDS, *FALSE_WORDS)) + ")"
# An interface name: the shared name syntax, at most MAX_IFNAME characters (IFNAMSIZ).
IFNAME = NAME_PATTERN.removesuffix("*") + f"{{0,{MAX_IFNAME - 1}}}"


def option_syntax(option: OptionDef) -> str:
    """The pattern of one option kind (netd.options.OptionDef.normalise is the check)."""
    if option.kind == "choice":
        return "(" + "|".join(_nocase(word) for word in option.choices) + ")"
    return {
        "bool": _BOOL,
        "mtu": _mtu(),
        "vni": _vni(),
        "ipv4": IPV4,
        "ipv6": IPV6,
        "servers": rf"{DNS_SERVER}(\s*,\s*{DNS_SERVER})*",
        "ifname": IFNAME,
    }[option.kind]


def options_schema(*drivers: DriverKeys) -> dict[str, Any]:
    """The JSON schema of a network's ``options`` from the drivers' declarations
    (:class:`netd.options.DriverKeys`, each driver's ``option_keys``).

    The keys any of them takes, each with its value's syntax (surrounding blanks allowed, as the
    parser strips them) and a description naming the drivers that take it: one schema serves
    every driver (the request's ``driver`` is another property), so which driver takes which
    key, and the rules no pattern can say, are written in the descriptions. A driver whose keys
    are open (an external plugin's: it checks them itself) makes every other key a string the
    schema admits.
    """
    properties: dict[str, Any] = {}
    takers: dict[str, list[str]] = {}
    for keys in drivers:
        accepted = keys.accepted()
        for key in keys.known():
            takers.setdefault(key, []).append(keys.driver)
            if key in properties:
                continue
            canonical = DOCKER_ALIASES.get(key, key)
            option = accepted[canonical]
            doc = option.doc or canonical
            if canonical != key:
                doc = f"Docker's name for {canonical!r}; both given must agree"
            elif canonical == "mtu":
                doc += "; at least 1280 on a network with IPv6"
            properties[key] = {
                "type": "string",
                "pattern": anchored(rf"\s*{option_syntax(option)}\s*"),
                "description": doc,
            }
    for key, prop in properties.items():
        names = takers[key]
        if key == "dns" and "ipam" in names:
            names = [n if n != "ipam" else "ipam (false only)" for n in names]
        prop["description"] += "; drivers: " + ", ".join(names)
    open_drivers = [keys.driver for keys in drivers if keys.open]
    description = (
        "the network's options (docs/configuration.md). Each key is taken only by the drivers "
        "its description names: a key the request's driver does not take is refused (unknown "
        'option, or "not supported by driver" with the reason)'
    )
    if open_drivers:
        description += (
            "; drivers " + ", ".join(open_drivers) + " are external plugins: any other key is "
            "theirs, checked by the plugin"
        )
    return {
        "type": "object",
        "properties": properties,
        "additionalProperties": {"type": "string"} if open_drivers else False,
        "maxProperties": 64,
        "description": description,
    }


def builtin_options_schema() -> dict[str, Any]:
    """The ``options`` schema of the built-in drivers a daemon offers (bridge, ipam, macvlan,
    ipvlan, overlay); the daemon's document is built from the drivers it runs (api.server)."""
    return options_schema(
        BRIDGE_KEYS, IpamOnlyDriver.option_keys, MACVLAN_KEYS, IPVLAN_KEYS, OVERLAY_KEYS
    )


def bridge_options_schema() -> dict[str, Any]:
    """The JSON schema of a bridge network's ``options`` (:data:`BRIDGE_KEYS`)."""
    return options_schema(BRIDGE_KEYS)
