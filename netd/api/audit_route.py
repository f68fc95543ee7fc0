"""``GET /v1/audit``: the daemon's own audit trail, read through the API (like ``docker events``).

``netd audit`` asks the daemon it talks to, so it reads that daemon's trail wherever its
``state_dir`` or ``[audit] path`` put it, instead of guessing a default file path. Query:

- ``since``: a duration back from now (``10m``, ``2h``, ``1d``) or an RFC 3339 timestamp;
- ``limit``: only the last N records (after ``since``);
- ``follow=1``: first the records so far, then every new one as it is written, as
  newline-delimited JSON (``application/x-ndjson``, chunked) until the client hangs up; the
  tail survives rotation (:func:`netd.security.audit_reader.follow`).

Without ``follow`` the answer is one JSON object ``{"path", "records", "malformed"}``.
Reading it is an administrator's right (root and ``policy.admins``; ``netd.security.policy``):
the trail holds every caller's command line. It never writes.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import threading
from pathlib import Path
from typing import Any

from aiohttp import web
from pydantic import BaseModel, Field

from ..errors import InvalidInput, NotFound
from ..security.audit import AuditLog
from ..security.audit_reader import ReadStats, parse_since, read_records
from ..security.audit_reader import follow as follow_records

AUDIT_LOG: web.AppKey[AuditLog | None] = web.AppKey("audit_log", AuditLog)
STOPPING: web.AppKey[asyncio.Event] = web.AppKey("audit_followers_stop", asyncio.Event)
MAX_LIMIT = 1_000_000
LIMIT_SYNTAX = re.compile("[0-9]{1,7}")  # ASCII digits only (str.isdigit takes "²")
# What /openapi.json states for the query (the API also refuses a timestamp that is no date).
QUERY_SCHEMAS: dict[str, dict[str, str]] = {
    "since": {
        "type": "string",
        "pattern": r"^\s*(([0-9]+[smhdw])+|[0-9]{4}-[0-9]{2}-[0-9]{2}.*)\s*$",
    },
    "limit": {"type": "string", "pattern": "^([1-9][0-9]{0,5}|1000000)$"},
    "follow": {"type": "string"},
}
_TRUE = ("1", "true", "yes")


class AuditPage(BaseModel):
    """GET /v1/audit without ``follow``: the records in order, oldest first."""

    path: str = Field(description="the trail's file (rotated files are path.1, path.2, ...)")
    records: list[dict[str, Any]]
    malformed: int = Field(description="lines skipped because they were not JSON objects")


def _query(request: web.Request) -> tuple[Any, int | None, bool]:
    """``since`` (datetime or None), ``limit`` and ``follow``, validated (InvalidInput)."""
    since_raw = request.query.get("since")
    since = None
    if since_raw:
        try:
            since = parse_since(since_raw)
        except ValueError as exc:
            raise InvalidInput("since", since_raw, str(exc)) from None
    limit_raw = request.query.get("limit")
    limit = None
    if limit_raw:
        if not LIMIT_SYNTAX.fullmatch(limit_raw) or not 1 <= int(limit_raw) <= MAX_LIMIT:
            raise InvalidInput("limit", limit_raw, f"must be an integer from 1 to {MAX_LIMIT}")
        limit = int(limit_raw)
    follow = request.query.get("follow", "").lower() in _TRUE
    return since, limit, follow


def _trail(request: web.Request) -> Path:
    audit = request.app.get(AUDIT_LOG)
    if audit is None:
        raise NotFound(
            "this daemon keeps no audit trail ([audit] enabled = false in its config)",
            field="audit",
            value=None,
        )
    return audit.path


def _read(path: Path, since: Any, limit: int | None) -> tuple[list[dict[str, Any]], int]:
    stats = ReadStats()
    records = list(read_records(path, since, stats))
    return (records[-limit:] if limit else records), stats.malformed


async def get_audit(request: web.Request) -> web.StreamResponse:
    """The audit trail, filtered; with ``follow`` a never-ending NDJSON stream."""
    since, limit, follow = _query(request)
    path = _trail(request)
    if not follow:
        records, malformed = await asyncio.to_thread(_read, path, since, limit)
        page = {"path": str(path), "records": records, "malformed": malformed}
        return web.json_response(page)
    return await _stream(request, path, since, limit)


async def _stream(
    request: web.Request, path: Path, since: Any, limit: int | None
) -> web.StreamResponse:
    """Records so far, then new ones as they come; ends when the client or the daemon goes."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()  # audit lines are few per second
    stop = threading.Event()
    opened = threading.Event()

    def tail() -> None:
        for record in follow_records(path, stop=stop.is_set, opened=opened.set):
            loop.call_soon_threadsafe(queue.put_nowait, record)

    response = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
    response.enable_chunked_encoding()
    await response.prepare(request)
    worker = asyncio.ensure_future(asyncio.to_thread(tail))
    stopping = request.app.get(STOPPING)
    try:
        await asyncio.to_thread(opened.wait, 5)
        # Read the past after the tail fixed "now": a line written in between is in both, and
        # is dropped from the tail below (records carry millisecond times and durations).
        past, _ = await asyncio.to_thread(_read, path, since, limit)
        overlap = {_line(r) for r in past[-64:]}
        for record in past:
            await response.write(_line(record))
        while not (stopping is not None and stopping.is_set()):
            transport = request.transport
            if transport is None or transport.is_closing():
                break  # the client hung up
            try:
                record = await asyncio.wait_for(queue.get(), 0.5)
            except TimeoutError:
                continue
            line = _line(record)
            if line in overlap:
                continue
            overlap.clear()  # only the lines right after the past can repeat
            await response.write(line)
    except ConnectionResetError:
        pass  # the client hung up while we wrote
    finally:
        stop.set()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(asyncio.shield(worker), 2)
    return response


def install(app: web.Application, audit: AuditLog | None) -> None:
    """Serve ``audit``'s trail on GET /v1/audit (before the app starts); followers end at
    shutdown, so a connected ``netd audit --follow`` never holds up a daemon stop."""
    app[AUDIT_LOG] = audit
    stopping = asyncio.Event()
    app[STOPPING] = stopping

    async def end_followers(_: web.Application) -> None:
        stopping.set()

    app.on_shutdown.append(end_followers)


def _line(record: dict[str, Any]) -> bytes:
    return (json.dumps(record, separators=(",", ":")) + "\n").encode()
