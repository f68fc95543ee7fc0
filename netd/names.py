"""Validated names, and the deterministic names and tags netd gives kernel objects.

Anything that ends up in a kernel object name, an nft rule or a DNS record goes through a
checking function here first, so an unsafe string cannot reach the kernel. The limits are cited:
IFNAMSIZ is 16 bytes including the NUL (linux/if.h), so interface names have at most 15
characters; a DNS label has at most 63 octets (RFC 1035 §2.3.4).

Tags. Every link netd creates in the host namespace carries an ifalias tag saying which record
owns it; reconcile, recover, the link watcher and ``netd graph`` find netd's links by tag, never
by name. This module is the only place that writes or reads one (:class:`Tag`,
:func:`parse_tag`). The formats, as the kernel holds them (existing kernels carry them, so they
never change):

- ``netd:<network id>`` — a network's own link (the bridge): kind ``network``, the full id;
- ``netd:<net12>:<ifname>:<container id>`` — an endpoint's host-side link (the host veth): kind
  ``endpoint``, the first 12 characters of the network id, the interface name in the container,
  then the container id, last because it alone may be cut (IFALIASZ is 256 bytes with the NUL,
  linux/if.h) and may be long;
- ``netd:<kind>:<network id>`` — any other link a network owns (a macvlan parent
  sub-interface: ``parent``; an overlay's VXLAN device: ``vxlan``). ``<kind>`` is a word from
  :data:`LINK_KINDS`; each holds a letter outside ``a-f``, so it can never be read as the start
  of a network id (those are hex, ``secrets.token_hex``). A new kind is added there, not by
  inventing a new layout.

Anything else after ``netd:`` (an empty field, two fields, an unknown kind word followed by
more fields) is not a tag of netd's: :func:`parse_tag` returns None and nothing acts on it.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import Literal, cast, get_args

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


TAG_PREFIX = "netd:"
MAX_TAG = 255  # IFALIASZ is 256 bytes including the NUL (linux/include/uapi/linux/if.h)
NET12 = 12  # characters of the network id in an endpoint tag
# Kinds of network-owned links besides the bridge; each word holds a non-hex letter (see above).
LinkKind = Literal["parent", "vxlan"]
LINK_KINDS: frozenset[str] = frozenset(get_args(LinkKind))
TagKind = Literal["network", "endpoint", LinkKind]


@dataclass(frozen=True)
class Tag:
    """The owner of a tagged link: what :func:`parse_tag` reads and :attr:`text` writes.

    ``network`` is the full network id, except in an ``endpoint`` tag, which carries only its
    first 12 characters (match with ``network_id.startswith(tag.network)``). ``ifname`` and
    ``container_id`` are set for ``endpoint`` tags only.
    """

    kind: TagKind
    network: str
    ifname: str = ""
    container_id: str = ""

    @classmethod
    def for_network(cls, network_id: str) -> Tag:
        """The tag of a network's bridge."""
        return cls("network", network_id)

    @classmethod
    def for_endpoint(cls, network_id: str, container_id: str, ifname: str) -> Tag:
        """The tag of an endpoint's host-side link; the container id cut so the tag fits."""
        head = f"{TAG_PREFIX}{network_id[:NET12]}:{ifname}:"
        return cls("endpoint", network_id[:NET12], ifname, container_id[: MAX_TAG - len(head)])

    @classmethod
    def for_link(cls, kind: LinkKind, network_id: str) -> Tag:
        """The tag of another link a network owns (a macvlan parent, a VXLAN device)."""
        return cls(kind, network_id)

    @property
    def text(self) -> str:
        """The tag as the kernel holds it (the link's ifalias)."""
        if self.kind == "network":
            return f"{TAG_PREFIX}{self.network}"
        if self.kind == "endpoint":
            return f"{TAG_PREFIX}{self.network}:{self.ifname}:{self.container_id}"[:MAX_TAG]
        return f"{TAG_PREFIX}{self.kind}:{self.network}"

    def __str__(self) -> str:
        return self.text


def parse_tag(text: str) -> Tag | None:
    """The :class:`Tag` an ifalias holds, or None when it is not a tag of netd's."""
    if not text.startswith(TAG_PREFIX):
        return None
    fields = text[len(TAG_PREFIX) :].split(":", 2)
    if not all(fields):
        return None
    if len(fields) == 2 and fields[0] in LINK_KINDS:
        return Tag.for_link(cast(LinkKind, fields[0]), fields[1])
    if len(fields) == 1:
        return Tag("network", fields[0])
    if len(fields) == 3:
        # The container id is last and kept whole, colons included: a foreign runtime's id
        # is still told apart from its network and interface.
        return Tag("endpoint", fields[0], fields[1], fields[2])
    return None


def endpoint_tag(network_id: str, container_id: str, ifname: str) -> str:
    """The ifalias tag that marks a host veth as netd's: ``netd:<net12>:<ifname>:<cid>``.

    IFALIASZ is 256 bytes; the container id is cut so the tag always fits.
    """
    return Tag.for_endpoint(network_id, container_id, ifname).text


def endpoint_tag_prefix(network_id: str) -> str:
    """What every endpoint tag of ``network_id`` starts with (to list one network's veths)."""
    return f"{TAG_PREFIX}{network_id[:NET12]}:"


def bridge_tag(network_id: str) -> str:
    """The ifalias tag that marks a network's bridge as netd's: ``netd:<network id>``."""
    return Tag.for_network(network_id).text


def teardown_rank(text: str) -> int:
    """Where a link with this tag comes when removing several: endpoints' links first (deleting
    a bridge first would only detach its ports), then networks', then other kinds'."""
    tag = parse_tag(text)
    if tag is None:
        return 3
    return {"endpoint": 0, "network": 1}.get(tag.kind, 2)


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
