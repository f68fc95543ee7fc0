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
    """One published port; ``host_port`` None means "expose only" (no ephemeral ports).

    ``host_port_end`` is set for a host range with one container port (``8000-8002:80``):
    replica n publishes ``host_port + n - 1``, as docker compose gives each replica its own.
    """

    container_port: int
    host_port: int | None = None
    protocol: str = "tcp"
    host_ip: str | None = None
    host_port_end: int | None = None

    def host_port_for(self, replica: int) -> int | None:
        """The host port replica ``replica`` (1-based) publishes."""
        if self.host_port is None or self.host_port_end is None:
            return self.host_port
        return self.host_port + replica - 1


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
    profiles: tuple[str, ...] = ()
    depends_on: tuple[tuple[str, bool], ...] = ()  # (service, required)
    links: tuple[tuple[str, str], ...] = ()  # (service, alias) from ``links: [svc:alias]``

    @property
    def shares(self) -> str | None:
        """The service whose sandbox this one uses (``network_mode: service:NAME``)."""
        mode = self.network_mode or ""
        return mode.partition(":")[2] if mode.startswith("service:") else None


@dataclass(frozen=True)
class Project:
    """A loaded compose project: its name, networks and services (networking fields only).

    ``services`` holds the enabled services (profiles applied); ``defined`` every service name
    of the file, so a disabled one is not taken for an orphan. ``targets`` is what ``up``
    touches: None for every enabled service, else the named ones and their dependencies.
    ``positions`` maps key paths (``services.web.ports``) to where they were written, so an
    error from the daemon can point at the file's line.
    """

    name: str
    working_dir: str
    networks: dict[str, NetworkDef]
    services: dict[str, Service]
    warnings: tuple[str, ...] = ()
    defined: tuple[str, ...] = ()
    targets: tuple[str, ...] | None = None
    positions: dict[str, tuple[str, int]] = field(default_factory=dict, compare=False)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (``netd compose config --format json``)."""
        out = asdict(self)
        del out["positions"]
        return out

    def where(self, path: str) -> tuple[str, int] | None:
        """Where ``path`` or its nearest recorded parent was written in the files."""
        while path:
            if path in self.positions:
                return self.positions[path]
            cut = max(path.rfind("."), path.rfind("["))
            path = path[:cut] if cut > 0 else ""
        return None

    def sandbox_name(self, service: str, n: int) -> str:
        """The network namespace of replica ``n`` (1-based): ``<project>-<service>-<n>``."""
        return f"{self.name}-{service}-{n}"
