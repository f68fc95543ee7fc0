"""Disposable hosts and containers as network namespaces, for tests, the demo and benchmarks.

A :class:`Sandbox` owns every namespace it makes (names ``<prefix>-<role>``, prefix unique per
run: ``ntest-<pid>-<n>``) and deletes them all on :meth:`Sandbox.close`, even after a failure.
Processes it starts are killed by PID, never by name.

The one hard rule (../shared/TESTING.md): nothing here ever configures the machine's initial
network namespace. Commands are only run *inside* namespaces this sandbox created; creating and
deleting namespaces is the only thing done from outside. :func:`refuse_initial_netns` is the guard
for code that is about to configure "the current namespace".

Fixtures call ``ip``/``nft`` on purpose: tests must read the kernel back independently of netd
(netd itself never execs ``ip``).
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import shlex
import signal
import subprocess
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

# linux/include/linux/proc_ns.h: the initial network namespace has a fixed inode number.
PROC_NET_INIT_INO = 0xEFFFFFF9
NETNS_DIR = "/run/netns"
PREFIX = "ntest"
_counter = itertools.count()


class InitialNamespaceError(RuntimeError):
    """Raised when code is about to configure the machine's own network namespace."""


def netns_inode(path: str = "/proc/self/ns/net") -> int:
    """Inode number of a network namespace file."""
    return os.stat(path).st_ino


def in_initial_netns() -> bool:
    """True when this process runs in the machine's initial network namespace.

    Compares with PID 1's namespace when readable (TESTING.md's rule); some sandboxes hide
    /proc/1/ns, so the kernel's fixed inode of init_net is the fallback.
    """
    own = netns_inode()
    try:
        return own == netns_inode("/proc/1/ns/net")
    except OSError:
        return own == PROC_NET_INIT_INO


def is_initial_netns_path(path: str) -> bool:
    """True if the namespace file ``path`` is the machine's initial network namespace."""
    inode = netns_inode(path)
    try:
        return inode == netns_inode("/proc/1/ns/net")
    except OSError:
        return inode == PROC_NET_INIT_INO


def refuse_initial_netns(what: str) -> None:
    """Raise InitialNamespaceError if ``what`` would run in the initial namespace."""
    if in_initial_netns():
        raise InitialNamespaceError(
            f"refusing to {what} in the machine's initial network namespace; "
            "run it inside a sandbox namespace (ip netns exec ...)"
        )


def run(cmd: Sequence[str], *, check: bool = True, timeout: float = 30, **kw: Any) -> str:
    """Run a command, return stdout; raise with stderr on failure."""
    proc = subprocess.run(list(cmd), capture_output=True, text=True, timeout=timeout, **kw)
    if check and proc.returncode != 0:
        raise RuntimeError(
            f"{shlex.join(cmd)} exited {proc.returncode}: {proc.stderr.strip() or proc.stdout}"
        )
    return proc.stdout


@dataclass
class Namespace:
    """One network namespace made by a sandbox."""

    name: str
    sandbox: Sandbox

    @property
    def path(self) -> str:
        """The bind-mount path (what CNI_NETNS and ``--netns`` take)."""
        return f"{NETNS_DIR}/{self.name}"

    def argv(self, *cmd: str) -> list[str]:
        """``ip netns exec <ns> cmd...`` as an argv."""
        return ["ip", "netns", "exec", self.name, *cmd]

    def run(self, *cmd: str, check: bool = True, timeout: float = 30, **kw: Any) -> str:
        """Run ``cmd`` inside this namespace and return stdout."""
        return run(self.argv(*cmd), check=check, timeout=timeout, **kw)

    def ok(self, *cmd: str, timeout: float = 30) -> bool:
        """True if ``cmd`` inside this namespace exits 0."""
        return subprocess.run(self.argv(*cmd), capture_output=True, timeout=timeout).returncode == 0

    def spawn(self, *cmd: str, **kw: Any) -> subprocess.Popen[Any]:
        """Start a background process in this namespace; the sandbox kills it by PID."""
        proc = subprocess.Popen(self.argv(*cmd), start_new_session=True, **kw)
        self.sandbox.processes.append(proc)
        return proc

    def ip_json(self, *args: str) -> Any:
        """``ip -j <args>`` inside this namespace, parsed."""
        out = self.run("ip", "-j", *args)
        return json.loads(out) if out.strip() else []

    def links(self) -> dict[str, Any]:
        """Links by name, as ``ip -j -d link`` sees them."""
        return {link["ifname"]: link for link in self.ip_json("-d", "link", "show")}

    def addresses(self, ifname: str) -> list[str]:
        """``addr/prefix`` strings on ``ifname`` (global scope only)."""
        data = self.ip_json("addr", "show", "dev", ifname)
        return [
            f"{a['local']}/{a['prefixlen']}"
            for link in data
            for a in link.get("addr_info", [])
            if a.get("scope") == "global"
        ]

    def ping(self, address: str, count: int = 1, timeout: int = 2) -> bool:
        """True if ``address`` answers ping from inside this namespace."""
        return self.ok("ping", "-n", "-q", "-c", str(count), "-W", str(timeout), address)


@dataclass
class Sandbox:
    """A set of namespaces (a host and its containers), all deleted on close."""

    prefix: str = field(default_factory=lambda: f"{PREFIX}-{os.getpid()}-{next(_counter)}")
    namespaces: list[Namespace] = field(default_factory=list)
    processes: list[subprocess.Popen[Any]] = field(default_factory=list)

    def add_ns(self, role: str) -> Namespace:
        """Create ``<prefix>-<role>`` with ``lo`` up."""
        name = f"{self.prefix}-{role}"
        run(["ip", "netns", "add", name])
        ns = Namespace(name, self)
        self.namespaces.append(ns)
        ns.run("ip", "link", "set", "lo", "up")
        return ns

    def add_host(self, role: str = "host") -> Namespace:
        """A namespace playing a container host: forwarding on, as on a real host."""
        ns = self.add_ns(role)
        ns.run("sysctl", "-q", "-w", "net.ipv4.ip_forward=1")
        ns.run("sysctl", "-q", "-w", "net.ipv6.conf.all.forwarding=1")
        return ns

    def wire(
        self,
        a: Namespace,
        b: Namespace,
        a_addr: str,
        b_addr: str,
        a_if: str = "up0",
        b_if: str = "down0",
    ) -> None:
        """Connect two namespaces with a veth pair and give each end an address."""
        run(
            [
                "ip",
                "link",
                "add",
                a_if,
                "netns",
                a.name,
                "type",
                "veth",
                "peer",
                "name",
                b_if,
                "netns",
                b.name,
            ]
        )
        for ns, ifname, addr in ((a, a_if, a_addr), (b, b_if, b_addr)):
            ns.run("ip", "addr", "add", addr, "dev", ifname, *(["nodad"] if ":" in addr else []))
            ns.run("ip", "link", "set", ifname, "up")

    def close(self) -> list[str]:
        """Kill our processes (by PID) and delete our namespaces; returns failures."""
        failures: list[str] = []
        for proc in reversed(self.processes):
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait(timeout=5)
        self.processes.clear()
        for ns in reversed(self.namespaces):
            try:
                delete_namespace(ns.name)
            except RuntimeError as exc:
                failures.append(str(exc))
        self.namespaces.clear()
        return failures

    def __enter__(self) -> Sandbox:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# A TCP server for a namespace: answers "hello" on port 80 to every connection, until killed.
HELLO_SERVER = (
    "import socket\n"
    "s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n"
    "s.bind(('0.0.0.0', 80)); s.listen(16)\n"
    "while True:\n"
    "    c, _ = s.accept(); c.sendall(b'hello'); c.close()\n"
)


def wait_for(what: str, check: Callable[[], bool], timeout: float, step: float = 0.05) -> float:
    """Seconds until ``check()`` held; AssertionError naming ``what`` after ``timeout``."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if check():
            return time.monotonic() - start
        time.sleep(step)
    raise AssertionError(f"{what}: not done within {timeout} s")


def delete_namespace(name: str) -> None:
    """Kill processes still inside namespace ``name`` (by PID) and delete it."""
    out = run(["ip", "netns", "pids", name], check=False)
    for pid in out.split():
        with contextlib.suppress(ProcessLookupError, ValueError):
            os.kill(int(pid), signal.SIGKILL)
    for _ in range(50):
        if not run(["ip", "netns", "pids", name], check=False).split():
            break
        time.sleep(0.05)
    run(["ip", "netns", "del", name])


def leftovers(prefix: str = PREFIX) -> list[str]:
    """Namespaces whose names start with ``prefix-`` (from this or earlier runs)."""
    if not os.path.isdir(NETNS_DIR):
        return []
    return sorted(n for n in os.listdir(NETNS_DIR) if n.startswith(prefix + "-"))


@contextlib.contextmanager
def sandbox() -> Iterator[Sandbox]:
    """Context manager form of :class:`Sandbox`."""
    box = Sandbox()
    try:
        yield box
    finally:
        box.close()
