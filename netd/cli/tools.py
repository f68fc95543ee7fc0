"""`netd cni install`, `netd firewall show`, `netd dns lookup` and `netd dns stop`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

import click

from .base import Ctx, fail


@click.group()
def cni() -> None:
    """CNI plugin helpers."""


@cni.command("install")
@click.option(
    "--bin-dir",
    type=click.Path(path_type=Path),
    default=Path("/opt/cni/bin"),
    show_default=True,
    help="the runtime's CNI_PATH directory",
)
@click.option(
    "--conf-dir",
    type=click.Path(path_type=Path),
    help="also write an example conflist here (e.g. /etc/cni/net.d)",
)
@click.option("--network", default="netd", show_default=True, help="network name in the conflist")
@click.option("--socket", "sock", help="daemon socket to put in the conflist")
@click.option(
    "--client",
    type=click.Choice(["auto", "c", "python"]),
    default="auto",
    show_default=True,
    help="plugin executable: compiled C client (~1 ms start-up; needs cc), Python script, or "
    "C when a compiler is found",
)
def install(
    bin_dir: Path,
    conf_dir: Path | None,
    network: str,
    sock: str | None,
    client: Literal["auto", "c", "python"],
) -> None:
    """Install the `netd` plugin executable (type name "netd") into BIN_DIR."""
    from ..cni.install import install_plugin

    paths = install_plugin(bin_dir, conf_dir=conf_dir, network=network, socket=sock, client=client)
    for path in paths:
        click.echo(str(path))


@click.group()
def firewall() -> None:
    """Inspect netd's firewall rules."""


@firewall.command("show")
@click.pass_obj
def firewall_show(obj: Ctx) -> None:
    """Print the live ruleset of netd's tables (nft syntax) or chains (iptables-save)."""
    data = obj.call("GET", "/v1/firewall")
    click.echo(f"# backend: {data['backend']}")
    click.echo(data["ruleset"].rstrip())


@click.group()
def dns() -> None:
    """Query netd's DNS from the host; stop its workers for good."""


@dns.command("lookup")
@click.argument("name")
@click.option("--network", help="only this network's names")
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table")
@click.pass_obj
def dns_lookup(obj: Ctx, name: str, network: str | None, fmt: str) -> None:
    """Resolve a container name, alias or hostname; exit 1 if it has no address."""
    from urllib.parse import urlencode

    query = urlencode({"name": name, **({"network": network} if network else {})})
    data = obj.call("GET", f"/v1/dns/lookup?{query}")
    if fmt == "json":
        click.echo(json.dumps(data, indent=2))
    else:
        click.echo("\n".join(data["addresses"]))
    if not data["addresses"]:
        fail(f"Error: {name!r} does not resolve", 1)


@dns.command("stop")
@click.option("--config", type=click.Path(path_type=Path), help="daemon config (for state_dir)")
@click.option("--state-dir", type=click.Path(path_type=Path), help="default: from the config")
def dns_stop(config: Path | None, state_dir: Path | None) -> None:
    """Stop the DNS workers for good (run with the daemon stopped; as root).

    The DNS workers outlive `netd daemon` on purpose, so containers keep resolving names while
    it restarts. To stop everything (e.g. before uninstalling): `systemctl stop netd`, then
    this. Only processes that match the records in STATE_DIR/dns (pid, start time, uid,
    command line) are signalled. Refuses while a daemon holds the state directory.
    """
    from ..config import load_config
    from ..dns.handover import stop_workers
    from ..errors import NetdError
    from ..instance_lock import InstanceLock

    try:
        directory = state_dir or load_config(config).state_dir
        lock = InstanceLock(directory)
        lock.acquire()  # a running daemon would restart the workers at once
    except NetdError as exc:
        fail(f"Error: {exc}")
    except OSError as exc:
        fail(f"Error: opening the state directory {str(directory)!r}: {exc.strerror}")
    try:
        lines = stop_workers(directory / "dns")
    finally:
        lock.release()
    click.echo("\n".join(lines) if lines else "no DNS workers recorded")
