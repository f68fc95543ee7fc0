"""The driver contract: the checks every :class:`netd.drivers.base.Driver` must pass.

Implementations (one line each in ``SUITE``): the drivers that make kernel objects, run inside
a sandbox host namespace with a container namespace by tests/ns/test_contract_driver_ns.py —
bridge; macvlan on an internal parent of netd's own and on a user's parent (``up0``, made by
its ``make``); ipvlan (skipped with the kernel's reason where it has no ipvlan links); the
example external driver examples/drivers/ptp through :class:`ExternalDriver`; the overlay
driver on one node (an underlay address on a veth made by its ``make``) — and the null and
IPAM-only drivers (in process, tests/unit/test_contract_driver.py). A new driver adds one
``Impl`` line and, where it needs more than a host and a container namespace, its own
``make``; a subject's ``net`` is the network the checks use (a macvlan one names its parent).

Each subject has ``dump()``: the links, addresses and routes of the host and the container
namespace, read with ``ip -j`` independently of the driver, so "idempotent" and "leaves
nothing" are judged by the kernel. Link-local IPv6 addresses are left out: the kernel adds them
on its own when a link comes up.

What a check expects of a driver follows from its declared :class:`Capabilities` (a driver
that plumbs nothing must refuse ``setup_endpoint``; one without host interfaces names none),
never from its name.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kit.contract import Impl, Skip, Suite
from kit.records import endpoint, network
from netd.drivers.base import Capabilities, Driver
from netd.errors import InvalidInput, NetdError
from netd.model import Endpoint, Network

NET = network("drv-a", ["10.66.0.0/24", "fd00:66::/64"])
NOWHERE = "/run/netns/netd-contract-no-such-namespace"


@dataclass
class DriverSubject:
    """A driver, the container namespace its endpoints go into, and how to read the kernel."""

    driver: Driver
    netns: str  # the container namespace (a path); NOWHERE for drivers that touch no kernel
    kernel: bool  # it makes kernel objects: dump() shows them and they can be broken
    unknown_options_refused: bool = True
    good_options: dict[str, str] = dataclasses.field(default_factory=dict)
    net: Network = NET  # the network the checks set up (a macvlan one names its parent)

    def endpoint(self, cid: str = "c1", **kw: Any) -> Endpoint:
        """An endpoint of ``net`` in this subject's container namespace, its host-side name
        the driver's (as the service fills it in)."""
        host_ifname = self.driver.endpoint_host_ifname(self.net, cid, kw.get("ifname", "eth0"))
        return endpoint(self.net, cid, **{"netns": self.netns, "host_ifname": host_ifname, **kw})

    def dump(self) -> str:
        """Host and container links, addresses and routes, normalised; "" without a kernel."""
        if not self.kernel:
            return ""
        inside = ["nsenter", f"--net={self.netns}"]
        view = {"host": _view([]), "container": _view(inside)}
        return json.dumps(view, indent=1, sort_keys=True)

    def delete_container_interface(self, ifname: str) -> None:
        """Break an endpoint behind the driver's back (its peer goes too, for a veth)."""
        _run("nsenter", f"--net={self.netns}", "ip", "link", "del", ifname)

    @property
    def plumbs(self) -> bool:
        """Whether the driver creates its endpoints' interfaces (False: IPAM only)."""
        return self.driver.capabilities.plumbs

    def close(self) -> None:
        """Release the driver's sockets."""
        self.driver.close()


# --- reading the kernel -----------------------------------------------------------------------


def _run(*argv: str) -> str:
    return subprocess.run(argv, check=True, capture_output=True, text=True).stdout


def _view(prefix: list[str]) -> dict[str, Any]:
    links = json.loads(_run(*prefix, "ip", "-j", "-d", "link", "show"))
    names = {link["ifindex"]: link["ifname"] for link in links}
    out: dict[str, Any] = {}
    for link in links:
        out[link["ifname"]] = {
            "kind": link.get("linkinfo", {}).get("info_kind", ""),
            "master": names.get(link.get("master"), link.get("master")),
            "alias": link.get("ifalias", ""),
        }
    for entry in json.loads(_run(*prefix, "ip", "-j", "addr", "show")):
        out[entry["ifname"]]["addresses"] = sorted(
            f"{a['local']}/{a['prefixlen']}" for a in entry.get("addr_info", [])
            if a.get("scope") != "link"
        )  # fmt: skip
    routes = [
        json.loads(_run(*prefix, "ip", "-j", *family, "route", "show", "table", "all"))
        for family in (["-4"], ["-6"])
    ]
    out["routes"] = sorted(
        f"{r.get('dst')} via {r.get('gateway', '-')} dev {r.get('dev')} table {r.get('table')}"
        for rs in routes for r in rs
        if not str(r.get("dst", "")).startswith(("fe80", "ff00", "local", "multicast"))
        and r.get("type") not in ("local", "multicast", "broadcast", "anycast")
    )  # fmt: skip
    return out


def same(now: str, expected: str, what: str) -> None:
    """Assert two dumps are equal, showing the difference."""
    if now != expected:
        diff = difflib.unified_diff(
            expected.splitlines(), now.splitlines(), "expected", "now", lineterm=""
        )
        raise AssertionError(f"{what}:\n" + "\n".join(diff))


# --- the implementations ----------------------------------------------------------------------


def _bridge(args: dict[str, Any]) -> DriverSubject:
    from netd.drivers.bridge import BridgeDriver

    return DriverSubject(BridgeDriver(), args["netns"], kernel=True, good_options={"mtu": "1400"})


def _null(args: dict[str, Any]) -> DriverSubject:
    from netd.drivers.null import NullDriver

    # The null driver stands in for every driver in the service's unit tests, so it takes any
    # option unchanged (netd/drivers/null.py): it is exempt from the unknown-option check.
    return DriverSubject(NullDriver(), NOWHERE, kernel=False, unknown_options_refused=False,
                         good_options={"mtu": "1400"})  # fmt: skip


def _ipam(args: dict[str, Any]) -> DriverSubject:
    from netd.drivers.ipam import IpamOnlyDriver

    return DriverSubject(IpamOnlyDriver(), NOWHERE, kernel=False, good_options={"dns": "false"})


def _macvlan(args: dict[str, Any]) -> DriverSubject:
    """No parent: an internal network on a parent link netd makes and owns (nm-<id12>)."""
    from netd.drivers.macvlan import MacvlanDriver

    net = network("drv-a", ["10.66.0.0/24", "fd00:66::/64"], driver="macvlan")
    return DriverSubject(MacvlanDriver(), args["netns"], kernel=True, net=net,
                         good_options={"macvlan_mode": "Private", "mtu": "1400"})  # fmt: skip


def _macvlan_parent(args: dict[str, Any]) -> DriverSubject:
    """The user's parent: ``up0``, one end of a veth pair made here (the kernel has no dummy
    links everywhere), both ends up so the macvlans have carrier; never changed by the driver."""
    from netd.drivers.macvlan import MacvlanDriver

    if subprocess.run(["ip", "link", "show", "up0"], capture_output=True).returncode != 0:
        _run("ip", "link", "add", "up0", "type", "veth", "peer", "name", "down0")
        _run("ip", "link", "set", "up0", "up")
        _run("ip", "link", "set", "down0", "up")
    net = network("drv-a", ["10.66.0.0/24", "fd00:66::/64"], driver="macvlan",
                  options={"parent": "up0"})  # fmt: skip
    return DriverSubject(MacvlanDriver(), args["netns"], kernel=True, net=net,
                         good_options={"parent": " up0", "macvlan_mode": "VEPA"})  # fmt: skip


def _ipvlan(args: dict[str, Any]) -> DriverSubject:
    """As macvlan's internal network; skipped, with the kernel's reason, where it has none."""
    from netd.drivers.macvlan import IpvlanDriver

    driver = IpvlanDriver()
    missing = driver.available()
    if missing:
        raise Skip(f"this kernel cannot run it: {missing}")
    net = network("drv-a", ["10.66.0.0/24", "fd00:66::/64"], driver="ipvlan")
    return DriverSubject(driver, args["netns"], kernel=True, net=net,
                         good_options={"ipvlan_mode": "L3", "mtu": "1400"})  # fmt: skip


def _overlay(args: dict[str, Any]) -> DriverSubject:
    """One node of an overlay network: its underlay address on ``ul0`` (one end of a veth
    pair made here, as ``up0`` above), VNI 4242; sync_remote is proven by
    tests/ns/test_overlay_driver_ns.py across hosts."""
    from netd.drivers.overlay import OverlayDriver

    if subprocess.run(["ip", "link", "show", "ul0"], capture_output=True).returncode != 0:
        _run("ip", "link", "add", "ul0", "type", "veth", "peer", "name", "ul1")
        _run("ip", "addr", "add", "192.168.90.1/24", "dev", "ul0")
        _run("ip", "link", "set", "ul0", "up")
        _run("ip", "link", "set", "ul1", "up")
    net = network("drv-a", ["10.66.0.0/24", "fd00:66::/64"], driver="overlay",
                  options={"vni": "4242"})  # fmt: skip
    return DriverSubject(OverlayDriver(node_address="192.168.90.1"), args["netns"], kernel=True,
                         net=net, good_options={"vni": " 4242", "mtu": "1400"})  # fmt: skip


PTP = Path(__file__).resolve().parents[2] / "examples" / "drivers" / "ptp" / "ptp"


def _ptp(args: dict[str, Any]) -> DriverSubject:
    """The example external driver (examples/drivers/ptp), run as the daemon runs a plugin."""
    from netd.drivers.external import ExternalDriver

    net = network("drv-a", ["10.66.0.0/24", "fd00:66::/64"], driver="ptp")
    return DriverSubject(ExternalDriver(PTP), args["netns"], kernel=True, net=net,
                         good_options={"mtu": " 1400", "dns": "No"})  # fmt: skip


# --- the checks -------------------------------------------------------------------------------


def validate_options_refuses_an_unknown_key(s: DriverSubject) -> None:
    if not s.unknown_options_refused:
        raise Skip("takes any option by design (it stands in for other drivers in tests)")
    try:
        s.driver.validate_options({"no_such_option": "1"})
    except InvalidInput as exc:
        assert exc.field == "options.no_such_option", exc.field
        assert exc.value == "1", exc.value
    else:
        raise AssertionError("an unknown option was accepted")


def validate_options_is_stable(s: DriverSubject) -> None:
    """Valid options come back normalised, and normalising again changes nothing."""
    once = s.driver.validate_options(dict(s.good_options))
    assert isinstance(once, dict)
    assert s.driver.validate_options(dict(once)) == once


def ensure_and_teardown_network_are_idempotent(s: DriverSubject) -> None:
    before = s.dump()
    s.driver.ensure_network(s.net)
    once = s.dump()
    s.driver.ensure_network(s.net)
    same(s.dump(), once, "a second ensure_network changed the kernel")
    assert s.driver.teardown_network(s.net) == []
    same(s.dump(), before, "teardown_network left something")
    assert s.driver.teardown_network(s.net) == []


def setup_then_teardown_leaves_nothing(s: DriverSubject) -> None:
    before = s.dump()
    s.driver.ensure_network(s.net)
    base = s.dump()
    asked = s.endpoint()
    if not s.plumbs:
        try:
            s.driver.setup_endpoint(s.net, asked)
        except InvalidInput as exc:
            assert exc.value == s.net.name, exc
        else:
            raise AssertionError("a driver that plumbs nothing accepted setup_endpoint")
        same(s.dump(), base, "a refused setup_endpoint changed the kernel")
        return
    made = s.driver.setup_endpoint(s.net, asked)
    assert made.mac, "setup_endpoint returns the endpoint with its MAC"
    assert dataclasses.replace(made, mac=None, host_mac=None, netns_inode=0) == asked
    assert s.driver.check_endpoint(s.net, made).problems == []
    if s.kernel:
        assert s.dump() != base, "setup_endpoint made no kernel object"
    assert s.driver.teardown_endpoint(s.net, made) == []
    same(s.dump(), base, "teardown_endpoint left something")
    assert s.driver.teardown_endpoint(s.net, made) == []
    assert s.driver.teardown_network(s.net) == []
    same(s.dump(), before, "teardown_network left something")


def check_endpoint_sees_a_deleted_interface(s: DriverSubject) -> None:
    if not s.kernel:
        raise Skip("makes no interface that could be deleted")
    s.driver.ensure_network(s.net)
    base = s.dump()
    made = s.driver.setup_endpoint(s.net, s.endpoint())
    assert s.driver.check_endpoint(s.net, made).problems == []
    s.delete_container_interface(made.ifname)
    problems = s.driver.check_endpoint(s.net, made).problems
    assert problems and any(made.ifname in p for p in problems), problems
    assert s.driver.teardown_endpoint(s.net, made) == []
    same(s.dump(), base, "teardown after the interface was deleted left something")


def teardown_of_a_missing_endpoint_is_not_an_error(s: DriverSubject) -> None:
    s.driver.ensure_network(s.net)
    base = s.dump()
    for ep in (
        s.endpoint("never"),
        s.endpoint("gone", netns=NOWHERE),
        s.endpoint("nons", netns=""),
    ):
        assert s.driver.teardown_endpoint(s.net, ep) == [], ep.container_id
    assert s.driver.teardown_endpoint(network("drv-never"), s.endpoint("x")) == []
    same(s.dump(), base, "tearing down what was not there changed the kernel")


def a_failed_setup_leaves_nothing(s: DriverSubject) -> None:
    if not s.kernel:
        raise Skip("touches no namespace, so none can be missing")
    s.driver.ensure_network(s.net)
    base = s.dump()
    try:
        s.driver.setup_endpoint(s.net, s.endpoint(netns=NOWHERE))
    except NetdError:
        pass
    else:
        raise AssertionError("setup_endpoint into a namespace that does not exist succeeded")
    same(s.dump(), base, "a failed setup_endpoint left something")


# --- what the driver reports: capabilities, names, inventory, CNI interfaces ------------------


def declares_its_capabilities(s: DriverSubject) -> None:
    caps = s.driver.capabilities
    assert isinstance(caps, Capabilities), caps
    if not caps.plumbs:  # nothing of its own in the kernel: nothing for the firewall or DNS
        assert not (caps.host_interface or caps.firewall or caps.port_mappings), caps
    assert isinstance(s.driver.name, str) and s.driver.name
    missing = s.driver.available()
    if missing:
        raise Skip(f"this kernel cannot run it: {missing}")


def names_are_deterministic(s: DriverSubject) -> None:
    caps = s.driver.capabilities
    host_if = s.driver.endpoint_host_ifname(s.net, "c1", "eth0")
    assert host_if == s.driver.endpoint_host_ifname(s.net, "c1", "eth0")
    assert bool(host_if) == caps.host_interface, (host_if, caps)
    if host_if:  # one per endpoint
        assert host_if != s.driver.endpoint_host_ifname(s.net, "c2", "eth0")
    bridge = s.driver.host_interface(s.net)
    assert bridge == s.driver.host_interface(s.net)
    assert bool(bridge) == caps.firewall, (bridge, caps)


def inventory_before_equals_after(s: DriverSubject) -> None:
    empty = s.driver.inventory()
    s.driver.ensure_network(s.net)
    with_net = s.driver.inventory()
    assert s.driver.network_tags(s.net) <= with_net.keys(), (s.driver.network_tags(s.net), with_net)
    if s.plumbs:
        made = s.driver.setup_endpoint(s.net, s.endpoint())
        tags = s.driver.endpoint_tags(s.net, made)
        now = s.driver.inventory()
        assert tags <= now.keys(), (tags, now)
        assert now.keys() - with_net.keys() == tags
        assert s.driver.teardown_endpoint(s.net, made) == []
    assert s.driver.inventory() == with_net
    assert s.driver.teardown_network(s.net) == []
    assert s.driver.inventory() == empty


def remove_object_deletes_only_its_own(s: DriverSubject) -> None:
    """An endpoint's host-side object, or (a driver with none: macvlan) the network's own."""
    if not (s.kernel and s.plumbs):
        raise Skip("keeps no kernel object to remove")
    s.driver.ensure_network(s.net)
    made = s.driver.setup_endpoint(s.net, s.endpoint())
    inventory = s.driver.inventory()
    tags = s.driver.endpoint_tags(s.net, made) or s.driver.network_tags(s.net)
    if not tags:
        assert s.driver.teardown_endpoint(s.net, made) == []
        assert s.driver.teardown_network(s.net) == []
        raise Skip("owns no host-side object here (the network hangs on the user's link)")
    tag = sorted(tags)[0]
    assert s.driver.remove_object(inventory[tag]) is True
    assert tag not in s.driver.inventory()
    assert s.driver.check_endpoint(s.net, made).problems
    assert s.driver.remove_object(inventory[tag]) is False
    assert s.driver.remove_object("lo") is False, "lo is not the driver's"
    assert s.driver.teardown_endpoint(s.net, made) == []
    assert s.driver.teardown_network(s.net) == []


def cni_interfaces_name_the_container_interface(s: DriverSubject) -> None:
    if not s.plumbs:
        raise Skip("makes no interface for a CNI result")
    s.driver.ensure_network(s.net)
    made = s.driver.setup_endpoint(s.net, s.endpoint())
    try:
        found = s.driver.cni_interfaces(s.net, made)
        [mine] = [i for i in found if i.container]
        assert (mine.name, mine.sandbox, mine.mac) == (made.ifname, made.netns, made.mac), mine
        assert all(not i.sandbox for i in found if not i.container), "host side has no sandbox"
        assert found[-1] == mine, "host side first"
    finally:
        s.driver.teardown_endpoint(s.net, made)
        s.driver.teardown_network(s.net)


def describe_is_read_only(s: DriverSubject) -> None:
    s.driver.ensure_network(s.net)
    made = s.driver.setup_endpoint(s.net, s.endpoint()) if s.plumbs else s.endpoint()
    before = s.dump()
    described = s.driver.describe(s.net, [made])
    assert isinstance(described, dict)
    json.dumps(described)  # inspect serialises it
    same(s.dump(), before, "describe changed the kernel")
    s.driver.teardown_endpoint(s.net, made)
    s.driver.teardown_network(s.net)


SUITE = Suite(
    "driver",
    [
        Impl(
            "bridge",
            _bridge,
            kernel=True,
        ),
        Impl("null", _null),
        Impl("ipam", _ipam),
        Impl("macvlan", _macvlan, kernel=True),
        Impl("macvlan-parent", _macvlan_parent, kernel=True),
        Impl("ipvlan", _ipvlan, kernel=True),
        Impl("ptp", _ptp, kernel=True),
        Impl("overlay", _overlay, kernel=True),
    ],
    {
        f.__name__: f
        for f in (
            validate_options_refuses_an_unknown_key,
            validate_options_is_stable,
            ensure_and_teardown_network_are_idempotent,
            setup_then_teardown_leaves_nothing,
            check_endpoint_sees_a_deleted_interface,
            teardown_of_a_missing_endpoint_is_not_an_error,
            a_failed_setup_leaves_nothing,
            declares_its_capabilities,
            names_are_deterministic,
            inventory_before_equals_after,
            remove_object_deletes_only_its_own,
            cni_interfaces_name_the_container_interface,
            describe_is_read_only,
        )
    },
)
