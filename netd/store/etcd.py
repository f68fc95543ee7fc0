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
    <prefix>cursors/<net>/<subnet>        last address handed out in the subnet
    <prefix>probe                         health probe's write

Every change is one etcd transaction whose compares guard what the change relies on, so the
uniqueness rules hold across every node writing to the same etcd, never by one node's memory.
Changes that depend on what they read (an endpoint replacing its old addresses) read first and
then commit only if nothing they read has moved (compare-and-swap on mod revisions), retrying
while the deadline allows. Orders come from etcd's revisions: a network or endpoint is listed
by the revision that created its key, which a replace keeps.

Every call is bounded: each HTTP request has ``request_timeout`` seconds, and no new request
starts after ``deadline`` seconds of the call (defaults 3 + 6 < 10 s). An unreachable etcd is a
StoreError naming etcd and the endpoint. It does not watch or cache (later work, issue 16).
"""

from __future__ import annotations

import hashlib
import http.client
import ipaddress
import json
import logging
import ssl
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, TypeVar
from urllib.parse import urlsplit

import requests
from etcd3gw.client import Etcd3Client
from etcd3gw.exceptions import ConnectionTimeoutError, Etcd3Exception

from ..errors import (
    Conflict,
    InvalidInput,
    NotFound,
    StoreCorrupt,
    StoreError,
    StoreUnreachable,
)
from ..model import Endpoint, IPAddress, Network, endpoint_from_json, network_from_json, to_json
from . import etcd_txn as t
from .health import HealthReport, StoreHealth
from .records import cursor_rows, endpoint_addresses

log = logging.getLogger(__name__)
R = TypeVar("R")

DEFAULT_PREFIX = "/netd/"
DEFAULT_REQUEST_TIMEOUT = 3.0  # seconds one HTTP request to etcd may take
DEFAULT_DEADLINE = 6.0  # seconds after which a call starts no new request


def _dump(record: Network | Endpoint) -> str:
    return json.dumps(to_json(record), sort_keys=True, separators=(",", ":"))


def _holder(container_id: str, ifname: str) -> str:
    return f"{container_id}/{ifname}"


_Tls = tuple[str | None, str | None, str | None]  # CA file, client certificate, client key


class _Endpoint:
    """One etcd member as the client sees it: its URL and a gateway client bound to it."""

    def __init__(
        self, url: str, timeout: float, tls: tuple[str | None, str | None, str | None]
    ) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise InvalidInput("etcd_endpoints", url, "must be http://HOST:PORT or https://...")
        self.url = url
        fields = ("etcd_ca_file", "etcd_cert_file", "etcd_key_file")
        for field, path in zip(fields, tls, strict=True):
            if path is not None:
                _check_readable(field, path)
        if (tls[1] is None) != (tls[2] is None):
            raise InvalidInput(
                "etcd_cert_file" if tls[1] is None else "etcd_key_file",
                "(unset)",
                "a client certificate and its key go together: set both or neither",
            )
        session = _Session()
        if tls[0] is not None:
            session.verify = tls[0]
        if tls[1] is not None and tls[2] is not None:
            session.cert = (tls[1], tls[2])
        self.client = Etcd3Client(
            host=parts.hostname,
            port=parts.port or 2379,
            protocol=parts.scheme,
            timeout=timeout,
            api_path="/v3/",  # etcd >= 3.4; saves the discovery request
            session=session,
        )


def _check_readable(field: str, path: str) -> None:
    """InvalidInput naming ``field`` unless ``path`` is a file this process can read (requests
    would otherwise fail later, on the first call, with an error outside its own tree)."""
    try:
        with open(path, "rb"):
            pass
    except OSError as e:
        raise InvalidInput(field, path, f"cannot be read: {e.strerror or e}") from e


class _Session(requests.Session):
    """A requests session whose own CA file (etcd_ca_file) wins over the environment's.

    Plain requests lets REQUESTS_CA_BUNDLE or CURL_CA_BUNDLE replace ``session.verify``
    (psf/requests#3829), so with either set, as on many Debian hosts, etcd's private CA was
    silently ignored and every https call failed certificate verification.
    """

    def merge_environment_settings(
        self, url: str, proxies: Any, stream: Any, verify: Any, cert: Any
    ) -> dict[str, Any]:
        if verify is None:
            verify = self.verify
        merged: dict[str, Any] = super().merge_environment_settings(
            url, proxies, stream, verify, cert
        )
        return merged


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
    ) -> None:
        """Connect to the etcd members ``endpoints`` (URLs); StoreError if none answers."""
        if not endpoints:
            raise InvalidInput("etcd_endpoints", "[]", "at least one etcd endpoint is needed")
        if not prefix.startswith("/") or not prefix.endswith("/"):
            raise InvalidInput("etcd_prefix", prefix, "must start and end with '/'")
        tls = (ca_file, cert_file, key_file)
        self._members = [_Endpoint(u, request_timeout, tls) for u in endpoints]
        self._current = 0  # the member that answered last; tried first
        self.prefix = prefix
        self.unique_subnets = unique_subnets
        self.deadline = deadline
        self.health = StoreHealth()
        self._lock = threading.Lock()
        self._closed = False
        # Whether this open created the store: the marker key is written once, by whoever
        # opens the prefix first, in a transaction, so two nodes opening at once agree.
        answer = self._txn(
            "opening the store",
            t.txn([t.absent(self._k("meta/created"))], [t.put(self._k("meta/created"), "1")]),
            write=True,
        )
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

    # --- transport --------------------------------------------------------------------------

    def _txn(self, doing: str, body: t.Json, *, write: bool, until: float | None = None) -> t.Json:
        """Send one transaction, trying each member in turn until ``until`` (monotonic)."""
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
                answer: t.Json = dict(member.client.transaction(body))
            except (Etcd3Exception, requests.RequestException) as e:
                failures.append(f"{member.url}: {_reason(e)}")
                continue
            self._current = index
            if write:
                self.health.succeeded()
            return answer
        reason = "; ".join(failures)
        if write:
            self.health.failed(f"etcd {reason}")
        raise StoreUnreachable(
            f"etcd unreachable while {doing} ({reason}); if this was a change, it may or may "
            "not have been applied"
        )

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
        every other call; StoreError naming etcd when none does."""
        if self._closed:
            raise StoreError(f"{doing}: the etcd state store is closed")
        failures: list[str] = []
        until = time.monotonic() + self.deadline
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
        raise StoreUnreachable(f"etcd unreachable while {doing} ({'; '.join(failures)})")

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
        nets = [(self._load_network(e), e.create_revision) for e in found]
        return [n for n, _ in sorted(nets, key=lambda p: (p[0].created, p[1]))]

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
                return
            self._check_deadline(doing, until)

    # --- endpoints --------------------------------------------------------------------------

    def list_endpoints(self, network_id: str | None = None) -> list[Endpoint]:
        """Endpoints of one network (or all), in the order they were first stored."""
        where = self._k("endpoints/") if network_id is None else self._endpoints_of(network_id)
        doing = "listing endpoints" + ("" if network_id is None else f" of {network_id}")
        (found,) = self._read(doing, t.get_under(where))
        return [self._load_endpoint(e) for e in sorted(found, key=lambda e: e.create_revision)]

    def put_endpoint(self, endpoint: Endpoint, cursors: dict[str, IPAddress]) -> None:
        """Insert or replace an endpoint, exactly its address keys, and the given cursors.

        Reads the endpoint's old document and the wanted address keys, then commits only if
        none of them moved and the network still exists; Conflict naming the holder if an
        address belongs to another endpoint. Nothing changes on any failure.
        """
        addresses = endpoint_addresses(endpoint)
        rows = cursor_rows(cursors)
        net_id, cid, ifname = endpoint.network_id, endpoint.container_id, endpoint.ifname
        doing = f"putting endpoint {cid}/{ifname} on network {net_id}"
        me = _holder(cid, ifname)
        key = self._endpoint(net_id, cid, ifname)
        doc = _dump(endpoint)
        until = time.monotonic() + self.deadline
        while True:
            network, old, *held = self._read(
                doing,
                t.get(self._net(net_id)),
                t.get(key),
                *(t.get(self._address(net_id, a)) for a in addresses),
            )
            if not network:
                raise NotFound(f"{doing}: no such network", field="network_id", value=net_id)
            name = self._load_network(network[0]).name
            guard = [t.unchanged(self._net(net_id), network[0].mod_revision)]
            guard.append(t.unchanged(key, old[0].mod_revision if old else 0))
            for address, found in zip(addresses, held, strict=True):
                if found and found[0].value != me:
                    raise Conflict(
                        f'{doing}: address {address} on network "{name}" is already '
                        f"held by container {found[0].value.replace('/', ' interface ', 1)}",
                        field="address",
                        value=address,
                    )
                akey = self._address(net_id, address)
                guard.append(t.unchanged(akey, found[0].mod_revision if found else 0))
            stale = []
            if old:
                was = self._load_endpoint(old[0])
                stale = [str(i.ip) for i in was.addresses if str(i.ip) not in addresses]
            ops = [t.put(key, doc)]
            ops += [t.delete(self._address(net_id, a)) for a in stale]
            ops += [t.put(self._address(net_id, a), me) for a in addresses]
            ops += [t.put(self._cursors_of(net_id) + s, a) for s, a in rows]
            answer = self._txn(doing, t.txn(guard, ops), write=True, until=until)
            if t.succeeded(answer):
                return
            self._check_deadline(doing, until)

    def delete_endpoint(self, network_id: str, container_id: str, ifname: str) -> bool:
        """Remove an endpoint and release its addresses; False if it did not exist."""
        doing = f"deleting endpoint {container_id}/{ifname} of network {network_id}"
        key = self._endpoint(network_id, container_id, ifname)
        until = time.monotonic() + self.deadline
        while True:
            (old,) = self._read(doing, t.get(key))
            if not old:
                return False
            was = self._load_endpoint(old[0])
            ops = [t.delete(key)]
            ops += [t.delete(self._address(network_id, str(i.ip))) for i in was.addresses]
            guard = [t.unchanged(key, old[0].mod_revision)]
            answer = self._txn(doing, t.txn(guard, ops), write=True, until=until)
            if t.succeeded(answer):
                return True
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
            for member in self._members:
                member.client.session.close()


def _reason(e: BaseException) -> str:
    """A foreign error in a few words: timeouts said as such, TLS and socket failures by their
    cause (never the HTTP library's wrapper reprs), HTTP errors by etcd's own message."""
    if isinstance(e, ConnectionTimeoutError | requests.Timeout):
        return "timed out"
    chain = _causes(e)
    for x in chain:
        if isinstance(x, ssl.SSLCertVerificationError):
            return (
                f"TLS: etcd's certificate was not accepted ({x.verify_message}); is "
                "etcd_ca_file the CA that signed it, and the endpoint an address it names?"
            )
    for x in chain:
        if isinstance(x, ssl.SSLError):
            # etcd rejecting a client certificate (or its absence) ends the handshake: under
            # TLS 1.3 the client sees an EOF, under 1.2 an alert.
            what = "etcd closed it" if isinstance(x, ssl.SSLEOFError) else x.reason or str(x)
            return (
                f"TLS: the handshake with etcd failed ({what.lower().replace('_', ' ')}); "
                "does etcd want a client certificate (etcd_cert_file, etcd_key_file) signed by "
                "a CA it trusts?"
            )
    for x in chain:
        if isinstance(x, OSError) and x.errno is not None and x.strerror:
            return x.strerror.lower()
    for x in chain:
        if isinstance(x, ConnectionResetError | http.client.RemoteDisconnected):
            return "etcd closed the connection"
    if isinstance(e, Etcd3Exception) and e.detail_text:
        return _etcd_message(e.detail_text)
    last = chain[-1]
    text = " ".join(str(a) for a in last.args if a) if last.args else type(last).__name__
    return text[:300]


def _causes(e: BaseException) -> list[BaseException]:
    """``e`` and what caused it, outermost first: etcd3gw raises its own errors while handling
    requests' (``__context__``), requests wraps urllib3's (``args[0]``), urllib3 keeps the
    socket or TLS error as ``reason`` or ``__cause__``."""
    out: list[BaseException] = []
    x: BaseException | None = e
    while x is not None and all(x is not seen for seen in out) and len(out) < 20:
        out.append(x)
        inner = getattr(x, "reason", None)
        if not isinstance(inner, BaseException):
            inner = next((a for a in x.args if isinstance(a, BaseException)), None)
        x = inner or x.__cause__ or x.__context__
    return out


def _etcd_message(body: str) -> str:
    """etcd's gateway answers errors as JSON ``{"error": ..., "message": ...}``; its text."""
    try:
        doc = json.loads(body)
    except ValueError:
        return body.strip()[:300]
    if isinstance(doc, dict):
        return str(doc.get("message") or doc.get("error") or body)[:300]
    return body.strip()[:300]
