"""The encrypted overlay's pure core: key ring, rotation, per-pair SPIs and keys, plan and diff."""

from __future__ import annotations

import json
from ipaddress import IPv4Address

import pytest

from netd.cluster import ipsec_keys as k
from netd.errors import StoreCorrupt

A, B, C = IPv4Address("10.251.0.1"), IPv4Address("10.251.0.2"), IPv4Address("10.251.0.3")
KEY = "/netd/ipsec/keys"


def gen(i: int, created: float = 0.0) -> k.KeyGen:
    return k.KeyGen(i, bytes([i]) * 32, created)


# --- per-pair SPIs and keys ------------------------------------------------------------------


def test_both_ends_derive_the_same_sa_for_each_direction() -> None:
    g = gen(4)
    # What A sends to B with is what B receives with: computed on each side independently.
    a_out = k.plan_xfrm((g,), A, {B, C}).states
    b_in = k.plan_xfrm((g,), B, {A, C}).states
    sent = next(s for s in a_out.values() if s.src == A and s.dst == B)
    received = next(s for s in b_in.values() if s.src == A and s.dst == B)
    assert sent == received
    assert sent.spi == k.spi(4, A, B)
    # The two directions differ in SPI and in keys.
    back = next(s for s in a_out.values() if s.src == B and s.dst == A)
    assert back.spi != sent.spi and back.enc != sent.enc and back.auth != sent.auth


def test_spis_never_reserved_and_distinct_per_generation() -> None:
    spis = {k.spi(g, A, B) for g in range(1, 16)}
    assert len(spis) == 15  # fifteen slots: the three generations of a ring never collide
    assert all(s > 255 for s in spis)  # 1-255 are reserved (RFC 4303 §2.1)
    assert k.spi(1, A, B) >> 28 == 2 and k.spi(14, A, B) >> 28 == 15


def test_sa_keys_are_per_pair_direction_and_generation() -> None:
    keys = {k.sa_keys(g, s, d) for g in (gen(1), gen(2)) for s, d in ((A, B), (B, A), (A, C))}
    assert len(keys) == 6
    enc, auth = k.sa_keys(gen(1), A, B)
    assert (len(enc), len(auth)) == (16, 32)
    assert k.sa_keys(gen(1), A, B) == (enc, auth)  # deterministic


def test_secrets_never_in_repr() -> None:
    g = gen(9)
    assert g.secret.hex() not in repr(g)
    s = k.state(g, A, B)
    assert s.enc.hex() not in repr(s) and s.auth.hex() not in repr(s)


# --- rotation -------------------------------------------------------------------------------


def test_first_key_then_rotation_keeps_the_previous_keys() -> None:
    ring = k.next_ring((), 100.0, 60.0, b"\x01" * 32)
    assert ring is not None and [g.id for g in ring] == [1]
    assert k.primary(ring).id == 1
    assert k.next_ring(ring, 159.0, 60.0, b"\x02" * 32) is None  # not due
    ring = k.next_ring(ring, 160.0, 60.0, b"\x02" * 32)
    assert ring is not None and [g.id for g in ring] == [1, 2]
    # The new key only receives for one period: the old one still sends.
    assert k.primary(ring).id == 1
    ring = k.next_ring(ring, 220.0, 60.0, b"\x03" * 32)
    assert ring is not None and [g.id for g in ring] == [1, 2, 3]
    assert k.primary(ring).id == 2
    ring = k.next_ring(ring, 280.0, 60.0, b"\x04" * 32)
    assert ring is not None and [g.id for g in ring] == [2, 3, 4]  # KEEP = 3
    assert k.primary(ring).id == 3


def test_rotation_overlap_no_node_sends_what_another_cannot_receive() -> None:
    """Two nodes a ring apart (one read the rotation, the other not yet) still understand
    each other in both directions: the overlap that makes a rotation lose no packet."""
    ring: tuple[k.KeyGen, ...] = ()
    now = 0.0
    for i in range(1, 7):
        new = k.next_ring(ring, now, 10.0, bytes([i]) * 32)
        assert new is not None
        behind, ahead = ring, new
        if behind:
            # ahead sends with its primary: behind has SAs for every generation of its ring.
            assert k.primary(ahead).id in {g.id for g in behind}
            assert k.primary(behind).id in {g.id for g in ahead}
            plan_ahead = k.plan_xfrm(ahead, A, {B})
            plan_behind = k.plan_xfrm(behind, B, {A})
            assert plan_ahead.policies[(A, B)].spi in {
                key[2] for key in plan_behind.states if key[1] == B
            }
            assert plan_behind.policies[(B, A)].spi in {
                key[2] for key in plan_ahead.states if key[1] == A
            }
        ring, now = new, now + 10.0


def test_a_clock_ahead_never_rotates_every_pass() -> None:
    ring = (gen(3, created=10_000.0),)
    assert k.next_ring(ring, 100.0, 60.0, b"\x05" * 32) is None


# --- the record in etcd: hostile input ----------------------------------------------------------


def test_ring_round_trips() -> None:
    ring = (gen(1, 5.0), gen(2, 65.0))
    assert k.parse_ring(KEY, k.dump_ring(ring)) == ring


GOOD = {"id": 1, "secret": "ab" * 32, "created": 1.0}


@pytest.mark.parametrize(
    ("record", "field"),
    [
        ("not json", "record"),
        ("[]", "record"),
        (json.dumps({"version": 2, "keys": [GOOD]}), "version"),
        (json.dumps({"version": 1, "keys": []}), "keys"),
        (json.dumps({"version": 1, "keys": "x"}), "keys"),
        (json.dumps({"version": 1, "keys": [GOOD] * 17}), "keys"),
        (json.dumps({"version": 1, "keys": [{**GOOD, "extra": 1}]}), "keys[0]"),
        (json.dumps({"version": 1, "keys": [{**GOOD, "id": 0}]}), "keys[0].id"),
        (json.dumps({"version": 1, "keys": [{**GOOD, "id": True}]}), "keys[0].id"),
        (json.dumps({"version": 1, "keys": [{**GOOD, "id": "1"}]}), "keys[0].id"),
        (json.dumps({"version": 1, "keys": [GOOD, GOOD]}), "keys[1].id"),
        (json.dumps({"version": 1, "keys": [{**GOOD, "secret": "ab" * 16}]}), "keys[0].secret"),
        (json.dumps({"version": 1, "keys": [{**GOOD, "secret": "zz" * 32}]}), "keys[0].secret"),
        (json.dumps({"version": 1, "keys": [{**GOOD, "secret": 5}]}), "keys[0].secret"),
        (json.dumps({"version": 1, "keys": [{**GOOD, "created": "now"}]}), "keys[0].created"),
        (json.dumps({"version": 1, "keys": [{**GOOD, "created": -1}]}), "keys[0].created"),
        ('{"version": 1, "keys": [{"id": 1, "secret": "' + "ab" * 32 + '", "created": NaN}]}',
         "keys[0].created"),
    ],
)  # fmt: skip
def test_hostile_rings_are_refused_naming_key_and_field(record: str, field: str) -> None:
    with pytest.raises(StoreCorrupt) as err:
        k.parse_ring(KEY, record)
    assert err.value.field == field
    assert KEY in err.value.message and field in err.value.message
    assert "\n" not in err.value.message


def test_a_refused_secret_is_not_echoed() -> None:
    bad = "Z" * 63 + "x"
    with pytest.raises(StoreCorrupt) as err:
        k.parse_ring(KEY, json.dumps({"version": 1, "keys": [{**GOOD, "secret": bad}]}))
    assert bad not in err.value.message


# --- plan and diff ----------------------------------------------------------------------------


def test_plan_has_both_directions_every_generation_and_one_policy_per_peer() -> None:
    ring = (gen(1), gen(2), gen(3))
    plan = k.plan_xfrm(ring, A, {B, C, A})
    assert len(plan.states) == 2 * 3 * 2  # peers, generations, directions; itself skipped
    assert set(plan.policies) == {(A, B), (A, C)}
    assert plan.policies[(A, B)].spi == k.spi(2, A, B)  # the primary is the second newest
    first_outbound = next(i for i, s in enumerate(plan.states.values()) if s.src == A)
    assert all(s.dst == A for s in list(plan.states.values())[:first_outbound])
    assert first_outbound == 6  # every inbound SA before any outbound one


def test_diff_is_empty_once_applied_and_rekeys_on_rotation() -> None:
    ring = (gen(1),)
    plan = k.plan_xfrm(ring, A, {B})
    first = k.diff_xfrm(plan, {}, {})
    assert len(first.add_states) == 2 and len(first.set_policies) == 1
    assert k.diff_xfrm(plan, plan.states, plan.policies).empty
    rotated = k.plan_xfrm((gen(1), gen(2)), A, {B})
    d = k.diff_xfrm(rotated, plan.states, plan.policies)
    assert {s.spi for s in d.add_states} == {k.spi(2, A, B), k.spi(2, B, A)}
    assert not d.set_policies and not d.del_states  # gen 1 still sends
    later = k.plan_xfrm((gen(1), gen(2), gen(3)), A, {B})
    d = k.diff_xfrm(later, rotated.states, rotated.policies)
    assert [p.spi for p in d.set_policies] == [k.spi(2, A, B)]
    final = k.plan_xfrm((gen(2), gen(3), gen(4)), A, {B})
    d = k.diff_xfrm(final, later.states, later.policies)
    assert set(d.del_states) == {(A, B, k.spi(1, A, B)), (B, A, k.spi(1, B, A))}


def test_diff_replaces_a_state_with_other_keys_and_drops_gone_peers() -> None:
    plan = k.plan_xfrm((gen(1),), A, {B})
    tampered = {key: k.StateSpec(s.src, s.dst, s.spi, b"\0" * 16, s.auth)
                for key, s in plan.states.items()}  # fmt: skip
    d = k.diff_xfrm(plan, tampered, plan.policies)
    assert len(d.update_states) == 2 and not d.add_states
    gone = k.diff_xfrm(k.plan_xfrm((gen(1),), A, set()), plan.states, plan.policies)
    assert len(gone.del_states) == 2 and gone.del_policies == ((A, B),)


def test_an_spi_collision_drops_only_that_inbound_sa_and_says_so(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(k, "spi", lambda g, src, dst: (g % 15 + 1) << 28 | 7)
    plan = k.plan_xfrm((gen(1),), A, {B, C})
    # C's packets to A would carry B's SPI: that SA is left out (they fail B's SA: dropped);
    # A still sends to both, encrypted (a policy each: nothing of theirs goes in clear).
    assert set(plan.policies) == {(A, B), (A, C)}
    assert [s.src for s in plan.states.values() if s.dst == A] == [B]
    assert {s.dst for s in plan.states.values() if s.src == A} == {B, C}
    assert len(plan.conflicts) == 1 and "10.251.0.3" in plan.conflicts[0]
