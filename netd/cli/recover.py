"""`netd recover`: rebuild a lost or corrupt state database from the kernel (daemon stopped).

What it does not do: the scanning and rebuilding itself (``netd.reconcile.recover``).
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
@click.option(
    "--copy-dir",
    type=click.Path(path_type=Path),
    help="the recovery copy (default: recovery_dir from the config, else <state-dir>/recovery)",
)
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
    copy_dir: Path | None,
    dry_run: bool,
    force: bool,
    names: tuple[str, ...],
) -> None:
    """Rebuild the state database from the recovery copy and the kernel (daemon stopped).

    Run as root in the namespace the daemon manages. Networks and endpoints come back as the
    recovery copy records them (names, options, labels, owners, DNS names, aliases, ports),
    the kernel deciding which endpoints still exist (a tagged host veth) and with which
    addresses and MAC. What the copy lacks is rebuilt from the kernel alone: tagged bridges
    become networks, tagged host veths endpoints, published ports and the firewall's options
    are read back from netd's nftables or iptables rules. A damaged database is moved aside
    (netd.db.corrupt-<time>), never deleted. The report says what could not be recovered.
    Refuses while the daemon runs.
    """
    from ..config import DEFAULT_CONFIG, load_config
    from ..errors import NetdError
    from ..reconcile.recover import recover as run_recover

    try:
        # The config is read even with --state-dir when it exists: it may put the copy elsewhere.
        wanted = config is not None or state_dir is None or DEFAULT_CONFIG.exists()
        cfg = load_config(config) if wanted else None
        directory = state_dir or (cfg.state_dir if cfg else Path())
        copy = copy_dir or (cfg.recovery_dir if cfg else None) or directory / "recovery"
        report = run_recover(
            directory, dry_run=dry_run, force=force, names=_names(names), copy_dir=copy
        )
    except NetdError as exc:
        fail(f"Error: {exc}")
    click.echo(report.render())
