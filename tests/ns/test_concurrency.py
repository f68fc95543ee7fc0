"""200 concurrent requests against a real daemon: no duplicate address, consistent state."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from netns_fixtures.daemon import Daemon


def cni_call(command: str, net: str, subnet: str, cid: str) -> dict[str, object]:
    """An IPAM-only CNI call (the reference bridge delegating IPAM to netd): no netns needed."""
    return {
        "command": command,
        "containerId": cid,
        "netns": f"/run/netns/{cid}",
        "ifname": "eth0",
        "args": "",
        "path": "",
        "config": {
            "cniVersion": "1.0.0",
            "name": net,
            "type": "bridge",
            "ipam": {"type": "netd", "ranges": [[{"subnet": subnet}]]},
        },
    }


def test_200_parallel_adds_over_5_networks(daemon: Daemon) -> None:
    nets = [(f"conc{i}", f"10.12{i}.0.0/24") for i in range(5)]

    def add(i: int) -> tuple[int, object]:
        net, subnet = nets[i % 5]
        return daemon.request("POST", "/v1/cni", cni_call("ADD", net, subnet, f"c{i}"))

    with ThreadPoolExecutor(max_workers=50) as pool:
        results = list(pool.map(add, range(200)))
    assert all(status == 200 for status, _ in results), [r for r in results if r[0] != 200][:3]
    addresses = [body["ips"][0]["address"] for _, body in results]  # type: ignore[index]
    assert len(set(addresses)) == 200
    for net, _ in nets:
        _, info = daemon.request("GET", f"/v1/networks/{net}")
        assert len(info["endpoints"]) == 40
        assert info["ipam_usage"][next(iter(info["ipam_usage"]))]["used"] == 40

    def delete(i: int) -> int:
        net, subnet = nets[i % 5]
        return daemon.request("POST", "/v1/cni", cni_call("DEL", net, subnet, f"c{i}"))[0]

    with ThreadPoolExecutor(max_workers=50) as pool:
        assert set(pool.map(delete, range(200))) == {200}
    for net, _ in nets:
        _, info = daemon.request("GET", f"/v1/networks/{net}")
        assert info["endpoints"] == []
