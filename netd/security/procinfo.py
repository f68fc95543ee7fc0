"""What the kernel says about a calling process beyond SO_PEERCRED: groups and command line.

SO_PEERCRED carries only the caller's uid, gid and pid. Its supplementary groups (needed to tell
members of the manage group) and its command line (for the audit trail) are read from
``/proc/<pid>`` at request time. A pid can be reused after the caller exits, so the groups are
trusted only when ``/proc/<pid>/status`` still shows the caller's effective uid; otherwise the
groups the user database gives the uid (``os.getgrouplist``) are used instead.

This module only reads; it decides nothing (see ``policy``).
"""

from __future__ import annotations

import os
import pwd
from pathlib import Path

from ..model import Caller

PROC = Path("/proc")
CMDLINE_LIMIT = 512


def read_cmdline(pid: int, *, proc_root: Path = PROC, limit: int = CMDLINE_LIMIT) -> str | None:
    """``/proc/<pid>/cmdline`` with NULs as spaces, cut to ``limit`` characters (None if gone)."""
    try:
        with open(proc_root / str(pid) / "cmdline", "rb") as fh:
            raw = fh.read(limit * 4 + 1)
    except OSError:
        return None
    text = raw.rstrip(b"\0").replace(b"\0", b" ").decode("utf-8", "replace")
    return text[:limit] + "..." if len(text) > limit else text


def proc_groups(caller: Caller, *, proc_root: Path = PROC) -> frozenset[int] | None:
    """Supplementary groups of the calling process, or None if /proc cannot vouch for them.

    None when the process is gone, its status is unreadable, or its effective uid is no longer
    the caller's (the pid was reused by someone else).
    """
    try:
        text = (proc_root / str(caller.pid) / "status").read_text()
    except OSError:
        return None
    uids: list[int] | None = None
    groups: list[int] | None = None
    for line in text.splitlines():
        key, _, value = line.partition(":")
        try:
            if key == "Uid":
                uids = [int(v) for v in value.split()]
            elif key == "Groups":
                groups = [int(v) for v in value.split()]
        except ValueError:
            return None
    # Uid: real, effective, saved, filesystem; SO_PEERCRED reports the effective uid.
    if uids is None or len(uids) < 2 or uids[1] != caller.uid or groups is None:
        return None
    return frozenset(groups)


def database_groups(caller: Caller) -> frozenset[int]:
    """The uid's groups from the user database (empty if the uid has no passwd entry)."""
    try:
        name = pwd.getpwuid(caller.uid).pw_name
    except KeyError:
        return frozenset()
    try:
        return frozenset(os.getgrouplist(name, caller.gid))
    except OSError:
        return frozenset()


def caller_groups(caller: Caller, *, proc_root: Path = PROC) -> frozenset[int]:
    """Every group of the caller: its gid plus /proc's supplementary groups (else getgrouplist)."""
    groups = proc_groups(caller, proc_root=proc_root)
    if groups is None:
        groups = database_groups(caller)
    return groups | {caller.gid}
