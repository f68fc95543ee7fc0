"""Entry point of the `netd` command: the group from ``base`` with every subcommand registered."""

from __future__ import annotations

from .audit import audit
from .base import cli
from .compose import compose
from .demo import demo
from .network import network
from .node import node
from .ops import completion, doctor, graph
from .recover import recover
from .tools import cni, dns, firewall

cli.add_command(network)
cli.add_command(node)
cli.add_command(cni)
cli.add_command(firewall)
cli.add_command(dns)
cli.add_command(demo)
cli.add_command(compose)
cli.add_command(doctor)
cli.add_command(graph)
cli.add_command(completion)
cli.add_command(audit)
cli.add_command(recover)


def main() -> None:
    """Console-script entry point."""
    cli(prog_name="netd")
