"""`netd recover`: rebuild a lost or corrupt state database from netd's tags in the kernel.

Runs as root in the managed namespace with the daemon stopped (it takes the daemon's instance
lock, so neither can run while the other does). It reads, never changes, the kernel:

- bridges tagged ``netd:<network id>`` become networks: subnets and gateways from the bridge's
  addresses, name ``recovered-<id12>`` unless the operator names it (``--name ID=NAME``);
- host veths tagged ``netd:<net12>:<ifname>:<container id>`` become endpoints: the peer's
  namespace is found by the veth's IFLA_LINK_NETNSID, matched against the namespaces of
  /run/netns, nsfs bind mounts and /proc/*/ns/net; the peer interface's addresses and MAC are
  read there;
- netd's firewall (the nftables tables, else the iptables NETD-* chains; read by
  :mod:`netd.firewall.readback`) gives each network's ``internal`` flag, ``enable_icc``,
  ``enable_ip_masquerade`` and ``host_ipv4``/``host_ipv6``, and each endpoint's published ports
  (matched by container id and address).

A corrupt database is moved aside (``netd.db.corrupt-<timestamp>``, never deleted); the new one
is written through the :class:`~netd.store.base.Store` interface. What could not be recovered is
said in the report. It changes neither the firewall nor DNS: the daemon rebuilds both from the
records at its next start.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from .errors import ConfigError, FirewallError, KernelError, StoreCorrupt
from .firewall.readback import FirewallFacts, read_firewall
from .kernel import links
from .kernel.netns import iproute_in_fd
from .model import Endpoint, IPAddress, IPInterface, Network, Subnet
from .names import bridge_name
from .recover_firewall import describe_port, endpoint_ports, firewall_losses, firewall_options
from .store import DB_FILENAME
from .store.sqlite import SqliteStore

TAG_PREFIX = "netd:"
NETNS_DIR = "/run/netns"


@dataclass(frozen=True)
class Peer:
    """The container end of a host veth, as read in its namespace."""

    netns: str
    ifname: str
    mac: str
    addresses: tuple[IPInterface, ...]


@dataclass(frozen=True)
class TaggedVeth:
    """A host veth carrying an endpoint tag; ``peer`` is None when its namespace was not found."""

    name: str
    net12: str
    ifname: str
    container_id: str
    mac: str
    peer: Peer | None


@dataclass
class Scan:
    """What the kernel shows: netd's bridges (id → (name, addresses)) and host veths."""

    bridges: dict[str, tuple[str, list[IPInterface]]] = field(default_factory=dict)
    veths: list[TaggedVeth] = field(default_factory=list)


@dataclass
class Report:
    """What ``recover`` rebuilt, what it could not, and where the old database went."""

    networks: list[Network] = field(default_factory=list)
    endpoints: list[Endpoint] = field(default_factory=list)
    lost: list[str] = field(default_factory=list)
    moved_aside: Path | None = None
    written: Path | None = None

    def render(self) -> str:
        """The report as text for the operator."""
        lines = []
        if self.moved_aside:
            lines.append(f"moved the damaged database aside to {self.moved_aside}")
        for net in self.networks:
            subnets = ", ".join(
                f"{s.subnet} gw {s.gateway}" if s.gateway else str(s.subnet) for s in net.subnets
            )
            extra = "".join(f" {k}={v}" for k, v in sorted(net.options.items()))
            kind = " internal" if net.internal else ""
            lines.append(f"network {net.name} ({net.short_id}){kind}: {subnets}{extra}")
        for ep in self.endpoints:
            addrs = " ".join(str(a) for a in ep.addresses)
            lines.append(
                f"endpoint {ep.container_id}/{ep.ifname} on {ep.network_id[:12]}: {addrs} "
                f"mac {ep.mac} in {ep.netns} (host veth {ep.host_ifname})"
                + "".join(f" publishes {describe_port(p)}" for p in ep.port_mappings)
            )
        lines += [f"not recovered: {what}" for what in self.lost]
        if self.written:
            lines.append(
                f"wrote {len(self.networks)} networks and {len(self.endpoints)} endpoints "
                f"to {self.written}"
            )
        else:
            lines.append("dry run: nothing written")
        return "\n".join(lines)


# --- reading the kernel ---------------------------------------------------------------------


def parse_tag(tag: str) -> tuple[str, ...] | None:
    """``(network id,)`` for a bridge tag, ``(net12, ifname, container id)`` for a veth tag."""
    if not tag.startswith(TAG_PREFIX):
        return None
    parts = tag[len(TAG_PREFIX) :].split(":", 2)
    if len(parts) in (1, 3) and all(parts):
        return tuple(parts)
    return None


def namespace_candidates() -> Iterator[str]:
    """Paths that may hold a network namespace, best names first (duplicates allowed)."""
    with contextlib.suppress(OSError):
        for name in sorted(os.listdir(NETNS_DIR)):
            yield f"{NETNS_DIR}/{name}"
    with contextlib.suppress(OSError), open("/proc/self/mountinfo") as fh:
        for line in fh:
            left, _, right = line.partition(" - ")
            if right.startswith("nsfs ") and "net:[" in left.split()[3]:
                yield left.split()[4]
    with contextlib.suppress(OSError):
        for pid in sorted((p for p in os.listdir("/proc") if p.isdigit()), key=int):
            yield f"/proc/{pid}/ns/net"


@contextlib.contextmanager
def _netns_by_nsid(ipr: IPRoute, wanted: set[int]) -> Iterator[dict[int, tuple[str, int]]]:
    """``{nsid: (path, fd)}`` for the namespaces our namespace knows by those ids."""
    found: dict[int, tuple[str, int]] = {}
    seen: set[int] = {os.stat("/proc/self/ns/net").st_ino}
    try:
        for path in namespace_candidates():
            if len(found) == len(wanted):
                break
            try:
                inode = os.stat(path).st_ino
                if inode in seen:
                    continue
                seen.add(inode)
                fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
            except OSError:
                continue
            try:
                answer = ipr.get_netnsid(fd=fd)
            except NetlinkError:
                answer = None
            nsid = answer.get("nsid") if answer else None
            if nsid in wanted and nsid not in found:
                found[nsid] = (path, fd)
            else:
                os.close(fd)
        yield found
    finally:
        for _, fd in found.values():
            os.close(fd)


def _read_peer(path: str, fd: int, index: int) -> Peer | None:
    with iproute_in_fd(fd) as ipr:
        try:
            link = ipr.link("get", index=index)[0]
        except NetlinkError:
            return None
        addrs = sorted(links.addresses_of(ipr, index), key=lambda a: (a.version, a.ip))
    return Peer(path, link.get_attr("IFLA_IFNAME"), link.get_attr("IFLA_ADDRESS"), tuple(addrs))


def scan_kernel() -> Scan:
    """netd's tagged bridges and host veths in this namespace, with the veths' peers."""
    scan = Scan()
    pending: list[tuple[Any, tuple[str, ...]]] = []
    with IPRoute(groups=0) as ipr:
        try:
            dump = list(ipr.link("dump"))
        except NetlinkError as exc:
            raise links.kernel_error("listing links", exc) from exc
        for msg in dump:
            parsed = parse_tag(msg.get_attr("IFLA_IFALIAS") or "")
            if parsed is None:
                continue
            if len(parsed) == 1 and links.link_kind(msg) == "bridge":
                addrs = sorted(links.addresses_of(ipr, msg["index"]), key=lambda a: a.version)
                scan.bridges[parsed[0]] = (msg.get_attr("IFLA_IFNAME"), addrs)
            elif len(parsed) == 3 and links.link_kind(msg) == "veth":
                pending.append((msg, parsed))
        wanted = {m.get_attr("IFLA_LINK_NETNSID") for m, _ in pending} - {None}
        with _netns_by_nsid(ipr, wanted) as spaces:
            for msg, (net12, ifname, cid) in pending:
                where = spaces.get(msg.get_attr("IFLA_LINK_NETNSID"))
                peer = None
                if where is not None and msg.get_attr("IFLA_LINK"):
                    peer = _read_peer(where[0], where[1], msg.get_attr("IFLA_LINK"))
                scan.veths.append(
                    TaggedVeth(
                        msg.get_attr("IFLA_IFNAME"),
                        net12,
                        ifname,
                        cid,
                        msg.get_attr("IFLA_ADDRESS"),
                        peer,
                    )
                )
    return scan


# --- building records (pure) ----------------------------------------------------------------


def build_records(
    scan: Scan,
    names: dict[str, str] | None = None,
    now: float | None = None,
    facts: FirewallFacts | None = None,
) -> Report:
    """Networks and endpoints from a scan and the firewall's facts.

    ``names`` maps a network id prefix to its name.
    """
    now = time.time() if now is None else now
    facts = facts or FirewallFacts()
    report = Report()
    by12: dict[str, Network] = {}
    for net_id, (bridge, addrs) in sorted(scan.bridges.items()):
        name = next((n for p, n in (names or {}).items() if net_id.startswith(p)), None)
        if name is None:
            name = f"recovered-{net_id[:12]}"
            report.lost.append(f"name of network {net_id[:12]} (now {name!r})")
        subnets = tuple(Subnet(a.network, a.ip) for a in addrs)
        if not subnets:
            report.lost.append(f"network {net_id[:12]}: bridge {bridge} has no addresses; skipped")
            continue
        options = {} if bridge == bridge_name(net_id) else {"bridge": bridge}
        internal, fw_options = firewall_options(facts, net_id[:12], subnets)
        net = Network(
            id=net_id,
            name=name,
            driver="bridge",
            subnets=subnets,
            ipv6=any(s.version == 6 for s in subnets),
            internal=internal,
            options={**options, **fw_options},
            labels={"netd.recovered": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now))},
            created=now,
        )
        report.networks.append(net)
        by12[net_id[:12]] = net
    for veth in sorted(scan.veths, key=lambda v: v.name):
        what = f"endpoint {veth.container_id[:12]}/{veth.ifname} (host veth {veth.name})"
        owner = by12.get(veth.net12)
        if owner is None:
            report.lost.append(f"{what}: its network's bridge is gone")
            continue
        if veth.peer is None:
            report.lost.append(
                f"{what}: its namespace was not found, so its addresses are unknown; skipped "
                "(the daemon removes the veth as an orphan at its next start)"
            )
            continue
        addresses = tuple(
            a for a in veth.peer.addresses if any(a.ip in s.subnet for s in owner.subnets)
        )
        report.endpoints.append(
            Endpoint(
                network_id=owner.id,
                container_id=veth.container_id,
                ifname=veth.ifname,
                netns=veth.peer.netns,
                host_ifname=veth.name,
                addresses=addresses,
                mac=veth.peer.mac,
                host_mac=veth.mac,
                port_mappings=endpoint_ports(facts, veth.net12, veth.container_id, addresses),
                state="ready",
                created=now,
            )
        )
    if report.endpoints:
        report.lost.append(
            "DNS names, aliases and hostnames of every endpoint, and ports published on "
            "internal networks (none of it is kept in the kernel); endpoints are recorded as API "
            "attachments"
        )
    if report.networks:
        report.lost.append(
            "network options not kept in the kernel (dns, dns_servers, mtu, labels, ip ranges; "
            "NAT options of internal networks); defaults used"
        )
        report.lost.append(
            "owners of rootless networks (the kernel does not keep them): every network and "
            "endpoint is recorded as root's (uid 0), so a rootless user no longer sees it"
        )
        report.lost += firewall_losses(facts, report.endpoints)
    return report


def cursors_for(endpoints: list[Endpoint], network: Network) -> dict[str, IPAddress]:
    """IPAM cursors per subnet: the highest recovered address, so new ones come after it."""
    out: dict[str, IPAddress] = {}
    for ep in endpoints:
        for iface in ep.addresses:
            for s in network.subnets:
                key = str(s.subnet)
                if iface.ip in s.subnet and (key not in out or int(iface.ip) > int(out[key])):
                    out[key] = iface.ip
    return out


# --- the database -----------------------------------------------------------------------------


def _move_aside(path: Path, why: str) -> Path:
    """Rename ``path`` (and its WAL files) to ``<name>.<why>-<time>``, never over another file."""
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    target = path.with_name(f"{path.name}.{why}-{stamp}")
    n = 1
    while target.exists():
        n += 1
        target = path.with_name(f"{path.name}.{why}-{stamp}.{n}")
    os.rename(path, target)
    for suffix in ("-wal", "-shm"):
        side = path.with_name(path.name + suffix)
        if side.exists():
            os.rename(side, target.with_name(target.name + suffix))
    return target


def recover(
    state_dir: Path,
    *,
    dry_run: bool = False,
    force: bool = False,
    names: dict[str, str] | None = None,
) -> Report:
    """Rebuild ``<state_dir>/netd.db`` from the kernel; the report says what and what not.

    ConfigError if the daemon holds its lock, or if the database is healthy and not empty
    (``force`` moves it aside too).
    """
    from .daemon import InstanceLock

    state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    lock = InstanceLock(state_dir)
    lock.acquire()  # ConfigError naming the daemon's pid while it runs
    try:
        path = state_dir / DB_FILENAME
        corrupt: StoreCorrupt | None = None
        if path.exists():
            try:
                with SqliteStore(path) as existing:
                    count = len(existing.list_networks())
            except StoreCorrupt as exc:
                corrupt = exc
            else:
                if count and not force:
                    raise ConfigError(
                        f"state database {path} is healthy and holds {count} networks; nothing "
                        "to recover (--force moves it aside and rebuilds it from the kernel)"
                    )
        scan = scan_kernel()
        try:
            facts = read_firewall({name: net_id[:12] for net_id, (name, _) in scan.bridges.items()})
        except FirewallError as exc:
            facts = FirewallFacts(problems=[str(exc)])
        report = build_records(scan, names, facts=facts)
        if corrupt is not None:
            report.lost.insert(0, f"the database could not be read: {corrupt}")
        if dry_run:
            return report
        if path.exists() and (corrupt is not None or force):
            report.moved_aside = _move_aside(path, "corrupt" if corrupt else "replaced")
        with SqliteStore(path) as store:
            for net in report.networks:
                store.create_network(net)
                eps = [e for e in report.endpoints if e.network_id == net.id]
                cursors = cursors_for(eps, net)
                for ep in eps:
                    store.put_endpoint(ep, cursors)
        report.written = path
        return report
    except OSError as exc:
        raise KernelError(f"recovering state into {state_dir}: {exc}") from exc
    finally:
        lock.release()
