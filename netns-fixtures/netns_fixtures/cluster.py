"""Several netd hosts and an etcd cluster on one machine, joined by a plain IP underlay.

Topology (every box a namespace of one :class:`~netns_fixtures.Sandbox`)::

                       <prefix>-underlay: bridge "ul0" (no address)
          u-etcd1  u-etcd2  u-etcd3        u-h1        u-h2        u-h3      (bridge ports)
             |        |        |            |           |           |
           eth0     eth0     eth0         eth0        eth0        eth0
          etcd1    etcd2    etcd3          h1          h2          h3
       10.251.0.11  .12      .13       10.251.0.1     .2          .3

The underlay is 10.251.0.0/24 (no other test uses 10.251): hosts are ``.1``..``.N``, etcd
members ``.11``.. ; etcd serves clients on ``http(s)://<address>:2379`` and peers on 2380. A
host namespace is a container host (forwarding on) where a netd daemon runs with a ``[cluster]``
table pointing at the etcd members (:meth:`Cluster.start_daemon`).

Faults a multi-host test needs, each on one member and each undone by the fixture:

- etcd: ``cluster.etcd[i]`` is an :class:`~netns_fixtures.etcd.EtcdServer`: ``stop()`` kills
  that member by PID, ``start()`` brings it back on its data, ``pause()``/``resume()`` send
  SIGSTOP/SIGCONT.
- a host's daemon: :meth:`Cluster.kill_daemon` (SIGKILL) and :meth:`Cluster.restart_daemon`
  (same state dir); :meth:`Cluster.kill_host` kills it and deletes its namespace outright.
- the network: :meth:`Cluster.partition` makes the underlay switch drop a member's frames
  (``how="drop"``, a bridge-family nftables rule in the underlay namespace: the host sees its
  link up but nothing arrives, like a real partition) or pulls its cable (``how="link"``: the
  switch port goes down, the host sees NO-CARRIER); :meth:`Cluster.heal` undoes it.

Nothing is ever configured in the machine's initial namespace: veths are created from inside
the underlay namespace, rules live in the underlay. :meth:`Cluster.close` kills daemons and
etcd by PID and deletes every namespace (``leftovers(prefix)`` is then empty).
"""

from __future__ import annotations

import contextlib
import ipaddress
import shutil
import tempfile
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from . import Namespace, Sandbox, delete_namespace, run, wait_for
from .daemon import Daemon
from .etcd import EtcdServer
from .tls import Pki, make_pki

UNDERLAY = ipaddress.IPv4Network("10.251.0.0/24")
BRIDGE = "ul0"  # the underlay switch, in the underlay namespace
UPLINK = "eth0"  # each member's link to the underlay, inside the member's namespace
ETCD_PORT = 2379
ETCD_FIRST = 11  # etcd members are .11, .12, ...; hosts .1 .. .10
PARTITION_TABLE = "ntest_partition"  # bridge-family table in the underlay namespace
MAX_HOSTS = ETCD_FIRST - 1


@dataclass
class Member:
    """One namespace on the underlay: a netd host or an etcd member."""

    name: str  # "h1", "etcd2": also its namespace role and its netd node name
    ns: Namespace
    address: str  # on UPLINK, without prefix length
    port: str  # its bridge port (veth end) in the underlay namespace


@dataclass
class Host(Member):
    """A container host: where a netd daemon runs (``daemon`` while one was started)."""

    daemon: Daemon | None = None
    alive: bool = True  # False once kill_host deleted its namespace


def build_partition_ruleset(ports: Iterable[tuple[str, str]]) -> str:
    """nft input replacing the underlay's partition table: frames between each pair dropped.

    The table is declared, deleted and declared again in one transaction, so the rules are
    exactly ``ports`` (an empty table when there are none) whatever was there before.
    """
    pairs = sorted({tuple(sorted(p)) for p in ports})
    rules = "".join(
        f'    iifname "{a}" oifname "{b}" drop\n    iifname "{b}" oifname "{a}" drop\n'
        for a, b in pairs
    )
    return (
        f"table bridge {PARTITION_TABLE}\n"
        f"delete table bridge {PARTITION_TABLE}\n"
        f"table bridge {PARTITION_TABLE} {{\n"
        "  chain forward {\n"
        "    type filter hook forward priority 0; policy accept;\n"
        f"{rules}"
        "  }\n"
        "}\n"
    )


class Cluster:
    """``hosts`` netd hosts and ``etcd_members`` etcd members on one underlay bridge.

    ``tls``: etcd serves https and demands a client certificate of a throwaway CA (made
    under ``workdir``); :meth:`cluster_table` then names the CA, certificate and key files.
    Use as a context manager, or call :meth:`start` and, always, :meth:`close`.
    """

    def __init__(
        self,
        workdir: Path,
        *,
        hosts: int = 3,
        etcd_members: int = 1,
        tls: bool = False,
        sandbox: Sandbox | None = None,
    ) -> None:
        if not 1 <= hosts <= MAX_HOSTS:
            raise ValueError(f"hosts={hosts}: between 1 and {MAX_HOSTS}")
        if etcd_members not in (1, 3, 5):
            raise ValueError(f"etcd_members={etcd_members}: 1, 3 or 5 (an odd quorum)")
        self.workdir = workdir
        self.sandbox = sandbox or Sandbox()
        self.n_hosts = hosts
        self.n_etcd = etcd_members
        self.use_tls = tls
        self.pki: Pki | None = None
        self.underlay: Namespace | None = None
        self.hosts: list[Host] = []
        self.etcd: list[EtcdServer] = []
        self.etcd_nodes: list[Member] = []
        self._blocked: set[tuple[str, str]] = set()

    # --- building ---------------------------------------------------------------------------

    def start(self, timeout: float = 60) -> Cluster:
        """Build the underlay, the members and the etcd cluster; wait until etcd is healthy."""
        self.underlay = self.sandbox.add_ns("underlay")
        self.underlay.run("ip", "link", "add", BRIDGE, "type", "bridge")
        self.underlay.run("ip", "link", "set", BRIDGE, "up")
        hosts = list(UNDERLAY.hosts())
        for i in range(self.n_etcd):
            name = f"etcd{i + 1}"
            self.etcd_nodes.append(self._attach(name, str(hosts[ETCD_FIRST - 1 + i]), host=False))
        for i in range(self.n_hosts):
            member = self._attach(f"h{i + 1}", str(hosts[i]), host=True)
            assert isinstance(member, Host)
            self.hosts.append(member)
        if self.use_tls:
            self.pki = make_pki(self.workdir / "pki", [m.address for m in self.etcd_nodes])
        peers = {m.name: f"http://{m.address}:{ETCD_PORT + 1}" for m in self.etcd_nodes}
        for m in self.etcd_nodes:
            server = EtcdServer(
                m.ns,
                self.workdir / "etcd" / m.name,
                ETCD_PORT,
                address=m.address,
                name=m.name,
                cluster=peers,
                token=self.sandbox.prefix,
                tls=self.pki,
            )
            self.etcd.append(server.launch())
        for server in self.etcd:
            wait_for(f"etcd member {server.name} healthy", server.healthy, timeout, step=0.2)
        return self

    def _attach(self, name: str, address: str, *, host: bool) -> Member:
        """A namespace ``name`` with a veth to the underlay bridge and ``address`` on it."""
        assert self.underlay is not None
        ns = self.sandbox.add_host(name) if host else self.sandbox.add_ns(name)
        port = f"u-{name}"
        # Made from inside the underlay namespace: the initial namespace never sees the link.
        self.underlay.run(
            "ip", "link", "add", port, "type", "veth", "peer", "name", UPLINK, "netns", ns.name
        )
        self.underlay.run("ip", "link", "set", port, "master", BRIDGE, "up")
        ns.run("ip", "addr", "add", f"{address}/{UNDERLAY.prefixlen}", "dev", UPLINK)
        ns.run("ip", "link", "set", UPLINK, "up")
        cls = Host if host else Member
        return cls(name, ns, address, port)

    # --- looking up -------------------------------------------------------------------------

    @property
    def prefix(self) -> str:
        """The sandbox prefix every namespace of this cluster starts with."""
        return self.sandbox.prefix

    @property
    def etcd_endpoints(self) -> list[str]:
        """Client URLs of the etcd members (what ``etcd_endpoints`` in netd's config takes)."""
        return [s.url for s in self.etcd]

    def host(self, name: str) -> Host:
        """The host called ``name`` ("h1", ...)."""
        for h in self.hosts:
            if h.name == name:
                return h
        raise KeyError(f"no host {name!r} in this cluster (hosts: {[h.name for h in self.hosts]})")

    def members(self) -> list[Member]:
        """Every namespace on the underlay: etcd members first, then hosts (alive ones)."""
        return [*self.etcd_nodes, *(h for h in self.hosts if h.alive)]

    def _member(self, who: Member | str) -> Member:
        m = who if isinstance(who, Member) else None
        for candidate in [*self.etcd_nodes, *self.hosts]:
            if m is None and candidate.name == who:
                m = candidate
        if m is None:
            raise KeyError(f"no member {who!r} in this cluster")
        if isinstance(m, Host) and not m.alive:
            raise RuntimeError(f"host {m.name} was killed")
        return m

    # --- netd daemons -----------------------------------------------------------------------

    def cluster_table(self, host: Host | str, **overrides: Any) -> dict[str, Any]:
        """The ``[cluster]`` table of ``host``'s netd config (design: multihost-design.md)."""
        h = self._member(host)
        table: dict[str, Any] = {
            "etcd_endpoints": self.etcd_endpoints,
            "node_name": h.name,
            "node_address": h.address,
            "node_ttl": 3,
        }
        if self.pki is not None:
            table |= {
                "etcd_ca_file": str(self.pki.ca_cert),
                "etcd_cert_file": str(self.pki.client_cert),
                "etcd_key_file": str(self.pki.client_key),
            }
        return table | overrides

    def daemon_settings(
        self, host: Host | str, *, cluster: bool = True, settings: Mapping[str, Any] | None = None
    ) -> dict[str, Any]:
        """The whole config of ``host``'s daemon: ``store = "etcd"`` and :meth:`cluster_table`
        (unless ``cluster`` is False: a plain one-host netd), then ``settings`` on top (a
        ``cluster`` dict in ``settings`` updates the table key by key)."""
        out: dict[str, Any] = {}
        if cluster:
            out = {"store": "etcd", "cluster": self.cluster_table(host)}
        for key, v in (settings or {}).items():
            if key == "cluster" and isinstance(v, Mapping) and "cluster" in out:
                out["cluster"] = {**out["cluster"], **v}
            else:
                out[key] = v
        return out

    def start_daemon(
        self,
        host: Host | str,
        *,
        cluster: bool = True,
        settings: Mapping[str, Any] | None = None,
        firewall: str = "nftables",
        env: dict[str, str] | None = None,
        timeout: float = 30,
    ) -> Daemon:
        """Start netd in ``host`` with :meth:`daemon_settings`; wait until its API is ready."""
        h = self._host(host)
        if h.daemon is not None:
            raise RuntimeError(f"host {h.name} already has a daemon (restart_daemon?)")
        config = self.daemon_settings(h, cluster=cluster, settings=settings)
        h.daemon = Daemon(h.ns, firewall=firewall, env=env, settings=config)
        return h.daemon.start(timeout)

    def kill_daemon(self, host: Host | str) -> int | None:
        """SIGKILL ``host``'s daemon (by PID); its state dir stays for restart_daemon."""
        d = self._daemon(host)
        # DNS workers are detached and outlive it, as after a real crash; close() kills them.
        return d.stop(9)

    def restart_daemon(self, host: Host | str, timeout: float = 30) -> Daemon:
        """Start ``host``'s daemon again on the same state dir and config."""
        d = self._daemon(host)
        if d.proc is not None:
            raise RuntimeError(f"the daemon of {self._member(host).name} still runs")
        return d.start(timeout)

    def kill_host(self, host: Host | str, timeout: float = 30) -> None:
        """The host dies outright: its daemon is SIGKILLed, its namespace (and so its link to
        the underlay and every container it ran) deleted. It never comes back."""
        h = self._host(host)
        if h.daemon is not None and h.daemon.proc is not None:
            h.daemon.stop(9)
        delete_namespace(h.ns.name)  # kills by PID whatever else ran there
        self.sandbox.namespaces.remove(h.ns)
        h.alive = False
        self._blocked = {p for p in self._blocked if h.port not in p}
        # The kernel destroys a namespace's links asynchronously (cleanup_net): the host is
        # gone for its peers once its cable is gone from the switch.
        underlay = self.underlay
        assert underlay is not None
        wait_for(
            f"the underlay port {h.port} of killed host {h.name} gone",
            lambda: h.port not in underlay.links(),
            timeout,
            step=0.1,
        )

    def _host(self, host: Host | str) -> Host:
        h = self._member(host)
        if not isinstance(h, Host):
            raise KeyError(f"{h.name} is an etcd member, not a host")
        return h

    def _daemon(self, host: Host | str) -> Daemon:
        h = self._host(host)
        if h.daemon is None:
            raise RuntimeError(f"host {h.name} has no daemon (start_daemon first)")
        return h.daemon

    # --- partitions -------------------------------------------------------------------------

    def partition(
        self,
        who: Member | str,
        peers: Iterable[Member | str] | None = None,
        how: Literal["drop", "link"] = "drop",
    ) -> None:
        """Cut ``who`` off from ``peers`` (default: from everyone) on the underlay.

        ``drop``: the underlay bridge drops frames between them both ways, links stay up.
        ``link``: ``who``'s bridge port goes down (from everyone; ``peers`` must be None).
        """
        m = self._member(who)
        assert self.underlay is not None
        if how == "link":
            if peers is not None:
                raise ValueError("how='link' cuts a member off from everyone: peers must be None")
            self.underlay.run("ip", "link", "set", m.port, "down")
            return
        others = self.members() if peers is None else [self._member(p) for p in peers]
        self._blocked |= {(m.port, o.port) for o in others if o.port != m.port}
        self._apply_partitions()

    def heal(self, who: Member | str | None = None) -> None:
        """Undo partitions of ``who`` (default: all of them): rules removed, ports up."""
        assert self.underlay is not None
        members = self.members() if who is None else [self._member(who)]
        for m in members:
            self.underlay.run("ip", "link", "set", m.port, "up")
        ports = {m.port for m in members}
        self._blocked = {p for p in self._blocked if not ports & set(p)}
        self._apply_partitions()

    def _apply_partitions(self) -> None:
        assert self.underlay is not None
        run(self.underlay.argv("nft", "-f", "-"), input=build_partition_ruleset(self._blocked))

    # --- teardown ---------------------------------------------------------------------------

    def close(self) -> list[str]:
        """Stop daemons and etcd (by PID), delete every namespace; returns failures."""
        failures: list[str] = []
        for h in self.hosts:
            if h.daemon is not None:
                try:
                    h.daemon.close()
                except Exception as e:  # teardown is best effort; report, carry on
                    failures.append(f"closing the daemon of {h.name}: {e}")
        for server in self.etcd:
            try:
                server.stop()
            except Exception as e:
                failures.append(f"stopping etcd {server.name}: {e}")
        failures += self.sandbox.close()
        return failures

    def __enter__(self) -> Cluster:
        try:
            return self.start()
        except BaseException:
            self.close()
            raise

    def __exit__(self, *exc: object) -> None:
        self.close()


@contextlib.contextmanager
def scratch_dir(under: Path | None = None) -> Iterator[Path]:
    """A temporary directory for a cluster used outside pytest (demos, benchmarks), under
    ``under`` (default: the system's temporary directory)."""
    path = Path(tempfile.mkdtemp(prefix="netd-cluster-", dir=under))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)
