"""Name resolution survives a daemon restart, stop, crash and upgrade (issue #13, section 3).

A real `netd daemon` in a sandbox host; containers "web" and "client" on network "app"
(10.77.0.0/24). A paced client (netns_fixtures/dnsload.py) queries "web" from the client
namespace at 200 q/s while the daemon is stopped with SIGTERM or SIGKILL and started again;
every query must be answered with web's address. The DNS worker processes are read from
/proc (``ip netns pids`` + command line), not from netd; capabilities and seccomp mode from
/proc/<pid>/status.
"""

from __future__ import annotations

import json
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from netns_fixtures import Namespace, Sandbox, wait_for
from netns_fixtures.daemon import Daemon

PY = sys.executable
LOAD = str(Path(__file__).resolve().parents[2] / "netns-fixtures" / "netns_fixtures" / "dnsload.py")
GW = "10.77.0.1"


class App:
    """The daemon, network "app" and two containers."""

    def __init__(self, d: Daemon, sandbox: Sandbox) -> None:
        self.d = d
        self.web, self.client = sandbox.add_ns("web"), sandbox.add_ns("client")
        d.cli("network", "create", "app", "--subnet", "10.77.0.0/24")
        self.web_addr = self.connect(self.web, "web")
        self.connect(self.client, "client")
        # glibc's resolver in the client: `ip netns exec` mounts /etc/netns/<ns>/resolv.conf
        self.etc = Path("/etc/netns") / self.client.name
        self.etc.mkdir(parents=True)
        (self.etc / "resolv.conf").write_text(
            f"nameserver {GW}\nsearch dns.netd\noptions ndots:0 timeout:2 attempts:2\n"
        )

    def close(self) -> None:
        shutil.rmtree(self.etc, ignore_errors=True)

    def connect(self, ns: Namespace, name: str, *extra: str) -> str:
        out = self.d.cli(
            "network", "connect", "app", "--netns", ns.path, "--name", name, *extra,
            "--format", "json",
        ).stdout  # fmt: skip
        return str(json.loads(out)["addresses"][0].split("/")[0])

    def dig(self, name: str, server: str = GW) -> list[str]:
        out = self.client.run("dig", "+short", "+time=2", "+tries=2", f"@{server}", name)
        return out.split()

    def getent(self, name: str) -> list[str]:
        """glibc's resolver, through the container's resolv.conf pointing at the gateway."""
        out = self.client.run("getent", "ahostsv4", name, check=False)
        return sorted({line.split()[0] for line in out.splitlines() if line.strip()})


class Load:
    """dnsload.py in the client namespace, querying "web" until stopped."""

    def __init__(self, app: App, tmp: Path, rate: int = 200) -> None:
        self.stop_file = tmp / "stop"
        ready = tmp / "ready"
        self.proc = app.client.spawn(
            PY, LOAD, GW, "web", app.web_addr, "--rate", str(rate), "--timeout", "2",
            "--stop-file", str(self.stop_file), "--ready-file", str(ready),
            stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        wait_for("first answer", ready.exists, 20)

    def finish(self) -> dict[str, Any]:
        self.stop_file.touch()
        out, _ = self.proc.communicate(timeout=30)
        return dict(json.loads(out))


@pytest.fixture
def app(host: Namespace, sandbox: Sandbox) -> Iterator[App]:
    d = Daemon(host).start()
    a: App | None = None
    try:
        a = App(d, sandbox)
        yield a
    finally:
        if a is not None:
            a.close()
        d.close_checked()  # kills the DNS workers by pid too
        assert not d.dns_worker_pids()


def _status(pid: int) -> dict[str, str]:
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, val = line.partition(":")
        out[key] = val.strip()
    return out


def _restart(app: App, sig: int) -> None:
    app.d.stop(sig)
    time.sleep(0.5)  # the daemon stays down a while: the load runs against the worker alone
    app.d.start()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["sigterm", "sigkill"])
def test_no_failed_query_across_a_restart(app: App, tmp_path: Path, sig: int) -> None:
    [worker] = app.d.dns_worker_pids()
    load = Load(app, tmp_path)
    time.sleep(0.5)
    _restart(app, sig)
    time.sleep(0.5)
    result = load.finish()
    assert result["sent"] > 200, result
    assert result["failed"] == 0, result
    # adopted, not replaced: one worker, the same process
    assert app.d.dns_worker_pids() == [worker]
    st = _status(worker)
    assert st["Uid"].split()[0] != "0" and int(st["CapEff"], 16) == 0, st
    assert st["Seccomp"] == "2" and st["NoNewPrivs"] == "1", st
    # the new daemon talks to it: a new name resolves at once, a removed one no longer
    app.d.cli("network", "disconnect", "app", "--netns", app.web.path)
    assert app.dig("web") == []
    other = app.d.cli("network", "connect", "app", "--netns", app.web.path, "--name", "web2")
    assert other.returncode == 0
    assert app.dig("web2") and app.getent("web2")
    assert app.d.dns_worker_pids() == [worker]


def test_records_changed_while_down_are_current_after_adoption(app: App, sandbox: Sandbox) -> None:
    app.d.cli("network", "create", "old", "--subnet", "10.78.0.0/24")
    extra = sandbox.add_ns("extra")
    app.d.cli("network", "connect", "old", "--netns", extra.path, "--name", "extra")
    app.d.cli("network", "connect", "old", "--netns", app.client.path, "--name", "client")
    assert app.dig("extra") == app.dig("extra.old") != []  # the client is on both networks
    assert "10.78.0.1:53" in app.d.host.run("ss", "-Hlun")
    [worker] = app.d.dns_worker_pids()
    app.d.stop(signal.SIGKILL)
    # While the daemon is down its state changes (as `netd recover` or a spooled CNI DEL
    # would change it): "web" is renamed, and network "old" is gone.
    db = sqlite3.connect(app.d.state_dir / "netd.db")
    with db:
        db.execute("UPDATE endpoints SET doc = json_set(doc, '$.name', 'renamed') "
                   "WHERE json_extract(doc, '$.name') = 'web'")  # fmt: skip
        old_id = db.execute("SELECT id FROM networks WHERE name = 'old'").fetchone()[0]
        db.execute("DELETE FROM endpoints WHERE network_id = ?", (old_id,))
        db.execute("DELETE FROM networks WHERE id = ?", (old_id,))
    db.close()
    assert app.dig("web") == [app.web_addr]  # meanwhile: the last known records
    app.d.start()
    assert app.d.dns_worker_pids() == [worker]
    assert app.dig("renamed") == [app.web_addr]
    assert app.dig("web") == []
    assert app.dig("extra.old") == [] and app.dig("extra") == []  # not served any more
    # the removed network's listener is closed (read from the kernel)
    wait_for("10.78.0.1:53 closed", lambda: "10.78.0.1:53" not in app.d.host.run("ss", "-Hlun"), 10)
    assert f"{GW}:53" in app.d.host.run("ss", "-Hlun")


def test_incompatible_worker_is_replaced_without_failed_queries(app: App, tmp_path: Path) -> None:
    [old] = app.d.dns_worker_pids()
    ttl = app.client.run("dig", "+noall", "+answer", f"@{GW}", "web").split()[1]
    assert ttl == "5"
    load = Load(app, tmp_path)
    app.d.stop(signal.SIGTERM)
    app.d.config_path().write_text("dns_ttl = 17\n")  # another setting: not adoptable
    app.d.start()
    wait_for("old worker gone", lambda: old not in app.d.dns_worker_pids(), 10)
    result = load.finish()
    assert result["failed"] == 0, result
    [new] = app.d.dns_worker_pids()
    assert new != old
    ttl = app.client.run("dig", "+noall", "+answer", f"@{GW}", "web").split()[1]
    assert ttl == "17"
    st = _status(new)
    assert int(st["CapEff"], 16) == 0 and st["Seccomp"] == "2", st
    assert "replaced" in app.d.log()


def test_netd_dns_stop_stops_the_workers_for_good(app: App) -> None:
    [worker] = app.d.dns_worker_pids()
    app.d.stop(signal.SIGTERM)
    assert app.d.dns_worker_pids() == [worker]
    assert app.dig("web") == [app.web_addr]
    out = subprocess.run(
        [str(Path(PY).parent / "netd"), "dns", "stop", "--state-dir", str(app.d.state_dir)],
        capture_output=True, text=True, timeout=60, check=True,
    ).stdout  # fmt: skip
    assert f"stopped pid {worker}" in out
    assert app.d.dns_worker_pids() == []
    assert not list((app.d.state_dir / "dns").glob("worker-*"))


def test_changed_worker_count_stops_the_old_workers(app: App) -> None:
    [old] = app.d.dns_worker_pids()
    app.d.stop(signal.SIGTERM)
    app.d.config_path().write_text("dns_workers = 2\n")  # another socket layout
    app.d.start()
    pids = app.d.dns_worker_pids()
    assert len(pids) == 2 and old not in pids, pids
    assert app.dig("web") == [app.web_addr]
    assert "is stopped" in app.d.log()
    # and back to one, adopted across a plain restart from then on
    app.d.stop(signal.SIGTERM)
    app.d.config_path().write_text("dns_workers = 1\n")
    app.d.start()
    [one] = app.d.dns_worker_pids()
    assert one not in pids
    app.d.stop(signal.SIGKILL)
    app.d.start()
    assert app.d.dns_worker_pids() == [one]
    assert app.dig("web") == [app.web_addr]
