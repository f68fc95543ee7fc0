"""TCP throughput across netd's overlay vs a plain kernel VXLAN, same hosts, same run. Not a test.

Run as root from the repository root (needs ``iperf3``: ``apt-get install -y iperf3``)::

    .venv/bin/python benchmarks/bench_overlay_throughput.py [--seconds 5] [--rounds 3]

Two sandbox host namespaces joined by one veth pair (the underlay, MTU 1500; never the
machine's own namespace). Three paths, measured in turn, round after round, with ``iperf3 -J``
(one TCP stream, ``--seconds`` each):

- ``underlay``: host to host on the veth, no encapsulation (the ceiling);
- ``kernel vxlan``: a plain VXLAN device in each host (``ip link add ... type vxlan id 99
  remote <peer> dstport 4789``, MTU 1450, addresses on it), host to host — what the
  encapsulation alone costs;
- ``netd overlay``: an overlay network (VNI 4242) made by :class:`OverlayDriver` in each host
  (bridge + VXLAN device, peers programmed with ``sync_remote``), one container namespace per
  host, container to container — the encapsulation plus the bridge and veth hops.

Prints a table of median Gbit/s (and min/max over rounds, retransmits) and writes
``benchmarks/results/overlay-throughput-*.json``.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import shutil
import statistics
import subprocess
import sys
from typing import Any

from common import format_table, machine_description, write_results
from netns_fixtures import Namespace, Sandbox, wait_for

NET_ID = "0be7" + "a1" * 30
VNI = 4242
SUBNET = "10.71.0.0/24"
PORT = 5201


def worker(spec: dict[str, Any]) -> None:
    """Inside a host namespace: ensure the overlay, attach the container, program the peers."""
    from netd.drivers.overlay import OverlayDriver, RemotePeer
    from netd.model import endpoint_from_json, network_from_json, to_json

    driver = OverlayDriver(node_address=spec["address"])
    net = network_from_json(spec["network"])
    try:
        if spec["op"] == "attach":
            driver.ensure_network(net)
            made = driver.setup_endpoint(net, endpoint_from_json(spec["endpoint"]))
            print(json.dumps(to_json(made)))
        elif spec["op"] == "sync":
            peers = [
                RemotePeer(
                    ipaddress.ip_address(p["ip"]), p["mac"], ipaddress.IPv4Address(p["vtep"])
                )
                for p in spec["peers"]
            ]
            driver.sync_remote(net, peers)
        else:
            driver.teardown_network(net)
    finally:
        driver.close()


def _in_host(host: Namespace, spec: dict[str, Any]) -> str:
    return host.run(sys.executable, os.path.abspath(__file__), "--worker", json.dumps(spec))


def _network() -> dict[str, Any]:
    return {
        "id": NET_ID,
        "name": "bench-overlay",
        "driver": "overlay",
        "subnets": [{"subnet": SUBNET, "gateway": "10.71.0.1"}],
        "options": {"vni": str(VNI)},
    }


def _endpoint(container: Namespace, cid: str, ip: str) -> dict[str, Any]:
    from netd.names import host_veth_name

    return {
        "network_id": NET_ID,
        "container_id": cid,
        "ifname": "eth0",
        "netns": container.path,
        "host_ifname": host_veth_name(NET_ID, cid, "eth0"),
        "addresses": [f"{ip}/24"],
    }


def _iperf(client: Namespace, server: Namespace, address: str, seconds: int) -> dict[str, float]:
    proc = server.spawn(
        "iperf3", "-s", "-1", "-p", str(PORT), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    wait_for("iperf3 listening", lambda: f":{PORT}" in server.run("ss", "-ltnH"), 10)
    out = client.run("iperf3", "-J", "-c", address, "-p", str(PORT), "-t", str(seconds),
                     timeout=seconds + 30)  # fmt: skip
    proc.wait(timeout=10)
    end = json.loads(out)["end"]
    return {
        "gbit_s": end["sum_received"]["bits_per_second"] / 1e9,
        "retransmits": float(end["sum_sent"].get("retransmits", 0)),
    }


def measure(seconds: int, rounds: int) -> dict[str, list[dict[str, float]]]:
    """Per path, one iperf3 result per round."""
    with Sandbox() as box:
        h1, h2 = box.add_host("h1"), box.add_host("h2")
        box.wire(h1, h2, "192.168.95.1/24", "192.168.95.2/24", "up0", "up0")
        # The plain kernel VXLAN, host to host.
        for me, peer, addr in (
            (h1, "192.168.95.2", "10.99.0.1"),
            (h2, "192.168.95.1", "10.99.0.2"),
        ):
            local = "192.168.95.1" if me is h1 else "192.168.95.2"
            me.run("ip", "link", "add", "vx0", "type", "vxlan", "id", "99", "local", local,
                   "remote", peer, "dstport", "4789", "nolearning")  # fmt: skip
            me.run("ip", "link", "set", "vx0", "mtu", "1450", "up")
            me.run("ip", "addr", "add", f"{addr}/24", "dev", "vx0")
        # netd's overlay, container to container.
        c1, c2 = box.add_ns("c1"), box.add_ns("c2")
        made = []
        for host, address, container, ip in (
            (h1, "192.168.95.1", c1, "10.71.0.11"), (h2, "192.168.95.2", c2, "10.71.0.12"),
        ):  # fmt: skip
            spec = {"op": "attach", "address": address, "network": _network(),
                    "endpoint": _endpoint(container, container.name, ip)}  # fmt: skip
            made.append((host, address, json.loads(_in_host(host, spec)), ip))
        for host, address, _, _ in made:
            peers = [
                {"ip": ip, "mac": ep["mac"], "vtep": a} for _, a, ep, ip in made if a != address
            ]
            _in_host(
                host, {"op": "sync", "address": address, "network": _network(), "peers": peers}
            )
        assert c1.ping("10.71.0.12", timeout=3), "the overlay does not carry traffic"
        assert h1.ping("10.99.0.2", timeout=3), "the plain VXLAN does not carry traffic"
        paths = {
            "underlay": (h1, h2, "192.168.95.2"),
            "kernel vxlan": (h1, h2, "10.99.0.2"),
            "netd overlay": (c1, c2, "10.71.0.12"),
        }
        out: dict[str, list[dict[str, float]]] = {name: [] for name in paths}
        for _ in range(rounds):
            for name, (client, server, address) in paths.items():
                out[name].append(_iperf(client, server, address, seconds))
        for host, address, _, _ in made:
            _in_host(host, {"op": "teardown", "address": address, "network": _network()})
    return out


def main() -> None:
    """Measure and print the table."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(json.loads(args.worker))
        return
    if shutil.which("iperf3") is None:
        sys.exit("iperf3 is not installed: apt-get install -y iperf3")
    results = measure(args.seconds, args.rounds)
    base = statistics.median(r["gbit_s"] for r in results["kernel vxlan"])
    rows = []
    for name, runs in results.items():
        rates = [r["gbit_s"] for r in runs]
        median = statistics.median(rates)
        rows.append([
            name, round(median, 2), round(min(rates), 2), round(max(rates), 2),
            round(median / base, 2), int(statistics.median(r["retransmits"] for r in runs)),
        ])  # fmt: skip
    machine = machine_description()
    print(
        f"{args.rounds} rounds of {args.seconds} s, one TCP stream (iperf3); {machine['cpu']}, "
        f"{machine['cpus']} CPUs, kernel {machine['kernel']}"
    )
    print()
    headers = ["path", "Gbit/s p50", "min", "max", "vs kernel vxlan", "retransmits p50"]
    print(format_table(headers, rows))
    path = write_results(
        "overlay-throughput",
        {"machine": machine, "seconds": args.seconds, "rounds": args.rounds, "runs": results},
    )
    print(json.dumps({"results": str(path)}))


if __name__ == "__main__":
    main()
