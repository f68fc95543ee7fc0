"""Run MacvlanDriver / IpvlanDriver operations inside a sandbox host namespace.

As :mod:`bridge_agent` (whose record builders the macvlan tests share): started with
``ip netns exec <host> python vlan_agent.py KIND``; stdin a JSON list of steps, stdout one
``{"ok": ..., "result"|"error": ...}`` per step, every step run even after a failure.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

from bridge_agent import PYTHON
from bridge_agent import endpoint as _endpoint
from bridge_agent import network as _network

HERE = os.path.dirname(os.path.abspath(__file__))


def network(kind: str, net_id: str, subnets: list[tuple[str, str | None]], **kw: Any) -> Any:
    """A ``kind`` Network record as JSON (see :func:`bridge_agent.network`)."""
    return {**_network(net_id, subnets, **kw), "driver": kind}


def endpoint(net_id: str, container_id: str, netns: str, addresses: list[str], **kw: Any) -> Any:
    """An Endpoint record as JSON with no host-side interface."""
    return _endpoint(net_id, container_id, netns, addresses, host_ifname="", **kw)


def run_agent(
    kind: str, host_ns: str, steps: list[dict[str, Any]], faults: str = "", timeout: float = 60
) -> list[dict[str, Any]]:
    """Run ``steps`` on a ``kind`` driver inside namespace ``host_ns``; per-step results."""
    proc = subprocess.run(
        ["ip", "netns", "exec", host_ns, PYTHON, os.path.join(HERE, "vlan_agent.py"), kind],
        input=json.dumps(steps),
        capture_output=True,
        text=True,
        env=dict(os.environ, NETD_FAULTS=faults),
        timeout=timeout,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"vlan agent exited {proc.returncode}: {proc.stderr}")
    results: list[dict[str, Any]] = json.loads(proc.stdout)
    return results


def ok(results: list[dict[str, Any]]) -> list[Any]:
    """The results of steps that must all have succeeded (AssertionError naming a failure)."""
    for r in results:
        assert r["ok"], results
    return [r["result"] for r in results]


def _step(driver: Any, step: dict[str, Any]) -> Any:
    from netd.kernel.features import missing_link_kind
    from netd.model import endpoint_from_json, network_from_json, to_json

    op = step["op"]
    net = network_from_json(step["network"]) if "network" in step else None
    ep = endpoint_from_json(step["endpoint"]) if "endpoint" in step else None
    simple = {
        "available": lambda: driver.available(),
        "missing_link_kind": lambda: missing_link_kind(step["kind"]),
        "inventory": lambda: driver.inventory(),
        "validate_options": lambda: driver.validate_options(step["options"]),
        "ensure_network": lambda: driver.ensure_network(net),
        "teardown_network": lambda: driver.teardown_network(net),
        "network_tags": lambda: sorted(driver.network_tags(net)),
        "setup_endpoint": lambda: to_json(driver.setup_endpoint(net, ep)),
        "teardown_endpoint": lambda: driver.teardown_endpoint(net, ep),
        "check_endpoint": lambda: driver.check_endpoint(net, ep).problems,
        "remove_object": lambda: driver.remove_object(step["ifname"]),
        "describe": lambda: driver.describe(net, [ep] if ep else []),
        "cni_interfaces": lambda: [i.to_json() for i in driver.cni_interfaces(net, ep)],
    }
    if op not in simple:
        raise ValueError(f"unknown op {op!r}")
    return simple[op]()


def main() -> None:
    """Read steps from stdin, run them on one driver of the kind in argv[1], print results."""
    from netd.drivers import get_driver

    steps = json.load(sys.stdin)
    driver = get_driver(sys.argv[1])
    results: list[dict[str, Any]] = []
    for step in steps:
        try:
            results.append({"ok": True, "result": _step(driver, step)})
        except Exception as exc:
            error = {"type": type(exc).__name__, "message": str(exc)}
            results.append({"ok": False, "error": error})
    driver.close()
    json.dump(results, sys.stdout)


if __name__ == "__main__":
    sys.path.insert(0, HERE)
    main()
