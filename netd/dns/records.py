"""DNS record tables built from networks and endpoints (pure, no I/O).

Two steps, so the privileged daemon and the unprivileged worker share one format:

1. :func:`build_network_doc` turns a :class:`~netd.model.Network` and its endpoints into a small
   JSON-ready document (validated, lower-cased names; addresses as strings). The manager sends
   these over the control socket, one per changed network.
2. :class:`Tables` indexes a set of documents for answering: per-network name, PTR and SRV maps,
   and the *client* map from a source address to the set of networks that container is attached
   to (its scope), its upstream resolvers and whether it may forward.

Names per endpoint on network N: its name, hostname and (network-scoped) aliases, each as given,
under the DNS domain (``web.dns.netd``) and in Docker's ``web.N`` form. SRV names
``_<service>._<proto>.<name>`` (service from the port's well-known name, or the port number)
point at ``<name>.<domain>`` for each published port. This module does not build messages
(:mod:`netd.dns.answer` does) and does not touch sockets.
"""

from __future__ import annotations

import contextlib
import ipaddress
import socket
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ..errors import InvalidInput
from ..model import Endpoint, Network
from ..names import check_dns_name

NetworkDoc = dict[str, Any]
OPT_DNS_SERVERS = "dns_servers"
OPT_FORWARD_INTERNAL = "dns_forward_internal"


def _service_name(port: int, proto: str) -> str | None:
    # /etc/services names (`_http._tcp.web`); unknown ports fall back to the number alone.
    with contextlib.suppress(OSError):
        return socket.getservbyport(port, proto)
    return None


def _valid_names(candidates: Iterable[str | None]) -> list[str]:
    out: list[str] = []
    for cand in candidates:
        if not cand:
            continue
        try:
            name = check_dns_name(cand)
        except InvalidInput:
            continue  # a runtime-supplied name that is not a DNS name just gets no record
        if name not in out:
            out.append(name)
    return out


def split_servers(value: str) -> list[str]:
    """The comma-separated ``dns_servers`` network option as a list (empty items dropped)."""
    return [s.strip() for s in value.split(",") if s.strip()]


def forwards(network: Network) -> bool:
    """Whether queries from this network may be forwarded upstream.

    Internal networks do not forward unless the ``dns_forward_internal`` option is true: an
    internal network has no route out, and forwarding would be a way to leak data through DNS.
    """
    if not network.internal:
        return True
    return network.options.get(OPT_FORWARD_INTERNAL, "").lower() in ("1", "true", "yes")


def build_network_doc(network: Network, endpoints: Iterable[Endpoint]) -> NetworkDoc:
    """The JSON-ready record document of one network (what the worker receives)."""
    eps = []
    for ep in sorted(endpoints, key=lambda e: (e.created, e.container_id, e.ifname)):
        names = _valid_names([ep.name, ep.hostname, *ep.aliases])
        srv = []
        for pm in ep.port_mappings:
            srv.append(
                [pm.protocol, pm.container_port, _service_name(pm.container_port, pm.protocol)]
            )
        eps.append(
            {
                "cid": ep.container_id,
                "names": names,
                "addrs": [str(a.ip) for a in ep.addresses],
                "srv": srv,
                "dns": list(ep.dns_servers),
            }
        )
    return {
        "id": network.id,
        "name": network.name.lower(),
        "forward": forwards(network),
        "dns_servers": split_servers(network.options.get(OPT_DNS_SERVERS, "")),
        "subnets": [str(s.subnet) for s in network.subnets],
        "endpoints": eps,
    }


def reverse_name(address: str) -> str:
    """The in-addr.arpa / ip6.arpa name of an address (lower case, no trailing dot)."""
    return ipaddress.ip_address(address).reverse_pointer


def parse_reverse(name: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """The address a full reverse name stands for, or None if it is not one."""
    try:
        if name.endswith(".in-addr.arpa"):
            parts = name[: -len(".in-addr.arpa")].split(".")
            if len(parts) == 4:
                return ipaddress.IPv4Address(".".join(reversed(parts)))
        elif name.endswith(".ip6.arpa"):
            nibbles = name[: -len(".ip6.arpa")].split(".")
            if len(nibbles) == 32 and all(len(n) == 1 for n in nibbles):
                return ipaddress.IPv6Address(int("".join(reversed(nibbles)), 16))
    except ValueError:
        return None
    return None


@dataclass
class NetTable:
    """Lookup maps of one network (all keys lower-case dotted names without trailing dot)."""

    v4: dict[str, list[str]] = field(default_factory=dict)
    v6: dict[str, list[str]] = field(default_factory=dict)
    ptr: dict[str, list[str]] = field(default_factory=dict)
    srv: dict[str, list[tuple[int, str]]] = field(default_factory=dict)  # (port, target)
    names: set[str] = field(default_factory=set)  # every owner name, incl. empty non-terminals
    subnets: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = field(default_factory=list)


@dataclass(frozen=True)
class Client:
    """What the server knows about a querying source address."""

    scope: int  # index into Tables.scopes
    forward: bool
    upstreams: tuple[str, ...]  # empty: the host's resolvers


def _add(table: dict[str, list[str]], key: str, value: str) -> None:
    lst = table.setdefault(key, [])
    if value not in lst:
        lst.append(value)


def _add_owner(t: NetTable, owner: str, domain: str) -> None:
    t.names.add(owner)
    # Ancestors inside the domain exist as empty non-terminals (NODATA, not NXDOMAIN; RFC 8020).
    if owner.endswith("." + domain):
        rest = owner[: -len(domain) - 1].split(".")
        for i in range(1, len(rest)):
            t.names.add(".".join(rest[i:]) + "." + domain)


def build_net_table(doc: NetworkDoc, domain: str) -> NetTable:
    """Index one network document."""
    t = NetTable(subnets=[ipaddress.ip_network(s) for s in doc["subnets"]])
    net = doc["name"]
    for ep in doc["endpoints"]:
        names: list[str] = ep["names"]
        owners = [o for n in names for o in (n, f"{n}.{domain}", f"{n}.{net}")]
        for addr in ep["addrs"]:
            fam = t.v6 if ":" in addr else t.v4
            for owner in owners:
                _add(fam, owner, addr)
            if names:
                _add(t.ptr, reverse_name(addr), f"{names[0]}.{domain}")
        for owner in owners:
            _add_owner(t, owner, domain)
        if names:
            target = f"{names[0]}.{domain}"
            for proto, port, service in ep["srv"]:
                for label in {service, str(port)} - {None}:
                    for n in names:
                        for base in (n, f"{n}.{domain}"):
                            owner = f"_{label}._{proto}.{base}"
                            lst = t.srv.setdefault(owner, [])
                            if (port, target) not in lst:
                                lst.append((port, target))
                            _add_owner(t, owner, domain)
    return t


class Tables:
    """All networks' tables plus the client (source address) map, built once per update."""

    def __init__(
        self,
        docs: Mapping[str, NetworkDoc],
        domain: str,
        reuse: Mapping[str, NetTable] | None = None,
    ) -> None:
        """Index ``docs``; ``reuse`` holds tables of networks whose documents did not change."""
        self.domain = domain
        self.docs = dict(docs)
        reuse = reuse or {}
        self.nets = {
            nid: reuse[nid] if nid in reuse else build_net_table(doc, domain)
            for nid, doc in self.docs.items()
        }
        self.scopes: list[tuple[str, ...]] = []
        self.clients: dict[str, Client] = {}
        by_cid: dict[str, list[str]] = {}
        cid_addrs: dict[str, list[str]] = {}
        cid_dns: dict[str, list[str]] = {}
        for nid, doc in self.docs.items():
            for ep in doc["endpoints"]:
                nets = by_cid.setdefault(ep["cid"], [])
                if nid not in nets:
                    nets.append(nid)
                cid_addrs.setdefault(ep["cid"], []).extend(ep["addrs"])
                if ep["dns"] and ep["cid"] not in cid_dns:
                    cid_dns[ep["cid"]] = ep["dns"]
        scope_ids: dict[tuple[str, ...], int] = {}
        for cid, nets in by_cid.items():
            key = tuple(sorted(nets))
            if key not in scope_ids:
                scope_ids[key] = len(self.scopes)
                self.scopes.append(key)
            upstreams = cid_dns.get(cid) or [
                s for nid in key for s in self.docs[nid]["dns_servers"]
            ]
            client = Client(
                scope=scope_ids[key],
                forward=any(self.docs[nid]["forward"] for nid in key),
                upstreams=tuple(dict.fromkeys(upstreams)),
            )
            for addr in cid_addrs[cid]:
                self.clients[str(ipaddress.ip_address(addr))] = client
        # The host view (host listener, `netd dns lookup`): every network, forwarding allowed.
        all_key = tuple(sorted(self.docs))
        self.host_scope = scope_ids.get(all_key, len(self.scopes))
        if self.host_scope == len(self.scopes):
            self.scopes.append(all_key)
        self.host_client = Client(scope=self.host_scope, forward=True, upstreams=())

    def scope_of(self, network: str | None) -> int | None:
        """Scope index for one network (by id or name), or the host scope for None."""
        if network is None:
            return self.host_scope
        for nid, doc in self.docs.items():
            if network in (nid, doc["name"]):
                key = (nid,)
                if key in self.scopes:
                    return self.scopes.index(key)
                self.scopes.append(key)
                return len(self.scopes) - 1
        return None

    def addresses(self, scope: int, name: str, family: int) -> list[str]:
        """Addresses of ``name`` (lower case) for family 4 or 6 across the scope's networks."""
        out: list[str] = []
        for nid in self.scopes[scope]:
            t = self.nets[nid]
            for a in (t.v4 if family == 4 else t.v6).get(name, ()):
                if a not in out:
                    out.append(a)
        return out

    def exists(self, scope: int, name: str) -> bool:
        """Whether ``name`` is an owner name (or empty non-terminal) in the scope."""
        return any(name in self.nets[nid].names for nid in self.scopes[scope])

    def ptr(self, scope: int, name: str) -> list[str]:
        """PTR targets of a reverse name across the scope's networks."""
        out: list[str] = []
        for nid in self.scopes[scope]:
            for target in self.nets[nid].ptr.get(name, ()):
                if target not in out:
                    out.append(target)
        return out

    def srv(self, scope: int, name: str) -> list[tuple[int, str]]:
        """(port, target) SRV data of ``name`` across the scope's networks."""
        out: list[tuple[int, str]] = []
        for nid in self.scopes[scope]:
            for item in self.nets[nid].srv.get(name, ()):
                if item not in out:
                    out.append(item)
        return out

    def in_local_subnet(
        self, scope: int, addr: ipaddress.IPv4Address | ipaddress.IPv6Address
    ) -> bool:
        """Whether an address lies in a subnet of one of the scope's networks."""
        return any(addr in sub for nid in self.scopes[scope] for sub in self.nets[nid].subnets)

    def network_names(self, scope: int) -> set[str]:
        """Names of the scope's networks (for Docker's ``name.network`` form)."""
        return {self.docs[nid]["name"] for nid in self.scopes[scope]}
