"""etcd v3 implementation of the state store: the engine for netd nodes that share state.

:class:`EtcdStore` implements :class:`netd.store.base.Store` over etcd's grpc-gateway (HTTP/JSON)
through the ``etcd3gw`` client (docs/store.md says why). Records are the same JSON documents
as SQLite's (:func:`netd.model.to_json`), under a prefix (default ``/netd/``)::

    <prefix>meta/created                  written once: whether opening created the store
    <prefix>networks/<id>                 network document
    <prefix>network-names/<name>          network id     (one network per name)
    <prefix>subnets/<cidr>                network id     (one network per subnet, optional)
    <prefix>vnis/<vni>                    network id     (one overlay network per VXLAN id)
    <prefix>endpoints/<net>/<cid>/<if>    endpoint document
    <prefix>allocations/<net>/<ip>        "<cid>/<if>"   (one holder per address)
    <prefix>cursors/<net>/<subnet>        last address handed out in the subnet (or block)
    <prefix>blocks/<net>/<block cidr>     node owning that IPAM block (global networks)
    <prefix>probe                         health probe's write

Every change is one etcd transaction whose compares guard what the change relies on, so the
uniqueness rules hold across every node writing to the same etcd, never by one node's memory.
Changes that depend on what they read (an endpoint replacing its old addresses) commit only if
nothing they rely on has moved (compare-and-swap on mod revisions), retrying while the deadline
allows. ``put_endpoint`` and ``delete_endpoint`` first try optimistically from what this client
last wrote and read (one round trip for a new or replaced endpoint); a lost compare returns the
current keys in the same answer, so each retry is one more round trip, never two
(:mod:`netd.store.etcd_put`). On a global network (driver "overlay") of a store given a ``node``,
a put also claims the IPAM block of each newly acquired address (docs/ipam.md, "Cluster-wide
blocks"). Orders come from etcd's revisions: a network or endpoint is listed
by the revision that created its key, which a replace keeps.

Every call is bounded: each HTTP request has ``request_timeout`` seconds, and no new request
starts after ``deadline`` seconds of the call (defaults 3 + 6 < 10 s). An unreachable etcd is a
StoreError naming etcd and the endpoint. It does not watch or cache (later work, issue 16).
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import logging
import threading
import time
from collections.abc import Callable, Generator, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import requests
from etcd3gw.client import Etcd3Client
from etcd3gw.exceptions import Etcd3Exception

from ..errors import (
    Conflict,
    InvalidInput,
    NotFound,
    StoreCorrupt,
    StoreError,
    StoreUnreachable,
)
from ..ipam.blocks import DEFAULT_BLOCK_PREFIXLEN
from ..ipam.blocks import check_block_prefixlen as _check_block_prefixlen
from ..model import Endpoint, IPAddress, Network, endpoint_from_json, network_from_json, to_json
from . import etcd_txn as t
from .etcd_blocks import block_keys as block_keys_of
from .etcd_blocks import empty_blocks
from .etcd_client import _Endpoint, _reason
from .etcd_pipeline import InFlight, Pipeline, PipelineFailed
from .etcd_put import Held, PutKeys, PutView, check_node, plan_put
from .health import HealthReport, StoreHealth
from .records import cursor_rows, endpoint_addresses

log = logging.getLogger(__name__)
R = TypeVar("R")

DEFAULT_PREFIX = "/netd/"
DEFAULT_REQUEST_TIMEOUT = 3.0  # seconds one HTTP request to etcd may take
DEFAULT_DEADLINE = 6.0  # seconds after which a call starts no new request


@dataclass
class TxnStats:
    """What this client asked of etcd: transactions sent (round trips) and lost compares."""

    transactions: int = 0
    compare_failures: int = 0
    claims: int = 0  # block keys written as new claims
    borrows: int = 0  # addresses stored in another node's block


@dataclass(frozen=True)
class _Sent:
    """One transaction of a change: what it does (for errors), its body, its deadline."""

    doing: str
    body: t.Json
    until: float


def _dump(record: Network | Endpoint) -> str:
    return json.dumps(to_json(record), sort_keys=True, separators=(",", ":"))


def _holder(container_id: str, ifname: str) -> str:
    return f"{container_id}/{ifname}"


class _NoMember(Exception):
    """No etcd member answered in time; ``reason`` says what each one did."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class EtcdStore:
    """The :class:`~netd.store.base.Store` protocol on etcd v3; thread-safe, no local state."""

    def __init__(
        self,
        endpoints: Sequence[str],
        *,
        prefix: str = DEFAULT_PREFIX,
        unique_subnets: bool = True,
        request_timeout: float = DEFAULT_REQUEST_TIMEOUT,
        deadline: float = DEFAULT_DEADLINE,
        ca_file: str | None = None,
        cert_file: str | None = None,
        key_file: str | None = None,
        node: str | None = None,
        block_prefixlen: int = DEFAULT_BLOCK_PREFIXLEN,
        tolerate_down: bool = False,
    ) -> None:
        """Connect to the etcd members ``endpoints`` (URLs); StoreError if none answers.

        ``node`` names this node in the IPAM blocks it claims; without it, puts on global
        networks claim no block (the address keys still keep addresses unique).
        ``block_prefixlen`` is the cluster's ``ipam_block_size``: every node must use the same.
        ``tolerate_down``: an etcd that does not answer at open is logged, not an error.
        """
        if not endpoints:
            raise InvalidInput("etcd_endpoints", "[]", "at least one etcd endpoint is needed")
        if not prefix.startswith("/") or not prefix.endswith("/"):
            raise InvalidInput("etcd_prefix", prefix, "must start and end with '/'")
        tls = (ca_file, cert_file, key_file)
        self._members = [_Endpoint(u, request_timeout, tls) for u in endpoints]
        self._pipeline = Pipeline(request_timeout, *tls)  # begin_put_endpoint's connections
        self._current = 0  # the member that answered last; tried first
        self.prefix = prefix
        self.unique_subnets = unique_subnets
        self.node = check_node(node)
        self.block_prefixlen = _check_block_prefixlen(block_prefixlen)
        self.stats = TxnStats()
        # What this client last wrote or read, for the optimistic first try of a change: a
        # wrong guess costs one failed compare (whose answer carries the truth), never a
        # wrong write. Network records never change after creation, only disappear.
        self._cache = threading.Lock()
        self._networks: dict[str, tuple[Network, int]] = {}  # id -> (record, mod revision)
        self._endpoints: dict[str, tuple[int, tuple[str, ...]]] = {}  # key -> (rev, addresses)
        self._owners: dict[str, str] = {}  # block key -> node
        self.deadline = deadline
        self.health = StoreHealth()
        self._lock = threading.Lock()
        self._closed = False
        # Whether this open created the store: the marker key is written once, by whoever
        # opens the prefix first, in a transaction, so two nodes opening at once agree.
        # A cluster node may start while etcd does not answer (it serves its local copy,
        # netd.cluster.store): opening then only says so; every later call is bounded as usual.
        try:
            answer = self._txn(
                "opening the store",
                t.txn([t.absent(self._k("meta/created"))], [t.put(self._k("meta/created"), "1")]),
                write=True,
            )
        except StoreUnreachable as e:
            # A refused TLS handshake is a configuration error, not an outage: never tolerated.
            if not tolerate_down or "TLS:" in e.message:
                raise
            log.warning("state store: etcd at %s does not answer yet (%s)", ", ".join(endpoints), e)
            self.fresh = False
            return
        self.fresh = t.succeeded(answer)
        log.info("state store: etcd at %s, prefix %s", ", ".join(endpoints), prefix)

    @classmethod
    def under_prefix_of(cls, endpoints: Sequence[str], name: str, **kw: Any) -> EtcdStore:
        """A store whose prefix is derived from ``name`` (tests: one prefix per directory)."""
        digest = hashlib.sha256(name.encode()).hexdigest()[:16]
        return cls(endpoints, prefix=f"/netd-test/{digest}/", **kw)

    # --- keys -------------------------------------------------------------------------------

    def _k(self, rest: str) -> str:
        return self.prefix + rest

    def _net(self, network_id: str) -> str:
        return self._k(f"networks/{network_id}")

    def _endpoints_of(self, network_id: str) -> str:
        return self._k(f"endpoints/{network_id}/")

    def _endpoint(self, network_id: str, cid: str, ifname: str) -> str:
        return self._k(f"endpoints/{network_id}/{cid}/{ifname}")

    def _address(self, network_id: str, address: str) -> str:
        return self._k(f"allocations/{network_id}/{address}")

    def _cursors_of(self, network_id: str) -> str:
        return self._k(f"cursors/{network_id}/")

    def _allocations_of(self, network_id: str) -> str:
        return self._k(f"allocations/{network_id}/")

    def _blocks_of(self, network_id: str) -> str:
        return self._k(f"blocks/{network_id}/")

    # --- transport --------------------------------------------------------------------------

    def _txn(self, doing: str, body: t.Json, *, write: bool, until: float | None = None) -> t.Json:
        """Send one transaction, trying each member in turn until ``until`` (monotonic)."""
        try:
            answer: t.Json = self._first_answer(
                doing, lambda client: dict(client.transaction(body)), until
            )
        except _NoMember as e:
            if write:
                self.health.failed(f"etcd {e.reason}")
            raise StoreUnreachable(
                f"etcd unreachable while {doing} ({e.reason}); if this was a change, it may or "
                "may not have been applied"
            ) from None
        self._count(body, answer, write=write)
        return answer

    def _count(self, body: t.Json, answer: t.Json, *, write: bool) -> None:
        """Account for one answered transaction (stats, health)."""
        with self._cache:
            self.stats.transactions += 1
            if write and body["compare"] and not t.succeeded(answer):
                self.stats.compare_failures += 1
        if write:
            self.health.succeeded()

    def _first_answer(self, doing: str, fn: Callable[[Etcd3Client], R], until: float | None) -> R:
        """``fn(client)`` on each member in turn, from the one that answered last, until one
        answers or ``until`` (monotonic; default: the deadline from now) has passed."""
        if self._closed:
            raise StoreError(f"{doing}: the etcd state store is closed")
        until = time.monotonic() + self.deadline if until is None else until
        failures: list[str] = []
        start = self._current
        for i in range(len(self._members)):
            if failures and time.monotonic() >= until:
                break
            index = (start + i) % len(self._members)
            member = self._members[index]
            try:
                result = fn(member.client)
            except (Etcd3Exception, requests.RequestException) as e:
                failures.append(f"{member.url}: {_reason(e)}")
                continue
            self._current = index
            return result
        raise _NoMember("; ".join(failures))

    # --- for the cluster layer (netd.cluster): raw reads, guarded writes, leases -------------

    def key(self, rest: str) -> str:
        """The full etcd key of ``rest`` under this store's prefix."""
        return self._k(rest)

    def read(self, doing: str, *ops: t.Json) -> tuple[int, list[list[t.Entry]]]:
        """Several reads at one revision, and that revision."""
        answer = self._txn(doing, t.txn([], list(ops)), write=False)
        return t.revision(answer), t.ranges(answer)

    def commit(self, doing: str, compare: list[t.Json], ops: list[t.Json]) -> bool:
        """One guarded transaction; whether its compares held (and so it was applied)."""
        return t.succeeded(self._txn(doing, t.txn(compare, ops), write=True))

    def call(self, doing: str, fn: Callable[[Etcd3Client], R]) -> R:
        """``fn(client)`` on the first member that answers (leases, watches), bounded like
        every other call; StoreUnreachable naming etcd when none does."""
        try:
            return self._first_answer(doing, fn, None)
        except _NoMember as e:
            raise StoreUnreachable(f"etcd unreachable while {doing} ({e.reason})") from None

    def load_network(self, entry: t.Entry) -> Network:
        """A network document as read (StoreCorrupt naming the key if unreadable)."""
        return self._load_network(entry)

    def load_endpoint(self, entry: t.Entry) -> Endpoint:
        """An endpoint document as read (StoreCorrupt naming the key if unreadable)."""
        return self._load_endpoint(entry)

    def _load_network(self, entry: t.Entry) -> Network:
        try:
            return network_from_json(json.loads(entry.value))
        except (ValueError, KeyError, TypeError) as e:
            raise StoreCorrupt(f"etcd key {entry.key}: unreadable network document: {e!r}") from e

    def _load_endpoint(self, entry: t.Entry) -> Endpoint:
        try:
            return endpoint_from_json(json.loads(entry.value))
        except (ValueError, KeyError, TypeError) as e:
            raise StoreCorrupt(f"etcd key {entry.key}: unreadable endpoint document: {e!r}") from e

    def _read(self, doing: str, *ops: t.Json) -> list[list[t.Entry]]:
        """Several reads at one revision (a transaction with no compare)."""
        return t.ranges(self._txn(doing, t.txn([], list(ops)), write=False))

    # --- networks ---------------------------------------------------------------------------

    def list_networks(self) -> list[Network]:
        """All networks, ordered by creation time, then by the revision that stored them."""
        (found,) = self._read("listing networks", t.get_under(self._k("networks/")))
        nets = [(self._load_network(e), e) for e in found]
        with self._cache:
            for net, e in nets:
                self._networks[net.id] = (net, e.mod_revision)
        ordered = sorted(nets, key=lambda p: (p[0].created, p[1].create_revision))
        return [n for n, _ in ordered]

    def create_network(self, network: Network) -> None:
        """Add a network if its id, name (and subnets) are free, in one transaction."""
        doing = f'creating network "{network.name}" ({network.id})'
        guarded: list[tuple[str, str, str]] = [  # (key, field, value)
            (self._net(network.id), "id", network.id),
            (self._k(f"network-names/{network.name}"), "name", network.name),
        ]
        if self.unique_subnets:
            for s in network.subnets:
                guarded.append((self._k(f"subnets/{s.subnet}"), "subnet", str(s.subnet)))
        if network.options.get("vni"):  # overlay: one network per VXLAN id in the cluster
            vni = network.options["vni"]
            guarded.append((self._k(f"vnis/{vni}"), "options.vni", vni))
        values = [_dump(network), network.id, *([network.id] * (len(guarded) - 2))]
        answer = self._txn(
            doing,
            t.txn(
                [t.absent(k) for k, _, _ in guarded],
                [t.put(k, v) for (k, _, _), v in zip(guarded, values, strict=True)],
                [t.get(k) for k, _, _ in guarded],
            ),
            write=True,
        )
        if t.succeeded(answer):
            with self._cache:
                self._networks[network.id] = (network, t.revision(answer))
            return
        for (_, field, value), found in zip(guarded, t.ranges(answer), strict=True):
            if found:
                holder = found[0].value if field != "id" else network.id
                raise Conflict(
                    f"{doing}: {field} {value} is already used by network {holder}",
                    field=field,
                    value=value,
                )
        raise StoreError(f"{doing}: etcd refused the transaction but nothing conflicts")

    def delete_network(self, network_id: str) -> None:
        """Remove a network and its cursors, unless endpoints exist; one transaction."""
        doing = f"deleting network {network_id}"
        until = time.monotonic() + self.deadline
        while True:
            found, attached = self._read(
                doing, t.get(self._net(network_id)), t.get_under(self._endpoints_of(network_id))
            )
            if not found:
                raise NotFound(f"{doing}: no such network", field="network_id", value=network_id)
            if attached:
                shown = ", ".join(e.key.rsplit("/", 2)[-2] + "/" + e.key.rsplit("/", 1)[-1]
                                  for e in attached[:5])  # fmt: skip
                more = f" and {len(attached) - 5} more" if len(attached) > 5 else ""
                raise Conflict(
                    f"{doing}: {len(attached)} endpoint(s) still attached: {shown}{more}",
                    field="network_id",
                    value=network_id,
                )
            network = self._load_network(found[0])
            ops = [
                t.delete(self._net(network_id)),
                t.delete(self._k(f"network-names/{network.name}")),
                t.delete_under(self._cursors_of(network_id)),
                t.delete_under(self._blocks_of(network_id)),
            ]
            if self.unique_subnets:
                ops += [t.delete(self._k(f"subnets/{s.subnet}")) for s in network.subnets]
            if network.options.get("vni"):
                ops.append(t.delete(self._k(f"vnis/{network.options['vni']}")))
            # The compares make "no endpoint" and the delete one step: an endpoint put racing
            # with this either lands first (and this fails and re-reads) or finds no network.
            guard = [
                t.unchanged(self._net(network_id), found[0].mod_revision),
                t.none_under(self._endpoints_of(network_id)),
            ]
            answer = self._txn(doing, t.txn(guard, ops), write=True, until=until)
            if t.succeeded(answer):
                self._forget_network(network_id)
                return
            self._check_deadline(doing, until)

    def _forget_network(self, network_id: str) -> None:
        """Drop what this client remembers of a network that is gone."""
        endpoints, blocks = self._endpoints_of(network_id), self._blocks_of(network_id)
        with self._cache:
            self._networks.pop(network_id, None)
            for key in [k for k in self._endpoints if k.startswith(endpoints)]:
                del self._endpoints[key]
            for key in [k for k in self._owners if k.startswith(blocks)]:
                del self._owners[key]

    def _network(self, network_id: str, doing: str, until: float) -> tuple[Network, int]:
        """The network record and its mod revision: remembered, else read; NotFound."""
        with self._cache:
            known = self._networks.get(network_id)
        if known is not None:
            return known
        # The blocks come along (one range, empty for a local network), so that a first put
        # guesses its block's owner right and stays at two round trips.
        found, blocks = self._read_until(
            doing, until, t.get(self._net(network_id)), t.get_under(self._blocks_of(network_id))
        )
        if not found:
            raise NotFound(f"{doing}: no such network", field="network_id", value=network_id)
        known = (self._load_network(found[0]), found[0].mod_revision)
        with self._cache:
            self._networks[network_id] = known
            self._owners.update((e.key, e.value) for e in blocks)
        return known

    def _read_until(self, doing: str, until: float, *ops: t.Json) -> list[list[t.Entry]]:
        return t.ranges(self._txn(doing, t.txn([], list(ops)), write=False, until=until))

    # --- endpoints --------------------------------------------------------------------------

    def list_endpoints(self, network_id: str | None = None) -> list[Endpoint]:
        """Endpoints of one network (or all), in the order they were first stored."""
        where = self._k("endpoints/") if network_id is None else self._endpoints_of(network_id)
        doing = "listing endpoints" + ("" if network_id is None else f" of {network_id}")
        (found,) = self._read(doing, t.get_under(where))
        return [self._load_endpoint(e) for e in sorted(found, key=lambda e: e.create_revision)]

    def put_endpoint(
        self,
        endpoint: Endpoint,
        cursors: dict[str, IPAddress],
        *,
        claims: Iterable[str] = (),
    ) -> None:
        """Insert or replace an endpoint, exactly its address keys, and the given cursors.

        Commits only if the network still exists and no address belongs to another endpoint
        (Conflict naming the holder); nothing changes on any failure. On a global network it
        also claims the block of each newly acquired address, or checks that the block is this
        node's; ``claims`` (block CIDRs, ``BlockAllocator.claims``) are blocks the caller
        expects to win: if another node owns one, Conflict (field ``block``), so the caller
        refreshes its view and picks again, where otherwise the address would be a borrow.
        """
        steps = self._put_steps(endpoint, cursors, claims)
        sent = next(steps)
        while True:
            answer = self._txn(sent.doing, sent.body, write=True, until=sent.until)
            try:
                sent = steps.send(answer)
            except StopIteration:
                return

    def begin_put_endpoint(self, endpoint: Endpoint) -> Callable[[], None]:
        """Send :meth:`put_endpoint`'s first transaction (no cursors, no claims) now and
        return the call that finishes it: reads the answer, then goes on as put_endpoint
        would (retries of a lost compare, errors). Between the two the caller runs other
        work in the same process without this request's Python work competing with it
        (:mod:`netd.store.etcd_pipeline`). A pipelined transaction that gets no answer is
        sent again the usual way at finish."""
        if self._closed:
            raise StoreError("putting an endpoint: the etcd state store is closed")
        steps = self._put_steps(endpoint, {}, ())
        first = next(steps)
        member = self._members[self._current]
        path = member.client.get_url("/kv/txn")[len(member.client.base_url) :]
        try:
            flight: InFlight | None = self._pipeline.send(member.url, path, json.dumps(first.body))
        except PipelineFailed as e:
            log.debug("pipelined etcd write not sent (%s): sent at finish", e)
            flight = None

        def finish() -> None:
            sent = first
            answer: t.Json | None = None
            if flight is not None:
                try:
                    answer = flight.answer()
                except PipelineFailed as e:
                    log.debug("pipelined etcd write unanswered (%s): sending it again", e)
                else:
                    self._count(sent.body, answer, write=True)
            while True:
                if answer is None:
                    answer = self._txn(sent.doing, sent.body, write=True, until=sent.until)
                try:
                    sent = steps.send(answer)
                except StopIteration:
                    return
                answer = None

        return finish

    def _put_steps(
        self, endpoint: Endpoint, cursors: dict[str, IPAddress], claims: Iterable[str]
    ) -> Generator[_Sent, t.Json, None]:
        """put_endpoint as a sequence of transactions: yields each one to send, is sent etcd's
        answer, returns when one committed (raises what put_endpoint raises)."""
        addresses = endpoint_addresses(endpoint)
        rows = cursor_rows(cursors)
        net_id, cid, ifname = endpoint.network_id, endpoint.container_id, endpoint.ifname
        doing = f"putting endpoint {cid}/{ifname} on network {net_id}"
        me = _holder(cid, ifname)
        key = self._endpoint(net_id, cid, ifname)
        doc = _dump(endpoint)
        until = time.monotonic() + self.deadline
        network, net_rev = self._network(net_id, doing, until)
        asked = list(claims)
        try:
            wanted = frozenset(
                self._blocks_of(net_id) + str(ipaddress.ip_network(c)) for c in asked
            )
        except (ValueError, TypeError) as e:
            raise InvalidInput("claims", asked, f"not block CIDRs: {e}") from e
        if wanted and self.node is None:
            raise InvalidInput("claims", sorted(wanted), "this store has no node name")
        keys = PutKeys(
            network=self._net(net_id),
            endpoint=key,
            allocations=self._allocations_of(net_id),
            blocks=(
                block_keys_of(network, addresses, self.block_prefixlen, self._blocks_of(net_id))
                if self.node is not None
                else {}
            ),
        )
        block_keys = list(dict.fromkeys(keys.blocks.values()))
        reads = [t.get(keys.network), t.get(key)]
        reads += [t.get(keys.address(a)) for a in addresses]
        reads += [t.get(b) for b in block_keys]
        cursor_ops = [t.put(self._cursors_of(net_id) + s, a) for s, a in rows]
        view = self._guess(net_rev, key, me, addresses, block_keys)
        # A block the caller expects to claim is guessed free: only etcd's answer, never this
        # client's memory, may refuse the claim.
        view.owners.update({b: None for b in wanted if b in view.owners})
        while True:
            plan = plan_put(
                keys=keys,
                view=view,
                addresses=addresses,
                doc=doc,
                holder=me,
                node=self.node,
                extra_ops=cursor_ops,
                must_claim=wanted,
                doing=doing,
                network_name=network.name,
            )
            answer = yield _Sent(doing, t.txn(plan.guard, plan.ops, reads), until)
            if t.succeeded(answer):
                with self._cache:
                    self._endpoints[key] = (t.revision(answer), tuple(addresses))
                    for b in plan.claimed:
                        if view.owners.get(b) is None:
                            self.stats.claims += 1
                        self._owners[b] = self.node or ""
                    self.stats.borrows += len(plan.borrowed)
                return
            self._check_deadline(doing, until)
            view = self._seen(net_id, doing, key, addresses, block_keys, t.ranges(answer))

    def _guess(
        self,
        net_rev: int,
        key: str,
        holder: str,
        addresses: Sequence[str],
        block_keys: Sequence[str],
    ) -> PutView:
        """The keys of a put as this client last wrote or read them: absent if unknown."""
        with self._cache:
            old = self._endpoints.get(key)
            owners = {b: self._owners.get(b) for b in block_keys}
        held: dict[str, Held | None] = {a: None for a in addresses}
        if old is not None:  # its address keys were written in the same transaction
            for a in old[1]:
                if a in held:
                    held[a] = Held(holder, old[0])
        return PutView(net_rev, old, held, owners)

    def _seen(
        self,
        net_id: str,
        doing: str,
        key: str,
        addresses: Sequence[str],
        block_keys: Sequence[str],
        found: list[list[t.Entry]],
    ) -> PutView:
        """The keys of a put as the failure branch read them (and remember them)."""
        network, old, *rest = found
        held_found, owners_found = rest[: len(addresses)], rest[len(addresses) :]
        if not network:
            self._forget_network(net_id)
            raise NotFound(f"{doing}: no such network", field="network_id", value=net_id)
        old_view: tuple[int, tuple[str, ...]] | None = None
        if old:
            was = self._load_endpoint(old[0])
            old_view = (old[0].mod_revision, tuple(str(i.ip) for i in was.addresses))
        held = {
            a: Held(e[0].value, e[0].mod_revision) if e else None
            for a, e in zip(addresses, held_found, strict=True)
        }
        owners = {
            b: e[0].value if e else None for b, e in zip(block_keys, owners_found, strict=True)
        }
        with self._cache:
            self._networks[net_id] = (self._load_network(network[0]), network[0].mod_revision)
            if old_view is None:
                self._endpoints.pop(key, None)
            else:
                self._endpoints[key] = old_view
            for b, who in owners.items():
                if who is None:
                    self._owners.pop(b, None)
                else:
                    self._owners[b] = who
        return PutView(network[0].mod_revision, old_view, held, owners)

    def delete_endpoint(self, network_id: str, container_id: str, ifname: str) -> bool:
        """Remove an endpoint and release its addresses; False if it did not exist.

        Tries first from what this client last wrote (one round trip); a lost compare reads the
        endpoint in the same answer.
        """
        doing = f"deleting endpoint {container_id}/{ifname} of network {network_id}"
        key = self._endpoint(network_id, container_id, ifname)
        until = time.monotonic() + self.deadline
        with self._cache:
            known = self._endpoints.get(key)
        if known is None:
            (old,) = self._read_until(doing, until, t.get(key))
            if not old:
                return False
            was = self._load_endpoint(old[0])
            known = (old[0].mod_revision, tuple(str(i.ip) for i in was.addresses))
        while True:
            rev, addresses = known
            ops = [t.delete(key)]
            ops += [t.delete(self._address(network_id, a)) for a in addresses]
            guard = [t.unchanged(key, rev)]
            answer = self._txn(doing, t.txn(guard, ops, [t.get(key)]), write=True, until=until)
            if t.succeeded(answer):
                with self._cache:
                    self._endpoints.pop(key, None)
                return True
            (old,) = t.ranges(answer)
            if not old:
                with self._cache:
                    self._endpoints.pop(key, None)
                return False
            self._check_deadline(doing, until)
            was = self._load_endpoint(old[0])
            known = (old[0].mod_revision, tuple(str(i.ip) for i in was.addresses))

    # --- IPAM blocks ------------------------------------------------------------------------

    def list_blocks(self, network_id: str) -> dict[str, str]:
        """The claimed IPAM blocks of a network: block CIDR -> owning node."""
        where = self._blocks_of(network_id)
        doing = f"listing the IPAM blocks of network {network_id}"
        (found,) = self._read(doing, t.get_under(where))
        with self._cache:
            for e in found:
                self._owners[e.key] = e.value
        return {e.key[len(where) :]: e.value for e in found}

    def list_allocations(self, network_id: str) -> dict[str, str]:
        """The held addresses of a network: address -> "<container id>/<ifname>"."""
        where = self._allocations_of(network_id)
        (found,) = self._read(f"listing the addresses of network {network_id}", t.get_under(where))
        return {e.key[len(where) :]: e.value for e in found}

    def release_blocks(self, node: str, network_id: str | None = None) -> list[tuple[str, str]]:
        """Delete ``node``'s blocks (of one network, or all) that hold no allocation.

        For ``netd node rm``: run after the node's endpoints are gone; a block still holding
        an address (another node's borrow, an endpoint not yet removed) stays. One
        transaction guarded by each block's revision: a put into the block meanwhile (which
        rewrites it) makes it fail and re-read. Returns the (network id, block CIDR) released.
        """
        doing = f"releasing the IPAM blocks of node {node!r}"
        blocks_at = self._k("blocks/") if network_id is None else self._blocks_of(network_id)
        allocs_at = (
            self._k("allocations/") if network_id is None else self._allocations_of(network_id)
        )
        until = time.monotonic() + self.deadline
        while True:
            blocks, allocs = self._read_until(
                doing, until, t.get_under(blocks_at), t.get_under(allocs_at)
            )
            root = self._k("blocks/"), self._k("allocations/")
            free = empty_blocks(node, blocks, allocs, *root)
            if not free:
                return []
            guard = [t.unchanged(e.key, e.mod_revision) for e, _, _ in free]
            ops = [t.delete(e.key) for e, _, _ in free]
            answer = self._txn(doing, t.txn(guard, ops), write=True, until=until)
            if t.succeeded(answer):
                with self._cache:
                    for e, _, _ in free:
                        self._owners.pop(e.key, None)
                return [(net, cidr) for _, net, cidr in free]
            self._check_deadline(doing, until)

    def get_cursors(self, network_id: str) -> dict[str, IPAddress]:
        """The IPAM cursors of a network (subnet string → last address handed out)."""
        where = self._cursors_of(network_id)
        (found,) = self._read(
            f"reading the IPAM cursors of network {network_id}", t.get_under(where)
        )
        out: dict[str, IPAddress] = {}
        for e in sorted(found, key=lambda e: e.key):
            try:
                out[e.key[len(where) :]] = ipaddress.ip_address(e.value)
            except ValueError as err:
                raise StoreCorrupt(f"etcd key {e.key}: not an address: {e.value!r}") from err
        return out

    def _check_deadline(self, doing: str, until: float) -> None:
        # Lost a compare-and-swap to another writer: re-read and try again, within the bound.
        if time.monotonic() >= until:
            raise StoreUnreachable(
                f"{doing}: etcd kept changing underneath (other writers); gave up after "
                f"{self.deadline:g} s"
            )

    # --- lifetime ---------------------------------------------------------------------------

    def probe(self) -> HealthReport:
        """Whether etcd takes a write now: write the probe key and read it back, bounded."""
        stamp = f"{time.time():.6f}"
        try:
            answer = self._txn(
                "probing whether etcd can write",
                t.txn([], [t.put(self._k("probe"), stamp), t.get(self._k("probe"))]),
                write=True,
            )
        except StoreError:
            return self.health.report()
        (read,) = t.ranges(answer)
        if not read or read[0].value != stamp:
            self.health.failed("etcd: the probe's write did not read back")
        return self.health.report()

    def close(self) -> None:
        """Close the HTTP sessions; later calls raise StoreError."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._pipeline.close()
            for member in self._members:
                member.client.session.close()
