"""`netd recover` against a real daemon's kernel state after its database was deleted or corrupted.

Networks and endpoints are made through the API, the daemon is stopped (data plane up), the
database is deleted or overwritten, `netd recover` runs inside the host namespace, and the daemon
is started again: the same networks and addresses are back, a new attach does not reuse a
recovered address, and detaching a recovered endpoint removes its veth.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from netns_fixtures import Namespace, Sandbox
from netns_fixtures.daemon import NETD, Daemon

NET = {"name": "app", "subnets": [{"subnet": "10.132.0.0/24"}]}
GATEWAY = "10.132.0.1"


def recover(host: Namespace, state_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        host.argv(NETD, "recover", "--state-dir", str(state_dir), *args),
        capture_output=True,
        text=True,
        timeout=60,
    )


def endpoints(d: Daemon, network: str) -> dict[str, dict[str, object]]:
    status, info = d.request("GET", f"/v1/networks/{network}")
    assert status == 200, info
    return {e["container_id"]: e for e in info["endpoints"]}


@pytest.mark.parametrize("damage", ["deleted", "corrupt"])
def test_recover_rebuilds_networks_and_endpoints(
    host: Namespace, sandbox: Sandbox, damage: str
) -> None:
    d = Daemon(host).start()
    try:
        status, net = d.request("POST", "/v1/networks", NET)
        assert status == 201, net
        c1, c2 = sandbox.add_ns("c1"), sandbox.add_ns("c2")
        for c in (c1, c2):
            assert d.request("POST", "/v1/networks/app/connect", {"netns": c.path})[0] == 201
        before = endpoints(d, "app")
        refused = recover(host, d.state_dir)
        assert refused.returncode == 1 and "holds" in refused.stderr, refused
        d.stop()

        db = d.state_dir / "netd.db"
        names: list[str] = []
        if damage == "deleted":
            for side in ("", "-wal", "-shm"):
                Path(f"{db}{side}").unlink(missing_ok=True)
            name = f"recovered-{net['id'][:12]}"
        else:
            garbage = os.urandom(8192)
            db.write_bytes(garbage)
            with pytest.raises(RuntimeError, match="netd recover"):
                d.start()  # the daemon refuses, pointing at `netd recover`
            names = ["--name", f"{net['id'][:8]}=app"]
            name = "app"

        dry = recover(host, d.state_dir, "--dry-run", *names)
        assert dry.returncode == 0 and "dry run: nothing written" in dry.stdout, dry
        done = recover(host, d.state_dir, *names)
        assert done.returncode == 0, done
        print(done.stdout)
        assert "DNS names, aliases" in done.stdout
        if damage == "corrupt":
            aside = [p for p in d.state_dir.iterdir() if p.name.startswith("netd.db.corrupt-")]
            assert len(aside) == 1 and aside[0].read_bytes() == garbage
        else:
            assert f"name of network {net['id'][:12]}" in done.stdout

        d.start()
        after = endpoints(d, name)
        assert set(after) == set(before)
        for cid, ep in before.items():
            for key in ("addresses", "host_ifname", "mac", "netns"):
                assert after[cid][key] == ep[key], (cid, key)
            assert after[cid]["state"] == "ready"
        assert c1.ping(GATEWAY) and c2.ping(GATEWAY)  # the veths were not taken as orphans

        c3 = sandbox.add_ns("c3")
        status, ep3 = d.request("POST", f"/v1/networks/{name}/connect", {"netns": c3.path})
        assert status == 201, ep3
        taken = {a for ep in before.values() for a in ep["addresses"]}  # type: ignore[attr-defined]
        assert not set(ep3["addresses"]) & taken

        cid1 = next(cid for cid, ep in before.items() if ep["netns"] == c1.path)
        veth = str(before[cid1]["host_ifname"])
        status, _ = d.request("POST", f"/v1/networks/{name}/disconnect", {"container_id": cid1})
        assert status == 200
        assert veth not in host.links() and "eth0" not in c1.links()
    finally:
        log = d.log()
        d.close()
        assert "Traceback" not in log, log


def test_recover_refuses_a_healthy_database(host: Namespace) -> None:
    d = Daemon(host).start()
    try:
        assert d.request("POST", "/v1/networks", NET)[0] == 201
        d.stop()
        out = recover(host, d.state_dir)
        assert out.returncode == 1 and "healthy" in out.stderr, out
    finally:
        d.close()
