"""The daemon-side CNI handler against the in-memory backend: every verb, version and code."""

from __future__ import annotations

import asyncio
import ipaddress
from typing import Any

import pytest

from netd.cni import spec
from netd.cni.fake import FakeCniBackend
from netd.cni.handler import handle_cni
from netd.errors import (
    AddressExhausted,
    Conflict,
    FirewallError,
    InvalidInput,
    KernelError,
    NetdError,
    NotFound,
    PermissionDenied,
    StoreError,
    Unavailable,
)
from netd.model import Network, Subnet

NETNS = "/run/netns/c1"
CID = "3f6940ab5ab4"


def netconf(version: str = "1.1.0", **extra: Any) -> dict[str, Any]:
    return {"cniVersion": version, "name": "web", "type": "netd", **extra}


def call(verb: str, config: dict[str, Any], **env: Any) -> dict[str, Any]:
    base = {
        "command": verb,
        "containerId": CID,
        "netns": NETNS,
        "ifname": "eth0",
        "args": "",
        "path": "/opt/cni/bin",
        "config": config,
    }
    base.update(env)
    return base


def run(c: dict[str, Any], backend: FakeCniBackend) -> tuple[int, dict[str, Any]]:
    return asyncio.run(handle_cni(c, backend))


def seeded(internal: bool = False, v6: bool = False) -> FakeCniBackend:
    backend = FakeCniBackend()
    subnets = [Subnet(ipaddress.ip_network("10.88.0.0/24"), ipaddress.ip_address("10.88.0.1"))]
    if v6:
        subnets.append(
            Subnet(ipaddress.ip_network("fd00:88::/64"), ipaddress.ip_address("fd00:88::1"))
        )
    backend.add_network(
        Network(
            id="ab" * 32, name="web", driver="bridge", subnets=tuple(subnets), internal=internal
        )
    )
    return backend


def error(status_body: tuple[int, dict[str, Any]], code: int) -> str:
    status, body = status_body
    assert status == 1, body
    assert body["code"] == code, body
    assert set(body) <= {"cniVersion", "code", "msg", "details"}
    return str(body["msg"])


# --- ADD ----------------------------------------------------------------------------------


def test_add_returns_spec_shaped_result_in_requested_version() -> None:
    backend = seeded(v6=True)
    status, result = run(call("ADD", netconf()), backend)
    assert status == 0, result
    ep = backend.endpoint("web", CID, "eth0")
    assert result == {
        "cniVersion": "1.1.0",
        "interfaces": [
            {"name": ep.host_ifname, "mac": ep.host_mac},
            {"name": "eth0", "mac": ep.mac, "sandbox": NETNS},
        ],
        "ips": [
            {"interface": 1, "address": "10.88.0.2/24", "gateway": "10.88.0.1"},
            {"interface": 1, "address": "fd00:88::2/64", "gateway": "fd00:88::1"},
        ],
        "routes": [{"dst": "0.0.0.0/0", "gw": "10.88.0.1"}, {"dst": "::/0", "gw": "fd00:88::1"}],
        "dns": {"nameservers": ["10.88.0.1"], "search": ["web.netd"]},
    }
    assert ep.origin == "cni"


@pytest.mark.parametrize("version", ["0.3.0", "0.3.1", "0.4.0"])
def test_add_legacy_versions_carry_ip_version(version: str) -> None:
    status, result = run(call("ADD", netconf(version)), seeded())
    assert status == 0
    assert result["cniVersion"] == version
    assert result["ips"] == [
        {"version": "4", "interface": 1, "address": "10.88.0.2/24", "gateway": "10.88.0.1"}
    ]


def test_add_1_0_0_has_no_ip_version() -> None:
    status, result = run(call("ADD", netconf("1.0.0")), seeded())
    assert status == 0 and result["cniVersion"] == "1.0.0"
    assert "version" not in result["ips"][0]


def test_add_internal_network_has_no_routes() -> None:
    status, result = run(call("ADD", netconf()), seeded(internal=True))
    assert status == 0 and result["routes"] == []


def test_add_twice_is_attachment_conflict() -> None:
    backend = seeded()
    assert run(call("ADD", netconf()), backend)[0] == 0
    msg = error(run(call("ADD", netconf()), backend), spec.ATTACHMENT_CONFLICT)
    assert "already attached" in msg and "web" in msg


def test_add_passes_capabilities_and_args_to_backend() -> None:
    backend = seeded()
    config = netconf(
        runtimeConfig={
            "portMappings": [
                {"hostPort": 8080, "containerPort": 80, "protocol": "TCP", "hostIP": ""},
                {"hostPort": 5353, "containerPort": 53, "protocol": "udp", "hostIP": "10.0.0.1"},
            ],
            "mac": "02:AA:bb:cc:dd:ee",
            "ips": ["10.88.0.50/24"],
            "dns": {"servers": ["1.1.1.1"], "searches": ["corp.example"], "options": ["ndots:2"]},
            "aliases": {"web": ["db", "primary"], "other": ["x"]},
            "somethingNew": {"passes": "through"},
        },
        args={"cni": {"labels": [{"key": "a", "value": "b"}]}},
    )
    c = call("ADD", config, args="IgnoreUnknown=1;K8S_POD_NAME=Api-1;K8S_POD_NAMESPACE=ns;X=1")
    status, result = run(c, backend)
    assert status == 0, result
    ep = backend.endpoint("web", CID, "eth0")
    assert [str(a) for a in ep.addresses] == ["10.88.0.50/24"]
    assert ep.mac == "02:aa:bb:cc:dd:ee"
    assert ep.name == "api-1"
    assert ep.aliases == ("db", "primary")
    assert ep.dns_servers == ("1.1.1.1",)
    assert [(p.host_port, p.container_port, p.protocol, p.host_ip) for p in ep.port_mappings] == [
        (8080, 80, "tcp", None),
        (5353, 53, "udp", ipaddress.ip_address("10.0.0.1")),
    ]
    assert result["dns"] == {
        "nameservers": ["10.88.0.1"],
        "search": ["web.netd", "corp.example"],
        "options": ["ndots:2"],
    }
    assert result["interfaces"][1]["mac"] == "02:aa:bb:cc:dd:ee"


def test_add_aliases_list_form() -> None:
    backend = seeded()
    status, _ = run(call("ADD", netconf(runtimeConfig={"aliases": ["Db", "db", "cache"]})), backend)
    assert status == 0
    assert backend.endpoint("web", CID, "eth0").aliases == ("db", "cache")


def test_add_static_ip_from_cni_args_and_args_cni() -> None:
    backend = seeded()
    status, _ = run(call("ADD", netconf(), args="IP=10.88.0.7"), backend)
    assert status == 0
    assert str(backend.endpoint("web", CID, "eth0").addresses[0]) == "10.88.0.7/24"
    c = call("ADD", netconf(args={"cni": {"ips": ["10.88.0.9"]}}), containerId="other")
    assert run(c, backend)[0] == 0
    assert str(backend.endpoint("web", "other", "eth0").addresses[0]) == "10.88.0.9/24"


def test_add_static_ip_taken_is_conflict() -> None:
    backend = seeded()
    run(call("ADD", netconf(), args="IP=10.88.0.7"), backend)
    c = call("ADD", netconf(), args="IP=10.88.0.7", containerId="b")
    assert "in use" in error(run(c, backend), spec.ATTACHMENT_CONFLICT)


def test_add_port_conflict_is_101() -> None:
    backend = seeded()
    ports = {"portMappings": [{"hostPort": 8080, "containerPort": 80, "protocol": "tcp"}]}
    assert run(call("ADD", netconf(runtimeConfig=ports)), backend)[0] == 0
    c = call("ADD", netconf(runtimeConfig=ports), containerId="b")
    assert "8080" in error(run(c, backend), spec.PORT_CONFLICT)


def test_add_address_exhausted_is_100() -> None:
    backend = FakeCniBackend()
    backend.add_network(
        Network(
            id="cd" * 32,
            name="web",
            driver="bridge",
            subnets=(
                Subnet(ipaddress.ip_network("10.9.0.0/30"), ipaddress.ip_address("10.9.0.1")),
            ),
        )
    )
    assert run(call("ADD", netconf()), backend)[0] == 0
    msg = error(run(call("ADD", netconf(), containerId="b"), backend), spec.ADDRESS_EXHAUSTED)
    assert "10.9.0.0/30" in msg


@pytest.mark.parametrize(
    ("exc", "code"),
    [
        (KernelError('creating veth "nv1": File exists'), spec.KERNEL_FAILURE),
        (FirewallError("nft: table busy"), spec.FIREWALL_FAILURE),
        (PermissionDenied("uid 1000 may not attach"), spec.PERMISSION_DENIED),
        (StoreError("database is locked"), spec.IO_FAILURE),
        (Unavailable("netd is shutting down"), spec.TRY_AGAIN_LATER),
        (
            InvalidInput("netns", "/proc/1/ns/net", "not a network namespace"),
            spec.INVALID_ENVIRONMENT,
        ),
        (InvalidInput("static_ips", "1.2.3.4", "not in a subnet"), spec.INVALID_CONFIG),
        (NetdError("something odd"), spec.INTERNAL),
    ],
)
def test_add_backend_errors_map_to_codes(exc: NetdError, code: int) -> None:
    backend = seeded()
    backend.attach_error = exc
    msg = error(run(call("ADD", netconf()), backend), code)
    assert exc.message in msg and "CNI ADD on network 'web'" in msg


def test_unexpected_exception_is_999() -> None:
    backend = seeded()
    backend.attach_error = RuntimeError("boom")
    assert "boom" in error(run(call("ADD", netconf()), backend), spec.INTERNAL)


# --- versions and environment -------------------------------------------------------------


@pytest.mark.parametrize("version", ["0.1.0", "0.2.0", "2.0.0", "1.1", None])
def test_unsupported_version_is_1(version: str | None) -> None:
    config = netconf()
    config["cniVersion"] = version
    msg = error(run(call("ADD", config), seeded()), spec.INCOMPATIBLE_VERSION)
    assert "1.1.0" in msg


@pytest.mark.parametrize(
    ("command", "version"), [("CHECK", "0.3.1"), ("GC", "1.0.0"), ("STATUS", "0.4.0")]
)
def test_verb_needs_newer_version(command: str, version: str) -> None:
    msg = error(run(call(command, netconf(version)), seeded()), spec.INCOMPATIBLE_VERSION)
    assert command in msg


@pytest.mark.parametrize(
    ("env", "needle"),
    [
        ({"containerId": ""}, "CNI_CONTAINERID"),
        ({"containerId": "bad id!"}, "CNI_CONTAINERID"),
        ({"ifname": ""}, "CNI_IFNAME"),
        ({"ifname": "a-very-long-ifname0"}, "CNI_IFNAME"),
        ({"netns": ""}, "CNI_NETNS"),
        ({"netns": "relative/path"}, "CNI_NETNS"),
        ({"command": "EXPLODE"}, "CNI_COMMAND"),
        ({"args": "novalue"}, "CNI_ARGS"),
    ],
)
def test_bad_environment_is_4(env: dict[str, str], needle: str) -> None:
    assert needle in error(run(call("ADD", netconf(), **env), seeded()), spec.INVALID_ENVIRONMENT)


def test_unknown_cni_args_key_is_2_unless_ignored() -> None:
    assert "FOO" in error(
        run(call("ADD", netconf(), args="FOO=1"), seeded()), spec.UNSUPPORTED_FIELD
    )
    assert run(call("ADD", netconf(), args="IgnoreUnknown=true;FOO=1"), seeded())[0] == 0


def test_config_not_an_object_is_6() -> None:
    error(run(call("ADD", "{}"), seeded()), spec.DECODE_FAILURE)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("extra", "needle"),
    [
        ({"runtimeConfig": {"portMappings": [{"hostPort": 0, "containerPort": 80}]}}, "hostPort"),
        (
            {
                "runtimeConfig": {
                    "portMappings": [{"hostPort": 80, "containerPort": 80, "protocol": "icmp"}]
                }
            },
            "protocol",
        ),
        (
            {
                "runtimeConfig": {
                    "portMappings": [{"hostPort": 8, "containerPort": 8, "hostIP": "x"}]
                }
            },
            "hostIP",
        ),
        ({"runtimeConfig": {"mac": "01:00:5e:00:00:01"}}, "multicast"),
        ({"runtimeConfig": {"mac": "zz"}}, "runtimeConfig.mac"),
        ({"runtimeConfig": {"ips": ["10.88.0.300"]}}, "runtimeConfig.ips"),
        ({"runtimeConfig": {"aliases": ["bad..name"]}}, "runtimeConfig.aliases"),
        ({"runtimeConfig": {"dns": {"servers": ["not-ip"]}}}, "runtimeConfig.dns.servers"),
        ({"runtimeConfig": []}, "runtimeConfig"),
        ({"name": "bad name"}, "name"),
        ({"type": "bridge"}, "type"),
    ],
)
def test_invalid_config_is_7(extra: dict[str, Any], needle: str) -> None:
    assert needle in error(run(call("ADD", netconf(**extra)), seeded()), spec.INVALID_CONFIG)


def test_invalid_pod_name_is_7() -> None:
    c = call("ADD", netconf(), args="K8S_POD_NAME=a..b")
    assert "K8S_POD_NAME" in error(run(c, seeded()), spec.INVALID_CONFIG)


# --- inline network definition ------------------------------------------------------------


def test_missing_network_without_definition_is_7() -> None:
    msg = error(run(call("ADD", netconf()), FakeCniBackend()), spec.INVALID_CONFIG)
    assert "does not exist" in msg and "netd network create web" in msg


def test_inline_definition_creates_network() -> None:
    backend = FakeCniBackend()
    config = netconf(
        ipam={
            "ranges": [
                [{"subnet": "10.77.0.0/24", "gateway": "10.77.0.254", "rangeStart": "10.77.0.128"}],
                [{"subnet": "fd00:77::/64"}],
            ]
        },
        mtu=1400,
        bridge="br-web",
        internal=True,
    )
    status, result = run(call("ADD", config), backend)
    assert status == 0, result
    net = backend.networks["web"]
    assert [str(s.subnet) for s in net.subnets] == ["10.77.0.0/24", "fd00:77::/64"]
    assert str(net.subnets[0].gateway) == "10.77.0.254"
    assert str(net.subnets[0].ip_range) == "10.77.0.128/25"
    assert net.options == {"mtu": "1400", "bridge": "br-web"} and net.internal
    assert result["ips"][0]["address"] == "10.77.0.129/24"
    # The same definition again agrees with what now exists.
    assert run(call("ADD", config, containerId="b"), backend)[0] == 0


def test_inline_definition_legacy_subnet_key() -> None:
    backend = FakeCniBackend()
    config = netconf(ipam={"type": "netd", "subnet": "10.66.0.0/24"})
    assert run(call("ADD", config), backend)[0] == 0
    assert str(backend.networks["web"].subnets[0].subnet) == "10.66.0.0/24"


def test_conflicting_definition_is_7_naming_each_conflict() -> None:
    backend = seeded()
    config = netconf(
        ipam={"ranges": [[{"subnet": "10.89.0.0/24"}]]}, internal=True, mtu=9000, bridge="br0"
    )
    msg = error(run(call("ADD", config), backend), spec.INVALID_CONFIG)
    assert "exists with a different definition" in msg
    for needle in ("10.89.0.0/24", "10.88.0.0/24", "internal: true", "mtu: 9000", "bridge: br0"):
        assert needle in msg
    assert not backend.endpoints


def test_conflicting_gateway_is_7() -> None:
    config = netconf(ipam={"ranges": [[{"subnet": "10.88.0.0/24", "gateway": "10.88.0.254"}]]})
    assert "gateway" in error(run(call("ADD", config), seeded()), spec.INVALID_CONFIG)


def test_overlapping_inline_network_is_7() -> None:
    backend = seeded()
    config = netconf(name="other", ipam={"ranges": [[{"subnet": "10.88.0.0/16"}]]})
    assert "overlaps" in error(run(call("ADD", config), backend), spec.INVALID_CONFIG)


@pytest.mark.parametrize(
    ("config", "code", "needle"),
    [
        ({"ipam": {"type": "host-local", "subnet": "10.1.0.0/24"}}, 2, "ipam.type"),
        (
            {"ipam": {"subnet": "10.1.0.0/24", "rangeStart": "10.1.0.3", "rangeEnd": "10.1.0.9"}},
            2,
            "rangeStart",
        ),
        ({"ipam": {"routes": [{"dst": "192.168.0.0/16"}]}}, 2, "ipam.routes[0].dst"),
        ({"ipam": {"subnet": "nope"}}, 7, "ipam.subnet"),
        ({"ipam": {"ranges": [[{"subnet": "10.1.0.0/24", "gateway": 5}]]}}, 7, "gateway"),
        ({"ipam": {"subnet": "10.1.0.0/24", "rangeStart": "10.2.0.1"}}, 7, "rangeStart"),
        ({"mtu": 10}, 7, "mtu"),
        ({"internal": "yes"}, 7, "internal"),
    ],
)
def test_bad_definition(config: dict[str, Any], code: int, needle: str) -> None:
    assert needle in error(run(call("ADD", netconf(**config)), FakeCniBackend()), code)


# --- IPAM-only mode -----------------------------------------------------------------------


def ipam_conf(version: str = "1.0.0") -> dict[str, Any]:
    return {
        "cniVersion": version,
        "name": "web",
        "type": "bridge",
        "bridge": "cni0",
        "isGateway": True,
        "ipam": {
            "type": "netd",
            "ranges": [[{"subnet": "10.55.0.0/24"}]],
            "routes": [{"dst": "192.168.0.0/16", "gw": "10.55.0.1"}],
        },
    }


def test_ipam_only_add_and_del() -> None:
    backend = FakeCniBackend()
    status, result = run(call("ADD", ipam_conf()), backend)
    assert status == 0, result
    assert result == {
        "cniVersion": "1.0.0",
        "ips": [{"address": "10.55.0.2/24", "gateway": "10.55.0.1"}],
        "routes": [
            {"dst": "0.0.0.0/0", "gw": "10.55.0.1"},
            {"dst": "192.168.0.0/16", "gw": "10.55.0.1"},
        ],
        # No DNS of netd's: the gateway address is the main plugin's, netd listens nowhere.
        "dns": {},
    }
    assert backend.networks["web"].driver == "ipam"
    assert backend.plumbed[("web", CID, "eth0")] is False
    assert run(call("DEL", ipam_conf()), backend) == (0, {})
    assert not backend.endpoints


def test_ipam_only_on_a_bridge_network_is_7_and_the_reverse_too() -> None:
    """netd's own bridge beside the main plugin's, with the same gateway, breaks traffic:
    IPAM-only mode needs an IPAM-only network, and netd as main plugin needs a bridge one."""
    backend = seeded()  # "web" is a bridge network
    msg = error(run(call("ADD", ipam_conf()), backend), spec.INVALID_CONFIG)
    assert "mode: netd as the IPAM plugin of another main plugin in the config" in msg
    assert "`netd network create --driver ipam`" in msg
    ipam_backend = FakeCniBackend()
    assert run(call("ADD", ipam_conf()), ipam_backend)[0] == 0
    main = netconf(ipam={"ranges": [[{"subnet": "10.55.0.0/24"}]]}, containerId="other")
    msg = error(run(call("ADD", main), ipam_backend), spec.INVALID_CONFIG)
    assert "mode: netd as the main plugin in the config, an IPAM-only network" in msg
    assert len(ipam_backend.endpoints) == 1


def test_ipam_only_legacy_version() -> None:
    status, result = run(call("ADD", ipam_conf("0.4.0")), FakeCniBackend())
    assert status == 0 and result["ips"] == [
        {"version": "4", "address": "10.55.0.2/24", "gateway": "10.55.0.1"}
    ]


# --- DEL, CHECK, GC, STATUS, VERSION ------------------------------------------------------


def test_del_is_idempotent_and_takes_empty_netns() -> None:
    backend = seeded()
    run(call("ADD", netconf()), backend)
    config = netconf(
        prevResult={"cniVersion": "1.1.0", "ips": []},
        runtimeConfig={"portMappings": [{"hostPort": 1, "containerPort": 1}]},
    )
    assert run(call("DEL", config, netns=""), backend) == (0, {})
    assert ("detach", ("web", CID, "eth0", None)) in backend.calls
    assert run(call("DEL", netconf(), netns=""), backend) == (0, {})
    assert run(call("DEL", netconf(name="gone")), FakeCniBackend()) == (0, {})


def test_del_does_not_need_a_valid_definition() -> None:
    backend = seeded()
    run(call("ADD", netconf()), backend)
    config = netconf(ipam={"subnet": "10.1.0.0/24"}, mtu=1)
    assert run(call("DEL", config), backend) == (0, {})
    assert not backend.endpoints


def test_check() -> None:
    backend = seeded()
    _, result = run(call("ADD", netconf()), backend)
    config = netconf(prevResult=result)
    assert run(call("CHECK", config), backend) == (0, {})
    backend.broken[(CID, "eth0")] = 'address 10.88.0.2/24 missing on "eth0"'
    assert "10.88.0.2/24 missing" in error(run(call("CHECK", config), backend), spec.KERNEL_FAILURE)
    msg = error(run(call("CHECK", config, containerId="unknown"), backend), spec.UNKNOWN_CONTAINER)
    assert "unknown" in msg


def test_check_of_missing_network_is_3_and_creates_nothing() -> None:
    backend = FakeCniBackend()
    config = netconf(prevResult={"ips": []}, ipam={"subnet": "10.1.0.0/24"})
    assert "web" in error(run(call("CHECK", config), backend), spec.UNKNOWN_CONTAINER)
    assert not backend.networks


def test_check_requires_prev_result() -> None:
    assert "prevResult" in error(run(call("CHECK", netconf()), seeded()), spec.INVALID_CONFIG)
    bad = netconf(prevResult=[1])
    assert "prevResult" in error(run(call("CHECK", bad), seeded()), spec.DECODE_FAILURE)


@pytest.mark.parametrize("key", ["cni.dev/valid-attachments", "cni.dev/attachments"])
def test_gc(key: str) -> None:
    backend = seeded()
    for cid in ("keep", "stale"):
        run(call("ADD", netconf(), containerId=cid), backend)
    config = netconf()
    config[key] = [{"containerID": "keep", "ifname": "eth0"}]
    assert run(call("GC", config, containerId="", ifname="", netns=""), backend) == (0, {})
    assert set(backend.endpoints) == {("web", "keep", "eth0")}


def test_gc_requires_list() -> None:
    assert "valid-attachments" in error(run(call("GC", netconf()), seeded()), spec.INVALID_CONFIG)
    bad = netconf()
    bad["cni.dev/valid-attachments"] = [{"containerID": 1}]
    assert "valid-attachments" in error(run(call("GC", bad), seeded()), spec.INVALID_CONFIG)


def test_status() -> None:
    backend = seeded()
    assert run(call("STATUS", netconf()), backend) == (0, {})
    backend.ready = False
    assert "starting" in error(run(call("STATUS", netconf()), backend), spec.PLUGIN_NOT_AVAILABLE)


def test_status_data_plane_failure_is_51() -> None:
    class Broken(FakeCniBackend):
        async def status(self) -> None:
            raise KernelError("bridge nd-abc is gone")

    assert "bridge" in error(
        run(call("STATUS", netconf()), Broken()), spec.PLUGIN_NOT_AVAILABLE_LIMITED
    )


def test_version() -> None:
    status, body = run(call("VERSION", {"cniVersion": "1.0.0"}), FakeCniBackend())
    assert (status, body) == (
        0,
        {"cniVersion": "1.0.0", "supportedVersions": list(spec.SUPPORTED_VERSIONS)},
    )


def test_conflist_on_stdin_is_flattened() -> None:
    conflist = {
        "cniVersion": "1.0.0",
        "name": "web",
        "plugins": [{"type": "netd"}, {"type": "portmap", "capabilities": {"portMappings": True}}],
    }
    status, result = run(call("ADD", conflist), seeded())
    assert status == 0 and result["cniVersion"] == "1.0.0"
    bad = {"cniVersion": "1.0.0", "name": "web", "plugins": [{"type": "bridge"}]}
    assert "netd" in error(run(call("ADD", bad), seeded()), spec.INVALID_CONFIG)


def test_errors_answer_in_requested_version() -> None:
    status, body = run(call("ADD", netconf("0.4.0"), ifname=""), seeded())
    assert status == 1 and body["cniVersion"] == "0.4.0"


def test_backend_not_found_on_add_is_7() -> None:
    backend = seeded()
    backend.attach_error = NotFound("network 'web' not found", field="network", value="web")
    error(run(call("ADD", netconf()), backend), spec.INVALID_CONFIG)


def test_conflict_subclass_exhausted_not_confused() -> None:
    backend = seeded()
    backend.attach_error = AddressExhausted("no free address")
    error(run(call("ADD", netconf()), backend), spec.ADDRESS_EXHAUSTED)
    backend.attach_error = Conflict("taken", field="static_ips")
    error(run(call("ADD", netconf()), backend), spec.ATTACHMENT_CONFLICT)
