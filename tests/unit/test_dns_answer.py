"""The pure answering path: local records, RFC-correct negative answers, scoping, EDNS, TC."""

from __future__ import annotations

import ipaddress
from typing import Any

import pytest
from dnslib import EDNS0, QTYPE, RCODE, DNSRecord
from kit import endpoint, network

from netd.dns.answer import Answerer, Forward
from netd.dns.records import Tables, build_network_doc
from netd.model import Endpoint, Network, PortMapping


def net(name: str, cidr: str, internal: bool = False, **options: str) -> Network:
    return network(name, cidr, id=name * 8, internal=internal, options=options)


def ep(n: Network, cid: str, name: str | None, *addrs: str, **kw: Any) -> Endpoint:
    return endpoint(n, cid, ip=addrs, name=name, **kw)


FRONT = net("front", "10.1.0.0/24")
BACK = net("back", "10.2.0.0/24")
PRIV = net("priv", "10.3.0.0/24", internal=True)


@pytest.fixture
def ans() -> Answerer:
    a = Answerer("dns.netd", ttl=7)
    eps = [
        (FRONT, [
            ep(FRONT, "c1", "web", "10.1.0.2/24", "fd00::2/64", aliases=("www",),
               port_mappings=(PortMapping(8080, 80),)),
            ep(FRONT, "c2", "db", "10.1.0.3/24", aliases=("www",)),
        ]),
        (BACK, [ep(BACK, "c2", "db", "10.2.0.3/24"), ep(BACK, "c3", "cache", "10.2.0.4/24")]),
        (PRIV, [ep(PRIV, "c4", "secret", "10.3.0.2/24")]),
    ]  # fmt: skip
    docs = {n.id: build_network_doc(n, e) for n, e in eps}
    a.set_tables(Tables(docs, "dns.netd"))
    return a


def ask(a: Answerer, name: str, qtype: str = "A", src: str = "10.1.0.3", **kw: object) -> DNSRecord:
    q = DNSRecord.question(name, qtype)
    if kw.get("edns"):
        q.add_ar(EDNS0(udp_len=int(kw.get("size", 1232))))  # type: ignore[call-overload]
    if kw.get("norec"):
        q.header.rd = 0
    out = a.handle(bytes(q.pack()), src, tcp=bool(kw.get("tcp")))
    assert isinstance(out, bytes), out
    r = DNSRecord.parse(out)
    assert r.header.id == q.header.id
    return r


def rdata(r: DNSRecord) -> list[str]:
    return [str(rr.rdata) for rr in r.rr]


def test_name_forms_case_insensitive_and_question_case_kept(ans: Answerer) -> None:
    for name in ("web", "web.dns.netd", "web.front", "WeB.DnS.NeTd."):
        r = ask(ans, name)
        assert rdata(r) == ["10.1.0.2"], name
        assert r.header.aa and r.header.rcode == RCODE.NOERROR
        assert r.rr[0].ttl == 7
    assert str(ask(ans, "WeB.DnS.NeTd").q.qname) == "WeB.DnS.NeTd."
    assert rdata(ask(ans, "web", "AAAA")) == ["fd00::2"]


def test_nodata_with_soa_for_other_types(ans: Answerer) -> None:
    for qtype in ("AAAA", "TXT", "MX", "CNAME"):
        r = ask(ans, "db", qtype)
        assert r.header.rcode == RCODE.NOERROR and not r.rr, qtype
        assert [QTYPE[x.rtype] for x in r.auth] == ["SOA"]
        assert str(r.auth[0].rname) == "dns.netd."


def test_nxdomain_with_soa_inside_domain_and_for_single_labels(ans: Answerer) -> None:
    for name in ("nosuch.dns.netd", "nosuch"):
        r = ask(ans, name)
        assert r.header.rcode == RCODE.NXDOMAIN and QTYPE[r.auth[0].rtype] == "SOA"


def test_empty_non_terminal_is_nodata(ans: Answerer) -> None:
    r = ask(ans, "_tcp.web.dns.netd", "SRV")
    assert r.header.rcode == RCODE.NOERROR and not r.rr


def test_srv_for_published_port_with_glue(ans: Answerer) -> None:
    r = ask(ans, "_http._tcp.web", "SRV")
    assert rdata(r) == ["0 0 80 web.dns.netd."]
    assert sorted(rdata(DNSRecord(rr=r.ar))) == ["10.1.0.2", "fd00::2"]
    assert rdata(ask(ans, "_80._tcp.web.dns.netd", "SRV")) == ["0 0 80 web.dns.netd."]


def test_ptr_scoped_and_nxdomain_in_own_subnet(ans: Answerer) -> None:
    assert rdata(ask(ans, "2.0.1.10.in-addr.arpa", "PTR")) == ["web.dns.netd."]
    v6 = ipaddress.ip_address("fd00::2").reverse_pointer
    assert rdata(ask(ans, v6, "PTR")) == ["web.dns.netd."]
    assert ask(ans, "99.0.1.10.in-addr.arpa", "PTR").header.rcode == RCODE.NXDOMAIN
    # c1 is not on back: back's addresses are not local to it, so the query is forwarded.
    out = ans.handle(bytes(DNSRecord.question("4.0.2.10.in-addr.arpa", "PTR").pack()), "10.1.0.2")
    assert isinstance(out, Forward)


def test_scope_is_the_asking_containers_networks(ans: Answerer) -> None:
    assert rdata(ask(ans, "db", src="10.1.0.2")) == ["10.1.0.3"]
    assert ask(ans, "cache", src="10.1.0.2").header.rcode == RCODE.NXDOMAIN
    assert sorted(rdata(ask(ans, "db", src="10.2.0.3"))) == ["10.1.0.3", "10.2.0.3"]
    assert rdata(ask(ans, "cache", src="10.1.0.3")) == ["10.2.0.4"]


def test_unknown_source_refused(ans: Answerer) -> None:
    r = ask(ans, "web", src="192.0.2.1")
    assert r.header.rcode == RCODE.REFUSED and not r.rr


def test_round_robin_rotates(ans: Answerer) -> None:
    seen = [tuple(rdata(ask(ans, "www"))) for _ in range(4)]
    assert set(seen) == {("10.1.0.2", "10.1.0.3"), ("10.1.0.3", "10.1.0.2")}
    assert seen[0] != seen[1]


def test_edns_echoed_and_norec_flag_copied(ans: Answerer) -> None:
    r = ask(ans, "web", edns=True, norec=True)
    assert not r.header.rd and r.header.ra
    opt = [x for x in r.ar if x.rtype == QTYPE.OPT]
    assert len(opt) == 1 and opt[0].rclass == 1232


def test_badvers_for_unknown_edns_version(ans: Answerer) -> None:
    q = DNSRecord.question("web")
    q.add_ar(EDNS0(version=1))
    out = ans.handle(bytes(q.pack()), "10.1.0.3")
    assert isinstance(out, bytes)
    r = DNSRecord.parse(out)
    opt = next(x for x in r.ar if x.rtype == QTYPE.OPT)
    assert (opt.ttl >> 24) == 1 and r.header.rcode == 0  # extended rcode 16 = BADVERS


def test_truncation_over_udp_and_full_over_tcp() -> None:
    a = Answerer()
    n = net("big", "10.9.0.0/16")
    eps = [ep(n, f"c{i}", f"n{i}", f"10.9.{i // 250}.{i % 250 + 2}/16", aliases=("many",))
           for i in range(60)]  # fmt: skip
    a.set_tables(Tables({n.id: build_network_doc(n, eps)}, "dns.netd"))
    r = ask(a, "many", src="10.9.0.2")
    assert r.header.tc and not r.rr
    assert len(ask(a, "many", src="10.9.0.2", edns=True, size=4096).rr) == 60
    assert len(ask(a, "many", src="10.9.0.2", tcp=True).rr) == 60


def test_forward_decision_and_internal_refusal(ans: Answerer) -> None:
    q = bytes(DNSRecord.question("example.com").pack())
    fwd = ans.handle(q, "10.1.0.2")
    assert isinstance(fwd, Forward) and fwd.limit == 512
    r = DNSRecord.parse(ans.handle(q, "10.3.0.2"))  # type: ignore[arg-type]
    assert r.header.rcode == RCODE.REFUSED


def test_malformed_queries(ans: Answerer) -> None:
    q = DNSRecord.question("web")
    raw = bytes(q.pack())
    assert ans.handle(raw[:11], "10.1.0.3") is None  # shorter than a header: dropped
    formerr = ans.handle(raw[:15], "10.1.0.3")
    assert isinstance(formerr, bytes) and formerr[3] & 0xF == RCODE.FORMERR
    response = raw[:2] + bytes([raw[2] | 0x80]) + raw[3:]
    assert ans.handle(response, "10.1.0.3") is None  # never answer a response
    notify = raw[:2] + bytes([(4 << 3) | (raw[2] & 1)]) + raw[3:]
    out = ans.handle(notify, "10.1.0.3")
    assert isinstance(out, bytes) and out[3] & 0xF == RCODE.NOTIMP


def test_update_swaps_atomically(ans: Answerer) -> None:
    assert rdata(ask(ans, "web")) == ["10.1.0.2"]
    docs = dict(ans.tables.docs)
    docs[FRONT.id] = build_network_doc(FRONT, [ep(FRONT, "c2", "db", "10.1.0.3/24")])
    ans.set_tables(Tables(docs, "dns.netd"))
    assert ask(ans, "web").header.rcode == RCODE.NXDOMAIN
