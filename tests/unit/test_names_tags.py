"""The ifalias tags netd puts on its links: one format, written and read by netd.names only.

The strings are pinned literally: kernels carry tags written by older netd versions, so a
change of format would orphan every existing bridge and veth.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from netd.names import (
    LINK_KINDS,
    Tag,
    bridge_tag,
    driver_tag_prefix,
    endpoint_tag,
    endpoint_tag_prefix,
    parse_tag,
    teardown_rank,
)
from netd.reconcile.plan import Expected, plan_orphans

NET_ID = "abcdef0123456789" * 4
ROOT = Path(__file__).resolve().parents[2] / "netd"


def test_the_strings_the_kernel_holds_do_not_change() -> None:
    assert bridge_tag(NET_ID) == f"netd:{NET_ID}"
    assert endpoint_tag(NET_ID, "c1", "eth0") == "netd:abcdef012345:eth0:c1"
    assert Tag.for_link("vxlan", NET_ID).text == f"netd:vxlan:{NET_ID}"
    assert Tag.for_parent("macvlan", NET_ID).text == f"netd:parent:macvlan:{NET_ID}"
    assert Tag.for_vlan_parent("ipvlan", "eth0.10").text == "netd:vlan:ipvlan:eth0.10"
    assert Tag.for_external("ptp", NET_ID).text == "netd:ext:ptp:abcdef012345"
    assert Tag.for_external("ptp", NET_ID, "c1", "eth0").text == "netd:ext:ptp:abcdef012345:eth0:c1"
    assert driver_tag_prefix("ext", "ptp") == "netd:ext:ptp:"
    assert endpoint_tag_prefix(NET_ID) == "netd:abcdef012345:"
    assert endpoint_tag(NET_ID, "c1", "eth0").startswith(endpoint_tag_prefix(NET_ID))


def test_a_long_container_id_is_cut_to_ifaliasz() -> None:
    cid = "x" * 256
    tag = endpoint_tag(NET_ID, cid, "eth0")
    assert len(tag) == 255 and tag == f"netd:abcdef012345:eth0:{cid}"[:255]
    parsed = parse_tag(tag)
    assert parsed == Tag.for_endpoint(NET_ID, cid, "eth0")
    assert parsed is not None and cid.startswith(parsed.container_id)
    ext = Tag.for_external("ptp", NET_ID, cid, "eth0")
    assert len(ext.text) == 255 and parse_tag(ext.text) == ext


def test_every_drivers_tag_says_whose_it_is() -> None:
    # The driver is in the tag, so each driver's inventory lists only its own links.
    assert parse_tag(f"netd:parent:ipvlan:{NET_ID}") == Tag("parent", NET_ID, driver="ipvlan")
    assert parse_tag("netd:vlan:macvlan:eth0.10") == Tag("vlan", ifname="eth0.10", driver="macvlan")
    assert parse_tag("netd:ext:ptp:abcdef012345") == Tag("ext", "abcdef012345", driver="ptp")
    ext = parse_tag("netd:ext:ptp:abcdef012345:eth0:c1:x")
    assert ext == Tag("ext", "abcdef012345", "eth0", "c1:x", "ptp")
    assert ext is not None and ext.of_endpoint
    assert not Tag.for_external("ptp", NET_ID).of_endpoint


def test_parse_reads_every_kind() -> None:
    assert parse_tag(f"netd:{NET_ID}") == Tag("network", NET_ID)
    assert parse_tag("netd:abcdef012345:eth0:c1") == Tag("endpoint", "abcdef012345", "eth0", "c1")
    assert parse_tag(f"netd:vxlan:{NET_ID}") == Tag("vxlan", NET_ID)
    # The container id is last and kept whole.
    assert parse_tag("netd:abcdef012345:eth0:c1:x") == Tag(
        "endpoint", "abcdef012345", "eth0", "c1:x"
    )


@pytest.mark.parametrize(
    "text",
    [
        "",
        "docker0",
        "netd",
        "netd:",
        "netd:a:b",
        "netd::eth0:c1",
        "netd:a::c1",
        "netd:a:eth0:",
        "netd:parent:",
        f"netd:parent:{NET_ID}",
        "netd:parent::x",
        "netd:vlan:macvlan",
        "netd:vlan:macvlan:eth0.10:x",
        "netd:vxlan:macvlan:x",
        "netd:ext:ptp",
        "netd:ext:ptp:abcdef012345:eth0",
        "netd:ext:ptp:abcdef012345:eth0:",
        "netd:ext::abcdef012345",
        "netd-parent:macvlan:x",
        "netd-ext:ptp:abcdef012345",
        "netd:bogus:x",
        "NETD:abc",
    ],
)
def test_parse_refuses_what_netd_never_writes(text: str) -> None:
    assert parse_tag(text) is None


@pytest.mark.parametrize(
    "tag",
    [
        Tag.for_network(NET_ID),
        Tag.for_endpoint(NET_ID, "c1", "eth0"),
        Tag.for_endpoint(NET_ID, "a.b-c_d", "net1"),
        Tag.for_link("vxlan", NET_ID),
        Tag.for_parent("macvlan", NET_ID),
        Tag.for_vlan_parent("ipvlan", "eth0.10"),
        Tag.for_external("ptp", NET_ID),
        Tag.for_external("ptp", NET_ID, "c1", "eth0"),
    ],
)
def test_round_trip(tag: Tag) -> None:
    assert parse_tag(tag.text) == tag and str(tag) == tag.text


def test_link_kinds_cannot_be_read_as_a_network_id() -> None:
    assert all(set(kind) - set("0123456789abcdef") for kind in LINK_KINDS)


def test_orphans_are_removed_endpoints_first() -> None:
    tagged = {
        bridge_tag(NET_ID): "nd-abcdef012345",
        endpoint_tag(NET_ID, "c1", "eth0"): "nv1",
        Tag.for_vlan_parent("macvlan", "eth0.10").text: "eth0.10",
        "netd:junk:x": "weird0",
        Tag.for_external("ptp", NET_ID, "c1", "eth0").text: "nx1",
    }
    order = [name for name, _ in plan_orphans(tagged, Expected({}, frozenset()))]
    assert order == ["nv1", "nx1", "nd-abcdef012345", "eth0.10", "weird0"]
    assert teardown_rank("netd:a:eth0:c1") < teardown_rank("netd:a") < teardown_rank("x")


def _tag_literals(path: Path) -> list[int]:
    """Lines of ``path`` holding a string constant that starts with ``netd:`` (a tag written
    or read by hand) outside docstrings."""
    tree = ast.parse(path.read_text())
    docstrings = {
        id(node.body[0].value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
        and node.body
        and isinstance(node.body[0], ast.Expr)
        and isinstance(node.body[0].value, ast.Constant)
    }
    return [
        node.lineno
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant)
        and isinstance(node.value, str)
        and node.value.startswith("netd:")
        and not node.value[5:6].isspace()  # "netd: daemon not reachable" is prose
        and id(node) not in docstrings
    ]


def test_only_names_py_spells_the_tag_prefix() -> None:
    # The firewall's owner comments (netd.firewall) are another namespace: nft/iptables
    # comments, never link tags.
    found = {
        str(p.relative_to(ROOT.parent)): lines
        for p in sorted(ROOT.rglob("*.py"))
        if p.name != "names.py" and "firewall" not in p.parts
        if (lines := _tag_literals(p))
    }
    assert not found, f"tags spelled outside netd/names.py: {found}"
