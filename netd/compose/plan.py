"""From a :class:`Project` and the daemon's current state to API request bodies (pure).

Builds the ``POST /v1/networks`` body of each network (with a config hash label, so a changed
definition is noticed on the next ``up``), the ``connect`` bodies of each sandbox in attach
order, the checks that need the daemon's state (external networks exist, static addresses fit
and are free, a changed network has no foreign users), whether an existing sandbox already
matches, and the sandbox's resolv.conf and hosts files. No I/O: :mod:`netd.compose.apply` calls
the daemon and the kernel.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
from dataclasses import dataclass, field
from typing import Any

from .errors import ComposeError
from .model import LABEL_HASH, LABEL_PROJECT, NetworkDef, Project, Service

NETNS_DIR = "/run/netns"
MAXNS = 3  # glibc resolv.h: at most three nameservers are used


def network_body(net: NetworkDef) -> dict[str, Any]:
    """The ``POST /v1/networks`` body, labelled with a hash of itself."""
    body: dict[str, Any] = {
        "name": net.name,
        "driver": net.driver,
        "subnets": [
            {
                k: v
                for k, v in {
                    "subnet": s.subnet,
                    "gateway": s.gateway,
                    "ip_range": s.ip_range,
                    "aux_addresses": dict(s.aux_addresses),
                }.items()
                if v
            }
            for s in net.ipam
        ],
        "ipv6": net.enable_ipv6,
        "ipv4": net.enable_ipv4,
        "internal": net.internal,
        "options": dict(net.options),
        "labels": dict(net.labels),
    }
    digest = hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()[:16]
    body["labels"][LABEL_HASH] = digest
    return body


@dataclass(frozen=True)
class Sandbox:
    """One replica's network namespace and what it should be attached to."""

    name: str
    service: str
    index: int
    connects: tuple[tuple[str, dict[str, Any]], ...]  # (network name, connect body), in order
    link_local: tuple[tuple[str, tuple[str, ...]], ...] = ()  # (network name, ips)
    users: tuple[str, ...] = ()  # services sharing it (network_mode: service:NAME)

    @property
    def path(self) -> str:
        """The namespace's bind-mount path (what the daemon's ``netns`` field takes)."""
        return f"{NETNS_DIR}/{self.name}"


def sandboxes(project: Project, internal: frozenset[str] = frozenset()) -> list[Sandbox]:
    """Every sandbox the project needs (``host`` and ``service:`` services have none).

    ``internal`` names daemon networks known to be internal (external ones: the file cannot
    say); ports are published on the first network of a service that is not internal.
    Only the ``up`` targets' sandboxes when the project has targets.
    """
    out = []
    links = link_aliases(project)
    for svc in project.services.values():
        if svc.network_mode == "host" or svc.shares is not None:
            continue
        if project.targets is not None and svc.name not in project.targets:
            continue
        users = tuple(s.name for s in project.services.values() if s.shares == svc.name)
        for n in range(1, svc.replicas + 1):
            name = project.sandbox_name(svc.name, n)
            out.append(
                Sandbox(
                    name,
                    svc.name,
                    n,
                    tuple(_connects(project, svc, name, n, internal, links)),
                    tuple(
                        (project.networks[a.network].name, a.link_local_ips)
                        for a in svc.attachments
                        if a.link_local_ips
                    ),
                    users,
                )
            )
    return out


def link_aliases(project: Project) -> dict[tuple[str, str], list[str]]:
    """``links: [db:database]``: (service owning the sandbox, network key) -> extra aliases.

    docker compose scopes a link alias to the linking container; netd's DNS answers per
    network, so the alias is added to the target's endpoint on every network the two share.
    """
    out: dict[tuple[str, str], list[str]] = {}
    services = project.services

    def owner(name: str) -> Service | None:
        svc = services.get(name)
        if svc is not None and svc.shares is not None:
            svc = services.get(svc.shares)
        return svc

    for linker in services.values():
        source = owner(linker.name)
        for target, alias in linker.links:
            dest = owner(target)
            if source is None or dest is None or alias == target:
                continue
            mine = {a.network for a in source.attachments}
            for att in dest.attachments:
                if att.network in mine:
                    out.setdefault((dest.name, att.network), []).append(alias)
    return out


def _publish_on(project: Project, svc: Service, internal: frozenset[str]) -> int | None:
    """Index of the attachment that carries the ports: the first non-internal network."""
    if not any(p.host_port for p in svc.ports):
        return None
    for i, att in enumerate(svc.attachments):
        net = project.networks[att.network]
        if not net.internal and net.name not in internal:
            return i
    path = f"services.{svc.name}.ports"
    keys = ", ".join(a.network for a in svc.attachments)
    raise ComposeError(
        project.where(path),
        path,
        None,
        f"cannot be published: every network of service {svc.name!r} is internal ({keys}); "
        "attach it to a non-internal network too",
    )


def _connects(
    project: Project,
    svc: Service,
    sandbox: str,
    replica: int,
    internal: frozenset[str],
    links: dict[tuple[str, str], list[str]],
) -> list[tuple[str, dict[str, Any]]]:
    out = []
    names = [svc.container_name] if svc.container_name else []
    publish_on = _publish_on(project, svc, internal)
    for i, att in enumerate(svc.attachments):
        extra = links.get((svc.name, att.network), [])
        aliases = list(dict.fromkeys([*names, sandbox, *att.aliases, *extra]))
        body: dict[str, Any] = {
            "netns": f"{NETNS_DIR}/{sandbox}",
            "container_id": sandbox,
            "name": svc.name,
            "aliases": aliases,
            "ips": [ip for ip in (att.ipv4_address, att.ipv6_address) if ip],
            "dns_servers": list(svc.dns),
        }
        if svc.hostname:
            body["hostname"] = svc.hostname
        if att.mac_address:
            body["mac"] = att.mac_address
        if att.interface_name:
            body["ifname"] = att.interface_name
        if i == publish_on:
            body["publish"] = [
                {
                    "host_port": p.host_port_for(replica),
                    "container_port": p.container_port,
                    "protocol": p.protocol,
                    **({"host_ip": p.host_ip} if p.host_ip else {}),
                }
                for p in svc.ports
                if p.host_port
            ]
        out.append((project.networks[att.network].name, body))
    return out


@dataclass
class State:
    """What the daemon has: networks by name, each with its ``endpoints`` (inspect form)."""

    networks: dict[str, dict[str, Any]] = field(default_factory=dict)

    def endpoints_of(self, container_id: str) -> list[tuple[str, dict[str, Any]]]:
        """(network name, endpoint) for every endpoint of ``container_id``."""
        return [
            (name, ep)
            for name, net in self.networks.items()
            for ep in net.get("endpoints") or []
            if ep["container_id"] == container_id
        ]


def changed_networks(project: Project, state: State) -> list[NetworkDef]:
    """Existing, non-external project networks whose definition differs from the file's."""
    out = []
    for net in project.networks.values():
        have = state.networks.get(net.name)
        if net.external or have is None:
            continue
        want = network_body(net)["labels"][LABEL_HASH]
        if have.get("labels", {}).get(LABEL_HASH) != want:
            out.append(net)
    return out


def check_state(project: Project, state: State, plan: list[Sandbox]) -> None:
    """Everything that would make ``up`` fail half-way, checked before anything changes."""
    ours = {sb.name for sb in plan}
    for net in project.networks.values():
        have = state.networks.get(net.name)
        path = f"networks.{net.key}"
        if net.external and have is None:
            raise ComposeError(
                project.where(path),
                path,
                net.name,
                "is an external network that does not exist (create it first: netd network create)",
            )
        if not net.external and have is not None:
            owner = have.get("labels", {}).get(LABEL_PROJECT)
            if owner != project.name:
                raise ComposeError(
                    project.where(path),
                    path,
                    net.name,
                    "already exists and does not belong to project "
                    f"{project.name!r} (declare it external: true to use it)",
                )
    for net in changed_networks(project, state):
        foreign = [
            ep["container_id"]
            for ep in state.networks[net.name].get("endpoints") or []
            if ep["container_id"] not in ours
        ]
        if foreign:
            raise ComposeError(
                project.where(f"networks.{net.key}"),
                f"networks.{net.key}",
                net.name,
                "has changed but cannot be recreated: it is used by " + ", ".join(sorted(foreign)),
            )
    _check_static(project, state, plan, {n.name for n in changed_networks(project, state)})


def _subnets(project: Project, state: State, name: str, recreated: set[str]) -> list[Any]:
    have = state.networks.get(name)
    if have is not None and name not in recreated:
        return [ipaddress.ip_network(s["subnet"]) for s in have.get("subnets", [])]
    net = next(n for n in project.networks.values() if n.name == name)
    return [ipaddress.ip_network(s.subnet) for s in net.ipam if s.subnet]


def _check_static(project: Project, state: State, plan: list[Sandbox], recreated: set[str]) -> None:
    ours = {sb.name for sb in plan}
    taken: dict[tuple[str, str], str] = {}
    for name, net in state.networks.items():
        if name in recreated:
            continue
        for ep in net.get("endpoints") or []:
            if ep["container_id"] in ours:
                continue  # ours are disconnected and reconnected if they change
            for addr in ep.get("addresses", []):
                taken[(name, addr.split("/")[0])] = ep["container_id"]
    for sb in plan:
        for net_name, body in sb.connects:
            key = next(n.key for n in project.networks.values() if n.name == net_name)
            path = f"services.{sb.service}.networks.{key}"
            subnets = _subnets(project, state, net_name, recreated)
            for ip in body["ips"]:
                addr = ipaddress.ip_address(ip)
                field_ = "ipv4_address" if addr.version == 4 else "ipv6_address"
                same = [s for s in subnets if s.version == addr.version]
                if same and not any(addr in s for s in same):
                    raise ComposeError(
                        project.where(f"{path}.{field_}"),
                        f"{path}.{field_}",
                        ip,
                        f'is not in any subnet of network "{key}" '
                        f"({', '.join(str(s) for s in same)})",
                    )
                user = taken.get((net_name, str(addr)))
                if user is not None:
                    who = (
                        "replica " + user
                        if user.startswith(f"{project.name}-{sb.service}-")
                        else user
                    )
                    raise ComposeError(
                        project.where(f"{path}.{field_}"),
                        f"{path}.{field_}",
                        ip,
                        f'is already used on network "{key}" by {who}',
                    )
                taken[(net_name, str(addr))] = sb.name


def _ports(items: list[dict[str, Any]]) -> set[tuple[Any, ...]]:
    return {
        (p["host_port"], p["container_port"], p.get("protocol", "tcp"), p.get("host_ip") or None)
        for p in items
    }


def endpoint_matches(ep: dict[str, Any], body: dict[str, Any]) -> bool:
    """True when an existing endpoint already is what ``body`` would create."""
    have_ips = {a.split("/")[0] for a in ep.get("addresses", [])}
    return (
        ep.get("state") == "ready"
        and ep.get("name") == body["name"]
        and ep.get("hostname") == body.get("hostname")
        and sorted(ep.get("aliases") or []) == sorted(body["aliases"])
        and all(str(ipaddress.ip_address(ip)) in have_ips for ip in body["ips"])
        and (body.get("mac") is None or (ep.get("mac") or "").lower() == body["mac"])
        and (body.get("ifname") is None or ep.get("ifname") == body["ifname"])
        and _ports(ep.get("port_mappings") or []) == _ports(body.get("publish") or [])
    )


def sandbox_matches(sb: Sandbox, state: State) -> bool:
    """True when ``sb``'s endpoints are exactly the wanted ones (same networks, same fields)."""
    have = state.endpoints_of(sb.name)
    if len(have) != len(sb.connects):
        return False
    by_net = {name: ep for name, ep in have}
    return all(net in by_net and endpoint_matches(by_net[net], body) for net, body in sb.connects)


def render_resolv(svc: Service, answers: list[dict[str, Any]]) -> str:
    """resolv.conf: netd's DNS servers from the connect answers, then the service's settings."""
    servers: list[str] = []
    search: list[str] = list(svc.dns_search)
    for ans in answers:
        dns = ans.get("dns") or {}
        servers += dns.get("nameservers") or []
        search += dns.get("search") or []
    servers = list(dict.fromkeys([*servers, *svc.dns]))[:MAXNS]
    lines = ["# written by netd compose"]
    lines += [f"nameserver {s}" for s in servers]
    if search:
        lines.append("search " + " ".join(dict.fromkeys(search)))
    if svc.dns_opt:
        lines.append("options " + " ".join(svc.dns_opt))
    return "\n".join(lines) + "\n"


def render_hosts(
    svc: Service, sandbox: str, answers: list[dict[str, Any]], gateway: str | None
) -> str:
    """/etc/hosts: localhost, the sandbox's own addresses and names, then ``extra_hosts``."""
    lines = [
        "# written by netd compose",
        "127.0.0.1\tlocalhost",
        "::1\tlocalhost ip6-localhost ip6-loopback",
    ]
    host = svc.hostname or sandbox
    names = [f"{host}.{svc.domainname}", host] if svc.domainname else [host]
    for ans in answers:
        for addr in ans.get("addresses") or []:
            lines.append(f"{addr.split('/')[0]}\t{' '.join(names)}")
    for name, ip in svc.extra_hosts:
        if ip == "host-gateway":
            if gateway is None:
                continue
            ip = gateway
        lines.append(f"{ip}\t{name}")
    return "\n".join(lines) + "\n"
