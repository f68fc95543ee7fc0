"""Run netd's IpsecManager once inside a host namespace, against a real etcd, for the ns tests.

``ip netns exec <host> python ipsec_agent.py '<json>'`` with ``{"endpoints": [...], "rotate":
s, "vnis": [...], "local": "10.251.0.1", "peers": [...]}`` (empty ``vnis``: remove everything)
runs one :meth:`IpsecManager.sync` and prints ``{"error": message or null, "ring": [ids]}``.
This is the code the daemon's cluster sync calls on every pass, without the daemon around it.
"""

from __future__ import annotations

import json
import sys
from ipaddress import IPv4Address

from netd.cluster.ipsec import IpsecManager
from netd.errors import NetdError
from netd.store.etcd import EtcdStore


def main() -> None:
    """One sync pass as the argument says; the outcome as JSON on stdout."""
    args = json.loads(sys.argv[1])
    etcd = EtcdStore(args["endpoints"], prefix=args.get("prefix", "/netd/"))
    manager = IpsecManager(etcd, float(args.get("rotate", 43200)))
    error = None
    try:
        manager.sync(
            {int(v) for v in args["vnis"]},
            IPv4Address(args["local"]),
            {IPv4Address(p) for p in args["peers"]},
        )
    except NetdError as e:
        error = e.message
    finally:
        etcd.close()
    print(json.dumps({"error": error, "ring": [g.id for g in manager.ring]}))


if __name__ == "__main__":
    main()
