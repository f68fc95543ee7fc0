"""Shared by the DEL-spool and reaper namespace tests: the CNI config, and independent readers
of what netd published (nftables elements with ``nft -j``, DNS answers with ``dig``)."""

from __future__ import annotations

import json
import re
from typing import Any

from netns_fixtures import Namespace

SUBNET, GATEWAY = "10.152.0.0/24", "10.152.0.1"
CONF: dict[str, Any] = {
    "cniVersion": "1.0.0",
    "name": "spool",
    "type": "netd",
    "ipam": {"ranges": [[{"subnet": SUBNET}]]},
    "capabilities": {"portMappings": True},
}


def port_conf(host_port: int) -> dict[str, Any]:
    mapping = {"hostPort": host_port, "containerPort": 80, "protocol": "tcp"}
    return {**CONF, "runtimeConfig": {"portMappings": [mapping]}}


def nft_elements(host: Namespace) -> list[str]:
    """Every set and map element of netd's nftables table, as JSON text (read with nft -j)."""
    listing = json.loads(host.run("nft", "-j", "list", "table", "inet", "netd"))
    out = []
    for item in listing["nftables"]:
        for kind in ("set", "map"):
            for elem in item.get(kind, {}).get("elem", []):
                out.append(json.dumps(elem))
    return out


def publishes(host: Namespace, port: int) -> bool:
    return any(re.search(rf"\b{port}\b", e) for e in nft_elements(host))


def dig(probe: Namespace, name: str) -> list[str]:
    return probe.run("dig", "+short", "+time=2", "+tries=1", f"@{GATEWAY}", name).split()


def add_pod(rt: Any, ns: Namespace, conf: dict[str, Any], name: str, args: str = "") -> Any:
    """CNI ADD of ``ns`` as a pod named ``name`` (container id: the namespace's name)."""
    return rt.exec(
        "netd",
        "ADD",
        conf,
        container_id=ns.name,
        netns=ns.path,
        args=f"IgnoreUnknown=1;K8S_POD_NAME={name}{args}",
    )
