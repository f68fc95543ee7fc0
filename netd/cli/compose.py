"""`netd compose`: bring a compose file's networks and per-service sandboxes to life.

``-f``/``--file``, ``-p``/``--project-name`` and ``--env-file`` are accepted before the verb (as
``docker compose -f F up``) and after it (``netd compose up -f F``). ``up``, ``down``, ``ps``,
``exec`` and ``config``; the work is in :mod:`netd.compose` — this module parses flags, prints
and maps errors to exit codes (1 refused or invalid, 3 daemon unreachable).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from .base import EXIT_REFUSED, EXIT_UNREACHABLE, Ctx, fail, table

F = TypeVar("F", bound=Callable[..., Any])


def _project_options(func: F) -> F:
    func = click.option(
        "--profile",
        "profiles",
        multiple=True,
        help="enable services of this profile (repeatable; default: COMPOSE_PROFILES)",
    )(func)
    func = click.option(
        "--env-file",
        "env_files",
        multiple=True,
        help="variables file (default: .env next to the first file)",
    )(func)
    func = click.option("-p", "--project-name", "project", help="project name")(func)
    func = click.option(
        "-f",
        "--file",
        "files",
        multiple=True,
        help="compose file (repeatable; later ones override)",
    )(func)
    return func


def _load(
    ctx: click.Context,
    files: tuple[str, ...],
    project: str | None,
    env_files: tuple[str, ...],
    profiles: tuple[str, ...] = (),
    services: tuple[str, ...] = (),
    held: bool = False,
) -> Any:
    """The project from its files; with ``held``, ``-p NAME`` alone (no file) finds it in netd."""
    from ..compose.project import find_files, load_project
    from ..errors import NetdError

    outer = ctx.meta.get("netd.compose", {})
    all_files = [*outer.get("files", ()), *files]
    name = project or outer.get("project")
    if held and name and not all_files:
        try:
            find_files([], Path.cwd(), os.environ)
        except NetdError:
            from ..compose.held import project_from_daemon
            from ..compose.project import check_project_name

            return _run(
                lambda: project_from_daemon(
                    _client(ctx), check_project_name(name, "-p/--project-name")
                )
            )
    try:
        loaded = load_project(
            all_files,
            project=name,
            env_files=[*outer.get("env_files", ()), *env_files],
            profiles=[*outer.get("profiles", ()), *profiles],
            services=services,
        )
    except NetdError as exc:
        fail(f"Error: {exc}", EXIT_REFUSED)
    for warning in loaded.warnings:
        click.echo(f"WARNING: {warning}", err=True)
    return loaded


def _client(ctx: click.Context) -> Any:
    from ..compose.client import Client

    obj: Ctx = ctx.find_object(Ctx)  # type: ignore[assignment]
    return Client(obj.socket)


def _run(action: Callable[[], Any]) -> Any:
    from ..errors import NetdError, Unavailable

    try:
        return action()
    except Unavailable as exc:
        fail(f"Error: {exc}", EXIT_UNREACHABLE)
    except NetdError as exc:
        fail(f"Error: {exc}", EXIT_REFUSED)


@click.group()
@_project_options
@click.pass_context
def compose(
    ctx: click.Context,
    files: tuple[str, ...],
    project: str | None,
    env_files: tuple[str, ...],
    profiles: tuple[str, ...],
) -> None:
    """Networks and sandboxes from a compose file (the networking half of `docker compose`)."""
    ctx.meta["netd.compose"] = {
        "files": files,
        "project": project,
        "env_files": env_files,
        "profiles": profiles,
    }


@compose.command()
@_project_options
@click.option("-d", "--detach", is_flag=True, hidden=True, help="accepted; netd never attaches")
@click.argument("services", nargs=-1)
@click.pass_context
def up(
    ctx: click.Context,
    files: tuple[str, ...],
    project: str | None,
    env_files: tuple[str, ...],
    profiles: tuple[str, ...],
    detach: bool,
    services: tuple[str, ...],
) -> None:
    """Create the networks and one sandbox namespace per service replica (idempotent).

    With SERVICE names: only those services and what they depend on; others are left as is.
    """
    from ..compose.apply import up as do_up
    from ..compose.plan import sandboxes
    from .progress import live_actions

    proj = _load(ctx, files, project, env_files, profiles, services)
    # Each action is shown as it happens (a bar on a terminal): many services take a while.
    units = [n.name for n in proj.networks.values() if not n.external]
    units += [sb.name for sb in sandboxes(proj)]
    with live_actions("netd.compose.apply", units, f"project {proj.name}"):
        report = _run(lambda: do_up(_client(ctx), proj))
    if not report.lines:
        click.echo(f"project {proj.name}: up to date, nothing changed")


@compose.command()
@_project_options
@click.option("-v", "--volumes", is_flag=True, help="accepted for compatibility (no volumes here)")
@click.option("--remove-orphans", is_flag=True, help="accepted; orphans are always removed")
@click.pass_context
def down(
    ctx: click.Context,
    files: tuple[str, ...],
    project: str | None,
    env_files: tuple[str, ...],
    profiles: tuple[str, ...],
    volumes: bool,
    remove_orphans: bool,
) -> None:
    """Remove the project's sandboxes, endpoints and networks (and nothing else)."""
    from ..compose.apply import down as do_down

    proj = _load(ctx, files, project, env_files, profiles, held=True)
    report = _run(lambda: do_down(_client(ctx), proj))
    for line in report.lines:
        click.echo(line)
    if report.failures:
        fail("Error: " + "\n".join(report.failures), EXIT_REFUSED)


@compose.command()
@_project_options
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table")
@click.pass_context
def ps(
    ctx: click.Context,
    files: tuple[str, ...],
    project: str | None,
    env_files: tuple[str, ...],
    profiles: tuple[str, ...],
    fmt: str,
) -> None:
    """List services, sandboxes, addresses and published ports."""
    from ..compose.apply import ps as do_ps

    proj = _load(ctx, files, project, env_files, profiles, held=True)
    rows = _run(lambda: do_ps(_client(ctx), proj))
    if fmt == "json":
        click.echo(json.dumps(rows, indent=2))
        return
    out = []
    for r in rows:
        nets = " ".join(f"{n}={','.join(a)}" for n, a in r["networks"].items())
        out.append([r["service"], r["sandbox"], r["state"], nets, ", ".join(r["ports"])])
    click.echo(table(["SERVICE", "SANDBOX", "STATE", "NETWORKS", "PORTS"], out))


@compose.command(
    name="exec", context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False}
)
@_project_options
@click.option("--index", type=int, default=None, help="replica number (default 1)")
@click.argument("service")
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
@click.pass_context
def exec_(
    ctx: click.Context,
    files: tuple[str, ...],
    project: str | None,
    env_files: tuple[str, ...],
    profiles: tuple[str, ...],
    index: int | None,
    service: str,
    command: tuple[str, ...],
) -> None:
    """Run COMMAND in SERVICE[.N]'s sandbox, with its resolv.conf, hosts and hostname.

    Exits with the command's code; 127 when the command is not found, 126 when it cannot be
    run (as a shell and docker compose do).
    """
    from ..compose import uts

    proj = _load(ctx, files, project, env_files, profiles, held=True)
    name, _, num = service.partition(".")
    if name not in proj.services and service in proj.services:
        name, num = service, ""
    target = next((s for s in (service, name) if s in proj.defined), None)
    if name not in proj.services and target is not None:
        # A service named on the command line is enabled whatever its profiles (compose).
        proj = _load(ctx, files, project, env_files, profiles, (target,))
        name, num = (target, "") if target == service else (name, num)
    if name not in proj.services:
        fail(
            f"Error: no service {name!r} in project {proj.name} ({', '.join(proj.services)})",
            EXIT_REFUSED,
        )
    n = index or (int(num) if num.isdigit() else 1)
    svc = proj.services[name]
    argv = list(command[1:] if command and command[0] == "--" else command)
    if not argv:
        fail("Error: exec needs a command", EXIT_REFUSED)
    _check_command(argv[0])
    if svc.network_mode == "host":
        os.execvp(argv[0], argv)  # network_mode: host shares the caller's network namespace
    owner = proj.services[svc.shares] if svc.shares else svc
    if not 1 <= n <= owner.replicas:
        fail(f"Error: service {name!r} has replicas 1..{owner.replicas}, not {n}", EXIT_REFUSED)
    sandbox = proj.sandbox_name(owner.name, n)
    if not Path("/run/netns", sandbox).exists():
        fail(f"Error: sandbox {sandbox} does not exist; run `netd compose up` first", EXIT_REFUSED)
    # The sandbox's hostname: its own UTS namespace (entered here, kept across the exec).
    uts.enter(sandbox)
    # `ip netns exec` is what bind-mounts /etc/netns/<sandbox>/{resolv.conf,hosts} over /etc.
    os.execvp("ip", ["ip", "netns", "exec", sandbox, *argv])


def _check_command(name: str) -> None:
    """Exit 127 (not found) or 126 (not executable) as a shell would, before ``ip`` (255)."""
    import shutil

    if "/" in name:
        if not os.path.exists(name):
            fail(f"Error: exec: {name!r}: no such file or directory", 127)
        if os.path.isdir(name) or not os.access(name, os.X_OK):
            fail(f"Error: exec: {name!r}: permission denied", 126)
    elif shutil.which(name) is None:
        fail(f"Error: exec: {name!r}: executable file not found in $PATH", 127)


@compose.command()
@_project_options
@click.option("--format", "fmt", type=click.Choice(["yaml", "json"]), default="yaml")
@click.pass_context
def config(
    ctx: click.Context,
    files: tuple[str, ...],
    project: str | None,
    env_files: tuple[str, ...],
    profiles: tuple[str, ...],
    fmt: str,
) -> None:
    """Print the resolved networking model (after merge, include, extends, interpolation)."""
    import yaml

    from ..compose.plan import network_body, sandboxes

    proj = _load(ctx, files, project, env_files, profiles)
    data = proj.to_dict()
    data["plan"] = {
        "networks": [network_body(n) for n in proj.networks.values() if not n.external],
        "sandboxes": {
            sb.name: [{"network": net, **body} for net, body in sb.connects]
            for sb in sandboxes(proj)
        },
    }
    if fmt == "json":
        click.echo(json.dumps(data, indent=2))
    else:
        click.echo(yaml.safe_dump(data, sort_keys=False), nl=False)
