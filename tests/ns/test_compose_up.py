"""`netd compose up/down/ps/exec` against a real daemon in a sandbox host, with real traffic."""

from __future__ import annotations

import json
import shutil
import subprocess
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from netns_fixtures import NETNS_DIR, Namespace, Sandbox
from netns_fixtures.daemon import Daemon

STATE_DIR = Path("/run/netd-compose")


class Compose:
    """One compose project in a temp dir, driven through the `netd compose` CLI."""

    def __init__(self, sandbox: Sandbox, daemon: Daemon, tmp: Path) -> None:
        self.sandbox = sandbox
        self.daemon = daemon
        self.dir = tmp
        self.name = f"{sandbox.prefix}-p"
        self.files: list[str] = []

    def write(self, text: str, name: str = "compose.yaml") -> Path:
        """Write a compose file (dedented) into the project dir; it is used by later calls."""
        path = self.dir / name
        path.write_text(textwrap.dedent(text))
        if str(path) not in self.files:
            self.files.append(str(path))
        return path

    def run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """`netd compose -f ... -p NAME <args>`."""
        flags = [x for f in self.files for x in ("-f", f)]
        # Run from the project directory, as a user would: messages name "compose.yaml".
        return self.daemon.cli("compose", *flags, "-p", self.name, *args, check=check, cwd=self.dir)

    def up(self) -> str:
        """`up`; returns its output."""
        return self.run("up").stdout

    def sb(self, service: str, n: int = 1) -> Namespace:
        """The sandbox of a replica as a fixtures Namespace (for ping/run)."""
        return Namespace(f"{self.name}-{service}-{n}", self.sandbox)

    def exec(self, service: str, *cmd: str) -> subprocess.CompletedProcess[str]:
        """`netd compose exec SERVICE -- CMD` (runs with the sandbox's resolv.conf/hosts)."""
        return self.run("exec", service, "--", *cmd, check=False)

    def network(self, key: str) -> dict[str, Any]:
        """GET /v1/networks/<project>_<key> straight from the daemon."""
        status, body = self.daemon.request("GET", f"/v1/networks/{self.name}_{key}")
        assert status == 200, body
        return dict(body)

    def addr(self, key: str, service: str, n: int = 1) -> str:
        """The first address of a replica on a network."""
        for ep in self.network(key)["endpoints"]:
            if ep["container_id"] == f"{self.name}-{service}-{n}":
                return str(ep["addresses"][0].split("/")[0])
        raise AssertionError(f"{service} not on {key}")

    def leftovers(self) -> list[str]:
        """Sandboxes, /etc/netns dirs and the state file this project left behind."""
        out = []
        for base in (Path(NETNS_DIR), Path("/etc/netns"), STATE_DIR / "uts"):
            if base.is_dir():
                out += [str(base / n) for n in base.iterdir() if n.name.startswith(self.name + "-")]
        if (STATE_DIR / f"{self.name}.json").exists():
            out.append(str(STATE_DIR / f"{self.name}.json"))
        return out

    def cleanup(self) -> None:
        """Best-effort `down`, then remove whatever is still there (namespaces by name)."""
        if self.files:
            self.run("down", check=False)
        for path in self.leftovers():
            if path.startswith(NETNS_DIR):
                subprocess.run(["ip", "netns", "del", Path(path).name], check=False)
            elif path.startswith(str(STATE_DIR / "uts")):
                subprocess.run(["umount", "-l", path], check=False)
                Path(path).unlink(missing_ok=True)
            elif Path(path).is_dir():
                shutil.rmtree(path, ignore_errors=True)
            else:
                Path(path).unlink(missing_ok=True)


def compose_project(sandbox: Sandbox, daemon: Daemon, tmp_path: Path) -> Iterator[Compose]:
    """Body of the `compose` fixture (other test modules wrap it in their own fixture)."""
    c = Compose(sandbox, daemon, tmp_path)
    try:
        yield c
    finally:
        c.cleanup()
        assert not c.leftovers()


@pytest.fixture
def compose(sandbox: Sandbox, daemon: Daemon, tmp_path: Path) -> Iterator[Compose]:
    """A compose project bound to the test's daemon; everything it made is removed after."""
    yield from compose_project(sandbox, daemon, tmp_path)


THREE = """
    services:
      web:
        image: nginx
        hostname: webhost
        networks:
          front:
            aliases: [www]
          back: {}
        ports: ["8080:80"]
      db:
        image: postgres
        networks:
          back:
            ipv4_address: 10.231.1.50
            aliases: [database]
      client:
        image: alpine
        networks: [front]
    networks:
      front:
        ipam:
          config: [{subnet: 10.231.0.0/24}]
      back:
        internal: true
        ipam:
          config: [{subnet: 10.231.1.0/24}]
"""


def test_up_traffic_dns_idempotent_down(compose: Compose, host: Namespace) -> None:
    compose.write(THREE)
    out = compose.up()
    assert "created network" in out
    web_front = compose.addr("front", "web")
    assert compose.addr("back", "db") == "10.231.1.50"
    assert compose.sb("client").ping(web_front)
    assert compose.sb("web").ping("10.231.1.50")
    # names through netd's DNS, via the sandbox's resolv.conf
    got = compose.exec("client", "getent", "hosts", "www")
    assert got.returncode == 0 and web_front in got.stdout, got
    got = compose.exec("web", "getent", "hosts", "database")
    assert "10.231.1.50" in got.stdout, got
    assert compose.exec("client", "getent", "hosts", "db").returncode != 0  # not on front
    # labels as compose sets them
    labels = compose.network("back")["labels"]
    assert labels["com.docker.compose.project"] == compose.name
    assert labels["com.docker.compose.network"] == "back"
    assert compose.network("back")["internal"] is True
    # ps
    rows = json.loads(compose.run("ps", "--format", "json").stdout)
    web = next(r for r in rows if r["service"] == "web")
    assert web["ports"] == ["0.0.0.0:8080->80/tcp"]
    # up twice: nothing changes
    before = {k: compose.network(k)["endpoints"] for k in ("front", "back")}
    again = compose.up()
    assert "nothing changed" in again, again
    assert {k: compose.network(k)["endpoints"] for k in ("front", "back")} == before
    # down leaves nothing
    compose.run("down", "-v")
    assert not compose.leftovers()
    _, nets = compose.daemon.request("GET", "/v1/networks")
    assert [n for n in nets if n["name"].startswith(compose.name)] == []
    assert not [n for n in host.links() if n.startswith(("nd-", "nv"))]
