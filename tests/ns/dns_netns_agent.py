"""A DnsManager driven line by line, inside a sandbox host namespace, for the netns-DNS tests.

``ip netns exec <host> python dns_netns_agent.py RUN_DIR`` reads a JSON state (a network and
its endpoints) from the first stdin line, starts the manager (adopting workers an earlier
agent left in RUN_DIR), publishes the records, then obeys one command per line and answers
``ok`` or ``error: <message>``: ``attach CID``, ``detach CID``, ``sync CID...``,
``handover`` (let go of the workers, as a stopping daemon does, and exit), ``stop``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def main() -> None:
    """Serve commands until ``handover``/``stop``/EOF."""
    from netd.dns.manager import DnsManager
    from netd.errors import NetdError
    from netd.model import endpoint_from_json, network_from_json

    state = json.loads(sys.stdin.readline())
    net = network_from_json(state["network"])
    eps = {e["container_id"]: endpoint_from_json(e) for e in state["endpoints"]}
    dns = DnsManager(run_dir=Path(sys.argv[1]), upstreams_from="/dev/null")
    dns.set_placements({net.driver: "netns"})
    dns.start()
    dns.set_state([(net, list(eps.values()))])
    print("ok", flush=True)
    for line in sys.stdin:
        cmd, *args = line.split()
        try:
            if cmd == "attach":
                dns.attach_endpoint_socket(net, eps[args[0]])
            elif cmd == "detach":
                dns.detach_endpoint_socket(net, eps[args[0]])
            elif cmd == "sync":
                failures = dns.sync_endpoint_sockets([(net, eps[c]) for c in args])
                if failures:
                    raise RuntimeError("; ".join(failures))
            elif cmd == "records":
                print(json.dumps(dns.records(net.id)), flush=True)
                continue
            elif cmd == "handover":
                dns.detach()
                print("ok", flush=True)
                return
            elif cmd == "stop":
                dns.stop()
                print("ok", flush=True)
                return
        except (NetdError, RuntimeError) as exc:
            print(f"error: {exc}", flush=True)
            continue
        print("ok", flush=True)
    dns.stop()


if __name__ == "__main__":
    main()
