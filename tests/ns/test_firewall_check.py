"""The nftables backend's check (run after every change event) finds what others broke.

The check lists the ruleset without set elements so that its cost does not grow with the
endpoints netd holds; this test makes sure it still sees a missing table, chain or rule, and
is not fooled by another tool's table of the same name in another family.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from netns_fixtures import Sandbox

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = """
import ipaddress, json, subprocess, sys
sys.path.insert(0, sys.argv[1])
from netd.firewall.nft import NftablesFirewall
from netd.model import Endpoint, Network, PortMapping, Subnet

def nft(*args):
    subprocess.run(["nft", *args], check=True)

net = Network(id="a" * 64, name="n", driver="bridge", subnets=(
    Subnet(ipaddress.ip_network("10.1.0.0/24"), ipaddress.ip_address("10.1.0.1")),))
fw = NftablesFirewall()
fw.ensure_network(net, "nd-a")
for i in range(50):
    fw.add_endpoint(net, Endpoint(network_id=net.id, container_id=f"c{i}", ifname="eth0",
        netns="/x", host_ifname=f"nv{i}", addresses=(ipaddress.ip_interface(f"10.1.0.{i + 2}/24"),),
        port_mappings=(PortMapping(20000 + i, 80),)))
seen = {"intact": fw.check()}
nft("add", "table", "ip", "netd")  # someone else's table, same name, other family
nft("add", "chain", "ip", "netd", "forward")
seen["foreign table"] = fw.check()
listing = json.loads(subprocess.run(["nft", "-j", "-a", "list", "chain", "inet", "netd",
    "forward"], check=True, capture_output=True, text=True).stdout)["nftables"]
handle = next(o["rule"]["handle"] for o in listing if "rule" in o)
nft("delete", "rule", "inet", "netd", "forward", "handle", str(handle))
seen["rule deleted"] = fw.check()
fw.repair()
seen["repaired"] = fw.check()
nft("flush", "chain", "inet", "netd", "postrouting")
seen["chain flushed"] = fw.check()
fw.repair()
nft("delete", "table", "bridge", "netd")
seen["bridge table deleted"] = fw.check()
fw.repair()
seen["repaired again"] = fw.check()
print(json.dumps(seen))
"""


def test_check_sees_damage_but_not_elements_or_foreign_tables(sandbox: Sandbox) -> None:
    host = sandbox.add_host()
    out = host.run(sys.executable, "-c", SCRIPT, str(ROOT))
    seen = json.loads(out.strip().splitlines()[-1])
    assert seen == {
        "intact": True,
        "foreign table": True,
        "rule deleted": False,
        "repaired": True,
        "chain flushed": False,
        "bridge table deleted": False,
        "repaired again": True,
    }
