"""Run BridgeDriver operations inside a sandbox host namespace, for the bridge tests.

The test process lives in the machine's initial namespace and must not create links there, so
the driver runs in this script, started with ``ip netns exec <host> python bridge_agent.py``.
stdin: a JSON list of steps ``{"op": ..., "network": {...}, "endpoint": {...}}``; stdout: a JSON
list with one ``{"ok": true, "result": ...}`` or ``{"ok": false, "error": {...}}`` per step.
Every step runs even after a failure, in one process (so per-thread sockets are reused).

Also importable: :func:`run_agent` and the record builders the tests share.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
PYTHON = os.path.join(os.path.dirname(os.path.dirname(HERE)), ".venv", "bin", "python")


def network(
    net_id: str,
    subnets: list[tuple[str, str | None]],
    *,
    internal: bool = False,
    options: dict[str, str] | None = None,
) -> dict[str, Any]:
    """A Network record as JSON: ``subnets`` is ``[(cidr, gateway), ...]``."""
    return {
        "id": net_id,
        "name": "n-" + net_id[:8],
        "driver": "bridge",
        "subnets": [{"subnet": s, "gateway": g} for s, g in subnets],
        "ipv6": any(":" in s for s, _ in subnets),
        "internal": internal,
        "options": options or {},
    }


def endpoint(
    net_id: str, container_id: str, netns: str, addresses: list[str], **extra: Any
) -> dict[str, Any]:
    """An Endpoint record as JSON, host veth named the way the service names it."""
    from netd.names import host_veth_name

    ifname = extra.pop("ifname", "eth0")
    return {
        "network_id": net_id,
        "container_id": container_id,
        "ifname": ifname,
        "netns": netns,
        "host_ifname": host_veth_name(net_id, container_id, ifname),
        "addresses": addresses,
        **extra,
    }


def run_agent(
    host_ns: str, steps: list[dict[str, Any]], faults: str = "", timeout: float = 60
) -> list[dict[str, Any]]:
    """Run ``steps`` in the agent inside namespace ``host_ns``; the per-step results."""
    env = dict(os.environ, NETD_FAULTS=faults)
    proc = subprocess.run(
        ["ip", "netns", "exec", host_ns, PYTHON, os.path.join(HERE, "bridge_agent.py")],
        input=json.dumps(steps),
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"bridge agent exited {proc.returncode}: {proc.stderr}")
    results: list[dict[str, Any]] = json.loads(proc.stdout)
    return results


def _step(driver: Any, step: dict[str, Any]) -> Any:
    from netd.model import endpoint_from_json, network_from_json, to_json

    op = step["op"]
    net = network_from_json(step["network"]) if "network" in step else None
    ep = endpoint_from_json(step["endpoint"]) if "endpoint" in step else None
    if op == "validate_options":
        return driver.validate_options(step["options"])
    if op == "ensure_network":
        driver.ensure_network(net)
        return {"sysctl_changes": driver.sysctl_changes}
    if op == "teardown_network":
        return driver.teardown_network(net)
    if op == "setup_endpoint":
        return to_json(driver.setup_endpoint(net, ep))
    if op == "teardown_endpoint":
        return driver.teardown_endpoint(net, ep)
    if op == "check_endpoint":
        return driver.check_endpoint(net, ep).problems
    if op == "inventory":
        return driver.inventory()
    if op == "remove_object":
        return driver.remove_object(step["ifname"])
    if op == "bench":
        # setup + teardown of the same endpoint, n times: per-call milliseconds.
        setup_ms, teardown_ms = [], []
        for _ in range(step["n"]):
            t0 = time.perf_counter()
            driver.setup_endpoint(net, ep)
            t1 = time.perf_counter()
            driver.teardown_endpoint(net, ep)
            t2 = time.perf_counter()
            setup_ms.append((t1 - t0) * 1000)
            teardown_ms.append((t2 - t1) * 1000)
        return {"setup_ms": setup_ms, "teardown_ms": teardown_ms}
    raise ValueError(f"unknown op {op!r}")


def main() -> None:
    """Read steps from stdin, run them on one BridgeDriver, print the results."""
    from netd.drivers.bridge import BridgeDriver

    steps = json.load(sys.stdin)
    driver = BridgeDriver(reuse_host_socket=os.environ.get("BRIDGE_REUSE", "1") == "1")
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
    main()
