"""A real etcd server in a sandbox namespace, and a way for the test's own thread to reach it.

:class:`EtcdServer` runs Debian's ``etcd`` (package etcd-server) inside a namespace the test
made, listening on that namespace's loopback only, with its data under a test directory. The
sandbox kills it by PID with the namespace; :meth:`EtcdServer.pause` and :meth:`resume` send
SIGSTOP/SIGCONT to that PID (an etcd that accepts connections but never answers).

:func:`inside` moves the *calling thread* into a namespace for the duration of a ``with`` block
(``setns(2)`` changes only the calling thread; threads started inside inherit it), so an
in-process client such as :class:`netd.store.etcd.EtcdStore` reaches ``127.0.0.1`` of the
sandbox, never the machine's own network. The thread always goes back before the block ends:
the sandbox's teardown kills every process found in its namespaces.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import shutil
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from . import Namespace, wait_for

CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)


def _setns(fd: int, what: str) -> None:
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setns into {what}: {os.strerror(err)}")


@contextlib.contextmanager
def inside(ns: Namespace) -> Iterator[None]:
    """Run the calling thread in ``ns`` for the block; always back in its own afterwards."""
    home = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    target = os.open(ns.path, os.O_RDONLY)
    try:
        _setns(target, ns.name)
        try:
            yield
        finally:
            try:
                _setns(home, "the thread's own namespace")
            except OSError:
                # Staying in the sandbox would get this process killed by its teardown.
                os._exit(70)
    finally:
        os.close(target)
        os.close(home)


class EtcdServer:
    """One etcd member on ``127.0.0.1:<port>`` of ``ns``, data under ``data_dir``."""

    def __init__(self, ns: Namespace, data_dir: Path, port: int = 2379) -> None:
        binary = shutil.which("etcd")
        if binary is None:
            raise RuntimeError("etcd not found: install Debian's etcd-server package")
        self.binary = binary
        self.ns = ns
        self.data_dir = data_dir
        self.url = f"http://127.0.0.1:{port}"
        self.peer = f"http://127.0.0.1:{port + 1}"
        self.proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    def start(self, timeout: float = 30) -> EtcdServer:
        """Start etcd and wait until it reports healthy."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._log = open(self.data_dir.parent / f"{self.data_dir.name}.log", "ab")  # noqa: SIM115
        self.proc = self.ns.spawn(
            self.binary,
            "--name", "n1",
            "--data-dir", str(self.data_dir / "data"),
            "--listen-client-urls", self.url,
            "--advertise-client-urls", self.url,
            "--listen-peer-urls", self.peer,
            "--initial-advertise-peer-urls", self.peer,
            "--initial-cluster", f"n1={self.peer}",
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )  # fmt: skip
        wait_for(f"etcd in {self.ns.name} healthy", self.healthy, timeout, step=0.2)
        return self

    def healthy(self) -> bool:
        """Whether etcd answers its health endpoint (asked from inside its namespace)."""
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise RuntimeError(f"etcd exited {self.proc.returncode}; log: {self.log_tail()}")
        return self.ns.ok("curl", "-sf", "--max-time", "2", f"{self.url}/health")

    def log_tail(self) -> str:
        """The end of etcd's log, for failure messages."""
        path = self.data_dir.parent / f"{self.data_dir.name}.log"
        return path.read_text(errors="replace")[-2000:] if path.exists() else ""

    def pause(self) -> None:
        """SIGSTOP etcd: connections are accepted by the kernel but never answered."""
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGSTOP)

    def resume(self) -> None:
        """SIGCONT etcd."""
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGCONT)

    def stop(self) -> None:
        """Kill etcd by PID (resumed first, so it can die) and close its log."""
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.proc.pid, signal.SIGCONT)
                os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)
        if self._log is not None:
            self._log.close()
            self._log = None
