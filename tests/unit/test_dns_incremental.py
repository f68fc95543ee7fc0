"""Incremental record updates: same answers as a full rebuild, only touched answers dropped,
no half-applied change seen by a concurrent reader, and the manager sends only the diff."""

from __future__ import annotations

import dataclasses
import random
import sys
import threading
from typing import Any

from dnslib import RCODE, DNSRecord
from kit import endpoint, network, subnet

from netd.dns.answer import Answerer
from netd.dns.manager import DnsManager
from netd.dns.records import NetTable, Tables, build_endpoint_doc, build_network_doc
from netd.model import Endpoint, Network, PortMapping


def net(name: str, cidr: str, **options: str) -> Network:
    return network(name, cidr, id=name * 8, options=options)


def ep(n: Network, cid: str, name: str, addr: str, **kw: Any) -> Endpoint:
    return endpoint(n, cid, ip=addr, name=name, **kw)


A = net("a", "10.1.0.0/24", dns_servers="10.9.9.9")
B = net("b", "10.2.0.0/24")


def view(t: NetTable) -> dict[str, Any]:
    """A table's content, order-insensitive (counts included)."""
    return {
        k: {o: sorted(v.items(), key=str) for o, v in getattr(t, k).items()}
        for k in ("v4", "v6", "ptr", "srv")
    } | {"names": dict(t.names)}


def test_random_changes_match_a_full_rebuild() -> None:
    rnd = random.Random(4)
    pool = {
        (n.id, i): ep(
            n, f"c{i}", rnd.choice(["web", "db", f"s{i}"]), f"{n.subnets[0].subnet[i + 2]}/24",
            aliases=(rnd.choice(["api", "x.y", f"al{i}"]),),
            port_mappings=(PortMapping(8000 + i, 80),) if i % 3 == 0 else (),
            dns_servers=("10.8.8.8",) if i % 5 == 0 else (),
        )
        for n in (A, B) for i in range(12)
    }  # fmt: skip
    live: dict[tuple[str, int], Endpoint] = {}
    t = Tables({A.id: build_network_doc(A, []), B.id: build_network_doc(B, [])}, "dns.netd")
    for _ in range(300):
        k = rnd.choice(sorted(pool))
        if k in live:
            touched, cids = t.change_endpoints(k[0], [], [build_endpoint_doc(live.pop(k))["key"]])
        else:
            live[k] = pool[k]
            touched, cids = t.change_endpoints(k[0], [build_endpoint_doc(pool[k])], [])
        t.refresh_clients(cids)
        assert touched and cids == {pool[k].container_id}
        full = Tables(
            {n.id: build_network_doc(n, [e for kk, e in live.items() if kk[0] == n.id])
             for n in (A, B)},
            "dns.netd",
        )  # fmt: skip
        for nid in (A.id, B.id):
            assert view(t.nets[nid]) == view(full.nets[nid])
        assert t.clients.keys() == full.clients.keys()
        for addr, c in t.clients.items():
            f = full.clients[addr]
            assert (t.scopes[c.scope], c.forward, c.upstreams) == (
                full.scopes[f.scope], f.forward, f.upstreams,
            )  # fmt: skip


def ask(a: Answerer, name: str, qtype: str = "A", src: str = "10.1.0.2") -> DNSRecord:
    out = a.handle(bytes(DNSRecord.question(name, qtype).pack()), src)
    assert isinstance(out, bytes)
    return DNSRecord.parse(out)


def test_change_drops_only_touched_answers() -> None:
    a = Answerer("dns.netd")
    web = ep(A, "c1", "web", "10.1.0.2/24")
    a.set_tables(Tables({A.id: build_network_doc(A, [web])}, "dns.netd"))
    assert ask(a, "db").header.rcode == RCODE.NXDOMAIN  # negative answer now cached
    assert [str(r.rdata) for r in ask(a, "web").rr] == ["10.1.0.2"]
    hot = dict(a._state.hot)
    db = build_endpoint_doc(ep(A, "c2", "db", "10.1.0.3/24"))
    a.change_endpoints(A.id, [db], [])
    assert [str(r.rdata) for r in ask(a, "db").rr] == ["10.1.0.3"]  # at once, not the NXDOMAIN
    assert [str(r.rdata) for r in ask(a, "3.0.1.10.in-addr.arpa", "PTR").rr] == ["db.dns.netd."]
    web_keys = [k for k in hot if b"\x03web" in k[1]]
    assert web_keys and all(a._state.hot[k] is hot[k] for k in web_keys)  # untouched: kept
    a.change_endpoints(A.id, [], [db["key"]])
    assert ask(a, "db").header.rcode == RCODE.NXDOMAIN
    assert ask(a, "db", src="10.1.0.3").header.rcode == RCODE.REFUSED  # its client is gone


def test_readers_never_see_a_half_applied_change() -> None:
    # "svc" exists with an address, or not at all: a NODATA (name known, no address) or an
    # answer from a missing client would mean a reader saw the tables mid-change.
    a = Answerer("dns.netd")
    web = ep(A, "c1", "web", "10.1.0.2/24")
    a.set_tables(Tables({A.id: build_network_doc(A, [web])}, "dns.netd"))
    svc = build_endpoint_doc(
        ep(A, "c2", "svc", "10.1.0.3/24", aliases=tuple(f"a{i}" for i in range(200)))
    )
    bad: list[str] = []
    stop = threading.Event()

    def reader() -> None:
        q = bytes(DNSRecord.question("a199", "A").pack())
        while not stop.is_set():
            r = DNSRecord.parse(a.handle(q, "10.1.0.2"))  # type: ignore[arg-type]
            if r.header.rcode == RCODE.NOERROR and [str(x.rdata) for x in r.rr] != ["10.1.0.3"]:
                bad.append(repr(r))

    threads = [threading.Thread(target=reader) for _ in range(3)]
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads often, so readers land inside changes
    for th in threads:
        th.start()
    try:
        for _ in range(300):
            a.change_endpoints(A.id, [svc], [])
            a.change_endpoints(A.id, [], [svc["key"]])
    finally:
        stop.set()
        for th in threads:
            th.join()
        sys.setswitchinterval(interval)
    assert not bad, bad[:3]


class Recording(DnsManager):
    """A manager without worker processes that records the messages it would send."""

    def __init__(self) -> None:
        super().__init__(workers=1)
        self.sent: list[dict[str, Any]] = []

    def _request(self, w: Any, msg: dict[str, Any], fds: list[int] | None = None) -> dict[str, Any]:
        self.sent.append(msg)
        return {}

    def _bind(self, addr: str, port: int, tcp: bool) -> Any:
        raise AssertionError("no socket expected: the network has no gateway")


def test_manager_sends_only_the_diff() -> None:
    n = dataclasses.replace(A, subnets=(subnet("10.1.0.0/24", gateway=None),))
    m = Recording()
    eps = [ep(n, f"c{i}", f"s{i}", f"10.1.0.{i + 2}/24") for i in range(50)]
    m.set_state([(n, eps)])
    assert [x["op"] for x in m.sent] == ["records"]
    m.sent.clear()
    extra = ep(n, "cx", "extra", "10.1.0.99/24")
    m.update_network(n, [*eps, extra])
    assert m.sent == [
        {"op": "endpoints", "net": n.id, "add": [build_endpoint_doc(extra)], "del": []}
    ]
    assert m.lookup("extra") == ["10.1.0.99"]
    m.sent.clear()
    m.update_network(n, [dataclasses.replace(e, state="active") for e in eps] + [extra])
    assert m.sent == []  # new objects, same DNS data: nothing to send
    m.update_network(n, eps)
    assert m.sent == [{"op": "endpoints", "net": n.id, "add": [], "del": ["eth0/cx"]}]
    assert m.lookup("extra") == []
    m.sent.clear()
    renamed = dataclasses.replace(eps[0], name="renamed")
    m.update_network(n, [renamed, *eps[1:]])
    assert m.sent[0]["add"] == [build_endpoint_doc(renamed)] and m.lookup("s0") == []
    m.sent.clear()
    n2 = dataclasses.replace(n, options={"dns_servers": "10.7.7.7"})
    m.update_network(n2, eps)
    assert [x["op"] for x in m.sent] == ["records"]  # the network changed: whole document
    assert m.lookup("s0") == ["10.1.0.2"]
    m.sent.clear()
    m.update_network(dataclasses.replace(n2, dns_enabled=False), eps)
    assert m.sent == [{"op": "records", "set": {}, "del": [n.id]}]
    assert m.lookup("s1") == []


def test_slow_path_questions_are_indexed_once() -> None:
    # An internal network's client asking an outside name is refused on the slow path every
    # time: the name index must not grow with each query.
    a = Answerer("dns.netd")
    priv = dataclasses.replace(net("p", "10.3.0.0/24"), internal=True)
    a.set_tables(Tables({priv.id: build_network_doc(priv, [ep(priv, "c", "s", "10.3.0.2/24")])},
                        "dns.netd"))  # fmt: skip
    for _ in range(50):
        assert ask(a, "www.example.org", src="10.3.0.2").header.rcode == RCODE.REFUSED
    assert sum(len(v) for v in a._state.by_name.values()) == 1
