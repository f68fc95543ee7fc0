"""NftablesFirewall transactions (with a recording stand-in for libnftables), the factory,
and the monitor loop. Real kernels are exercised in tests/ns/test_firewall_traffic.py."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
from test_firewall_ruleset import DB, NET_A, NET_C, WEB, ep

from netd.errors import ConfigError, Conflict, FirewallError, NotFound
from netd.firewall import FirewallMonitor, NullFirewall, make_firewall
from netd.firewall import nft as nft_module
from netd.firewall.nft import NftablesFirewall
from netd.model import PortMapping


class RecordingNft:
    """Records every batch; fails the batches for which ``fail`` returns True."""

    def __init__(self) -> None:
        self.batches: list[list[dict[str, Any]]] = []
        self.fail = lambda cmds: False

    def json_cmd(self, root: dict[str, Any]) -> tuple[int, Any, str]:
        cmds = root["nftables"]
        self.batches.append(cmds)
        return (1, "", "Error: No such file or directory\n") if self.fail(cmds) else (0, "", "")

    def set_terse_output(self, on: bool) -> None:
        pass


@pytest.fixture
def fw(monkeypatch: pytest.MonkeyPatch) -> tuple[NftablesFirewall, RecordingNft]:
    monkeypatch.setattr(nft_module, "enable_route_localnet", lambda bridge: True)
    rec = RecordingNft()
    return NftablesFirewall(rec), rec


def verbs(batch: list[dict[str, Any]]) -> set[str]:
    return {f"{verb} {next(iter(body))}" for cmd in batch for verb, body in cmd.items()}


def test_first_network_builds_tables_then_endpoints_only_add_elements(fw: Any) -> None:
    firewall, rec = fw
    firewall.ensure_network(NET_A, "nd-a")
    assert "add rule" in verbs(rec.batches[-1])
    firewall.ensure_network(NET_C, "nd-c")
    firewall.add_endpoint(NET_A, WEB)
    assert len(rec.batches) == 3
    assert verbs(rec.batches[-1]) == {"add element"}
    firewall.remove_endpoint(NET_A, WEB)
    assert verbs(rec.batches[-1]) == {"delete element"}
    firewall.remove_endpoint(NET_A, WEB)  # already gone: nothing sent
    assert len(rec.batches) == 4


def test_conflict_sends_nothing(fw: Any) -> None:
    firewall, rec = fw
    firewall.ensure_network(NET_A, "nd-a")
    firewall.add_endpoint(NET_A, WEB)
    sent = len(rec.batches)
    with pytest.raises(Conflict, match="already published by container web"):
        firewall.add_endpoint(NET_A, ep(NET_A, "late", ["10.1.0.9/24"], (PortMapping(8080, 1),)))
    assert len(rec.batches) == sent


def test_unknown_network_is_not_found(fw: Any) -> None:
    firewall, _ = fw
    with pytest.raises(NotFound):
        firewall.add_endpoint(NET_C, DB)


def test_failed_increment_falls_back_to_full_rebuild(fw: Any) -> None:
    firewall, rec = fw
    firewall.ensure_network(NET_A, "nd-a")
    rec.fail = lambda cmds: "element" in next(iter(cmds[0].values()))
    firewall.add_endpoint(NET_A, WEB)
    assert "add rule" in verbs(rec.batches[-1])  # the rebuild carried the new element
    assert any("pub4_any" in str(c) for c in rec.batches[-1])


def test_failure_names_the_operation_and_keeps_state(fw: Any) -> None:
    firewall, rec = fw
    rec.fail = lambda cmds: True
    with pytest.raises(FirewallError) as err:
        firewall.ensure_network(NET_A, "nd-a")
    assert str(err.value) == (
        'adding firewall rules for network "na" (bridge nd-a): Error: No such file or directory'
    )
    rec.fail = lambda cmds: False
    with pytest.raises(NotFound):
        firewall.add_endpoint(NET_A, WEB)


def test_last_network_removal_deletes_tables(fw: Any) -> None:
    firewall, rec = fw
    firewall.ensure_network(NET_A, "nd-a")
    firewall.add_endpoint(NET_A, WEB)
    firewall.remove_network(NET_A, "nd-a")
    assert verbs(rec.batches[-1]) == {"add table", "delete table"}


def test_factory() -> None:
    assert isinstance(make_firewall("none"), NullFirewall)
    with pytest.raises(ConfigError, match="firewall_backend 'ufw'"):
        make_firewall("ufw")


def test_monitor_repairs_when_check_fails_and_stops() -> None:
    broken = threading.Event()
    broken.set()
    repaired = threading.Event()

    def repair() -> None:
        broken.clear()
        repaired.set()

    mon = FirewallMonitor(lambda: not broken.is_set(), repair, interval=0.05, events=False)
    mon.start()
    assert repaired.wait(2)
    time.sleep(0.2)
    mon.stop()
    assert mon.repairs == 1


def test_monitor_survives_a_failing_repair() -> None:
    calls: list[int] = []

    def repair() -> None:
        calls.append(1)
        raise FirewallError("repairing: boom")

    mon = FirewallMonitor(lambda: False, repair, interval=0.02, events=False)
    mon.start()
    deadline = time.monotonic() + 2
    while len(calls) < 3 and time.monotonic() < deadline:
        time.sleep(0.01)
    mon.stop()
    assert len(calls) >= 3
