"""AddressIndex: merged-interval set of taken addresses with wrap-around next-free search."""

from __future__ import annotations

import itertools

from hypothesis import given, settings
from hypothesis import strategies as st

from netd.ipam.index import AddressIndex


def test_empty_index_everything_free() -> None:
    idx = AddressIndex()
    assert idx.count == 0
    assert 5 not in idx
    assert idx.next_free(5, 0, 10) == 5
    assert idx.next_free(0, 0, 10) == 0


def test_add_merges_adjacent_runs() -> None:
    idx = AddressIndex()
    for v in (1, 3, 2):
        assert idx.add(v)
    assert idx.intervals() == [(1, 3)]
    assert idx.count == 3
    assert not idx.add(2), "adding a taken value reports False"
    assert idx.count == 3


def test_add_joins_left_or_right_only() -> None:
    idx = AddressIndex([10, 20])
    idx.add(11)
    idx.add(19)
    assert idx.intervals() == [(10, 11), (19, 20)]


def test_discard_splits_and_shrinks_runs() -> None:
    idx = AddressIndex(range(1, 6))
    assert idx.discard(3)
    assert idx.intervals() == [(1, 2), (4, 5)]
    assert idx.discard(1)
    assert idx.discard(5)
    assert idx.intervals() == [(2, 2), (4, 4)]
    assert idx.discard(2)
    assert idx.intervals() == [(4, 4)]
    assert not idx.discard(2), "discarding a free value reports False"
    assert idx.count == 1


def test_next_free_skips_a_run_and_stays_in_bounds() -> None:
    idx = AddressIndex(range(0, 100))
    assert idx.next_free(0, 0, 200) == 100
    assert idx.next_free(50, 0, 200) == 100
    assert idx.next_free(0, 0, 99) is None


def test_next_free_wraps_around() -> None:
    idx = AddressIndex([2, 3, 8, 9, 10])
    # 8..10 taken, wrap to the low end: 1 is free.
    assert idx.next_free(8, 1, 10) == 1
    idx.add(1)
    assert idx.next_free(8, 1, 10) == 4


def test_next_free_start_outside_bounds_means_lo() -> None:
    idx = AddressIndex([5])
    assert idx.next_free(100, 5, 9) == 6
    assert idx.next_free(0, 5, 9) == 6


def test_next_free_full_range_is_none() -> None:
    idx = AddressIndex(range(10, 20))
    assert idx.next_free(15, 10, 19) is None
    assert idx.next_free(15, 19, 10) is None, "an empty range has nothing free"


def test_ipv6_sized_values() -> None:
    base = 0xFD00 << 112
    idx = AddressIndex([base, base + 1, base + 2**64 - 1])
    assert idx.next_free(base + 2**64 - 1, base, base + 2**64 - 1) == base + 2
    assert idx.runs == 2


def test_full_range_is_one_run() -> None:
    idx = AddressIndex(range(1, 65535))
    assert idx.runs == 1
    assert idx.count == 65534


def test_count_between() -> None:
    idx = AddressIndex([1, 2, 3, 7, 8, 20])
    assert idx.count_between(0, 100) == 6
    assert idx.count_between(2, 7) == 3
    assert idx.count_between(4, 6) == 0
    assert idx.count_between(9, 8) == 0


def _brute_next_free(model: set[int], start: int, lo: int, hi: int) -> int | None:
    if not lo <= start <= hi:
        start = lo
    for v in [*range(start, hi + 1), *range(lo, start)]:
        if v not in model:
            return v
    return None


ops = st.lists(st.tuples(st.booleans(), st.integers(0, 63)), max_size=200)


@settings(max_examples=200, deadline=None)
@given(ops=ops, start=st.integers(-2, 66), lo=st.integers(0, 40), width=st.integers(0, 30))
def test_index_agrees_with_a_set(
    ops: list[tuple[bool, int]], start: int, lo: int, width: int
) -> None:
    idx = AddressIndex()
    model: set[int] = set()
    for add, v in ops:
        if add:
            assert idx.add(v) == (v not in model)
            model.add(v)
        else:
            assert idx.discard(v) == (v in model)
            model.discard(v)
    assert set(idx) == model
    assert idx.count == len(model)
    assert all((v in idx) == (v in model) for v in range(-1, 66))
    runs = idx.intervals()
    for (_, e1), (s2, _) in itertools.pairwise(runs):
        assert e1 + 1 < s2, "runs are sorted, disjoint and never adjacent"
    hi = lo + width
    assert idx.next_free(start, lo, hi) == _brute_next_free(model, start, lo, hi)
    assert idx.count_between(lo, hi) == sum(1 for v in model if lo <= v <= hi)
