"""Options of the overlay driver (pure; no kernel access).

``vni`` — the network's VXLAN network identifier, 1 to 16777215 (24 bits, RFC 7348). The
cluster's create path allocates one when the user gives none (``-o vni=N`` picks it), so a
stored overlay record always has one; :func:`overlay_options` refuses a record without it.
``mtu`` — netd's network-wide key; without it the overlay takes the underlay link's MTU minus
:data:`VXLAN_OVERHEAD`. The firewall keys apply: the containers' traffic passes the network's
bridge on each node, as on a bridge network.

``encrypted`` — ``true``: the network's VXLAN traffic between nodes goes in IPsec ESP
(Docker's ``--opt encrypted``; keys from etcd, :mod:`netd.cluster.ipsec`); default false.

Refused with a reason rather than called unknown: ``bridge`` (the bridge of an overlay
network is named from its id on every node).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from ..errors import InvalidInput
from ..options import DriverKeys, OptionDef, parse_options

# Outer Ethernet 14 + IPv4 20 + UDP 8 + VXLAN 8 (RFC 7348 §5): what each frame gains on the
# underlay, so the overlay's MTU is the underlay's minus this (Docker's overlay does the same).
VXLAN_OVERHEAD = 50
# ESP in transport mode with AES-CBC and HMAC-SHA-256-128 (netd.kernel.xfrm): header 8, IV 16,
# padding to the 16-byte block (up to 15) + pad length and next header 2, ICV 16: at most 57,
# rounded up so the inner MTU stays a multiple of 8.
ESP_OVERHEAD = 64
VXLAN_PORT = 4789  # IANA's VXLAN port (RFC 7348 §5), not Linux's historical default 8472

OVERLAY_KEYS = DriverKeys(
    "overlay",
    own=(
        OptionDef(
            "vni",
            "vni",
            "driver",
            "the VXLAN network identifier (1 to 16777215); allocated by the cluster when not given",
        ),
        OptionDef(
            "encrypted",
            "bool",
            "driver",
            "IPsec ESP between the nodes for this network's VXLAN traffic (keys from etcd)",
        ),
    ),
    firewall=True,
    refused=(
        ("bridge", "the bridge of an overlay network is named from the network id on every node"),
    ),
)


def validate_overlay_options(options: Mapping[str, str]) -> dict[str, str]:
    """Canonical options of an overlay network request (``vni`` optional here: the cluster
    fills it in); InvalidInput naming the first unknown, refused or bad one."""
    return parse_options(options, OVERLAY_KEYS).as_dict()


@dataclass(frozen=True)
class OverlayOptions:
    """A stored overlay network's options, typed (what the driver acts on)."""

    vni: int
    mtu: int  # 0: the underlay's MTU minus VXLAN_OVERHEAD
    encrypted: bool = False


def overlay_options(options: Mapping[str, str]) -> OverlayOptions:
    """Typed options of a stored overlay record (validated again); InvalidInput naming
    ``options.vni`` when it has none."""
    opts = parse_options(options, OVERLAY_KEYS)
    vni = opts.driver.get("vni")
    if vni is None:
        raise InvalidInput(
            "options.vni",
            None,
            "an overlay network needs a VNI by the time a node plumbs it (the cluster allocates "
            "one at create time)",
        )
    return OverlayOptions(int(vni), opts.mtu or 0, opts.driver.get("encrypted") == "true")


def overlay_mtu(underlay_mtu: int, options: OverlayOptions) -> int:
    """The MTU of the network's bridge, VXLAN device and veths: the option, else the
    underlay's minus the encapsulation (and ESP's, when encrypted)."""
    esp = ESP_OVERHEAD if options.encrypted else 0
    return options.mtu or underlay_mtu - VXLAN_OVERHEAD - esp
