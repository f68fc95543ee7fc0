"""``netd node ls|rm``: the nodes of a cluster (a daemon with ``store = "etcd"``)."""

from __future__ import annotations

import json
import time
from urllib.parse import quote

import click

from .base import Ctx, table


@click.group()
def node() -> None:
    """Nodes of the cluster (docs/multi-host.md)."""


def _ago(stamp: float) -> str:
    if not stamp:
        return "never"
    seconds = max(0.0, time.time() - stamp)
    if seconds < 120:
        return f"{seconds:.0f} s ago"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min ago"
    return f"{seconds / 3600:.0f} h ago"


@node.command("ls")
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table")
@click.pass_obj
def ls(obj: Ctx, fmt: str) -> None:
    """List nodes: name, underlay address, ready/down, last heartbeat, endpoints, blocks."""
    nodes = obj.call("GET", "/v1/nodes")
    if fmt == "json":
        click.echo(json.dumps(nodes, indent=2))
        return
    rows = [
        [
            n["name"],
            n["address"],
            n["state"],
            _ago(n["last_heartbeat"]),
            str(n["endpoints"]),
            ",".join(n["blocks"]) or "-",
        ]
        for n in nodes
    ]
    click.echo(table(["NAME", "ADDRESS", "STATE", "HEARTBEAT", "ENDPOINTS", "BLOCKS"], rows))


@node.command("rm")
@click.argument("name")
@click.option("--force", is_flag=True, help="also a node that is still ready")
@click.pass_obj
def rm(obj: Ctx, name: str, force: bool) -> None:
    """Forget a dead node and free its addresses and blocks (refused while it is ready)."""
    if not name:
        raise click.BadParameter("a node name is required, not an empty string", param_hint="NAME")
    path = f"/v1/nodes/{quote(name, safe='')}" + ("?force=1" if force else "")
    obj.call("DELETE", path)
    click.echo(name)
