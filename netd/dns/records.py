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


def forwards(network: Network) -> bool:
    """Whether queries from this network may be forwarded upstream.

    Internal networks do not forward unless the ``dns_forward_internal`` option is true: an
    internal network has no route out, and forwarding would be a way to leak data through DNS.
    """
    if not network.internal:
        return True
    return network.opts.dns_forward_internal


def endpoint_key(ep: Endpoint) -> str:
    """The endpoint's key in documents and incremental updates (interface names have no /)."""
    return f"{ep.ifname}/{ep.container_id}"


def network_meta(network: Network) -> NetworkDoc:
    """The network-level part of a document: what an endpoint change cannot alter."""
    return {
        "id": network.id,
        "name": network.name.lower(),
        "forward": forwards(network),
        "dns_servers": [str(server) for server in network.opts.dns_servers],
        "subnets": [str(s.subnet) for s in network.subnets],
    }


def build_endpoint_doc(ep: Endpoint) -> dict[str, Any]:
    """The JSON-ready records of one endpoint (an item of a document's ``endpoints``)."""
    return build_network_doc_endpoints([ep])[0]


def build_network_doc(network: Network, endpoints: Iterable[Endpoint]) -> NetworkDoc:
    """The JSON-ready record document of one network (what the worker receives)."""
    ordered = sorted(endpoints, key=lambda e: (e.created, e.container_id, e.ifname))
    return {**network_meta(network), "endpoints": build_network_doc_endpoints(ordered)}


def build_network_doc_endpoints(endpoints: Iterable[Endpoint]) -> list[dict[str, Any]]:
    """Endpoint documents in the given order."""
    eps = []
    for ep in endpoints:
        names = _valid_names([ep.name, ep.hostname, *ep.aliases])
        srv = []
        for pm in ep.port_mappings:
            srv.append(
                [pm.protocol, pm.container_port, _service_name(pm.container_port, pm.protocol)]
            )
        eps.append(
            {
                "key": endpoint_key(ep),
                "cid": ep.container_id,
                "names": names,
                "addrs": [str(a.ip) for a in ep.addresses],
                "srv": srv,
                "dns": list(ep.dns_servers),
            }
        )
    return eps


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


Counts = dict[Any, int]  # value -> how many endpoints contribute it (insertion-ordered)


@dataclass
class NetTable:
    """Lookup maps of one network (all keys lower-case dotted names without trailing dot).

    Values are insertion-ordered dicts from a record's data to the number of endpoints that
    contribute it, so one endpoint is added or removed in time proportional to its own records.
    A value dict is never changed once stored (copy-on-write), so a reader iterating it is safe.
    """

    meta: NetworkDoc = field(default_factory=dict)  # the document without "endpoints"
    eps: dict[str, dict[str, Any]] = field(default_factory=dict)  # endpoint key -> its doc
    v4: dict[str, Counts] = field(default_factory=dict)
    v6: dict[str, Counts] = field(default_factory=dict)
    ptr: dict[str, Counts] = field(default_factory=dict)
    srv: dict[str, Counts] = field(default_factory=dict)  # (port, target)
    names: Counts = field(default_factory=dict)  # every owner name, incl. empty non-terminals
    subnets: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = field(default_factory=list)


@dataclass(frozen=True)
class Client:
    """What the server knows about a querying source address."""

    scope: int  # index into Tables.scopes
    forward: bool
    upstreams: tuple[str, ...]  # empty: the host's resolvers
    # Who asks, for per-client limits (all of a container's addresses are one client); not
    # part of equality, which stays "answers the same way".
    cid: str = field(default="", compare=False)


def _owners_with_ancestors(owner: str, domain: str) -> list[str]:
    out = [owner]
    # Ancestors inside the domain exist as empty non-terminals (NODATA, not NXDOMAIN; RFC 8020).
    if owner.endswith("." + domain):
        rest = owner[: -len(domain) - 1].split(".")
        out.extend(".".join(rest[i:]) + "." + domain for i in range(1, len(rest)))
    return out


def _contributions(ep: Mapping[str, Any], net: str, domain: str) -> list[tuple[str, str, Any]]:
    """(map, owner, value) items one endpoint document puts into its network's table."""
    out: list[tuple[str, str, Any]] = []
    names: list[str] = ep["names"]
    owners = [o for n in names for o in (n, f"{n}.{domain}", f"{n}.{net}")]
    for addr in ep["addrs"]:
        fam = "v6" if ":" in addr else "v4"
        out.extend((fam, owner, addr) for owner in owners)
        if names:
            out.append(("ptr", reverse_name(addr), f"{names[0]}.{domain}"))
    for owner in owners:
        out.extend(("names", o, None) for o in _owners_with_ancestors(owner, domain))
    if names:
        target = f"{names[0]}.{domain}"
        for proto, port, service in ep["srv"]:
            for label in sorted({service, str(port)} - {None}):
                for n in names:
                    for base in (n, f"{n}.{domain}"):
                        owner = f"_{label}._{proto}.{base}"
                        out.append(("srv", owner, (port, target)))
                        out.extend(
                            ("names", o, None) for o in _owners_with_ancestors(owner, domain)
                        )
    return out


def _change(t: NetTable, items: list[tuple[str, str, Any]], delta: int) -> set[str]:
    """Add (delta 1) or remove (-1) contributions; return the owner names touched."""
    touched: set[str] = set()
    for kind, owner, value in items:
        touched.add(owner)
        if kind == "names":
            n = t.names.get(owner, 0) + delta
            if n > 0:
                t.names[owner] = n
            else:
                t.names.pop(owner, None)
            continue
        table: dict[str, Counts] = getattr(t, kind)
        new = dict(table.get(owner, {}))  # copy-on-write: readers may iterate the old one
        n = new.get(value, 0) + delta
        if n > 0:
            new[value] = n
        else:
            new.pop(value, None)
        if new:
            table[owner] = new
        else:
            table.pop(owner, None)
    return touched


def build_net_table(doc: NetworkDoc, domain: str) -> NetTable:
    """Index one network document."""
    meta = {k: v for k, v in doc.items() if k != "endpoints"}
    t = NetTable(meta=meta, subnets=[ipaddress.ip_network(s) for s in doc["subnets"]])
    for ep in doc["endpoints"]:
        key = ep.get("key") or f"?/{ep['cid']}/{len(t.eps)}"
        t.eps[key] = ep
        _change(t, _contributions(ep, doc["name"], domain), 1)
    return t


class Tables:
    """All networks' tables plus the client (source address) map.

    Built whole from documents, or changed in place one endpoint at a time
    (:meth:`change_endpoints` then :meth:`refresh_clients`); callers that change a Tables
    being served keep readers from acting on a half-applied change (the answerer's sequence
    counter, the manager's lock).
    """

    def __init__(
        self,
        docs: Mapping[str, NetworkDoc],
        domain: str,
        reuse: Mapping[str, NetTable] | None = None,
    ) -> None:
        """Index ``docs``; ``reuse`` holds tables of networks whose documents did not change."""
        self.domain = domain
        reuse = reuse or {}
        self.nets = {
            nid: reuse[nid] if nid in reuse else build_net_table(doc, domain)
            for nid, doc in docs.items()
        }
        self.scopes: list[tuple[str, ...]] = []
        self._scope_ids: dict[tuple[str, ...], int] = {}
        self.clients: dict[str, Client] = {}
        # container id -> network id -> keys of its endpoints there (for one-container updates)
        self._cid_eps: dict[str, dict[str, list[str]]] = {}
        self._cid_addrs: dict[str, list[str]] = {}
        for nid, t in self.nets.items():
            for key, ep in t.eps.items():
                self._cid_eps.setdefault(ep["cid"], {}).setdefault(nid, []).append(key)
        self.refresh_clients(self._cid_eps)
        # The host view (host listener, `netd dns lookup`): every network, forwarding allowed.
        self.host_scope = self._scope(tuple(sorted(self.nets)))
        self.host_client = Client(scope=self.host_scope, forward=True, upstreams=(), cid="host")
        self._net_of: dict[str, str] = {}

    @property
    def docs(self) -> dict[str, NetworkDoc]:
        """The full documents being served (rebuilt: for start-up of a worker and tests)."""
        return {nid: {**t.meta, "endpoints": list(t.eps.values())} for nid, t in self.nets.items()}

    def replace(self, changed: Mapping[str, NetworkDoc], removed: Iterable[str]) -> Tables:
        """New tables with whole networks set or removed; the others' tables are reused."""
        gone = set(removed)
        docs = {nid: t.meta for nid, t in self.nets.items() if nid not in gone}
        docs.update(changed)
        reuse = {nid: t for nid, t in self.nets.items() if nid not in changed}
        return Tables(docs, self.domain, reuse)

    def change_endpoints(
        self, nid: str, add: Iterable[Mapping[str, Any]], delete: Iterable[str]
    ) -> tuple[set[str], set[str]]:
        """Remove endpoints by key, add (or replace) endpoint documents, in place.

        Returns (owner names touched, container ids whose client entry needs
        :meth:`refresh_clients`). Cost: the changed endpoints' records only.
        """
        t = self.nets[nid]
        net, domain = t.meta["name"], self.domain
        touched: set[str] = set()
        cids: set[str] = set()
        add = list(add)
        for key in [*delete, *(ep["key"] for ep in add)]:
            old = t.eps.pop(key, None)
            if old is None:
                continue
            touched |= _change(t, _contributions(old, net, domain), -1)
            cids.add(old["cid"])
            keys = self._cid_eps[old["cid"]][nid]
            keys.remove(key)
            if not keys:
                del self._cid_eps[old["cid"]][nid]
        for ep in add:
            t.eps[ep["key"]] = dict(ep)
            touched |= _change(t, _contributions(ep, net, domain), 1)
            cids.add(ep["cid"])
            self._cid_eps.setdefault(ep["cid"], {}).setdefault(nid, []).append(ep["key"])
        return touched, cids

    def refresh_clients(self, cids: Iterable[str]) -> None:
        """Recompute the client entries of these containers from their endpoints."""
        for cid in list(cids):
            per_net = self._cid_eps.get(cid, {})
            addrs: list[str] = []
            dns: list[str] = []
            for nid, keys in per_net.items():
                for key in keys:
                    ep = self.nets[nid].eps[key]
                    addrs.extend(str(ipaddress.ip_address(a)) for a in ep["addrs"])
                    if ep["dns"] and not dns:
                        dns = ep["dns"]
            for addr in self._cid_addrs.pop(cid, []):
                if addr not in addrs:
                    self.clients.pop(addr, None)
            if not per_net:
                self._cid_eps.pop(cid, None)
                continue
            nets = tuple(sorted(per_net))
            metas = [self.nets[nid].meta for nid in nets]
            upstreams = dns or [s for m in metas for s in m["dns_servers"]]
            client = Client(
                scope=self._scope(nets),
                forward=any(m["forward"] for m in metas),
                upstreams=tuple(dict.fromkeys(upstreams)),
                cid=cid,
            )
            self._cid_addrs[cid] = addrs
            for addr in addrs:
                self.clients[addr] = client

    def _scope(self, key: tuple[str, ...]) -> int:
        if key not in self._scope_ids:
            self._scope_ids[key] = len(self.scopes)
            self.scopes.append(key)
        return self._scope_ids[key]

    def scope_of(self, network: str | None) -> int | None:
        """Scope index for one network (by id or name), or the host scope for None."""
        if network is None:
            return self.host_scope
        for nid, t in self.nets.items():
            if network in (nid, t.meta["name"]):
                return self._scope((nid,))
        return None

    def network_of(self, address: str) -> str:
        """The id of the network whose subnet holds ``address`` (a gateway), or ``address``.

        For per-network limits: the listening address a query arrived on names its network.
        Cached; a Tables whose networks change is a new object (:meth:`replace`).
        """
        nid = self._net_of.get(address)
        if nid is None:
            nid = address
            with contextlib.suppress(ValueError):
                ip = ipaddress.ip_address(address)
                for cand, t in self.nets.items():
                    if any(ip in sub for sub in t.subnets):
                        nid = cand
                        break
            if len(self._net_of) < 4096:
                self._net_of[address] = nid
        return nid

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
        return {self.nets[nid].meta["name"] for nid in self.scopes[scope]}
