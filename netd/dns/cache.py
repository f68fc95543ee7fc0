"""Cache of upstream answers, served with decremented TTLs (pure; time is passed in).

Positive answers live for their smallest answer TTL, negative ones (NXDOMAIN, NODATA) for the
SOA minimum (RFC 2308 §5); SERVFAIL, truncated and SOA-less negative answers are not cached.
An entry remembers where its TTL fields are, so a hit rewrites only those bytes, and at most
once per second. Safe to read from several threads while one thread writes (dict operations
are atomic under the GIL; the few check-then-act steps tolerate a concurrent removal). It does
not decide whether to forward, nor talk to upstreams.
"""

from __future__ import annotations

import contextlib
import struct
from collections.abc import Hashable

from .wire import NOERROR, NXDOMAIN, Walk

_U32 = struct.Struct("!I")


class _Entry:
    __slots__ = ("expires", "msg", "offsets", "parts", "rendered", "rendered_at", "stored")

    def __init__(self, msg: bytes, offsets: list[int], stored: float, expires: float) -> None:
        self.msg = msg
        self.offsets = offsets
        self.stored = stored
        self.expires = expires
        self.rendered = msg
        self.rendered_at = 0
        self.parts: tuple[bytes, bytes, bytes, bytes] | None = None


class Cache:
    """A bounded TTL cache of whole upstream responses keyed by the caller."""

    def __init__(self, max_entries: int = 20000, max_ttl: int = 3600) -> None:
        self.max_entries = max_entries
        self.max_ttl = max_ttl
        self._d: dict[Hashable, _Entry] = {}

    def __len__(self) -> int:
        return len(self._d)

    def get(self, key: Hashable, now: float) -> bytes | None:
        """The cached response with TTLs counted down, or None if absent or expired."""
        e = self._d.get(key)
        if e is None:
            return None
        if now >= e.expires:
            self._d.pop(key, None)  # pop: another serving thread may have removed it
            return None
        age = int(now - e.stored)
        if age != e.rendered_at:
            buf = bytearray(e.msg)
            for off in e.offsets:
                (ttl,) = _U32.unpack_from(buf, off)
                _U32.pack_into(buf, off, max(0, ttl - age))
            e.rendered = bytes(buf)
            e.rendered_at = age
        return e.rendered

    def fresh_parts(self, key: Hashable, now: float) -> tuple[bytes, bytes, bytes, bytes] | None:
        """The parts :meth:`get_parts` last cut, if still current (same TTL second); else None.

        The hit path of a busy name: one dict lookup and four comparisons.
        """
        e = self._d.get(key)
        if e is None or e.parts is None or now >= e.expires or int(now - e.stored) != e.rendered_at:
            return None
        return e.parts

    def get_parts(
        self, key: Hashable, now: float, qend: int
    ) -> tuple[bytes, bytes, bytes, bytes] | None:
        """The cached response cut for splicing into an answer, or None if absent or expired.

        (flags+counts with RD clear, the same with RD set, everything after the question that
        ends at ``qend``, the whole rendered message): the hot path then only prepends the
        query's id and appends its own question, with no per-query slicing of the message.
        """
        msg = self.get(key, now)
        if msg is None:
            return None
        e = self._d.get(key)
        parts = e.parts if e is not None else None
        if parts is None or parts[3] is not msg:
            counts = msg[4:12]
            parts = (
                bytes([msg[2] & 0xFE, msg[3]]) + counts,
                bytes([msg[2] | 0x01, msg[3]]) + counts,
                msg[qend:],
                msg,
            )
            if e is not None:
                e.parts = parts
        return parts

    @staticmethod
    def lifetime(walk: Walk) -> int:
        """Seconds a response may be cached (0: not at all)."""
        if walk.tc:
            return 0
        if walk.rcode == NOERROR and walk.ancount:
            return walk.min_ttl or 0
        if walk.rcode in (NOERROR, NXDOMAIN):
            return walk.negative_ttl or 0
        return 0

    def put(self, key: Hashable, msg: bytes, walk: Walk, now: float) -> None:
        """Store a response (as walked by ``wire.walk_response``) if it is cacheable."""
        ttl = min(self.lifetime(walk), self.max_ttl)
        if ttl <= 0:
            return
        if key not in self._d and len(self._d) >= self.max_entries:
            # Oldest insertion first: cheap, and a flood of unique names cannot grow memory.
            # A serving thread may drop an expired entry meanwhile: then there is room anyway.
            with contextlib.suppress(RuntimeError, KeyError, StopIteration):
                self._d.pop(next(iter(self._d)))
        self._d[key] = _Entry(msg, walk.ttl_offsets, now, now + ttl)

    def clear(self) -> None:
        """Forget everything (upstream set changed)."""
        self._d.clear()
