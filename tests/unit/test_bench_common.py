"""The benchmark helpers: percentiles, summaries, ratios, tables, result files, chunked bodies."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

from common import (
    format_table,
    percentile,
    ratio,
    summarize,
    write_results,
)


def test_percentile_is_nearest_rank() -> None:
    samples = [float(x) for x in range(1, 101)]  # 1..100
    assert percentile(samples, 50) == 50.0
    assert percentile(samples, 95) == 95.0
    assert percentile(samples, 100) == 100.0
    assert percentile([7.0, 1.0, 3.0], 50) == 3.0  # unsorted input
    assert percentile([4.0], 1) == 4.0


@pytest.mark.parametrize("q", [0, -1, 101])
def test_percentile_rejects_q_outside_range(q: float) -> None:
    with pytest.raises(ValueError, match="percentile q must be in"):
        percentile([1.0], q)


def test_percentile_rejects_empty() -> None:
    with pytest.raises(ValueError, match="empty"):
        percentile([], 50)


def test_summarize() -> None:
    s = summarize([10.0, 20.0, 30.0, 40.0])
    assert s == {"n": 4, "p50": 20.0, "p95": 40.0, "max": 40.0, "mean": 25.0}


def test_ratio_handles_missing_and_zero() -> None:
    assert ratio(10.0, 40.0) == 0.25
    assert ratio(None, 1.0) is None
    assert ratio(1.0, None) is None
    assert ratio(1.0, 0.0) is None


def test_format_table_aligns_numbers_right_text_left() -> None:
    text = format_table(["name", "p50"], [["netd", 5.25], ["bridge", 35.0], ["x", None]])
    lines = text.splitlines()
    assert lines[0] == "| name   |  p50 |"
    assert lines[1] == "|--------|-----:|"
    assert lines[2] == "| netd   |  5.2 |"  # one decimal (round half to even)
    assert lines[3] == "| bridge | 35.0 |"
    assert lines[4] == "| x      |    — |"


def test_format_table_rejects_ragged_rows() -> None:
    with pytest.raises(ValueError, match="2 cells, headers have 3"):
        format_table(["a", "b", "c"], [[1, 2]])


def test_write_results(tmp_path: Path) -> None:
    path = write_results("bench_x", {"figure": 1.5}, directory=tmp_path / "results")
    assert path.parent == tmp_path / "results" and path.name.startswith("bench_x-")
    data = json.loads(path.read_text())
    assert data["figure"] == 1.5 and data["timestamp"] in path.name


def test_dechunk() -> None:
    from netns_fixtures.daemon import dechunk

    assert dechunk(b"4\r\nWiki\r\n6;ext=1\r\npedia \r\n0\r\n\r\n") == b"Wikipedia "
