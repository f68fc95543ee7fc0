"""`netd network ...`: create, ls, inspect, rm, prune, connect, disconnect.

Flag pairing follows docker: each --gateway / --ip-range / --aux-address belongs to the --subnet
that contains it; one that fits no --subnet is a usage error naming it.
"""

from __future__ import annotations

import ipaddress
import json
import re
from typing import Any

import click

from .base import Ctx, fail, kv_pairs, table

_PUBLISH = re.compile(
    r"^(?:(?P<ip>\[[0-9a-fA-F:.]+\]|[0-9.]+):)?(?P<host>\d+)(?:-(?P<host_end>\d+))?"
    r":(?P<cont>\d+)(?:-(?P<cont_end>\d+))?(?:/(?P<proto>tcp|udp|sctp))?$"
)


def parse_publish(spec: str) -> list[dict[str, Any]]:
    """``[HOSTIP:]HOSTPORT[-END]:CONTAINERPORT[-END][/proto]`` into port dicts (ranges expanded)."""
    m = _PUBLISH.match(spec)
    if not m:
        raise click.BadParameter(
            f"{spec!r} is not [HOSTIP:]HOSTPORT[-END]:CONTAINERPORT[-END][/tcp|udp|sctp]",
            param_hint="--publish",
        )
    host, cont = int(m["host"]), int(m["cont"])
    host_end = int(m["host_end"] or host)
    cont_end = int(m["cont_end"] or (cont + host_end - host))
    if not (0 < host <= host_end <= 65535 and 0 < cont <= cont_end <= 65535):
        raise click.BadParameter(
            f"{spec!r}: ports must be 1-65535, ranges ascending", param_hint="--publish"
        )
    if host_end - host != cont_end - cont:
        raise click.BadParameter(
            f"{spec!r}: host and container ranges differ in length", param_hint="--publish"
        )
    ip = m["ip"].strip("[]") if m["ip"] else None
    return [
        {
            "host_port": host + i,
            "container_port": cont + i,
            "protocol": m["proto"] or "tcp",
            "host_ip": ip,
        }
        for i in range(host_end - host + 1)
    ]


def _subnet_of(value: str, subnets: list[dict[str, Any]], flag: str) -> dict[str, Any]:
    try:
        addr = ipaddress.ip_network(value, strict=False)
    except ValueError:
        raise click.BadParameter(f"{value!r} is not an address", param_hint=flag) from None
    for s in subnets:
        try:
            net = ipaddress.ip_network(s["subnet"], strict=False)
        except ValueError:
            continue  # the daemon reports the bad subnet with its own message
        if addr.version == net.version and addr.subnet_of(net):  # type: ignore[arg-type]
            return s
    raise click.BadParameter(f"{value!r} is not inside any --subnet", param_hint=flag)


@click.group()
def network() -> None:
    """Manage networks."""


@network.command("create")
@click.argument("name")
@click.option("--driver", "-d", default="bridge", show_default=True)
@click.option("--subnet", multiple=True, help="CIDR; repeat for several (IPv4 and IPv6)")
@click.option("--gateway", multiple=True)
@click.option("--ip-range", multiple=True)
@click.option("--aux-address", multiple=True, help="NAME=IP reserved address")
@click.option("--ipv6", is_flag=True, help="enable IPv6 (a ULA /64 if no IPv6 --subnet)")
@click.option("--ipv4/--no-ipv4", default=True, show_default=True)
@click.option("--internal", is_flag=True, help="no traffic beyond the network's subnets")
@click.option("--opt", "-o", multiple=True, help="driver option KEY=VALUE")
@click.option("--label", multiple=True, help="KEY=VALUE")
@click.option("--format", "fmt", type=click.Choice(["id", "json"]), default="id")
@click.pass_obj
def create(
    obj: Ctx,
    name: str,
    driver: str,
    subnet: tuple[str, ...],
    gateway: tuple[str, ...],
    ip_range: tuple[str, ...],
    aux_address: tuple[str, ...],
    ipv6: bool,
    ipv4: bool,
    internal: bool,
    opt: tuple[str, ...],
    label: tuple[str, ...],
    fmt: str,
) -> None:
    """Create a network; prints its id."""
    subnets: list[dict[str, Any]] = [{"subnet": s, "aux_addresses": {}} for s in subnet]
    for gw in gateway:
        target = _subnet_of(gw, subnets, "--gateway")
        if "gateway" in target:
            raise click.BadParameter(f"two gateways for {target['subnet']}", param_hint="--gateway")
        target["gateway"] = gw
    for rng in ip_range:
        _subnet_of(rng, subnets, "--ip-range")["ip_range"] = rng
    for key, value in kv_pairs(aux_address, "--aux-address").items():
        _subnet_of(value, subnets, "--aux-address")["aux_addresses"][key] = value
    body = {
        "name": name,
        "driver": driver,
        "subnets": subnets,
        "ipv6": ipv6,
        "ipv4": ipv4,
        "internal": internal,
        "options": kv_pairs(opt, "--opt"),
        "labels": kv_pairs(label, "--label"),
    }
    data = obj.call("POST", "/v1/networks", body)
    click.echo(json.dumps(data, indent=2) if fmt == "json" else data["id"])


@network.command("ls")
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table")
@click.option("--quiet", "-q", is_flag=True, help="only ids")
@click.option("--filter", "-f", "filters", multiple=True, help="name=..., label=K[=V], driver=...")
@click.pass_obj
def ls(obj: Ctx, fmt: str, quiet: bool, filters: tuple[str, ...]) -> None:
    """List networks."""
    nets = [n for n in obj.call("GET", "/v1/networks") if _matches(n, filters)]
    if quiet:
        click.echo("\n".join(n["id"][:12] for n in nets))
    elif fmt == "json":
        click.echo(json.dumps(nets, indent=2))
    else:
        rows = [
            [
                n["id"][:12],
                n["name"],
                n["driver"],
                ",".join(s["subnet"] for s in n["subnets"]),
                "yes" if n["internal"] else "no",
            ]
            for n in nets
        ]
        click.echo(table(["NETWORK ID", "NAME", "DRIVER", "SUBNETS", "INTERNAL"], rows))


def _matches(net: dict[str, Any], filters: tuple[str, ...]) -> bool:
    for f in filters:
        key, _, value = f.partition("=")
        if key == "name" and value not in net["name"]:
            return False
        if key == "driver" and net["driver"] != value:
            return False
        if key == "label":
            lkey, has_value, lvalue = value.partition("=")
            if lkey not in net["labels"] or (has_value and net["labels"][lkey] != lvalue):
                return False
        if key not in ("name", "driver", "label"):
            fail(f"Error: unknown filter {key!r} (name, driver, label)", 2)
    return True


@network.command("inspect")
@click.argument("names", nargs=-1, required=True)
@click.pass_obj
def inspect(obj: Ctx, names: tuple[str, ...]) -> None:
    """Show networks as JSON, with endpoints, IPAM usage and the live plumbing.

    The ``plumbing`` key holds what the kernel has now: the bridge (up, MTU, addresses), each
    endpoint's host veth, the firewall chains and elements the network owns, and its DNS records.
    """
    click.echo(json.dumps([obj.call("GET", f"/v1/networks/{_path(n)}") for n in names], indent=2))


def _path(name: str) -> str:
    from urllib.parse import quote

    return quote(name, safe="")


@network.command("rm")
@click.argument("names", nargs=-1, required=True)
@click.pass_obj
def rm(obj: Ctx, names: tuple[str, ...]) -> None:
    """Remove networks (each must have no endpoints)."""
    for name in names:
        obj.call("DELETE", f"/v1/networks/{_path(name)}")
        click.echo(name)


@network.command("prune")
@click.option("--force", "-f", is_flag=True, help="do not ask (netd never asks; docker compat)")
@click.pass_obj
def prune(obj: Ctx, force: bool) -> None:
    """Remove all networks without endpoints."""
    removed = obj.call("POST", "/v1/networks/prune")["removed"]
    if removed:
        click.echo("Deleted Networks:\n" + "\n".join(removed))


@network.command("connect")
@click.argument("net")
@click.option("--netns", required=True, help="network namespace path, e.g. /run/netns/X")
@click.option("--container-id", help="default: the namespace name (or a hash of its path)")
@click.option("--ifname", help="default: the first free ethN")
@click.option("--name", help="DNS name (default: the namespace name)")
@click.option("--hostname")
@click.option("--ip", "ips", multiple=True, help="static address (IPv4 and/or IPv6)")
@click.option("--alias", multiple=True)
@click.option("--mac")
@click.option(
    "--publish", "-p", multiple=True, help="[HOSTIP:]HOSTPORT[-END]:CONTAINERPORT[/tcp|udp|sctp]"
)
@click.option("--dns", "dns_servers", multiple=True, help="upstream DNS servers for this endpoint")
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table")
@click.pass_obj
def connect(
    obj: Ctx,
    net: str,
    netns: str,
    container_id: str | None,
    ifname: str | None,
    name: str | None,
    hostname: str | None,
    ips: tuple[str, ...],
    alias: tuple[str, ...],
    mac: str | None,
    publish: tuple[str, ...],
    dns_servers: tuple[str, ...],
    fmt: str,
) -> None:
    """Attach a network namespace to a network."""
    body = {
        "netns": netns,
        "container_id": container_id,
        "ifname": ifname,
        "name": name,
        "hostname": hostname,
        "ips": list(ips),
        "aliases": list(alias),
        "mac": mac,
        "publish": [p for spec in publish for p in parse_publish(spec)],
        "dns_servers": list(dns_servers),
    }
    ep = obj.call("POST", f"/v1/networks/{_path(net)}/connect", body)
    if fmt == "json":
        click.echo(json.dumps(ep, indent=2))
    else:
        click.echo(
            table(
                ["CONTAINER", "IFNAME", "ADDRESSES", "MAC", "HOST VETH"],
                [
                    [
                        ep["container_id"][:12],
                        ep["ifname"],
                        " ".join(ep["addresses"]),
                        ep["mac"] or "",
                        ep["host_ifname"],
                    ]
                ],
            )
        )


@network.command("disconnect")
@click.argument("net")
@click.option("--netns", help="namespace path given to connect")
@click.option("--container-id")
@click.option("--ifname", help="only this interface")
@click.pass_obj
def disconnect(
    obj: Ctx, net: str, netns: str | None, container_id: str | None, ifname: str | None
) -> None:
    """Detach a namespace (or container id) from a network."""
    if not netns and not container_id:
        raise click.UsageError("give --netns or --container-id")
    data = obj.call(
        "POST",
        f"/v1/networks/{_path(net)}/disconnect",
        {"netns": netns, "container_id": container_id, "ifname": ifname},
    )
    click.echo("\n".join(data["disconnected"]))
