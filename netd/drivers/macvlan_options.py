"""Options of the macvlan and ipvlan drivers, Docker's names (pure; no kernel access).

macvlan: ``parent=IF`` (or ``IF.VID``: an 802.1Q sub-interface netd creates), ``macvlan_mode=
bridge|private|vepa|passthru`` (default bridge). ipvlan: ``parent``, ``ipvlan_mode=l2|l3|l3s``
(default l2), ``ipvlan_flag=bridge|private|vepa`` (default bridge). Both: ``mtu`` (Docker's
``com.docker.network.driver.mtu`` too) and ``dns=false``. Docker's macvlan/ipvlan drivers take the
same names (libnetwork drivers/macvlan and drivers/ipvlan ``*_network.go``).

Options that only make sense on a bridge are refused with the reason, as Docker refuses them:
there is no host-side interface to filter (``enable_icc``), to masquerade through or to publish
ports on. :func:`validate_vlan_options` returns canonical keys with normalised values and is
idempotent. It does not check that the parent exists: that needs the kernel (the driver's
``ensure_network``).
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import InvalidInput
from ..names import check_ifname
from .bridge_options import MAX_MTU, MIN_MTU

MACVLAN_MODES = {"private": 1, "vepa": 2, "bridge": 4, "passthru": 8}  # linux/if_link.h
IPVLAN_MODES = {"l2": 0, "l3": 1, "l3s": 2}  # linux/if_link.h ipvlan_mode
IPVLAN_FLAGS = {"bridge": 0, "private": 1, "vepa": 2}  # IPVLAN_F_PRIVATE, IPVLAN_F_VEPA
MAX_VLAN_ID = 4094  # 802.1Q: 0 and 4095 are reserved

ALIASES = {"com.docker.network.driver.mtu": "mtu"}
_COMMON = ("parent", "mtu", "dns")
KNOWN = {
    "macvlan": (*_COMMON, "macvlan_mode"),
    "ipvlan": (*_COMMON, "ipvlan_mode", "ipvlan_flag"),
}
# Bridge options (canonical and Docker spellings) with the reason they do not apply.
_NO_HOST_SIDE = "there is no host-side interface: containers sit directly on the parent's segment"
REFUSED = {
    "enable_icc": "inter-container traffic is not filtered on this driver (" + _NO_HOST_SIDE + ")",
    "com.docker.network.bridge.enable_icc": "inter-container traffic is not filtered on this "
    "driver (" + _NO_HOST_SIDE + ")",
    "isolate": "networks are not isolated by netd's firewall on this driver",
    "enable_ip_masquerade": "traffic leaves through the parent unchanged; there is no NAT",
    "com.docker.network.bridge.enable_ip_masquerade": "traffic leaves through the parent "
    "unchanged; there is no NAT",
    "host_ipv4": "ports cannot be published on this driver (" + _NO_HOST_SIDE + ")",
    "host_ipv6": "ports cannot be published on this driver (" + _NO_HOST_SIDE + ")",
    "com.docker.network.host_ipv4": "ports cannot be published on this driver",
    "com.docker.network.host_ipv6": "ports cannot be published on this driver",
    "bridge": "there is no bridge on this driver; name the parent link with options.parent",
    "com.docker.network.bridge.name": "there is no bridge on this driver; name the parent "
    "link with options.parent",
    "anti_spoof": "the firewall does not see this driver's traffic",
}


@dataclass(frozen=True)
class Parent:
    """Where a network's links hang: ``name``, and the VLAN id netd adds on ``base`` (0: none)."""

    name: str
    base: str = ""
    vlan: int = 0


def parse_parent(value: str, key: str = "options.parent") -> Parent:
    """``eth0`` → Parent("eth0"); ``eth0.10`` → Parent("eth0.10", "eth0", 10) (Docker's rule).

    The name may exist as it is (then it is used and never removed); only when it does not is
    ``IF.VID`` created as an 802.1Q sub-interface of IF — the driver decides that.
    """
    name = value.strip()
    try:
        check_ifname(name, key)
    except InvalidInput as exc:
        raise InvalidInput(key, value, exc.rule) from None
    base, dot, vid = name.rpartition(".")
    if dot and base and vid.isdigit():
        if not 1 <= int(vid) <= MAX_VLAN_ID:
            raise InvalidInput(
                key, value, f"the VLAN id after the dot must be from 1 to {MAX_VLAN_ID} (802.1Q)"
            )
        return Parent(name, base, int(vid))
    return Parent(name)


def _mtu(key: str, value: str) -> str:
    text = value.strip()
    if not text.isdigit() or not MIN_MTU <= int(text) <= MAX_MTU:
        raise InvalidInput(
            f"options.{key}", value, f"must be an integer from {MIN_MTU} to {MAX_MTU}"
        )
    return str(int(text))


def _choice(key: str, value: str, choices: dict[str, int]) -> str:
    text = value.strip().lower()
    if text not in choices:
        raise InvalidInput(f"options.{key}", value, "must be one of " + "|".join(choices))
    return text


def validate_vlan_options(driver: str, options: dict[str, str]) -> dict[str, str]:
    """Canonical options of a ``driver`` ("macvlan" or "ipvlan") network; InvalidInput naming
    the first unknown, refused or bad one."""
    known = KNOWN[driver]
    out: dict[str, str] = {}
    for key in sorted(options, key=lambda k: (k in ALIASES, k)):
        value = options[key]
        if key in REFUSED:
            raise InvalidInput(f"options.{key}", value, f"not supported by driver {driver}: "
                               + REFUSED[key])  # fmt: skip
        canonical = ALIASES.get(key, key)
        if canonical not in known:
            raise InvalidInput(
                "options",
                key,
                f"unknown option for driver {driver}; known: " + ", ".join([*known, *ALIASES]),
            )
        if not isinstance(value, str):
            raise InvalidInput(f"options.{key}", value, "must be a string")
        if canonical == "parent":
            normalised = parse_parent(value, f"options.{key}").name
        elif canonical == "mtu":
            normalised = _mtu(key, value)
        elif canonical == "dns":
            normalised = value.strip().lower()
            if normalised not in ("true", "false"):
                raise InvalidInput(f"options.{key}", value, 'must be "true" or "false"')
        elif canonical == "macvlan_mode":
            normalised = _choice(key, value, MACVLAN_MODES)
        elif canonical == "ipvlan_mode":
            normalised = _choice(key, value, IPVLAN_MODES)
        else:
            normalised = _choice(key, value, IPVLAN_FLAGS)
        if canonical in out and out[canonical] != normalised:
            raise InvalidInput(
                f"options.{key}", value, f"conflicts with options.{canonical}={out[canonical]!r}"
            )
        out[canonical] = normalised
    return out


@dataclass(frozen=True)
class VlanOptions:
    """A network's validated options with defaults filled (what the driver acts on)."""

    parent: Parent | None  # None: an internal parent link netd owns
    mode: int
    flags: int
    mtu: int  # 0: the parent's


def vlan_options(driver: str, options: dict[str, str]) -> VlanOptions:
    """Typed options of a stored network record (validated again: cheap, and never trusted)."""
    opts = validate_vlan_options(driver, options)
    parent = parse_parent(opts["parent"]) if "parent" in opts else None
    if driver == "macvlan":
        mode = MACVLAN_MODES[opts.get("macvlan_mode", "bridge")]
        flags = 0
    else:
        mode = IPVLAN_MODES[opts.get("ipvlan_mode", "l2")]
        flags = IPVLAN_FLAGS[opts.get("ipvlan_flag", "bridge")]
    return VlanOptions(parent, mode, flags, int(opts.get("mtu", "0")))
