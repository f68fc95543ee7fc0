"""Worker records and verification (netd/dns/handover.py): only a verified worker is signalled.

The "worker" here is a real process whose command line names ``netd.dns.worker`` (a sleeping
Python), started and reaped by the test; no root needed.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from netd.dns.handover import (
    VerifiedProcess,
    WorkerRecord,
    build_id,
    forget,
    mismatch,
    read_records,
    record_path,
    start_time,
    stop_workers,
    write_record,
)
from netd.dns.stats import sum_query_stats


@pytest.fixture
def fake_worker() -> Iterator[subprocess.Popen[bytes]]:
    proc = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(60)", "netd.dns.worker"]
    )
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()


def _record(proc: subprocess.Popen[bytes], index: int = 0) -> WorkerRecord:
    started = start_time(proc.pid)
    assert started is not None
    return WorkerRecord(
        index=index, pid=proc.pid, start_time=started, uid=os.getuid(), token="t" * 32,
        build=build_id(), settings={"workers": 1},
    )  # fmt: skip


def test_record_round_trip_and_bad_files_are_skipped(tmp_path: Path) -> None:
    rec = WorkerRecord(0, 123, 456, 65534, "tok", "b", {"ttl": 5})
    write_record(tmp_path, rec)
    write_record(tmp_path, replace(rec, index=1, pid=124))
    (tmp_path / "worker-2.json").write_text("{not json")
    (tmp_path / "worker-3.json").write_text(json.dumps({"index": 3}))  # fields missing
    # a record under another index's name is not trusted
    (tmp_path / "worker-4.json").write_text(record_path(tmp_path, 1).read_text())
    assert read_records(tmp_path) == {0: rec, 1: replace(rec, index=1, pid=124)}
    assert oct(record_path(tmp_path, 0).stat().st_mode & 0o777) == "0o600"
    forget(tmp_path, 0)
    assert 0 not in read_records(tmp_path)


def test_live_worker_verifies(fake_worker: subprocess.Popen[bytes]) -> None:
    rec = _record(fake_worker)
    assert mismatch(rec) is None
    proc, reason = VerifiedProcess.open(rec)
    assert proc is not None and reason is None and proc.alive()
    proc.stop(timeout=2)
    assert fake_worker.wait(timeout=5) != 0


@pytest.mark.parametrize(
    ("change", "why"),
    [
        ({"start_time": 1}, "reused pid"),
        ({"uid": 4321}, "runs as uid"),
    ],
)
def test_a_process_that_does_not_match_is_never_signalled(
    fake_worker: subprocess.Popen[bytes], change: dict[str, int], why: str
) -> None:
    rec = replace(_record(fake_worker), **change)  # type: ignore[arg-type]
    assert why in (mismatch(rec) or "")
    proc, reason = VerifiedProcess.open(rec)
    assert proc is None and reason is not None and why in reason
    assert fake_worker.poll() is None  # still running


def test_another_program_under_the_pid_is_not_a_worker() -> None:
    me = os.getpid()
    started = start_time(me)
    assert started is not None
    rec = WorkerRecord(0, me, started, os.getuid(), "t", "b")
    assert "not netd.dns.worker" in (mismatch(rec) or "")


def test_gone_pid(fake_worker: subprocess.Popen[bytes]) -> None:
    rec = _record(fake_worker)
    fake_worker.kill()
    fake_worker.wait()
    assert "gone" in (mismatch(rec) or "")
    assert VerifiedProcess.open(rec)[0] is None


def test_stop_workers_stops_verified_ones_and_drops_stale_records(
    tmp_path: Path, fake_worker: subprocess.Popen[bytes]
) -> None:
    write_record(tmp_path, _record(fake_worker, 0))
    write_record(tmp_path, replace(_record(fake_worker, 1), start_time=1))  # pid reused
    lines = stop_workers(tmp_path)
    assert lines[0].startswith(f"worker 0: stopped pid {fake_worker.pid}")
    assert lines[1].startswith("worker 1: not running") and "reused pid" in lines[1]
    assert fake_worker.wait(timeout=5) != 0
    assert read_records(tmp_path) == {}


def test_build_id_is_stable() -> None:
    assert build_id() == build_id()
    assert len(build_id()) == 16 and int(build_id(), 16) >= 0


def test_query_stats_are_summed_over_workers() -> None:
    one = {"queries": {"results": {"noerror": 2}, "buckets": [1, 1], "bounds": [0.1], "sum": 0.5,
                       "count": 2, "cache_hits": 1}, "upstream_failures": 1}  # fmt: skip
    total = sum_query_stats([one, one])
    assert total["results"] == {"noerror": 4} and total["buckets"] == [2, 2]
    assert total["count"] == 4 and total["cache_hits"] == 2 and total["upstream_failures"] == 2
    assert sum_query_stats([])["count"] == 0
