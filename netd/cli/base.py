"""The `netd` command group, its shared context and output helpers, and `daemon`/`status`.

Verbs, flags and output shapes follow `docker network` where they apply: tables by default,
``--format json`` for scripts, ``-q`` for ids only. Errors go to stderr with a non-zero exit code:
1 the daemon refused the request (the message names the field and value), 2 usage error,
3 the daemon is not reachable.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any, NoReturn

import click

from ..config import DEFAULT_SOCKET

EXIT_REFUSED = 1
EXIT_UNREACHABLE = 3


class Ctx:
    """Per-invocation settings shared by subcommands."""

    def __init__(self, socket: str | None) -> None:
        self.socket = socket or os.environ.get("NETD_SOCKET") or str(DEFAULT_SOCKET)

    def call(self, method: str, path: str, body: Any = None) -> Any:
        """One API request; exits with the daemon's error message on failure."""
        from ..cni.wire import request_json

        try:
            status, data = request_json(self.socket, method, path, body, timeout=120)
        except OSError as exc:
            fail(
                f"cannot reach the netd daemon at {self.socket}: {exc.strerror or exc}; "
                "is `netd daemon` running? (--socket / NETD_SOCKET choose another socket)",
                EXIT_UNREACHABLE,
            )
        if status >= 400:
            err = data.get("error", {}) if isinstance(data, dict) else {}
            fail(f"Error: {err.get('message') or data}", EXIT_REFUSED)
        return data


def fail(message: str, code: int = EXIT_REFUSED) -> NoReturn:
    """Print to stderr and exit."""
    click.echo(message, err=True)
    sys.exit(code)


def table(headers: list[str], rows: list[list[Any]]) -> str:
    """A docker-style plain table."""
    from tabulate import tabulate

    return tabulate(rows, headers=headers, tablefmt="plain", disable_numparse=True)


def kv_pairs(values: tuple[str, ...], flag: str) -> dict[str, str]:
    """KEY=VALUE flags into a dict; a missing '=' is a usage error naming the flag."""
    out = {}
    for item in values:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"{item!r} is not KEY=VALUE", param_hint=flag)
        out[key] = value
    return out


def _print_version(ctx: click.Context, _param: click.Parameter, value: bool) -> None:
    # Eager and lazy: the build lookup (maybe a git call) runs only when asked for.
    if not value or ctx.resilient_parsing:
        return
    from .version import version_text

    click.echo(version_text())
    ctx.exit()


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--version",
    "-v",
    is_flag=True,
    expose_value=False,
    is_eager=True,
    callback=_print_version,
    help="Show the version and build (git commit) and exit.",
)
@click.option(
    "--socket",
    "-H",
    envvar="NETD_SOCKET",
    help=f"daemon socket (default {DEFAULT_SOCKET}; env NETD_SOCKET)",
)
@click.pass_context
def cli(ctx: click.Context, socket: str | None) -> None:
    """netd: container networking daemon and its client."""
    ctx.obj = Ctx(socket)


@cli.command()
@click.option(
    "--config", type=click.Path(path_type=Path), help="config file (default /etc/netd/netd.toml)"
)
@click.option("--state-dir", type=click.Path(path_type=Path), help="default /var/lib/netd")
@click.option("--firewall-backend", type=click.Choice(["auto", "nftables", "iptables", "none"]))
@click.option("--managed-netns", help="refuse to start unless in this network namespace")
@click.option("--log-level", type=click.Choice(["debug", "info", "warning", "error"]))
@click.option(
    "--socket",
    "daemon_socket",
    type=click.Path(path_type=Path, dir_okay=False),
    help="API socket to serve (default: netd --socket / NETD_SOCKET, else the config's socket, "
    f"else {DEFAULT_SOCKET})",
)
@click.pass_obj
def daemon(
    obj: Ctx,
    config: Path | None,
    state_dir: Path | None,
    firewall_backend: str | None,
    managed_netns: str | None,
    log_level: str | None,
    daemon_socket: Path | None,
) -> None:
    """Run the daemon in the foreground (root; logs to stderr)."""
    from ..config import load_config
    from ..daemon import run
    from ..errors import ConfigError

    # `netd daemon --socket P` and `netd --socket P daemon` mean the same; the former wins.
    sock: str | Path | None = daemon_socket or (
        obj.socket if obj.socket != str(DEFAULT_SOCKET) else None
    )
    try:
        cfg = load_config(
            config,
            {
                "state_dir": state_dir,
                "socket": sock,
                "firewall_backend": firewall_backend,
                "managed_netns": managed_netns,
                "log_level": log_level,
            },
        )
    except ConfigError as exc:
        fail(f"Error: {exc}")
    from ..logs import setup_logging

    setup_logging(cfg.log_level, cfg.log_format, sys.stderr)
    sys.exit(run(cfg))


@cli.command()
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table")
@click.pass_obj
def status(obj: Ctx, fmt: str) -> None:
    """Summarise the daemon's health; exits 1 when it is not ready (``reason`` says why)."""
    data = obj.call("GET", "/v1/status")
    if fmt == "json":
        click.echo(json.dumps(data, indent=2))
    else:
        for key in ("version", "ready", "reason", "pid", "networks", "endpoints", "firewall"):
            if key in data:
                click.echo(f"{key + ':':<11}{data[key]}")
        from ..reconcile.reap_report import status_lines

        for line in status_lines(data):
            click.echo(line)
    if not data.get("ready"):
        sys.exit(1)
