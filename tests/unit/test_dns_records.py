"""Record tables: name forms, validation, SRV, scopes and upstream precedence."""

from __future__ import annotations

import ipaddress
from typing import Any

from kit import endpoint, network

from netd.dns.records import Tables, build_network_doc, forwards, parse_reverse
from netd.model import Endpoint, Network, PortMapping


def net(name: str, cidr: str, internal: bool = False, **options: str) -> Network:
    return network(name, cidr, id=name * 8, internal=internal, options=options)


def ep(n: Network, cid: str, addr: str, **kw: Any) -> Endpoint:
    return endpoint(n, cid, ip=addr, **kw)


def test_doc_names_validated_lowercased_and_deduplicated() -> None:
    n = net("Front", "10.1.0.0/24")
    e = ep(n, "c1", "10.1.0.2/24", name="Web", hostname="web", aliases=("bad name!", "api"),
           port_mappings=(PortMapping(8080, 80), PortMapping(5353, 5353, "udp")))  # fmt: skip
    doc = build_network_doc(n, [e])
    assert doc["name"] == "front"
    assert doc["endpoints"][0]["names"] == ["web", "api"]
    assert doc["endpoints"][0]["srv"] == [["tcp", 80, "http"], ["udp", 5353, "mdns"]]
    t = Tables({n.id: doc}, "dns.netd")
    scope = t.clients["10.1.0.2"].scope
    for name in ("web", "web.dns.netd", "web.front", "api", "api.front"):
        assert t.addresses(scope, name, 4) == ["10.1.0.2"], name
    assert t.srv(scope, "_mdns._udp.web") == [(5353, "web.dns.netd")]


def test_scope_and_upstream_precedence() -> None:
    a = net("a", "10.1.0.0/24", dns_servers="10.0.0.53, 10.0.0.54")
    b = net("b", "10.2.0.0/24", internal=True)
    docs = {
        a.id: build_network_doc(a, [ep(a, "c1", "10.1.0.2/24"), ep(a, "c2", "10.1.0.3/24",
                                                                dns_servers=("10.9.9.9",))]),
        b.id: build_network_doc(b, [ep(b, "c1", "10.2.0.2/24"), ep(b, "c3", "10.2.0.3/24")]),
    }  # fmt: skip
    t = Tables(docs, "dns.netd")
    c1 = t.clients["10.1.0.2"]
    assert t.clients["10.2.0.2"] == c1 and t.scopes[c1.scope] == tuple(sorted((a.id, b.id)))
    assert c1.forward and c1.upstreams == ("10.0.0.53", "10.0.0.54")
    assert t.clients["10.1.0.3"].upstreams == ("10.9.9.9",)  # per-endpoint wins
    c3 = t.clients["10.2.0.3"]
    assert not c3.forward and c3.upstreams == ()  # internal: no forwarding, host list unused
    assert forwards(net("x", "10.5.0.0/24", internal=True, dns_forward_internal="true"))


def test_reverse_names() -> None:
    assert str(parse_reverse("4.3.2.10.in-addr.arpa")) == "10.2.3.4"
    v6 = ipaddress.ip_address("fd00::1")
    assert parse_reverse(v6.reverse_pointer) == v6
    assert parse_reverse("3.2.10.in-addr.arpa") is None
    assert parse_reverse("x.3.2.10.in-addr.arpa") is None


def test_lookup_by_network_name() -> None:
    a, b = net("a", "10.1.0.0/24"), net("b", "10.2.0.0/24")
    docs = {
        a.id: build_network_doc(a, [ep(a, "c1", "10.1.0.2/24", name="x")]),
        b.id: build_network_doc(b, [ep(b, "c2", "10.2.0.2/24", name="x")]),
    }
    t = Tables(docs, "dns.netd")
    assert t.addresses(t.host_scope, "x", 4) == ["10.1.0.2", "10.2.0.2"]
    scope_b = t.scope_of("b")
    assert scope_b is not None and t.addresses(scope_b, "x", 4) == ["10.2.0.2"]
    assert t.scope_of("nope") is None
