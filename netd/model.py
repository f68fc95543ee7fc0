"""Domain records shared by every seam: networks, subnets, endpoints, port mappings, callers.

These are plain frozen dataclasses, validated before they are built (see ``netd.spec`` for
network requests and ``netd.ipam`` for addresses). They carry no I/O and no SQL: the store
serialises them with :func:`to_json`/``from_json`` helpers defined here, so an etcd store can
keep the very same documents.
"""

from __future__ import annotations

import dataclasses
import functools
import ipaddress
from dataclasses import dataclass, field
from typing import Any, Literal

from .options import NetworkOptions, stored_options

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IPInterface = ipaddress.IPv4Interface | ipaddress.IPv6Interface

Protocol_ = Literal["tcp", "udp", "sctp"]
EndpointState = Literal["creating", "ready", "deleting", "gone"]  # gone: see netd.reconcile.reap
# Who made an endpoint: a CNI runtime (subject to CNI GC) or the API/CLI/compose (never GC'd).
Origin = Literal["cni", "api", "compose"]


@dataclass(frozen=True)
class Caller:
    """Kernel-verified identity of an API caller (SO_PEERCRED)."""

    uid: int
    gid: int
    pid: int


@dataclass(frozen=True)
class Subnet:
    """One subnet of a network with its gateway, dynamic range and reserved addresses."""

    subnet: IPNetwork
    gateway: IPAddress | None
    ip_range: IPNetwork | None = None
    aux_addresses: dict[str, IPAddress] = field(default_factory=dict)

    @property
    def version(self) -> int:
        """4 or 6."""
        return self.subnet.version


@dataclass(frozen=True)
class Network:
    """A netd network: what `netd network inspect` shows and what the store keeps."""

    id: str
    name: str
    driver: str
    subnets: tuple[Subnet, ...]
    ipv6: bool = False
    internal: bool = False
    dns_enabled: bool = True
    options: dict[str, str] = field(default_factory=dict)
    labels: dict[str, str] = field(default_factory=dict)
    created: float = 0.0
    owner_uid: int = 0

    @property
    def short_id(self) -> str:
        """The 12-character id shown in tables, as Docker shows it."""
        return self.id[:12]

    @functools.cached_property
    def opts(self) -> NetworkOptions:
        """``options``, typed (:func:`netd.options.stored_options`), parsed once per record.

        The store keeps the canonical string map; the firewall, DNS and drivers read this.
        (A cached_property writes the instance ``__dict__`` directly, which a frozen dataclass
        allows; records are never mutated in place, so the cache cannot go stale.)
        """
        return stored_options(self.options)


@dataclass(frozen=True)
class PortMapping:
    """One published port: host [ip:]port → container port, one protocol."""

    host_port: int
    container_port: int
    protocol: Protocol_ = "tcp"
    host_ip: IPAddress | None = None


@dataclass(frozen=True)
class Endpoint:
    """A container's attachment to a network: one interface in one namespace."""

    network_id: str
    container_id: str
    ifname: str
    netns: str
    host_ifname: str
    addresses: tuple[IPInterface, ...]
    mac: str | None = None
    host_mac: str | None = None
    name: str | None = None
    hostname: str | None = None
    aliases: tuple[str, ...] = ()
    port_mappings: tuple[PortMapping, ...] = ()
    dns_servers: tuple[str, ...] = ()
    state: EndpointState = "creating"
    created: float = 0.0
    owner_uid: int = 0
    origin: Origin = "api"
    # The namespace's nsfs inode when plumbed (0: not recorded): a path that later leads to
    # another namespace (a reused /proc/<pid>) is never configured or torn down in its name.
    netns_inode: int = 0
    # state "gone": when the reaper found the namespace gone for good (wall clock;
    # netd.reconcile.reap).
    gone_since: float = 0.0
    # The cluster node that runs the endpoint (global networks only; "" on a local network):
    # other nodes program forwarding to it and serve its name (docs/multi-host.md).
    node: str = ""

    @property
    def key(self) -> tuple[str, str]:
        """The CNI attachment key: (container id, interface name)."""
        return (self.container_id, self.ifname)


@dataclass(frozen=True)
class SubnetRequest:
    """A subnet as asked for by a user, before IPAM fills in defaults (all fields optional)."""

    subnet: str | None = None
    gateway: str | None = None
    ip_range: str | None = None
    aux_addresses: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class NetworkSpec:
    """A network creation request, unvalidated (``netd.spec.build_network`` checks it)."""

    name: str
    driver: str = "bridge"
    subnets: tuple[SubnetRequest, ...] = ()
    ipv6: bool = False
    ipv4: bool = True
    internal: bool = False
    options: dict[str, str] = field(default_factory=dict)
    labels: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class AttachRequest:
    """Attach a namespace to a network (CNI ADD, `netd network connect`, compose)."""

    network: str
    container_id: str
    ifname: str
    netns: str
    name: str | None = None
    hostname: str | None = None
    aliases: tuple[str, ...] = ()
    static_ips: tuple[str, ...] = ()
    mac: str | None = None
    port_mappings: tuple[PortMapping, ...] = ()
    dns_servers: tuple[str, ...] = ()
    origin: Origin = "api"
    netns_inode: int = 0  # non-zero: the namespace must still be this one (rootless verification)


# --- serialisation -------------------------------------------------------------------------


def _enc(value: Any) -> Any:
    if isinstance(
        value,
        ipaddress.IPv4Address
        | ipaddress.IPv6Address
        | ipaddress.IPv4Network
        | ipaddress.IPv6Network
        | ipaddress.IPv4Interface
        | ipaddress.IPv6Interface,
    ):
        return str(value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _enc(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, tuple | list):
        return [_enc(v) for v in value]
    if isinstance(value, dict):
        return {k: _enc(v) for k, v in value.items()}
    return value


def to_json(obj: Any) -> Any:
    """A JSON-ready dict of a record (addresses as strings)."""
    return _enc(obj)


def subnet_from_json(d: dict[str, Any]) -> Subnet:
    """Inverse of ``to_json`` for :class:`Subnet`."""
    return Subnet(
        subnet=ipaddress.ip_network(d["subnet"]),
        gateway=ipaddress.ip_address(d["gateway"]) if d.get("gateway") else None,
        ip_range=ipaddress.ip_network(d["ip_range"]) if d.get("ip_range") else None,
        aux_addresses={k: ipaddress.ip_address(v) for k, v in d.get("aux_addresses", {}).items()},
    )


def network_from_json(d: dict[str, Any]) -> Network:
    """Inverse of ``to_json`` for :class:`Network`."""
    return Network(
        id=d["id"],
        name=d["name"],
        driver=d["driver"],
        subnets=tuple(subnet_from_json(s) for s in d["subnets"]),
        ipv6=d.get("ipv6", False),
        internal=d.get("internal", False),
        dns_enabled=d.get("dns_enabled", True),
        options=dict(d.get("options", {})),
        labels=dict(d.get("labels", {})),
        created=d.get("created", 0.0),
        owner_uid=d.get("owner_uid", 0),
    )


def port_from_json(d: dict[str, Any]) -> PortMapping:
    """Inverse of ``to_json`` for :class:`PortMapping`."""
    return PortMapping(
        host_port=int(d["host_port"]),
        container_port=int(d["container_port"]),
        protocol=d.get("protocol", "tcp"),
        host_ip=ipaddress.ip_address(d["host_ip"]) if d.get("host_ip") else None,
    )


def endpoint_from_json(d: dict[str, Any]) -> Endpoint:
    """Inverse of ``to_json`` for :class:`Endpoint`."""
    return Endpoint(
        network_id=d["network_id"],
        container_id=d["container_id"],
        ifname=d["ifname"],
        netns=d["netns"],
        host_ifname=d["host_ifname"],
        addresses=tuple(ipaddress.ip_interface(a) for a in d["addresses"]),
        mac=d.get("mac"),
        host_mac=d.get("host_mac"),
        name=d.get("name"),
        hostname=d.get("hostname"),
        aliases=tuple(d.get("aliases", ())),
        port_mappings=tuple(port_from_json(p) for p in d.get("port_mappings", ())),
        dns_servers=tuple(d.get("dns_servers", ())),
        state=d.get("state", "ready"),
        created=d.get("created", 0.0),
        owner_uid=d.get("owner_uid", 0),
        origin=d.get("origin", "api"),
        netns_inode=d.get("netns_inode", 0),
        gone_since=d.get("gone_since", 0.0),
        node=d.get("node", ""),
    )
