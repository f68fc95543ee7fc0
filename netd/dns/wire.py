"""DNS wire format helpers: encode names and records, read questions, walk responses.

This is the byte-level layer under :mod:`netd.dns.answer` and :mod:`netd.dns.cache`. It is
pure (no sockets) and defensive: every reader takes untrusted bytes and raises only
:class:`WireError`, so the message path can be fuzzed (tests/unit/test_dns_fuzz.py). It does not
decide what to answer; it only builds and takes apart bytes (RFC 1035 §4, RFC 6891 for OPT).
"""

from __future__ import annotations

import struct

# RR types and classes we use by number (RFC 1035 §3.2.2, RFC 3596, RFC 2782, RFC 6891).
A, NS, CNAME, SOA, PTR, TXT, AAAA, SRV, OPT, ANY = 1, 2, 5, 6, 12, 16, 28, 33, 41, 255
CLASS_IN = 1
# Response codes (RFC 1035 §4.1.1, RFC 6891 for BADVERS).
NOERROR, FORMERR, SERVFAIL, NXDOMAIN, NOTIMP, REFUSED = 0, 1, 2, 3, 4, 5
BADVERS = 16

MAX_NAME = 255  # RFC 1035 §2.3.4, wire form including length octets
MAX_LABEL = 63
MAX_POINTERS = 32  # a legitimate message never chains this many compression pointers
QNAME_PTR = b"\xc0\x0c"  # compression pointer to the question name at offset 12


class WireError(ValueError):
    """Malformed DNS message (the only exception the readers here raise)."""


def encode_name(name: str) -> bytes:
    """Wire form of a dotted name (no compression); ``""`` or ``"."`` is the root."""
    name = name.rstrip(".")
    if not name:
        return b"\x00"
    out = bytearray()
    for label in name.split("."):
        raw = label.encode("ascii")
        if not 0 < len(raw) <= MAX_LABEL:
            raise WireError(f"encoding name {name!r}: bad label length {len(raw)}")
        out.append(len(raw))
        out += raw
    out.append(0)
    if len(out) > MAX_NAME:
        raise WireError(f"encoding name {name!r}: longer than {MAX_NAME} octets")
    return bytes(out)


def question_end(msg: bytes, offset: int = 12) -> int:
    """Offset just past the (uncompressed) question name starting at ``offset``."""
    pos = offset
    end = len(msg)
    while True:
        if pos >= end:
            raise WireError("question name runs past the end of the message")
        n = msg[pos]
        if n == 0:
            pos += 1
            break
        if n > MAX_LABEL:  # compression or extended label types are not valid in a query name
            raise WireError(f"question name: label type/length {n:#x} at {pos}")
        pos += n + 1
    if pos - offset > MAX_NAME:
        raise WireError("question name longer than 255 octets")
    if pos + 4 > end:
        raise WireError("question truncated before type/class")
    return pos + 4


def name_labels(wire: bytes) -> list[bytes]:
    """Labels of an uncompressed wire name (as ``question_end`` validated it)."""
    labels = []
    pos = 0
    while wire[pos]:
        n = wire[pos]
        labels.append(wire[pos + 1 : pos + 1 + n])
        pos += n + 1
    return labels


def labels_to_text(labels: list[bytes]) -> str | None:
    """Lower-case dotted text of labels, or None if a label is not plain printable ASCII."""
    parts = []
    for label in labels:
        if not all(33 <= b < 127 and b != 0x2E for b in label):
            return None
        parts.append(label.decode("ascii").lower())
    return ".".join(parts)


def skip_name(msg: bytes, pos: int) -> int:
    """Offset after a possibly compressed name at ``pos`` (pointers are not followed)."""
    end = len(msg)
    total = 0
    while True:
        if pos >= end:
            raise WireError("name runs past the end of the message")
        n = msg[pos]
        if n == 0:
            return pos + 1
        if n & 0xC0 == 0xC0:
            if pos + 2 > end:
                raise WireError("compression pointer truncated")
            return pos + 2
        if n & 0xC0:
            raise WireError(f"unknown label type {n:#x} at {pos}")
        total += n + 1
        if total > MAX_NAME:
            raise WireError("name longer than 255 octets")
        pos += n + 1


def read_name(msg: bytes, pos: int) -> tuple[str, int]:
    """Dotted lower-case name at ``pos`` following compression pointers (loop-safe).

    Returns the name and the offset after it in the original position.
    """
    labels: list[str] = []
    after = -1
    jumps = 0
    total = 0
    end = len(msg)
    while True:
        if pos >= end:
            raise WireError("name runs past the end of the message")
        n = msg[pos]
        if n == 0:
            if after < 0:
                after = pos + 1
            return ".".join(labels), after
        if n & 0xC0 == 0xC0:
            if pos + 2 > end:
                raise WireError("compression pointer truncated")
            target = ((n & 0x3F) << 8) | msg[pos + 1]
            if after < 0:
                after = pos + 2
            jumps += 1
            # A pointer must point backwards; a forward or self pointer is how loops are built.
            if jumps > MAX_POINTERS or target >= pos:
                raise WireError("compression pointer loop")
            pos = target
            continue
        if n & 0xC0:
            raise WireError(f"unknown label type {n:#x} at {pos}")
        total += n + 1
        if total > MAX_NAME or pos + 1 + n > end:
            raise WireError("name too long or truncated")
        labels.append(msg[pos + 1 : pos + 1 + n].decode("latin-1").lower())
        pos += n + 1


class Walk:
    """The facts the forwarder needs from an upstream response, read in one pass.

    ``ttl_offsets`` are the offsets of every TTL field outside the OPT record, so a cached
    answer can be re-served with decremented TTLs without parsing it again.
    """

    __slots__ = ("ancount", "min_ttl", "negative_ttl", "rcode", "tc", "ttl_offsets")

    def __init__(self) -> None:
        self.rcode = 0
        self.tc = False
        self.ancount = 0
        self.min_ttl: int | None = None
        self.negative_ttl: int | None = None
        self.ttl_offsets: list[int] = []


_HDR = struct.Struct("!HHHHHH")
_RR = struct.Struct("!HHIH")


def walk_response(msg: bytes) -> Walk:
    """Read header, TTLs and the SOA minimum of a response (RFC 2308 negative TTL)."""
    if len(msg) < 12:
        raise WireError("message shorter than a header")
    _id, flags, qd, an, ns, ar = _HDR.unpack_from(msg, 0)
    w = Walk()
    w.rcode = flags & 0xF
    w.tc = bool(flags & 0x0200)
    w.ancount = an
    pos = 12
    for _ in range(qd):
        pos = skip_name(msg, pos) + 4
    for section, count in ((0, an), (1, ns), (2, ar)):
        for _ in range(count):
            pos = skip_name(msg, pos)
            if pos + 10 > len(msg):
                raise WireError("resource record truncated")
            rtype, _rclass, ttl, rdlen = _RR.unpack_from(msg, pos)
            rdata = pos + 10
            if rdata + rdlen > len(msg):
                raise WireError("rdata truncated")
            if rtype != OPT:
                w.ttl_offsets.append(pos + 4)
                if section == 0:
                    w.min_ttl = ttl if w.min_ttl is None else min(w.min_ttl, ttl)
                elif section == 1 and rtype == SOA:
                    soa_min_at = skip_name(msg, skip_name(msg, rdata)) + 16
                    if soa_min_at + 4 > rdata + rdlen:
                        raise WireError("SOA rdata truncated")
                    (minimum,) = struct.unpack_from("!I", msg, soa_min_at)
                    w.negative_ttl = min(ttl, minimum)
            pos = rdata + rdlen
    if pos > len(msg):
        raise WireError("message truncated")
    return w


def rr(owner: bytes, rtype: int, ttl: int, rdata: bytes) -> bytes:
    """One resource record in wire form (class IN)."""
    return owner + struct.pack("!HHIH", rtype, CLASS_IN, ttl, len(rdata)) + rdata


def opt_rr(udp_size: int = 1232, rcode_high: int = 0) -> bytes:
    """Our OPT pseudo-record (RFC 6891): EDNS version 0, no options, 1232-byte payload."""
    return b"\x00" + struct.pack("!HHBBHH", OPT, udp_size, rcode_high, 0, 0, 0)
