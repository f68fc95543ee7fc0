"""The kernel's floor for the netlink work of 100 CNI ADDs, serial and 8-way. Not a test.

Run as root from the repository root:  .venv/bin/python benchmarks/bench_kernel_floor.py

It re-executes itself under ``unshare --net`` (a throwaway namespace that dies with it; the
machine's own network is never touched) and, with as little Python as netd's raw requests
allow, does exactly the kernel work of netd's ADD for 100 fresh namespaces: a bridge port veth
with its peer born in the namespace, IPv6 off on the host end, alias and hairpin on the port,
the address, links up (no IPv6 link-local) and the default route. Then the same for 100 more,
8 threads at a time. No daemon, plugin exec, IPAM, store or DNS: whatever an implementation
adds comes on top. It answers "how fast could 100 ADDs be on this kernel at all?": the RTNL
mutex serializes the work, so parallel callers only add contention.
"""

from __future__ import annotations

import argparse
import ctypes
import ipaddress
import os
import statistics
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

SANDBOXED = "NETD_BENCH_FLOOR_SANDBOXED"
CLONE_NEWNET = 0x40000000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--containers", type=int, default=100)
    parser.add_argument("--parallel", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    if os.environ.get(SANDBOXED) != str(os.getpid()):
        # exec keeps the pid, so the marker names this very process inside the new namespace.
        os.environ[SANDBOXED] = str(os.getpid())
        os.execvp("unshare", ["unshare", "--net", sys.executable, *sys.argv])
    print(f"kernel {os.uname().release}, {os.cpu_count()} CPUs; {args.containers} ADDs per run")
    print()
    print("| round | serial p50 (ms) | serial total (s) | ∥8 total (s) | ∥8 process CPU (s) |")
    print("|---:|---:|---:|---:|---:|")
    for rnd in range(1, args.rounds + 1):
        serial_p50, serial, par, cpu = _round(rnd, args.containers, args.parallel)
        print(f"| {rnd} | {serial_p50:.2f} | {serial:.3f} | {par:.3f} | {cpu:.3f} |")


def _round(rnd: int, n: int, width: int) -> tuple[float, float, float, float]:
    from pyroute2 import IPRoute

    from netd.kernel import rtnl as R
    from netd.kernel.netns import netlink_socket_in
    from netd.kernel.sysctl import disable_ipv6_on

    libc = ctypes.CDLL(None, use_errno=True)

    def new_ns() -> int:
        out: list[int] = []

        def enter() -> None:  # unshare() moves only this thread, which then ends
            if libc.unshare(CLONE_NEWNET) != 0:
                raise OSError(ctypes.get_errno(), "unshare")
            out.append(os.open("/proc/thread-self/ns/net", os.O_RDONLY))

        t = threading.Thread(target=enter)
        t.start()
        t.join()
        return out[0]

    bridge = f"fl{rnd}"
    with IPRoute() as ipr:
        ipr.link("add", ifname=bridge, kind="bridge", address=f"02:11:22:33:44:{rnd:02x}")
        br = ipr.link_lookup(ifname=bridge)[0]
        ipr.addr("add", index=br, address=f"10.{rnd}.0.1", prefixlen=16)
        ipr.link("set", index=br, state="up", mtu=1500)
    local = threading.local()
    gateway = ipaddress.ip_address(f"10.{rnd}.0.1")

    def add(i: int, fd: int) -> None:
        if not hasattr(local, "rtnl"):
            local.rtnl = R.Rtnl(R.host_socket())
        name = f"f{rnd}v{i}"
        mac = f"02:00:{rnd:02x}:{i >> 8:02x}:{i & 255:02x}:"
        local.rtnl.add_veth(R.VethSpec(name, mac + "01", 1500, br, "eth0", fd, mac + "02"))
        disable_ipv6_on(name)
        local.rtnl.set_bridge_port(name, f"netd:floor{i}", True)
        with R.Rtnl(netlink_socket_in(fd)) as c:
            idx = c.link_index("eth0")
            addr = ipaddress.ip_interface(f"10.{rnd}.{(i + 2) >> 8}.{(i + 2) & 255}/16")
            c.add_addresses(idx, "eth0", (addr,))
            c.set_up({idx: "eth0", R.LOOPBACK_IFINDEX: "lo"}, no_link_local=(idx,))
            R.add_default_route(c, gateway, idx)

    fds = [new_ns() for _ in range(2 * n)]
    try:
        lat = []
        t0 = time.perf_counter()
        for i in range(n):
            t = time.perf_counter()
            add(i, fds[i])
            lat.append((time.perf_counter() - t) * 1000)
        serial = time.perf_counter() - t0
        c0 = os.times()
        t0 = time.perf_counter()
        with ThreadPoolExecutor(width) as pool:
            list(pool.map(lambda i: add(i, fds[i]), range(n, 2 * n)))
        par = time.perf_counter() - t0
        c1 = os.times()
    finally:
        for fd in fds:
            os.close(fd)
    cpu = (c1.user - c0.user) + (c1.system - c0.system)
    return statistics.median(lat), serial, par, cpu


if __name__ == "__main__":
    main()
