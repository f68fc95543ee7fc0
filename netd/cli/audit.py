"""`netd audit`: read the daemon's audit trail (mutating and denied requests).

By default it asks the daemon it talks to (``GET /v1/audit``, like ``docker events``), so it
reads that daemon's trail wherever its state directory or ``[audit] path`` put it; the daemon
allows it to root and ``policy.admins`` only. ``--file`` reads a trail's files directly instead
(root-only, mode 0600), which works while the daemon is down. It never writes.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import click

from .base import EXIT_UNREACHABLE, Ctx, fail, table

HEADERS = ["TIME", "UID", "PID", "ACTION", "TARGET", "OUTCOME", "STATUS", "DETAIL"]


def _row(record: dict[str, Any]) -> list[str]:
    if "event" in record:  # e.g. audit_dropped: the trail has a gap
        extra = ", ".join(f"{k}={v}" for k, v in record.items() if k not in ("time", "event"))
        return [str(record.get("time", "")), "", "", str(record["event"]), "", "", "", extra]
    caller = record.get("caller") or {}
    target = record.get("target") or {}
    detail = record.get("error") or (
        record.get("reason") if record.get("outcome") == "denied" else ""
    )
    return [
        str(record.get("time", "")),
        str(caller.get("uid", "")),
        str(caller.get("pid", "")),
        str(record.get("action", "")),
        " ".join(f"{k}={v}" for k, v in target.items()),
        str(record.get("outcome", "")),
        str(record.get("status", "")),
        str(detail or ""),
    ]


@click.command()
@click.option(
    "--since",
    metavar="DURATION|TIMESTAMP",
    help="only records from this long ago (10m, 2h, 1d) or this time (2025-01-31T12:00:00Z)",
)
@click.option("--follow", "-f", is_flag=True, help="keep printing new records (survives rotation)")
@click.option(
    "--file",
    "path",
    type=click.Path(path_type=Path, dir_okay=False),
    envvar="NETD_AUDIT_LOG",
    help="read this audit log directly instead of asking the daemon (works while it is down; "
    "env NETD_AUDIT_LOG)",
)
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table")
@click.pass_obj
def audit(obj: Ctx, since: str | None, follow: bool, path: Path | None, fmt: str) -> None:
    """Show the audit trail: who changed what, when, with which outcome, and every denial."""
    from ..security.audit_reader import parse_since

    try:
        start = parse_since(since) if since else None
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--since") from None
    if path is None:
        _from_daemon(obj, since, follow, fmt)
    else:
        _from_file(path, start, follow, fmt)


def _emit(records: Iterable[dict[str, Any]], fmt: str, *, streaming: bool) -> None:
    if fmt == "json":
        for record in records:
            click.echo(json.dumps(record, separators=(",", ":")))
    elif streaming:
        for record in records:
            click.echo("  ".join(_row(record)))
    else:
        click.echo(table(HEADERS, [_row(r) for r in records]))


def _from_daemon(obj: Ctx, since: str | None, follow: bool, fmt: str) -> None:
    """GET /v1/audit on the daemon's socket (a stream of NDJSON lines with --follow)."""
    from urllib.parse import urlencode

    params = {"since": since, "follow": "1" if follow else None}
    query = urlencode({k: v for k, v in params.items() if v})
    url = "/v1/audit" + (f"?{query}" if query else "")
    if not follow:
        page = obj.call("GET", url)
        _emit(page["records"], fmt, streaming=False)
        if page.get("malformed"):
            click.echo(f"warning: skipped {page['malformed']} malformed line(s)", err=True)
        return
    from ..client import open_connection

    conn = open_connection(obj.socket, timeout=None)
    try:
        conn.request("GET", url)
        resp = conn.getresponse()
    except OSError as exc:
        fail(
            f"cannot reach the netd daemon at {obj.socket}: {exc.strerror or exc}; is `netd "
            "daemon` running? (--file reads an audit log directly while it is down)",
            EXIT_UNREACHABLE,
        )
    if resp.status >= 400:
        try:
            message = json.loads(resp.read())["error"]["message"]
        except (ValueError, KeyError, TypeError):
            message = f"HTTP {resp.status}"
        fail(f"Error: {message}")
    if fmt == "table":
        click.echo("  ".join(HEADERS))
    try:
        for line in resp:
            if line.strip():
                _emit([json.loads(line)], fmt, streaming=True)
    except KeyboardInterrupt:
        pass
    finally:
        conn.close()


def _from_file(path: Path, start: Any, follow: bool, fmt: str) -> None:
    """The trail's files read directly (rotated files first), then tailed with --follow."""
    from ..security.audit_reader import ReadStats, read_records
    from ..security.audit_reader import follow as follow_records

    if not follow and not path.exists() and not path.with_name(path.name + ".1").exists():
        fail(f"Error: audit log {path} does not exist")
    if path.exists() and not os.access(path, os.R_OK):
        fail(f"Error: reading audit log {path}: permission denied (it is root-only)")
    stats = ReadStats()
    records = list(read_records(path, start, stats))
    if records or not follow:
        _emit(records, fmt, streaming=False)
    if stats.malformed:
        click.echo(f"warning: skipped {stats.malformed} malformed line(s)", err=True)
    if not follow:
        return
    with contextlib.suppress(KeyboardInterrupt):
        _emit(follow_records(path, stats=stats), fmt, streaming=True)
