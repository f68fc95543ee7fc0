"""Each driver's inventory lists only its own links, chosen by the parsed tag (netd.names).

One sandbox host holds, side by side, a bridge network of the bridge driver, an external
plugin's veth (tag ``netd:ext:ptp:...``) and the veth an internal macvlan network uses as its
parent on kernels without dummy links (tag ``netd:parent:macvlan:...``): all veths, all tagged
``netd:``. The bridge driver must list and remove only its own bridge; the macvlan driver only
its parent; the ipvlan driver none of them. The links are made with ``ip`` so the test does not
depend on the other drivers' code, and read back with ``ip``.
"""

from __future__ import annotations

from bridge_agent import network, run_agent
from netns_fixtures import Sandbox
from vlan_agent import ok
from vlan_agent import run_agent as run_vlan_agent

from netd.names import Tag, bridge_name, bridge_tag

NET = "3" * 64
OTHER = "4c" * 32
EXT_TAG = Tag.for_external("ptp", OTHER, "c1", "eth0").text
PARENT_TAG = Tag.for_parent("macvlan", OTHER).text


def test_a_driver_lists_and_removes_only_its_own_links(sandbox: Sandbox) -> None:
    host = sandbox.add_host()
    host.run("ip", "link", "add", "nxplugin1", "type", "veth", "peer", "name", "nxpeer1")
    host.run("ip", "link", "set", "nxplugin1", "alias", EXT_TAG)
    host.run("ip", "link", "add", "nm-parent1", "type", "veth", "peer", "name", "np-parent1")
    host.run("ip", "link", "set", "nm-parent1", "alias", PARENT_TAG)
    net = network(NET, [("10.91.0.0/24", "10.91.0.1")])
    results = ok(
        run_agent(
            host.name,
            [
                {"op": "ensure_network", "network": net},
                {"op": "inventory"},
                {"op": "remove_object", "ifname": "nxplugin1"},
                {"op": "remove_object", "ifname": "nm-parent1"},
            ],
        )
    )
    assert results[1] == {bridge_tag(NET): bridge_name(NET)}
    assert results[2:] == [False, False]
    assert {"nxplugin1", "nm-parent1", bridge_name(NET)} <= set(host.links())
    macvlan = ok(run_vlan_agent("macvlan", host.name, [
        {"op": "inventory"},
        {"op": "remove_object", "ifname": "nxplugin1"},
        {"op": "remove_object", "ifname": bridge_name(NET)},
    ]))  # fmt: skip
    assert macvlan == [{PARENT_TAG: "nm-parent1"}, False, False]
    ipvlan = ok(run_vlan_agent("ipvlan", host.name, [
        {"op": "inventory"},
        {"op": "remove_object", "ifname": "nm-parent1"},
    ]))  # fmt: skip
    assert ipvlan == [{}, False]
    assert {"nxplugin1", "nm-parent1", bridge_name(NET)} <= set(host.links())
    # And each removes its own.
    assert ok(run_vlan_agent("macvlan", host.name, [
        {"op": "remove_object", "ifname": "nm-parent1"}])) == [True]  # fmt: skip
    assert ok(run_agent(host.name, [{"op": "teardown_network", "network": net}])) == [[]]
    assert "nm-parent1" not in host.links() and bridge_name(NET) not in host.links()
    assert "nxplugin1" in host.links()
