"""`netd recover`: rebuild a lost or corrupt state database from the recovery copy and the kernel.

Runs as root in the managed namespace with the daemon stopped (it takes the daemon's instance
lock, so neither can run while the other does). It reads the recovery copy
(:mod:`netd.store.mirror`: every network and endpoint record as the user configured it) and
reads, never changes, the kernel; :mod:`netd.recover_copy` says how the two are combined. What
the copy lacks (no copy, a damaged file, a record it never got) is rebuilt from the kernel alone:

- bridges tagged ``netd:<network id>`` become networks: subnets and gateways from the bridge's
  addresses, name ``recovered-<id12>`` unless the operator names it (``--name ID=NAME``, which
  also wins over the copy's name);
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
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from ..errors import ConfigError, FirewallError, KernelError, StoreCorrupt
from ..firewall.readback import FirewallFacts, read_firewall
from ..kernel import links
from ..kernel.netns import iproute_in_fd
from ..model import Endpoint, IPAddress, IPInterface, Network, Subnet
from ..names import bridge_name
from ..store import DB_FILENAME
from ..store.mirror import CopyContents, read_copy
from ..store.sqlite import SqliteStore
from .recover_copy import (
    EndpointKey,
    check_network,
    index_endpoints,
    merge_endpoint,
    tag_key,
    unique_name,
)
from .recover_firewall import describe_port, endpoint_ports, firewall_losses, firewall_options

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
    notes: list[str] = field(default_factory=list)  # told, but nothing of the user's was lost
    from_copy: set[str] = field(default_factory=set)  # ids of networks rebuilt from the copy
    copy_found: bool = False
    copy_newest: int = 0  # revision (ns since the epoch) of the newest record in the copy
    moved_aside: Path | None = None
    written: Path | None = None

    def render(self) -> str:
        """The report as text for the operator."""
        lines = []
        if self.moved_aside:
            lines.append(f"moved the damaged database aside to {self.moved_aside}")
        if self.copy_found and self.copy_newest:
            stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.copy_newest / 1e9))
            lines.append(f"recovery copy read (newest record written {stamp})")
        elif self.copy_found:
            lines.append("recovery copy read: it holds no readable record")
        for net in self.networks:
            subnets = ", ".join(
                f"{s.subnet} gw {s.gateway}" if s.gateway else str(s.subnet) for s in net.subnets
            )
            extra = "".join(f" {k}={v}" for k, v in sorted(net.options.items()))
            kind = " internal" if net.internal else ""
            source = "copy" if net.id in self.from_copy else "kernel only"
            lines.append(f"network {net.name} ({net.short_id}){kind}: {subnets}{extra} [{source}]")
        for ep in self.endpoints:
            addrs = " ".join(str(a) for a in ep.addresses)
            dns = [f"name {ep.name}"] if ep.name else []
            dns += [f"hostname {ep.hostname}"] if ep.hostname else []
            dns += [f"aliases {','.join(ep.aliases)}"] if ep.aliases else []
            lines.append(
                f"endpoint {ep.container_id}/{ep.ifname} on {ep.network_id[:12]}: {addrs} "
                f"mac {ep.mac} in {ep.netns} (host veth {ep.host_ifname or 'none: IPAM only'})"
                + "".join(f" publishes {describe_port(p)}" for p in ep.port_mappings)
                + "".join(f" {d}" for d in dns)
                + ("" if ep.state == "ready" else f" [{ep.state}: undone at the daemon's start]")
            )
        lines += self.notes
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


def _kernel_network(
    net_id: str,
    bridge: str,
    addrs: list[IPInterface],
    name: str,
    facts: FirewallFacts,
    now: float,
) -> Network:
    """A network from its bridge and its firewall rules alone (no copy of its record)."""
    subnets = tuple(Subnet(a.network, a.ip) for a in addrs)
    options = {} if bridge == bridge_name(net_id) else {"bridge": bridge}
    internal, fw_options = firewall_options(facts, net_id[:12], subnets)
    return Network(
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


def build_records(
    scan: Scan,
    names: dict[str, str] | None = None,
    now: float | None = None,
    facts: FirewallFacts | None = None,
    copy: CopyContents | None = None,
    same_netns: Callable[[str, str], bool] = str.__eq__,
) -> Report:
    """Networks and endpoints from a scan, the firewall's facts and the recovery copy.

    ``names`` maps a network id prefix to its name (it wins over the copy's).
    ``same_netns(a, b)`` tells whether two paths lead to one namespace. How the copy and the
    kernel are combined is :mod:`netd.recover_copy`'s docstring.
    """
    now = time.time() if now is None else now
    facts = facts or FirewallFacts()
    copy = copy or CopyContents(Path())
    report = Report(copy_found=copy.found, copy_newest=copy.newest)
    report.lost += [f"the recovery copy: {p}" for p in copy.problems]
    by12: dict[str, Network] = {}
    taken: set[str] = set()
    kernel_only: set[str] = set()  # ids of networks rebuilt without their record

    def given(net_id: str) -> str | None:
        return next((n for p, n in (names or {}).items() if net_id.startswith(p)), None)

    for net_id in sorted(set(scan.bridges) | set(copy.networks)):
        bridge, addrs = scan.bridges.get(net_id, ("", []))
        record = copy.networks.get(net_id)
        if record is not None:
            net = replace(record, name=given(net_id) or record.name)
            if not bridge and net.driver == "bridge":
                report.notes.append(
                    f"network {net.name} ({net.short_id}): no bridge in the kernel; the daemon "
                    "creates it at start"
                )
            report.notes += check_network(net, {str(a) for a in addrs})
        else:
            name = given(net_id)
            if name is None:
                name = f"recovered-{net_id[:12]}"
                report.lost.append(f"name of network {net_id[:12]} (now {name!r})")
            if not addrs:
                report.lost.append(
                    f"network {net_id[:12]}: bridge {bridge} has no addresses; skipped"
                )
                continue
            net = _kernel_network(net_id, bridge, addrs, name, facts, now)
            kernel_only.add(net_id)
        unique, why = unique_name(net.name, net_id, taken)
        report.lost += why
        net = replace(net, name=unique)
        taken.add(unique)
        report.networks.append(net)
        by12[net_id[:12]] = net
    report.from_copy = {n.id for n in report.networks} - kernel_only

    recorded = index_endpoints(copy)
    matched: set[EndpointKey] = set()
    kernel_eps = 0
    for veth in sorted(scan.veths, key=lambda v: v.name):
        what = f"endpoint {veth.container_id[:12]}/{veth.ifname} (host veth {veth.name})"
        owner = by12.get(veth.net12)
        if owner is None:
            report.lost.append(f"{what}: its network's bridge is gone")
            continue
        key = (veth.net12, veth.ifname, veth.container_id)
        in_subnets: tuple[IPInterface, ...] = ()
        if veth.peer is not None:
            in_subnets = tuple(
                a for a in veth.peer.addresses if any(a.ip in s.subnet for s in owner.subnets)
            )
        mine = recorded.get(key)
        if mine is not None and mine.network_id == owner.id:
            matched.add(key)
            peer = None if veth.peer is None else (veth.peer.netns, veth.peer.mac, in_subnets)
            ep, notes = merge_endpoint(
                mine, host_ifname=veth.name, host_mac=veth.mac, peer=peer, same_netns=same_netns
            )
            report.notes += notes
            report.endpoints.append(ep)
            continue
        if veth.peer is None:
            report.lost.append(
                f"{what}: its namespace was not found, so its addresses are unknown; skipped "
                "(the daemon removes the veth as an orphan at its next start)"
            )
            continue
        kernel_eps += 1
        report.endpoints.append(
            Endpoint(
                network_id=owner.id,
                container_id=veth.container_id,
                ifname=veth.ifname,
                netns=veth.peer.netns,
                host_ifname=veth.name,
                addresses=in_subnets,
                mac=veth.peer.mac,
                host_mac=veth.mac,
                port_mappings=endpoint_ports(facts, veth.net12, veth.container_id, in_subnets),
                state="ready",
                created=now,
            )
        )
    for net_id, eps in copy.endpoints.items():
        if net_id not in report.from_copy:
            continue
        for ep in eps:
            if not ep.host_ifname:
                report.endpoints.append(ep)  # IPAM-only: no kernel object of netd's to confirm it
            elif tag_key(ep) not in matched:
                report.notes.append(
                    f"endpoint {ep.container_id[:12]}/{ep.ifname} on {ep.network_id[:12]}: in the "
                    f"copy, but its host veth {ep.host_ifname} is gone (the container stopped, "
                    "or the host restarted); not recovered"
                )
    if kernel_eps:
        report.lost.append(
            f"DNS names, aliases and hostnames of the {kernel_eps} endpoint(s) the copy does not "
            "have, and their ports published on internal networks (none of it is kept in the "
            "kernel); they are recorded as API attachments"
        )
    if kernel_only:
        report.lost.append(
            f"for the {len(kernel_only)} network(s) the copy does not have: options not kept "
            "in the kernel (dns, dns_servers, mtu, labels, ip ranges; NAT options of internal "
            "networks); defaults used"
        )
        report.lost.append(
            "owners of rootless networks the copy does not have (the kernel does not keep "
            "them): they are recorded as root's (uid 0), so a rootless user no longer sees them"
        )
        report.lost += firewall_losses(
            facts, [e for e in report.endpoints if e.network_id in kernel_only]
        )
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


def same_namespace(a: str, b: str) -> bool:
    """Whether two paths lead to the same network namespace (nsfs inode)."""
    try:
        sa, sb = os.stat(a), os.stat(b)
    except OSError:
        return False
    return (sa.st_dev, sa.st_ino) == (sb.st_dev, sb.st_ino)


def recover(
    state_dir: Path,
    *,
    dry_run: bool = False,
    force: bool = False,
    names: dict[str, str] | None = None,
    copy_dir: Path | None = None,
) -> Report:
    """Rebuild ``<state_dir>/netd.db`` from the recovery copy and the kernel; the report says
    what and what not. ``copy_dir`` defaults to ``<state_dir>/recovery``.

    ConfigError if the daemon holds its lock, or if the database is healthy and not empty
    (``force`` moves it aside too).
    """
    from ..daemon import InstanceLock

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
        copy = read_copy(copy_dir or state_dir / "recovery")
        report = build_records(scan, names, facts=facts, copy=copy, same_netns=same_namespace)
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
