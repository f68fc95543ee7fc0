"""Options of the macvlan and ipvlan drivers, Docker's names (pure; no kernel access).

macvlan: ``parent=IF`` (or ``IF.VID``: an 802.1Q sub-interface netd creates), ``macvlan_mode=
bridge|private|vepa|passthru`` (default bridge). ipvlan: ``parent``, ``ipvlan_mode=l2|l3|l3s``
(default l2), ``ipvlan_flag=bridge|private|vepa`` (default bridge). Docker's macvlan/ipvlan
drivers take the same names (libnetwork drivers/macvlan and drivers/ipvlan ``*_network.go``).
Both take netd's network-wide keys (``mtu``, ``dns``, ``dns_servers``,
``dns_forward_internal``).

This module only declares the keys (:data:`MACVLAN_KEYS`, :data:`IPVLAN_KEYS`) and the parent's
own value rule (:func:`parse_parent`); the parsing, the aliases, the value kinds and the
refusal of the firewall keys (there is no host-side interface to filter, to masquerade through
or to publish ports on, as Docker refuses them) are :mod:`netd.options`'. It does not check
that the parent exists: that needs the kernel (the driver's ``ensure_network``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from ..errors import InvalidInput
from ..names import check_ifname
from ..options import DriverKeys, OptionDef, parse_options

MACVLAN_MODES = {"bridge": 4, "private": 1, "vepa": 2, "passthru": 8}  # linux/if_link.h
IPVLAN_MODES = {"l2": 0, "l3": 1, "l3s": 2}  # linux/if_link.h ipvlan_mode
IPVLAN_FLAGS = {"bridge": 0, "private": 1, "vepa": 2}  # IPVLAN_F_PRIVATE, IPVLAN_F_VEPA
MAX_VLAN_ID = 4094  # 802.1Q: 0 and 4095 are reserved


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


def _check_parent(field_name: str, value: str) -> str:
    return parse_parent(value, field_name).name


PARENT = OptionDef(
    "parent",
    "ifname",
    "driver",
    "the host link the containers' links hang on; IF.VID (VID from 1 to "
    f"{MAX_VLAN_ID}) makes an 802.1Q sub-interface of IF if it does not exist; the link must "
    "exist in the daemon's namespace and be an Ethernet link (not loopback); none: an "
    "internal network",
    check=_check_parent,
)
_NO_BRIDGE = (("bridge", "there is no bridge on this driver; name the parent link with "
               "options.parent"),)  # fmt: skip

MACVLAN_KEYS = DriverKeys(
    "macvlan",
    own=(
        PARENT,
        OptionDef(
            "macvlan_mode",
            "choice",
            "driver",
            "how its containers reach each other",
            choices=tuple(MACVLAN_MODES),
        ),
    ),
    firewall=False,
    refused=_NO_BRIDGE,
)
IPVLAN_KEYS = DriverKeys(
    "ipvlan",
    own=(
        PARENT,
        OptionDef("ipvlan_mode", "choice", "driver", "L2 or L3 mode", choices=tuple(IPVLAN_MODES)),
        OptionDef(
            "ipvlan_flag",
            "choice",
            "driver",
            "how its containers reach each other",
            choices=tuple(IPVLAN_FLAGS),
        ),
    ),
    firewall=False,
    refused=_NO_BRIDGE,
)
KEYS = {"macvlan": MACVLAN_KEYS, "ipvlan": IPVLAN_KEYS}


def validate_vlan_options(driver: str, options: Mapping[str, str]) -> dict[str, str]:
    """Canonical options of a ``driver`` ("macvlan" or "ipvlan") network; InvalidInput naming
    the first unknown, refused or bad one (:func:`netd.options.parse_options`)."""
    return parse_options(options, KEYS[driver]).as_dict()


@dataclass(frozen=True)
class VlanOptions:
    """A network's validated options with defaults filled (what the driver acts on)."""

    parent: Parent | None  # None: an internal parent link netd owns
    mode: int
    flags: int
    mtu: int  # 0: the parent's


def vlan_options(driver: str, options: Mapping[str, str]) -> VlanOptions:
    """Typed options of a stored network record (validated again: cheap, and never trusted)."""
    opts = parse_options(options, KEYS[driver])
    own = opts.driver
    parent = parse_parent(own["parent"]) if "parent" in own else None
    if driver == "macvlan":
        mode = MACVLAN_MODES[own.get("macvlan_mode", "bridge")]
        flags = 0
    else:
        mode = IPVLAN_MODES[own.get("ipvlan_mode", "l2")]
        flags = IPVLAN_FLAGS[own.get("ipvlan_flag", "bridge")]
    return VlanOptions(parent, mode, flags, opts.mtu or 0)
