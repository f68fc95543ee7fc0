"""Start a real `netd daemon` inside a sandbox host namespace, and talk to it.

The daemon runs with ``--managed-netns`` pointing at the sandbox host, so it refuses to start
anywhere else; its socket and state live in a temporary directory (Unix sockets are reached by
path, so the test process can call it from outside the namespace). ``settings`` become its
config file (TOML, nested dicts are tables such as ``[cluster]``).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from . import InitialNamespaceError, Namespace, is_initial_netns_path, tomlout

ROOT = Path(__file__).resolve().parents[2]
NETD = str(Path(sys.executable).parent / "netd")


class Daemon:
    """A netd daemon process in ``host`` with its own state dir and socket."""

    def __init__(
        self,
        host: Namespace,
        *,
        firewall: str = "none",
        state_dir: Path | None = None,
        env: dict[str, str] | None = None,
        extra: list[str] | None = None,
        settings: Mapping[str, Any] | None = None,
    ) -> None:
        self.host = host
        self._tmp = tempfile.mkdtemp(prefix="netd-test-")
        self.state_dir = state_dir or Path(self._tmp) / "state"
        self.socket = Path(self._tmp) / "netd.sock"
        self.log_path = Path(self._tmp) / "daemon.log"
        self.firewall = firewall
        self.env = env or {}
        self.extra = extra or []
        self.settings = dict(settings or {})
        self.proc: subprocess.Popen[Any] | None = None

    def argv(self) -> list[str]:
        """The daemon's command line (run inside the host namespace)."""
        return [
            NETD,
            "--socket",
            str(self.socket),
            "daemon",
            "--state-dir",
            str(self.state_dir),
            "--firewall-backend",
            self.firewall,
            "--managed-netns",
            self.host.path,
            "--config",
            str(self.config_path()),
            *self.extra,
        ]

    def config_path(self) -> Path:
        """The config file: ``settings`` as TOML (empty: all defaults), so the machine's
        /etc/netd/netd.toml is never read. Written once; tests may overwrite it."""
        path = Path(self._tmp) / "netd.toml"
        if not path.exists():
            path.write_text("# test config\n" + tomlout.dumps(self.settings))
        return path

    def start(self, timeout: float = 20) -> Daemon:
        """Start and wait until the API answers; never in the machine's initial namespace."""
        if is_initial_netns_path(self.host.path):
            raise InitialNamespaceError(
                f"refusing to start netd in {self.host.path}: it is the machine's initial "
                "network namespace"
            )
        env = {**os.environ, **self.env}
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        self.proc = self.host.spawn(
            *self.argv(), stdout=self._log, stderr=subprocess.STDOUT, env=env
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                code = self.proc.returncode
                self.stop()
                raise RuntimeError(f"netd daemon exited {code}:\n{self.log()}")
            try:
                status, body = self.request("GET", "/v1/status")
                if status == 200 and body.get("ready"):
                    return self
            except OSError:
                pass
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"netd daemon did not become ready:\n{self.log()}")

    def log(self) -> str:
        """What the daemon has logged so far."""
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def stop(self, sig: int = 15) -> int | None:
        """Signal the daemon (SIGTERM by default) and wait; returns its exit code."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, sig)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, 9)
                self.proc.wait(timeout=5)
        self._log.close()
        code = self.proc.returncode
        self.host.sandbox.processes.remove(self.proc)
        self.proc = None
        return code

    def dns_worker_pids(self) -> list[int]:
        """Pids of the DNS worker processes in this daemon's host namespace, read from /proc.

        Independent of netd: every process ``ip netns pids`` lists whose command line is
        ``python -m netd.dns.worker``. DNS workers outlive the daemon (they are detached), so
        this is also what :meth:`close` kills.
        """
        out = subprocess.run(
            ["ip", "netns", "pids", self.host.name], capture_output=True, text=True, check=False
        ).stdout
        pids = []
        for pid in out.split():
            try:
                argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if b"netd.dns.worker" in argv[1:4]:
                pids.append(int(pid))
        return sorted(pids)

    def kill_dns_workers(self) -> None:
        """SIGKILL this daemon's DNS workers by pid (they outlive the daemon by design)."""
        for pid in self.dns_worker_pids():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 5
        while self.dns_worker_pids() and time.monotonic() < deadline:
            time.sleep(0.02)

    def close(self) -> None:
        """Stop the daemon, kill its DNS workers by pid and remove the temporary directory."""
        self.stop()
        self.kill_dns_workers()
        shutil.rmtree(self._tmp, ignore_errors=True)

    def close_checked(self) -> None:
        """:meth:`close`, then AssertionError (with the log) if the daemon logged a traceback,
        shutdown included."""
        self.stop()
        log = self.log()
        self.close()
        assert "Traceback" not in log, log

    def request(
        self, method: str, path: str, body: Any = None, timeout: float = 60
    ) -> tuple[int, Any]:
        """One raw HTTP request on the daemon's socket (independent of netd's own client)."""
        return unix_request(self.socket, method, path, body, timeout)

    def cli(
        self, *args: str, check: bool = True, cwd: str | Path | None = None
    ) -> subprocess.CompletedProcess[str]:
        """Run the `netd` CLI against this daemon (from outside the namespace)."""
        proc = subprocess.run(
            [NETD, "--socket", str(self.socket), *args],
            capture_output=True,
            text=True,
            timeout=120,
            cwd=cwd,
        )
        if check and proc.returncode != 0:
            raise RuntimeError(f"netd {' '.join(args)} exited {proc.returncode}: {proc.stderr}")
        return proc


# ``unix_request`` as a standalone script, for requests made as another user (``setpriv``):
# argv PATH METHOD URL BODY; prints {"pid", "status", "body"} as JSON.
REQUEST_SCRIPT = """
import json, os, socket, sys
path, method, url, body = sys.argv[1:5]
payload = body.encode()
head = (f"{method} {url} HTTP/1.1\\r\\nHost: netd\\r\\nContent-Type: application/json\\r\\n"
        f"Content-Length: {len(payload)}\\r\\nConnection: close\\r\\n\\r\\n").encode()
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.connect(path)
s.sendall(head + payload)
raw = b""
while chunk := s.recv(65536):
    raw += chunk
header, _, content = raw.partition(b"\\r\\n\\r\\n")
print(json.dumps({"pid": os.getpid(), "status": int(header.split()[1]),
                  "body": json.loads(content) if content.strip() else None}))
"""


def unix_request(
    socket_path: str | Path, method: str, path: str, body: Any = None, timeout: float = 60
) -> tuple[int, Any]:
    """One HTTP/1.1 request with a JSON (or raw bytes) body over a Unix socket; (status, JSON).

    Written here, not borrowed from netd, so tests and benchmarks read the API independently.
    """
    if isinstance(body, bytes):
        payload = body
    else:
        payload = b"" if body is None else json.dumps(body).encode()
    head = (
        f"{method} {path} HTTP/1.1\r\nHost: netd\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(payload)}\r\nConnection: close\r\n\r\n"
    ).encode()
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect(str(socket_path))
        sock.sendall(head + payload)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    header, _, content = b"".join(chunks).partition(b"\r\n\r\n")
    if not header.startswith(b"HTTP/"):
        raise ConnectionError(f"no HTTP answer on {socket_path} (daemon died?)")
    status = int(header.split(b" ", 2)[1])
    if b"transfer-encoding: chunked" in header.lower():
        content = dechunk(content)
    return status, json.loads(content) if content.strip() else None


def dechunk(data: bytes) -> bytes:
    out = bytearray()
    while data:
        size_line, _, rest = data.partition(b"\r\n")
        size = int(size_line.split(b";")[0], 16)
        if size == 0:
            break
        out += rest[:size]
        data = rest[size + 2 :]
    return bytes(out)
