"""External network drivers: executables that implement the contract of docs/plugin-contract.md.

An :class:`ExternalDriver` is a :class:`netd.drivers.base.Driver` whose kernel work is done by
a plugin executable, one process per call (:mod:`netd.drivers.plugin_exec`), with the public
records and the strict answer checks of :mod:`netd.drivers.plugin_records`. Every call has a
deadline; a plugin that hangs is killed and the call fails with Unavailable, one that crashes
or prints garbage fails it with KernelError, both naming the plugin and the verb. Nothing a
plugin does can raise anything but a NetdError into the service.

:func:`load_external_drivers` is the daemon's discovery: every executable in the configured
plugin directory becomes a driver named after its file, unless the name is a built-in one.

Deliberately local (no plugin call): names and tags of the host-side objects, the CNI
interfaces, ``describe`` and ``available``: the service calls them from the event loop or
under a network's lock, where a process must not run.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import signal
import stat
from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from ..errors import InvalidInput, KernelError, NetdError, Unavailable
from ..model import Endpoint, Network
from ..names import check_network_name, driver_tag_prefix
from ..options import DriverKeys
from ..options import parse_options as parse_network_options
from .base import Capabilities, CniInterface, EndpointStatus
from .plugin_exec import PLUGIN_PATH, PluginOutputTooLarge, PluginTimeout, run_plugin
from .plugin_records import (
    CONTRACT,
    NETWORK_OPTION_KEYS,
    BadAnswer,
    endpoint_record,
    endpoint_tag,
    host_ifname,
    network_record,
    network_tag,
    parse_answer,
    parse_attach,
    parse_capabilities,
    parse_inventory,
    parse_options,
    parse_strings,
    plugin_error,
    request,
)

log = logging.getLogger(__name__)

DEFAULT_PLUGIN_DIR = Path("/usr/lib/netd/drivers")
DEFAULT_TIMEOUT = 10.0
DEFAULT_SETUP_TIMEOUT = 30.0
STDOUT_LIMIT = 4 << 20  # an inventory of ~40 000 objects; more is a broken plugin
STDERR_LIMIT = 64 << 10
STDERR_LOGGED = 2000  # characters of a plugin's stderr per log line
MAX_DRIVER_NAME = 64  # the API's limit on a network's driver


def check_driver_name(name: object) -> str:
    """A driver name: a network name's syntax (it appears in tags and tables), ≤ 64 chars."""
    checked = check_network_name(name, "driver")
    if len(checked) > MAX_DRIVER_NAME:
        raise InvalidInput("driver", name, f"at most {MAX_DRIVER_NAME} characters")
    return checked


class ExternalDriver:
    """A driver plugin executable; capabilities are fetched once, here, and cached."""

    def __init__(
        self,
        path: Path | str,
        timeout: float = DEFAULT_TIMEOUT,
        *,
        setup_timeout: float | None = None,
        name: str | None = None,
    ) -> None:
        """Ask the plugin for its capabilities; a NetdError says why it cannot be used."""
        self.path = Path(path)
        self.name = check_driver_name(name or self.path.name)
        self.timeout = timeout
        self.setup_timeout = max(timeout, setup_timeout or DEFAULT_SETUP_TIMEOUT)
        self.capabilities = Capabilities(firewall=False, port_mappings=False, icc=False)
        # netd's network-wide keys; the plugin's own keys cannot be declared (open: the plugin
        # checks them in validate_options).
        self.option_keys = DriverKeys(self.name, firewall=False, open=True)
        answer = self._call("capabilities")
        try:
            self.capabilities, self.network_object = parse_capabilities(self.name, answer)
        except BadAnswer as exc:
            raise KernelError(f'driver plugin "{self.name}" capabilities: {exc}') from None

    # --- calling the plugin ---------------------------------------------------------------

    def _call(self, verb: str, timeout: float | None = None, **payload: Any) -> dict[str, Any]:
        """One call: its answer object, or the NetdError it amounts to."""
        where = f'driver plugin "{self.name}" {verb}'
        limit = timeout or self.timeout
        env = {"PATH": PLUGIN_PATH, "LANG": "C.UTF-8", "NETD_DRIVER_CONTRACT": CONTRACT}
        try:
            done = run_plugin(
                [str(self.path)],
                request(verb, self.name, **payload),
                timeout=limit,
                env=env,
                stdout_limit=STDOUT_LIMIT,
                stderr_limit=STDERR_LIMIT,
            )
        except PluginTimeout as exc:
            self._log_stderr(verb, exc.stderr, logging.WARNING)
            raise Unavailable(
                f"{where}: no answer within {exc.seconds:g} s; the plugin ({self.path}) was killed"
            ) from None
        except PluginOutputTooLarge as exc:
            self._log_stderr(verb, exc.stderr, logging.WARNING)
            raise KernelError(
                f"{where}: printed more than {exc.limit} bytes; the plugin was killed"
            ) from None
        except OSError as exc:
            raise KernelError(f"{where}: cannot run {self.path}: {exc.strerror or exc}") from exc
        failed = done.returncode != 0
        self._log_stderr(verb, done.stderr, logging.WARNING if failed else logging.DEBUG)
        log.debug("%s: exit %d after %.3f s", where, done.returncode, done.seconds)
        try:
            answer = parse_answer(done.stdout)
        except BadAnswer as exc:
            if failed:
                raise KernelError(f"{where}: {_exit_text(done.returncode, done.stderr)}") from None
            raise KernelError(f"{where}: {exc}") from None
        if "error" in answer:
            raise plugin_error(self.name, verb, answer["error"])
        if failed:
            raise KernelError(
                f"{where}: {_exit_text(done.returncode, done.stderr)} (and no error object)"
            )
        return answer

    def _log_stderr(self, verb: str, stderr: bytes, level: int) -> None:
        text = stderr.decode(errors="replace").strip()
        if text:
            if len(text) > STDERR_LOGGED:
                text = text[:STDERR_LOGGED] + "…"
            log.log(level, 'driver plugin "%s" %s said: %s', self.name, verb, text)

    def _best_effort(self, verb: str, key: str, **payload: Any) -> list[str]:
        """A removal or check: the plugin's list under ``key``, or its failure as one entry."""
        try:
            return parse_strings(self._call(verb, **payload), key)
        except BadAnswer as exc:
            return [f'driver plugin "{self.name}" {verb}: {exc}']
        except NetdError as exc:
            return [exc.message]

    # --- Driver protocol -------------------------------------------------------------------

    def validate_options(self, options: Mapping[str, str]) -> dict[str, str]:
        """netd's keys checked here (:data:`option_keys`: the network-wide ones; the firewall
        ones refused, as contract 1 has no firewall); the rest by the plugin (only if any: the
        call is skipped for a network without driver options)."""
        parsed = parse_network_options(options, self.option_keys)
        wide = {k: v for k, v in parsed.canonical.items() if k in NETWORK_OPTION_KEYS}
        mine = dict(parsed.driver)
        if not mine:
            return wide
        try:
            checked = parse_options(self._call("validate_options", options=mine))
        except BadAnswer as exc:
            raise KernelError(f'driver plugin "{self.name}" validate_options: {exc}') from None
        clash = sorted(set(checked) & NETWORK_OPTION_KEYS)
        if clash:
            raise KernelError(
                f'driver plugin "{self.name}" validate_options: returned netd\'s own keys {clash}'
            )
        return {**checked, **wide}

    def available(self) -> str:
        """Empty while the plugin is still an executable file."""
        if os.access(self.path, os.X_OK):
            return ""
        return f"driver plugin {self.path} is missing or not executable"

    def host_interface(self, network: Network) -> str:
        """None: contract 1 gives the firewall no interface to key on."""
        return ""

    def endpoint_host_ifname(self, network: Network, container_id: str, ifname: str) -> str:
        """``nx…`` (plugin_records.host_ifname) when the plugin makes host interfaces."""
        if not self.capabilities.host_interface:
            return ""
        return host_ifname(network.id, container_id, ifname)

    def ensure_network(self, network: Network) -> None:
        """network_create (converging: called again at every start and repair)."""
        self._call("network_create", self.setup_timeout, network=network_record(network))

    def teardown_network(self, network: Network) -> list[str]:
        """network_remove; its failures, or the call's."""
        return self._best_effort("network_remove", "failures", network=network_record(network))

    def setup_endpoint(self, network: Network, endpoint: Endpoint) -> Endpoint:
        """endpoint_attach; on any failure endpoint_detach undoes what the plugin may have
        left (a killed plugin could not)."""
        from ..kernel.netns import open_netns  # pyroute2; only when attaching

        fd = open_netns(endpoint.netns, endpoint.netns_inode)
        try:
            inode = os.fstat(fd).st_ino
        finally:
            os.close(fd)
        host_side = self.capabilities.host_interface
        record = endpoint_record(network, endpoint, host_side=host_side)
        net = network_record(network)
        try:
            answer = self._call("endpoint_attach", self.setup_timeout, network=net, endpoint=record)
            try:
                mac, host_mac = parse_attach(answer, host_side=host_side)
            except BadAnswer as exc:
                raise KernelError(f'driver plugin "{self.name}" endpoint_attach: {exc}') from None
            if endpoint.mac and mac != endpoint.mac.lower():
                raise KernelError(
                    f'driver plugin "{self.name}" endpoint_attach: gave {endpoint.container_id}/'
                    f"{endpoint.ifname} MAC {mac}, not the {endpoint.mac} asked for"
                )
        except BaseException:
            for failure in self._best_effort(
                "endpoint_detach", "failures", network=net, endpoint=record
            ):
                log.error("undoing a failed attach of %s: %s", record["host_ifname"], failure)
            raise
        return dataclasses.replace(
            endpoint,
            host_ifname=record["host_ifname"],
            mac=mac,
            host_mac=host_mac,
            netns_inode=inode,
        )

    def teardown_endpoint(self, network: Network, endpoint: Endpoint) -> list[str]:
        """endpoint_detach (host side even when the namespace is gone); failures."""
        record = endpoint_record(network, endpoint, host_side=self.capabilities.host_interface)
        return self._best_effort(
            "endpoint_detach", "failures", network=network_record(network), endpoint=record
        )

    def check_endpoint(self, network: Network, endpoint: Endpoint) -> EndpointStatus:
        """endpoint_check; a failed call is itself the problem found."""
        record = endpoint_record(network, endpoint, host_side=self.capabilities.host_interface)
        problems = self._best_effort(
            "endpoint_check", "problems", network=network_record(network), endpoint=record
        )
        return EndpointStatus(problems=problems)

    def inventory(self) -> dict[str, str]:
        """inventory: ``{tag: ifname}`` of this driver's host objects (others' are dropped)."""
        answer = self._call("inventory", tag_prefix=driver_tag_prefix("ext", self.name))
        try:
            return parse_inventory(self.name, answer)
        except BadAnswer as exc:
            raise KernelError(f'driver plugin "{self.name}" inventory: {exc}') from None

    def network_tags(self, network: Network) -> frozenset[str]:
        """The network's tag when the plugin declared ``network_object``."""
        return frozenset({network_tag(self.name, network.id)} if self.network_object else ())

    def endpoint_tags(self, network: Network, endpoint: Endpoint) -> frozenset[str]:
        """The endpoint's tag when the plugin makes host interfaces."""
        if not self.capabilities.host_interface:
            return frozenset()
        return frozenset(
            {endpoint_tag(self.name, network.id, endpoint.container_id, endpoint.ifname)}
        )

    def remove_object(self, ifname: str) -> bool:
        """object_remove, only for an interface the plugin's inventory reports as its own."""
        tag = next((t for t, name in self.inventory().items() if name == ifname), None)
        if tag is None:
            return False
        answer = self._call("object_remove", object={"tag": tag, "ifname": ifname})
        return answer.get("removed", True) is not False

    def cni_interfaces(self, network: Network, endpoint: Endpoint) -> list[CniInterface]:
        """Host interface (if any) first, then the container's; from the record, no call."""
        out = []
        if self.capabilities.host_interface and endpoint.host_ifname:
            out.append(CniInterface(endpoint.host_ifname, endpoint.host_mac or ""))
        out.append(
            CniInterface(endpoint.ifname, endpoint.mac or "", endpoint.netns, container=True)
        )
        return out

    def describe(self, network: Network, endpoints: list[Endpoint]) -> dict[str, Any]:
        """Which plugin serves the network and what it declared (no call: inspect stays fast)."""
        return {
            "plugin": str(self.path),
            "contract": CONTRACT,
            "capabilities": dataclasses.asdict(self.capabilities),
            "host_interfaces": sorted(e.host_ifname for e in endpoints if e.host_ifname),
        }

    def close(self) -> None:
        """Nothing: no process outlives a call."""


def _exit_text(returncode: int, stderr: bytes) -> str:
    if returncode < 0:
        try:
            what = f"killed by {signal.Signals(-returncode).name}"
        except ValueError:
            what = f"killed by signal {-returncode}"
    else:
        what = f"exited with status {returncode}"
    lines = stderr.decode(errors="replace").strip().splitlines()
    return f"{what}: {lines[-1][:200]}" if lines else what


# --- discovery ---------------------------------------------------------------------------------


def unusable(path: Path) -> str:
    """Why ``path`` may not be run as a driver plugin (empty: it may).

    Plugins run as root with the daemon's privileges: a file someone else could rewrite is
    refused, as CNI runtimes and sudo refuse them.
    """
    try:
        st = path.stat()
    except OSError as exc:
        return f"cannot stat: {exc.strerror}"
    if not stat.S_ISREG(st.st_mode):
        return "not a regular file"
    if not os.access(path, os.X_OK):
        return "not executable"
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        return f"writable by group or others (mode {stat.S_IMODE(st.st_mode):o})"
    if st.st_uid not in (0, os.geteuid()):
        return f"owned by uid {st.st_uid}, not root"
    return ""


def load_external_drivers(
    plugin_dir: Path | None,
    *,
    reserved: Iterable[str],
    timeout: float = DEFAULT_TIMEOUT,
    setup_timeout: float = DEFAULT_SETUP_TIMEOUT,
) -> dict[str, ExternalDriver]:
    """Every usable plugin in ``plugin_dir`` by file name; each refusal is logged, none fatal.

    ``reserved``: the built-in driver names, which a plugin may not take over.
    """
    if plugin_dir is None or not plugin_dir.is_dir():
        log.info("driver plugins: none (no directory %s)", plugin_dir)
        return {}
    problem = unusable_dir(plugin_dir)
    if problem:
        log.error("driver plugins in %s: all refused: the directory is %s", plugin_dir, problem)
        return {}
    taken = set(reserved)
    candidates: list[Path] = []
    for path in sorted(plugin_dir.iterdir()):
        if path.name.startswith("."):
            continue  # editors' and package managers' temporary files
        try:
            check_driver_name(path.name)
        except InvalidInput as exc:
            log.error("driver plugin %s refused: file name: %s", path, exc.rule)
            continue
        if path.name in taken:
            log.error("driver plugin %s refused: %r is a built-in driver", path, path.name)
            continue
        reason = unusable(path)
        if reason:
            log.error("driver plugin %s refused: %s", path, reason)
            continue
        candidates.append(path)

    def load(path: Path) -> ExternalDriver | None:
        try:
            driver = ExternalDriver(path, timeout, setup_timeout=setup_timeout)
        except NetdError as exc:
            log.error("driver plugin %s not loaded: %s", path, exc.message)
            return None
        log.info("network driver: %s (plugin %s, %s)", driver.name, path, CONTRACT)
        return driver

    # In parallel: start-up waits for the slowest plugin, not for the sum of them.
    with ThreadPoolExecutor(max_workers=8, thread_name_prefix="netd-plugin") as pool:
        loaded = list(pool.map(load, candidates))
    return {d.name: d for d in loaded if d is not None}


def unusable_dir(path: Path) -> str:
    """Why the plugin directory cannot be trusted (empty: it can)."""
    st = path.stat()
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH) and not st.st_mode & stat.S_ISVTX:
        return f"writable by group or others (mode {stat.S_IMODE(st.st_mode):o})"
    if st.st_uid not in (0, os.geteuid()):
        return f"owned by uid {st.st_uid}, not root"
    return ""
