"""`netd recover`: rebuild a lost or corrupt state database from the kernel (daemon stopped).

What it does not do: the scanning and rebuilding itself (``netd.recover``).
"""

from __future__ import annotations

from pathlib import Path

import click

from .base import fail


def _names(values: tuple[str, ...]) -> dict[str, str]:
    out = {}
    for value in values:
        prefix, sep, name = value.partition("=")
        if not sep or len(prefix) < 3 or not name:
            raise click.BadParameter(f"{value!r}: expected NETWORK_ID=NAME", param_hint="--name")
        out[prefix] = name
    return out


@click.command()
@click.option("--config", type=click.Path(path_type=Path), help="daemon config (for state_dir)")
@click.option("--state-dir", type=click.Path(path_type=Path), help="default: from the config")
@click.option("--dry-run", is_flag=True, help="scan and report; write and move nothing")
@click.option("--force", is_flag=True, help="also replace a healthy database (moved aside)")
@click.option(
    "--name",
    "names",
    multiple=True,
    metavar="ID=NAME",
    help="name a recovered network (id prefix of ≥ 3 characters); repeatable",
)
def recover(
    config: Path | None,
    state_dir: Path | None,
    dry_run: bool,
    force: bool,
    names: tuple[str, ...],
) -> None:
    """Rebuild the state database from netd's tags in the kernel (run with the daemon stopped).

    Run as root in the namespace the daemon manages. Bridges tagged by netd become networks,
    tagged host veths become endpoints with the addresses and MAC read in their namespace. A
    damaged database is moved aside (netd.db.corrupt-<time>), never deleted. Published ports and
    the firewall's network options are read back from netd's nftables or iptables rules. The
    report says what could not be recovered (names, DNS aliases, options the kernel does not
    keep, endpoints whose namespace is gone). Refuses while the daemon runs.
    """
    from ..config import load_config
    from ..errors import NetdError
    from ..recover import recover as run_recover

    try:
        directory = state_dir or load_config(config).state_dir
        report = run_recover(directory, dry_run=dry_run, force=force, names=_names(names))
    except NetdError as exc:
        fail(f"Error: {exc}")
    click.echo(report.render())
