"""Issue #14's owner items without root: host sockets, port quotas, DNS upstreams, conflict
messages, veth names and audit outcomes.

The pure checks run over literal /proc text and fixed address sets; OwnerScope and the audit
middleware run over a real service (SQLite, NullDriver), as in test_rootless.py and
test_audit.py. The kernel side is in tests/ns/test_rootless_hostile.py.
"""

from __future__ import annotations

import asyncio
import ipaddress
import sys
from pathlib import Path

import pytest
from test_audit import api
from test_rootless import ALICE, BOB, POOLS, ULA, Checks, make, net, scope

from netd.drivers.null import NullDriver
from netd.errors import Conflict, PermissionDenied
from netd.firewall.base import NullFirewall
from netd.model import (
    AttachRequest,
    Caller,
    Endpoint,
    IPAddress,
    NetworkSpec,
    PortMapping,
    SubnetRequest,
)
from netd.names import host_veth_name
from netd.security.disclosure import network_conflict, port_conflict
from netd.security.hostports import (
    HostSocket,
    check_ports_free,
    clashes,
    host_sockets,
    parse_proc_net,
    parse_sctp_eps,
)
from netd.security.middleware import refused
from netd.security.rootless import Confinement, OwnerScope, check_port_quota
from netd.security.upstreams import check_upstreams, why_refused
from netd.service import Service
from netd.store.sqlite import SqliteStore

HEAD = (
    "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout "
    "inode\n"
)
TAIL = " 00000000:00000000 00:00000000 00000000     0        0 1234 1 0000000000000000 100 0 0 10 0"
LE = sys.byteorder == "little"


def v4(addr: str) -> str:
    """An IPv4 address as /proc/net/tcp writes it (one 32-bit word in native order)."""
    raw = ipaddress.IPv4Address(addr).packed
    return (raw[::-1] if LE else raw).hex().upper()


def v6(addr: str) -> str:
    raw = ipaddress.IPv6Address(addr).packed
    words = [raw[i : i + 4] for i in range(0, 16, 4)]
    return "".join((w[::-1] if LE else w).hex().upper() for w in words)


def line(local: str, port: int, state: str, remote: str = "00000000:0000") -> str:
    return f"   0: {local}:{port:04X} {remote} {state}{TAIL}\n"


# --- host sockets ----------------------------------------------------------------------------


def test_proc_net_tables_give_listeners_and_bound_udp() -> None:
    tcp = HEAD + line(v4("0.0.0.0"), 5432, "0A") + line(v4("10.0.0.5"), 40000, "01")
    tcp += line(v4("127.0.0.1"), 6379, "0A") + "garbage line\n"
    assert parse_proc_net(tcp, "tcp") == [
        HostSocket("tcp", ipaddress.ip_address("0.0.0.0"), 5432),
        HostSocket("tcp", ipaddress.ip_address("127.0.0.1"), 6379),
    ]  # the established connection's local port is not a listener
    tcp6 = HEAD + line(v6("::1"), 7070, "0A") + line(v6("fd00::5"), 8443, "0A")
    assert [s.describe() for s in parse_proc_net(tcp6, "tcp")] == ["[::1]:7070", "[fd00::5]:8443"]
    udp = HEAD + line(v4("127.0.0.1"), 5399, "07") + line(v4("10.0.0.5"), 41000, "01")
    assert [s.describe() for s in parse_proc_net(udp, "udp")] == [
        "127.0.0.1:5399",
        "10.0.0.5:41000",
    ]
    eps = (
        " ENDPT     SOCK   STY SST HBKT LPORT   UID INODE LADDRS\n"
        "ffff8880 ffff8881 2   10  29   9999      0 4242 10.0.0.5 127.0.0.1\n"
    )
    assert [s.describe() for s in parse_sctp_eps(eps)] == ["10.0.0.5:9999", "127.0.0.1:9999"]


def test_host_sockets_reads_every_table_and_tolerates_missing_ones(tmp_path: Path) -> None:
    (tmp_path / "tcp").write_text(HEAD + line(v4("0.0.0.0"), 5432, "0A"))
    (tmp_path / "udp").write_text(HEAD + line(v4("127.0.0.1"), 5399, "07"))
    (tmp_path / "udp6").write_text(HEAD + line(v6("::"), 5353, "07"))
    # no tcp6 (IPv6 disabled), no sctp (module not loaded)
    assert [(s.protocol, s.describe()) for s in host_sockets(tmp_path)] == [
        ("tcp", "0.0.0.0:5432"),
        ("udp", "127.0.0.1:5399"),
        ("udp", "[::]:5353"),
    ]


def pm(port: int, proto: str = "tcp", host_ip: str | None = None) -> PortMapping:
    ip = ipaddress.ip_address(host_ip) if host_ip else None
    return PortMapping(port, 80, proto, ip)  # type: ignore[arg-type]


def sock(addr: str, port: int, proto: str = "tcp") -> HostSocket:
    return HostSocket(proto, ipaddress.ip_address(addr), port)


@pytest.mark.parametrize(
    ("mapping", "socket", "clash"),
    [
        (pm(5432), sock("0.0.0.0", 5432), True),
        (pm(5432), sock("127.0.0.1", 5432), True),  # DNAT also catches the host's loopback
        (pm(5432), sock("::1", 5432), True),
        (pm(5432, "udp"), sock("0.0.0.0", 5432), False),  # another protocol
        (pm(5433), sock("0.0.0.0", 5432), False),
        (pm(5432, host_ip="10.0.0.5"), sock("0.0.0.0", 5432), True),
        (pm(5432, host_ip="10.0.0.5"), sock("::", 5432), True),  # :: may be dual-stack
        (pm(5432, host_ip="10.0.0.5"), sock("10.0.0.5", 5432), True),
        (pm(5432, host_ip="10.0.0.5"), sock("::ffff:10.0.0.5", 5432), True),
        (pm(5432, host_ip="10.0.0.5"), sock("127.0.0.1", 5432), False),
        (pm(5432, host_ip="0.0.0.0"), sock("127.0.0.1", 5432), True),
        (pm(5432, host_ip="fd00::5"), sock("fd00::6", 5432), False),
        (pm(9999, "sctp"), sock("10.0.0.5", 9999, "sctp"), True),
    ],
)
def test_a_publication_clashes_like_a_bind(
    mapping: PortMapping, socket: HostSocket, clash: bool
) -> None:
    assert clashes(mapping, socket) is clash


def test_netd_own_gateway_dns_does_not_block_publishing_53() -> None:
    gateway = ipaddress.ip_address("10.240.0.1")
    held = [sock("10.240.0.1", 53, "udp"), sock("10.240.0.1", 53)]
    check_ports_free([pm(53, "udp"), pm(53)], held, frozenset({(gateway, 53)}))
    with pytest.raises(Conflict, match=r"10\.240\.0\.1:53"):
        check_ports_free([pm(53, "udp")], held)


def test_ports_in_use_are_refused_naming_the_socket() -> None:
    held = [sock("127.0.0.1", 5399, "udp"), sock("0.0.0.0", 5432)]
    check_ports_free([pm(8080), pm(5399)], held)  # tcp 5399 is free
    with pytest.raises(Conflict) as info:
        check_ports_free([pm(8080), pm(5399, "udp")], held)
    assert info.value.message == (
        "publishing host port 5399/udp: a udp socket of the host is bound on 127.0.0.1:5399; the "
        "port is in use (the kernel would refuse that bind: EADDRINUSE)"
    )
    assert info.value.field == "port_mappings[1].host_port" and info.value.value == "5399/udp"


def test_the_service_checks_every_callers_publications_before_anything_exists(
    tmp_path: Path,
) -> None:
    seen: list[tuple[PortMapping, ...]] = []
    exempts: list[frozenset[tuple[IPAddress, int]]] = []

    def check(ports: tuple[PortMapping, ...], exempt: frozenset[tuple[IPAddress, int]]) -> None:
        seen.append(ports)
        exempts.append(exempt)
        if any(p.host_port == 5432 for p in ports):
            check_ports_free(ports, [sock("0.0.0.0", 5432)], exempt)

    async def scenario() -> None:
        svc = Service(
            store=SqliteStore(tmp_path / "netd.db"),
            drivers={"bridge": NullDriver()},
            firewall=NullFirewall(),
            pools=POOLS,
            ula=ULA,
            check_publish=check,
        )
        await svc.start()
        n = await svc.create_network(NetworkSpec(name="n"))
        with pytest.raises(Conflict, match=r"listens on 0\.0\.0\.0:5432"):
            await svc.attach(AttachRequest("n", "c1", "eth0", "/x", port_mappings=(pm(5432),)))
        assert svc.endpoints(n) == []
        await svc.attach(AttachRequest("n", "c1", "eth0", "/x", port_mappings=(pm(8080),)))
        assert seen == [(pm(5432),), (pm(8080),)]
        # netd's own DNS on the gateway is exempt: the firewall never DNATs it.
        gateway = n.subnets[0].gateway
        assert gateway is not None and exempts[0] == frozenset({(gateway, 53)})

    asyncio.run(scenario())


# --- port quotas -----------------------------------------------------------------------------


def limits(ports: int = 6, per_request: int = 4) -> Confinement:
    return Confinement(ALICE, 3, 1024, ports, per_request)


def test_port_quota_messages_name_the_limit_and_the_value() -> None:
    check_port_quota("c1", 4, 2, limits())
    with pytest.raises(PermissionDenied) as info:
        check_port_quota("c1", 5, 0, limits())
    assert info.value.message == (
        "publishing 5 ports for container 'c1': a request may publish at most 4 "
        "(policy.rootless_max_ports_per_request)"
    )
    assert info.value.field == "policy.rootless_max_ports_per_request" and info.value.value == 4
    with pytest.raises(PermissionDenied) as info:
        check_port_quota("c1", 3, 4, limits())
    assert info.value.message == (
        "publishing 3 ports for container 'c1': uid 4242 holds 4 published ports; quota "
        "policy.rootless_max_ports is 6"
    )
    assert info.value.field == "policy.rootless_max_ports"


def port_scope(
    svc: Service, checks: Checks, who: Caller, ports: int, per_request: int
) -> OwnerScope:
    return OwnerScope(
        svc,
        Confinement(who, 3, 1024, ports, per_request),
        verify_netns=checks,
        groups_of=lambda c: frozenset({c.gid}),
        port_start=lambda: 1024,
        host_addresses=lambda: [],
    )


def publish(cid: str, first: int, n: int, ifname: str = "eth0") -> AttachRequest:
    maps = tuple(PortMapping(p, 80) for p in range(first, first + n))
    return AttachRequest("a-net", cid, ifname, f"/proc/{first}/ns/net", port_mappings=maps)


def test_ten_parallel_attaches_cannot_squeeze_past_the_port_quota(tmp_path: Path) -> None:
    async def scenario() -> None:
        svc, checks = make(tmp_path)
        await svc.start()
        alice = port_scope(svc, checks, ALICE, ports=10, per_request=4)
        await alice.create_network(NetworkSpec(name="a-net"))
        results = await asyncio.gather(
            *(alice.attach(publish(f"c{i}", 20000 + 10 * i, 3)) for i in range(10)),
            return_exceptions=True,
        )
        ok = [r for r in results if not isinstance(r, BaseException)]
        refused_ = [r for r in results if isinstance(r, PermissionDenied)]
        assert len(ok) == 3 and len(refused_) == 7, results  # 3 x 3 = 9 <= 10 < 12
        assert alice.published_ports() == 9
        # the in-flight counts are gone: one more port fits, two do not
        await alice.attach(publish("d1", 30000, 1))
        with pytest.raises(PermissionDenied, match="holds 10 published ports"):
            await alice.attach(publish("d2", 30010, 1))
        # Bob's quota is his own; root's attaches are not counted against Alice
        bob = port_scope(svc, checks, BOB, ports=10, per_request=4)
        await bob.create_network(NetworkSpec(name="b-net"))
        await bob.attach(
            AttachRequest("b-net", "b1", "eth0", "/proc/9/ns/net", port_mappings=(pm(31000),))
        )
        await svc.attach(publish("r1", 32000, 8))
        assert alice.published_ports() == 10 and bob.published_ports() == 1

    asyncio.run(scenario())


def test_a_failed_attach_releases_its_in_flight_ports(tmp_path: Path) -> None:
    async def scenario() -> None:
        svc, checks = make(tmp_path)
        await svc.start()
        alice = port_scope(svc, checks, ALICE, ports=4, per_request=4)
        await alice.create_network(NetworkSpec(name="a-net"))
        bad = AttachRequest(
            "a-net", "c1", "eth0", "/run/root/ns", port_mappings=(pm(20000), pm(20001))
        )
        with pytest.raises(PermissionDenied, match="not yours"):
            await alice.attach(bad)  # refused by the namespace check, after the quota
        await alice.attach(publish("c2", 21000, 4))

    asyncio.run(scenario())


# --- DNS upstreams ---------------------------------------------------------------------------

HOST = [ipaddress.ip_address(a) for a in ("10.89.0.1", "172.31.251.1", "fd00::1")]


@pytest.mark.parametrize(
    ("server", "reason"),
    [
        ("127.0.0.1", "a loopback address"),
        ("127.8.8.8:5399", "a loopback address"),
        ("[::1]:53", "a loopback address"),
        ("::ffff:127.0.0.1", "a loopback address"),
        ("169.254.169.254", "a link-local address"),
        ("fe80::1", "a link-local address"),
        ("0.0.0.0", "an unspecified address (it reaches the host itself)"),
        ("0.1.2.3", "an unspecified address (it reaches the host itself)"),
        ("::", "an unspecified address (it reaches the host itself)"),
        ("224.0.0.251", "a multicast or broadcast address"),
        ("255.255.255.255", "a multicast or broadcast address"),
        ("ff02::fb", "a multicast or broadcast address"),
        ("10.89.0.1:53", "an address of the host"),
        ("172.31.251.1", "an address of the host"),
        ("[fd00::1]:5353", "an address of the host"),
        ("::ffff:172.31.251.1", "an address of the host"),
        ("10.1.2.3", None),
        ("9.9.9.9:5353", None),
        ("2001:db8::53", None),
    ],
)
def test_upstreams_an_owner_may_not_name(server: str, reason: str | None) -> None:
    from netd.dns.upstreams import parse_server

    address, _ = parse_server(server)
    assert why_refused(ipaddress.ip_address(address), HOST) == reason


def test_upstream_refusal_names_the_field_and_the_value() -> None:
    check_upstreams("dns_servers", ["10.1.2.3", "9.9.9.9:53"], HOST)
    with pytest.raises(PermissionDenied) as info:
        check_upstreams("dns_servers", ["10.1.2.3", "127.0.0.1:5399"], HOST)
    assert info.value.message == (
        "dns_servers '127.0.0.1:5399': 127.0.0.1 is a loopback address; rootless owners may not "
        "forward DNS to loopback, link-local, unspecified, multicast or the host's own addresses, "
        "nor into other users' networks (root and policy.admins may)"
    )
    assert (info.value.field, info.value.value) == ("dns_servers", "127.0.0.1:5399")
    others = [ipaddress.ip_network("10.89.1.0/24"), ipaddress.ip_network("fd00:1::/64")]
    assert why_refused(ipaddress.ip_address("10.89.1.7"), HOST, others) == (
        "an address on a network that is not yours"
    )
    assert why_refused(ipaddress.ip_address("fd00:1::7"), HOST, others) is not None
    assert why_refused(ipaddress.ip_address("10.89.2.7"), HOST, others) is None


def test_scope_refuses_host_upstreams_for_owners_only(tmp_path: Path) -> None:
    async def scenario() -> None:
        svc, checks = make(tmp_path)
        await svc.start()
        reads: list[int] = []

        def host() -> list[ipaddress.IPv4Address | ipaddress.IPv6Address]:
            reads.append(1)
            return HOST

        alice = OwnerScope(
            svc,
            Confinement(ALICE, 3, 1024),
            verify_netns=checks,
            groups_of=lambda c: frozenset({c.gid}),
            port_start=lambda: 1024,
            host_addresses=host,
        )
        await alice.create_network(NetworkSpec(name="plain"))
        assert reads == []  # no upstream named: the host is not asked
        spec = NetworkSpec(name="x", options={"dns_servers": "10.1.2.3,172.31.251.1"})
        with pytest.raises(
            PermissionDenied, match=r"172\.31\.251\.1 is an address of the host"
        ) as i:
            await alice.create_network(spec)
        assert i.value.field == "options.dns_servers"
        assert [n.name for n in svc.list_networks()] == ["plain"]
        req = AttachRequest("plain", "c1", "eth0", "/proc/5/ns/net", dns_servers=("[::1]:53",))
        with pytest.raises(PermissionDenied, match="::1 is a loopback address"):
            await alice.attach(req)
        assert checks.calls == []  # refused before the namespace is looked at
        await svc.create_network(NetworkSpec(name="r", options={"dns_servers": "127.0.0.1"}))
        # root's network (10.89.1.0/24) is not Alice's: no upstream there; her own is fine
        for field, server in (("dns_servers", "10.89.1.5"), ("options.dns_servers", "10.89.1.5")):
            with pytest.raises(PermissionDenied, match="a network that is not yours") as i:
                if field == "dns_servers":
                    await alice.attach(
                        AttachRequest("plain", "c1", "eth0", "/p", dns_servers=(server,))
                    )
                else:
                    await alice.create_network(
                        NetworkSpec(name="z", options={"dns_servers": server})
                    )
            assert i.value.field == field
        await alice.attach(AttachRequest("plain", "c1", "eth0", "/p", dns_servers=("10.89.0.9",)))

    asyncio.run(scenario())


# --- conflicts seen by an owner --------------------------------------------------------------


def test_conflicts_with_other_users_objects_are_generic(tmp_path: Path) -> None:
    async def scenario() -> None:
        svc, checks = make(tmp_path)
        await svc.start()
        fa = await svc.create_network(
            NetworkSpec(name="fa", subnets=(SubnetRequest(subnet="10.89.1.0/24"),))
        )
        alice = scope(svc, checks, ALICE)
        with pytest.raises(Conflict) as info:
            await alice.create_network(
                NetworkSpec(name="x", subnets=(SubnetRequest(subnet="10.89.1.0/25"),))
            )
        assert info.value.message == 'creating network "x": subnet 10.89.1.0/25 is not available'
        with pytest.raises(Conflict) as info:
            await alice.create_network(NetworkSpec(name="fa"))
        assert info.value.message == 'creating network "fa": the name "fa" is already taken'
        assert fa.short_id not in str(info.value) and info.value.__cause__ is None
        # her own objects: the whole message
        await alice.create_network(
            NetworkSpec(name="mine", subnets=(SubnetRequest(subnet="10.89.2.0/24"),))
        )
        with pytest.raises(Conflict, match=r'overlaps 10\.89\.2\.0/24 of network "mine"'):
            await alice.create_network(
                NetworkSpec(name="y", subnets=(SubnetRequest(subnet="10.89.2.0/24"),))
            )
        with pytest.raises(Conflict, match=r"already exists \(id"):
            await alice.create_network(NetworkSpec(name="mine"))
        # ensure_network (CNI ADD) still tells "someone else's name" apart from "mine"
        with pytest.raises(Conflict, match="already taken"):
            await alice.ensure_network(NetworkSpec(name="fa"))
        assert (await alice.ensure_network(NetworkSpec(name="mine"))).owner_uid == ALICE.uid

    asyncio.run(scenario())


def endpoint(network_id: str, cid: str, *ports: PortMapping) -> Endpoint:
    return Endpoint(network_id, cid, "eth0", "/x", "nv1", (), port_mappings=ports)


def test_port_conflict_names_the_holder_only_when_it_is_the_owners() -> None:
    mine, theirs = net("mine", owner=ALICE.uid), net("theirs", owner=BOB.uid)
    exc = Conflict(
        "publishing host port 8080/tcp for container new: already published by container web",
        field="port_mappings",
        value="8080/tcp",
    )
    everything = [
        (mine, endpoint(mine.id, "web", pm(8080))),
        (theirs, endpoint(theirs.id, "db", pm(5432))),
    ]
    new = (mine.id, "new", "eth0")
    assert port_conflict(exc, [pm(8080)], everything, lambda n: n is mine, new) is exc
    everything.append((theirs, endpoint(theirs.id, "web", pm(8080, host_ip="10.0.0.1"))))
    out = port_conflict(exc, [pm(8080)], everything, lambda n: n is mine, new)
    assert out.message == "publishing host port 8080/tcp: the port is not available"
    assert (out.field, out.value) == ("port_mappings", "8080/tcp")
    twice = [pm(8080), pm(8080, host_ip="10.0.0.1")]  # the request's own clash: the detail
    assert port_conflict(exc, twice, everything, lambda n: n is mine, new) is exc
    other = Conflict("bridge 'x' is used by network 'y'", field="options.bridge")
    assert network_conflict(other, "n", [mine], lambda n: True) is other


def test_host_veth_names_differ_across_networks_and_stay_deterministic() -> None:
    a = host_veth_name("a" * 64, "shared-id", "eth0")
    assert a == host_veth_name("a" * 64, "shared-id", "eth0")
    assert a != host_veth_name("b" * 64, "shared-id", "eth0")
    assert a != host_veth_name("a" * 64, "shared-id", "eth1")
    assert len(a) == 15 and a.startswith("nv")


# --- audit outcome ---------------------------------------------------------------------------


def test_refusals_behind_the_policy_are_denials() -> None:
    assert refused(403, PermissionDenied("quota"))
    assert refused(422, None, {"cniVersion": "1.0.0", "code": 105, "msg": "not yours"})
    assert not refused(409, Conflict("taken"))
    assert not refused(422, None, {"code": 7, "msg": "bad config"})


def test_owner_restriction_refusals_are_audited_as_denied(tmp_path: Path) -> None:
    owner = Caller(4242, 4242, ALICE.pid)
    answers, audit = api(
        tmp_path,
        owner,
        [
            ("POST", "/v1/networks", {"name": "one"}),
            ("POST", "/v1/networks", {"name": "two", "options": {"bridge": "br0"}}),
            ("POST", "/v1/networks", {"name": "three"}),
            ("POST", "/v1/networks", {"name": "one"}),
        ],
        rootless_users=[4242],
        rootless_max_networks=1,
    )
    assert [a[0] for a in answers] == [201, 403, 403, 409]
    assert [(r["outcome"], r["status"]) for r in audit] == [
        ("ok", 201),
        ("denied", 403),
        ("denied", 403),
        ("error", 409),
    ]
    assert audit[1]["reason"] == answers[1][1]["error"]["message"]
    assert audit[2]["reason"].endswith("quota policy.rootless_max_networks is 1")
    assert audit[3]["reason"] == "uid 4242 is in policy.rootless_users"


def test_an_owners_request_body_is_bounded_and_the_refusal_audited(tmp_path: Path) -> None:
    owner = Caller(4242, 4242, ALICE.pid)
    labels = {f"k{i}": "v" * 100 for i in range(30)}  # ~3.5 KB of JSON
    answers, audit = api(
        tmp_path,
        owner,
        [
            ("POST", "/v1/networks", {"name": "big", "labels": labels}),
            ("POST", "/v1/networks", {"name": "small"}),
        ],
        rootless_users=[4242],
        rootless_max_body_bytes=2048,
    )
    assert [a[0] for a in answers] == [413, 201]
    err = answers[0][1]["error"]
    assert err["code"] == "too_large" and err["field"] == "policy.rootless_max_body_bytes"
    assert err["message"].startswith("POST /v1/networks: a request body of ")
    assert err["message"].endswith("bytes is over policy.rootless_max_body_bytes (2048)")
    assert [(r["outcome"], r["status"]) for r in audit] == [("denied", 413), ("ok", 201)]
