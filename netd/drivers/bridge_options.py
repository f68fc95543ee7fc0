"""The bridge driver's options: its own key (``bridge``) on top of netd's common ones.

The rules live in :mod:`netd.options` (one boolean rule, one address rule, Docker's aliases);
this module declares what the bridge accepts (:data:`BRIDGE_KEYS`: the network-wide keys, the
firewall keys, and ``bridge``, the bridge's interface name) and keeps the string-map entry
point :func:`validate_bridge_options` for its callers (compose, the driver's
``validate_options``). It is idempotent: validating its own output gives the same dict back.
"""

from __future__ import annotations

from collections.abc import Mapping

from ..options import DOCKER_ALIASES, MAX_MTU, MIN_MTU, DriverKeys, OptionDef, parse_options

__all__ = [
    "BRIDGE_KEYS",
    "DOCKER_ALIASES",
    "MAX_MTU",
    "MIN_MTU",
    "known_options",
    "validate_bridge_options",
]

BRIDGE_KEYS = DriverKeys(
    "bridge",
    own=(OptionDef("bridge", "ifname", "driver", "the bridge's interface name"),),
    firewall=True,
)


def known_options() -> list[str]:
    """Every accepted option key, canonical ones first, then the Docker aliases."""
    return BRIDGE_KEYS.known()


def validate_bridge_options(options: Mapping[str, str]) -> dict[str, str]:
    """Canonical, normalised options; InvalidInput naming the first unknown key or bad value.

    An option given under both spellings must agree, else it is ambiguous and refused.
    """
    return parse_options(options, BRIDGE_KEYS).as_dict()
