"""External driver plugins in a real daemon: the example ptp driver, and a plugin that hangs.

The example (examples/drivers/ptp/ptp) is installed into a temporary plugin directory of a
sandbox daemon, exactly as an administrator would install it into /usr/lib/netd/drivers; the
containers are attached through the CLI and through netd's CNI plugin. Assertions read the
kernel back with `ip -j` and send real pings; nothing asks netd what it did.
"""

from __future__ import annotations

import ipaddress
import json
import shutil
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cni_runtime import REFERENCE_DIR, Runtime
from netns_fixtures import Namespace, Sandbox, wait_for
from netns_fixtures.daemon import Daemon

from netd.cni.install import install_plugin

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "drivers" / "ptp" / "ptp"
SUBNET = "10.77.0.0/24"
GATEWAY = "10.77.0.1"


def start_daemon(host: Namespace, plugin_dir: Path, **config: Any) -> Daemon:
    """A daemon whose plugin directory is ``plugin_dir`` (plus other config keys)."""
    daemon = Daemon(host)
    lines = [f"driver_plugin_dir = {json.dumps(str(plugin_dir))}"]
    lines += [f"{key} = {json.dumps(value)}" for key, value in config.items()]
    daemon.config_path().write_text("\n".join(lines) + "\n")
    return daemon.start()


@pytest.fixture
def plugin_dir(tmp_path: Path) -> Path:
    """A plugin directory holding the example ptp driver, installed like a package would."""
    directory = tmp_path / "drivers"
    directory.mkdir(mode=0o755)
    shutil.copy(EXAMPLE, directory / "ptp")
    (directory / "ptp").chmod(0o755)
    return directory


@pytest.fixture
def ptp_daemon(host: Namespace, plugin_dir: Path) -> Iterator[Daemon]:
    daemon = start_daemon(host, plugin_dir)
    try:
        yield daemon
    finally:
        daemon.close_checked()


def tagged(host: Namespace) -> dict[str, str]:
    """``{ifalias: ifname}`` of the host's links tagged by an external driver."""
    return {
        link["ifalias"]: link["ifname"]
        for link in host.ip_json("link", "show")
        if link.get("ifalias", "").startswith("netd:ext:")
    }


def host_routes_into(host: Namespace, subnet: str) -> list[str]:
    net = ipaddress.ip_network(subnet)
    return [
        r["dst"]
        for r in host.ip_json("route", "show")
        if r["dst"] != "default" and ipaddress.ip_network(r["dst"]).subnet_of(net)  # type: ignore[arg-type]
    ]


def assert_plumbed(host: Namespace, c: Namespace, address: str) -> str:
    """The ptp layout in the kernel: returns the host interface's name."""
    assert c.addresses("eth0") == [f"{address}/32"]
    routes = c.ip_json("route", "show")
    assert {"dst": "default", "gateway": GATEWAY, "dev": "eth0"}.items() <= routes[0].items()
    host_if = next(
        link["ifname"]
        for link in host.ip_json("-d", "link", "show")
        if link.get("ifalias", "").endswith(f":eth0:{c.name}")
    )
    assert host.addresses(host_if) == [f"{GATEWAY}/32"]
    assert host.ip_json("route", "show", f"{address}/32")[0]["dev"] == host_if
    return host_if


def test_ptp_driver_through_the_cli(
    ptp_daemon: Daemon, host: Namespace, sandbox: Sandbox, plugin_dir: Path
) -> None:
    ptp_daemon.cli("network", "create", "-d", "ptp", "--subnet", SUBNET, "ptpnet")
    c1, c2 = sandbox.add_ns("c1"), sandbox.add_ns("c2")
    for c, name in ((c1, "web"), (c2, "db")):
        ptp_daemon.cli("network", "connect", "ptpnet", "--netns", c.path, "--name", name)
    ip1, ip2 = (c.addresses("eth0")[0].split("/")[0] for c in (c1, c2))
    host1, host2 = assert_plumbed(host, c1, ip1), assert_plumbed(host, c2, ip2)
    assert sorted(tagged(host).values()) == sorted([host1, host2])
    assert host.ping(ip1) and c1.ping(GATEWAY)
    assert c1.ping(ip2) and c2.ping(ip1)  # through the host's routing
    # The driver declared dns "gateway": netd's DNS answers on the gateway address.
    assert c1.run("dig", "+short", "+time=2", "+tries=1", f"@{GATEWAY}", "db").split() == [ip2]
    inspect = json.loads(ptp_daemon.cli("network", "inspect", "ptpnet").stdout)
    shown = json.dumps(inspect)
    assert str(plugin_dir / "ptp") in shown and host1 in shown and host2 in shown
    for c in (c1, c2):
        ptp_daemon.cli("network", "disconnect", "ptpnet", "--netns", c.path)
    assert tagged(host) == {} and host_routes_into(host, SUBNET) == []
    assert "eth0" not in c1.links() and "eth0" not in c2.links()
    ptp_daemon.cli("network", "rm", "ptpnet")
    _, nets = ptp_daemon.request("GET", "/v1/networks")
    assert [n["name"] for n in nets] == []


def test_ptp_network_refuses_published_ports(
    ptp_daemon: Daemon, host: Namespace, sandbox: Sandbox
) -> None:
    ptp_daemon.cli("network", "create", "-d", "ptp", "--subnet", SUBNET, "ptpnet")
    c = sandbox.add_ns("c")
    proc = ptp_daemon.cli(
        "network", "connect", "ptpnet", "--netns", c.path, "-p", "8080:80", check=False
    )
    assert proc.returncode != 0
    assert "network 'ptpnet' (driver ptp) cannot publish ports" in proc.stderr, proc.stderr
    assert tagged(host) == {} and "eth0" not in c.links()


def test_reconcile_repairs_and_removes_through_the_plugin(
    host: Namespace, sandbox: Sandbox, plugin_dir: Path
) -> None:
    daemon = start_daemon(host, plugin_dir, reconcile_interval=0.5)
    try:
        daemon.cli("network", "create", "-d", "ptp", "--subnet", SUBNET, "ptpnet")
        c = sandbox.add_ns("c")
        daemon.cli("network", "connect", "ptpnet", "--netns", c.path)
        address = c.addresses("eth0")[0].split("/")[0]
        host_if = assert_plumbed(host, c, address)
        tag = next(t for t, name in tagged(host).items() if name == host_if)
        mac = c.links()["eth0"]["address"]
        # Someone deletes the host end (the container end goes with it): endpoint_check finds
        # it, the reconciler re-plumbs through the plugin with the same address and MAC.
        host.run("ip", "link", "del", "dev", host_if)

        def replumbed() -> bool:  # the default route is the plugin's last step
            return "eth0" in c.links() and bool(c.ip_json("route", "show", "default"))

        wait_for("the endpoint to be re-plumbed", replumbed, 30)
        assert assert_plumbed(host, c, address) == host_if
        assert c.links()["eth0"]["address"] == mac and tagged(host)[tag] == host_if
        assert c.ping(GATEWAY)
        # A tagged link no record owns (left by a crash): inventory reports it, the reconciler
        # has the plugin remove it; the live endpoint's link stays.
        orphan_tag = "netd:ext:ptp:0123456789ab:eth0:gone"
        host.run("ip", "link", "add", "nxorphan", "type", "veth", "peer", "name", "nxorphan-p")
        host.run("ip", "link", "set", "dev", "nxorphan", "alias", orphan_tag)
        wait_for("the orphan to be removed", lambda: "nxorphan" not in host.links(), 30)
        assert tagged(host) == {tag: host_if}
        assert "reconcile: removing nxorphan" in daemon.log()
        daemon.cli("network", "disconnect", "ptpnet", "--netns", c.path)
        assert tagged(host) == {}
    finally:
        daemon.close_checked()


def test_ptp_driver_refuses_options_through_the_api(ptp_daemon: Daemon) -> None:
    status, body = ptp_daemon.request(
        "POST", "/v1/networks", {"name": "bad", "driver": "ptp", "options": {"speed": "warp"}}
    )
    assert status == 400, body
    assert body["error"] == {
        "code": "invalid_input",
        "message": "invalid options.speed 'warp': the ptp driver takes no options (driver ptp)",
        "field": "options.speed",
        "value": "warp",
    }


def test_ptp_driver_through_the_cni_plugin(
    ptp_daemon: Daemon, host: Namespace, sandbox: Sandbox, tmp_path: Path
) -> None:
    ptp_daemon.cli("network", "create", "-d", "ptp", "--subnet", SUBNET, "ptpnet")
    bin_dir = tmp_path / "bin"
    install_plugin(bin_dir)
    runtime = Runtime(host, [bin_dir, REFERENCE_DIR], ptp_daemon.socket)
    conf = {"cniVersion": "1.0.0", "name": "ptpnet", "type": "netd"}
    c = sandbox.add_ns("c")
    res = runtime.exec("netd", "ADD", conf, container_id=c.name, netns=c.path)
    assert res.code == 0, (res.out, res.err)
    address = res.out["ips"][0]["address"].split("/")[0]
    host_if = assert_plumbed(host, c, address)
    # The driver's interfaces: the host end (no sandbox) first, then the container's.
    ifaces = res.out["interfaces"]
    assert [i["name"] for i in ifaces] == [host_if, "eth0"]
    assert "sandbox" not in ifaces[0] and ifaces[1]["sandbox"] == c.path
    assert ifaces[1]["mac"] == c.links()["eth0"]["address"]
    assert ifaces[0]["mac"] == host.links()[host_if]["address"]
    assert res.out["ips"][0]["interface"] == 1 and res.out["ips"][0]["gateway"] == GATEWAY
    assert c.ping(GATEWAY) and host.ping(address)
    check = runtime.exec("netd", "CHECK", {**conf, "prevResult": res.out}, container_id=c.name,
                         netns=c.path)  # fmt: skip
    assert check.code == 0, check.out
    for _ in range(2):  # DEL is idempotent
        gone = runtime.exec("netd", "DEL", conf, container_id=c.name, netns=c.path)
        assert gone.code == 0, gone.out
    assert tagged(host) == {} and host_routes_into(host, SUBNET) == []
    assert "eth0" not in c.links()


# --- a plugin that hangs -----------------------------------------------------------------------

SLOW = """#!{python}
import json, os, sys, time
req = json.load(sys.stdin)
verb = req["verb"]
def answer(obj, code=0):
    json.dump(obj, sys.stdout)
    sys.exit(code)
if verb == "capabilities":
    answer({{"contract": "netd.driver/1", "capabilities": {{"host_interface": False}}}})
if verb == "endpoint_attach":
    cid = req["endpoint"]["container_id"]
    if cid.startswith("hang"):
        with open({marker!r}, "w") as fh:
            fh.write(str(os.getpid()))
        time.sleep(600)
    if cid.startswith("taken"):
        answer({{"error": {{"code": "conflict", "message": "that slot is taken"}}}}, 1)
    answer({{"mac": "02:00:00:00:00:%02x" % len(cid)}})
if verb == "endpoint_check":
    answer({{"problems": []}})
answer({{"failures": [], "objects": []}})
"""


def test_a_hung_plugin_holds_no_lock_and_fails_alone(
    host: Namespace, sandbox: Sandbox, tmp_path: Path
) -> None:
    plugins = tmp_path / "drivers"
    plugins.mkdir(mode=0o755)
    marker = tmp_path / "hung.pid"
    (plugins / "slow").write_text(SLOW.format(python=sys.executable, marker=str(marker)))
    (plugins / "slow").chmod(0o755)
    shutil.copy(plugins / "slow", plugins / "bridge")  # may not replace the built-in driver
    daemon = start_daemon(
        host, plugins, driver_plugin_timeout=2.0, driver_plugin_setup_timeout=20.0
    )
    try:
        assert f"driver plugin {plugins / 'bridge'} refused: 'bridge' is a built-in" in (
            daemon.log()
        )
        status, _ = daemon.request(
            "POST", "/v1/networks", {"name": "slownet", "driver": "slow",
                                     "subnets": [{"subnet": "10.78.0.0/24"}]}
        )  # fmt: skip
        assert status in (200, 201)
        stuck, ok, taken = sandbox.add_ns("stuck"), sandbox.add_ns("ok"), sandbox.add_ns("taken")
        outcome: dict[str, Any] = {}

        def hang() -> None:
            outcome["hung"] = daemon.request(
                "POST",
                "/v1/networks/slownet/connect",
                {"netns": stuck.path, "container_id": "hang1", "ifname": "eth0"},
            )

        thread = threading.Thread(target=hang)
        thread.start()
        wait_for("the plugin to hang", lambda: marker.exists() and marker.read_text() != "", 20)
        # While one attach hangs in the plugin: the daemon answers, and the same network takes
        # another attach (its lock is not held across the plugin call).
        assert daemon.request("GET", "/v1/networks")[0] == 200
        status, body = daemon.request(
            "POST",
            "/v1/networks/slownet/connect",
            {"netns": ok.path, "container_id": "ok1", "ifname": "eth0"},
        )
        assert status in (200, 201), body
        status, body = daemon.request(
            "POST",
            "/v1/networks/slownet/connect",
            {"netns": taken.path, "container_id": "taken1", "ifname": "eth0"},
        )
        assert status == 409 and body["error"]["code"] == "conflict", body
        assert body["error"]["message"] == (
            'driver plugin "slow" endpoint_attach: that slot is taken'
        )
        assert thread.is_alive(), "the hung attach ended before the others were served"
        thread.join(60)
        status, body = outcome["hung"]
        assert status == 503, body
        assert body["error"]["code"] == "unavailable"
        assert body["error"]["message"] == (
            f'driver plugin "slow" endpoint_attach: no answer within 20 s; the plugin '
            f"({plugins / 'slow'}) was killed"
        )
        hung_pid = int(marker.read_text())
        assert (
            not Path(f"/proc/{hung_pid}").exists()
            or "Z" in (Path(f"/proc/{hung_pid}/stat").read_text().rsplit(")", 1)[1].split()[:1])
        )
        _, net = daemon.request("GET", "/v1/networks/slownet")
        assert [e["container_id"] for e in net["endpoints"]] == ["ok1"]
        assert net["ipam_usage"]["10.78.0.0/24"]["used"] == 1
        assert daemon.proc is not None and daemon.proc.poll() is None
    finally:
        daemon.close_checked()
