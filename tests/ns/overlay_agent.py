"""Run OverlayDriver operations inside a sandbox host namespace, for the overlay tests.

As :mod:`bridge_agent` (same steps, same JSON in and out, one process per call), with the
driver built on the node address given in ``OVERLAY_NODE_ADDRESS`` and three more steps:
``sync_remote`` (``"peers": [{"ip", "mac", "vtep"}, ...]``, optional ``"changes_only"``),
``describe``, and ``ip``
(``"args": [...]``: runs ``ip`` in the host namespace between two driver calls of one process,
to break something behind the driver's back while it remembers its peers).

Also importable: :func:`run_overlay_agent` and :func:`overlay_network`.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

from bridge_agent import PYTHON, _step, network

HERE = os.path.dirname(os.path.abspath(__file__))


def overlay_network(
    net_id: str, subnets: list[tuple[str, str | None]], vni: int, **options: str
) -> dict[str, Any]:
    """An overlay Network record as JSON (the same record on every node)."""
    record = network(net_id, subnets, options={"vni": str(vni), **options})
    record["driver"] = "overlay"
    return record


def run_overlay_agent(
    host_ns: str,
    node_address: str,
    steps: list[dict[str, Any]],
    timeout: float = 60,
    faults: str = "",
) -> list[dict[str, Any]]:
    """Run ``steps`` on an OverlayDriver inside ``host_ns`` (``faults``: NETD_FAULTS); the
    per-step results."""
    env = dict(os.environ, OVERLAY_NODE_ADDRESS=node_address, NETD_FAULTS=faults)
    proc = subprocess.run(
        ["ip", "netns", "exec", host_ns, PYTHON, os.path.join(HERE, "overlay_agent.py")],
        input=json.dumps(steps),
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"overlay agent exited {proc.returncode}: {proc.stderr}")
    results: list[dict[str, Any]] = json.loads(proc.stdout)
    return results


def _overlay_step(driver: Any, step: dict[str, Any]) -> Any:
    import ipaddress

    from netd.drivers.overlay import RemotePeer
    from netd.model import endpoint_from_json, network_from_json

    if step["op"] == "sync_remote":
        peers = [
            RemotePeer(ipaddress.ip_address(p["ip"]), p["mac"], ipaddress.IPv4Address(p["vtep"]))
            for p in step["peers"]
        ]
        changes_only = bool(step.get("changes_only", False))
        driver.sync_remote(network_from_json(step["network"]), peers, changes_only=changes_only)
        return None
    if step["op"] == "ip":
        return subprocess.run(["ip", *step["args"]], check=True, capture_output=True).returncode
    if step["op"] == "describe":
        eps = [endpoint_from_json(e) for e in step.get("endpoints", [])]
        return driver.describe(network_from_json(step["network"]), eps)
    return _step(driver, step)


def main() -> None:
    """Read steps from stdin, run them on one OverlayDriver, print the results."""
    from netd.drivers.overlay import OverlayDriver

    steps = json.load(sys.stdin)
    driver = OverlayDriver(node_address=os.environ["OVERLAY_NODE_ADDRESS"])
    results: list[dict[str, Any]] = []
    for step in steps:
        try:
            results.append({"ok": True, "result": _overlay_step(driver, step)})
        except Exception as exc:
            error = {"type": type(exc).__name__, "message": str(exc)}
            results.append({"ok": False, "error": error})
    driver.close()
    json.dump(results, sys.stdout)


if __name__ == "__main__":
    main()
