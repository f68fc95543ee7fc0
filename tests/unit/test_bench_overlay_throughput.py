"""The overlay throughput benchmark's ratio: paired per round, not a ratio of two medians."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

from bench_overlay_throughput import paired_ratio


def _runs(*rates: float) -> list[dict[str, float]]:
    return [{"gbit_s": r, "retransmits": 0.0} for r in rates]


def test_ratio_pairs_each_round_with_the_same_rounds_reference() -> None:
    # A load that comes and goes halves both paths in rounds 2 and 3, and the overlay alone in
    # rounds 4 and 5: the per-round ratios are 0.9, 0.9, 0.9, 0.45, 0.45 (median 0.9), while
    # the two medians (9 and 20) would say 0.45.
    results = {
        "kernel vxlan": _runs(20.0, 10.0, 10.0, 20.0, 20.0),
        "netd overlay": _runs(18.0, 9.0, 9.0, 18.0, 18.0),
    }
    results["netd overlay"][3]["gbit_s"] = 9.0
    results["netd overlay"][4]["gbit_s"] = 9.0
    assert paired_ratio(results, "netd overlay", "kernel vxlan") == pytest.approx(0.9)
    assert paired_ratio(results, "kernel vxlan", "kernel vxlan") == pytest.approx(1.0)


def test_ratio_refuses_paths_with_different_round_counts() -> None:
    results = {"a": _runs(1.0, 2.0), "b": _runs(1.0)}
    with pytest.raises(ValueError):
        paired_ratio(results, "a", "b")
