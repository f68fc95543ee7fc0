"""The unprivileged DNS worker process: ``python -m netd.dns.worker --control-fd N ...``.

Started by :class:`~netd.dns.manager.DnsManager` (as root), it drops privileges before doing
anything else: empties the capability bounding set, clears supplementary groups, switches to
the configured user (``nobody`` by default) — which clears the permitted and effective
capability sets — sets ``PR_SET_NO_NEW_PRIVS`` and checks /proc/self/status that no capability
is left. Then it serves: listening sockets and record documents arrive on the control socket
(see :mod:`netd.dns.control`); each message is applied in one step (whole networks: tables
swapped with a single assignment; one network's endpoints: changed in place under the
answerer's sequence lock) and acknowledged.

Two ways to be started. ``--control-fd N``: one connected control socket; when it closes the
worker exits (the standalone harness, tests). ``--listen-fd N`` (the daemon): a listening
control socket the worker accepts connections on, one at a time, from the daemon's uid only
(SO_PEERCRED). When a connection closes — the daemon stopped, restarted, crashed or is being
upgraded — the worker keeps answering from its last records and sockets until a new daemon
connects, says ``hello``, takes its sockets back (``export``) and pushes the current records
(``records`` with ``replace``), or tells it to ``retire`` (see :mod:`netd.dns.handover`). A
worker that serves no socket has nothing to keep alive and exits when its connection closes
(or if no daemon connects within :data:`FIRST_CONTACT` seconds of its start).
It never binds a socket itself and never touches the kernel's network configuration.

Its stderr is /dev/null: log records go over a pipe the daemon reads (``--log-fd`` at start,
then the control message ``log`` from each daemon that adopts it; :mod:`netd.dns.logchan`), so
this unprivileged process holds no descriptor of the daemon's log.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import logging
import os
import pwd
import resource
import signal
import socket
import struct
import sys
import threading
from typing import Any

from .answer import Answerer
from .control import MAX_FDS, ChannelClosed, Receiver, send_message
from .forward import Forwarder
from .handover import build_id
from .logchan import ChannelHandler
from .records import Tables
from .seccomp import install_filter
from .server import Server
from .upstreams import HostUpstreams

log = logging.getLogger("netd.dns.worker")

PR_SET_PDEATHSIG = 1
PR_CAPBSET_DROP = 24
PR_SET_NO_NEW_PRIVS = 38
FIRST_CONTACT = 60.0  # seconds a detached worker waits for its first control connection


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


def drop_privileges(user: str, *, parent_death: bool = True) -> None:
    """Become ``user`` with no capabilities at all; exit if anything is left.

    ``parent_death``: be killed when the parent exits (not for a worker that must outlive its
    daemon).
    """
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
    if parent_death:
        # The parent-death signal is reset by the credential change above, so set it after.
        _prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    caps = capabilities()
    if os.getuid() == 0 or caps.get("CapEff") or caps.get("CapPrm"):
        sys.exit(f"netd-dns: privileges were not dropped (uid {os.getuid()}, {caps})")


class Worker:
    """Applies control messages to the server and the record tables."""

    def __init__(
        self,
        ctrl: socket.socket | None,
        answerer: Answerer,
        server: Server,
        *,
        listener: socket.socket | None = None,
        owner_uid: int = 0,
        hello: dict[str, Any] | None = None,
        channel: ChannelHandler | None = None,
    ) -> None:
        self.ctrl: socket.socket | None = None
        self.channel = channel  # where log records go (None: stderr, run by hand)
        self.answerer = answerer
        self.server = server
        self.listener = listener  # detached mode: accept a new daemon's connection
        self.owner_uid = owner_uid
        self.hello = hello or {}
        self.token: str | None = None
        self.contacted = False
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        # (connection it came on, message, fds): replies go back on that connection only
        self.queue: asyncio.Queue[tuple[socket.socket, dict[str, Any], list[int]]] = asyncio.Queue()
        if ctrl is not None:
            self.connect(ctrl)

    def finish(self) -> None:
        """Make :func:`serve` return."""
        if not self.done.done():
            self.done.set_result(None)

    def connect(self, conn: socket.socket) -> None:
        """Make ``conn`` the control connection (a previous one is dropped)."""
        old, self.ctrl = self.ctrl, None
        if old is not None:  # superseded (its daemon is gone or going): not a reason to exit
            self.drop(old)
        conn.setblocking(False)
        self.ctrl = conn
        self.contacted = True
        receiver = Receiver(conn)
        asyncio.get_running_loop().add_reader(conn.fileno(), self.on_readable, conn, receiver)

    def drop(self, conn: socket.socket) -> None:
        """Close a control connection; without one, exit unless detached and serving."""
        with contextlib.suppress(ValueError, OSError):
            asyncio.get_running_loop().remove_reader(conn.fileno())
        conn.close()
        if conn is not self.ctrl:
            return
        self.ctrl = None
        if self.listener is None or not self.server.keys():
            self.finish()
        else:
            # Normal at every daemon restart: buffered by the log channel, the next daemon
            # logs it when it adopts this worker.
            log.info("control connection closed; serving the last records until adopted")

    def on_accept(self) -> None:
        """A daemon connects on the listening socket: take it if it runs as our owner."""
        assert self.listener is not None
        try:
            conn, _ = self.listener.accept()
        except OSError:
            return
        try:
            raw = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12)
            _pid, uid, _gid = struct.unpack("3i", raw)
        except OSError:
            conn.close()
            return
        if uid != self.owner_uid:
            log.warning("refused a control connection from uid %d", uid)
            conn.close()
            return
        self.connect(conn)

    def first_contact_due(self) -> None:
        """A detached worker nobody ever connected to is an orphan of a failed start: exit."""
        if not self.contacted:
            log.warning("no daemon connected within %.0f s; exiting", FIRST_CONTACT)
            self.finish()

    async def consume(self) -> None:
        """Apply control messages one at a time, in order."""
        while True:
            conn, msg, fds = await self.queue.get()
            try:
                reply, out_fds = await self.apply(msg, fds)
            except Exception:
                log.exception("applying control message %r", msg.get("op"))
                self.finish()  # the manager restarts us with a clean state
                continue
            with contextlib.suppress(OSError):  # that daemon is gone; the next one asks again
                send_message(conn, reply, out_fds)
            if msg.get("op") == "retire":
                self.finish()  # a newer worker serves our sockets now

    def on_readable(self, conn: socket.socket, receiver: Receiver) -> None:
        try:
            got = receiver.read()
        except (ChannelClosed, OSError):
            self.drop(conn)
            return
        if got is not None:
            self.queue.put_nowait((conn, *got))

    async def apply(self, msg: dict[str, Any], fds: list[int]) -> tuple[dict[str, Any], list[int]]:
        """Apply one control message; return the acknowledgement (and fds it carries)."""
        op = msg.get("op")
        reply: dict[str, Any] = {"ack": msg.get("seq")}
        out_fds: list[int] = []
        if op == "sockets":
            for key in msg.get("del", []):
                await self.server.remove(key)
            for item, fd in zip(msg.get("add", []), fds, strict=True):
                sock = socket.socket(fileno=fd)
                await self.server.add(item["key"], sock, item["host"], item.get("client", ""))
        elif op == "records":
            # Whole networks (new, removed, or changed beyond their endpoints); with "replace"
            # (a new daemon's first push) exactly these networks, whatever was served before.
            old = self.answerer.tables
            docs = msg.get("set", {})
            if msg.get("replace"):
                tables = Tables(docs, old.domain)
            else:
                tables = old.replace(docs, msg.get("del", []))
            self.answerer.set_tables(tables)  # the atomic swap
        elif op == "endpoints":
            # One network's attach/detach: cost of the changed endpoints only.
            self.answerer.change_endpoints(msg["net"], msg.get("add", []), msg.get("del", []))
        elif op == "log":
            # A new daemon's pipe for our log records (the last one's reader is gone).
            for fd in fds[1:]:
                os.close(fd)
            if fds and self.channel is not None:
                self.channel.attach(fds[0])
            elif fds:
                os.close(fds[0])
        elif op == "hello":
            if self.token is None and msg.get("token"):
                self.token = str(msg["token"])  # given once, by the daemon that started us
            reply.update(
                self.hello,
                pid=os.getpid(),
                token=self.token,
                networks=sorted(self.answerer.tables.nets),
                sockets=sorted(self.server.keys()),
            )
        elif op == "export":
            # Descriptors of the sockets we serve, so a new daemon holds them again (and can
            # hand them to a replacement worker without closing them).
            held = sorted(self.server.held().items())
            start = int(msg.get("start", 0))
            batch = held[start : start + MAX_FDS]
            reply.update(
                add=[{"key": k, "host": h, "client": c} for k, (_s, h, c) in batch],
                more=start + len(batch) < len(held),
            )
            out_fds = [s.fileno() for _k, (s, _h, _c) in batch]
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
                limits=self.server.admission.snapshot(),
                log_dropped=self.channel.dropped_total if self.channel is not None else 0,
            )
        return reply, out_fds


def _rss_kb() -> int:
    with open("/proc/self/status", encoding="ascii") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


async def serve(
    ctrl: socket.socket | None,
    domain: str,
    ttl: int,
    upstreams_from: str,
    *,
    listener: socket.socket | None = None,
    owner_uid: int = 0,
    hello: dict[str, Any] | None = None,
    channel: ChannelHandler | None = None,
) -> None:
    """Serve until the control socket closes (or, detached, until told to stop)."""
    answerer = Answerer(domain, ttl)
    forwarder = Forwarder(answerer, HostUpstreams(upstreams_from))
    server = Server(answerer, forwarder)
    worker = Worker(
        ctrl, answerer, server, listener=listener, owner_uid=owner_uid, hello=hello,
        channel=channel,
    )  # fmt: skip
    loop = asyncio.get_running_loop()
    if listener is not None:
        listener.setblocking(False)
        loop.add_reader(listener.fileno(), worker.on_accept)
        loop.call_later(FIRST_CONTACT, worker.first_contact_due)
    loop.add_signal_handler(signal.SIGTERM, worker.finish)
    consumer = asyncio.ensure_future(worker.consume())
    if channel is not None:
        flusher = asyncio.ensure_future(_flush_every(channel, 1.0))
    await worker.done
    if channel is not None:
        flusher.cancel()
    consumer.cancel()
    loop.remove_signal_handler(signal.SIGTERM)
    if listener is not None:
        loop.remove_reader(listener.fileno())
    if worker.ctrl is not None:
        loop.remove_reader(worker.ctrl.fileno())
    await server.drain(2.0)  # answer forwarded queries in flight (retiring, SIGTERM)
    await server.close()


async def _flush_every(channel: ChannelHandler, seconds: float) -> None:
    # Lines the pipe had no room for (a burst, or the backlog a new daemon receives) go out
    # without waiting for the next record.
    while True:
        await asyncio.sleep(seconds)
        channel.flush()


def main(argv: list[str] | None = None) -> None:
    """Entry point: drop privileges, then serve the control socket's instructions."""
    p = argparse.ArgumentParser(prog="netd-dns-worker")
    mode = p.add_mutually_exclusive_group(required=True)
    mode.add_argument("--control-fd", type=int, help="connected control socket (exit on close)")
    mode.add_argument("--listen-fd", type=int, help="listening control socket (detached)")
    p.add_argument("--owner-uid", type=int, default=0, help="uid allowed to connect")
    p.add_argument("--user", default="nobody")
    p.add_argument("--domain", default="dns.netd")
    p.add_argument("--ttl", type=int, default=5)
    p.add_argument("--upstreams-from", default="/etc/resolv.conf")
    p.add_argument("--log-fd", type=int, default=None, help="pipe to the daemon for log records")
    args = p.parse_args(argv)
    channel = _setup_logging(args.log_fd)
    detached = args.listen_fd is not None
    ctrl = None if detached else socket.socket(fileno=args.control_fd)
    listener = socket.socket(fileno=args.listen_fd) if detached else None
    hello = {
        "build": build_id(),  # read before the filter, from the code this process runs
        "settings": {
            "domain": args.domain,
            "ttl": args.ttl,
            "upstreams_from": args.upstreams_from,
            "user": args.user,
        },
    }
    try:
        _raise_nofile()
        drop_privileges(args.user, parent_death=not detached)
        install_filter()  # allow-list of system calls, after the privilege drop (seccomp.py)
    except SystemExit as exc:
        if not isinstance(exc.code, int | None):
            log.critical("%s", exc.code)
        sys.exit(1)
    except Exception:
        log.critical("DNS worker failed to start", exc_info=True)
        sys.exit(1)
    main_loop = serve(
        ctrl, args.domain, args.ttl, args.upstreams_from, listener=listener,
        owner_uid=args.owner_uid, hello=hello, channel=channel,
    )  # fmt: skip
    try:
        asyncio.run(main_loop)
    except Exception:
        log.critical("DNS worker failed", exc_info=True)
        sys.exit(1)


def _setup_logging(log_fd: int | None) -> ChannelHandler | None:
    """Log records to the daemon's pipe (stderr only when run by hand without one)."""
    root = logging.getLogger()
    root.setLevel(logging.INFO)  # the daemon filters by its own level
    if log_fd is None:
        logging.basicConfig(format="netd-dns[%(process)d]: %(message)s")
        return None
    channel = ChannelHandler(log_fd)
    root.addHandler(channel)

    def hook(args: threading.ExceptHookArgs) -> None:
        exc = (args.exc_type, args.exc_value, args.exc_traceback)
        name = args.thread.name if args.thread else "?"
        log.error("uncaught exception in thread %s", name, exc_info=exc)  # type: ignore[arg-type]

    threading.excepthook = hook
    return channel


def _raise_nofile() -> None:
    """Soft descriptor limit up to the hard one: each forwarded query holds a socket."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = hard if hard != resource.RLIM_INFINITY else 65536
    if soft != resource.RLIM_INFINITY and soft < want:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (min(want, 65536), hard))


if __name__ == "__main__":
    main()
