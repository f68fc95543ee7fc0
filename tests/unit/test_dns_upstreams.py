"""Upstream lists from resolv.conf (stubs skipped, changes followed), health, the cache."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from dnslib import QTYPE, RR, A, DNSRecord

from netd.dns import wire
from netd.dns.cache import Cache
from netd.dns.resolvconf import render_resolv_conf
from netd.dns.upstreams import Health, HostUpstreams, host_nameservers, parse_server
from netd.errors import InvalidInput


def test_stub_skipped_and_systemd_list_used(tmp_path: Path) -> None:
    conf, real = tmp_path / "resolv.conf", tmp_path / "real.conf"
    conf.write_text("# stub\nnameserver 127.0.0.53\noptions edns0 trust-ad\nsearch lan\n")
    real.write_text("nameserver 10.0.0.1\nnameserver ::1\nnameserver fd00::53\n")
    assert host_nameservers(str(conf), str(real)) == ["10.0.0.1", "fd00::53"]
    conf.write_text("nameserver 127.0.0.1\nnameserver 10.0.0.2\n")
    assert host_nameservers(str(conf), str(real)) == ["10.0.0.2"]


def test_file_changes_are_followed(tmp_path: Path) -> None:
    conf = tmp_path / "resolv.conf"
    conf.write_text("nameserver 10.0.0.1\n")
    up = HostUpstreams(str(conf), str(tmp_path / "none"))
    assert up.get(100.0) == ["10.0.0.1"]
    conf.write_text("nameserver 10.0.0.2\n")
    os.utime(conf, (1, 1))
    assert up.get(100.5) == ["10.0.0.1"]  # checked at most once a second
    assert up.get(101.5) == ["10.0.0.2"]


def test_parse_server() -> None:
    assert parse_server("10.0.0.1") == ("10.0.0.1", 53)
    assert parse_server("10.0.0.1:5353") == ("10.0.0.1", 5353)
    assert parse_server("[fd00::1]:54") == ("fd00::1", 54)
    assert parse_server("fd00::1") == ("fd00::1", 53)
    with pytest.raises(InvalidInput, match="dns_servers"):
        parse_server("dns.example")


def test_health_orders_bad_last() -> None:
    h = Health(bad_for=30)
    h.failed("a", now=0)
    assert h.order(["a", "b", "c"], now=1) == ["b", "c", "a"]
    assert h.order(["a", "b"], now=31) == ["a", "b"]
    h.failed("a", now=40)
    h.answered("a")
    assert h.order(["a", "b"], now=41) == ["a", "b"]


def _response(ttl: int, rcode: int = 0, soa_min: int | None = None) -> bytes:
    r = DNSRecord.question("x.example").reply()
    r.header.rcode = rcode
    if soa_min is None:
        r.add_answer(RR("x.example", QTYPE.A, rdata=A("1.2.3.4"), ttl=ttl))
    else:
        r.add_auth(*RR.fromZone(f"example. {ttl} IN SOA ns. host. 1 2 3 4 {soa_min}"))
    return bytes(r.pack())


def test_cache_ttl_countdown_and_negative_ttl() -> None:
    c = Cache()
    msg = _response(ttl=30)
    c.put("k", msg, wire.walk_response(msg), now=0)
    assert DNSRecord.parse(c.get("k", now=10.2)).rr[0].ttl == 20  # type: ignore[arg-type]
    assert c.get("k", now=30) is None
    neg = _response(ttl=300, rcode=3, soa_min=60)
    c.put("n", neg, wire.walk_response(neg), now=0)
    assert c.get("n", now=59) is not None and c.get("n", now=60) is None
    fail = _response(ttl=300, rcode=2, soa_min=60)
    c.put("f", fail, wire.walk_response(fail), now=0)
    assert c.get("f", now=0) is None  # SERVFAIL is never cached


def test_cache_is_bounded() -> None:
    c = Cache(max_entries=3)
    msg = _response(ttl=30)
    for i in range(10):
        c.put(i, msg, wire.walk_response(msg), now=0)
    assert len(c) == 3 and c.get(9, now=1) is not None and c.get(0, now=1) is None


def test_render_resolv_conf() -> None:
    text = render_resolv_conf(["10.88.0.1", "fd88::1"], ["dns.netd"], ["ndots:0", "edns0"])
    assert (
        text == "nameserver 10.88.0.1\nnameserver fd88::1\nsearch dns.netd\noptions ndots:0 edns0\n"
    )
    with pytest.raises(InvalidInput, match="nameservers"):
        render_resolv_conf(["x"])
    with pytest.raises(InvalidInput, match="options"):
        render_resolv_conf(["10.0.0.1"], options=["ndots 1\nnameserver 6.6.6.6"])
