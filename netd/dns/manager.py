"""The daemon's side of DNS: binds the listening sockets, runs and supervises the worker.

:class:`DnsManager` lives in the privileged daemon. For every DNS-enabled network it binds UDP
and TCP port 53 on each gateway address (that needs CAP_NET_BIND_SERVICE, which the worker does
not have), passes the sockets to the unprivileged worker process (:mod:`netd.dns.worker`) over
a socketpair with SCM_RIGHTS, and pushes the networks' record documents
(:func:`~netd.dns.records.build_network_doc`), only those that changed. Each push is applied
atomically by the worker and acknowledged, so when :meth:`DnsManager.set_state` returns the
worker answers from the new records. If the worker dies, a supervisor thread starts a new one
and re-sends sockets and records; the daemon keeps its copies of the sockets, so queries that
arrive meanwhile wait in the socket buffers. It does not answer queries itself, except
:meth:`DnsManager.lookup` for the CLI.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import select
import socket
import subprocess
import sys
import threading
import time
from typing import Any

from ..errors import ConfigError, KernelError, Unavailable
from ..model import Endpoint, Network
from .control import MAX_FDS, ChannelClosed, Receiver, send_message
from .records import NetworkDoc, Tables, build_network_doc

log = logging.getLogger(__name__)

IP_FREEBIND = 15  # linux/in.h: bind before the address is configured (bridge set up later)
ACK_TIMEOUT = 5.0
RESTART_WINDOW = 10.0
RESTART_BURST = 5


def _parse_listen(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    try:
        if not sep:
            raise ValueError("no port")
        addr = ipaddress.ip_address(host.strip("[]"))
        return str(addr), int(port)
    except ValueError as exc:
        raise ConfigError(f"invalid DNS host_listen {text!r}: expected ADDRESS:PORT") from exc


def bind_dns_socket(addr: str, port: int, kind: int) -> socket.socket:
    """A UDP socket bound to, or a TCP socket listening on, ``addr``:``port``."""
    fam = socket.AF_INET6 if ":" in addr else socket.AF_INET
    sock = socket.socket(fam, kind)
    try:
        if fam == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.setsockopt(socket.SOL_IP, IP_FREEBIND, 1)
        if kind == socket.SOCK_STREAM:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        else:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        sock.bind((addr, port))
        if kind == socket.SOCK_STREAM:
            sock.listen(128)
    except OSError as exc:
        sock.close()
        proto = "tcp" if kind == socket.SOCK_STREAM else "udp"
        raise KernelError(f"binding DNS {proto} socket to {addr} port {port}: {exc}") from exc
    return sock


class DnsManager:
    """Runs the unprivileged DNS worker and keeps its sockets and records current."""

    def __init__(
        self,
        *,
        domain: str = "dns.netd",
        ttl: int = 5,
        user: str | None = None,
        upstreams_from: str = "/etc/resolv.conf",
        host_listen: str | None = None,
        port: int = 53,
    ) -> None:
        self.domain = domain.strip(".").lower()
        self.ttl = ttl
        self.user = user or "nobody"
        self.upstreams_from = upstreams_from
        self.host_listen = _parse_listen(host_listen) if host_listen else None
        self.port = port
        self._lock = threading.RLock()
        self._docs: dict[str, NetworkDoc] = {}
        self._socks: dict[str, tuple[socket.socket, bool]] = {}  # key -> (socket, host view)
        self._tables = Tables({}, self.domain)
        self._proc: subprocess.Popen[bytes] | None = None
        self._ctrl: socket.socket | None = None
        self._seq = 0
        self._stopping = threading.Event()
        self._supervisor: threading.Thread | None = None
        self._restarts: list[float] = []

    # --- lifecycle ------------------------------------------------------------------------

    def start(self) -> None:
        """Bind the host listener (if configured) and spawn the worker."""
        with self._lock:
            self._stopping.clear()
            if self.host_listen:
                addr, port = self.host_listen
                for kind, name in ((socket.SOCK_DGRAM, "udp"), (socket.SOCK_STREAM, "tcp")):
                    key = f"host-{name}:{addr}:{port}"
                    if key not in self._socks:
                        self._socks[key] = (bind_dns_socket(addr, port, kind), True)
            self._spawn()
            self._supervisor = threading.Thread(
                target=self._supervise, name="netd-dns-supervisor", daemon=True
            )
            self._supervisor.start()

    def stop(self) -> None:
        """Stop the worker and close every socket."""
        self._stopping.set()
        with self._lock:
            self._kill_worker()
            for sock, _host in self._socks.values():
                sock.close()
            self._socks.clear()
        if self._supervisor is not None:
            self._supervisor.join(timeout=5)
            self._supervisor = None

    def worker_pid(self) -> int | None:
        """PID of the running worker, if any."""
        proc = self._proc
        return proc.pid if proc is not None and proc.poll() is None else None

    # --- state ----------------------------------------------------------------------------

    def set_state(self, networks: list[tuple[Network, list[Endpoint]]]) -> None:
        """Make the worker serve exactly these networks (only changes are sent)."""
        docs = {net.id: build_network_doc(net, eps) for net, eps in networks if net.dns_enabled}
        wanted: dict[str, tuple[str, int]] = {}
        for net, _eps in networks:
            if not net.dns_enabled:
                continue
            for sub in net.subnets:
                if sub.gateway is not None:
                    for kind in ("udp", "tcp"):
                        wanted[f"{kind}:{sub.gateway}:{self.port}"] = (
                            str(sub.gateway),
                            kind == "tcp",
                        )
        with self._lock:
            changed = {nid: d for nid, d in docs.items() if self._docs.get(nid) != d}
            removed = [nid for nid in self._docs if nid not in docs]
            gone = [k for k, (_s, host) in self._socks.items() if not host and k not in wanted]
            new: dict[str, tuple[socket.socket, bool]] = {}
            for key, (addr, tcp) in wanted.items():
                if key in self._socks:
                    continue
                stype = socket.SOCK_STREAM if tcp else socket.SOCK_DGRAM
                try:
                    new[key] = (bind_dns_socket(addr, self.port, stype), False)
                except KernelError as exc:
                    # Other networks keep working; the next set_state retries this one.
                    log.error("%s", exc)
            reuse = {n: t for n, t in self._tables.nets.items() if n not in changed}
            self._tables = Tables(docs, self.domain, reuse)
            self._docs = docs
            try:
                if changed or removed:
                    self._request({"op": "records", "set": changed, "del": removed})
                if gone:
                    self._request({"op": "sockets", "add": [], "del": gone})
            except Unavailable as exc:
                log.warning("DNS worker not reachable (%s); it gets the state on restart", exc)
            for key in gone:
                self._socks.pop(key)[0].close()
            self._socks.update(new)
            try:
                self._send_sockets(list(new))
            except Unavailable as exc:
                log.warning("DNS worker not reachable (%s); it gets the sockets on restart", exc)

    def lookup(self, name: str, network: str | None = None) -> list[str]:
        """Addresses (A then AAAA) of ``name`` as the host sees them, or in one network."""
        with self._lock:
            tables = self._tables
        scope = tables.scope_of(network)
        if scope is None:
            return []
        key = name.strip(".").lower()
        return tables.addresses(scope, key, 4) + tables.addresses(scope, key, 6)

    def stats(self) -> dict[str, Any]:
        """The worker's own figures (memory, counts)."""
        with self._lock:
            return self._request({"op": "stats"})

    # --- worker ---------------------------------------------------------------------------

    def _spawn(self) -> None:
        parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            cmd = [
                sys.executable, "-m", "netd.dns.worker",
                "--control-fd", str(child.fileno()),
                "--user", self.user,
                "--domain", self.domain,
                "--ttl", str(self.ttl),
                "--upstreams-from", self.upstreams_from,
            ]  # fmt: skip
            self._proc = subprocess.Popen(cmd, pass_fds=[child.fileno()], stdin=subprocess.DEVNULL)
        finally:
            child.close()
        self._ctrl = parent
        self._request({"op": "records", "set": self._docs, "del": []})
        self._send_sockets(list(self._socks))

    def _send_sockets(self, keys: list[str]) -> None:
        for i in range(0, len(keys), MAX_FDS):
            batch = keys[i : i + MAX_FDS]
            add = [{"key": k, "host": self._socks[k][1]} for k in batch]
            fds = [self._socks[k][0].fileno() for k in batch]
            self._request({"op": "sockets", "add": add, "del": []}, fds)

    def _request(self, msg: dict[str, Any], fds: list[int] | None = None) -> dict[str, Any]:
        ctrl = self._ctrl
        if ctrl is None:
            raise Unavailable("DNS worker is not running")
        self._seq += 1
        msg["seq"] = self._seq
        try:
            send_message(ctrl, msg, fds)
            receiver = Receiver(ctrl)
            deadline = time.monotonic() + ACK_TIMEOUT
            while True:
                left = deadline - time.monotonic()
                if left <= 0 or not select.select([ctrl], [], [], left)[0]:
                    raise Unavailable(f"DNS worker did not acknowledge {msg['op']!r}")
                got = receiver.read()
                if got is not None and got[0].get("ack") == self._seq:
                    return got[0]
        except (OSError, ChannelClosed) as exc:
            raise Unavailable(f"sending {msg['op']!r} to the DNS worker: {exc}") from exc

    def _kill_worker(self) -> None:
        proc, self._proc = self._proc, None
        if self._ctrl is not None:
            self._ctrl.close()
            self._ctrl = None
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=2)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def _supervise(self) -> None:
        while not self._stopping.is_set():
            proc = self._proc
            if proc is None:
                if self._stopping.wait(0.05):
                    return
                continue
            while proc.poll() is None:
                if self._stopping.wait(0.02):
                    return
            with self._lock:
                if self._stopping.is_set() or proc is not self._proc:
                    continue
                log.error("DNS worker %d exited with %s; restarting", proc.pid, proc.returncode)
                now = time.monotonic()
                self._restarts = [t for t in self._restarts if now - t < RESTART_WINDOW]
                if len(self._restarts) >= RESTART_BURST:
                    time.sleep(1.0)  # crash loop: do not spin
                self._restarts.append(now)
                if self._ctrl is not None:
                    self._ctrl.close()
                    self._ctrl = None
                try:
                    self._spawn()
                except (OSError, Unavailable) as exc:
                    log.error("restarting the DNS worker: %s", exc)
                    with contextlib.suppress(OSError):
                        if self._proc is not None:
                            self._proc.kill()


def worker_capabilities(pid: int) -> dict[str, str]:
    """Uid and capability lines of a process from /proc (for checks and `netd dns status`)."""
    out: dict[str, str] = {}
    with open(f"/proc/{pid}/status", encoding="ascii") as f:
        for line in f:
            key, _, val = line.partition(":")
            if key in (
                "Uid",
                "Gid",
                "Groups",
                "CapInh",
                "CapPrm",
                "CapEff",
                "CapBnd",
                "CapAmb",
                "NoNewPrivs",
            ):
                out[key] = val.strip()
    return out
