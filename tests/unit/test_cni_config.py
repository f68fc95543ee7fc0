"""Pure parsers of the CNI call: CNI_ARGS, aliases, conflist flattening, versions, GC lists."""

from __future__ import annotations

import pytest

from netd.cni import spec
from netd.cni.config import parse_aliases, parse_cni_args, parse_valid_attachments
from netd.cni.netdef import NetDefinition, parse_definition, to_spec
from netd.cni.spec import CniError, flatten_config, version_key, version_result


def test_cni_args_podman_style() -> None:
    args = parse_cni_args("IgnoreUnknown=1;K8S_POD_NAME=web;K8S_POD_NAMESPACE=ns;FOO=bar")
    assert (args.pod_name, args.pod_namespace, args.ips, args.mac) == ("web", "ns", (), None)


def test_cni_args_ip_list_and_mac() -> None:
    args = parse_cni_args("IP=10.0.0.5,fd00::5/64;MAC=02:AB:00:00:00:01")
    assert args.ips == ("10.0.0.5", "fd00::5") and args.mac == "02:ab:00:00:00:01"


@pytest.mark.parametrize(("raw", "code"), [("FOO=1", 2), ("K8S_POD_NAME", 4), ("IP=x", 7)])
def test_cni_args_errors(raw: str, code: int) -> None:
    with pytest.raises(CniError) as info:
        parse_cni_args(raw)
    assert info.value.code == code


def test_aliases_both_forms() -> None:
    assert parse_aliases(["A", "b", "a"], "web") == ("a", "b")
    assert parse_aliases({"web": ["x"], "db": ["y"]}, "web") == ("x",)
    assert parse_aliases({"db": ["y"]}, "web") == ()
    with pytest.raises(CniError, match=r"runtimeConfig\.aliases\.web"):
        parse_aliases({"web": "x"}, "web")


def test_flatten_takes_the_netd_plugin_of_a_conflist() -> None:
    conflist = {
        "cniVersion": "1.0.0",
        "name": "n",
        "plugins": [{"type": "x"}, {"type": "bridge", "ipam": {"type": "netd"}}],
    }
    assert flatten_config(conflist) == {
        "type": "bridge",
        "ipam": {"type": "netd"},
        "name": "n",
        "cniVersion": "1.0.0",
    }
    plain = {"type": "netd", "plugins": "ignored"}
    assert flatten_config(plain) is plain


def test_versions() -> None:
    assert version_key("0.4.0") < version_key("1.0.0") < version_key("1.1.0")
    with pytest.raises(CniError) as info:
        version_key("1.0")
    assert info.value.code == spec.INCOMPATIBLE_VERSION
    assert version_result({"cniVersion": "0.2.0"})["cniVersion"] == "1.1.0"
    assert version_result([])["cniVersion"] == "1.1.0"


def test_valid_attachments_prefers_the_current_key() -> None:
    config = {
        "cni.dev/valid-attachments": [{"containerID": "a", "ifname": "eth0"}],
        "cni.dev/attachments": [],
    }
    assert parse_valid_attachments(config) == {("a", "eth0")}


def test_definition_to_spec() -> None:
    definition = parse_definition(
        {"ipam": {"ranges": [[{"subnet": "fd00:1::/64"}]]}, "mtu": 1450}, ipam_only=False
    )
    network_spec = to_spec("v6only", definition)
    assert (network_spec.ipv4, network_spec.ipv6) == (False, True)
    assert network_spec.options == {"mtu": "1450"}
    assert not NetDefinition().defines
    # An IPAM-only config describes addressing only; the main plugin's mtu/bridge are its own.
    ipam_only = parse_definition({"mtu": 1, "bridge": "cni0", "ipam": {"type": "netd"}}, True)
    assert ipam_only == NetDefinition(ipam_only=True)
    # ...and its network is created with the ipam driver: no bridge, no firewall, no DNS.
    ipam_spec = to_spec("ref", parse_definition({"ipam": {"subnet": "10.3.0.0/24"}}, True))
    assert (ipam_spec.driver, ipam_spec.options) == ("ipam", {"dns": "false"})
    assert network_spec.driver == "bridge"
