"""Answering DNS queries from the record tables: the pure message path of the server.

:meth:`Answerer.handle` takes the raw query bytes and the source address and returns the
response bytes, ``None`` (drop: not a query), or a :class:`Forward` for the forwarder. The hot
path does no parsing beyond the header and the question name: answers for local names are built
once per (question, scope) as wire bytes whose names point at the question (0xC00C) and are then
served by splicing in the query id, its flags and its original-case question. Round-robin is a
list of pre-rotated bodies. Upstream answers come from :class:`~netd.dns.cache.Cache` the same
way. Everything unusual (EDNS other than a plain OPT, other opcodes, unknown sources) takes the
slow path, which also fills the hot table. No sockets here: :mod:`netd.dns.server` moves bytes.
"""

from __future__ import annotations

import ipaddress
import struct
import time
from dataclasses import dataclass
from typing import Any

from . import wire
from .cache import Cache
from .records import Client, Tables, parse_reverse
from .stats import QueryStats
from .wire import WireError

_PLAIN = b"\x00\x01\x00\x00\x00\x00\x00\x00"  # QD=1 AN=0 NS=0 AR=0
_EDNS = b"\x00\x01\x00\x00\x00\x00\x00\x01"  # ... AR=1 (the OPT)
_OPT = wire.opt_rr(1232)
_OPT_HEAD = b"\x00\x00\x29"  # root owner + type OPT, right after the question
MAX_UDP = 1232  # DNS flag day 2020 payload size: no IP fragmentation
MAX_ROTATIONS = 16
MAX_HOT = 50000
_FORWARD = object()


class _State:
    """The record tables and the answers precomputed from them, swapped as one object.

    Serving threads read ``Answerer._state`` once per query, so an answer built from old
    tables can only land in the old state's ``hot`` dict, never in the new one.
    """

    __slots__ = ("by_name", "hot", "tables")

    def __init__(self, tables: Tables) -> None:
        self.tables = tables
        self.hot: dict[tuple[int, bytes], object] = {}
        # wire name (lower case) -> hot keys for it, so a change drops only the touched names;
        # b"" holds every SRV question (its additional section depends on other names).
        self.by_name: dict[bytes, list[tuple[int, bytes]]] = {}


class _Local:
    """A precomputed local answer: four headers (RD x EDNS) and the rotated bodies."""

    __slots__ = ("bodies", "headers", "i")

    def __init__(self, headers: list[bytes], bodies: list[bytes]) -> None:
        self.headers = headers
        self.bodies = bodies
        self.i = 0


@dataclass(frozen=True)
class Forward:
    """A query the answerer could not serve locally: what the forwarder needs."""

    query: bytes  # to send upstream, id still the client's
    qid: bytes
    question: bytes  # the client's question, original case
    key: tuple[tuple[str, ...], bytes, int]  # cache key: (upstreams, question lower, edns/do)
    client: Client
    limit: int  # the client's largest acceptable response (UDP) or 65535 (TCP)
    edns: bool


def _flags(rd: int, rcode: int, aa: bool, ra: bool) -> bytes:
    return bytes([0x80 | (0x04 if aa else 0) | rd, (0x80 if ra else 0) | rcode])


def _header_tail(an: int, ns: int, ar: int) -> bytes:
    return struct.pack("!HHHH", 1, an, ns, ar)


def truncate(resp: bytes, qend: int, edns: bool) -> bytes:
    """The TC=1 form of a response: header and question only (plus OPT), RFC 1035 §4.2.1."""
    head = resp[:2] + bytes([resp[2] | 0x02, resp[3]]) + _header_tail(0, 0, 1 if edns else 0)
    return head + resp[12:qend] + (_OPT if edns else b"")


class Answerer:
    """Serves queries from the current :class:`Tables`; swap tables with :meth:`set_tables`."""

    def __init__(self, domain: str = "dns.netd", ttl: int = 5) -> None:
        self.domain = domain.strip(".").lower()
        self.ttl = ttl
        self._state = _State(Tables({}, self.domain))
        # Even while the tables are stable, odd during an in-place change (a sequence lock):
        # the slow path builds an answer only from a stable, unchanged view.
        self._seq = 0
        self.cache = Cache()
        self.stats = QueryStats()
        d = wire.encode_name(self.domain)
        soa_rdata = (
            wire.encode_name("ns." + self.domain)
            + wire.encode_name("hostmaster." + self.domain)
            + struct.pack("!IIIII", 1, 3600, 600, 86400, ttl)
        )
        self._soa = wire.rr(d, wire.SOA, ttl, soa_rdata)

    @property
    def tables(self) -> Tables:
        """The record tables being served."""
        return self._state.tables

    def set_tables(self, tables: Tables) -> None:
        """Atomically replace the records and drop the answers built from the old ones.

        One attribute assignment: safe against the serving threads (see :class:`_State`).
        """
        self._state = _State(tables)

    def change_endpoints(self, nid: str, add: list[dict[str, Any]], delete: list[str]) -> None:
        """Apply one network's endpoint changes in place, dropping only the touched answers.

        Serving threads never act on a half-applied change: the slow path retries while
        the sequence counter is odd or moved; answers of touched names are dropped before
        the client map changes, so a client that sees its new scope builds a fresh answer.
        """
        st = self._state
        self._seq += 1
        try:
            touched, cids = st.tables.change_endpoints(nid, add, delete)
            for name in touched:
                try:
                    self._drop(st, wire.encode_name(name))
                except WireError:
                    continue  # too long to be asked: never cached
            self._drop(st, b"")
            st.tables.refresh_clients(cids)
        finally:
            self._seq += 1

    @staticmethod
    def _drop(st: _State, wname: bytes) -> None:
        for key in st.by_name.pop(wname, ()):
            st.hot.pop(key, None)

    # --- hot path -------------------------------------------------------------------------

    def handle(
        self, data: bytes, src: str, *, tcp: bool = False, host: bool = False
    ) -> bytes | Forward | None:
        """Response bytes, a Forward request, or None (drop) for one received message.

        ``src`` is the sender's address; ``host`` means it arrived on the host listener,
        which sees every network. Safe to call from several threads.
        """
        st = self._state
        client = st.tables.host_client if host else st.tables.clients.get(src)
        counts = data[4:12]
        # counts is 8 bytes only if the header is complete, so data[2] is safe after it.
        if client is None or (counts != _PLAIN and counts != _EDNS) or data[2] & 0xF8:
            return self._slow(st, data, client, tcp)
        qend = data.find(0, 12) + 5
        if qend < 17 or qend > len(data):
            return self._slow(st, data, client, tcp)
        edns = counts == _EDNS
        limit = 65535 if tcp else 512
        if edns:
            if data[qend : qend + 3] != _OPT_HEAD or len(data) < qend + 11 or data[qend + 6]:
                return self._slow(st, data, client, tcp)
            if not tcp:
                limit = max(512, min((data[qend + 3] << 8) | data[qend + 4], MAX_UDP))
        qkey = data[12:qend].lower()
        entry = st.hot.get((client.scope, qkey))
        if entry is None:
            return self._slow(st, data, client, tcp)
        if entry is _FORWARD:
            if not client.forward:
                return self._slow(st, data, client, tcp)
            return self._from_cache(data, qend, qkey, client, edns, limit)
        assert isinstance(entry, _Local)
        bodies = entry.bodies
        i = entry.i
        entry.i = i + 1
        body = bodies[i % len(bodies)]
        resp = data[:2] + entry.headers[(data[2] & 1) | (edns << 1)] + data[12:qend] + body
        if edns:
            resp += _OPT
        if len(resp) > limit:
            return truncate(resp, qend, edns)
        return resp

    def _from_cache(
        self, data: bytes, qend: int, qkey: bytes, client: Client, edns: bool, limit: int
    ) -> bytes | Forward | None:
        do = edns and bool(data[qend + 7] & 0x80)
        key = (client.upstreams, qkey, edns + do)
        now = time.monotonic()
        parts = self.cache.fresh_parts(key, now) or self.cache.get_parts(key, now, qend)
        if parts is None:
            return self._forward(data, qend, key, client, edns, limit)
        self.stats.mine().cache_hits += 1
        resp = data[:2] + parts[data[2] & 1] + data[12:qend] + parts[2]
        if len(resp) > limit:
            return truncate(resp, qend, edns)
        return resp

    def _forward(
        self,
        data: bytes,
        qend: int,
        key: tuple[tuple[str, ...], bytes, int],
        client: Client,
        edns: bool,
        limit: int,
    ) -> Forward:
        # Re-build the query: our flags (RD, and the client's CD), no cookies or other options
        # of the client (an upstream cookie must not be handed to other clients from cache).
        flags = bytes([0x01, data[3] & 0x10])
        query = data[:2] + flags + (_EDNS if edns else _PLAIN) + data[12:qend]
        if edns:
            size = max(512, (data[qend + 3] << 8) | data[qend + 4])
            query += b"\x00" + struct.pack(
                "!HHBBHH", wire.OPT, min(size, MAX_UDP), 0, 0, 0x8000 if key[2] == 2 else 0, 0
            )
        return Forward(query, data[:2], data[12:qend], key, client, limit, edns)

    # --- slow path ------------------------------------------------------------------------

    def _slow(
        self, st: _State, data: bytes, client: Client | None, tcp: bool
    ) -> bytes | Forward | None:
        if len(data) < 12 or data[2] & 0x80:
            return None  # not a query: never answer responses (no reflection loops)
        opcode = (data[2] >> 3) & 0xF
        rd = data[2] & 1
        qd, an, ns, ar = struct.unpack_from("!HHHH", data, 4)
        if opcode != 0:
            return data[:2] + bytes([0x80 | (opcode << 3) | rd, wire.NOTIMP]) + bytes(8)
        if qd != 1 or an or ns:
            return self._formerr(data)
        try:
            qend = wire.question_end(data)
            edns, version, size = self._find_opt(data, qend, ar)
        except WireError:
            return self._formerr(data)
        question = data[12:qend]
        if version:
            # RFC 6891 §6.1.3: unknown EDNS version -> BADVERS (16 = 1 << 4 | 0).
            head = data[:2] + _flags(rd, 0, False, False) + _header_tail(0, 0, 1)
            return head + question + wire.opt_rr(MAX_UDP, rcode_high=1)
        qtype, qclass = struct.unpack_from("!HH", data, qend - 4)
        if client is None or qclass != wire.CLASS_IN or qtype in (251, 252):
            return self._simple(data, qend, rd, wire.REFUSED, edns)
        limit = 65535 if tcp else max(512, min(size, MAX_UDP)) if edns else 512
        qkey = question.lower()
        while True:
            seq = self._seq
            if seq & 1:
                time.sleep(0)  # a change is being applied: let it finish
                continue
            st = self._state
            entry = self._build(st.tables, qkey, client)
            if self._seq == seq:
                break
        if len(st.hot) >= MAX_HOT:
            st.hot.clear()  # bounded: random names cannot grow memory without limit
            st.by_name.clear()
        hkey = (client.scope, qkey)
        fresh = hkey not in st.hot  # some questions always come here: index them once
        st.hot[hkey] = entry
        if fresh:
            srv = qkey[-4:-2] == b"\x00\x21"
            st.by_name.setdefault(b"" if srv else qkey[:-4], []).append(hkey)
        if self._seq != seq and st.hot.get(hkey) is entry:
            st.hot.pop(hkey, None)  # a change began meanwhile and may have missed this entry
        if entry is _FORWARD:
            if not client.forward:
                return self._simple(data, qend, rd, wire.REFUSED, edns)
            return self._from_cache_slow(data, qend, qkey, client, edns, limit)
        assert isinstance(entry, _Local)
        body = entry.bodies[0]
        entry.i += 1
        resp = data[:2] + entry.headers[rd | (edns << 1)] + question + body
        if edns:
            resp += _OPT
        return truncate(resp, qend, edns) if len(resp) > limit else resp

    def _from_cache_slow(
        self, data: bytes, qend: int, qkey: bytes, client: Client, edns: bool, limit: int
    ) -> bytes | Forward | None:
        # The OPT may sit after other additional records: rebuild a plain query around it.
        if edns:
            opt = self._opt_bytes(data, qend)
            data = data[:4] + _EDNS + data[12:qend] + opt
        else:
            data = data[:4] + _PLAIN + data[12:qend]
        return self._from_cache(data, qend, qkey, client, edns, limit)

    @staticmethod
    def _opt_bytes(data: bytes, qend: int) -> bytes:
        pos = qend
        while pos < len(data):
            start = pos
            pos = wire.skip_name(data, pos)
            rtype, _c, _t, rdlen = struct.unpack_from("!HHIH", data, pos)
            pos += 10 + rdlen
            if rtype == wire.OPT:
                return data[start:pos]
        raise WireError("OPT vanished")

    @staticmethod
    def _find_opt(data: bytes, qend: int, ar: int) -> tuple[bool, int, int]:
        """(has OPT, EDNS version, UDP size) from the additional section; FORMERR on junk."""
        pos = qend
        found = False
        version = size = 0
        for _ in range(ar):
            owner = pos
            pos = wire.skip_name(data, pos)
            if pos + 10 > len(data):
                raise WireError("additional record truncated")
            rtype, rclass, ttl, rdlen = struct.unpack_from("!HHIH", data, pos)
            pos += 10 + rdlen
            if pos > len(data):
                raise WireError("additional record truncated")
            if rtype == wire.OPT:
                if found or data[owner] != 0:
                    raise WireError("more than one OPT, or OPT not owned by the root")
                found, version, size = True, (ttl >> 16) & 0xFF, rclass
        return found, version, size

    @staticmethod
    def _formerr(data: bytes) -> bytes:
        return data[:2] + bytes([0x80 | (data[2] & 0x79), wire.FORMERR]) + bytes(8)

    def _simple(self, data: bytes, qend: int, rd: int, rcode: int, edns: bool) -> bytes:
        head = data[:2] + _flags(rd, rcode, False, False) + _header_tail(0, 0, int(edns))
        return head + data[12:qend] + (_OPT if edns else b"")

    # --- building local answers -----------------------------------------------------------

    def _build(self, t: Tables, qkey: bytes, client: Client) -> object:
        """The hot-table entry for a question in a scope: a _Local answer or _FORWARD."""
        labels = wire.name_labels(qkey)
        name = wire.labels_to_text(labels)
        qtype = struct.unpack_from("!H", qkey, len(qkey) - 4)[0]
        if name is None:
            return _FORWARD
        scope = client.scope
        d = self.domain
        in_domain = name == d or name.endswith("." + d)
        ra = client.forward
        if parse_reverse(name) is not None:
            targets = t.ptr(scope, name)
            addr = parse_reverse(name)
            assert addr is not None
            if targets:
                if qtype in (wire.PTR, wire.ANY):
                    return self._answer(
                        [
                            b"".join(
                                wire.rr(wire.QNAME_PTR, wire.PTR, self.ttl, wire.encode_name(x))
                                for x in targets
                            )
                        ],
                        len(targets),
                        ra,
                    )
                return self._negative(wire.NOERROR, ra)
            if t.in_local_subnet(scope, addr):
                return self._negative(wire.NXDOMAIN, ra)
            return _FORWARD
        if name == d:
            if qtype == wire.SOA:
                return self._answer(
                    [self._soa.replace(wire.encode_name(d), wire.QNAME_PTR, 1)], 1, ra
                )
            return self._negative(wire.NOERROR, ra)
        if t.exists(scope, name):
            return self._records(t, name, qtype, scope, ra)
        if in_domain or ("." not in name and name):
            # Single-label names never leave the host (dnsmasq's domain-needed): they are
            # container names or typos, and upstreams cannot know them.
            return self._negative(wire.NXDOMAIN, ra)
        return _FORWARD

    def _records(self, t: Tables, name: str, qtype: int, scope: int, ra: bool) -> _Local:
        ttl = self.ttl
        if qtype in (wire.A, wire.AAAA, wire.ANY):
            v4 = t.addresses(scope, name, 4) if qtype != wire.AAAA else []
            v6 = t.addresses(scope, name, 6) if qtype != wire.A else []
            addrs = [_packed(a) for a in v4] + [_packed(a) for a in v6]
            if not addrs:
                return self._negative(wire.NOERROR, ra)
            n = len(addrs)
            bodies = []
            for r in range(min(n, MAX_ROTATIONS) if qtype != wire.ANY else 1):
                rot = addrs[r:] + addrs[:r]
                bodies.append(
                    b"".join(
                        wire.rr(wire.QNAME_PTR, wire.A if len(a) == 4 else wire.AAAA, ttl, a)
                        for a in rot
                    )
                )
            return self._answer(bodies, n, ra)
        if qtype == wire.SRV:
            srv = t.srv(scope, name)
            if not srv:
                return self._negative(wire.NOERROR, ra)
            ans = b"".join(
                wire.rr(
                    wire.QNAME_PTR,
                    wire.SRV,
                    ttl,
                    struct.pack("!HHH", 0, 0, port) + wire.encode_name(target),
                )
                for port, target in srv
            )
            extra = []
            for target in dict.fromkeys(tg for _p, tg in srv):
                owner = wire.encode_name(target)
                for fam, rtype in ((4, wire.A), (6, wire.AAAA)):
                    for a in t.addresses(scope, target, fam):
                        extra.append(wire.rr(owner, rtype, ttl, _packed(a)))
            return self._answer([ans + b"".join(extra)], len(srv), ra, ar=len(extra))
        return self._negative(wire.NOERROR, ra)

    def _answer(self, bodies: list[bytes], an: int, ra: bool, ar: int = 0) -> _Local:
        headers = [
            _flags(rd, wire.NOERROR, True, ra) + _header_tail(an, 0, ar + edns)
            for edns in (0, 1)
            for rd in (0, 1)
        ]
        return _Local(headers, bodies)

    def _negative(self, rcode: int, ra: bool) -> _Local:
        headers = [
            _flags(rd, rcode, True, ra) + _header_tail(0, 1, edns)
            for edns in (0, 1)
            for rd in (0, 1)
        ]
        return _Local(headers, [self._soa])


def _packed(addr: str) -> bytes:
    return ipaddress.ip_address(addr).packed
