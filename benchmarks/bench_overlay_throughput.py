"""TCP throughput across netd's overlay vs a plain kernel VXLAN, same hosts, same run. Not a test.

Run as root from the repository root (needs ``iperf3``: ``apt-get install -y iperf3``)::

    .venv/bin/python benchmarks/bench_overlay_throughput.py [--seconds 5] [--rounds 3] [--no-pin]

Two sandbox host namespaces joined by one veth pair (the underlay, MTU 1500; never the
machine's own namespace). Four paths, measured in turn, round after round, with ``iperf3 -J``
(one TCP stream, ``--seconds`` each):

- ``underlay``: host to host on the veth, no encapsulation (the ceiling);
- ``kernel vxlan``: a plain VXLAN device in each host (``ip link add ... type vxlan id 99
  remote <peer> dstport 4789``, MTU 1450, addresses on it), host to host — what the
  encapsulation alone costs;
- ``kernel vxlan + bridge + veth``: netd's topology made by hand with ``ip`` (a bridge, a
  VXLAN device id 98 on it, kernel defaults otherwise, one container namespace per host on a
  veth pair, MTU 1450 throughout), container to container — what the topology costs, with no
  choice of netd's in it;
- ``netd overlay``: an overlay network (VNI 4242) made by :class:`OverlayDriver` in each host
  (bridge + VXLAN device, peers programmed with ``sync_remote``), one container namespace per
  host, container to container — the topology as netd sets it up.

The iperf3 client is pinned to CPU 0 and the server to CPU 1 (``iperf3 -A``) unless
``--no-pin``: left to the scheduler, client and server sometimes share a CPU for a whole run,
which moves one run by ±15 % and hides differences of a few per cent between paths.
``--firewall`` also loads netd's nftables rules for the overlay network in both hosts (as
the daemon does): conntrack then sees every packet there, the VXLAN underlay's UDP and,
through br_netfilter (``bridge-nf-call-iptables=1``, the default in a new namespace), the
bridged frames.

Prints the load average, a table of median Gbit/s (min/max over rounds; the ratios to the
kernel VXLAN and to the hand-made topology, each the median over rounds of that round's ratio;
retransmits) and writes
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
# The hand-made reference topology (bridge + VXLAN + veth, made with ``ip``).
REF_VNI = 98
REF_SUBNET = "10.98.0"
HAND = "kernel vxlan + bridge + veth"


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
            if spec.get("firewall"):
                from netd.firewall.nft import NftablesFirewall

                firewall = NftablesFirewall()
                firewall.ensure_network(net, driver.host_interface(net))
                firewall.add_endpoint(net, made)
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


def _hand_made(host: Namespace, container: Namespace, local: str, remote: str, ip: str) -> None:
    """netd's topology in ``host`` made with ``ip`` only: bridge, VXLAN port, veth to
    ``container``; kernel defaults for every setting netd does not have to choose."""
    cmds = [
        ["ip", "link", "add", "br-ref", "type", "bridge"],
        ["ip", "link", "set", "br-ref", "mtu", "1450", "up"],
        ["ip", "link", "add", "vx-ref", "type", "vxlan", "id", str(REF_VNI), "local", local,
         "remote", remote, "dstport", "4789", "nolearning"],
        ["ip", "link", "set", "vx-ref", "mtu", "1450", "master", "br-ref", "up"],
        ["ip", "link", "add", "ref0", "type", "veth", "peer", "name", "eth0", "netns",
         container.name],
        ["ip", "link", "set", "ref0", "mtu", "1450", "master", "br-ref", "up"],
    ]  # fmt: skip
    for cmd in cmds:
        host.run(*cmd)
    container.run("ip", "link", "set", "eth0", "mtu", "1450", "up")
    container.run("ip", "addr", "add", f"{ip}/24", "dev", "eth0")


def _iperf(
    client: Namespace, server: Namespace, address: str, seconds: int, pin: bool
) -> dict[str, float]:
    server_pin, client_pin = (["-A", "1"], ["-A", "0"]) if pin else ([], [])
    proc = server.spawn(
        "iperf3", "-s", "-1", "-p", str(PORT), *server_pin,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    wait_for("iperf3 listening", lambda: f":{PORT}" in server.run("ss", "-ltnH"), 10)
    out = client.run("iperf3", "-J", "-c", address, "-p", str(PORT), "-t", str(seconds),
                     *client_pin, timeout=seconds + 30)  # fmt: skip
    proc.wait(timeout=10)
    end = json.loads(out)["end"]
    return {
        "gbit_s": end["sum_received"]["bits_per_second"] / 1e9,
        "retransmits": float(end["sum_sent"].get("retransmits", 0)),
    }


def measure(
    seconds: int, rounds: int, pin: bool, firewall: bool
) -> dict[str, list[dict[str, float]]]:
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
        # The same topology as netd's, made by hand, container to container.
        r1, r2 = box.add_ns("r1"), box.add_ns("r2")
        _hand_made(h1, r1, "192.168.95.1", "192.168.95.2", f"{REF_SUBNET}.11")
        _hand_made(h2, r2, "192.168.95.2", "192.168.95.1", f"{REF_SUBNET}.12")
        # netd's overlay, container to container.
        c1, c2 = box.add_ns("c1"), box.add_ns("c2")
        made = []
        for host, address, container, ip in (
            (h1, "192.168.95.1", c1, "10.71.0.11"), (h2, "192.168.95.2", c2, "10.71.0.12"),
        ):  # fmt: skip
            spec = {"op": "attach", "address": address, "network": _network(),
                    "endpoint": _endpoint(container, container.name, ip),
                    "firewall": firewall}  # fmt: skip
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
        assert r1.ping(f"{REF_SUBNET}.12", timeout=3), "the hand-made topology does not carry"
        paths = {
            "underlay": (h1, h2, "192.168.95.2"),
            "kernel vxlan": (h1, h2, "10.99.0.2"),
            HAND: (r1, r2, f"{REF_SUBNET}.12"),
            "netd overlay": (c1, c2, "10.71.0.12"),
        }
        out: dict[str, list[dict[str, float]]] = {name: [] for name in paths}
        for i in range(rounds):
            # Every other round in reverse order: no path always runs right after another.
            order = list(paths.items()) if i % 2 == 0 else list(reversed(paths.items()))
            for name, (client, server, address) in order:
                out[name].append(_iperf(client, server, address, seconds, pin))
        for host, address, _, _ in made:
            _in_host(host, {"op": "teardown", "address": address, "network": _network()})
    return out


def paired_ratio(results: dict[str, list[dict[str, float]]], path: str, reference: str) -> float:
    """Median over rounds of ``path``'s rate / ``reference``'s in the same round.

    The paths of one round run back to back, so a load that comes and goes (other work on the
    machine) moves both sides of each ratio; a ratio of the two medians would compare rounds
    taken at different times.
    """
    pairs = zip(results[path], results[reference], strict=True)
    return statistics.median(a["gbit_s"] / b["gbit_s"] for a, b in pairs)


def main() -> None:
    """Measure and print the table."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--no-pin", dest="pin", action="store_false",
        help="leave iperf3's client and server to the scheduler (default: CPU 0 and CPU 1)",
    )  # fmt: skip
    parser.add_argument(
        "--firewall", action="store_true",
        help="also load netd's nftables rules for the overlay network in both hosts",
    )  # fmt: skip
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(json.loads(args.worker))
        return
    if shutil.which("iperf3") is None:
        sys.exit("iperf3 is not installed: apt-get install -y iperf3")
    pin = args.pin and (os.cpu_count() or 1) >= 2
    load_before = os.getloadavg()
    results = measure(args.seconds, args.rounds, pin, args.firewall)
    load_after = os.getloadavg()
    rows = []
    for name, runs in results.items():
        rates = [r["gbit_s"] for r in runs]
        rows.append([
            name, round(statistics.median(rates), 1), round(min(rates), 1), round(max(rates), 1),
            # Two decimals as text: the goal (0.9x) is read off this column.
            f"{paired_ratio(results, name, 'kernel vxlan'):.2f}",
            f"{paired_ratio(results, name, HAND):.2f}",
            int(statistics.median(r["retransmits"] for r in runs)),
        ])  # fmt: skip
    machine = machine_description()
    print(
        f"{args.rounds} rounds of {args.seconds} s, one TCP stream (iperf3"
        f"{', client on CPU 0, server on CPU 1' if pin else ', not pinned'}"
        f"{'; netd nftables rules loaded' if args.firewall else ''}); {machine['cpu']}, "
        f"{machine['cpus']} CPUs, kernel {machine['kernel']}; load average "
        f"{load_before[0]:.2f} before, {load_after[0]:.2f} after (1 min)"
    )
    print()
    headers = ["path", "Gbit/s p50", "min", "max", "vs kernel vxlan", "vs by hand", "retr. p50"]
    print(format_table(headers, rows))
    path = write_results(
        "overlay-throughput",
        {"machine": machine, "seconds": args.seconds, "rounds": args.rounds, "pinned": pin,
         "firewall": args.firewall,
         "load": {"before": load_before, "after": load_after}, "runs": results},
    )  # fmt: skip
    print(json.dumps({"results": str(path)}))


if __name__ == "__main__":
    main()
