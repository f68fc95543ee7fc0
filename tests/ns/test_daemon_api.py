"""The daemon's API against a real daemon in a sandbox host namespace."""

from __future__ import annotations

import json
import os
import stat
import subprocess

from netns_fixtures import Namespace, Sandbox
from netns_fixtures.daemon import NETD, Daemon


def test_socket_mode_and_openapi(daemon: Daemon) -> None:
    mode = stat.S_IMODE(os.stat(daemon.socket).st_mode)
    assert mode == 0o660
    status, doc = daemon.request("GET", "/openapi.json")
    assert status == 200
    assert doc["openapi"].startswith("3.")
    assert "/v1/networks" in doc["paths"]
    assert "post" in doc["paths"]["/v1/networks/{name}/connect"]


def test_create_inspect_rm_reads_kernel(daemon: Daemon, host: Namespace) -> None:
    status, net = daemon.request(
        "POST", "/v1/networks", {"name": "web", "subnets": [{"subnet": "10.91.0.0/24"}]}
    )
    assert status == 201, net
    assert net["subnets"][0]["gateway"] == "10.91.0.1"
    links = host.links()
    assert net["bridge"] in links
    assert host.addresses(net["bridge"]) == ["10.91.0.1/24"]
    status, got = daemon.request("GET", "/v1/networks/web")
    assert status == 200 and got["id"] == net["id"] and got["endpoints"] == []
    status, _ = daemon.request("DELETE", "/v1/networks/web")
    assert status == 200
    assert net["bridge"] not in host.links()
    status, err = daemon.request("GET", "/v1/networks/web")
    assert status == 404 and err["error"]["code"] == "not_found"


def test_bad_input_names_field_and_changes_nothing(daemon: Daemon, host: Namespace) -> None:
    before = set(host.links())
    cases = [
        ({"name": "bad name"}, "name"),
        ({"name": "x", "subnets": [{"subnet": "10.0.0.0/33"}]}, "subnet"),
        ({"name": "x", "subnets": [{"subnet": "10.92.0.0/24", "gateway": "10.93.0.1"}]}, "gateway"),
        ({"name": "x", "options": {"nope": "1"}}, "options"),
        ({"name": "x", "driver": "macvtap"}, "driver"),
        ({"name": "x", "bogus": 1}, "bogus"),
    ]
    for body, field in cases:
        status, err = daemon.request("POST", "/v1/networks", body)
        assert status == 400, (body, err)
        assert field in err["error"].get("field", "") + err["error"]["message"], err
    status, nets = daemon.request("GET", "/v1/networks")
    assert nets == []
    assert set(host.links()) == before
    status, err = daemon.request("POST", "/v1/networks", b"not json")
    assert status == 400


def test_overlap_refused_naming_both(daemon: Daemon) -> None:
    assert (
        daemon.request(
            "POST", "/v1/networks", {"name": "a", "subnets": [{"subnet": "10.94.0.0/16"}]}
        )[0]
        == 201
    )
    status, err = daemon.request(
        "POST", "/v1/networks", {"name": "b", "subnets": [{"subnet": "10.94.3.0/24"}]}
    )
    assert status == 409
    assert '"a"' in err["error"]["message"] and '"b"' in err["error"]["message"]


def test_default_pool_and_ipv6_ula(daemon: Daemon) -> None:
    status, a = daemon.request("POST", "/v1/networks", {"name": "a"})
    status, b = daemon.request("POST", "/v1/networks", {"name": "b", "ipv6": True})
    assert status == 201
    assert a["subnets"][0]["subnet"] == "10.89.0.0/24"
    assert b["subnets"][0]["subnet"] == "10.89.1.0/24"
    v6 = [s["subnet"] for s in b["subnets"] if ":" in s["subnet"]]
    assert len(v6) == 1 and v6[0].startswith("fd") and v6[0].endswith("/64")


def test_cli_round_trip(daemon: Daemon) -> None:
    out = daemon.cli(
        "network",
        "create",
        "front",
        "--subnet",
        "10.95.0.0/24",
        "--gateway",
        "10.95.0.254",
        "--label",
        "tier=web",
    ).stdout.strip()
    assert len(out) == 64
    ls = daemon.cli("network", "ls").stdout
    assert "front" in ls and "10.95.0.0/24" in ls
    data = json.loads(daemon.cli("network", "ls", "--format", "json").stdout)
    assert data[0]["labels"] == {"tier": "web"}
    assert daemon.cli("network", "ls", "-q").stdout.strip() == out[:12]
    insp = json.loads(daemon.cli("network", "inspect", "front").stdout)
    assert insp[0]["subnets"][0]["gateway"] == "10.95.0.254"
    bad = daemon.cli("network", "create", "front", check=False)
    assert bad.returncode == 1 and "already exists" in bad.stderr
    daemon.cli("network", "rm", "front")
    assert daemon.cli("network", "ls", "-q").stdout.strip() == ""


def test_cli_unreachable_daemon_exit_code() -> None:
    proc = subprocess.run(
        [NETD, "--socket", "/nonexistent/netd.sock", "network", "ls"],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 3
    assert "/nonexistent/netd.sock" in proc.stderr


def test_second_instance_refused(daemon: Daemon, host: Namespace) -> None:
    other = Daemon(host, state_dir=daemon.state_dir)
    try:
        other.start(timeout=10)
    except RuntimeError as exc:
        assert "holds" in str(exc) and "pid" in str(exc)
    else:
        raise AssertionError("second daemon on the same state dir started")
    finally:
        other.close()


def test_refuses_wrong_namespace(sandbox: Sandbox, host: Namespace) -> None:
    elsewhere = sandbox.add_ns("other")
    d = Daemon(host)
    try:
        res = subprocess.run(elsewhere.argv(*d.argv()), capture_output=True, text=True, timeout=30)
    finally:
        d.close()
    assert res.returncode == 1
    assert "managed_netns" in res.stderr and host.path in res.stderr
