"""Sandbox network namespaces of compose services, and their /etc/netns files.

A sandbox is a named namespace under /run/netns made with ``pyroute2.netns.create`` (never by
exec'ing ``ip``), with ``lo`` up; the daemon plugs the interfaces in. ``ip netns exec`` bind-mounts
/etc/netns/<name>/resolv.conf and hosts over /etc, which is how ``compose exec`` gives a
sandbox its DNS settings. Only namespaces named by the caller are touched: this module never
configures the namespace it runs in.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import shutil
from pathlib import Path

from pyroute2 import netns as pr_netns

from ..errors import KernelError
from ..kernel.netns import iproute_in
from . import uts

NETNS_DIR = Path("/run/netns")
ETC_NETNS = Path("/etc/netns")


def exists(name: str) -> bool:
    """True if the named namespace exists."""
    return (NETNS_DIR / name).exists()


def ensure_sandbox(name: str) -> bool:
    """Create namespace ``name`` with ``lo`` up unless it exists; True if it was created."""
    if exists(name):
        return False
    try:
        pr_netns.create(name)
    except OSError as exc:
        raise KernelError(f"creating network namespace {name!r}: {exc.strerror or exc}") from exc
    try:
        with iproute_in(str(NETNS_DIR / name)) as ipr:
            idx = ipr.link_lookup(ifname="lo")
            ipr.link("set", index=idx[0], state="up")
    except Exception as exc:
        remove_sandbox(name)
        raise KernelError(f"setting lo up in network namespace {name!r}: {exc}") from exc
    return True


def remove_sandbox(name: str) -> None:
    """Delete namespace ``name``, its UTS namespace and /etc/netns directory (missing: fine)."""
    uts.remove(name)
    if exists(name):
        try:
            pr_netns.remove(name)
        except OSError as exc:
            raise KernelError(
                f"removing network namespace {name!r}: {exc.strerror or exc}"
            ) from exc
    shutil.rmtree(ETC_NETNS / name, ignore_errors=True)


def add_addresses(name: str, ifname: str, ips: tuple[str, ...]) -> None:
    """Add link-local addresses (``link_local_ips``) to ``ifname`` in sandbox ``name``."""
    with iproute_in(str(NETNS_DIR / name)) as ipr:
        idx = ipr.link_lookup(ifname=ifname)
        if not idx:
            raise KernelError(f"adding link-local addresses in {name!r}: no interface {ifname!r}")
        for ip in ips:
            addr = ipaddress.ip_address(ip)
            prefix = 16 if addr.version == 4 else 64
            try:
                ipr.addr("add", index=idx[0], address=str(addr), prefixlen=prefix)
            except Exception as exc:
                if "File exists" not in str(exc):
                    raise KernelError(f"adding {ip} to {ifname!r} in {name!r}: {exc}") from exc


def write_etc(name: str, files: dict[str, str]) -> bool:
    """Write /etc/netns/<name>/<file> for each file; True if anything changed."""
    etc = ETC_NETNS / name
    changed = False
    for fname, text in files.items():
        path = etc / fname
        with contextlib.suppress(OSError):
            if path.read_text() == text:
                continue
        etc.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(text)
        os.replace(tmp, path)
        changed = True
    return changed


def read_etc(name: str, fname: str) -> str | None:
    """Contents of /etc/netns/<name>/<fname>, or None."""
    try:
        return (ETC_NETNS / name / fname).read_text()
    except OSError:
        return None
