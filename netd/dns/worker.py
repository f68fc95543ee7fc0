"""The unprivileged DNS worker process: ``python -m netd.dns.worker --control-fd N ...``.

Started by :class:`~netd.dns.manager.DnsManager` (as root), it drops privileges before doing
anything else: empties the capability bounding set, clears supplementary groups, switches to
the configured user (``nobody`` by default) — which clears the permitted and effective
capability sets — sets ``PR_SET_NO_NEW_PRIVS`` and checks /proc/self/status that no capability
is left. Then it serves: listening sockets and record documents arrive on the control socket
(see :mod:`netd.dns.control`); each message is applied in one step (whole networks: tables
swapped with a single assignment; one network's endpoints: changed in place under the
answerer's sequence lock) and acknowledged. When the control socket closes, the worker exits.
It never binds a socket itself and never touches the kernel's network configuration.
"""

from __future__ import annotations

import argparse
import asyncio
import ctypes
import logging
import os
import pwd
import resource
import signal
import socket
import sys
from typing import Any

from .answer import Answerer
from .control import ChannelClosed, Receiver, send_message
from .forward import Forwarder
from .seccomp import install_filter
from .server import Server
from .upstreams import HostUpstreams

log = logging.getLogger("netd.dns.worker")

PR_SET_PDEATHSIG = 1
PR_CAPBSET_DROP = 24
PR_SET_NO_NEW_PRIVS = 38


def _prctl(option: int, arg: int) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(option, arg, 0, 0, 0) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"prctl({option}, {arg}): {os.strerror(err)}")


def capabilities() -> dict[str, int]:
    """CapInh/CapPrm/CapEff/CapBnd/CapAmb of this process from /proc/self/status."""
    caps = {}
    with open("/proc/self/status", encoding="ascii") as f:
        for line in f:
            if line.startswith("Cap"):
                key, _, val = line.partition(":")
                caps[key] = int(val.strip(), 16)
    return caps


def drop_privileges(user: str) -> None:
    """Become ``user`` with no capabilities at all; exit if anything is left."""
    pw = pwd.getpwnam(user)
    if os.geteuid() == 0:
        with open("/proc/sys/kernel/cap_last_cap", encoding="ascii") as f:
            last = int(f.read())
        for cap in range(last + 1):
            _prctl(PR_CAPBSET_DROP, cap)  # not even a setuid binary could regain them
        os.setgroups([])
        os.setresgid(pw.pw_gid, pw.pw_gid, pw.pw_gid)
        os.setresuid(pw.pw_uid, pw.pw_uid, pw.pw_uid)
    _prctl(PR_SET_NO_NEW_PRIVS, 1)
    # The parent-death signal is reset by the credential change above, so set it after.
    _prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    caps = capabilities()
    if os.getuid() == 0 or caps.get("CapEff") or caps.get("CapPrm"):
        sys.exit(f"netd-dns: privileges were not dropped (uid {os.getuid()}, {caps})")


class Worker:
    """Applies control messages to the server and the record tables."""

    def __init__(self, ctrl: socket.socket, answerer: Answerer, server: Server) -> None:
        self.ctrl = ctrl
        self.answerer = answerer
        self.server = server
        self.receiver = Receiver(ctrl)
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.queue: asyncio.Queue[tuple[dict[str, Any], list[int]]] = asyncio.Queue()

    def finish(self) -> None:
        """Make :func:`serve` return."""
        if not self.done.done():
            self.done.set_result(None)

    async def consume(self) -> None:
        """Apply control messages one at a time, in order."""
        while True:
            msg, fds = await self.queue.get()
            try:
                await self.apply(msg, fds)
            except Exception:
                log.exception("applying control message %r", msg.get("op"))
                self.finish()  # the manager restarts us with a clean state

    def on_readable(self) -> None:
        try:
            got = self.receiver.read()
        except (ChannelClosed, OSError):
            self.finish()
            return
        if got is not None:
            self.queue.put_nowait(got)

    async def apply(self, msg: dict[str, Any], fds: list[int]) -> None:
        """Apply one control message and acknowledge it."""
        op = msg.get("op")
        reply: dict[str, Any] = {"ack": msg.get("seq")}
        if op == "sockets":
            for key in msg.get("del", []):
                await self.server.remove(key)
            for item, fd in zip(msg.get("add", []), fds, strict=True):
                await self.server.add(item["key"], socket.socket(fileno=fd), item["host"])
        elif op == "records":
            # Whole networks (new, removed, or changed beyond their endpoints).
            tables = self.answerer.tables.replace(msg.get("set", {}), msg.get("del", []))
            self.answerer.set_tables(tables)  # the atomic swap
        elif op == "endpoints":
            # One network's attach/detach: cost of the changed endpoints only.
            self.answerer.change_endpoints(msg["net"], msg.get("add", []), msg.get("del", []))
        elif op == "stats":
            ru = resource.getrusage(resource.RUSAGE_SELF)
            reply.update(
                maxrss_kb=ru.ru_maxrss,
                rss_kb=_rss_kb(),
                networks=len(self.answerer.tables.nets),
                clients=len(self.answerer.tables.clients),
                cached=len(self.answerer.cache),
                queries=self.answerer.stats.snapshot(),
                upstream_failures=self.server.forwarder.health.failures,
            )
        send_message(self.ctrl, reply)


def _rss_kb() -> int:
    with open("/proc/self/status", encoding="ascii") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


async def serve(ctrl: socket.socket, domain: str, ttl: int, upstreams_from: str) -> None:
    """Serve until the control socket closes."""
    answerer = Answerer(domain, ttl)
    forwarder = Forwarder(answerer, HostUpstreams(upstreams_from))
    server = Server(answerer, forwarder)
    worker = Worker(ctrl, answerer, server)
    loop = asyncio.get_running_loop()
    ctrl.setblocking(False)
    loop.add_reader(ctrl.fileno(), worker.on_readable)
    loop.add_signal_handler(signal.SIGTERM, worker.finish)
    consumer = asyncio.ensure_future(worker.consume())
    await worker.done
    consumer.cancel()
    loop.remove_signal_handler(signal.SIGTERM)
    loop.remove_reader(ctrl.fileno())
    await server.close()


def main(argv: list[str] | None = None) -> None:
    """Entry point: drop privileges, then serve the control socket's instructions."""
    p = argparse.ArgumentParser(prog="netd-dns-worker")
    p.add_argument("--control-fd", type=int, required=True)
    p.add_argument("--user", default="nobody")
    p.add_argument("--domain", default="dns.netd")
    p.add_argument("--ttl", type=int, default=5)
    p.add_argument("--upstreams-from", default="/etc/resolv.conf")
    args = p.parse_args(argv)
    ctrl = socket.socket(fileno=args.control_fd)
    drop_privileges(args.user)
    install_filter()  # allow-list of system calls, after the privilege drop (seccomp.py)
    logging.basicConfig(level=logging.WARNING, format="netd-dns[%(process)d]: %(message)s")
    asyncio.run(serve(ctrl, args.domain, args.ttl, args.upstreams_from))


if __name__ == "__main__":
    main()
