"""Block IPAM (netd.ipam.blocks): arithmetic, Calico's policy, reservations, static, IPv6, views."""

from __future__ import annotations

import re
from ipaddress import ip_address, ip_network

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from kit import network, subnet

from netd.errors import AddressExhausted, Conflict, InvalidInput
from netd.ipam.allocator import NetworkAllocator
from netd.ipam.blocks import (
    BlockAllocator,
    block_at,
    block_count,
    block_index,
    block_of,
    check_block_prefixlen,
    family_prefixlen,
    node_offset,
    split,
)
from netd.model import IPAddress, Network


def overlay(*cidrs: str, **kw: object) -> Network:
    return network("ov", [subnet(c, **kw) for c in cidrs], driver="overlay")  # type: ignore[arg-type]


def take(alloc: BlockAllocator, static: tuple[str, ...] = ()) -> list[str]:
    addrs, cursors = alloc.allocate(static)
    alloc.commit(addrs, cursors)
    return [str(a.ip) for a in addrs]


# --- arithmetic -------------------------------------------------------------------------------


def test_split_cuts_aligned_blocks_in_order() -> None:
    assert [str(b) for b in split(ip_network("10.60.0.0/24"), 26)] == [
        "10.60.0.0/26",
        "10.60.0.64/26",
        "10.60.0.128/26",
        "10.60.0.192/26",
    ]


def test_a_subnet_smaller_than_a_block_is_one_block() -> None:
    small = ip_network("10.60.0.0/28")
    assert list(split(small, 26)) == [small]
    assert block_of(small, ip_address("10.60.0.9"), 26) == small
    assert block_count(small, 26) == 1


def test_block_of_and_index() -> None:
    net = ip_network("10.60.0.0/16")
    assert block_of(net, ip_address("10.60.1.70"), 26) == ip_network("10.60.1.64/26")
    assert block_index(net, ip_address("10.60.1.70"), 26) == 5
    assert block_at(net, 26, 5) == ip_network("10.60.1.64/26")
    with pytest.raises(InvalidInput, match=re.escape("not inside subnet 10.60.0.0/16")):
        block_of(net, ip_address("10.61.0.1"), 26)
    with pytest.raises(InvalidInput, match="has 1024 blocks"):
        block_at(net, 26, 1024)


def test_ipv6_blocks_keep_the_host_bit_count_and_are_lazy() -> None:
    assert family_prefixlen(4, 26) == 26
    assert family_prefixlen(6, 26) == 122
    net = ip_network("fd00:60::/64")
    assert block_count(net, 122) == 2**58  # never materialised
    assert next(iter(split(net, 122))) == ip_network("fd00:60::/122")
    assert block_of(net, ip_address("fd00:60::1:41"), 122) == ip_network("fd00:60::1:40/122")


@pytest.mark.parametrize("bad", [15, 33, 0, -1, "26", True, None])
def test_block_size_outside_16_to_32_is_refused(bad: object) -> None:
    with pytest.raises(InvalidInput) as exc:
        check_block_prefixlen(bad)
    assert exc.value.field == "ipam_block_size" and "from 16 to 32" in str(exc.value)


def test_node_offset_is_stable_and_in_range() -> None:
    assert node_offset("h1", 1000) == node_offset("h1", 1000)
    assert all(0 <= node_offset(f"h{i}", 7) < 7 for i in range(50))
    assert len({node_offset(f"h{i}", 1000) for i in range(50)}) > 40  # spread out


# --- policy ---------------------------------------------------------------------------------


def test_same_public_surface_as_network_allocator() -> None:
    alloc = BlockAllocator(overlay("10.60.0.0/24"), "a")
    assert isinstance(alloc, NetworkAllocator)
    for name in ("allocate", "commit", "release", "taken", "reserved", "utilisation", "cursors"):
        assert hasattr(alloc, name)


def test_first_allocation_claims_a_block_and_skips_reserved() -> None:
    alloc = BlockAllocator(overlay("10.60.0.0/24"), "a", spread=False)
    addrs, cursors = alloc.allocate()
    assert [str(a) for a in addrs] == ["10.60.0.2/24"]  # .0 network, .1 gateway
    assert alloc.claims(addrs) == ["10.60.0.0/26"]
    assert cursors == {"10.60.0.0/26": ip_address("10.60.0.2")}
    assert alloc.owners == {}, "allocate alone changes nothing"
    alloc.commit(addrs, cursors)
    assert alloc.owners == {"10.60.0.0/26": "a"}
    assert alloc.own_blocks() == ["10.60.0.0/26"]
    assert alloc.claims([ip_address("10.60.0.3")]) == []


def test_fills_own_block_before_claiming_the_next() -> None:
    alloc = BlockAllocator(overlay("10.60.0.0/24"), "a", spread=False)
    got = [take(alloc)[0] for _ in range(62)]  # .2 .. .63
    assert got[-1] == "10.60.0.63" and alloc.own_blocks() == ["10.60.0.0/26"]
    assert take(alloc) == ["10.60.0.64"]
    assert alloc.own_blocks() == ["10.60.0.0/26", "10.60.0.64/26"]


def test_other_nodes_blocks_are_skipped_while_one_is_free() -> None:
    net = overlay("10.60.0.0/24")
    alloc = BlockAllocator(
        net, "b", owners={"10.60.0.0/26": "a", "10.60.0.64/26": "c"}, spread=False
    )
    addrs, _ = alloc.allocate()
    assert [str(a.ip) for a in addrs] == ["10.60.0.128"]
    assert alloc.borrows(addrs) == []


def test_borrows_only_when_no_block_is_free() -> None:
    net = overlay("10.60.0.0/24")
    owners = {f"10.60.0.{n}/26": "a" for n in (0, 64, 128, 192)}
    alloc = BlockAllocator(net, "b", owners=owners, taken=[ip_address("10.60.0.2")])
    addrs, cursors = alloc.allocate()
    assert alloc.borrows(addrs) == [addrs[0].ip]
    assert alloc.claims(addrs) == []
    assert cursors == {}, "a borrow moves no cursor: it is another node's block"
    alloc.commit(addrs, cursors)
    assert alloc.own_blocks() == [], "borrowing claims nothing"


def test_own_block_with_room_is_used_before_anything_else() -> None:
    net = overlay("10.60.0.0/24")
    alloc = BlockAllocator(net, "b", owners={"10.60.0.192/26": "b"})
    assert take(alloc) == ["10.60.0.192"]


def test_spread_nodes_start_at_different_blocks() -> None:
    net = overlay("10.60.0.0/16")
    first = {take(BlockAllocator(net, f"node{i}"))[0] for i in range(20)}
    assert len(first) > 15
    fixed = {take(BlockAllocator(net, f"node{i}", spread=False))[0] for i in range(20)}
    assert fixed == {"10.60.0.2"}


def test_search_wraps_past_the_end() -> None:
    net = overlay("10.60.0.0/24")
    start = 3  # the node whose search starts at the last block
    name = next(f"n{i}" for i in range(100) if node_offset(f"n{i}", 4) == start)
    alloc = BlockAllocator(net, name, owners={"10.60.0.192/26": "x"})
    assert take(alloc) == ["10.60.0.2"]


def test_exhausted_names_the_network() -> None:
    alloc = BlockAllocator(overlay("10.60.0.0/30"), "a")
    assert take(alloc) == ["10.60.0.2"]
    with pytest.raises(AddressExhausted, match=re.escape('network "ov": subnet 10.60.0.0/30 full')):
        alloc.allocate()


def test_ip_range_limits_dynamic_picks_and_blocks() -> None:
    alloc = BlockAllocator(overlay("10.60.0.0/24", ip_range="10.60.0.128/25"), "a", spread=False)
    assert take(alloc) == ["10.60.0.128"]
    assert alloc.own_blocks() == ["10.60.0.128/26"]


def test_round_robin_inside_a_block_does_not_reuse_at_once() -> None:
    alloc = BlockAllocator(overlay("10.60.0.0/24"), "a", spread=False)
    a = take(alloc)
    take(alloc)
    alloc.release([ip_address(a[0])])
    assert take(alloc) == ["10.60.0.4"]


def test_round_robin_continues_in_the_last_block_used() -> None:
    alloc = BlockAllocator(overlay("10.60.0.0/24"), "a", spread=False)
    for _ in range(63):
        take(alloc)  # block 0 full, then .64 in block 1
    alloc.release([ip_address("10.60.0.5")])
    assert take(alloc) == ["10.60.0.65"], "a just-freed address in an older block waits"


def test_reserved_addresses_are_never_handed_out() -> None:
    net = overlay("10.60.0.0/26", aux={"printer": "10.60.0.3"})
    alloc = BlockAllocator(net, "a")
    got = set()
    while True:
        try:
            got.add(take(alloc)[0])
        except AddressExhausted:
            break
    assert got == {f"10.60.0.{i}" for i in range(2, 63)} - {"10.60.0.3"}


def test_static_in_any_block_claims_unowned_and_borrows_owned() -> None:
    net = overlay("10.60.0.0/24")
    alloc = BlockAllocator(net, "a", owners={"10.60.0.64/26": "b"})
    addrs, cursors = alloc.allocate(["10.60.0.70"])
    assert alloc.borrows(addrs) == [ip_address("10.60.0.70")] and cursors == {}
    addrs, _ = alloc.allocate(["10.60.0.200/24"])
    assert alloc.claims(addrs) == ["10.60.0.192/26"]


def test_static_taken_or_reserved_is_refused() -> None:
    net = overlay("10.60.0.0/24")
    alloc = BlockAllocator(net, "a", taken=[ip_address("10.60.0.70")])
    with pytest.raises(Conflict, match=r"10\.60\.0\.70 .*already in use"):
        alloc.allocate(["10.60.0.70"])
    with pytest.raises(InvalidInput, match="is the gateway"):
        alloc.allocate(["10.60.0.1"])
    with pytest.raises(InvalidInput, match="not inside any subnet"):
        alloc.allocate(["10.61.0.1"])


def test_ipv6_and_dual_stack() -> None:
    net = overlay("10.60.0.0/24", "fd00:60::/64")
    alloc = BlockAllocator(net, "a", spread=False)
    addrs, cursors = alloc.allocate()
    assert [str(a) for a in addrs] == ["10.60.0.2/24", "fd00:60::2/64"]
    assert alloc.claims(addrs) == ["10.60.0.0/26", "fd00:60::/122"]
    alloc.commit(addrs, cursors)
    spread = BlockAllocator(network("v6", "fd00:61::/64", driver="overlay"), "h7")
    (addr,) = spread.allocate()[0]
    assert addr.ip in ip_network("fd00:61::/64") and addr.ip != ip_address("fd00:61::")


def test_set_view_replaces_owners_and_taken_all_or_nothing() -> None:
    net = overlay("10.60.0.0/24")
    alloc = BlockAllocator(net, "a", spread=False)
    take(alloc)
    alloc.set_view({"10.60.0.0/26": "b"}, [ip_address("10.60.0.2"), ip_address("10.60.0.9")])
    assert alloc.own_blocks() == [] and alloc.taken(ip_address("10.60.0.9"))
    assert take(alloc) == ["10.60.0.64"]
    before = alloc.owners
    with pytest.raises(InvalidInput, match="every node must use the same ipam_block_size"):
        alloc.set_view({"10.60.0.0/25": "b"}, [])
    with pytest.raises(InvalidInput, match="not inside any subnet"):
        alloc.set_view({}, [ip_address("10.99.0.1")])
    assert alloc.owners == before and alloc.taken(ip_address("10.60.0.9"))


def test_observe_applies_watch_events_all_or_nothing() -> None:
    net = overlay("10.60.0.0/24")
    alloc = BlockAllocator(net, "a", spread=False)
    alloc.observe(owners={"10.60.0.0/26": "b"}, taken=[ip_address("10.60.0.70")])
    assert alloc.owners == {"10.60.0.0/26": "b"} and alloc.taken(ip_address("10.60.0.70"))
    assert take(alloc) == ["10.60.0.64"] and alloc.own_blocks() == ["10.60.0.64/26"]
    alloc.observe(owners={"10.60.0.0/26": None}, freed=[ip_address("10.60.0.70")])
    assert alloc.owners == {"10.60.0.64/26": "a"} and not alloc.taken(ip_address("10.60.0.70"))
    with pytest.raises(InvalidInput, match="not inside any subnet"):
        alloc.observe(owners={"10.60.0.128/26": "c"}, taken=[ip_address("10.99.0.1")])
    assert alloc.owners == {"10.60.0.64/26": "a"}, "nothing applied"
    with pytest.raises(InvalidInput, match="ipam_block_size"):
        alloc.observe(owners={"10.60.0.128/25": "c"})


def test_cursors_are_per_block_and_foreign_keys_ignored() -> None:
    net = overlay("10.60.0.0/24")
    cursors: dict[str, IPAddress] = {
        "10.60.0.0/26": ip_address("10.60.0.9"),
        "10.60.0.0/24": ip_address("10.60.0.40"),  # a subnet-wide cursor: not a block's
        "10.60.0.64/26": ip_address("10.60.0.5"),  # outside its block
    }
    alloc = BlockAllocator(net, "a", owners={"10.60.0.0/26": "a"}, cursors=cursors)
    assert alloc.cursors == {"10.60.0.0/26": ip_address("10.60.0.9")}
    assert take(alloc) == ["10.60.0.10"]


def test_bad_node_name_is_refused() -> None:
    with pytest.raises(InvalidInput, match="node_name"):
        BlockAllocator(overlay("10.60.0.0/24"), "")


def test_utilisation_counts_the_whole_network() -> None:
    alloc = BlockAllocator(overlay("10.60.0.0/24"), "a", taken=[ip_address("10.60.0.200")])
    take(alloc)
    assert alloc.utilisation() == {"10.60.0.0/24": (2, 253)}


# --- properties -------------------------------------------------------------------------------

Step = tuple[str, int, int]  # (action, node index, argument)


def free_block_exists(alloc: BlockAllocator, truth_owners: dict[str, str], taken: set[int]) -> bool:
    """Some block nobody owns still has a free dynamic address (checked from scratch)."""
    net = alloc.network.subnets[0]
    dyn = net.ip_range or net.subnet
    for block in split(net.subnet, family_prefixlen(4, alloc.prefixlen)):
        if str(block) in truth_owners:
            continue
        for a in block:
            if a in dyn and int(a) not in taken and not alloc.reserved(a):
                return True
    return False


@settings(max_examples=400, deadline=None)
@given(
    nodes=st.integers(min_value=2, max_value=5),
    cidr=st.sampled_from(["10.60.0.0/24", "10.60.0.0/25", "10.60.0.0/26", "10.60.0.96/27"]),
    block=st.sampled_from([26, 27, 28]),
    steps=st.lists(
        st.tuples(
            st.sampled_from(["add", "add", "add", "del", "static"]),
            st.integers(min_value=0, max_value=4),
            st.integers(min_value=0, max_value=255),
        ),
        min_size=1,
        max_size=160,
    ),
)
def test_nodes_sharing_a_view_never_hand_out_one_address_twice(
    nodes: int, cidr: str, block: int, steps: list[Step]
) -> None:
    """N allocators, each refreshed from the shared truth before it allocates (as the watch
    does), never pick a held or reserved address, claim only unowned blocks, and borrow only
    when no block is free."""
    net = overlay(cidr)
    allocs = [BlockAllocator(net, f"n{i}", block) for i in range(nodes)]
    owners: dict[str, str] = {}
    held: dict[int, str] = {}  # address -> node
    for action, who, arg in steps:
        alloc = allocs[who % nodes]
        alloc.set_view(owners, [ip_address(v) for v in held])
        if action == "del":
            if held:
                value = sorted(held)[arg % len(held)]
                del held[value]  # every allocator sees it free at its next set_view
            continue
        static: tuple[str, ...] = ()
        if action == "static":
            static = (str(ip_network(cidr)[arg % ip_network(cidr).num_addresses]),)
        try:
            addrs, cursors = alloc.allocate(static)
        except AddressExhausted:
            assert not static
            assert all(int(a) in held or alloc.reserved(a) for a in ip_network(cidr))
            continue
        except (InvalidInput, Conflict):
            assert static
            value = int(ip_address(static[0]))
            assert value in held or alloc.reserved(ip_address(static[0]))
            continue
        (iface,) = addrs
        value = int(iface.ip)
        assert value not in held, "an address held in the cluster was handed out again"
        assert not alloc.reserved(iface.ip)
        claims, borrows = alloc.claims(addrs), alloc.borrows(addrs)
        assert all(c not in owners for c in claims)
        if not static:
            if borrows:
                assert not free_block_exists(alloc, owners, set(held)), "borrowed too early"
            own_room = any(
                a in ip_network(b) and int(a) not in held and not alloc.reserved(a)
                for b in alloc.own_blocks()
                for a in ip_network(b)
            )
            if own_room:
                assert not claims and not borrows, "left room in its own blocks"
        alloc.commit(addrs, cursors)
        held[value] = alloc.node
        for c in claims:
            owners[c] = alloc.node
    assert len(held) == len(set(held))
