"""Endpoints whose namespace is gone, as `netd status` and `netd doctor` print them.

Pure formatting over the daemon's ``/v1/status`` answer (its ``reap_grace``, ``netns_gone`` and
``netns_held`` keys, built by :meth:`netd.reap.Reaper.status`); no daemon imports, so the CLI
stays quick to start.
"""

from __future__ import annotations

import time
from typing import Any


def gone_line(ep: dict[str, Any], now: float) -> str:
    """One reaped endpoint: where it was, and when its addresses are released."""
    left = max(0.0, float(ep.get("release_at") or 0) - now)
    return (
        f"{ep.get('network')} {str(ep.get('container_id'))[:12]}/{ep.get('ifname')} "
        f"{' '.join(ep.get('addresses') or [])} netns {ep.get('netns')} "
        f"(net:[{ep.get('netns_inode')}]) gone since {time.ctime(ep.get('gone_since') or 0)}; "
        f"addresses released in {left:.0f} s"
    )


def held_line(ep: dict[str, Any]) -> str:
    """One endpoint whose path is gone but whose namespace lives: what holds it."""
    return (
        f"{ep.get('network')} {str(ep.get('container_id'))[:12]}/{ep.get('ifname')} netns "
        f"{ep.get('netns')} no longer leads to net:[{ep.get('netns_inode')}], which is alive: "
        f"{'; '.join(ep.get('evidence') or [])}"
    )


def status_lines(status: dict[str, Any], now: float | None = None) -> list[str]:
    """The lines `netd status` adds after its counts."""
    now = time.time() if now is None else now
    gone = status.get("netns_gone") or []
    held = status.get("netns_held") or []
    grace = status.get("reap_grace")
    lines = [f"{'gone:':<11}{len(gone)} endpoint(s) whose namespace is gone (reap_grace {grace} s)"]
    lines += [f"  {gone_line(ep, now)}" for ep in gone]
    if held:
        lines.append(f"{'held:':<11}{len(held)} endpoint(s) whose namespace path is gone, alive")
        lines += [f"  {held_line(ep)}" for ep in held]
    return lines
