"""An endpoint whose namespace is gone for good is reaped; a live namespace never is.

No DEL at all here (a runtime that crashed or ignored the failure): the container's namespace is
deleted under a running daemon (``reconcile_interval = 0.5``). Its DNS name and published port
must go at once (read with ``dig`` and ``nft -j``), its address only after ``reap_grace``; `netd
status` and `netd doctor` name it meanwhile. A namespace whose path was unmounted but that a
process or another bind mount keeps alive still carries traffic and is left alone, until the
holder lets go.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cni_runtime import Runtime
from netns_fixtures import Namespace, Sandbox, delete_namespace, run, wait_for
from netns_fixtures.daemon import Daemon
from reap_kit import CONF, add_pod, dig, port_conf, publishes

from netd.cni.install import install_plugin

SOON = 15.0  # seconds: a few reconcile passes of 0.5 s, with room for a loaded machine


class World:
    def __init__(
        self,
        host: Namespace,
        sandbox: Sandbox,
        tmp_path: Path,
        grace: float,
        interval: float = 0.5,
    ) -> None:
        bin_dir = tmp_path / "bin"
        install_plugin(bin_dir)
        self.host, self.sandbox = host, sandbox
        self.daemon = Daemon(host, firewall="nftables")
        self.interval = interval
        self.configure(grace)
        self.daemon.start()
        self.rt = Runtime(host, [bin_dir], self.daemon.socket)
        self.probe = sandbox.add_ns("probe")
        assert self.add(self.probe, CONF, "probe").code == 0

    def configure(self, grace: float) -> None:
        self.daemon.config_path().write_text(
            f"reconcile_interval = {self.interval}\nreap_grace = {grace}\n"
        )

    def add(self, ns: Namespace, conf: dict[str, Any], name: str, args: str = "") -> Any:
        return add_pod(self.rt, ns, conf, name, args)

    def status(self) -> dict[str, Any]:
        code, body = self.daemon.request("GET", "/v1/status")
        assert code == 200
        return dict(body)

    def containers(self) -> dict[str, str]:
        _, net = self.daemon.request("GET", "/v1/networks/spool")
        return {e["container_id"]: e["state"] for e in net["endpoints"]}


@pytest.fixture
def world(host: Namespace, sandbox: Sandbox, tmp_path: Path) -> Iterator[World]:
    w = World(host, sandbox, tmp_path, grace=3600)
    try:
        yield w
    finally:
        w.daemon.close_checked()


def test_gone_namespace_withdraws_name_and_port_then_releases_address(world: World) -> None:
    w, host = world, world.host
    c1 = w.sandbox.add_ns("c1")
    res = w.add(c1, port_conf(8091), "web1")
    assert res.code == 0, res.out
    address = res.out["ips"][0]["address"]
    ip = address.split("/")[0]
    assert publishes(host, 8091) and dig(w.probe, "web1") == [ip]

    w.sandbox.namespaces.remove(c1)
    delete_namespace(c1.name)  # the container died; no DEL will ever come
    wait_for(
        "port and name withdrawn",
        lambda: not publishes(host, 8091) and dig(w.probe, "web1") == [],
        SOON,
    )
    assert w.containers() == {w.probe.name: "ready", c1.name: "gone"}
    [gone] = w.status()["netns_gone"]
    assert (gone["container_id"], gone["addresses"], gone["netns"]) == (c1.name, [address], c1.path)
    shown = w.daemon.cli("status").stdout
    assert "gone:      1 endpoint(s) whose namespace is gone (reap_grace 3600.0 s)" in shown
    assert f"{c1.name[:12]}/eth0 {address}" in shown
    doctor = w.daemon.cli(
        "doctor", "--config", str(w.daemon.config_path()), "--format", "json", check=False
    )
    [finding] = [f for f in json.loads(doctor.stdout) if f["check"] == "namespaces"]
    assert finding["status"] == "warn" and c1.name[:12] in finding["detail"]

    # During the grace the address stays taken; the port and the name are free at once.
    c2 = w.sandbox.add_ns("c2")
    taken = w.add(c2, CONF, "web2", f";IP={ip}")
    assert taken.code == 1 and taken.error_code == 102, taken.out
    res2 = w.add(c2, port_conf(8091), "web1")
    assert res2.code == 0, res2.out
    assert publishes(host, 8091) and dig(w.probe, "web1") == [res2.out["ips"][0]["address"][:-3]]

    # A shorter grace (the daemon restarted with it): the address is released and reusable.
    w.daemon.stop()
    w.configure(1)
    w.daemon.start()
    wait_for("address released", lambda: c1.name not in w.containers(), SOON)
    assert w.status()["netns_gone"] == []
    c3 = w.sandbox.add_ns("c3")
    res3 = w.add(c3, CONF, "web3", f";IP={ip}")
    assert res3.code == 0 and res3.out["ips"][0]["address"] == address, res3.out
    log = w.daemon.log()
    assert "reap: namespace " + c1.path in log and "reap: released " + address in log


def test_the_link_event_reaps_without_waiting_for_a_pass(
    host: Namespace, sandbox: Sandbox, tmp_path: Path
) -> None:
    # The periodic pass is an hour away: the host veth's deletion (the kernel removes a veth
    # pair with its namespace) is what starts the reaping (netd.link_watch).
    w = World(host, sandbox, tmp_path, grace=3600, interval=3600)
    try:
        c1 = w.sandbox.add_ns("c1")
        res = w.add(c1, port_conf(8093), "web4")
        assert res.code == 0, res.out
        ip = res.out["ips"][0]["address"].split("/")[0]
        assert publishes(host, 8093) and dig(w.probe, "web4") == [ip]
        w.sandbox.namespaces.remove(c1)
        delete_namespace(c1.name)
        wait_for(
            "port and name withdrawn from the link event",
            lambda: not publishes(host, 8093) and dig(w.probe, "web4") == [],
            SOON,
        )
        assert w.containers()[c1.name] == "gone"
    finally:
        w.daemon.close_checked()


@pytest.mark.parametrize("holder", ["process", "bind-mount"])
def test_live_namespace_without_its_path_is_never_reaped(
    world: World, holder: str, tmp_path: Path
) -> None:
    w, host = world, world.host
    c1 = w.sandbox.add_ns("c1")
    res = w.add(c1, port_conf(8092), "web4")
    assert res.code == 0, res.out
    ip = res.out["ips"][0]["address"].split("/")[0]
    host_if = next(i["name"] for i in res.out["interfaces"] if not i.get("sandbox"))
    keep = tmp_path / "keep"
    sleeper: subprocess.Popen[Any] | None = None
    if holder == "process":
        sleeper = c1.spawn("sleep", "600")
        pids = ["ip", "netns", "pids", c1.name]
        wait_for("sleeper in the namespace", lambda: run(pids).strip() != "", 5)
    else:
        keep.touch()
        subprocess.run(["mount", "--bind", c1.path, str(keep)], check=True)
    try:
        w.sandbox.namespaces.remove(c1)
        subprocess.run(["ip", "netns", "del", c1.name], check=True)  # the path only
        wait_for("held namespace noticed", lambda: w.status()["netns_held"] != [], SOON)
        [held] = w.status()["netns_held"]
        expected = "runs in it" if holder == "process" else f"bind-mounted at {keep}"
        assert held["container_id"] == c1.name and expected in " ".join(held["evidence"])
        assert w.containers()[c1.name] == "ready" and w.status()["netns_gone"] == []
        assert publishes(host, 8092) and dig(w.probe, "web4") == [ip]
        assert host_if in host.links() and w.probe.ping(ip)  # real packets still flow
        doctor = w.daemon.cli(
            "doctor", "--config", str(w.daemon.config_path()), "--format", "json", check=False
        )
        [finding] = [f for f in json.loads(doctor.stdout) if f["check"] == "namespaces"]
        assert "which is alive" in finding["detail"]
    finally:
        if sleeper is not None:
            sleeper.kill()
            sleeper.wait()
            w.sandbox.processes.remove(sleeper)
        else:
            subprocess.run(["umount", str(keep)], check=True)
    # The holder let go: now the namespace is gone for good.
    wait_for(
        "reaped once the namespace died",
        lambda: not publishes(host, 8092) and dig(w.probe, "web4") == [],
        SOON,
    )
    assert host_if not in host.links()
    assert w.containers()[c1.name] == "gone" and w.status()["netns_held"] == []
