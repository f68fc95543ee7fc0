"""IPAM scale benchmark: fill a /16 one address at a time; print a table. Not a test.

Run from the repository root:  .venv/bin/python benchmarks/bench_ipam.py [--seed N]

For an IPv4 /16 (and, for comparison, 65,533 addresses of an IPv6 /64) it allocates every
address through ``NetworkAllocator.allocate`` + ``commit`` exactly as the service does, and
reports the mean and p99 time per allocation for the first, middle and last 1,000
allocations; then it releases a random 10% and re-allocates them (the round-robin cursor has
to wrap and find the holes). Memory of the ``AddressIndex`` is measured with tracemalloc, full
and after the 10% release, next to a plain ``set`` of the same ints for scale.
"""

from __future__ import annotations

import argparse
import ipaddress
import random
import statistics
import time
import tracemalloc
from collections.abc import Callable

from netd.ipam.allocator import NetworkAllocator
from netd.ipam.index import AddressIndex
from netd.model import IPInterface, Network, Subnet

WINDOW = 1000


def _network(cidr: str) -> Network:
    net = ipaddress.ip_network(cidr)
    return Network(
        id="b" * 64,
        name="bench",
        driver="bridge",
        subnets=(Subnet(subnet=net, gateway=net.network_address + 1),),
    )


def _one(alloc: NetworkAllocator) -> tuple[int, list[IPInterface]]:
    t0 = time.perf_counter_ns()
    addrs, cursors = alloc.allocate()
    alloc.commit(addrs, cursors)
    return time.perf_counter_ns() - t0, addrs


def _stats(samples: list[int]) -> tuple[float, float, float]:
    """Median, mean and p99 in microseconds."""
    ordered = sorted(samples)
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    return statistics.median(ordered) / 1000, statistics.fmean(samples) / 1000, p99 / 1000


Row = tuple[str, int, float, float, float]


def _fill(cidr: str, count: int, seed: int, repeat: int) -> list[Row]:
    """Pool the samples of ``repeat`` fresh fills per window (a shared machine is noisy)."""
    windows: dict[str, list[int]] = {}
    for r in range(repeat):
        for label, samples in _fill_once(cidr, count, seed + r):
            windows.setdefault(label, []).extend(samples)
    return [(label, len(s) // repeat, *_stats(s)) for label, s in windows.items()]


def _fill_once(cidr: str, count: int, seed: int) -> list[tuple[str, list[int]]]:
    alloc = NetworkAllocator(_network(cidr))
    times: list[int] = []
    held: list[IPInterface] = []
    for _ in range(count):
        ns, addrs = _one(alloc)
        times.append(ns)
        held.extend(addrs)
    mid = (count - WINDOW) // 2
    rng = random.Random(seed)
    victims = rng.sample(held, len(held) // 10)
    alloc.release(victims)
    again = [_one(alloc)[0] for _ in victims]
    if alloc.utilisation()[cidr][0] != count:
        raise SystemExit(f"{cidr}: expected {count} addresses in use after re-allocation")
    return [
        ("first 1,000", times[:WINDOW]),
        ("middle 1,000", times[mid : mid + WINDOW]),
        ("last 1,000", times[-WINDOW:]),
        (f"re-allocate after 10% released ({len(victims):,})", again),
    ]


def _measure(build: Callable[[], object]) -> tuple[int, object]:
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    obj = build()
    after = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    return after - before, obj


def _memory(seed: int) -> list[tuple[str, int, int]]:
    net = ipaddress.ip_network("10.0.0.0/16")
    values = list(range(int(net.network_address), int(net.broadcast_address) + 1))
    full_bytes, full = _measure(lambda: AddressIndex(values))
    rng = random.Random(seed)
    holes = rng.sample(values[2:-1], len(values) // 10)

    def fragmented() -> AddressIndex:
        idx = AddressIndex(values)
        for v in holes:
            idx.discard(v)
        return idx

    frag_bytes, frag = _measure(fragmented)
    set_bytes, _ = _measure(lambda: set(values))
    assert isinstance(full, AddressIndex) and isinstance(frag, AddressIndex)
    return [
        ("AddressIndex, full /16", full_bytes, full.runs),
        ("AddressIndex, /16 with 10% released", frag_bytes, frag.runs),
        ("plain set of the same 65,536 ints (for scale)", set_bytes, 0),
    ]


def main() -> None:
    """Run the benchmark and print Markdown tables."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--repeat", type=int, default=3, help="fresh fills per network")
    args = parser.parse_args()

    v4_count = 2**16 - 3  # network, gateway and broadcast are never handed out
    started = time.perf_counter()
    for cidr, count in (("10.0.0.0/16", v4_count), ("fd00::/64", v4_count)):
        print(
            f"\n{cidr}: {count:,} allocations via allocate()+commit(), one at a time, "
            f"{args.repeat} fills pooled\n"
        )
        print("| window | allocations per fill | median µs | mean µs | p99 µs |")
        print("|---|---:|---:|---:|---:|")
        rows = _fill(cidr, count, args.seed, args.repeat)
        for label, n, median, mean, p99 in rows:
            print(f"| {label} | {n:,} | {median:.1f} | {mean:.1f} | {p99:.1f} |")
        print(f"\nlast 1,000 / first 1,000 (median): {rows[2][2] / rows[0][2]:.2f}")
    print("\nMemory (tracemalloc)\n")
    print("| structure | bytes | runs |")
    print("|---|---:|---:|")
    for label, size, runs in _memory(args.seed):
        print(f"| {label} | {size:,} | {runs:,} |")
    print(f"\ntotal benchmark time {time.perf_counter() - started:.1f} s")


if __name__ == "__main__":
    main()
