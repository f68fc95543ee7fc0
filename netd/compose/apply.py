"""``compose up`` / ``down`` / ``ps``: make the daemon and the sandboxes match the project.

``up`` reads the daemon's state, runs every check that could fail half-way
(:func:`netd.compose.plan.check_state`) before changing anything, then applies in order with an
undo list — networks, sandboxes, connections, /etc/netns files — and undoes in reverse on
failure. A sandbox whose endpoints already match is left alone, so ``up`` twice changes
nothing. ``down`` is best-effort: it carries on past failures and reports them all at the end.
The project's sandboxes are remembered in /run/netd-compose/<project>.json, so ``down`` also
finds replicas removed from the file since ``up``.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from ..errors import NetdError, NotFound, Unavailable
from . import sandbox as kernel
from . import uts
from .client import Client
from .model import LABEL_PROJECT, Project
from .plan import (
    Sandbox,
    State,
    changed_networks,
    check_state,
    network_body,
    render_hosts,
    render_resolv,
    sandbox_matches,
    sandboxes,
)

log = logging.getLogger(__name__)
STATE_DIR = Path("/run/netd-compose")


@dataclass
class Report:
    """What an operation did, line by line (printed by the CLI)."""

    lines: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)

    def add(self, text: str) -> None:
        """Record one action."""
        self.lines.append(text)
        log.info("%s", text)


def read_state(client: Client, project: Project) -> State:
    """The daemon's networks that concern the project, each with its endpoints."""
    wanted = {n.name for n in project.networks.values()}
    state = State()
    for net in client.networks():
        if net["name"] in wanted or net.get("labels", {}).get(LABEL_PROJECT) == project.name:
            state.networks[net["name"]] = client.network(net["name"])
    return state


def read_owned(name: str, state_dir: Path = STATE_DIR) -> dict[str, Any]:
    """The state file of project ``name``: ``sandboxes`` and ``shared`` ({service: owner})."""
    try:
        data = json.loads((state_dir / f"{name}.json").read_text())
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def _owned(project: Project, state_dir: Path) -> set[str]:
    return set(read_owned(project.name, state_dir).get("sandboxes", []))


def _save_owned(project: Project, names: set[str], state_dir: Path) -> None:
    path = state_dir / f"{project.name}.json"
    if not names:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        return
    shared = dict(read_owned(project.name, state_dir).get("shared", {}))
    shared.update({s.name: s.shares for s in project.services.values() if s.shares})
    state_dir.mkdir(parents=True, exist_ok=True)
    data = {"project": project.name, "sandboxes": sorted(names), "shared": shared}
    path.write_text(json.dumps(data) + "\n")


def service_of(project: str, sandbox: str) -> tuple[str, int] | None:
    """(service, replica) from a sandbox name ``<project>-<service>-<n>``."""
    head, _, num = sandbox.removeprefix(f"{project}-").rpartition("-")
    if not sandbox.startswith(f"{project}-") or not head or not num.isdigit():
        return None
    return head, int(num)


def _is_stale(project: Project, sandbox: str) -> bool:
    """Whether ``up`` removes an owned sandbox the plan does not have.

    Services gone from the file are orphans (removed); services the file still defines but
    that are disabled by profiles, or not named by ``up SERVICE...``, are left alone.
    """
    found = service_of(project.name, sandbox)
    if found is None:
        return True
    service = found[0]
    if service not in project.defined:
        return True
    if service not in project.services:
        return False  # disabled by profiles: not ours to touch in this run
    return project.targets is None or service in project.targets


def _blame(project: Project, path: str, exc: NetdError) -> NetdError:
    """The daemon's error, pointed at the compose file's line, keeping its class (exit code)."""
    detail = getattr(exc, "daemon_message", None) or str(exc)
    where = project.where(path)
    prefix = f"{where[0]}:{where[1]}: " if where and where[1] else ""
    out = type(exc).__new__(type(exc))
    NetdError.__init__(out, f"{prefix}{path}: {detail}", field=path)
    return out


def _connect_path(sb: Sandbox, key: str, exc: NetdError) -> str:
    """The compose key a failed connect is about, from the daemon's error field."""
    field_ = exc.field or ""
    base = f"services.{sb.service}"
    if field_.startswith(("port_mappings", "publish")):
        return f"{base}.ports"
    if field_ == "hostname":
        return f"{base}.hostname"
    for prefix, key_ in (
        ("mac", "mac_address"),
        ("ifname", "interface_name"),
        ("aliases", "aliases"),
        ("ips", "ipv4_address"),
        ("static_ips", "ipv4_address"),
    ):
        if field_.startswith(prefix):
            return f"{base}.networks.{key}.{key_}"
    return f"{base}.networks.{key}"


class _Undo:
    def __init__(self) -> None:
        self.steps: list[tuple[str, Callable[[], None]]] = []

    def push(self, what: str, step: Callable[[], None]) -> None:
        self.steps.append((what, step))

    def run(self) -> None:
        for what, step in reversed(self.steps):
            try:
                step()
            except Exception as exc:  # best-effort: carry on, say what stayed behind
                log.warning("undo %s failed: %s", what, exc)


def _disconnect_all(client: Client, state: State, name: str, report: Report) -> None:
    for net, _ in state.endpoints_of(name):
        with contextlib.suppress(NotFound):
            client.disconnect(net, name)
        report.add(f"disconnected {name} from {net}")


def _gateway(client: Client, network: str | None) -> str | None:
    if network is None:
        return None
    for s in client.network(network).get("subnets", []):
        if s.get("gateway"):
            return str(s["gateway"])
    return None


def up(client: Client, project: Project, state_dir: Path = STATE_DIR) -> Report:
    """Create or update the project's networks and sandboxes; idempotent."""
    report = Report()
    state = read_state(client, project)
    internal = frozenset(
        n.name
        for n in project.networks.values()
        if n.external and state.networks.get(n.name, {}).get("internal")
    )
    plan = sandboxes(project, internal)
    check_state(project, state, plan)
    undo = _Undo()
    owned = _owned(project, state_dir)
    try:
        recreate = {n.name for n in changed_networks(project, state)}
        for sb in plan:  # a recreated network first loses our endpoints on it
            if any(net in recreate for net, _ in state.endpoints_of(sb.name)):
                _disconnect_all(client, state, sb.name, report)
                state = read_state(client, project)
        for net in project.networks.values():
            if net.external:
                continue
            if net.name in recreate:
                client.remove_network(net.name)
                report.add(f"removed changed network {net.name}")
            if net.name in recreate or net.name not in state.networks:
                try:
                    client.create_network(network_body(net))
                except Unavailable:
                    raise
                except NetdError as exc:
                    raise _blame(project, f"networks.{net.key}", exc) from exc
                report.add(f"created network {net.name}")
                if net.name not in recreate:
                    undo.push(f"network {net.name}", partial(client.remove_network, net.name))
        state = read_state(client, project)
        for sb in plan:
            _up_sandbox(client, project, state, sb, undo, report)
            owned.add(sb.name)
        for name in sorted(owned - {sb.name for sb in plan}):
            if not _is_stale(project, name):
                continue
            _disconnect_all(client, state, name, report)
            kernel.remove_sandbox(name)
            owned.discard(name)
            report.add(f"removed sandbox {name} (no longer in the project)")
    except BaseException:
        undo.run()
        raise
    _save_owned(project, owned, state_dir)
    return report


def _up_sandbox(
    client: Client, project: Project, state: State, sb: Sandbox, undo: _Undo, report: Report
) -> None:
    svc = project.services[sb.service]
    created = kernel.ensure_sandbox(sb.name)
    if created:
        report.add(f"created sandbox {sb.name}")
        undo.push(f"sandbox {sb.name}", lambda: kernel.remove_sandbox(sb.name))
    # docker: the hostname is the container's own (default: its name, as in the hosts file)
    hostname = svc.hostname or sb.name[: uts.HOST_NAME_MAX - 1]
    if uts.ensure(sb.name, hostname, svc.domainname) and not created:
        report.add(f"set the hostname of {sb.name} to {hostname}")
    if not created and sandbox_matches(sb, state):
        have = dict(state.endpoints_of(sb.name))
        answers = [have[net] for net, _ in sb.connects]
        resolv_now = kernel.read_etc(sb.name, "resolv.conf")
        if resolv_now is not None or not sb.connects:
            _write_files(client, svc, sb, answers, report, keep_dns=resolv_now)
            return
    _disconnect_all(client, state, sb.name, report)
    answers = []
    for net, body in sb.connects:
        try:
            ep = client.connect(net, body)
        except Unavailable:
            raise
        except NetdError as exc:
            key = next(n.key for n in project.networks.values() if n.name == net)
            raise _blame(project, _connect_path(sb, key, exc), exc) from exc
        undo.push(f"endpoint {sb.name} on {net}", partial(client.disconnect, net, sb.name))
        answers.append(ep)
        report.add(f"connected {sb.name} to {net}: {' '.join(ep.get('addresses', []))}")
    for net, ips in sb.link_local:
        ifname = next(
            a["ifname"] for a, (n, _) in zip(answers, sb.connects, strict=True) if n == net
        )
        kernel.add_addresses(sb.name, ifname, ips)
    _write_files(client, svc, sb, answers, report, keep_dns=None)


def _write_files(
    client: Client,
    svc: Any,
    sb: Sandbox,
    answers: list[dict[str, Any]],
    report: Report,
    keep_dns: str | None,
) -> None:
    first = sb.connects[0][0] if sb.connects else None
    hosts = render_hosts(
        svc, sb.name, answers, _gateway(client, first) if svc.extra_hosts else None
    )
    if keep_dns is not None and all("dns" not in a for a in answers):
        # The connect answer (with the daemon's DNS servers) is only given on connect: when
        # nothing changed, the resolv.conf written then is still right unless `dns*` changed.
        resolv = _refresh_resolv(keep_dns, svc)
    else:
        resolv = render_resolv(svc, answers)
    if kernel.write_etc(sb.name, {"resolv.conf": resolv, "hosts": hosts}):
        report.add(f"wrote /etc/netns/{sb.name}/resolv.conf and hosts")


def _refresh_resolv(current: str, svc: Any) -> str:
    servers = [ln.split()[1] for ln in current.splitlines() if ln.startswith("nameserver ")]
    search = next((ln.split()[1:] for ln in current.splitlines() if ln.startswith("search ")), [])
    netd_servers = [s for s in servers if s not in svc.dns]
    netd_search = [s for s in search if s not in svc.dns_search]
    answer = {"dns": {"nameservers": netd_servers, "search": netd_search}}
    return render_resolv(svc, [answer])


def down(client: Client, project: Project, state_dir: Path = STATE_DIR) -> Report:
    """Remove the project's sandboxes, their endpoints and /etc/netns dirs, and its networks."""
    report = Report()
    names = _owned(project, state_dir) | {sb.name for sb in sandboxes(project)}
    try:
        state = read_state(client, project)
    except NetdError as exc:
        report.failures.append(str(exc))
        state = State()
    for name in sorted(names):
        for net, _ in state.endpoints_of(name):
            try:
                client.disconnect(net, name)
                report.add(f"disconnected {name} from {net}")
            except NotFound:
                pass
            except NetdError as exc:
                report.failures.append(str(exc))
        if kernel.exists(name):
            try:
                kernel.remove_sandbox(name)
                report.add(f"removed sandbox {name}")
            except NetdError as exc:
                report.failures.append(str(exc))
        else:
            kernel.remove_sandbox(name)  # a stray /etc/netns dir
    for net_name, info in state.networks.items():
        if info.get("labels", {}).get(LABEL_PROJECT) != project.name:
            continue  # external networks and other projects' are not ours to remove
        try:
            client.remove_network(net_name)
            report.add(f"removed network {net_name}")
        except NetdError as exc:
            report.failures.append(str(exc))
    if not report.failures:
        _save_owned(project, set(), state_dir)
    return report


def ps(client: Client, project: Project) -> list[dict[str, Any]]:
    """One row per sandbox (and per service without one): networks, addresses, ports."""
    state = read_state(client, project)
    rows: list[dict[str, Any]] = []
    for sb in sandboxes(project):
        eps = state.endpoints_of(sb.name)
        rows.append(
            {
                "service": ",".join([sb.service, *sb.users]),
                "sandbox": sb.name,
                "state": "up" if kernel.exists(sb.name) else "missing",
                "networks": {net: ep.get("addresses", []) for net, ep in eps},
                "ports": [
                    f"{p.get('host_ip') or '0.0.0.0'}:{p['host_port']}->"
                    f"{p['container_port']}/{p.get('protocol', 'tcp')}"
                    for _, ep in eps
                    for p in ep.get("port_mappings") or []
                ],
            }
        )
    for svc in project.services.values():
        if svc.network_mode == "host":
            rows.append(
                {
                    "service": svc.name,
                    "sandbox": "(host)",
                    "state": "host",
                    "networks": {},
                    "ports": [],
                }
            )
    return rows
