"""How `netd recover` combines the recovery copy with the kernel scan (pure; no root)."""

from __future__ import annotations

import dataclasses
import ipaddress
from pathlib import Path

import pytest
from click.testing import CliRunner
from test_store_records import make_endpoint, make_network

from netd.cli.main import cli
from netd.model import Endpoint, Network, Subnet
from netd.names import bridge_name, endpoint_tag, host_veth_name
from netd.reconcile import recover as rec
from netd.reconcile.recover import Peer, Scan, TaggedVeth, build_records, parse_tag
from netd.reconcile.recover_copy import tag_key
from netd.store.mirror import CopyContents, CopyWriter
from netd.store.sqlite import SqliteStore

IF = ipaddress.ip_interface
NET_ID = "ab" * 32
GONE_ID = "cd" * 32


def network(net_id: str = NET_ID, name: str = "front") -> Network:
    subnet = Subnet(ipaddress.ip_network("10.88.0.0/24"), ipaddress.ip_address("10.88.0.1"))
    return dataclasses.replace(
        make_network(net_id, name), subnets=(subnet,), ipv6=False, options={}, internal=False
    )


def endpoint(cid: str, address: str, net_id: str = NET_ID) -> Endpoint:
    return dataclasses.replace(
        make_endpoint(cid, address, nid=net_id),
        host_ifname=host_veth_name(net_id, cid, "eth0"),
        netns=f"/run/netns/{cid}",
    )


def veth(ep: Endpoint, *addresses: str, mac: str | None = None) -> TaggedVeth:
    peer = Peer(ep.netns, "eth0", mac or str(ep.mac), tuple(IF(a) for a in addresses))
    net12, ifname, cid = tag_key(ep)
    return TaggedVeth(ep.host_ifname, net12, ifname, cid, "02:00:00:00:00:ee", peer)


def contents(networks: list[Network], endpoints: list[Endpoint]) -> CopyContents:
    copy = CopyContents(Path("/copy"), found=True)
    for net in networks:
        copy.networks[net.id] = net
        copy.endpoints[net.id] = [e for e in endpoints if e.network_id == net.id]
    return copy


def test_the_copy_gives_back_everything_the_user_configured() -> None:
    net, ep = network(), endpoint("c1", "10.88.0.2/24")
    scan = Scan(
        bridges={NET_ID: (bridge_name(NET_ID), [IF("10.88.0.1/24")])},
        veths=[veth(ep, "10.88.0.2/24")],
    )
    report = build_records(scan, copy=contents([net], [ep]), now=99.0)
    assert report.networks == [net] and report.from_copy == {NET_ID}
    [got] = report.endpoints
    assert got == dataclasses.replace(ep, host_mac="02:00:00:00:00:ee")
    assert report.lost == [] and report.notes == []
    assert "[copy]" in report.render() and "aliases web,www" in report.render()


def test_the_kernel_decides_what_exists_and_which_addresses_are_used() -> None:
    net = network()
    moved, vanished = endpoint("c1", "10.88.0.2/24"), endpoint("c2", "10.88.0.3/24")
    ipam_only = dataclasses.replace(endpoint("c3", "10.88.0.4/24"), host_ifname="")
    scan = Scan(  # no bridge (a reboot): the network is still the user's
        veths=[veth(moved, "10.88.0.7/24", mac="02:00:00:00:00:07")],
    )
    report = build_records(scan, copy=contents([net], [moved, vanished, ipam_only]))
    assert [n.name for n in report.networks] == ["front"]
    by_cid = {e.container_id: e for e in report.endpoints}
    assert set(by_cid) == {"c1", "c3"}
    assert (
        by_cid["c1"].addresses == (IF("10.88.0.7/24"),) and by_cid["c1"].mac == "02:00:00:00:00:07"
    )
    assert by_cid["c1"].aliases == moved.aliases  # the rest still from the copy
    assert by_cid["c3"] == ipam_only
    notes = "\n".join(report.notes)
    assert "no bridge in the kernel; the daemon creates it at start" in notes
    assert "c1/eth0: the container has 10.88.0.7/24, the copy 10.88.0.2/24" in notes
    assert "c2/eth0 on abababababab: in the copy, but its host veth" in notes
    assert report.lost == []


def test_without_a_copy_record_the_kernel_alone_speaks() -> None:
    known, unknown = endpoint("c1", "10.88.0.2/24"), endpoint("c2", "10.88.0.3/24")
    scan = Scan(
        bridges={
            NET_ID: (bridge_name(NET_ID), [IF("10.88.0.1/24")]),
            GONE_ID: (bridge_name(GONE_ID), [IF("10.99.0.1/24")]),
        },
        veths=[veth(known, "10.88.0.2/24"), veth(unknown, "10.88.0.3/24")],
    )
    copy = contents([network()], [known])
    copy.problems.append("copy of network cdcdcdcdcdcd (/copy/x): checksum mismatch")
    report = build_records(scan, copy=copy)
    names = {n.id: n.name for n in report.networks}
    assert names == {NET_ID: "front", GONE_ID: f"recovered-{GONE_ID[:12]}"}
    assert report.from_copy == {NET_ID}
    by_cid = {e.container_id: e for e in report.endpoints}
    assert by_cid["c1"].name == "c1" and by_cid["c2"].name is None
    lost = "\n".join(report.lost)
    assert "the recovery copy: copy of network cdcdcdcdcdcd" in lost
    assert "DNS names, aliases and hostnames of the 1 endpoint(s) the copy does not have" in lost
    assert "for the 1 network(s) the copy does not have" in lost


def test_given_names_win_and_names_stay_unique() -> None:
    first, second = network(), network(GONE_ID, "front")  # a damaged copy could say so
    report = build_records(Scan(), copy=contents([first, second], []), names={"cdcd": "back"})
    assert sorted(n.name for n in report.networks) == ["back", "front"]
    report = build_records(Scan(), copy=contents([first, second], []))
    assert sorted(n.name for n in report.networks) == ["front", f"recovered-{GONE_ID[:12]}"]
    assert any("already taken" in line for line in report.lost)


def test_a_long_container_id_is_matched_through_its_cut_tag() -> None:
    ep = endpoint("x" * 250, "10.88.0.2/24")
    parsed = parse_tag(endpoint_tag(ep.network_id, ep.container_id, ep.ifname))
    assert parsed is not None and len(parsed[2]) < 250
    scan = Scan(
        bridges={NET_ID: (bridge_name(NET_ID), [IF("10.88.0.1/24")])},
        veths=[veth(ep, "10.88.0.2/24")],
    )
    [got] = build_records(scan, copy=contents([network()], [ep])).endpoints
    assert got.container_id == ep.container_id


def test_the_cli_finds_the_copy_where_the_config_puts_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    net, ep = network(), endpoint("c1", "10.88.0.2/24")
    scan = Scan(
        bridges={NET_ID: (bridge_name(NET_ID), [IF("10.88.0.1/24")])},
        veths=[veth(ep, "10.88.0.2/24")],
    )
    monkeypatch.setattr(rec, "scan_kernel", lambda: scan)
    monkeypatch.setattr("netd.config.DEFAULT_CONFIG", tmp_path / "absent.toml")
    writer = CopyWriter(tmp_path / "other-disk")
    writer.write_network(net)
    writer.write_endpoint(ep)
    state = tmp_path / "state"
    config = tmp_path / "netd.toml"
    config.write_text(f'state_dir = "{state}"\nrecovery_dir = "{tmp_path / "other-disk"}"\n')
    out = CliRunner().invoke(cli, ["recover", "--config", str(config)])
    assert out.exit_code == 0, out.output
    assert f"network front ({NET_ID[:12]}): 10.88.0.0/24 gw 10.88.0.1 [copy]" in out.output
    with SqliteStore(state / "netd.db") as store:
        assert store.list_networks() == [net]
        [got] = store.list_endpoints()
        assert got.aliases == ep.aliases and got.owner_uid == ep.owner_uid
    # Without the copy's place, only the kernel speaks, and the report says where it looked.
    out = CliRunner().invoke(cli, ["recover", "--state-dir", str(state), "--force", "--dry-run"])
    assert out.exit_code == 0, out.output
    assert f"not recovered: the recovery copy: no recovery copy at {state / 'recovery'}" in (
        out.output
    )


def test_an_ipam_only_network_comes_back_from_the_copy_alone() -> None:
    """Driver ``ipam`` networks have no kernel object at all: only the copy knows them."""
    net = dataclasses.replace(network(), driver="ipam")
    ep = dataclasses.replace(endpoint("c1", "10.88.0.2/24"), host_ifname="", origin="cni")
    report = build_records(Scan(), copy=contents([net], [ep]))
    assert report.networks == [net] and report.endpoints == [ep]
    assert report.notes == [] and report.lost == []
