"""Encrypted overlays (``-o encrypted=true``): IPsec ESP between nodes, on a real etcd and kernel.

Topology: :class:`netns_fixtures.cluster.Cluster` with two hosts (h1 10.251.0.1, h2 10.251.0.2)
and one etcd on the underlay. What crosses the underlay is captured in its namespace with a raw
socket (tests/ns/esp_capture.py); xfrm and nftables state is read back with ``ip xfrm`` and
``nft``, not through netd.

Two layers:
- :class:`IpsecManager` itself (what the cluster sync calls each pass), run in each host by
  tests/ns/ipsec_agent.py on VXLAN devices made here, VNI 100 "encrypted" and 200 plain: the
  key ring lands in etcd, policies and marks go in, VNI 100 never crosses the underlay in clear
  (ESP when the kernel has it; dropped, not sent, when it has not), plain VXLAN of VNI 100
  arriving from the underlay is dropped, VNI 200 stays plain, and removal leaves nothing.
- the daemons: with ESP, an encrypted network's pings cross as ESP only, survive key
  rotations, and its removal removes every SA and policy on every host; without ESP, the
  network is refused with the reason and nothing is left behind. Either way a plain overlay
  on the same hosts stays plain VXLAN.

The machine this was written on has xfrm but no ESP (CONFIG_INET_ESP unset): the tests that
need ESP say so and are skipped there; the fail-closed paths run everywhere.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import pytest
from netns_fixtures import Namespace, leftovers, wait_for
from netns_fixtures.cluster import Cluster, Host
from netns_fixtures.daemon import Daemon

from netd.kernel import xfrm

HERE = os.path.dirname(os.path.abspath(__file__))
NEEDS_ESP = "needs a kernel with IPsec ESP (CONFIG_INET_ESP), cbc(aes) and hmac(sha256)"


class Capture:
    """ESP and VXLAN packets crossing the underlay while it runs (esp_capture.py)."""

    def __init__(self, underlay: Namespace) -> None:
        self.proc = underlay.spawn(
            sys.executable, os.path.join(HERE, "esp_capture.py"),
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        assert self.proc.stdout is not None and self.proc.stdout.readline().strip() == "ready"

    def stop(self) -> list[dict[str, Any]]:
        out, _ = self.proc.communicate(timeout=30)
        seen: list[dict[str, Any]] = json.loads(out)
        return seen


def xfrm_objects(ns: Namespace) -> tuple[str, str]:
    """Every SA and every policy in ``ns`` as ``ip xfrm`` lists them (netd's or not)."""
    return ns.run("ip", "xfrm", "state", "list"), ns.run("ip", "xfrm", "policy", "list")


def nft_table(ns: Namespace) -> str:
    return ns.run("nft", "list", "table", "inet", "netd_ipsec", check=False)


def assert_nothing_left(ns: Namespace) -> None:
    states, policies = xfrm_objects(ns)
    assert states.strip() == "" and policies.strip() == "", (states, policies)
    assert nft_table(ns) == ""


@pytest.fixture(scope="module")
def esp() -> str:
    """ "" if this kernel does ESP, else why not."""
    return xfrm.esp_missing()


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    c = Cluster(tmp_path_factory.mktemp("ipsec"), hosts=2).start()
    try:
        yield c
    finally:
        failures = c.close()
        assert not failures, failures
        assert not leftovers(c.prefix), leftovers(c.prefix)


# --- the manager on hand-made VXLAN devices -----------------------------------------------------


def agent(cluster: Cluster, host: Host, vnis: list[int]) -> dict[str, Any]:
    peers = [h.address for h in cluster.hosts if h is not host]
    arg = {"endpoints": cluster.etcd_endpoints, "vnis": vnis, "local": host.address,
           "peers": peers, "rotate": 43200}  # fmt: skip
    out = host.ns.run(sys.executable, os.path.join(HERE, "ipsec_agent.py"), json.dumps(arg))
    result: dict[str, Any] = json.loads(out)
    return result


def vxlan_pair(cluster: Cluster, vni: int) -> None:
    """``vx<vni>`` in h1 and h2 with 10.<vni%256>.0.<n>/24, flooding to the other host."""
    h1, h2 = cluster.hosts[0], cluster.hosts[1]
    for n, (me, peer) in enumerate(((h1, h2), (h2, h1)), start=1):
        dev = f"vx{vni}"
        me.ns.run("ip", "link", "add", dev, "type", "vxlan", "id", str(vni), "local", me.address,
                  "dstport", "4789", "dev", "eth0", "nolearning")  # fmt: skip
        me.ns.run("bridge", "fdb", "append", "00:00:00:00:00:00", "dev", dev, "dst", peer.address)
        me.ns.run("ip", "addr", "add", f"10.{vni % 256}.0.{n}/24", "dev", dev)
        me.ns.run("ip", "link", "set", dev, "up")


def drop_counter(ns: Namespace) -> int:
    found = re.search(r"meta ipsec missing counter packets (\d+)", nft_table(ns))
    return int(found[1]) if found else -1


def test_manager_encrypts_only_its_vnis_and_never_sends_them_in_clear(
    cluster: Cluster, esp: str
) -> None:
    h1, h2 = cluster.hosts[0], cluster.hosts[1]
    vxlan_pair(cluster, 100)  # "encrypted"
    vxlan_pair(cluster, 200)  # plain
    try:
        one, two = agent(cluster, h1, [100]), agent(cluster, h2, [100])
        # One key ring in etcd, made by the first node, read by the second.
        assert one["ring"] == two["ring"] == [1]
        if esp:
            # No ESP: the SAs are refused with the reason; policies and marks went in anyway.
            assert "CONFIG_INET_ESP" in one["error"] and "CONFIG_INET_ESP" in two["error"]
        else:
            assert one["error"] is None and two["error"] is None
        # Read back independently: one out policy per peer with netd's mark and reqid...
        _, policies = xfrm_objects(h1.ns)
        assert f"src {h1.address}/32 dst {h2.address}/32 proto udp dport 4789" in policies
        assert f"mark 0x{xfrm.MARK:x}/0x{xfrm.MARK_MASK:x}" in policies
        assert f"reqid {xfrm.REQID} mode transport" in policies
        # ...and the marks on VNI 100 only.
        assert "@th,96,24 100 meta mark set" in nft_table(h1.ns).replace("0x64", "100")
        capture = Capture(cluster.underlay)  # type: ignore[arg-type]
        try:
            assert h1.ns.ping("10.200.0.2", timeout=3)  # plain VXLAN still works
            encrypted_ok = h1.ns.ping("10.100.0.2", count=2, timeout=3)
        finally:
            seen = capture.stop()
        assert {p["vni"] for p in seen if p["proto"] == "vxlan"} == {200}, seen
        if esp:
            # Fail closed: without an SA the marked packets were dropped, never sent in clear.
            assert not encrypted_ok
            assert not [p for p in seen if p["proto"] == "esp"]
        else:
            assert encrypted_ok
            pairs = {(p["src"], p["dst"]) for p in seen if p["proto"] == "esp"}
            assert pairs == {(h1.address, h2.address), (h2.address, h1.address)}, seen

        # Plain VXLAN of VNI 100 from the underlay is dropped: h2 stops protecting it (its
        # rules removed), so its packets arrive in clear, and h1 refuses them.
        assert agent(cluster, h2, [])["error"] is None
        assert_nothing_left(h2.ns)
        before = drop_counter(h1.ns)
        capture = Capture(cluster.underlay)  # type: ignore[arg-type]
        try:
            assert not h2.ns.ping("10.100.0.1", count=2, timeout=2)
        finally:
            seen = capture.stop()
        assert any(p["proto"] == "vxlan" and p["vni"] == 100 for p in seen), seen
        wait_for("h1 counted the dropped plain VNI 100", lambda: drop_counter(h1.ns) > before, 5)

        # Removal: nothing of netd's left; VNI 100 then flows in clear again (the rules were
        # what held it).
        assert agent(cluster, h1, [])["error"] is None
        assert_nothing_left(h1.ns)
        assert h1.ns.ping("10.100.0.2", timeout=3)
    finally:
        for h in (h1, h2):
            for dev in ("vx100", "vx200"):
                h.ns.run("ip", "link", "del", dev, check=False)


def test_manager_removes_only_its_own_xfrm_objects(cluster: Cluster) -> None:
    h1, h2 = cluster.hosts[0], cluster.hosts[1]
    # Someone else's policy (another IKE daemon's): other mark, other reqid.
    foreign = ("src", f"{h1.address}/32", "dst", f"{h2.address}/32", "proto", "udp", "dport",
               "4789", "dir", "out", "mark", "0x7", "mask", "0xff")  # fmt: skip
    h1.ns.run("ip", "xfrm", "policy", "add", *foreign, "tmpl", "src", h1.address, "dst",
              h2.address, "proto", "esp", "reqid", "7", "mode", "transport")  # fmt: skip
    try:
        agent(cluster, h1, [300])
        _, policies = xfrm_objects(h1.ns)
        assert policies.count(f"dst {h2.address}/32 proto udp dport 4789") == 2
        assert agent(cluster, h1, [])["error"] is None
        _, policies = xfrm_objects(h1.ns)
        assert "mark 0x7/0xff" in policies and f"reqid {xfrm.REQID}" not in policies
        assert nft_table(h1.ns) == ""
    finally:
        h1.ns.run("ip", "xfrm", "policy", "delete", *foreign, check=False)
    assert_nothing_left(h1.ns)


# --- the daemons ------------------------------------------------------------------------------

ROTATE = 3.0  # seconds: several rotations within one test (resync_interval 1 s)


@pytest.fixture(scope="module")
def daemons(cluster: Cluster) -> Iterator[dict[str, Daemon]]:
    settings = {"cluster": {"ipsec_rotate": ROTATE, "resync_interval": 1.0}}
    started = {h.name: cluster.start_daemon(h, settings=settings) for h in cluster.hosts}
    yield started


CONTAINERS: dict[str, Namespace] = {}


def container(cluster: Cluster, d: Daemon, net: str, name: str) -> tuple[Namespace, str]:
    ns = CONTAINERS[name] = cluster.sandbox.add_ns(name)
    d.cli("network", "connect", net, "--netns", ns.path, "--name", name)
    address = next(a.split("/")[0] for a in ns.addresses("eth0") if a.startswith("10.6"))
    return ns, address


def networks(d: Daemon) -> set[str]:
    return {n["name"] for n in json.loads(d.cli("network", "ls", "--format", "json").stdout)}


def test_plain_overlay_next_to_encrypted_requests_stays_plain_vxlan(
    cluster: Cluster, daemons: dict[str, Daemon], esp: str
) -> None:
    d1, d2 = daemons["h1"], daemons["h2"]
    made = d1.cli("network", "create", "sec", "--driver", "overlay", "--subnet", "10.61.0.0/24",
                  "-o", "encrypted=true", check=False)  # fmt: skip
    if esp:
        # Refused with the reason, nothing created anywhere: never carried in clear.
        assert made.returncode != 0
        assert "options.encrypted" in made.stderr and "CONFIG_INET_ESP" in made.stderr
        time.sleep(1.5)  # a sync pass on h2 (resync_interval 1 s) would have adopted it
        assert "sec" not in networks(d1) and "sec" not in networks(d2)
    else:
        assert made.returncode == 0, made.stderr
    d1.cli("network", "create", "plain", "--driver", "overlay", "--subnet", "10.62.0.0/24")
    wait_for("plain on h2", lambda: "plain" in networks(d2), 5)
    c1, _ = container(cluster, d1, "plain", "p1")
    _, a2 = container(cluster, d2, "plain", "p2")
    capture = Capture(cluster.underlay)  # type: ignore[arg-type]
    try:
        wait_for("p1 -> p2 over the plain overlay", lambda: c1.ping(a2), 10)
    finally:
        seen = capture.stop()
    plain = [p for p in seen if p["proto"] == "vxlan"]
    assert plain and not [p for p in seen if p["proto"] == "esp"], seen
    vni = {p["vni"] for p in plain}
    assert len(vni) == 1, seen
    status, doc = d1.request("GET", "/v1/networks/plain")
    assert status == 200 and doc["plumbing"]["encrypted"] is False, doc
    for d, name in ((d1, "p1"), (d2, "p2")):
        d.cli("network", "disconnect", "plain", "--netns", CONTAINERS[name].path)
    d1.cli("network", "rm", "plain")
    if not esp:
        d1.cli("network", "rm", "sec")
    for h in cluster.hosts:
        wait_for(f"nothing of netd's IPsec left on {h.name}",
                 lambda h=h: not any(xfrm_objects(h.ns)[i].strip() for i in (0, 1))
                 and nft_table(h.ns) == "", 10)  # fmt: skip


def test_encrypted_overlay_is_esp_only_survives_rotation_and_leaves_nothing(
    cluster: Cluster, daemons: dict[str, Daemon], esp: str
) -> None:
    if esp:
        pytest.skip(f"{NEEDS_ESP}: {esp}")
    d1, d2 = daemons["h1"], daemons["h2"]
    d1.cli("network", "create", "enc", "--driver", "overlay", "--subnet", "10.63.0.0/24",
           "-o", "encrypted=true")  # fmt: skip
    wait_for("enc on h2", lambda: "enc" in networks(d2), 5)
    c1, _ = container(cluster, d1, "enc", "e1")
    _, a2 = container(cluster, d2, "enc", "e2")
    wait_for("e1 -> e2 over ESP", lambda: c1.ping(a2), 10)
    status, doc = d1.request("GET", "/v1/networks/enc")
    assert status == 200 and doc["plumbing"]["encrypted"] is True, doc
    assert list(doc["plumbing"]["ipsec"]["peers"]) == [cluster.hosts[1].address], doc
    # Rotation under load: 3 rotation periods of pings every 0.1 s, at most one lost.
    capture = Capture(cluster.underlay)  # type: ignore[arg-type]
    count = int(ROTATE * 3 / 0.1)
    try:
        out = c1.run("ping", "-n", "-q", "-i", "0.1", "-c", str(count), "-W", "1", a2,
                     check=False, timeout=count)  # fmt: skip
    finally:
        seen = capture.stop()
    received = int(re.search(r"(\d+) received", out)[1])  # type: ignore[index]
    assert received >= count - 1, out
    esp_pkts = [p for p in seen if p["proto"] == "esp"]
    assert esp_pkts and not [p for p in seen if p["proto"] == "vxlan"], seen[:5]
    spis = {p["spi"] for p in esp_pkts if p["src"] == cluster.hosts[0].address}
    assert len(spis) >= 2, spis  # the sender switched keys during the run
    d1.cli("network", "disconnect", "enc", "--netns", CONTAINERS["e1"].path)
    d2.cli("network", "disconnect", "enc", "--netns", CONTAINERS["e2"].path)
    d2.cli("network", "rm", "enc")
    for h in cluster.hosts:
        wait_for(f"every SA and policy gone on {h.name}",
                 lambda h=h: not any(xfrm_objects(h.ns)[i].strip() for i in (0, 1))
                 and nft_table(h.ns) == "", 10)  # fmt: skip
