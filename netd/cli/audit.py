"""`netd audit`: read the daemon's audit trail (mutating and denied requests).

Reads the files directly rather than through the API, so it works while the daemon is down; the
files are root-only (mode 0600), so this is an administrator's command. It never writes.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import click

from ..config import DEFAULT_STATE_DIR
from .base import fail, table

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
    help=f"audit log (default {DEFAULT_STATE_DIR}/audit.log; env NETD_AUDIT_LOG)",
)
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table")
def audit(since: str | None, follow: bool, path: Path | None, fmt: str) -> None:
    """Show the audit trail: who changed what, when, with which outcome, and every denial."""
    from ..security.audit_reader import ReadStats, parse_since, read_records
    from ..security.audit_reader import follow as follow_records

    path = path or DEFAULT_STATE_DIR / "audit.log"
    try:
        start = parse_since(since) if since else None
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--since") from None
    if not follow and not path.exists() and not path.with_name(path.name + ".1").exists():
        fail(f"Error: audit log {path} does not exist (--file chooses another)")
    if path.exists() and not os.access(path, os.R_OK):
        fail(f"Error: reading audit log {path}: permission denied (it is root-only)")
    stats = ReadStats()
    records = list(read_records(path, start, stats))
    if fmt == "json":
        for record in records:
            click.echo(json.dumps(record, separators=(",", ":")))
    elif records or not follow:
        click.echo(table(HEADERS, [_row(r) for r in records]))
    if stats.malformed:
        click.echo(f"warning: skipped {stats.malformed} malformed line(s)", err=True)
    if not follow:
        return
    try:
        for record in follow_records(path, stats=stats):
            if fmt == "json":
                click.echo(json.dumps(record, separators=(",", ":")))
            else:
                click.echo("  ".join(_row(record)))
    except KeyboardInterrupt:
        pass
