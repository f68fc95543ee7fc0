"""doctor's driver check: which drivers this kernel runs, from the drivers' own answers."""

from __future__ import annotations

from netd.doctor import Host, check_drivers

IPVLAN = "this kernel has no ipvlan links (CONFIG_IPVLAN)"
VLAN = "this kernel has no 802.1Q VLAN links (CONFIG_VLAN_8021Q)"


def host(**support: str) -> Host:
    return Host(drivers=lambda: dict(support))


def test_all_drivers() -> None:
    found = check_drivers(host(bridge="", macvlan="", ipvlan="", vlan=""))
    assert (found.status, found.detail, found.fix) == (
        "ok", "this kernel runs drivers bridge, ipvlan, macvlan", "",
    )  # fmt: skip


def test_missing_ones_are_named_with_their_kernel_feature() -> None:
    found = check_drivers(host(bridge="", macvlan="", ipvlan=IPVLAN, vlan=VLAN))
    assert found.status == "ok"
    assert found.detail == (
        f"this kernel runs drivers bridge, macvlan; not ipvlan ({IPVLAN}); "
        f"macvlan/ipvlan parent=IF.VID cannot be created ({VLAN})"
    )
    assert found.fix == "load or build the kernel modules named, then restart netd"


def test_without_bridge_netd_cannot_work() -> None:
    found = check_drivers(host(bridge="this kernel has no bridge links (CONFIG_BRIDGE)"))
    assert found.status == "fail"


def test_a_probe_that_fails_is_a_warning() -> None:
    def broken() -> dict[str, str]:
        raise OSError("no netlink")

    found = check_drivers(Host(drivers=broken))
    assert (found.status, found.detail) == ("warn", "probing the kernel's link kinds failed: "
                                            "no netlink")  # fmt: skip
