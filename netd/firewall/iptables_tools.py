"""Running the iptables save/restore tools: which variants exist, and one run of one tool.

Shared by the iptables backend (``netd.firewall.iptables``, which writes netd's chains) and the
read-back (``netd.firewall.readback``, which only reads them for ``netd recover``), so neither
imports the other. Nothing here knows netd's chains.
"""

from __future__ import annotations

import shutil
import subprocess

from ..errors import FirewallError

VARIANTS = {
    "auto": ("iptables", "ip6tables"),
    "legacy": ("iptables-legacy", "ip6tables-legacy"),
    "nft": ("iptables-nft", "ip6tables-nft"),
}


def iptables_available(variant: str = "auto") -> bool:
    """True if the restore/save tools of ``variant`` are installed."""
    return all(
        shutil.which(f"{tool}-{verb}") for tool in VARIANTS[variant] for verb in ("restore", "save")
    )


def run_tool(argv: list[str], op: str, stdin: str | None = None) -> str:
    """Run an iptables-save/-restore; its output, or FirewallError naming ``op`` and the tool."""
    try:
        proc = subprocess.run(argv, input=stdin, capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise FirewallError(f"{op}: running {argv[0]}: {exc}") from exc
    if proc.returncode != 0:
        raise FirewallError(f"{op}: {argv[0]} exited {proc.returncode}: {proc.stderr.strip()}")
    return proc.stdout
