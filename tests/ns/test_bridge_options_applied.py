"""Options reach the kernel: MTU (either spelling), bridge name, static MAC; bad ones refused."""

from __future__ import annotations

from bridge_agent import endpoint, network, run_agent
from netns_fixtures import Sandbox

NET = "4" * 64


def test_mtu_bridge_name_and_static_mac(sandbox: Sandbox) -> None:
    host, c1 = sandbox.add_host(), sandbox.add_ns("c1")
    opts = {"com.docker.network.driver.mtu": "1400", "com.docker.network.bridge.name": "br-mtu"}
    net = network(NET, [("10.94.0.0/24", "10.94.0.1")], options=opts)
    ep = endpoint(NET, "cont1", c1.path, ["10.94.0.2/24"], mac="02:42:0a:5e:00:02")
    r = run_agent(
        host.name,
        [
            {"op": "ensure_network", "network": net},
            {"op": "setup_endpoint", "network": net, "endpoint": ep},
        ],
    )
    assert all(s["ok"] for s in r), r
    assert r[1]["result"]["mac"] == "02:42:0a:5e:00:02"
    links = host.links()
    assert links["br-mtu"]["mtu"] == 1400
    assert links[ep["host_ifname"]]["mtu"] == 1400
    inner = c1.links()["eth0"]
    assert (inner["mtu"], inner["address"]) == (1400, "02:42:0a:5e:00:02")


def test_default_mtu_follows_the_default_route_interface(sandbox: Sandbox) -> None:
    host, up = sandbox.add_host(), sandbox.add_ns("up")
    sandbox.wire(host, up, "192.0.2.2/24", "192.0.2.1/24")
    host.run("ip", "link", "set", "up0", "mtu", "1450")
    host.run("ip", "route", "add", "default", "via", "192.0.2.1")
    net = network(NET, [("10.94.0.0/24", "10.94.0.1")])
    r = run_agent(host.name, [{"op": "ensure_network", "network": net}])
    assert r[0]["ok"], r
    assert host.links()["nd-444444444444"]["mtu"] == 1450


def test_bad_options_give_the_exact_error(sandbox: Sandbox) -> None:
    host = sandbox.add_host()
    r = run_agent(
        host.name,
        [
            {"op": "validate_options", "options": {"com.docker.network.driver.mtu": "9"}},
            {"op": "validate_options", "options": {"bogus": "1"}},
        ],
    )
    assert r[0]["error"] == {
        "type": "InvalidInput",
        "message": "invalid options.com.docker.network.driver.mtu '9': "
        "must be an integer from 68 to 65535",
    }
    assert r[1]["error"]["message"].startswith(
        "invalid options.bogus '1': unknown option for driver bridge; known: bridge, mtu,"
    )
    assert set(host.links()) == {"lo"}
