"""A state filesystem that is full, or read-only, under a running or starting daemon.

The state directory is a small tmpfs (or a read-only mount) in the daemon's own mount namespace
(``state_fs``). Every assertion reads the kernel back independently (``ip -j``, ``nft``, ``dig``
from a container, the CNI plugin's exit code), not only netd's API.

- A disconnect that cannot change the record changes nothing: veth, container interface,
  firewall elements, DNS name and record stay; once the disk has room, the retry removes all.
- While the store cannot write, ``/v1/status`` says ``ready: false`` with the reason, ``netd
  status`` exits 1 and CNI STATUS fails with code 51; all recover once writes succeed again.
- A read-only state directory stops the start with one log line naming the path and the errno.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cni_runtime import Runtime
from netns_fixtures import Namespace, Sandbox
from netns_fixtures.daemon import Daemon
from state_fs import READ_ONLY_BIND, READ_ONLY_TMPFS, StateFsDaemon

from netd.cni.install import install_plugin

NET = {"name": "full", "subnets": [{"subnet": "10.131.0.0/24"}]}
GATEWAY = "10.131.0.1"
CNI_NET = {
    "cniVersion": "1.1.0",
    "name": "cnifull",
    "type": "netd",
    "ipam": {"ranges": [[{"subnet": "10.132.0.0/24"}]]},
}


@pytest.fixture
def full_daemon(host: Namespace) -> Iterator[StateFsDaemon]:
    d = StateFsDaemon(host, firewall="nftables").start()
    try:
        yield d
    finally:
        d.close_checked()


def dig(ns: Namespace, name: str) -> list[str]:
    """A real DNS query from a container to the network's gateway."""
    return ns.run("dig", "+short", "+time=2", "+tries=1", f"@{GATEWAY}", name).split()


def kernel_view(host: Namespace, c: Namespace, ep: dict[str, Any]) -> dict[str, bool]:
    """What of an endpoint the kernel holds: host veth, container interface, firewall elements."""
    addr = ep["addresses"][0].split("/")[0]
    ruleset = host.run("nft", "list", "table", "inet", "netd")
    return {
        "veth": ep["host_ifname"] in host.links(),
        "eth0": "eth0" in c.links(),
        "address": c.addresses("eth0") == ep["addresses"] if "eth0" in c.links() else False,
        "nft": addr in ruleset,
    }


def status(d: Daemon) -> dict[str, Any]:
    code, body = d.request("GET", "/v1/status")
    assert code == 200, body
    return body  # type: ignore[no-any-return]


def test_disconnect_on_full_disk_changes_nothing_and_retry_succeeds(
    full_daemon: StateFsDaemon, host: Namespace, sandbox: Sandbox
) -> None:
    d = full_daemon
    c, client = sandbox.add_ns("c"), sandbox.add_ns("client")
    assert d.request("POST", "/v1/networks", NET)[0] == 201
    body = {"netns": c.path, "name": "web", "publish": [{"host_port": 8080, "container_port": 80}]}
    code, ep = d.request("POST", "/v1/networks/full/connect", body)
    assert code == 201, ep
    assert d.request("POST", "/v1/networks/full/connect", {"netns": client.path})[0] == 201
    addr = ep["addresses"][0].split("/")[0]
    assert dig(client, "web") == [addr]
    assert status(d)["ready"] is True
    before = kernel_view(host, c, ep)
    assert all(before.values()), before

    d.fill()
    code, answer = d.request("POST", "/v1/networks/full/disconnect", {"netns": c.path})
    assert code >= 500 and answer["error"]["code"] == "store_error", answer
    assert "full" in answer["error"]["message"], answer
    # Nothing changed: kernel, record and DNS all still describe the attachment.
    assert kernel_view(host, c, ep) == before
    _, net = d.request("GET", "/v1/networks/full?plumbing=0")
    states = {e["container_id"]: e["state"] for e in net["endpoints"]}
    assert states[ep["container_id"]] == "ready", net
    assert dig(client, "web") == [addr]
    assert c.ping(GATEWAY)
    # A connect meanwhile fails too, and leaves nothing behind (this held before; keep it).
    other = sandbox.add_ns("other")
    links = set(host.links())
    code, answer = d.request("POST", "/v1/networks/full/connect", {"netns": other.path})
    assert code >= 500, answer
    assert set(host.links()) == links and "eth0" not in other.links()

    # The daemon says it cannot work, and why.
    health = status(d)
    assert health["ready"] is False, health
    assert "cannot write" in health["reason"] and "full" in health["reason"], health
    assert health["store"]["ok"] is False, health
    shown = d.cli("status", check=False)
    assert shown.returncode == 1 and "cannot write" in shown.stdout, shown

    d.unfill()
    assert status(d)["ready"] is True
    assert d.cli("status").returncode == 0
    code, answer = d.request("POST", "/v1/networks/full/disconnect", {"netns": c.path})
    assert code == 200, answer
    after = kernel_view(host, c, ep)
    assert not any(after.values()), after
    assert dig(client, "web") == []
    _, net = d.request("GET", "/v1/networks/full?plumbing=0")
    assert [e["container_id"] for e in net["endpoints"]] != [ep["container_id"]]
    assert ep["container_id"] not in {e["container_id"] for e in net["endpoints"]}


def test_cni_status_and_del_on_full_disk(
    full_daemon: StateFsDaemon, host: Namespace, sandbox: Sandbox, tmp_path: Path
) -> None:
    bin_dir = tmp_path / "bin"
    install_plugin(bin_dir)
    rt = Runtime(host, [bin_dir], full_daemon.socket)
    c = sandbox.add_ns("c")
    kw: dict[str, Any] = {"container_id": c.name, "netns": c.path}
    assert rt.exec("netd", "STATUS", CNI_NET).code == 0
    added = rt.exec("netd", "ADD", CNI_NET, **kw)
    assert added.code == 0, added.out
    assert c.addresses("eth0") == [added.out["ips"][0]["address"]]

    full_daemon.fill()
    st = rt.exec("netd", "STATUS", CNI_NET)
    assert st.code != 0 and st.error_code == 51, (st.out, st.err)
    assert "cannot write" in st.out["msg"], st.out
    deleted = rt.exec("netd", "DEL", CNI_NET, **kw)
    assert deleted.code != 0 and deleted.error_code not in (None, 999), deleted.out
    assert c.addresses("eth0") == [added.out["ips"][0]["address"]]  # still attached
    checked = rt.exec("netd", "CHECK", {**CNI_NET, "prevResult": added.out}, **kw)
    assert checked.code == 0, checked.out

    full_daemon.unfill()
    assert rt.exec("netd", "STATUS", CNI_NET).code == 0
    assert rt.exec("netd", "DEL", CNI_NET, **kw).code == 0
    assert "eth0" not in c.links()
    assert rt.exec("netd", "DEL", CNI_NET, **kw).code == 0  # idempotent


def one_error_line(log: str) -> str:
    """The daemon's log has no traceback and exactly one ERROR line; return it."""
    assert "Traceback" not in log, log
    errors = [line for line in log.splitlines() if "ERROR" in line or "error" in line.lower()]
    assert len(errors) == 1, log
    return errors[0]


def test_start_on_read_only_empty_state_dir(host: Namespace) -> None:
    d = StateFsDaemon(host, setup=READ_ONLY_TMPFS)
    try:
        with pytest.raises(RuntimeError, match="exited 1") as failed:
            d.start(timeout=15)
        line = one_error_line(d.log())
        assert str(d.state_dir) in line and "EROFS" in line, line
        assert "Read-only file system" in line, str(failed.value)
    finally:
        d.close()


def test_start_on_read_only_existing_state(host: Namespace) -> None:
    first = Daemon(host).start()
    try:
        assert first.request("POST", "/v1/networks", NET)[0] == 201
    finally:
        first.stop()
    d = StateFsDaemon(host, setup=READ_ONLY_BIND, state_dir=first.state_dir)
    try:
        with pytest.raises(RuntimeError, match="exited 1"):
            d.start(timeout=15)
        line = one_error_line(d.log())
        assert str(first.state_dir) in line and "EROFS" in line, line
    finally:
        d.close()
        first.close()
