"""`netd cni ...` (install the CNI plugin) and `netd firewall show`."""

from __future__ import annotations

from pathlib import Path

import click

from .base import Ctx


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
def install(bin_dir: Path, conf_dir: Path | None, network: str, sock: str | None) -> None:
    """Install the `netd` plugin executable (type name "netd") into BIN_DIR."""
    from ..cni.install import install_plugin

    for path in install_plugin(bin_dir, conf_dir=conf_dir, network=network, socket=sock):
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
