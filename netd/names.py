"""Validated names, and the deterministic names and tags netd gives kernel objects.

Anything that ends up in a kernel object name, an nft rule or a DNS record goes through a
checking function here first, so an unsafe string cannot reach the kernel. The limits are cited:
IFNAMSIZ is 16 bytes including the NUL (linux/if.h), so interface names have at most 15
characters; a DNS label has at most 63 octets (RFC 1035 §2.3.4).

Tags. Every link netd creates in the host namespace carries an ifalias tag saying which record
owns it; reconcile, recover, the link watcher and ``netd graph`` find netd's links by tag, never
by name. This module is the only place that writes or reads one (:class:`Tag`,
:func:`parse_tag`); every driver, external plugins' objects included, uses this one format. The
layouts, as the kernel holds them (kernels carry them, so a layout, once shipped, never
changes):

- ``netd:<network id>`` — a network's own link (the bridge): kind ``network``, the full id;
- ``netd:<net12>:<ifname>:<container id>`` — an endpoint's host-side link (the host veth): kind
  ``endpoint``, the first 12 characters of the network id, the interface name in the container,
  then the container id, last because it alone may be cut (IFALIASZ is 256 bytes with the NUL,
  linux/if.h) and may be long;
- ``netd:<kind>:...`` — any other link, ``<kind>`` a word from :data:`LINK_KINDS`. Each kind
  word holds a letter outside ``a-f``, so it can never be read as the start of a network id
  (those are hex, ``secrets.token_hex``):

  - ``netd:parent:<driver>:<network id>`` — the parent link netd made for one network of
    ``<driver>`` (an internal macvlan/ipvlan network's ``nm-…``);
  - ``netd:vlan:<driver>:<ifname>`` — an 802.1Q sub-interface netd made as the parent of
    ``<driver>`` networks, keyed by its name: every network naming ``IF.VID`` shares it;
  - ``netd:vxlan:<network id>`` — an overlay network's VXLAN device (``nx-<id12>``, made by
    the overlay driver; its bridge and host veths carry the ``network`` and ``endpoint`` tags
    above, as a bridge network's do);
  - ``netd:ext:<driver>:<net12>`` and ``netd:ext:<driver>:<net12>:<ifname>:<container id>`` —
    the host-side objects of an external driver plugin (a whole network's, an endpoint's),
    which the plugin sets as netd tells it (docs/plugin-contract.md), the container id last as
    in an endpoint tag.

  The driver name sits in the tag so each driver's ``inventory()`` reports only its own
  objects; a new kind is added to :data:`LINK_KINDS` with its layout here, not by inventing a
  prefix of its own.

Anything else after ``netd:`` (an empty field, two fields, a kind word with the wrong number of
fields) is not a tag of netd's: :func:`parse_tag` returns None and nothing acts on it.
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
# Kinds of links besides a network's bridge and an endpoint's veth; each word holds a non-hex
# letter (see above). ``parent``, ``vlan`` and ``ext`` carry the driver that owns the link.
LinkKind = Literal["parent", "vlan", "vxlan", "ext"]
LINK_KINDS: frozenset[str] = frozenset(get_args(LinkKind))
TagKind = Literal["network", "endpoint", LinkKind]


@dataclass(frozen=True)
class Tag:
    """The owner of a tagged link: what :func:`parse_tag` reads and :attr:`text` writes.

    ``network`` is the network id: the full id, except in ``endpoint`` and ``ext`` tags, which
    carry its first 12 characters (match with ``network_id.startswith(tag.network)``); empty in
    a ``vlan`` tag, which names no network. ``ifname`` is the interface in the container for an
    endpoint's link (``endpoint``, ``ext`` of an endpoint), the sub-interface's own name for
    ``vlan``. ``driver`` is set for the kinds a driver owns (``parent``, ``vlan``, ``ext``).
    """

    kind: TagKind
    network: str = ""
    ifname: str = ""
    container_id: str = ""
    driver: str = ""

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
    def for_link(cls, kind: Literal["vxlan"], network_id: str) -> Tag:
        """The tag of another link a network owns that no driver name qualifies (VXLAN)."""
        return cls(kind, network_id)

    @classmethod
    def for_parent(cls, driver: str, network_id: str) -> Tag:
        """The tag of the parent link netd made for one ``driver`` network (internal)."""
        return cls("parent", network_id, driver=driver)

    @classmethod
    def for_vlan_parent(cls, driver: str, ifname: str) -> Tag:
        """The tag of an 802.1Q sub-interface ``ifname`` netd made as a ``driver`` parent."""
        return cls("vlan", ifname=ifname, driver=driver)

    @classmethod
    def for_external(
        cls, driver: str, network_id: str, container_id: str = "", ifname: str = ""
    ) -> Tag:
        """The tag of an external driver's host-side object: the network's (no container),
        or an endpoint's, the container id cut so the tag fits."""
        net12 = network_id[:NET12]
        if not container_id:
            return cls("ext", net12, driver=driver)
        head = f"{driver_tag_prefix('ext', driver)}{net12}:{ifname}:"
        return cls("ext", net12, ifname, container_id[: MAX_TAG - len(head)], driver)

    @property
    def of_endpoint(self) -> bool:
        """Whether the link belongs to one endpoint (not to a whole network)."""
        return self.kind == "endpoint" or bool(self.container_id)

    @property
    def text(self) -> str:
        """The tag as the kernel holds it (the link's ifalias)."""
        if self.kind == "network":
            return f"{TAG_PREFIX}{self.network}"
        if self.kind == "endpoint":
            return f"{TAG_PREFIX}{self.network}:{self.ifname}:{self.container_id}"[:MAX_TAG]
        if self.kind == "parent":
            return f"{driver_tag_prefix('parent', self.driver)}{self.network}"
        if self.kind == "vlan":
            return f"{driver_tag_prefix('vlan', self.driver)}{self.ifname}"
        if self.kind == "ext":
            head = f"{driver_tag_prefix('ext', self.driver)}{self.network}"
            if not self.container_id:
                return head
            return f"{head}:{self.ifname}:{self.container_id}"[:MAX_TAG]
        return f"{TAG_PREFIX}{self.kind}:{self.network}"

    def __str__(self) -> str:
        return self.text


def driver_tag_prefix(kind: Literal["parent", "vlan", "ext"], driver: str) -> str:
    """What every ``kind`` tag of ``driver`` starts with (an external plugin's inventory is
    asked for the links under ``driver_tag_prefix("ext", name)``)."""
    return f"{TAG_PREFIX}{kind}:{driver}:"


def parse_tag(text: str) -> Tag | None:
    """The :class:`Tag` an ifalias holds, or None when it is not a tag of netd's."""
    if not text.startswith(TAG_PREFIX):
        return None
    rest = text[len(TAG_PREFIX) :]
    head = rest.split(":", 1)[0]
    if head in LINK_KINDS:
        return _parse_link(cast(LinkKind, head), rest.split(":"))
    fields = rest.split(":", 2)
    if not all(fields):
        return None
    if len(fields) == 1:
        return Tag("network", fields[0])
    if len(fields) == 3:
        # The container id is last and kept whole, colons included: a foreign runtime's id
        # is still told apart from its network and interface.
        return Tag("endpoint", fields[0], fields[1], fields[2])
    return None


def _parse_link(kind: LinkKind, fields: list[str]) -> Tag | None:
    """A ``netd:<kind>:...`` tag split on every colon (``fields[0]`` is ``kind``)."""
    if kind == "ext" and len(fields) >= 5:
        # An endpoint's object: the container id is last and kept whole, as in "endpoint".
        fields = [*fields[:4], ":".join(fields[4:])]
    if not all(fields):
        return None
    if kind == "vxlan":
        return Tag(kind, fields[1]) if len(fields) == 2 else None
    if len(fields) == 3:
        _, driver, key = fields
        if kind == "parent":
            return Tag.for_parent(driver, key)
        if kind == "vlan":
            return Tag.for_vlan_parent(driver, key)
        return Tag("ext", key, driver=driver)
    if kind == "ext" and len(fields) == 5:
        _, driver, net12, ifname, container_id = fields
        return Tag("ext", net12, ifname, container_id, driver)
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
    if tag.of_endpoint:
        return 0
    return 1 if tag.kind == "network" else 2


VXLAN_PREFIX = "nx-"  # an overlay network's VXLAN device


def vxlan_name(network_id: str) -> str:
    """Name of an overlay network's VXLAN device: ``nx-`` + 12 hex characters (15 chars)."""
    return VXLAN_PREFIX + network_id[:12]


def vxlan_tag(network_id: str) -> str:
    """Tag of an overlay network's VXLAN device: ``netd:vxlan:<network id>``."""
    return Tag.for_link("vxlan", network_id).text


PARENT_PREFIX = "nm-"  # a parent link netd owns for a macvlan/ipvlan network (internal)


def internal_parent_name(network_id: str) -> str:
    """Name of the parent link netd makes for an internal macvlan/ipvlan network (15 chars)."""
    return PARENT_PREFIX + network_id[:12]


def internal_parent_peer_name(network_id: str) -> str:
    """The other end of an internal parent that is a veth pair (kernels without dummy links)."""
    return "np-" + network_id[:12]


def parent_tag(driver: str, network_id: str) -> str:
    """Tag of the internal parent link of a ``driver`` (macvlan/ipvlan) network: one per
    network, ``netd:parent:<driver>:<network id>``."""
    return Tag.for_parent(driver, network_id).text


def vlan_parent_tag(driver: str, ifname: str) -> str:
    """Tag of an 802.1Q sub-interface netd made as a ``driver`` parent,
    ``netd:vlan:<driver>:<ifname>``: keyed by its name, since every network naming ``IF.VID``
    as parent shares the one link."""
    return Tag.for_vlan_parent(driver, ifname).text
