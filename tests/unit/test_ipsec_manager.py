"""IpsecManager's logic against a fake etcd and a fake kernel (the real ones: tests/ns);
and the parsers of ``ip xfrm`` output and the nft rules it writes."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from ipaddress import IPv4Address
from typing import Any

import pytest

from netd.cluster import ipsec as ipsec_mod
from netd.cluster import ipsec_keys as k
from netd.cluster.ipsec import IpsecManager
from netd.errors import KernelError, StoreCorrupt
from netd.kernel import ipsec_nft, xfrm
from netd.store import etcd_txn as t

A, B, C = IPv4Address("10.251.0.1"), IPv4Address("10.251.0.2"), IPv4Address("10.251.0.3")


@dataclass
class FakeEtcd:
    """The three EtcdStore methods the manager uses, over one dict; ``rivals`` writes a
    rival ring just before the next commit (another node winning the race)."""

    data: dict[str, tuple[str, int]]
    revision: int = 1
    rivals: int = 0

    def key(self, rest: str) -> str:
        return "/netd/" + rest

    def read(self, doing: str, *ops: t.Json) -> tuple[int, list[list[t.Entry]]]:
        out = []
        for op in ops:
            key = t.unb64(op["request_range"]["key"])
            found = self.data.get(key)
            out.append([t.Entry(key, found[0], 1, found[1])] if found else [])
        return self.revision, out

    def commit(self, doing: str, compare: list[t.Json], ops: list[t.Json]) -> bool:
        if self.rivals:
            self.rivals -= 1
            self._put("/netd/ipsec/keys", k.dump_ring((k.KeyGen(1, b"\x09" * 32, 0.0),)))
        (cmp,) = compare
        key = t.unb64(cmp["key"])
        current = self.data.get(key, ("", 0))[1]
        expected = cmp.get("mod_revision", 0)
        if current != expected:
            return False
        for op in ops:
            put = op["request_put"]
            self._put(t.unb64(put["key"]), t.unb64(put["value"]))
        return True

    def _put(self, key: str, value: str) -> None:
        self.revision += 1
        self.data[key] = (value, self.revision)


class FakeKernel:
    """netd.kernel.xfrm and ipsec_nft over dicts."""

    def __init__(self) -> None:
        self.states: dict[Any, k.StateSpec] = {}
        self.policies: dict[Any, k.PolicySpec] = {}
        self.vnis: frozenset[int] = frozenset()
        self.writes = 0
        self.refuse_states = False

    def add_states(self, states: list[k.StateSpec]) -> None:
        if self.refuse_states:
            raise KernelError("adding IPsec SA: Requested type not found")
        for s in states:
            assert s.key not in self.states
            self.states[s.key] = s
            self.writes += 1

    def update_states(self, states: list[k.StateSpec]) -> None:
        for s in states:
            self.states[s.key] = s
            self.writes += 1

    def delete_state(self, key: Any) -> None:
        self.states.pop(key, None)
        self.writes += 1

    def set_policy(self, p: k.PolicySpec) -> None:
        self.policies[(p.src, p.dst)] = p
        self.writes += 1

    def delete_policy(self, key: Any) -> None:
        self.policies.pop(key, None)
        self.writes += 1

    def apply(self, vnis: Any) -> None:
        self.vnis = frozenset(vnis)
        self.writes += 1

    def current(self) -> str:
        return "table" if self.vnis else ""


@pytest.fixture
def kernel(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeKernel]:
    fake = FakeKernel()
    for name in ("add_states", "update_states", "delete_state", "set_policy", "delete_policy"):
        monkeypatch.setattr(xfrm, name, getattr(fake, name))
    monkeypatch.setattr(xfrm, "list_states", lambda: dict(fake.states))
    monkeypatch.setattr(xfrm, "list_policies", lambda: dict(fake.policies))
    monkeypatch.setattr(ipsec_nft, "apply", fake.apply)
    monkeypatch.setattr(ipsec_nft, "current", fake.current)
    yield fake


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def manager(etcd: FakeEtcd, clock: Clock, rotate: float = 60.0) -> IpsecManager:
    counter = iter(range(1, 1000))
    return IpsecManager(etcd, rotate, clock=clock,  # type: ignore[arg-type]
                        secret=lambda n: bytes([next(counter)]) * n)  # fmt: skip


def test_sync_converges_and_is_idempotent(kernel: FakeKernel) -> None:
    etcd, clock = FakeEtcd({}), Clock()
    m = manager(etcd, clock)
    m.sync({100}, A, {B, C})
    assert len(kernel.states) == 4 and set(kernel.policies) == {(A, B), (A, C)}
    assert kernel.vnis == {100}
    writes = kernel.writes
    m.sync({100}, A, {B, C})
    assert kernel.writes == writes  # nothing due, nothing written
    m.sync({100}, A, {B})  # C went down
    assert set(kernel.policies) == {(A, B)} and len(kernel.states) == 2


def test_two_nodes_share_one_ring_and_agree(kernel: FakeKernel) -> None:
    etcd, clock = FakeEtcd({}), Clock()
    manager(etcd, clock).sync({5}, A, {B})
    a_states = dict(kernel.states)
    kernel.states.clear()
    manager(etcd, clock).sync({5}, B, {A})
    assert kernel.states == a_states  # B derived exactly A's SAs from the same ring


def test_rotation_adds_then_switches_then_drops(kernel: FakeKernel) -> None:
    etcd, clock = FakeEtcd({}), Clock()
    m = manager(etcd, clock, rotate=60.0)
    m.sync({5}, A, {B})
    assert kernel.policies[(A, B)].spi == k.spi(1, A, B)
    clock.now += 60
    m.sync({5}, A, {B})
    assert [g.id for g in m.ring] == [1, 2] and len(kernel.states) == 4
    assert kernel.policies[(A, B)].spi == k.spi(1, A, B)  # gen 2 only receives
    clock.now += 60
    m.sync({5}, A, {B})
    assert kernel.policies[(A, B)].spi == k.spi(2, A, B)
    clock.now += 60
    m.sync({5}, A, {B})
    assert [g.id for g in m.ring] == [2, 3, 4] and len(kernel.states) == 6
    assert k.spi(1, A, B) not in {key[2] for key in kernel.states}


def test_a_lost_race_reads_the_winners_ring(kernel: FakeKernel) -> None:
    etcd, clock = FakeEtcd({}, rivals=1), Clock()
    m = manager(etcd, clock)
    m.sync({5}, A, {B})
    # The rival's generation 1 was kept (not overwritten); being old, it was rotated once.
    assert [g.id for g in m.ring] == [1, 2] and m.ring[0].secret == b"\x09" * 32
    assert k.parse_ring("/netd/ipsec/keys", etcd.data["/netd/ipsec/keys"][0]) == m.ring


def test_hostile_ring_changes_nothing(kernel: FakeKernel) -> None:
    etcd = FakeEtcd({"/netd/ipsec/keys": ('{"version": 1, "keys": [{"id": -3}]}', 4)})
    with pytest.raises(StoreCorrupt) as err:
        manager(etcd, Clock()).sync({5}, A, {B})
    assert "/netd/ipsec/keys" in err.value.message and err.value.field == "keys[0]"
    assert not kernel.states and not kernel.policies and kernel.writes == 0


def test_no_esp_fails_closed_policies_and_marks_still_go_in(kernel: FakeKernel) -> None:
    kernel.refuse_states = True
    with pytest.raises(KernelError) as err:
        manager(FakeEtcd({}), Clock()).sync({5}, A, {B})
    assert "Requested type not found" in err.value.message
    # VXLAN of VNI 5 is marked and the policy demands an SA that does not exist: dropped.
    assert kernel.vnis == {5} and set(kernel.policies) == {(A, B)}


def test_no_encrypted_network_removes_everything_then_stays_quiet(kernel: FakeKernel) -> None:
    m = manager(FakeEtcd({}), Clock())
    m.sync({5, 6}, A, {B, C})
    m.sync(set(), A, {B, C})
    assert not kernel.states and not kernel.policies and not kernel.vnis
    writes = kernel.writes
    m.sync(set(), A, {B, C})
    assert kernel.writes == writes


# --- parsers and builders -----------------------------------------------------------------------

STATES = f"""src 10.251.0.2 dst 10.251.0.1
\tproto esp spi 0x2000abcd reqid {xfrm.REQID} mode transport
\treplay-window 64 
\tauth-trunc hmac(sha256) 0x{"11" * 32} 128
\tenc cbc(aes) 0x{"22" * 16}
\tanti-replay context: seq 0x0, oseq 0x0, bitmap 0x00000000
\tsel src 10.251.0.2/32 dst 10.251.0.1/32 
src 10.251.0.1 dst 10.251.0.9 
\tproto esp spi 0x00001234 reqid 7 mode transport
\tenc cbc(aes) 0x{"33" * 16}
src fd00::1 dst fd00::2
\tproto esp spi 0x00000999 reqid {xfrm.REQID} mode transport
"""  # noqa: W291

POLICIES = f"""src 10.251.0.1/32 dst 10.251.0.2/32 proto udp dport 4789 
\tdir out priority 1000 ptype main 
\tmark 0xe50000/0xff0000 
\ttmpl src 10.251.0.1 dst 10.251.0.2
\t\tproto esp spi 0x2000abcd reqid {xfrm.REQID} mode transport
src 10.251.0.1/32 dst 10.251.0.3/32 proto udp dport 4789 
\tdir out priority 1000 ptype main 
\ttmpl src 10.251.0.1 dst 10.251.0.3
\t\tproto esp spi 0x2000abcd reqid {xfrm.REQID} mode transport
src 10.251.0.1/32 dst 10.251.0.4/32 proto udp dport 4789 
\tdir out priority 1000 ptype main 
\tmark 0xe50000/0xff0000 
\ttmpl src 10.251.0.1 dst 10.251.0.4
\t\tproto esp spi 0x2000abcd reqid 5 mode transport
"""  # noqa: W291


def test_parse_states_keeps_only_netds() -> None:
    found = xfrm.parse_states(STATES)
    assert list(found) == [(B, A, 0x2000ABCD)]
    s = found[(B, A, 0x2000ABCD)]
    assert s.auth == b"\x11" * 32 and s.enc == b"\x22" * 16


def test_parse_policies_keeps_only_netds() -> None:
    # The second has no mark (someone else's), the third another reqid.
    assert xfrm.parse_policies(POLICIES) == {(A, B): k.PolicySpec(A, B, 0x2000ABCD)}


def test_nft_ruleset_marks_and_guards_only_the_encrypted_vnis() -> None:
    text = ipsec_nft.build_ruleset({200, 100})
    assert "@th,96,24 { 100, 200 } meta mark set meta mark | 0x00e50000" in text
    assert "@th,96,24 { 100, 200 } meta ipsec missing counter drop" in text
    assert text.startswith("table inet netd_ipsec\ndelete table inet netd_ipsec\n")
    assert ipsec_nft.build_ruleset(()) == "table inet netd_ipsec\ndelete table inet netd_ipsec\n"
    with pytest.raises(ValueError, match="VNI 0"):
        ipsec_nft.build_ruleset({0})


def test_keys_never_on_a_command_line(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[list[str], str | None]] = []

    def fake_ip(args: list[str], doing: str, stdin: str | None = None) -> str:
        calls.append((list(args), stdin))
        return ""

    monkeypatch.setattr(xfrm, "_ip", fake_ip)
    s = k.state(k.KeyGen(1, b"\x07" * 32, 0.0), A, B)
    xfrm.add_states([s])
    xfrm.update_states([s])
    for args, stdin in calls:
        assert args == ["-batch", "-"]
        assert stdin is not None and s.enc.hex() in stdin and s.auth.hex() in stdin


def test_manager_module_has_no_secret_logging() -> None:
    # The ring is logged by ids only (KeyGen.__repr__ hides the secret).
    assert "secret" not in repr(k.KeyGen(1, b"\x01" * 32, 0.0))
    assert ipsec_mod.RETRIES >= 2
