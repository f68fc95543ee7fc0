"""netlink_socket_in: sockets land in the asked namespace; the setns thread always comes home."""

from __future__ import annotations

import json
import sys

from netns_fixtures import Sandbox

SCRIPT = r"""
import json, os, sys, threading
from netd.kernel.netns import netlink_socket_in, open_netns
from netd.kernel.rtnl import Rtnl, RtnlError

found = {}
for _ in range(20):
    for path, ifname in ((sys.argv[1], "only-a"), (sys.argv[2], "only-b")):
        fd = open_netns(path)
        with Rtnl(netlink_socket_in(fd)) as rtnl:
            found.setdefault(path, set()).add(rtnl.link_index(ifname) > 0)
            try:
                rtnl.link_index("only-b" if ifname == "only-a" else "only-a")
                found[path].add("sees the other namespace")
            except RtnlError:
                pass
        os.close(fd)
setns = [t for t in threading.enumerate() if t.name == "netd-setns"]
home = os.stat("/proc/self/ns/net").st_ino
where = os.stat(f"/proc/self/task/{setns[0].native_id}/ns/net").st_ino
print(json.dumps({"found": {k: sorted(map(str, v)) for k, v in found.items()},
                  "threads": len(setns), "home": where == home}))
"""


def test_sockets_are_made_in_the_asked_namespace_and_the_thread_returns(sandbox: Sandbox) -> None:
    host, a, b = sandbox.add_host(), sandbox.add_ns("a"), sandbox.add_ns("b")
    a.run("ip", "link", "add", "only-a", "type", "veth", "peer", "name", "peer-a")
    b.run("ip", "link", "add", "only-b", "type", "veth", "peer", "name", "peer-b")
    out = json.loads(host.run(sys.executable, "-c", SCRIPT, a.path, b.path))
    assert out == {"found": {a.path: ["True"], b.path: ["True"]}, "threads": 1, "home": True}
