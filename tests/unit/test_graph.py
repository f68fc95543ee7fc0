"""The topology graph: DOT built from API documents, rendered to SVG by the real Graphviz."""

from __future__ import annotations

import shutil
import xml.etree.ElementTree as ET
from typing import Any

import pytest
from click.testing import CliRunner

from netd.errors import InvalidInput
from netd.graph import build_dot, quote, render

SVG = "{http://www.w3.org/2000/svg}"


def net(name: str, nid: str, subnet: str, gw: str, **kw: Any) -> dict[str, Any]:
    return {
        "id": nid * 8,
        "name": name,
        "bridge": f"nd-{(nid * 8)[:12]}",
        "internal": False,
        "subnets": [{"subnet": subnet, "gateway": gw}],
        "endpoints": [],
        **kw,
    }


def ep(cid: str, addr: str, ports: list[dict[str, Any]] | None = None, **kw: Any) -> dict[str, Any]:
    return {
        "container_id": cid,
        "ifname": "eth0",
        "host_ifname": f"nv{cid}",
        "addresses": [addr],
        "port_mappings": ports or [],
        **kw,
    }


NETWORKS = [
    net(
        "frontend",
        "a1b2",
        "10.90.0.0/24",
        "10.90.0.1",
        endpoints=[
            ep(
                "c1",
                "10.90.0.2/24",
                [{"host_port": 8080, "container_port": 80, "protocol": "tcp", "host_ip": None}],
                name="web",
            ),
            ep("c2", "10.90.0.3/24", name='we"ird\\name'),
        ],
    ),
    net(
        "backend-db",
        "c3d4",
        "10.91.0.0/24",
        "10.91.0.1",
        internal=True,
        endpoints=[ep("c3", "10.91.0.2/24", name="db")],
    ),
]


def svg_texts(svg: bytes) -> tuple[ET.Element, list[str]]:
    root = ET.fromstring(svg)
    return root, ["".join(t.itertext()) for t in root.iter(f"{SVG}text")]


@pytest.mark.skipif(shutil.which("dot") is None, reason="Graphviz dot not installed")
def test_svg_is_valid_xml_with_every_network_and_endpoint() -> None:
    root, texts = svg_texts(render(build_dot(NETWORKS), "svg"))
    assert root.tag == f"{SVG}svg"
    joined = "\n".join(texts)
    for needle in (
        "network frontend",
        "network backend-db",
        "bridge nd-a1b2a1b2a1b2",
        "10.90.0.0/24 gw 10.90.0.1",
        "10.90.0.2/24",
        "internal (no outside access)",
        "8080 → 80/tcp",
        'we"ird\\name',  # escaping survived the round trip
    ):
        assert needle in joined, (needle, texts)


def test_dot_marks_internal_and_links_host() -> None:
    dot = build_dot(NETWORKS)
    internal_cluster = dot.split('subgraph "cluster_c3d4c3d4c3d4"')[1].split("}")[0]
    assert 'color="red3"' in internal_cluster and "dashed" in internal_cluster
    assert 'host -> "br_a1b2a1b2a1b2"' in dot  # routed network reaches the host
    assert 'host -> "br_c3d4c3d4c3d4"' not in dot  # internal network does not
    assert 'host -> "ep_a1b2a1b2a1b2_c1_eth0" [label="8080 → 80/tcp"' in dot


def test_empty_topology_still_renders() -> None:
    assert "no networks" in build_dot([])


def test_quote_escapes_quotes_backslashes_newlines() -> None:
    assert quote('a"b\\c\nd') == '"a\\"b\\\\c\\nd"'


def test_unknown_format_is_invalid_input() -> None:
    with pytest.raises(InvalidInput, match="format"):
        render("digraph {}", "jpeg2000")


def test_dot_format_needs_no_graphviz() -> None:
    assert render("digraph {}\n", "dot") == b"digraph {}\n"


@pytest.mark.skipif(shutil.which("dot") is None, reason="Graphviz dot not installed")
def test_cli_graph_fetches_every_network(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    from netd.cli.base import Ctx
    from netd.cli.main import cli

    calls = []
    by_name = {n["name"]: n for n in NETWORKS}

    def fake_call(self: Ctx, method: str, path: str, body: Any = None) -> Any:
        calls.append((method, path))
        if path == "/v1/networks":
            return [{k: v for k, v in n.items() if k != "endpoints"} for n in NETWORKS]
        return by_name[path.rsplit("/", 1)[1]]

    monkeypatch.setattr(Ctx, "call", fake_call)
    out = tmp_path / "g.svg"
    result = CliRunner().invoke(cli, ["graph", "--format", "svg", "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert calls == [
        ("GET", "/v1/networks"),
        ("GET", "/v1/networks/frontend"),
        ("GET", "/v1/networks/backend-db"),
    ]
    _, texts = svg_texts(out.read_bytes())
    assert "network frontend" in texts
    result = CliRunner().invoke(cli, ["graph", "--format", "dot"])
    assert result.exit_code == 0 and result.output.startswith("digraph netd {")


def test_macvlan_network_shows_its_parent_and_no_host_link() -> None:
    doc = net("lan", "m1", "192.168.1.0/24", "192.168.1.1", bridge="", driver="macvlan",
              options={"parent": "eth0"})  # fmt: skip
    doc["endpoints"] = [ep("c1", "192.168.1.10/24", host_ifname="")]
    dot = build_dot([doc])
    assert "macvlan on eth0" in dot and "bridge " not in dot
    assert "192.168.1.1 (upstream router)" in dot
    assert "eth0 (in the container only)" in dot
    assert "host -> " not in dot  # the host cannot reach macvlan containers
    inside = net("iso", "m2", "10.5.0.0/24", "10.5.0.1", bridge="", driver="ipvlan",
                 internal=True, options={"parent": "eth0"})  # fmt: skip
    assert "ipvlan (internal)" in build_dot([inside])
