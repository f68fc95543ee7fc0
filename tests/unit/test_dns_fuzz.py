"""Hostile input never raises out of the message path (answering, walking, reading names)."""

from __future__ import annotations

import contextlib
import struct

from dnslib import DNSRecord
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from kit import endpoint, network

from netd.dns import wire
from netd.dns.answer import Answerer, Forward
from netd.dns.records import Tables, build_network_doc

NET = network("fz", "10.7.0.0/24", id="f" * 64)
EP = endpoint(NET, "c", name="web", aliases=("a", "b"))
ANS = Answerer()
ANS.set_tables(Tables({NET.id: build_network_doc(NET, [EP])}, "dns.netd"))
QUERY = bytes(DNSRecord.question("web.dns.netd").pack())
SETTINGS = settings(max_examples=1500, deadline=None, suppress_health_check=list(HealthCheck))


def check(data: bytes) -> None:
    for tcp in (False, True):
        out = ANS.handle(data, "10.7.0.2", tcp=tcp)
        assert out is None or isinstance(out, bytes | Forward)
        if isinstance(out, bytes):
            assert len(out) >= 12 and out[:2] == data[:2] and out[2] & 0x80
            assert tcp or len(out) <= 1232
    with contextlib.suppress(wire.WireError):
        wire.walk_response(data)
    with contextlib.suppress(wire.WireError):
        wire.read_name(data, 12)


@SETTINGS
@given(st.binary(max_size=600))
def test_random_bytes(data: bytes) -> None:
    check(data)


@SETTINGS
@given(st.integers(0, len(QUERY)), st.binary(max_size=40), st.integers(0, 0xFFFF))
def test_truncated_and_mutated_queries(cut: int, junk: bytes, flags: int) -> None:
    check(QUERY[:cut] + junk)
    check(QUERY[:2] + struct.pack("!H", flags) + QUERY[4:])


@SETTINGS
@given(st.lists(st.integers(0, 0xFFFF), min_size=4, max_size=4), st.binary(max_size=300))
def test_header_counts_lie(counts: list[int], body: bytes) -> None:
    check(QUERY[:4] + struct.pack("!HHHH", *counts) + QUERY[12:] + body)


def test_compression_loops_and_huge_messages() -> None:
    loop = QUERY[:12] + b"\xc0\x0c" + b"\x00\x01\x00\x01"  # pointer to itself
    check(loop)
    resp = bytearray(QUERY)
    resp[2] |= 0x80
    resp[6:8] = b"\x00\x01"  # one answer whose owner is a self-pointer
    bad = bytes(resp) + b"\xc0" + bytes([len(resp)]) + b"\x00\x01\x00\x01" + bytes(6)
    check(bad)
    try:
        wire.read_name(bad, len(resp))
        raise AssertionError("loop not detected")
    except wire.WireError:
        pass
    check(QUERY + bytes(70000))
    check(QUERY[:12] + (b"\x3f" + b"a" * 63) * 5 + b"\x00\x00\x01\x00\x01")  # name > 255
