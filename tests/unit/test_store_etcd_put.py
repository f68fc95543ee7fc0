"""The planner of EtcdStore.put_endpoint (netd.store.etcd_put): compares and ops, pure."""

from __future__ import annotations

import pytest

from netd.errors import Conflict, InvalidInput
from netd.store import etcd_txn as t
from netd.store.etcd_put import BlockClaimed, Held, PutKeys, PutPlan, PutView, check_node, plan_put

KEYS = PutKeys(
    network="/n/networks/N",
    endpoint="/n/endpoints/N/c1/eth0",
    allocations="/n/allocations/N/",
    blocks={"10.0.0.2": "/n/blocks/N/10.0.0.0/26", "10.0.0.3": "/n/blocks/N/10.0.0.0/26"},
)


def plan(view: PutView, addresses: list[str], must: frozenset[str] = frozenset()) -> PutPlan:
    return plan_put(
        keys=KEYS,
        view=view,
        addresses=addresses,
        doc="{}",
        holder="c1/eth0",
        node="h1",
        extra_ops=[],
        must_claim=must,
        doing="putting c1",
        network_name="ov",
    )


def test_new_endpoint_in_a_free_block_claims_it() -> None:
    p = plan(PutView(7, None, {"10.0.0.2": None}, {"/n/blocks/N/10.0.0.0/26": None}), ["10.0.0.2"])
    assert p.guard == [
        t.unchanged("/n/networks/N", 7),
        t.absent("/n/endpoints/N/c1/eth0"),
        t.absent("/n/allocations/N/10.0.0.2"),
        t.absent("/n/blocks/N/10.0.0.0/26"),
    ]
    assert t.put("/n/blocks/N/10.0.0.0/26", "h1") in p.ops
    assert p.claimed == ("/n/blocks/N/10.0.0.0/26",) and p.borrowed == ()


def test_two_addresses_in_one_block_claim_it_once() -> None:
    view = PutView(7, None, {"10.0.0.2": None, "10.0.0.3": None}, {})
    p = plan(view, ["10.0.0.2", "10.0.0.3"])
    assert p.claimed == ("/n/blocks/N/10.0.0.0/26",)
    assert sum(op == t.put("/n/blocks/N/10.0.0.0/26", "h1") for op in p.ops) == 1


def test_own_block_is_compared_by_value_and_rewritten() -> None:
    view = PutView(7, None, {"10.0.0.2": None}, {"/n/blocks/N/10.0.0.0/26": "h1"})
    p = plan(view, ["10.0.0.2"])
    assert t.value_is("/n/blocks/N/10.0.0.0/26", "h1") in p.guard
    assert t.put("/n/blocks/N/10.0.0.0/26", "h1") in p.ops


def test_another_nodes_block_is_a_borrow_unless_a_claim_was_required() -> None:
    view = PutView(7, None, {"10.0.0.2": None}, {"/n/blocks/N/10.0.0.0/26": "h2"})
    p = plan(view, ["10.0.0.2"])
    assert p.borrowed == ("10.0.0.2",) and p.claimed == ()
    assert t.value_is("/n/blocks/N/10.0.0.0/26", "h2") in p.guard
    assert not [op for op in p.ops if "request_put" in op and op["request_put"]["key"] == t.b64(
        "/n/blocks/N/10.0.0.0/26"
    )]  # fmt: skip
    with pytest.raises(Conflict) as exc:
        plan(view, ["10.0.0.2"], frozenset({"/n/blocks/N/10.0.0.0/26"}))
    assert exc.value.field == "block" and "claimed by node 'h2' first" in str(exc.value)
    assert isinstance(exc.value, BlockClaimed)
    assert (exc.value.cidr, exc.value.owner, exc.value.value) == (
        "10.0.0.0/26",
        "h2",
        "10.0.0.0/26",
    )


def test_a_replace_touches_no_block_and_drops_stale_addresses() -> None:
    view = PutView(7, (41, ("10.0.0.2", "10.0.0.9")), {"10.0.0.2": Held("c1/eth0", 41)}, {})
    p = plan(view, ["10.0.0.2"])
    assert p.guard == [
        t.unchanged("/n/networks/N", 7),
        t.unchanged("/n/endpoints/N/c1/eth0", 41),
        t.unchanged("/n/allocations/N/10.0.0.2", 41),
    ]
    assert t.delete("/n/allocations/N/10.0.0.9") in p.ops and p.claimed == ()


def test_an_address_held_by_another_endpoint_is_a_conflict_naming_it() -> None:
    view = PutView(7, None, {"10.0.0.2": Held("c9/eth1", 3)}, {})
    with pytest.raises(Conflict, match="held by container c9 interface eth1") as exc:
        plan(view, ["10.0.0.2"])
    assert exc.value.field == "address"


@pytest.mark.parametrize("bad", ["", "a b", "a/b", "x" * 254, 5])
def test_bad_node_names_are_refused(bad: object) -> None:
    with pytest.raises(InvalidInput) as exc:
        check_node(bad)
    assert exc.value.field == "node_name"


def test_node_names_that_are_fine() -> None:
    assert check_node(None) is None
    assert check_node("h1.example.com") == "h1.example.com"


def test_a_lost_claim_is_told_before_a_taken_address() -> None:
    """So the caller skips the block instead of trying its addresses one by one."""
    view = PutView(7, None, {"10.0.0.2": Held("c9/eth0", 3)}, {"/n/blocks/N/10.0.0.0/26": "h2"})
    with pytest.raises(BlockClaimed):
        plan(view, ["10.0.0.2"], frozenset({"/n/blocks/N/10.0.0.0/26"}))
    with pytest.raises(Conflict) as exc:
        plan(view, ["10.0.0.2"])
    assert exc.value.field == "address"
