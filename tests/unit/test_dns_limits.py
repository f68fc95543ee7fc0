"""Fair shares and token buckets (netd.dns.limits) and the worker's admission rules."""

from __future__ import annotations

import logging
import threading

import pytest

from netd.dns.admission import UNKNOWN, Admission
from netd.dns.limits import FORWARDS, TCP, FairShare, Shares, TokenBucket
from netd.dns.records import Tables

SMALL = Shares(total=100, hard=120, per_client=30, per_group=60, min_share=5)


def fill(fair: FairShare, client: str, group: str, n: int) -> int:
    return sum(fair.admit(client, group) for _ in range(n))


def test_a_lone_flooder_is_held_at_its_client_cap() -> None:
    fair = FairShare(SMALL)
    assert fill(fair, "flood", "net", 1000) == 30
    assert fair.refused == 970
    # a neighbour on the same network still gets its slots
    assert fill(fair, "good", "net", 5) == 5
    assert fair.snapshot() == {"held": 35, "refused": 970, "clients": 2, "groups": 1}


def test_shares_shrink_as_clients_become_busy_and_the_network_is_capped() -> None:
    fair = FairShare(SMALL)
    got = [fill(fair, f"c{i}", "net", 100) for i in range(4)]
    # c0 alone: 30; c1: 100//2 = 50 -> 30; then the network is at its cap (60): c2 and c3
    # get their guaranteed minimum only
    assert got == [30, 30, 5, 5]
    # another network is not affected by the first one's cap
    assert fill(fair, "d0", "other", 100) == 20  # 5 busy clients: 100 // 5
    assert fill(fair, "e0", "third", 100) == 16  # 6 busy clients: 100 // 6
    assert fair.held == 106


def test_hard_cap_and_the_minimum_share() -> None:
    fair = FairShare(SMALL)
    got = [fill(fair, f"c{i}", f"g{i}", 100) for i in range(40)]
    assert sum(got) == SMALL.hard  # never more than the hard ceiling in total
    assert min(x for x in got if x) >= SMALL.min_share
    assert not fair.admit("late", "gl")


def test_release_gives_slots_back_and_forgets_idle_clients() -> None:
    fair = FairShare(SMALL)
    assert fill(fair, "a", "n", 30) == 30
    assert not fair.admit("a", "n")
    fair.release("a", "n")
    assert fair.admit("a", "n")
    for _ in range(30):
        fair.release("a", "n")
    assert fair.snapshot()["clients"] == 0 and fair.held == 0
    assert fair.holding("a") == 0


def test_concurrent_admit_and_release_keep_exact_counts() -> None:
    fair = FairShare(FORWARDS)

    def work(i: int) -> None:
        for _ in range(2000):
            if fair.admit(f"c{i % 5}", f"n{i % 2}"):
                fair.release(f"c{i % 5}", f"n{i % 2}")

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert fair.snapshot() == {"held": 0, "refused": 0, "clients": 0, "groups": 0}


@pytest.mark.parametrize(
    "bad",
    [
        {"total": 10, "hard": 5, "per_client": 2, "per_group": 5, "min_share": 1},
        {"total": 10, "hard": 10, "per_client": 20, "per_group": 5, "min_share": 1},
        {"total": 10, "hard": 10, "per_client": 2, "per_group": 5, "min_share": 0},
    ],
)
def test_inconsistent_shares_are_refused(bad: dict[str, int]) -> None:
    with pytest.raises(ValueError, match=r"hard limit|shares must"):
        Shares(**bad)


def test_default_shares_are_consistent() -> None:
    assert FORWARDS.per_client < FORWARDS.per_group < FORWARDS.total < FORWARDS.hard
    assert TCP.per_client == 16 and TCP.hard > TCP.total


def test_token_bucket_rate_burst_and_refill() -> None:
    b = TokenBucket(rate=10, burst=5)
    assert [b.allow("k", 0.0) for _ in range(7)] == [True] * 5 + [False] * 2
    assert b.allow("other", 0.0)  # per key
    assert not b.allow("k", 0.05)  # half a token
    assert b.allow("k", 0.2)  # 1.5 tokens by now
    assert b.denied == 3


def test_token_bucket_bounds_its_keys() -> None:
    b = TokenBucket(rate=1, burst=1, max_keys=3)
    assert all(b.allow(f"k{i}", 0.0) for i in range(3))
    assert not b.allow("k3", 0.0)  # full of busy keys: refused, not grown
    assert b.allow("k3", 5.0)  # the others refilled and were forgotten


def _tables() -> Tables:
    doc = {
        "id": "n1",
        "name": "net",
        "forward": True,
        "dns_servers": [],
        "subnets": ["10.1.0.0/24", "fd01::/64"],
        "endpoints": [
            {"key": "eth0/c1", "cid": "c1", "names": ["web"], "addrs": ["10.1.0.2", "fd01::2"],
             "srv": [], "dns": []},
        ],
    }  # fmt: skip
    return Tables({"n1": doc}, "dns.netd")


def test_keys_one_client_per_container_and_the_network_of_the_gateway() -> None:
    t = _tables()
    v4, v6 = t.clients["10.1.0.2"], t.clients["fd01::2"]
    assert v4.cid == v6.cid == "c1"  # both addresses of a container are one client
    assert Admission.keys(t, v4.cid, "10.1.0.2", "10.1.0.1", False) == ("c1", "n1")
    assert Admission.keys(t, v6.cid, "fd01::2", "fd01::1", False) == ("c1", "n1")
    # sources that are no container share one key, whatever their address
    assert Admission.keys(t, "", "10.1.0.77", "10.1.0.1", False) == (UNKNOWN, "n1")
    assert Admission.keys(t, "", "10.1.0.78", "10.1.0.1", False) == (UNKNOWN, "n1")
    assert Admission.keys(t, "host", "127.0.0.1", "127.0.0.1", True) == ("host:127.0.0.1", "host")


def test_unknown_sources_share_sixteen_tcp_connections(caplog: pytest.LogCaptureFixture) -> None:
    t = _tables()
    adm = Admission()
    caplog.set_level(logging.WARNING, "netd.dns.worker")
    got = [
        adm.admit_tcp(Admission.keys(t, "", f"10.1.0.{i}", "10.1.0.1", False), f"10.1.0.{i}")
        for i in range(100, 200)
    ]
    assert sum(got) == TCP.per_client
    # the container itself still connects
    assert adm.admit_tcp(Admission.keys(t, "c1", "10.1.0.2", "10.1.0.1", False), "10.1.0.2")
    warnings = [r for r in caplog.records if "over its share of TCP" in r.getMessage()]
    assert len(warnings) == 1  # one warning per client per minute, not one per refusal


def test_servfail_answers_over_share_are_rate_limited() -> None:
    adm = Admission()
    keys = ("c1", "n1")
    assert fill(adm.forwards, *keys, 1000) == FORWARDS.per_client
    answered = sum(adm.refusal(keys, 0.0) for _ in range(6000))
    assert answered == 5000  # one second's worth of SERVFAIL, then dropped
    assert adm.snapshot()["servfail_dropped"] == 1000
    assert adm.refusal(keys, 1.0)  # refilled


def test_a_quiet_neighbour_is_admitted_when_flooders_fill_its_network() -> None:
    fair = FairShare(FORWARDS)
    for i in range(4):  # 4 x 256 = the network's 1024
        fill(fair, f"flood{i}", "net", 1000)
    assert fair.snapshot()["held"] == FORWARDS.per_group
    assert fill(fair, "good", "net", FORWARDS.min_share) == FORWARDS.min_share
    assert not fair.admit("good", "net")  # beyond its minimum the network cap applies
