"""`netd daemon`: wire the seams together and serve the API on the Unix socket.

Start-up order: refuse a wrong namespace → refuse missing Python bindings (``requirements``) →
take the single-instance lock on the state directory → open the store → build
driver/firewall/DNS → start the service (converge the kernel) → bind the socket (or take
systemd's) → serve until SIGTERM/SIGINT. Shutdown leaves the data plane up: containers keep their
network while netd restarts, DNS included (the DNS workers are detached and the next daemon
adopts them; ``netd dns stop`` stops them for good).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import errno
import grp
import ipaddress
import logging
import os
import signal
import socket
import struct
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aiohttp import web

from .api.protocol_log import ProtocolLog
from .api.server import make_app
from .config import Config
from .errors import ConfigError, NetdError, StoreCorrupt
from .firewall.base import Firewall
from .instance_lock import InstanceLock, describe_os_error
from .ipam.subnets import parse_pool, ula_from_machine_id
from .model import Network
from .requirements import require
from .security.hostports import refuse_ports_in_use
from .service import Service
from .store.base import Store

if TYPE_CHECKING:
    from .dns.manager import DnsManager

log = logging.getLogger("netd.daemon")
SD_LISTEN_FDS_START = 3


def check_namespace(expected: str | None) -> None:
    """Refuse to run outside the namespace we were told to manage."""
    if expected is None:
        return
    try:
        want = os.stat(expected).st_ino
    except OSError as exc:
        raise ConfigError(f"managed_netns {expected!r}: {exc.strerror}") from exc
    if os.stat("/proc/self/ns/net").st_ino != want:
        raise ConfigError(
            f"netd runs in network namespace inode {os.stat('/proc/self/ns/net').st_ino} but "
            f"managed_netns {expected!r} is inode {want}; start it inside that namespace"
        )


def _peer_pid(path: Path) -> int | None:
    """The pid of whoever answers on a Unix socket, or None if nobody does."""
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.settimeout(1)
        probe.connect(str(path))
        raw = probe.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12)
        return int(struct.unpack("3i", raw)[0])
    except OSError:
        return None
    finally:
        probe.close()


def systemd_socket() -> socket.socket | None:
    """The listening socket passed by systemd socket activation (LISTEN_PID/LISTEN_FDS)."""
    if os.environ.get("LISTEN_PID") != str(os.getpid()):
        return None
    if int(os.environ.get("LISTEN_FDS", "0")) < 1:
        return None
    for key in ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"):
        os.environ.pop(key, None)
    return socket.socket(fileno=SD_LISTEN_FDS_START)


def bind_socket(path: Path, group: str) -> socket.socket:
    """Bind the API socket (mode 0660, owned by ``group`` if it exists); refuse if in use."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists() or path.is_symlink():
        holder = _peer_pid(path)
        if holder is not None:
            raise ConfigError(f"another daemon (pid {holder}) is serving {path}")
        path.unlink()  # stale socket of a dead daemon
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old = os.umask(0o117)  # the socket is never world-accessible, not even briefly
    try:
        sock.bind(str(path))
    finally:
        os.umask(old)
    os.chmod(path, 0o660)
    with contextlib.suppress(KeyError):
        os.chown(path, 0, grp.getgrnam(group).gr_gid)
    sock.listen(512)
    return sock


def _machine_id() -> str:
    for candidate in ("/etc/machine-id", "/var/lib/dbus/machine-id"):
        with contextlib.suppress(OSError):
            return Path(candidate).read_text().strip()
    return socket.gethostname()


def make_dns(config: Config) -> DnsManager:
    """The DNS manager (unprivileged worker process) configured from the daemon config.

    Its workers are detached, recorded in ``<state_dir>/dns``, so they outlive the daemon.
    """
    from .dns.manager import DnsManager

    return DnsManager(
        domain=config.dns_domain,
        ttl=config.dns_ttl,
        user=config.dns_user,
        host_listen=config.dns_host_listen,
        workers=config.dns_workers,
        run_dir=config.state_dir / "dns",
    )


def validate_netns_path(path: str, inode: int = 0) -> None:
    """InvalidInput unless ``path`` is a network namespace other than the daemon's own (and,
    with ``inode``, still that namespace)."""
    from .kernel.netns import open_netns

    os.close(open_netns(path, inode))


def build_service(config: Config) -> tuple[Service, Store, DnsManager]:
    """Construct the service, its store and its DNS manager from the config."""
    from .drivers import get_driver, load_external_drivers
    from .firewall import make_firewall
    from .kernel.hostroutes import host_routes
    from .store import open_store
    from .store.mirror import CopyWriter, MirroredStore

    drivers = {
        "bridge": get_driver("bridge", allow_initial_netns=config.managed_netns is None),
        "ipam": get_driver("ipam"),  # IPAM-only networks (CNI ``"ipam": {"type": "netd"}``)
        # Containers directly on a host link's segment; a kernel without the link kind
        # refuses the network's creation in one line (docs/drivers.md).
        "macvlan": get_driver("macvlan", allow_initial_netns=config.managed_netns is None),
        "ipvlan": get_driver("ipvlan", allow_initial_netns=config.managed_netns is None),
    }
    cluster = config.cluster if config.store == "etcd" else None
    node_address = None
    if cluster is not None:
        from .cluster.member import default_node_address

        node_address = cluster.node_address or default_node_address()
    # Networks across hosts (VXLAN); without a cluster it refuses creation in one line.
    drivers["overlay"] = get_driver(
        "overlay",
        allow_initial_netns=config.managed_netns is None,
        node_address=node_address,
    )
    drivers.update(load_external_drivers(config, reserved=drivers))
    if cluster is not None:
        from .cluster.member import open_cluster_store

        def is_global(net: Network) -> bool:
            driver = drivers.get(net.driver)
            return driver is not None and driver.capabilities.scope == "global"

        engine: Store = open_cluster_store(cluster, config.state_dir, is_global)
    else:
        engine = open_store(config.store, config.state_dir)
    store = MirroredStore(engine, CopyWriter(config.recovery_path))
    try:
        store.sync()  # the copy catches up with the database (StoreCorrupt if the db was lost)
    except BaseException:
        store.close()
        raise
    firewall = make_firewall(config.firewall_backend)
    dns = make_dns(config)
    pools = [parse_pool(p) for p in config.default_address_pools]
    ula = ula_from_machine_id(_machine_id())
    assert isinstance(ula, ipaddress.IPv6Network)
    service = Service(
        store=store,
        drivers=drivers,
        firewall=firewall,
        dns=dns,
        pools=pools,
        ula=ula,
        host_routes=host_routes,
        dns_domain=config.dns_domain,
        validate_netns=validate_netns_path,
        reap_grace=config.reap_grace,
        check_publish=refuse_ports_in_use,
        node=cluster.node_name if cluster is not None else "",
        block_prefixlen=cluster.ipam_block_size if cluster is not None else 26,
    )
    if cluster is not None and node_address is not None:
        from .cluster.member import Member
        from .cluster.store import ClusterStore

        assert isinstance(engine, ClusterStore)
        service.cluster = Member(cluster, engine, node_address, config.state_dir)
        from .metrics import METRICS

        etcd = engine.etcd
        METRICS.cluster.source = lambda: dataclasses.asdict(etcd.stats)
    return service, store, dns


def _firewall_monitor(firewall: Firewall) -> Any:
    """Start self-repair (netlink events + periodic check); None for the null backend."""
    if firewall.name == "none":
        return None
    from .firewall import FirewallMonitor
    from .metrics import METRICS

    def repair() -> None:
        firewall.repair()
        METRICS.firewall_restores.inc()

    monitor = FirewallMonitor(firewall.check, repair, interval=2.0)
    monitor.start()
    return monitor


def _link_watcher(service: Service) -> Any:
    """Repair a deleted bridge or veth from link events, not only at the next periodic pass."""
    from .link_watch import LinkWatcher

    def state() -> tuple[list[Any], Any]:
        # Endpoints being attached or detached are left out: their links come and go by netd.
        return service.list_networks(), service.expected(settled_only=True)

    return LinkWatcher(service.reconcile, state).start()


def _install_authorisation(app: web.Application, config: Config) -> Any:
    """Policy, optional hook and audit trail on every request; returns the audit log."""
    from .api.audit_route import install as serve_audit
    from .security import AuditLog, AuthzHook, Policy
    from .security.middleware import make_auth_middleware

    audit = None
    if config.audit.enabled:
        audit = AuditLog.from_config(config.audit, config.state_dir).start()
    serve_audit(app, audit)  # GET /v1/audit: `netd audit` reads this daemon's own trail
    hook = None
    if config.policy.authz_command:
        hook = AuthzHook(config.policy.authz_command, config.policy.authz_timeout)
    # After the API middleware, which sets the caller from SO_PEERCRED and shapes errors.
    app.middlewares.append(
        make_auth_middleware(
            Policy(config.policy),
            audit,
            hook,
            max_param_bytes=config.audit.max_param_bytes,
        )
    )
    return audit


async def serve(config: Config) -> None:
    """Run the daemon until a stop signal."""
    check_namespace(config.managed_netns)
    require(config.firewall_backend)
    # Blocking work (netlink, SQLite, libnftables) runs in threads; most of it waits on the
    # kernel, so more threads than cores let parallel ADD/DEL overlap those waits.
    asyncio.get_running_loop().set_default_executor(
        ThreadPoolExecutor(max_workers=32, thread_name_prefix="netd-worker")
    )
    try:
        config.state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    except OSError as exc:
        raise ConfigError(f"creating the state directory {describe_os_error(exc)}") from exc
    lock = InstanceLock(config.state_dir)
    lock.acquire()
    runner: web.AppRunner | None = None
    audit: Any = None
    monitor: Any = None
    reconciler: asyncio.Task[None] | None = None
    replayer: asyncio.Task[None] | None = None
    watcher: Any = None
    store: Any = None
    dns: Any = None
    service: Service | None = None
    try:
        service, store, dns = build_service(config)
        dns.start()
        await service.start()
        if service.cluster is not None:
            await service.cluster.start(
                service.state, service.network_ops, service.publisher, service.endpoint_ops
            )
        # DELs the CNI plugin spooled while no daemon listened: replayed before serving.
        from .cni import replay, spool

        spooled = Path(spool.spool_dir(str(config.socket)))
        await replay.replay(service, spooled)
        replayer = asyncio.create_task(replay.run(service, spooled))
        if config.reconcile_interval > 0:
            reconciler = asyncio.create_task(service.run_reconciler(config.reconcile_interval))
            watcher = _link_watcher(service)
        monitor = _firewall_monitor(service.firewall)
        if config.metrics_port is not None:
            from .metrics import serve_tcp

            serve_tcp(config.metrics_port)
        sock = systemd_socket() or bind_socket(config.socket, config.socket_group)
        app = make_app(service, max_body=config.max_body_bytes)
        audit = _install_authorisation(app, config)
        # keepalive_timeout also cuts clients that trickle a request head (aiohttp arms it at
        # accept), so a slow client cannot hold a connection for aiohttp's default hour.
        runner = web.AppRunner(
            app,
            access_log=None,
            handle_signals=False,
            keepalive_timeout=15,
            logger=ProtocolLog(),  # a request that is not HTTP: one line, not a traceback
        )
        await runner.setup()
        await web.SockSite(runner, sock).start()
        log.info(
            "netd listening on %s (pid %d, firewall %s)",
            config.socket,
            os.getpid(),
            service.firewall.name,
        )
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        log.info("stopping; the data plane stays up")
    finally:
        if runner is not None:
            await runner.cleanup()
            with contextlib.suppress(OSError):
                if _peer_pid(config.socket) is None:
                    config.socket.unlink()
        if watcher is not None:
            await watcher.stop()
        if service is not None and service.cluster is not None:
            await service.cluster.stop()
        if reconciler is not None:
            reconciler.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reconciler
        if replayer is not None:
            replayer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await replayer
        if monitor is not None:
            monitor.stop()
        if audit is not None:
            audit.close()
        if dns is not None:
            # The workers keep answering with the last records; the next daemon adopts them.
            with contextlib.suppress(Exception):
                dns.detach()
        if store is not None:
            store.close()
        lock.release()


def run(config: Config) -> int:
    """Blocking entry point for `netd daemon`; returns the exit code."""
    try:
        asyncio.run(serve(config))
    except StoreCorrupt as exc:
        log.error(
            "%s; it was left untouched. To rebuild the state from the kernel: `netd recover "
            "--state-dir %s` (moves the damaged file aside, never deletes it)",
            exc,
            config.state_dir,
        )
        return 1
    except NetdError as exc:
        log.error("%s", exc)
        return 1
    except OSError as exc:
        # A file the daemon could not use (read-only, full or missing state directory, socket
        # directory, ...): one line naming it and the errno, not a traceback.
        hint = " (netd daemon must run as root)" if exc.errno == errno.EACCES else ""
        log.error("cannot start: %s%s", describe_os_error(exc), hint)
        return 1
    return 0
