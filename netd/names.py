"""Validated names, and the deterministic names netd gives kernel objects.

Anything that ends up in a kernel object name, an nft rule or a DNS record goes through a
checking function here first, so an unsafe string cannot reach the kernel. The limits are cited:
IFNAMSIZ is 16 bytes including the NUL (linux/if.h), so interface names have at most 15
characters; a DNS label has at most 63 octets (RFC 1035 §2.3.4).
"""

from __future__ import annotations

import hashlib
import re

from .errors import InvalidInput

IFNAMSIZ = 16  # linux/include/uapi/linux/if.h, including the terminating NUL
MAX_IFNAME = IFNAMSIZ - 1
MAX_NETWORK_NAME = 128  # bounded so names fit labels, logs and table cells
MAX_CONTAINER_ID = 256

# The syntax shared by network names, interface names and container ids; the API's OpenAPI
# document publishes it (netd.api.formats), so it is kept free of Python-only syntax.
NAME_PATTERN = "[a-zA-Z0-9][a-zA-Z0-9_.-]*"
# Docker's rule for network names (libnetwork config.go: `^[a-zA-Z0-9][a-zA-Z0-9_.-]*$`).
_NETWORK_NAME = re.compile(NAME_PATTERN + r"\Z")
# Linux accepts any bytes but '/', ':' (aliases) and whitespace; we are stricter so a name is
# always safe inside nft rules and shell output.
_IFNAME = re.compile(NAME_PATTERN + r"\Z")
# CNI CONVENTIONS / SPEC: container id is alphanumeric plus ._- , must start alphanumeric.
_CONTAINER_ID = re.compile(NAME_PATTERN + r"\Z")
_DNS_LABEL = re.compile(r"[a-zA-Z0-9_]([a-zA-Z0-9_-]{0,61}[a-zA-Z0-9_])?\Z")

BRIDGE_PREFIX = "nd-"
VETH_PREFIX = "nv"


def check_network_name(name: object, field: str = "name") -> str:
    """Return ``name`` if it is a valid network name, else raise InvalidInput naming it."""
    if not isinstance(name, str) or not name:
        raise InvalidInput(field, name, "a network name must be a non-empty string")
    if len(name) > MAX_NETWORK_NAME:
        raise InvalidInput(field, name, f"at most {MAX_NETWORK_NAME} characters")
    if not _NETWORK_NAME.match(name):
        raise InvalidInput(field, name, "must match [a-zA-Z0-9][a-zA-Z0-9_.-]*")
    return name


def check_ifname(name: object, field: str = "ifname") -> str:
    """Return ``name`` if it is a safe Linux interface name (≤ 15 chars, IFNAMSIZ)."""
    if not isinstance(name, str) or not name:
        raise InvalidInput(field, name, "an interface name must be a non-empty string")
    if len(name) > MAX_IFNAME:
        raise InvalidInput(field, name, f"at most {MAX_IFNAME} characters (IFNAMSIZ is 16)")
    if name in (".", "..") or not _IFNAME.match(name):
        raise InvalidInput(field, name, "must match [a-zA-Z0-9][a-zA-Z0-9_.-]*")
    return name


def check_container_id(cid: object, field: str = "container_id") -> str:
    """Return ``cid`` if it is a valid CNI container id."""
    if not isinstance(cid, str) or not cid:
        raise InvalidInput(field, cid, "must be a non-empty string")
    if len(cid) > MAX_CONTAINER_ID:
        raise InvalidInput(field, cid, f"at most {MAX_CONTAINER_ID} characters")
    if not _CONTAINER_ID.match(cid):
        raise InvalidInput(field, cid, "must match [a-zA-Z0-9][a-zA-Z0-9_.-]*")
    return cid


def check_dns_name(name: object, field: str = "name") -> str:
    """Return ``name`` lower-cased if it is a valid DNS name (labels ≤ 63, total ≤ 253)."""
    if not isinstance(name, str) or not name:
        raise InvalidInput(field, name, "must be a non-empty string")
    trimmed = name[:-1] if name.endswith(".") else name
    if len(trimmed) > 253:
        raise InvalidInput(field, name, "a DNS name has at most 253 characters (RFC 1035)")
    for label in trimmed.split("."):
        if not _DNS_LABEL.match(label):
            raise InvalidInput(
                field, name, f"label {label!r} is not a DNS label (1-63 of [a-z0-9_-], RFC 1035)"
            )
    return trimmed.lower()


def bridge_name(network_id: str) -> str:
    """Default bridge name for a network: ``nd-`` + 12 hex characters of its id (15 chars)."""
    return BRIDGE_PREFIX + network_id[:12]


def host_veth_name(network_id: str, container_id: str, ifname: str) -> str:
    """Host-side veth name from the attachment key: ``nv`` + 13 hex chars of a hash (15 chars).

    The network id is part of the key: container ids are chosen by callers, and two callers
    (two rootless owners, or one container on two networks under the same interface name)
    may pick the same one; without the network the names would collide in the host (EEXIST)
    and tell one caller that another used that id. Network ids are random (256 bits), so
    names differ across networks; the name is recorded in the endpoint, so records made
    before this rule keep their old name.
    """
    digest = hashlib.sha256(f"{network_id}\0{container_id}\0{ifname}".encode()).hexdigest()
    return VETH_PREFIX + digest[:13]


def endpoint_tag(network_id: str, container_id: str, ifname: str) -> str:
    """The ifalias tag that marks a host veth as netd's: ``netd:<net12>:<cid>:<ifname>``.

    IFALIASZ is 256 bytes; the container id is cut so the tag always fits.
    """
    return f"netd:{network_id[:12]}:{ifname}:{container_id}"[:255]


def bridge_tag(network_id: str) -> str:
    """The ifalias tag that marks a bridge as netd's."""
    return f"netd:{network_id}"


PARENT_PREFIX = "nm-"  # a parent link netd owns for a macvlan/ipvlan network (internal)
PARENT_TAG_PREFIX = "netd-parent:"  # not "netd:": the bridge driver's listing never sees them


def internal_parent_name(network_id: str) -> str:
    """Name of the parent link netd makes for an internal macvlan/ipvlan network (15 chars)."""
    return PARENT_PREFIX + network_id[:12]


def internal_parent_peer_name(network_id: str) -> str:
    """The other end of an internal parent that is a veth pair (kernels without dummy links)."""
    return "np-" + network_id[:12]


def parent_tag(kind: str, network_id: str) -> str:
    """Tag of the internal parent link of a ``kind`` (macvlan/ipvlan) network: one per network."""
    return f"{PARENT_TAG_PREFIX}{kind}:{network_id}"


def vlan_parent_tag(kind: str, ifname: str) -> str:
    """Tag of an 802.1Q sub-interface netd made as a ``kind`` parent: keyed by its name, since
    every network naming ``IF.VID`` as parent shares the one link."""
    return f"{PARENT_TAG_PREFIX}{kind}:vlan:{ifname}"
