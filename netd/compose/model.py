"""The networking half of a compose project, as frozen records (what ``compose config`` shows).

Built only by :mod:`netd.compose.parse`, which validates as it builds, so every record here is
known good: addresses parse, names are safe, every service network exists. Nothing here talks
to the daemon or the kernel.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

LABEL_PROJECT = "com.docker.compose.project"
LABEL_NETWORK = "com.docker.compose.network"
LABEL_HASH = "com.docker.compose.config-hash"


@dataclass(frozen=True)
class IpamConfig:
    """One ``ipam.config`` entry."""

    subnet: str | None = None
    ip_range: str | None = None
    gateway: str | None = None
    aux_addresses: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class NetworkDef:
    """A top-level ``networks.<key>`` entry (or the implicit ``default``)."""

    key: str
    name: str  # the daemon's network name: ``name:`` or ``<project>_<key>``
    external: bool = False
    driver: str = "bridge"
    options: dict[str, str] = field(default_factory=dict)  # driver_opts, canonical keys
    internal: bool = False
    enable_ipv4: bool = True
    enable_ipv6: bool = False
    labels: dict[str, str] = field(default_factory=dict)
    ipam: tuple[IpamConfig, ...] = ()


@dataclass(frozen=True)
class Attachment:
    """A service's attachment to one network (``services.<s>.networks.<key>``)."""

    network: str  # the key in the top-level networks
    aliases: tuple[str, ...] = ()
    ipv4_address: str | None = None
    ipv6_address: str | None = None
    mac_address: str | None = None
    interface_name: str | None = None
    priority: int = 0
    gw_priority: int = 0
    link_local_ips: tuple[str, ...] = ()


@dataclass(frozen=True)
class Port:
    """One published port; ``host_port`` None means "expose only" (no ephemeral ports)."""

    container_port: int
    host_port: int | None = None
    protocol: str = "tcp"
    host_ip: str | None = None


@dataclass(frozen=True)
class Service:
    """The networking fields of one service."""

    name: str
    replicas: int = 1
    network_mode: str | None = None  # None (networks), "none", "host" or "service:<name>"
    attachments: tuple[Attachment, ...] = ()  # in attach order: first gives the default route
    container_name: str | None = None
    hostname: str | None = None
    domainname: str | None = None
    dns: tuple[str, ...] = ()
    dns_search: tuple[str, ...] = ()
    dns_opt: tuple[str, ...] = ()
    extra_hosts: tuple[tuple[str, str], ...] = ()
    ports: tuple[Port, ...] = ()
    expose: tuple[str, ...] = ()

    @property
    def shares(self) -> str | None:
        """The service whose sandbox this one uses (``network_mode: service:NAME``)."""
        mode = self.network_mode or ""
        return mode.partition(":")[2] if mode.startswith("service:") else None


@dataclass(frozen=True)
class Project:
    """A loaded compose project: its name, networks and services (networking fields only)."""

    name: str
    working_dir: str
    networks: dict[str, NetworkDef]
    services: dict[str, Service]
    warnings: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (``netd compose config --format json``)."""
        return asdict(self)

    def sandbox_name(self, service: str, n: int) -> str:
        """The network namespace of replica ``n`` (1-based): ``<project>-<service>-<n>``."""
        return f"{self.name}-{service}-{n}"
