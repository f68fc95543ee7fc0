"""The daemon's side of DNS: binds the listening sockets, runs and supervises the worker.

:class:`DnsManager` lives in the privileged daemon. For every DNS-enabled network it binds UDP
and TCP port 53 on each gateway address (that needs CAP_NET_BIND_SERVICE, which the worker does
not have), passes the sockets to the unprivileged worker process (:mod:`netd.dns.worker`) over
a socketpair with SCM_RIGHTS, and pushes the networks' record documents
(:func:`~netd.dns.records.build_network_doc`), only those that changed. Each push is applied
atomically by the worker and acknowledged, so when :meth:`DnsManager.set_state` returns the
worker answers from the new records. With ``workers`` > 1 there are that many worker processes,
each with its own SO_REUSEPORT UDP socket per address (the kernel spreads clients over them by
source address and port); TCP listeners go to the first worker. If a worker dies, a supervisor
thread starts a new one and re-sends its sockets and the records; the daemon keeps its copies
of the sockets, so queries that arrive meanwhile wait in the socket buffers. It does not
answer queries itself, except :meth:`DnsManager.lookup` for the CLI.

With a ``run_dir`` (the daemon's ``<state_dir>/dns``) the workers are detached
(:mod:`netd.dns.workerproc`) and outlive the daemon: :meth:`DnsManager.detach` lets go of them
at shutdown, and the next daemon's :meth:`DnsManager.start` finds them, takes their sockets
back and adopts them, pushing its records with the first :meth:`set_state`; a worker of
another build or settings keeps serving until its replacement has the records and the
sockets, then retires. :meth:`DnsManager.stop` stops them for good.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..errors import ConfigError, KernelError, Unavailable
from ..model import Endpoint, Network
from .control import MAX_FDS
from .handover import forget, stop_workers
from .held import HeldSocket as _Sock
from .held import WorkerSlot as _Worker
from .held import dns_fields as _dns_fields
from .listen import bind_dns_socket, default_workers, parse_listen
from .logchan import LogPump
from .netns_listen import NETNS_DNS_ADDRESS, NETNS_KEY_PREFIX, EndpointSockets
from .records import (
    NetworkDoc,
    Tables,
    build_endpoint_doc,
    build_net_table,
    build_network_doc,
    network_meta,
)
from .stats import sum_query_stats
from .workerproc import (
    WorkerProc,
    WorkerSpec,
    attach_log,
    find,
    retiring_path,
    set_aside,
    spawn,
)

log = logging.getLogger(__name__)

RESTART_WINDOW = 10.0
RESTART_BURST = 5


class _DocsView:
    """Read-only ``network id -> full document`` of what the manager serves (built on demand)."""

    def __init__(self, manager: DnsManager) -> None:
        self._manager = manager

    def get(self, network_id: str) -> NetworkDoc | None:
        """The network's full document, or None if it is not served."""
        t = self._manager._tables.nets.get(network_id)
        return None if t is None else {**t.meta, "endpoints": list(t.eps.values())}


class DnsManager(EndpointSockets):
    """Runs the unprivileged DNS worker(s) and keeps their sockets and records current."""

    def __init__(
        self,
        *,
        domain: str = "dns.netd",
        ttl: int = 5,
        user: str | None = None,
        upstreams_from: str = "/etc/resolv.conf",
        host_listen: str | None = None,
        port: int = 53,
        workers: int | None = None,
        run_dir: Path | None = None,
    ) -> None:
        if workers is not None and not 1 <= workers <= 64:
            raise ConfigError(f"invalid DNS workers {workers!r}: expected 1 to 64")
        self.domain = domain.strip(".").lower()
        self.ttl = ttl
        self.user = user or "nobody"
        self.upstreams_from = upstreams_from
        self.host_listen = parse_listen(host_listen) if host_listen else None
        self.port = port
        self._lock = threading.RLock()
        self._docs = _DocsView(self)
        # network id -> (network, its document without endpoints)
        self._served: dict[str, tuple[Network, NetworkDoc]] = {}
        # network id -> (ids of the Endpoint objects last published, id -> object): to diff the
        # next update; holding the objects keeps their ids from being reused.
        self._last: dict[str, tuple[set[int], dict[int, Endpoint]]] = {}
        self._socks: dict[str, _Sock] = {}
        self._tables = Tables({}, self.domain)
        self._workers = [_Worker(i) for i in range(workers or default_workers())]
        self.spec = WorkerSpec(
            domain=self.domain,
            ttl=ttl,
            user=self.user,
            upstreams_from=upstreams_from,
            workers=len(self._workers),
            run_dir=run_dir,
        )
        self._stopping = threading.Event()
        self._supervisor: threading.Thread | None = None
        self._placements: dict[str, str] = {}  # driver name -> DnsPlacement; absent: gateway
        self._logs = LogPump()  # the workers' log records, logged in the daemon's format

    # --- lifecycle ------------------------------------------------------------------------

    def start(self) -> None:
        """Adopt workers left running (with a run dir), bind the host listener, spawn the rest."""
        with self._lock:
            self._stopping.clear()
            if self.spec.run_dir is not None:
                self._adopt()
            host_keys: dict[str, tuple[str, bool, int]] = {}
            host_port = 0
            if self.host_listen:
                addr, host_port = self.host_listen
                host_keys = self._socket_keys(addr, host_port, "host-")
            for key in [k for k, s in self._socks.items() if s.host and k not in host_keys]:
                self._drop_socket(key)  # host_listen changed since the worker started
            for key, (a, tcp, owner) in host_keys.items():
                if key not in self._socks:
                    self._socks[key] = _Sock(self._bind(a, host_port, tcp), True, owner)
                    self._send_later(owner, key)
            for w in self._workers:
                if w.proc is None and w.old is None:
                    self._spawn(w)
            self._supervisor = threading.Thread(
                target=self._supervise, name="netd-dns-supervisor", daemon=True
            )
            self._supervisor.start()

    def _adopt(self) -> None:
        """Take over the workers an earlier daemon left running (``start``, lock held)."""
        assert self.spec.run_dir is not None
        # A replacement that an earlier daemon did not finish: its predecessor goes now.
        for line in stop_workers(self.spec.run_dir, prefixes=("retiring",)):
            log.warning("DNS: interrupted replacement: %s", line)
        found = find(self.spec)
        layout_ok = all(f.proc.record and f.proc.record.settings.get("workers") ==
                        self.spec.workers for f in found)  # fmt: skip
        for f in found:
            proc = f.proc
            attach_log(proc, self._logs)  # first: what it logged while no daemon was there
            keep = f.compatible or (layout_ok and proc.index < len(self._workers))
            if keep:
                try:
                    self._import_sockets(proc)
                    missing = set(f.hello.get("sockets", [])) - set(self._socks)
                    if missing:  # an older protocol: it serves sockets it cannot hand over
                        raise ValueError(f"it did not hand over {sorted(missing)}")
                except (Unavailable, ValueError, OSError) as exc:
                    f.why, keep = f"taking its sockets back failed: {exc}", False
            if keep and f.compatible:
                w = self._workers[proc.index]
                w.proc, w.full = proc, True
                log.info("DNS worker %d (pid %d) adopted", proc.index, proc.pid)
            elif keep:
                # Same sockets, other code or settings: it serves until its replacement has
                # the records (first set_state), then retires.
                self._workers[proc.index].old = proc
                log.warning("DNS worker %d (pid %d) is replaced: %s", proc.index, proc.pid, f.why)
            else:
                # Another socket layout (worker count changed), or it would not hand its sockets
                # over: the sockets are bound anew, which needs the old ones closed first. DNS is
                # down until the first set_state.
                log.warning("DNS worker %d (pid %d) is stopped: %s", proc.index, proc.pid, f.why)
                proc.retire()
                forget(self.spec.run_dir, proc.index)
                for key in [k for k, s in self._socks.items() if s.owner == proc.index]:
                    self._socks.pop(key).sock.close()  # those it did hand over

    def _import_sockets(self, proc: WorkerProc) -> None:
        """Hold the sockets a found worker serves (descriptors sent back over ``export``)."""
        start = 0
        while True:
            reply, fds = proc.request({"op": "export", "start": start})
            items = reply.get("add", [])
            for item, fd in zip(items, fds, strict=True):
                sock = socket.socket(fileno=fd)
                old = self._socks.pop(item["key"], None)
                if old is not None:
                    old.sock.close()
                host, client = bool(item["host"]), str(item.get("client", ""))
                self._socks[item["key"]] = _Sock(sock, host, proc.index, client)
            start += len(items)
            if not reply.get("more") or not items:
                return

    def _drop_socket(self, key: str) -> None:
        """Stop serving one socket the daemon holds (its worker is told, then it is closed)."""
        s = self._socks.pop(key)
        w = self._workers[s.owner] if s.owner < len(self._workers) else None
        if w is not None and w.proc is not None:
            with contextlib.suppress(Unavailable):
                self._request(w, {"op": "sockets", "add": [], "del": [key]})
        s.sock.close()

    def _send_later(self, owner: int, key: str) -> None:
        """Hand a newly bound socket to its (adopted) worker; spawned ones get all at spawn."""
        w = self._workers[owner]
        if w.proc is not None:
            try:
                self._send_sockets(w, [key])
            except Unavailable as exc:
                log.warning("DNS worker not reachable (%s); it gets the sockets on restart", exc)

    def stop(self) -> None:
        """Stop the workers for good and close every socket."""
        self._halt_supervisor()
        with self._lock:
            for w in self._workers:
                for proc in (w.old, w.proc):
                    if proc is not None:
                        proc.kill()
                w.old = w.proc = None
                if self.spec.run_dir is not None:
                    forget(self.spec.run_dir, w.index)
            for s in self._socks.values():
                s.sock.close()
            self._socks.clear()
        self._logs.stop()

    def _halt_supervisor(self) -> None:
        self._stopping.set()
        if self._supervisor is not None:
            self._supervisor.join(timeout=5)
            self._supervisor = None

    def detach(self) -> None:
        """Let go of the workers without stopping them (the daemon exits; DNS keeps serving).

        Without a run dir (attached workers) this is :meth:`stop`: those cannot be found again.
        """
        if self.spec.run_dir is None:
            self.stop()
            return
        self._halt_supervisor()
        with self._lock:
            pids = [p.pid for w in self._workers for p in (w.old, w.proc) if p is not None]
            log.info("DNS workers (pids %s) keep serving; the next daemon adopts them", pids)
            for w in self._workers:
                for proc in (w.old, w.proc):
                    if proc is not None:
                        proc.detach()
                w.old = w.proc = None
            for s in self._socks.values():
                s.sock.close()  # the workers hold their own descriptors
            self._socks.clear()
        self._logs.stop()  # they keep their log lines until the next daemon sends a pipe

    def worker_pid(self) -> int | None:
        """PID of the first worker, if running."""
        return self.worker_pids()[0]

    def worker_pids(self) -> list[int | None]:
        """PIDs of the workers (None for one not running), in worker order."""
        return [w.proc.pid if w.proc is not None and w.alive() else None for w in self._workers]

    # --- state ----------------------------------------------------------------------------

    def _socket_keys(
        self, addr: str, port: int, prefix: str = ""
    ) -> dict[str, tuple[str, bool, int]]:
        """Socket key -> (address, TCP?, owning worker) for one listening address."""
        n = len(self._workers)
        keys = {f"{prefix}tcp:{addr}:{port}": (addr, True, 0)}
        if n == 1:
            keys[f"{prefix}udp:{addr}:{port}"] = (addr, False, 0)
        else:
            for i in range(n):
                keys[f"{prefix}udp:{addr}:{port}#{i}"] = (addr, False, i)
        return keys

    def _bind(self, addr: str, port: int, tcp: bool) -> socket.socket:
        stype = socket.SOCK_STREAM if tcp else socket.SOCK_DGRAM
        return bind_dns_socket(addr, port, stype, reuseport=len(self._workers) > 1)

    def set_placements(self, placements: Mapping[str, str]) -> None:
        """Where each driver's containers find DNS (``Capabilities.dns`` by driver name):
        "gateway" binds the network's gateway addresses in the host, "netns" and "none" bind
        nothing there (the endpoint sockets below serve "netns")."""
        self._placements = dict(placements)

    def _gateway_listen(self, network: Network) -> list[str]:
        """Addresses to listen on in the host for ``network`` (its gateways, if it is served
        there: a macvlan network's gateway is the upstream router's, never netd's)."""
        if self._placements.get(network.driver, "gateway") != "gateway":
            return []
        return [str(sub.gateway) for sub in network.subnets if sub.gateway is not None]

    def set_state(self, networks: list[tuple[Network, list[Endpoint]]]) -> None:
        """Make the workers serve exactly these networks (only changed networks are sent)."""
        wanted = {net.id: (net, eps) for net, eps in networks if net.dns_enabled}
        with self._lock:
            current = self._tables.docs
            changed: dict[str, tuple[Network, NetworkDoc]] = {}
            for nid, (net, eps) in wanted.items():
                doc = build_network_doc(net, eps)
                old = current.get(nid)
                if old is None or old != doc or self._served[nid][0] != net:
                    changed[nid] = (net, doc)
                self._last[nid] = ({id(e) for e in eps}, {id(e): e for e in eps})
            self._apply(changed, [nid for nid in self._served if nid not in wanted])

    def update_network(self, network: Network, endpoints: list[Endpoint]) -> None:
        """Apply one network's change at the cost of what changed.

        Endpoints are compared with the last published set by object identity (a new object
        under a known key counts only if its DNS data differ) and only the added, changed and
        removed ones are sent, so the cost is flat in the endpoints that did not change; a
        change of the network itself (subnets, options, DNS on/off) re-sends its whole document.
        """
        nid = network.id
        with self._lock:
            served = self._served.get(nid)
            last = self._last.get(nid)
            if not network.dns_enabled:
                if served is not None:
                    self._apply({}, [nid])
                return
            adopted = any(w.full for w in self._workers)  # first push after adoption: whole
            if served is None or last is None or served[0] != network or adopted:
                self._apply({nid: (network, build_network_doc(network, endpoints))}, [])
                self._last[nid] = ({id(e) for e in endpoints}, {id(e): e for e in endpoints})
                return
            # By object identity, in C (set operations): the service keeps its Endpoint
            # objects, so an attach or detach shows up as one new or one gone object.
            ids, objs = last
            cur = set(map(id, endpoints))
            gone_ids = ids - cur
            new_ids = cur - ids
            gone = {objs[i].key: objs.pop(i) for i in gone_ids}
            added: list[Endpoint] = []
            if new_ids:
                # The list is oldest first: new objects are found at its end.
                for e in reversed(endpoints):
                    if id(e) not in new_ids:
                        continue
                    objs[id(e)] = e
                    o = gone.pop(e.key, None)  # same key, new object: sent only if DNS differs
                    if o is None or _dns_fields(o) != _dns_fields(e):
                        added.append(e)
                    if len(objs) == len(cur):
                        break
            add = [build_endpoint_doc(e) for e in reversed(added)]
            delete = [f"{ifname}/{cid}" for cid, ifname in gone]
            self._last[nid] = (cur, objs)
            if not add and not delete:
                return
            self._tables.change_endpoints(nid, add, delete)
            self._tables.refresh_clients({e["cid"] for e in add} | {k[0] for k in gone})
            msg = {"op": "endpoints", "net": nid, "add": add, "del": delete}
            for w in self._workers:
                try:
                    self._request(w, dict(msg))
                except Unavailable as exc:
                    log.warning("DNS worker not reachable (%s); it gets the state on restart", exc)

    def remove_network(self, network_id: str) -> None:
        """Stop serving one network."""
        with self._lock:
            if network_id in self._served:
                self._apply({}, [network_id])

    def _apply(self, changed: dict[str, tuple[Network, NetworkDoc]], removed: list[str]) -> None:
        """Send whole networks set or removed, then bind/close sockets to match.

        Called with ``self._lock`` held.
        """
        for nid in removed:
            self._served.pop(nid, None)
            self._last.pop(nid, None)
        for nid, (net, _doc) in changed.items():
            self._served[nid] = (net, network_meta(net))
        wanted: dict[str, tuple[str, bool, int]] = {}
        for net, _meta in self._served.values():
            for addr in self._gateway_listen(net):
                wanted.update(self._socket_keys(addr, self.port))
        docs = {nid: doc for nid, (_, doc) in changed.items()}
        # Sockets in containers' namespaces come and go with their endpoints, not here.
        gone = [k for k, s in self._socks.items() if not (s.host or s.client) and k not in wanted]
        new: dict[str, _Sock] = {}
        for key, (addr, tcp, owner) in wanted.items():
            if key in self._socks:
                continue
            try:
                new[key] = _Sock(self._bind(addr, self.port, tcp), False, owner)
            except KernelError as exc:
                # Other networks keep working; the next set_state retries this one.
                log.error("%s", exc)
        self._tables = self._tables.replace(docs, removed)
        # Slots whose worker is being replaced: the new one starts below, with everything.
        pending = [w for w in self._workers if w.proc is None and w.old is not None]
        for w in self._workers:
            if w in pending:
                continue
            mine = [k for k in gone if self._socks[k].owner == w.index]
            try:
                if w.full:  # adopted: serve exactly the current networks, whatever it had
                    msg = {"op": "records", "set": self._tables.docs, "del": [], "replace": True}
                    self._request(w, msg)
                    w.full = False
                elif docs or removed:
                    self._request(w, {"op": "records", "set": docs, "del": removed})
                if mine:
                    self._request(w, {"op": "sockets", "add": [], "del": mine})
            except Unavailable as exc:
                log.warning("DNS worker not reachable (%s); it gets the state on restart", exc)
        for key in gone:
            self._socks.pop(key).sock.close()
        self._socks.update(new)
        for w in self._workers:
            if w in pending:
                try:
                    self._spawn(w)  # records and sockets, then the old worker retires
                except (OSError, KernelError, Unavailable) as exc:
                    log.error("starting the DNS worker %d that replaces pid %d: %s", w.index,
                              w.old.pid if w.old else 0, exc)  # fmt: skip
                continue
            try:
                self._send_sockets(w, [k for k, s in new.items() if s.owner == w.index])
            except Unavailable as exc:
                log.warning("DNS worker not reachable (%s); it gets the sockets on restart", exc)

    def lookup(self, name: str, network: str | None = None) -> list[str]:
        """Addresses (A then AAAA) of ``name`` as the host sees them, or in one network."""
        key = name.strip(".").lower()
        with self._lock:  # held while reading: updates change the tables in place
            tables = self._tables
            scope = tables.scope_of(network)
            if scope is None:
                return []
            return tables.addresses(scope, key, 4) + tables.addresses(scope, key, 6)

    def records(self, network_id: str) -> dict[str, Any] | None:
        """The records the workers serve for one network (None when it is not served).

        Read-only, for ``netd network inspect``: the listening addresses and, per record type,
        owner name → values, as built from the document last sent to the workers.
        """
        with self._lock:
            doc = self._docs.get(network_id)
            served = self._served.get(network_id)
            bound = {key for key, sock in self._socks.items() if not sock.host}
        if doc is None or served is None:
            return None
        table = build_net_table(doc, self.domain)
        listen: list[dict[str, Any]] = []
        for addr in self._gateway_listen(served[0]):
            keys = self._socket_keys(addr, self.port)
            listen.append({"address": addr, "port": self.port, "bound": set(keys) <= bound})
        if self._placements.get(served[0].driver) == "netns":
            prefix = f"{NETNS_KEY_PREFIX}{network_id[:12]}:"
            count = sum(1 for k in bound if k.startswith(prefix) and k.endswith(":udp"))
            listen.append({"address": NETNS_DNS_ADDRESS, "port": self.port, "in": "each "
                           "container's namespace", "containers": count})  # fmt: skip
        return {
            "domain": self.domain,
            "listen": listen,
            "forward": doc["forward"],
            "A": {k: list(v) for k, v in sorted(table.v4.items())},
            "AAAA": {k: list(v) for k, v in sorted(table.v6.items())},
            "PTR": {k: list(v) for k, v in sorted(table.ptr.items())},
            "SRV": {k: [f"{port} {target}" for port, target in v] for k, v in table.srv.items()},
        }

    def stats(self) -> dict[str, Any]:
        """The first worker's own figures (memory, counts), and the number of workers."""
        with self._lock:
            reply = self._request(self._workers[0], {"op": "stats"})
        reply["workers"] = len(self._workers)
        return reply

    def query_stats(self) -> dict[str, Any]:
        """Query counters summed over every worker (for the daemon's /metrics)."""
        with self._lock:
            replies = []
            for w in self._workers:
                try:
                    replies.append(self._request(w, {"op": "stats"}))
                except Unavailable:
                    continue  # restarting: its counts start again from zero
        return sum_query_stats(replies)

    # --- workers --------------------------------------------------------------------------

    def _spawn(self, w: _Worker) -> None:
        """Start slot ``w``'s worker with the current records and its sockets.

        If it replaces an older worker (``w.old``), that one serves the same sockets until the
        new one has everything, then retires: no moment without an answering worker.
        """
        run_dir = self.spec.run_dir
        if w.old is not None and run_dir is not None:
            set_aside(run_dir, w.index)  # a crash from here on: the next daemon stops it
        w.proc = spawn(self.spec, w.index, self._logs)
        self._request(w, {"op": "records", "set": self._tables.docs, "del": []})
        self._send_sockets(w, [k for k, s in self._socks.items() if s.owner == w.index])
        old, w.old = w.old, None
        if old is not None:
            old.retire()
            log.info("DNS worker %d: pid %d retired, pid %d serves", w.index, old.pid, w.proc.pid)
            if run_dir is not None:
                with contextlib.suppress(FileNotFoundError):
                    retiring_path(run_dir, w.index).unlink()

    def _send_sockets(self, w: _Worker, keys: list[str]) -> None:
        for i in range(0, len(keys), MAX_FDS):
            batch = keys[i : i + MAX_FDS]
            add = [{"key": k, "host": self._socks[k].host, "client": self._socks[k].client}
                   for k in batch]  # fmt: skip
            fds = [self._socks[k].sock.fileno() for k in batch]
            self._request(w, {"op": "sockets", "add": add, "del": []}, fds)

    def _request(
        self, w: _Worker, msg: dict[str, Any], fds: list[int] | None = None
    ) -> dict[str, Any]:
        if w.proc is None:
            raise Unavailable(f"DNS worker {w.index} is not running")
        reply, got = w.proc.request(msg, fds)
        for fd in got:
            os.close(fd)
        return reply

    def _supervise(self) -> None:
        while not self._stopping.wait(0.02):
            for w in self._workers:
                proc = w.proc
                if proc is None or proc.alive():
                    continue
                with self._lock:
                    if self._stopping.is_set() or proc is not w.proc:
                        continue
                    self._restart(w, proc)

    def _restart(self, w: _Worker, proc: WorkerProc) -> None:
        log.error("DNS worker %d exited with %s; restarting", proc.pid, proc.exit_status())
        now = time.monotonic()
        w.restarts = [t for t in w.restarts if now - t < RESTART_WINDOW]
        if len(w.restarts) >= RESTART_BURST:
            time.sleep(1.0)  # crash loop: do not spin
        w.restarts.append(now)
        proc.kill()  # closes the connection and pidfd, reaps our child
        w.proc = None
        w.full = False  # a new worker gets every record at spawn
        try:
            self._spawn(w)
        except (OSError, KernelError, Unavailable) as exc:
            log.error("restarting DNS worker %d: %s", w.index, exc)
            if w.proc is not None and w.proc.alive():
                w.proc.kill()  # the supervisor tries again
