"""The set of taken addresses of one allocation range, as merged sorted intervals.

An :class:`AddressIndex` answers "is this address taken?" and "which is the next free address
at or after this cursor, wrapping around?" in O(log n) of the number of *runs* of taken
addresses, however full the range is. Addresses are plain ints (``int(ip_address(...))``), so
the same code serves an IPv4 /30 and an IPv6 /64 (2**64 addresses) — there is no bitmap whose
size follows the range.

Taken addresses are kept as disjoint, non-adjacent, inclusive intervals ``[start, end]`` in two
parallel sorted lists. Adjacent runs are always merged, so ``end + 1`` of a run is free: that is
what makes ``next_free`` a single binary search. A full /16 is one interval; releasing random
addresses splits it into as many intervals as there are holes.

This module knows nothing of subnets, gateways or networks (see :mod:`netd.ipam.allocator`),
does no I/O and is not thread-safe: the caller serialises access.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Iterable, Iterator


class AddressIndex:
    """A set of ints stored as merged sorted intervals, with wrap-around next-free search."""

    __slots__ = ("_count", "_ends", "_starts")

    def __init__(self, values: Iterable[int] = ()) -> None:
        self._starts: list[int] = []
        self._ends: list[int] = []
        self._count = 0
        for v in values:
            self.add(v)

    # --- queries -------------------------------------------------------------------------

    def _run_at(self, value: int) -> int:
        """Index of the run containing ``value``, or -1 if ``value`` is free."""
        i = bisect_right(self._starts, value) - 1
        if i >= 0 and self._ends[i] >= value:
            return i
        return -1

    def __contains__(self, value: object) -> bool:
        return isinstance(value, int) and self._run_at(value) >= 0

    def __len__(self) -> int:
        return self._count

    def __iter__(self) -> Iterator[int]:
        for start, end in zip(self._starts, self._ends, strict=True):
            yield from range(start, end + 1)

    @property
    def count(self) -> int:
        """How many addresses are taken."""
        return self._count

    @property
    def runs(self) -> int:
        """How many disjoint runs of taken addresses there are (the index's size)."""
        return len(self._starts)

    def intervals(self) -> list[tuple[int, int]]:
        """The taken runs as inclusive ``(start, end)`` pairs, in order."""
        return list(zip(self._starts, self._ends, strict=True))

    def count_between(self, lo: int, hi: int) -> int:
        """How many taken addresses lie in the inclusive range ``[lo, hi]``."""
        if hi < lo:
            return 0
        total = 0
        i = max(bisect_right(self._starts, lo) - 1, 0)
        while i < len(self._starts) and self._starts[i] <= hi:
            total += max(0, min(self._ends[i], hi) - max(self._starts[i], lo) + 1)
            i += 1
        return total

    def _first_free(self, lo: int, hi: int) -> int | None:
        """Smallest free value in ``[lo, hi]``, or None."""
        if hi < lo:
            return None
        i = self._run_at(lo)
        if i < 0:
            return lo
        # Runs never touch, so the value right after a run is free.
        candidate = self._ends[i] + 1
        return candidate if candidate <= hi else None

    def next_free(self, start: int, lo: int, hi: int) -> int | None:
        """The first free address at or after ``start`` in ``[lo, hi]``, wrapping to ``lo``.

        ``start`` outside ``[lo, hi]`` is treated as ``lo``. Returns None when every address of
        ``[lo, hi]`` is taken.
        """
        if hi < lo:
            return None
        if not lo <= start <= hi:
            start = lo
        found = self._first_free(start, hi)
        if found is None and start > lo:
            found = self._first_free(lo, start - 1)
        return found

    # --- updates -------------------------------------------------------------------------

    def add(self, value: int) -> bool:
        """Mark ``value`` taken; return False if it already was."""
        starts, ends = self._starts, self._ends
        i = bisect_right(starts, value) - 1  # run starting at or before value
        if i >= 0 and ends[i] >= value:
            return False
        joins_left = i >= 0 and ends[i] == value - 1
        joins_right = i + 1 < len(starts) and starts[i + 1] == value + 1
        if joins_left and joins_right:
            ends[i] = ends[i + 1]
            del starts[i + 1]
            del ends[i + 1]
        elif joins_left:
            ends[i] = value
        elif joins_right:
            starts[i + 1] = value
        else:
            starts.insert(i + 1, value)
            ends.insert(i + 1, value)
        self._count += 1
        return True

    def discard(self, value: int) -> bool:
        """Mark ``value`` free; return False if it was not taken."""
        i = self._run_at(value)
        if i < 0:
            return False
        starts, ends = self._starts, self._ends
        start, end = starts[i], ends[i]
        if start == end:
            del starts[i]
            del ends[i]
        elif value == start:
            starts[i] = value + 1
        elif value == end:
            ends[i] = value - 1
        else:
            ends[i] = value - 1
            starts.insert(i + 1, value + 1)
            ends.insert(i + 1, end)
        self._count -= 1
        return True

    def __repr__(self) -> str:
        shown = ", ".join(f"{s}" if s == e else f"{s}-{e}" for s, e in list(self.intervals())[:8])
        more = ", ..." if self.runs > 8 else ""
        return f"AddressIndex(count={self._count}, runs=[{shown}{more}])"
