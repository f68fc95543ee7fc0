"""Operator commands: `netd doctor`, `netd graph`, `netd completion`.

`doctor` prints one line per check (``--format json`` for scripts) and exits 1 when any check
fails; `graph` draws the topology the daemon reports; `completion` prints the shell script that
makes the shell complete netd's commands and options (click's own completion protocol).

What it does not do: the checks and the drawing themselves (``netd.doctor``, ``netd.graph``).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from ..config import DEFAULT_SOCKET
from .base import Ctx, fail, table

EXIT_DOCTOR_FAILED = 1
_MARK = {"ok": "ok", "warn": "WARN", "fail": "FAIL"}


@click.command()
@click.option(
    "--config",
    type=click.Path(path_type=Path),
    help="daemon config to read the socket group and firewall backend from "
    "(default /etc/netd/netd.toml)",
)
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table")
@click.pass_obj
def doctor(obj: Ctx, config: Path | None, fmt: str) -> None:
    """Check this host for what netd needs and say what to fix (read-only).

    Runs in the current network namespace. Exits 1 if any check fails, 0 otherwise (warnings
    included).
    """
    from ..config import load_config
    from ..doctor import run_checks, worst
    from ..errors import ConfigError

    try:
        cfg = load_config(config)
    except ConfigError as exc:
        fail(f"Error: {exc}")
    socket = obj.socket
    if socket == str(DEFAULT_SOCKET) and cfg.socket != DEFAULT_SOCKET:
        socket = str(cfg.socket)
    findings = run_checks(socket, cfg.socket_group, cfg.firewall_backend)
    if fmt == "json":
        click.echo(json.dumps([f.to_dict() for f in findings], indent=2))
    else:
        rows = [[f.check, _MARK[f.status], f.detail] for f in findings]
        click.echo(table(["CHECK", "STATUS", "DETAIL"], rows))
        fixes = [f for f in findings if f.status != "ok" and f.fix]
        if fixes:
            click.echo("\nTo fix:")
            for f in fixes:
                click.echo(f"  {f.check}: {f.fix}")
    if worst(findings) == "fail":
        sys.exit(EXIT_DOCTOR_FAILED)


@click.command()
@click.option(
    "--format", "fmt", type=click.Choice(["svg", "png", "dot"]), default="svg", show_default=True
)
@click.option(
    "-o", "--output", type=click.Path(dir_okay=False, path_type=Path), help="file (default stdout)"
)
@click.pass_obj
def graph(obj: Ctx, fmt: str, output: Path | None) -> None:
    """Draw the topology: networks, bridges, endpoints, published ports (Graphviz)."""
    from ..errors import NetdError
    from ..graph import build_dot, render

    names = [n["name"] for n in obj.call("GET", "/v1/networks")]
    docs = [obj.call("GET", f"/v1/networks/{name}") for name in names]
    try:
        data = render(build_dot(docs), fmt)
    except NetdError as exc:
        fail(f"Error: {exc}")
    if output is not None:
        try:
            output.write_bytes(data)
        except OSError as exc:
            fail(f"Error: writing the graph to {str(output)!r}: {exc.strerror}")
        return
    if fmt == "png" and sys.stdout.isatty():
        fail("Error: refusing to write PNG to a terminal; use -o FILE or a pipe")
    click.echo(data, nl=False)  # bytes go to the binary stream underneath


@click.command()
@click.argument("shell", type=click.Choice(["bash", "zsh", "fish"]))
@click.pass_context
def completion(ctx: click.Context, shell: str) -> None:
    """Print the completion script for SHELL.

    \b
    bash: eval "$(netd completion bash)"   (or save it in /etc/bash_completion.d/netd)
    zsh:  eval "$(netd completion zsh)"
    fish: netd completion fish > ~/.config/fish/completions/netd.fish
    """
    from click.shell_completion import get_completion_class

    root = ctx.find_root().command
    cls = get_completion_class(shell)
    if cls is None:  # click.Choice already limits SHELL; kept for a click without one
        fail(f"Error: no completion support for shell {shell!r}", 2)
    click.echo(cls(root, {}, "netd", "_NETD_COMPLETE").source())
