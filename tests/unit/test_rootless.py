"""Rootless networks without root: the policy's owner role, the pure checks and OwnerScope.

OwnerScope runs over a real service (SQLite store, NullDriver); the namespace checks are
replaced by a recorder here (the real ioctls are exercised in tests/ns/test_rootless_ns.py).
"""

from __future__ import annotations

import asyncio
import dataclasses
import ipaddress
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest

from netd.drivers.null import NullDriver
from netd.errors import Conflict, NotFound, PermissionDenied
from netd.firewall.base import NullFirewall
from netd.ipam.subnets import parse_pool
from netd.kernel.netns import NS_GET_NSTYPE
from netd.model import AttachRequest, Caller, Network, NetworkSpec, PortMapping, SubnetRequest
from netd.security import Policy, PolicyConfig, nsowner
from netd.security.nsowner import UserNs
from netd.security.rootless import (
    Confinement,
    OwnerScope,
    check_options,
    check_ports,
    check_quota,
    check_subnets,
    ipv4_size,
    unprivileged_port_start,
)
from netd.service import Service
from netd.spec import build_network
from netd.store.sqlite import SqliteStore

ULA = ipaddress.IPv6Network("fd00:1234:5678::/48")
POOLS = [parse_pool("10.89.0.0/16:24")]
ALICE = Caller(uid=4242, gid=4242, pid=100)
BOB = Caller(uid=4343, gid=4343, pid=101)
CAROL = Caller(uid=1000, gid=1000, pid=102)
ROOTLESS_GID = 777


def net(name: str, *subnets: str, owner: int = 4242, **options: Any) -> Network:
    spec = NetworkSpec(
        name=name,
        subnets=tuple(SubnetRequest(subnet=s) for s in subnets),
        ipv4=not any(":" in s for s in subnets),
        ipv6=any(":" in s for s in subnets),
        options=options,
    )
    return build_network(
        spec,
        existing=[],
        host_routes=[],
        pools=POOLS,
        ula=ULA,
        validate_options=lambda o: o,
        owner_uid=owner,
    )


# --- nsowner: the pure parts ---------------------------------------------------------------


def test_ioctl_numbers_match_nsfs_h() -> None:
    assert nsowner.NS_GET_USERNS == 0xB701
    assert nsowner.NS_GET_PARENT == 0xB702
    assert nsowner.NS_GET_OWNER_UID == 0xB704
    assert nsowner.ioc(0xB7, 0x3) == NS_GET_NSTYPE


def test_owner_decision_walks_the_chain_below_the_daemon() -> None:
    mine = UserNs(4026532178, 4242)
    nested = UserNs(4026532300, 101000)  # made inside mine by a subordinate uid
    assert nsowner.decide([mine], 4242)
    assert nsowner.decide([nested, mine], 4242)  # the creator of an ancestor controls it
    assert not nsowner.decide([nested, mine], 4343)
    assert not nsowner.decide([], 4242)  # owned by the daemon's own user namespace (root)
    assert nsowner.describe([]) == "the daemon's own user namespace (root)"
    assert nsowner.describe([nested, mine]) == (
        "user:[4026532300] created by uid 101000 in user:[4026532178] created by uid 4242"
    )


# --- pure checks ----------------------------------------------------------------------------


def test_quota_on_network_count_and_address_space() -> None:
    limits = Confinement(ALICE, max_networks=2, max_addresses=512)
    a, b = net("a", "10.89.1.0/24"), net("b", "10.89.2.0/25")
    assert ipv4_size(a) == 256 and ipv4_size(b) == 128
    check_quota(b, [a], limits)
    with pytest.raises(PermissionDenied) as exc:
        check_quota(net("c", "10.89.3.0/28"), [a, b], limits)
    assert exc.value.message == (
        'creating network "c": uid 4242 owns 2 networks; quota policy.rootless_max_networks is 2'
    )
    assert exc.value.field == "policy.rootless_max_networks" and exc.value.value == 2
    roomy = Confinement(ALICE, max_networks=9, max_addresses=512)
    with pytest.raises(PermissionDenied) as exc:
        check_quota(net("d", "10.89.4.0/24"), [a, b], roomy)
    assert exc.value.message == (
        'creating network "d" (10.89.4.0/24: 256 addresses): uid 4242 owns 384 IPv4 addresses; '
        "quota policy.rootless_max_addresses is 512"
    )
    assert exc.value.field == "policy.rootless_max_addresses"
    # IPv6 subnets (a /64 is 2**64 addresses) count only against the network quota
    v6 = net("e", "fd00:1234:5678:1::/64")
    assert ipv4_size(v6) == 0
    check_quota(v6, [a, b], roomy)


def test_options_reserved_to_root() -> None:
    check_options(net("ok", mtu="1400", isolate="true", dns="false"))
    for key, value in (("bridge", "br-mine"), ("host_ipv4", "192.0.2.1"), ("host_ipv6", "::1")):
        with pytest.raises(PermissionDenied) as exc:
            check_options(dataclasses.replace(net("bad"), options={key: value}))
        assert exc.value.field == f"options.{key}" and exc.value.value == value
        assert f"option {key!r} is reserved to root and policy.admins" in exc.value.message


def test_subnets_only_from_the_default_pools() -> None:
    check_subnets(net("a", "10.89.7.0/24"), POOLS, ULA, [])
    check_subnets(net("b", "10.89.7.0/28"), POOLS, ULA, [])  # smaller than a block: fine
    check_subnets(net("v6", "fd00:1234:5678:9::/64"), POOLS, ULA, [])
    cases = {
        "192.168.50.0/24": "is not a block of the default address pools (10.89.0.0/16:24)",
        "10.89.0.0/20": "is not a block of the default address pools (10.89.0.0/16:24)",
        "8.8.8.0/24": "is not a block",
        "fd99::/64": "is not a block of the default address pools (fd00:1234:5678::/48:64)",
    }
    for subnet, words in cases.items():
        with pytest.raises(PermissionDenied) as exc:
            check_subnets(net("x", subnet), POOLS, ULA, [])
        assert words in exc.value.message, exc.value.message
        assert exc.value.field == "subnet" and exc.value.value == subnet
    routes = [ipaddress.ip_network("0.0.0.0/0"), ipaddress.ip_network("10.89.7.0/25")]
    check_subnets(net("a", "10.89.8.0/24"), POOLS, ULA, routes)  # the default route is no bar
    with pytest.raises(PermissionDenied, match=r"subnet 10.89.7.0/24 overlaps host route"):
        check_subnets(net("a", "10.89.7.0/24"), POOLS, ULA, routes)


def test_privileged_ports(tmp_path: Path) -> None:
    check_ports([PortMapping(8080, 80)], 1024)
    with pytest.raises(PermissionDenied) as exc:
        check_ports([PortMapping(8080, 80), PortMapping(443, 443, "udp")], 1024)
    assert exc.value.message.startswith("publishing host port 443/udp: ports below 1024")
    assert exc.value.field == "publish.host_port" and exc.value.value == 443
    check_ports([PortMapping(80, 80)], 80)  # an admin who lowered the sysctl lowers ours too
    sysctl = tmp_path / "start"
    sysctl.write_text("80\n")
    assert unprivileged_port_start(sysctl) == 80
    assert unprivileged_port_start(tmp_path / "missing") == 1024
    assert unprivileged_port_start() == int(
        Path("/proc/sys/net/ipv4/ip_unprivileged_port_start").read_text()
    )


# --- policy ---------------------------------------------------------------------------------


def policy(**cfg: Any) -> Policy:
    groups = {ALICE.uid: frozenset({ALICE.gid}), CAROL.uid: frozenset({CAROL.gid, ROOTLESS_GID})}
    gids = {"netd": 999, "rootless": ROOTLESS_GID}
    return Policy(
        PolicyConfig.model_validate(cfg),
        groups_of=lambda c: groups.get(c.uid, frozenset({c.gid})),
        gid_of=gids.get,
    )


def test_owner_role_from_users_or_group() -> None:
    p = policy(rootless_users=[4242], rootless_group="rootless")
    assert p.role(ALICE) == ("owner", "uid 4242 is in policy.rootless_users")
    assert p.role(CAROL) == ("owner", "uid 1000 is in policy.rootless_group 'rootless' (gid 777)")
    assert p.role(BOB)[0] == "other"
    assert policy().role(ALICE)[0] == "other"  # off by default
    # a manager stays a manager (the wider role wins)
    assert policy(manage_group="rootless", rootless_users=[1000]).role(CAROL)[0] == "manager"
    assert policy(rootless_users=[4242], admins=[4242]).role(ALICE)[0] == "admin"


def test_owner_may_manage_networks_and_read_little() -> None:
    p = policy(rootless_users=[4242], others="none")
    allowed = [
        ("GET", "/v1/networks"),
        ("GET", "/v1/networks/{name}"),
        ("GET", "/v1/status"),
        ("GET", "/v1/dns/lookup"),
        ("GET", "/openapi.json"),
        ("POST", "/v1/networks"),
        ("DELETE", "/v1/networks/{name}"),
        ("POST", "/v1/networks/{name}/connect"),
        ("POST", "/v1/networks/prune"),
        ("POST", "/v1/cni"),
    ]
    for method, route in allowed:
        d = p.authorize(ALICE, method, route, "ADD" if route == "/v1/cni" else None)
        assert d.allowed and d.role == "owner", (method, route, d)
    d = p.authorize(ALICE, "GET", "/v1/firewall")
    assert not d.allowed
    assert d.reason == (
        "uid 4242 is in policy.rootless_users; a rootless owner may read only its own networks"
    )
    assert not p.authorize(ALICE, "GET", "/metrics").allowed
    d = p.authorize(ALICE, "POST", "/v1/recover")
    assert not d.allowed and d.reason.endswith("a rootless owner may only manage its own networks")


def test_rootless_config_rules() -> None:
    with pytest.raises(ValueError, match="plain group name, or empty"):
        PolicyConfig(rootless_group="bad name")
    with pytest.raises(ValueError, match="uids must be"):
        PolicyConfig.model_validate({"rootless_users": [-1]})
    with pytest.raises(ValueError):
        PolicyConfig(rootless_max_networks=-1)
    cfg = PolicyConfig(rootless_max_networks=3, rootless_max_addresses=300)
    assert Confinement.from_policy(ALICE, cfg) == Confinement(ALICE, 3, 300)


# --- OwnerScope over a real service ---------------------------------------------------------


class Checks:
    """Records namespace verifications; refuses paths containing "root"."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, int]] = []

    def __call__(self, path: str, caller: Caller, groups: Iterable[int]) -> int:
        self.calls.append((path, caller.uid))
        if "root" in path:
            raise PermissionDenied(f"attaching netns {path!r}: not yours", field="netns")
        return 4026531000 + len(self.calls)


def make(tmp_path: Path) -> tuple[Service, Checks]:
    svc = Service(
        store=SqliteStore(tmp_path / "netd.db"),
        drivers={"bridge": NullDriver()},
        firewall=NullFirewall(),
        pools=POOLS,
        ula=ULA,
    )
    return svc, Checks()


def scope(svc: Service, checks: Checks, who: Caller, **limits: int) -> OwnerScope:
    return OwnerScope(
        svc,
        Confinement(who, limits.get("max_networks", 3), limits.get("max_addresses", 1024)),
        verify_netns=checks,
        groups_of=lambda c: frozenset({c.gid}),
        port_start=lambda: 1024,
    )


def test_scope_confines_networks_to_their_owner(tmp_path: Path) -> None:
    async def scenario() -> None:
        svc, checks = make(tmp_path)
        await svc.start()
        alice, bob = scope(svc, checks, ALICE), scope(svc, checks, BOB)
        a = await alice.create_network(NetworkSpec(name="a-net"))
        assert a.owner_uid == 4242 and str(a.subnets[0].subnet) == "10.89.0.0/24"
        await svc.create_network(NetworkSpec(name="root-net"))
        assert [n.name for n in alice.list_networks()] == ["a-net"]
        assert bob.list_networks() == []
        assert len(svc.list_networks()) == 2  # root sees all
        for name in ("a-net", a.id, a.id[:12], "root-net"):
            with pytest.raises(NotFound, match="not found"):
                bob.find_network(name)
        with pytest.raises(NotFound):
            await bob.remove_network("a-net")
        with pytest.raises(NotFound):
            await bob.attach(AttachRequest("a-net", "c1", "eth0", "/proc/1/ns/net"))
        assert await bob.gc("a-net", set()) == []
        await bob.detach("a-net", "c1", "eth0", None)  # not theirs: nothing, no error
        assert await bob.prune() == []
        # a name taken by someone else is a conflict (names are global), never their network
        with pytest.raises(Conflict):
            await bob.ensure_network(NetworkSpec(name="a-net"))

        _, ep = await alice.attach(AttachRequest("a-net", "c1", "eth0", "/proc/77/ns/net"))
        assert ep.owner_uid == 4242 and checks.calls == [("/proc/77/ns/net", 4242)]
        assert ep.netns_inode == 4026531001  # pinned to the namespace that was verified
        with pytest.raises(PermissionDenied, match="not yours"):
            await alice.attach(AttachRequest("a-net", "c2", "eth0", "/run/root/ns"))
        assert [e.container_id for e in svc.endpoints(a)] == ["c1"]
        with pytest.raises(PermissionDenied, match="ports below 1024"):
            await alice.attach(
                AttachRequest(
                    "a-net", "c3", "eth0", "/proc/78/ns/net", port_mappings=(PortMapping(80, 80),)
                )
            )
        # DEL with a namespace that is not theirs falls back to the recorded one
        checks.calls.clear()
        await alice.detach("a-net", "c1", "eth0", "/run/root/ns")
        assert checks.calls == [("/run/root/ns", 4242)]
        assert svc.endpoints(a) == []
        assert await alice.prune() == ["a-net"]
        assert [n.name for n in svc.list_networks()] == ["root-net"]

    asyncio.run(scenario())


def test_scope_quotas_and_restrictions_refuse_before_anything_exists(tmp_path: Path) -> None:
    async def scenario() -> None:
        svc, checks = make(tmp_path)
        await svc.start()
        alice = scope(svc, checks, ALICE, max_networks=2, max_addresses=300)
        await alice.create_network(NetworkSpec(name="one"))
        with pytest.raises(PermissionDenied, match=r"policy\.rootless_max_addresses is 300"):
            await alice.create_network(NetworkSpec(name="two"))
        small = (SubnetRequest(subnet="10.89.9.0/28"),)
        await alice.create_network(NetworkSpec(name="two", subnets=small))
        with pytest.raises(PermissionDenied, match=r"policy\.rootless_max_networks is 2"):
            await alice.create_network(
                NetworkSpec(name="three", subnets=(SubnetRequest(subnet="10.89.9.16/28"),))
            )
        with pytest.raises(
            PermissionDenied, match=r"option 'com\.docker\.network\.bridge\.name' is reserved"
        ):
            await scope(svc, checks, BOB).create_network(
                NetworkSpec(name="b", options={"com.docker.network.bridge.name": "eth0"})
            )
        with pytest.raises(PermissionDenied, match="not a block of the default address pools"):
            await scope(svc, checks, BOB).create_network(
                NetworkSpec(name="b", subnets=(SubnetRequest(subnet="172.30.0.0/24"),))
            )
        assert sorted(n.name for n in svc.list_networks()) == ["one", "two"]
        # the quotas are per uid: Bob has his own
        b = await scope(svc, checks, BOB).create_network(NetworkSpec(name="b"))
        assert b.owner_uid == 4343

    asyncio.run(scenario())
