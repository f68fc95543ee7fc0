"""A real etcd server in a sandbox namespace, and a way for the test's own thread to reach it.

:class:`EtcdServer` runs Debian's ``etcd`` (package etcd-server) inside a namespace the test
made, listening on that namespace's loopback (or on an address of it: one member of a cluster,
:mod:`netns_fixtures.cluster`), with its data under a test directory. The sandbox kills it by PID
with the namespace; :meth:`EtcdServer.pause` and :meth:`resume` send SIGSTOP/SIGCONT to that PID
(an etcd that accepts connections but never answers). With ``tls`` (a
:class:`netns_fixtures.tls.Pki`) clients must speak https and show a certificate of that CA.

:func:`inside` moves the *calling thread* into a namespace for the duration of a ``with`` block
(``setns(2)`` changes only the calling thread; threads started inside inherit it), so an
in-process client such as :class:`netd.store.etcd.EtcdStore` reaches ``127.0.0.1`` of the
sandbox, never the machine's own network. The thread always goes back before the block ends:
the sandbox's teardown kills every process found in its namespaces.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import shutil
import signal
import subprocess
from base64 import b64decode, b64encode
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import IO

from . import Namespace, wait_for
from .tls import Pki

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
    """One etcd member on ``<address>:<port>`` of ``ns``, data under ``data_dir``.

    Alone by default (``--initial-cluster`` of itself); ``cluster`` (member name → peer URL,
    this member included) makes it one member of a cluster started together.
    """

    def __init__(
        self,
        ns: Namespace,
        data_dir: Path,
        port: int = 2379,
        *,
        address: str = "127.0.0.1",
        name: str = "n1",
        cluster: Mapping[str, str] | None = None,
        token: str = "netd-test",
        tls: Pki | None = None,
    ) -> None:
        binary = shutil.which("etcd")
        if binary is None:
            raise RuntimeError("etcd not found: install Debian's etcd-server package")
        self.binary = binary
        self.ns = ns
        self.data_dir = data_dir
        self.name = name
        self.address = address
        self.tls = tls
        self.url = f"{'https' if tls else 'http'}://{address}:{port}"
        # Peers speak plain http: the tests are about what clients (netd) see.
        self.peer = f"http://{address}:{port + 1}"
        self.cluster = dict(cluster) if cluster else {name: self.peer}
        self.token = token
        self.proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    def argv(self) -> list[str]:
        """etcd's command line."""
        tls_flags = []
        if self.tls is not None:
            tls_flags = [
                "--cert-file", str(self.tls.server_cert),
                "--key-file", str(self.tls.server_key),
                "--client-cert-auth",
                "--trusted-ca-file", str(self.tls.ca_cert),
            ]  # fmt: skip
        return [
            self.binary,
            "--name", self.name,
            "--data-dir", str(self.data_dir / "data"),
            "--listen-client-urls", self.url,
            "--advertise-client-urls", self.url,
            "--listen-peer-urls", self.peer,
            "--initial-advertise-peer-urls", self.peer,
            "--initial-cluster", ",".join(f"{n}={u}" for n, u in self.cluster.items()),
            "--initial-cluster-token", self.token,
            *tls_flags,
        ]  # fmt: skip

    def launch(self) -> EtcdServer:
        """Start etcd without waiting (members of a cluster wait for each other)."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._log = open(self.data_dir.parent / f"{self.data_dir.name}.log", "ab")  # noqa: SIM115
        self.proc = self.ns.spawn(*self.argv(), stdout=self._log, stderr=subprocess.STDOUT)
        return self

    def start(self, timeout: float = 30) -> EtcdServer:
        """Start etcd and wait until it reports healthy."""
        self.launch()
        wait_for(f"etcd {self.name} in {self.ns.name} healthy", self.healthy, timeout, step=0.2)
        return self

    def curl_argv(self, path: str, *args: str) -> list[str]:
        """curl of ``<url><path>`` (with the client certificate under TLS), run in ``ns``."""
        cred = []
        if self.tls is not None:
            cred = ["--cacert", str(self.tls.ca_cert), "--cert", str(self.tls.client_cert),
                    "--key", str(self.tls.client_key)]  # fmt: skip
        return ["curl", "-sf", "--max-time", "2", *cred, *args, f"{self.url}{path}"]

    def healthy(self) -> bool:
        """Whether etcd answers its health endpoint (asked from inside its namespace)."""
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise RuntimeError(f"etcd exited {self.proc.returncode}; log: {self.log_tail()}")
        return self.ns.ok(*self.curl_argv("/health"))

    def keys(self, prefix: str, *, local: bool = False) -> dict[str, str]:
        """Every key under ``prefix`` and its value, asked of this member's gateway with curl.

        ``local``: a serializable read, answered from this member's own copy (whether it has
        caught up), not through the leader.
        """
        end = prefix[:-1] + chr(ord(prefix[-1]) + 1)
        body = {"key": b64encode(prefix.encode()).decode(),
                "range_end": b64encode(end.encode()).decode(), "serializable": local}  # fmt: skip
        out = self.ns.run(*self.curl_argv("/v3/kv/range", "-d", json.dumps(body)))
        return {
            b64decode(kv["key"]).decode(): b64decode(kv.get("value", "")).decode()
            for kv in json.loads(out).get("kvs", [])
        }

    def log_tail(self) -> str:
        """The end of etcd's log, for failure messages."""
        path = self.data_dir.parent / f"{self.data_dir.name}.log"
        return path.read_text(errors="replace")[-2000:] if path.exists() else ""

    def pause(self) -> None:
        """SIGSTOP etcd: connections are accepted by the kernel but never answered.

        Returns once the kernel shows it stopped (signals are delivered asynchronously, and a
        Go process stops all its threads first).
        """
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGSTOP)
        wait_for(f"etcd {self.name} stopped", lambda: self.state() == "T", 10, step=0.01)

    def resume(self) -> None:
        """SIGCONT etcd; returns once it runs again."""
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGCONT)
        wait_for(f"etcd {self.name} running", lambda: self.state() != "T", 10, step=0.01)

    def state(self) -> str:
        """etcd's process state letter from /proc (``T``: stopped); ``-`` if it is gone."""
        assert self.proc is not None
        try:
            stat = Path(f"/proc/{self.proc.pid}/stat").read_text()
        except OSError:
            return "-"
        return stat.rsplit(")", 1)[1].split()[0]

    def stop(self) -> None:
        """Kill etcd by PID (resumed first, so it can die) and close its log; start() again
        restarts it on the same data (it rejoins its cluster)."""
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.proc.pid, signal.SIGCONT)
                os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)
        if self.proc is not None and self.proc in self.ns.sandbox.processes:
            self.ns.sandbox.processes.remove(self.proc)
        if self._log is not None:
            self._log.close()
            self._log = None
