"""How long a deleted netd bridge (or host veth) stays broken: repair from link events.

Runs a real daemon in a sandbox host (nftables firewall, periodic reconcile pushed to an hour so
only the link-event watcher repairs), connects N containers, then deletes the bridge with
``ip link del`` and polls the kernel every 10 ms until the bridge is back with its gateway
address and all N host veths are enslaved again (then one host veth, until it is back on the
bridge). Prints a table of repair times; writes ``benchmarks/results/link-repair-*.json``.
Never touches the initial namespace. Not a test: it measures.
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

from common import format_table, machine_description, summarize, write_results
from netns_fixtures import Namespace, Sandbox
from netns_fixtures.daemon import Daemon

GATEWAY = "10.136.0.1/16"


def _state(host: Namespace) -> dict[str, dict[str, Any]]:
    return {link["ifname"]: link for link in host.ip_json("-d", "addr", "show")}


def _repaired(host: Namespace, bridge: str, veths: list[str]) -> bool:
    links = _state(host)
    br = links.get(bridge)
    if br is None:
        return False
    addrs = {f"{a['local']}/{a['prefixlen']}" for a in br.get("addr_info", [])}
    return GATEWAY in addrs and all(links.get(v, {}).get("master") == bridge for v in veths)


def _time_until(host: Namespace, bridge: str, veths: list[str], timeout: float = 60) -> float:
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if _repaired(host, bridge, veths):
            return time.monotonic() - start
        time.sleep(0.01)
    raise RuntimeError(f"not repaired within {timeout} s")


def measure(size: int, reps: int) -> dict[str, Any]:
    with Sandbox() as box:
        host = box.add_host()
        daemon = Daemon(host, firewall="nftables")
        daemon.config_path().write_text("reconcile_interval = 3600\n")
        daemon.start()
        try:
            status, net = daemon.request(
                "POST", "/v1/networks", {"name": "bench", "subnets": [{"subnet": "10.136.0.0/16"}]}
            )
            assert status == 201, net
            veths = []
            for i in range(size):
                c = box.add_ns(f"c{i}")
                status, ep = daemon.request("POST", "/v1/networks/bench/connect", {"netns": c.path})
                assert status == 201, ep
                veths.append(ep["host_ifname"])
            bridge_s, veth_s = [], []
            for _ in range(reps):
                # Apart by more than the watcher's minimum gap between passes (MIN_GAP): each
                # deletion is measured alone, as a stray deletion would be.
                time.sleep(1.0)
                host.run("ip", "link", "del", net["bridge"])
                bridge_s.append(_time_until(host, net["bridge"], veths) * 1000)
                time.sleep(1.0)
                host.run("ip", "link", "del", veths[0])
                veth_s.append(_time_until(host, net["bridge"], veths) * 1000)
        finally:
            daemon.close_checked()
    return {"containers": size, "bridge_ms": summarize(bridge_s), "veth_ms": summarize(veth_s)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1,10,50")
    parser.add_argument("--reps", type=int, default=5)
    args = parser.parse_args()
    rows = [measure(int(n), args.reps) for n in args.sizes.split(",")]
    print(
        format_table(
            [
                "containers",
                "bridge deleted: p50 ms",
                "max ms",
                "one veth deleted: p50 ms",
                "max ms",
            ],
            [
                [
                    r["containers"],
                    round(r["bridge_ms"]["p50"]),
                    round(r["bridge_ms"]["max"]),
                    round(r["veth_ms"]["p50"]),
                    round(r["veth_ms"]["max"]),
                ]
                for r in rows
            ],
        )
    )
    path = write_results("link-repair", {"machine": machine_description(), "rows": rows})
    print(json.dumps({"results": str(path)}))


if __name__ == "__main__":
    main()
