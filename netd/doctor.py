"""`netd doctor`: read-only checks of the host netd runs on, each with what to fix.

Every check returns :class:`Finding` records ``{check, status, detail, fix}`` with status
``ok``, ``warn`` (netd works, but something will surprise you) or ``fail`` (netd, or part of it,
cannot work as things are). Checks read ``/proc``, ``/sys``, ``/lib/modules``, the nftables
ruleset (libnftables ``list``), ``iptables --version`` and the daemon's ``/v1/status``; they
run in the *current* network namespace, which is the one netd manages when doctor runs beside it.

What it does not do: change anything (no modprobe, no sysctl, no rule), or decide policy for
netd: the daemon still enforces what it needs when it starts or creates a network.
"""

from __future__ import annotations

import grp
import json
import os
import shutil
import stat
import subprocess
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from .requirements import importable, missing

Status = Literal["ok", "warn", "fail"]
# Table and chain names other network managers create (Docker with iptables-nft or its nftables
# backend, Podman's netavark, firewalld's nftables backend).
FOREIGN_TABLE_PREFIXES = {"docker": "Docker", "netavark": "Podman (netavark)"}
FOREIGN_TABLES = {"firewalld": "firewalld"}
FOREIGN_CHAIN_PREFIXES = {"DOCKER": "Docker", "NETAVARK": "Podman (netavark)"}


@dataclass(frozen=True)
class Finding:
    """The outcome of one check."""

    check: str
    status: Status
    detail: str
    fix: str = ""

    def to_dict(self) -> dict[str, str]:
        """JSON shape: check, status, detail, fix."""
        return asdict(self)


def _default_nft(command: str) -> Any:
    """Run one libnftables ``list`` command in JSON mode; OSError on failure."""
    import nftables

    nft = nftables.Nftables()
    nft.set_json_output(True)
    rc, out, err = nft.cmd(command)
    if rc != 0:
        raise OSError(f"nft {command}: {err.strip() or f'exit {rc}'}")
    return json.loads(out or '{"nftables": []}')


def _default_drivers() -> dict[str, str]:
    """``{driver: "" or why this kernel cannot run it}`` for every built-in driver, and for
    ``vlan`` (802.1Q sub-interfaces a macvlan/ipvlan ``parent=IF.VID`` needs).

    Each driver's :meth:`~netd.drivers.base.Driver.available` probes in a throwaway namespace
    (:mod:`netd.kernel.features`): nothing is created where doctor runs.
    """
    from .drivers import DRIVERS, get_driver
    from .kernel.features import missing_link_kind

    out = {}
    for name in DRIVERS:
        if name == "overlay":
            # Doctor checks the kernel, not the config: a node without [cluster] is no kernel
            # fault, so only the VXLAN links the overlay needs are asked about.
            out[name] = missing_link_kind("vxlan")
            continue
        driver = get_driver(name)
        try:
            out[name] = driver.available()
        finally:
            driver.close()
    out["vlan"] = missing_link_kind("vlan")
    return out


def _default_status(socket_path: str) -> Any:
    """GET /v1/status on the daemon socket; OSError when unreachable."""
    from .client import request_json

    status, body = request_json(socket_path, "GET", "/v1/status", timeout=5)
    if status != 200:
        raise OSError(f"/v1/status answered HTTP {status}")
    return body


@dataclass
class Host:
    """Where the checks read from; tests point the paths at a fake tree."""

    proc: Path = Path("/proc")
    sys: Path = Path("/sys")
    modules: Path = Path("/lib/modules")
    release: str = field(default_factory=lambda: os.uname().release)
    nft: Callable[[str], Any] = _default_nft
    status: Callable[[str], Any] = _default_status
    which: Callable[[str], str | None] = shutil.which
    can_import: Callable[[str], bool] = importable
    drivers: Callable[[], dict[str, str]] = _default_drivers

    def has_symbol(self, symbol: str) -> bool:
        """Whether the running kernel has function ``symbol`` (reads /proc/kallsyms)."""
        suffix = f" {symbol}\n"
        try:
            with open(self.proc / "kallsyms") as fh:
                return any(line.endswith(suffix) for line in fh)
        except OSError:
            return False

    def read(self, path: Path) -> str | None:
        """A small /proc or /sys file, stripped; None when missing or unreadable."""
        try:
            return path.read_text().strip()
        except OSError:
            return None


# --- kernel ---------------------------------------------------------------------------------


# A function each module defines: found in /proc/kallsyms when the code is in the kernel, which
# is the only trace of a built-in module without parameters (no /sys/module entry).
MODULE_SYMBOLS = {"bridge": "br_dev_xmit", "veth": "veth_xmit", "br_netfilter": "br_nf_pre_routing"}


def module_state(host: Host, name: str) -> Literal["loaded", "loadable", "missing"]:
    """Whether kernel module ``name`` is in the kernel, could be loaded, or is nowhere."""
    if (host.sys / "module" / name).is_dir():
        return "loaded"  # /sys/module also lists built-in modules with parameters
    mods = host.read(host.proc / "modules") or ""
    if any(line.split(" ", 1)[0] == name for line in mods.splitlines()):
        return "loaded"
    base = host.modules / host.release
    for index in ("modules.builtin", "modules.dep"):
        text = host.read(base / index) or ""
        for line in text.splitlines():
            path = line.split(":", 1)[0]
            stem = path.rsplit("/", 1)[-1].split(".ko", 1)[0]
            if stem.replace("-", "_") == name:
                return "loaded" if index == "modules.builtin" else "loadable"
    symbol = MODULE_SYMBOLS.get(name)
    if symbol and host.has_symbol(symbol):
        return "loaded"
    return "missing"


def check_module(host: Host, name: str, why: str) -> Finding:
    """Bridge/veth: present, or loadable on first use (the kernel autoloads them)."""
    state = module_state(host, name)
    check = f"kernel.{name}"
    if state == "loaded":
        return Finding(check, "ok", f"{name} is in the kernel")
    if state == "loadable":
        return Finding(check, "ok", f"{name} not loaded yet; the kernel loads it on first use")
    return Finding(
        check,
        "fail",
        f"no {name} module for kernel {host.release}: {why}",
        f"install the kernel's modules package, then `modprobe {name}`",
    )


def check_drivers(host: Host) -> Finding:
    """Which network drivers this kernel can run; a missing one is named with its feature."""
    try:
        support = host.drivers()
    except Exception as exc:  # a probe that cannot run says so; it is no verdict on netd
        return Finding("drivers", "warn", f"probing the kernel's link kinds failed: {exc}")
    vlan = support.pop("vlan", "")
    works = sorted(name for name, why in support.items() if not why)
    lacking = {name: why for name, why in sorted(support.items()) if why}
    detail = "this kernel runs drivers " + ", ".join(works)
    if lacking:
        detail += "; not " + "; ".join(f"{name} ({why})" for name, why in lacking.items())
    if vlan and not lacking.get("macvlan"):
        detail += f"; macvlan/ipvlan parent=IF.VID cannot be created ({vlan})"
    if "bridge" in lacking:
        return Finding("drivers", "fail", detail, "netd's default driver needs bridge and veth")
    fix = "load or build the kernel modules named, then restart netd" if lacking or vlan else ""
    return Finding("drivers", "ok", detail, fix)


def check_nftables(host: Host) -> tuple[Finding, list[dict[str, Any]], list[dict[str, Any]]]:
    """libnftables can list this namespace's ruleset; also returns (tables, chains) for later."""
    try:
        tables = [o["table"] for o in host.nft("list tables")["nftables"] if "table" in o]
        chains = [o["chain"] for o in host.nft("list chains")["nftables"] if "chain" in o]
    except ImportError:
        return (
            Finding(
                "nftables",
                "warn",
                "python3-nftables (libnftables bindings) is not importable",
                "apt-get install python3-nftables libnftables1 (or set firewall_backend)",
            ),
            [],
            [],
        )
    except (OSError, ValueError, KeyError) as exc:
        return (
            Finding(
                "nftables",
                "fail",
                f"listing nftables tables failed: {exc}",
                'load nf_tables (`modprobe nf_tables`) or use firewall_backend = "iptables"',
            ),
            [],
            [],
        )
    names = ", ".join(f"{t['family']} {t['name']}" for t in tables) or "none"
    return Finding("nftables", "ok", f"libnftables works; tables: {names}"), tables, chains


def check_requirements(host: Host, backend: str) -> Finding:
    """The Python bindings the daemon refuses to start without (netd.requirements)."""
    absent = missing(backend, host.can_import, lambda: host.which("iptables-restore") is not None)
    if not absent:
        return Finding("python modules", "ok", "seccomp and nftables bindings importable")
    return Finding(
        "python modules",
        "fail",
        "; ".join(r.describe() for r in absent),
        "apt-get install " + " ".join(r.package for r in absent),
    )


def check_iptables(host: Host) -> Finding:
    """iptables/ip6tables binaries (needed only by the iptables backend) and their flavour."""
    found = {b: host.which(b) for b in ("iptables", "ip6tables")}
    missing = [b for b, p in found.items() if p is None]
    if missing:
        return Finding(
            "iptables",
            "warn",
            f'{", ".join(missing)} not found (only needed for firewall_backend = "iptables")',
            "apt-get install iptables",
        )
    try:
        out = subprocess.run(
            [str(found["iptables"]), "--version"], capture_output=True, text=True, timeout=5
        ).stdout.strip()
    except (OSError, subprocess.TimeoutExpired) as exc:
        return Finding("iptables", "warn", f"running iptables --version failed: {exc}")
    return Finding("iptables", "ok", out or "iptables present")


def check_br_netfilter(host: Host, backend: str) -> Finding:
    """br_netfilter makes bridged frames traverse iptables; what that means for each backend."""
    loaded = module_state(host, "br_netfilter") == "loaded"
    if not loaded:
        if backend == "iptables":
            return Finding(
                "br_netfilter",
                "warn",
                "not loaded: the iptables backend cannot isolate containers on one bridge "
                "(icc=false) without it",
                "modprobe br_netfilter (and add it to /etc/modules-load.d/)",
            )
        return Finding("br_netfilter", "ok", "not loaded (the nftables backend does not need it)")
    calls = host.read(host.proc / "sys/net/bridge/bridge-nf-call-iptables")
    if calls == "1" and backend != "iptables":
        return Finding(
            "br_netfilter",
            "warn",
            "loaded with bridge-nf-call-iptables=1: traffic between containers on one bridge "
            "also passes the ip-family FORWARD chains, where a DROP policy (Docker's) drops it",
            "sysctl -w net.bridge.bridge-nf-call-iptables=0, or accept netd bridges there",
        )
    return Finding("br_netfilter", "ok", f"loaded, bridge-nf-call-iptables={calls}")


def check_ip_forward(host: Host, networks: int | None) -> Finding:
    """IPv4 forwarding: netd turns it on, but something may have turned it off since."""
    value = host.read(host.proc / "sys/net/ipv4/ip_forward")
    if value == "1":
        return Finding("ip_forward", "ok", "net.ipv4.ip_forward=1")
    fix = "sysctl -w net.ipv4.ip_forward=1 and find what turned it off (sysctl.d, a firewall)"
    if networks:
        return Finding(
            "ip_forward",
            "fail",
            f"net.ipv4.ip_forward={value} while netd has {networks} network(s): containers "
            "cannot reach other networks or the outside, published ports do not answer",
            fix,
        )
    return Finding(
        "ip_forward",
        "warn",
        f"net.ipv4.ip_forward={value}; netd turns it on when it creates a network",
        fix,
    )


def check_ipv6(host: Host) -> Finding:
    """IPv6 present in the kernel and not disabled, so dual-stack networks can be made."""
    if not (host.proc / "sys/net/ipv6").is_dir():
        return Finding(
            "ipv6",
            "warn",
            "IPv6 is not in this kernel (booted with ipv6.disable=1?): IPv6 networks will fail",
            "remove ipv6.disable=1 from the kernel command line",
        )
    if host.read(host.proc / "sys/net/ipv6/conf/all/disable_ipv6") == "1":
        return Finding(
            "ipv6",
            "warn",
            "net.ipv6.conf.all.disable_ipv6=1: IPv6 networks will get no addresses",
            "sysctl -w net.ipv6.conf.all.disable_ipv6=0",
        )
    return Finding("ipv6", "ok", "IPv6 enabled")


def foreign_owners(tables: list[dict[str, Any]], chains: list[dict[str, Any]]) -> dict[str, str]:
    """Other network managers' nftables objects: {owner: "what was seen"} (pure)."""
    seen: dict[str, list[str]] = {}
    for t in tables:
        name = str(t.get("name", ""))
        owner = FOREIGN_TABLES.get(name) or next(
            (o for p, o in FOREIGN_TABLE_PREFIXES.items() if name.startswith(p)), None
        )
        if owner:
            seen.setdefault(owner, []).append(f"table {t.get('family')} {name}")
    for c in chains:
        name = str(c.get("name", ""))
        owner = next((o for p, o in FOREIGN_CHAIN_PREFIXES.items() if name.startswith(p)), None)
        if owner:
            seen.setdefault(owner, []).append(f"chain {c.get('family')} {c.get('table')} {name}")
    return {owner: ", ".join(sorted(set(items))[:6]) for owner, items in sorted(seen.items())}


def legacy_chains(host: Host) -> list[dict[str, Any]]:
    """Chains in legacy (x_tables) iptables, read only when such tables already exist."""
    names = host.read(host.proc / "net/ip_tables_names")
    binary = host.which("iptables-legacy-save")
    if not names or binary is None:
        return []  # never make the kernel load ip_tables just to look
    try:
        out = subprocess.run([binary], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.TimeoutExpired):
        return []
    chains, table = [], ""
    for line in out.splitlines():
        if line.startswith("*"):
            table = line[1:]
        elif line.startswith(":"):
            chains.append({"family": "ip(legacy)", "table": table, "name": line[1:].split()[0]})
    return chains


_CONFLICT_FIX = {
    "Docker": "Docker's FORWARD policy is DROP: add netd bridges (nd-*) to DOCKER-USER, e.g. "
    "iptables -I DOCKER-USER -i nd-+ -j ACCEPT; iptables -I DOCKER-USER -o nd-+ -j ACCEPT",
    "Podman (netavark)": "keep Podman's and netd's subnets apart "
    "(default_address_pools) and do not share bridges",
    "firewalld": "put netd bridges in a zone that forwards, e.g. firewall-cmd --permanent "
    "--zone=trusted --add-interface=<bridge>",
}


def check_conflicts(
    host: Host, tables: list[dict[str, Any]], chains: list[dict[str, Any]]
) -> list[Finding]:
    """One warning per other network manager whose rules share this namespace with netd's."""
    owners = foreign_owners(tables, chains + legacy_chains(host))
    if not owners:
        return [Finding("conflicts", "ok", "no Docker, Podman or firewalld tables or chains")]
    return [
        Finding(
            f"conflicts.{owner.split()[0].lower()}",
            "warn",
            f"{owner} rules share this host with netd: {what}",
            _CONFLICT_FIX[owner],
        )
        for owner, what in owners.items()
    ]


# --- socket and daemon ----------------------------------------------------------------------


def check_socket(socket_path: str, group: str) -> list[Finding]:
    """The API socket is 0660 and owned by ``group``, which exists."""
    out = []
    try:
        gid: int | None = grp.getgrnam(group).gr_gid
        out.append(Finding("group", "ok", f"group {group!r} exists (gid {gid})"))
    except KeyError:
        gid = None
        out.append(
            Finding(
                "group",
                "warn",
                f"group {group!r} does not exist: only root can use netd",
                "systemd-sysusers (packaging/sysusers.d/netd.conf) or groupadd --system "
                f"{group}; then add users with usermod -aG {group} USER",
            )
        )
    try:
        st = os.stat(socket_path)
    except OSError as exc:
        out.append(
            Finding(
                "socket",
                "warn",
                f"{socket_path}: {exc.strerror}",
                "systemctl enable --now netd.socket (or start `netd daemon`)",
            )
        )
        return out
    mode = stat.S_IMODE(st.st_mode)
    if not stat.S_ISSOCK(st.st_mode):
        out.append(Finding("socket", "fail", f"{socket_path} is not a socket", "remove it"))
    elif mode & 0o007:
        out.append(
            Finding(
                "socket",
                "fail",
                f"{socket_path} has mode {mode:04o}: every local user can drive netd",
                f"chmod 0660 {socket_path} (netd.socket sets SocketMode=0660)",
            )
        )
    elif mode != 0o660 or (gid is not None and st.st_gid != gid):
        out.append(
            Finding(
                "socket",
                "warn",
                f"{socket_path} has mode {mode:04o}, gid {st.st_gid}; expected 0660, group "
                f"{group!r}",
                f"chgrp {group} {socket_path}; chmod 0660 {socket_path}",
            )
        )
    else:
        out.append(Finding("socket", "ok", f"{socket_path} mode 0660, group {group!r}"))
    return out


def check_daemon(host: Host, socket_path: str) -> tuple[Finding, dict[str, Any] | None]:
    """The daemon answers /v1/status; returns its status for the checks that depend on it."""
    try:
        status = host.status(socket_path)
    except (OSError, ValueError) as exc:
        return (
            Finding(
                "daemon",
                "fail",
                f"cannot reach netd at {socket_path}: {exc}",
                "systemctl start netd.socket netd.service; journalctl -u netd for why it stopped",
            ),
            None,
        )
    ready = "ready" if status.get("ready") else "NOT ready"
    return (
        Finding(
            "daemon",
            "ok" if status.get("ready") else "warn",
            f"netd {status.get('version')} pid {status.get('pid')} {ready}: "
            f"{status.get('networks')} network(s), {status.get('endpoints')} endpoint(s), "
            f"firewall {status.get('firewall')}",
        ),
        status,
    )


def check_namespaces(status: dict[str, Any] | None) -> list[Finding]:
    """Endpoints whose namespace is gone (reaped) or unmounted but alive (``/v1/status``)."""
    if status is None or "netns_gone" not in status:
        return []  # no daemon, or one that predates reaping
    from .reconcile.reap_report import gone_line, held_line

    gone, held = status.get("netns_gone") or [], status.get("netns_held") or []
    grace = status.get("reap_grace")
    if not gone and not held:
        return [
            Finding("namespaces", "ok", f"no endpoint's namespace is gone (reap grace {grace} s)")
        ]
    now = time.time()
    lines = [gone_line(ep, now) for ep in gone] + [held_line(ep) for ep in held]
    detail = (
        f"{len(gone)} endpoint(s) whose namespace is gone for good (names and ports withdrawn, "
        f"addresses kept {grace} s), {len(held)} whose namespace path is gone but the namespace "
        "lives: " + " | ".join(lines)
    )
    fix = (
        "nothing for gone ones: netd releases them after reap_grace (or `netd network "
        "disconnect` now); for live ones, find the runtime that unmounted the path and stop "
        "the container with it"
    )
    return [Finding("namespaces", "warn", detail, fix)]


def run_checks(
    socket_path: str, group: str = "netd", backend: str = "auto", host: Host | None = None
) -> list[Finding]:
    """Every check, in a stable order."""
    h = host or Host()
    daemon, status = check_daemon(h, socket_path)
    nft, tables, chains = check_nftables(h)
    networks = int(status.get("networks") or 0) if status else None
    return [
        check_requirements(h, backend),
        check_module(h, "bridge", "netd networks are Linux bridges"),
        check_module(h, "veth", "containers are attached with veth pairs"),
        check_drivers(h),
        nft,
        check_iptables(h),
        check_br_netfilter(h, backend),
        check_ip_forward(h, networks),
        check_ipv6(h),
        *check_conflicts(h, tables, chains),
        *check_socket(socket_path, group),
        daemon,
        *check_namespaces(status),
    ]


def worst(findings: list[Finding]) -> Status:
    """The most severe status among ``findings``."""
    order: dict[Status, int] = {"ok": 0, "warn": 1, "fail": 2}
    return max((f.status for f in findings), key=order.__getitem__, default="ok")
