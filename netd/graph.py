"""`netd graph`: the topology as a Graphviz picture (networks, bridges, endpoints, ports).

:func:`build_dot` is pure: it turns the API's network documents (``GET /v1/networks/{name}``,
endpoints included) into DOT text. Each network is a cluster labelled with its name, bridge and
subnets; its bridge is a node, each endpoint a node with its addresses, linked to the bridge. A
network without a host interface (macvlan, ipvlan) shows its parent link instead and no link to the
host, which cannot reach those containers. Internal networks are drawn dashed and red and get no
link to the host. Published ports are edges from the ``host`` node to the endpoint, labelled
``[ip:]port → port/proto``. :func:`render` runs Graphviz's ``dot`` for SVG/PNG.

What it does not do: talk to the daemon (the CLI fetches the documents) or lay anything out
itself (Graphviz does).
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterable
from typing import Any

from .errors import InvalidInput, NetdError

FORMATS = ("svg", "png", "dot")
INTERNAL_COLOR = "red3"
PORT_COLOR = "blue3"


def quote(text: str) -> str:
    """A DOT double-quoted string; newlines become centred line breaks."""
    escaped = text.replace("\\", "\\\\").replace('"', '\\"')
    return '"' + escaped.replace("\n", "\\n") + '"'


def _attrs(**kw: str) -> str:
    return "[" + ", ".join(f"{k}={quote(v)}" for k, v in kw.items()) + "]"


def _subnet_line(subnet: dict[str, Any]) -> str:
    gw = subnet.get("gateway")
    return f"{subnet.get('subnet')}" + (f" gw {gw}" if gw else "")


def _endpoint_id(net_id: str, ep: dict[str, Any]) -> str:
    return f"ep_{net_id[:12]}_{ep.get('container_id')}_{ep.get('ifname')}"


def _endpoint_label(ep: dict[str, Any]) -> str:
    cid = str(ep.get("container_id", ""))
    title = ep.get("name") or cid[:12]
    host_side = ep.get("host_ifname") or "in the container only"
    lines = [str(title), f"{ep.get('ifname')} ({host_side})"]
    lines += [str(a) for a in ep.get("addresses", [])]
    return "\n".join(lines)


def _parent_line(net: dict[str, Any]) -> str:
    """``macvlan on eth0``; an internal one names no parent (netd's own, going nowhere)."""
    options = net.get("options") or {}
    where = options.get("parent") if not net.get("internal") else None
    return f"{net.get('driver')} on {where}" if where else f"{net.get('driver')} (internal)"


def _port_label(port: dict[str, Any]) -> str:
    host_ip = port.get("host_ip")
    ip = f"[{host_ip}]" if host_ip and ":" in str(host_ip) else host_ip
    src = f"{ip}:{port.get('host_port')}" if ip else str(port.get("host_port"))
    return f"{src} → {port.get('container_port')}/{port.get('protocol', 'tcp')}"


def _network_lines(net: dict[str, Any]) -> tuple[list[str], list[str]]:
    """The cluster of one network, and the edges from the host into it."""
    nid = str(net.get("id", net.get("name")))
    internal = bool(net.get("internal"))
    bridge = str(net.get("bridge", ""))
    # No host interface (macvlan, ipvlan): the containers hang on a parent link and the host
    # has no path to them; the gateway is the upstream router's.
    parent = "" if bridge else _parent_line(net)
    label = [f"network {net.get('name')}", parent or f"bridge {bridge}"]
    label += [_subnet_line(s) for s in net.get("subnets", [])]
    if internal:
        label.append("internal (no outside access)")
    style = {"style": "dashed,rounded", "color": INTERNAL_COLOR} if internal else {}
    style.setdefault("style", "rounded")
    body = [f"  subgraph {quote('cluster_' + nid[:12])} {{"]
    body.append(f"    graph {_attrs(label=chr(10).join(label), **style)};")
    br = f"br_{nid[:12]}"
    gateways = [str(s["gateway"]) for s in net.get("subnets", []) if s.get("gateway")]
    br_style = {"color": INTERNAL_COLOR, "style": "dashed"} if internal else {}
    if parent:
        gateways = [f"{g} (upstream router)" for g in gateways]
    br_label = "\n".join([parent or bridge, *gateways])
    body.append(f"    {quote(br)} {_attrs(label=br_label, shape='oval', **br_style)};")
    host_edges = []
    if not internal and not parent:
        host_edges.append(f"  host -> {quote(br)} {_attrs(dir='none', style='dotted')};")
    for ep in net.get("endpoints") or []:
        eid = _endpoint_id(nid, ep)
        body.append(f"    {quote(eid)} {_attrs(label=_endpoint_label(ep))};")
        body.append(f"    {quote(br)} -> {quote(eid)} {_attrs(dir='none')};")
        for port in ep.get("port_mappings") or []:
            host_edges.append(
                f"  host -> {quote(eid)} "
                f"{_attrs(label=_port_label(port), color=PORT_COLOR, fontcolor=PORT_COLOR)};"
            )
    body.append("  }")
    return body, host_edges


def build_dot(networks: Iterable[dict[str, Any]]) -> str:
    """DOT text for the given network documents (as ``GET /v1/networks/{name}`` returns them)."""
    nets = sorted(networks, key=lambda n: str(n.get("name")))
    lines = [
        "digraph netd {",
        '  graph [rankdir="LR", fontname="Helvetica", labeljust="l", nodesep="0.3"];',
        '  node [shape="box", style="rounded", fontname="Helvetica", fontsize="10"];',
        '  edge [fontname="Helvetica", fontsize="9"];',
        f"  host {_attrs(label='host', shape='box3d')};",
    ]
    edges: list[str] = []
    for net in nets:
        body, host_edges = _network_lines(net)
        lines += body
        edges += host_edges
    if not nets:
        lines.append(f"  empty {_attrs(label='no networks', shape='plaintext')};")
    lines += edges
    lines.append("}")
    return "\n".join(lines) + "\n"


def render(dot: str, fmt: str, *, timeout: float = 60) -> bytes:
    """``dot`` text as ``fmt`` (svg, png or dot) via Graphviz's ``dot`` binary."""
    if fmt not in FORMATS:
        raise InvalidInput("format", fmt, f"must be one of {', '.join(FORMATS)}")
    if fmt == "dot":
        return dot.encode()
    try:
        proc = subprocess.run(
            ["dot", f"-T{fmt}"], input=dot.encode(), capture_output=True, timeout=timeout
        )
    except FileNotFoundError as exc:
        raise NetdError(
            f"rendering the graph as {fmt}: Graphviz `dot` is not installed "
            "(apt-get install graphviz, or use --format dot)"
        ) from exc
    except subprocess.TimeoutExpired as exc:
        raise NetdError(f"rendering the graph as {fmt}: dot took over {timeout:.0f}s") from exc
    if proc.returncode != 0:
        raise NetdError(
            f"rendering the graph as {fmt}: dot exited {proc.returncode}: "
            f"{proc.stderr.decode(errors='replace').strip()}"
        )
    return proc.stdout
