"""Reading the audit trail back: rotated files in order, a time filter, and a rotation-aware tail.

Used by the daemon's ``GET /v1/audit`` (``netd audit``) and by ``netd audit --file``, which
reads the files directly (they are root-only, mode 0600) and so works while the daemon is
down. Lines that are not JSON objects are skipped and counted (a line cut by a full disk must
not hide the rest). It never writes.
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

_DURATION = re.compile(r"([0-9]+)([smhdw])")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_since(value: str, *, now: datetime | None = None) -> datetime:
    """``--since``: a duration back from now (``90s``, ``10m``, ``1h30m``, ``2d``) or an RFC 3339
    / ISO 8601 timestamp (naive ones are taken as UTC). ValueError naming the value otherwise."""
    text = value.strip()
    if re.fullmatch(r"([0-9]+[smhdw])+", text):
        seconds = sum(int(n) * _UNITS[u] for n, u in _DURATION.findall(text))
        try:
            return (now or datetime.now(UTC)) - timedelta(seconds=seconds)
        except OverflowError:  # e.g. 99999999999d: before year 1
            raise ValueError(f"--since {value!r}: too far back") from None
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(
            f"--since {value!r}: expected a duration like 10m, 2h, 1d or a timestamp like "
            "2025-01-31T12:00:00Z"
        ) from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def record_time(record: dict[str, Any]) -> datetime | None:
    """The record's ``time`` as an aware datetime (None if missing or malformed)."""
    value = record.get("time")
    if not isinstance(value, str):
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def rotated_files(path: Path) -> list[Path]:
    """``path.N`` ... ``path.1``, ``path``: the existing files of the trail, oldest first."""
    backups = []
    for candidate in path.parent.glob(path.name + ".*"):
        suffix = candidate.name[len(path.name) + 1 :]
        if suffix.isdigit():
            backups.append((int(suffix), candidate))
    files = [p for _, p in sorted(backups, reverse=True)]
    if path.exists():
        files.append(path)
    return files


@dataclass
class ReadStats:
    """What a read skipped."""

    malformed: int = 0


def parse_line(line: bytes, stats: ReadStats) -> dict[str, Any] | None:
    """One line as a record, or None (counted) if it is not a JSON object."""
    if not line.strip():
        return None
    try:
        record = json.loads(line)
    except (ValueError, UnicodeDecodeError):
        stats.malformed += 1
        return None
    if not isinstance(record, dict):
        stats.malformed += 1
        return None
    return record


def read_records(
    path: Path, since: datetime | None = None, stats: ReadStats | None = None
) -> Iterator[dict[str, Any]]:
    """Every record of the trail (rotated files first), optionally only those at/after ``since``."""
    stats = stats if stats is not None else ReadStats()
    for file in rotated_files(path):
        try:
            with open(file, "rb") as fh:
                lines = list(fh)
        except FileNotFoundError:
            continue  # rotated away while we listed
        for line in lines:
            record = parse_line(line, stats)
            if record is None:
                continue
            if since is not None:
                moment = record_time(record)
                if moment is None or moment < since:
                    continue
            yield record


def follow(
    path: Path,
    *,
    poll: float = 0.2,
    stop: Callable[[], bool] = lambda: False,
    stats: ReadStats | None = None,
    opened: Callable[[], None] = lambda: None,
) -> Iterator[dict[str, Any]]:
    """Records appended to ``path`` from now on, surviving rotation (until ``stop()``).

    Rotation is noticed when ``path`` names another inode or shrinks: what is left in the old
    file is read first, then the new file from its start. ``opened()`` is called once "now" is
    fixed (the file opened at its end), so a caller can read the past after it without a gap.
    """
    stats = stats if stats is not None else ReadStats()
    fh = _open_at_end(path)
    opened()
    pending = b""
    while not stop():
        chunk = fh.read() if fh is not None else b""
        if chunk:
            pending += chunk
            *lines, pending = pending.split(b"\n")
            for line in lines:
                record = parse_line(line, stats)
                if record is not None:
                    yield record
            continue
        if _rotated(path, fh):
            if fh is not None:
                fh.close()
            fh = _open(path)
            pending = b""
            continue
        time.sleep(poll)
    if fh is not None:
        fh.close()


def _open(path: Path) -> Any:
    try:
        return open(path, "rb")  # closed by follow()
    except FileNotFoundError:
        return None


def _open_at_end(path: Path) -> Any:
    fh = _open(path)
    if fh is not None:
        fh.seek(0, os.SEEK_END)
    return fh


def _rotated(path: Path, fh: Any) -> bool:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return False  # between rename and re-create: keep the old file for now
    if fh is None:
        return True
    own = os.fstat(fh.fileno())
    return st.st_ino != own.st_ino or st.st_size < fh.tell()
