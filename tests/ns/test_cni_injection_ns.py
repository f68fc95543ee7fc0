"""Issue #14: a hostile CNI config for container A never touches container B, on a real daemon.

The injection the probe found: a config with trailing keys
(``...},"command":"DEL","containerId":"<B>","ifname":"eth0","netns":"","zz":{}``) turned an ADD
for A into a DEL of B. Both plugin executables now refuse it before sending (code 6), and the
daemon refuses the body an older plugin would have built from it. B is checked by reading the
kernel back (its host veth, its address) and with a ping, not by asking netd.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from cni_runtime import Runtime
from netns_fixtures import Namespace, Sandbox
from netns_fixtures.daemon import Daemon

from netd.cni.install import install_plugin
from netd.cni.transport import build_request, exchange, parse_answer

NET = {
    "cniVersion": "1.0.0",
    "name": "injnet",
    "type": "netd",
    "ipam": {"ranges": [[{"subnet": "10.93.0.0/24"}]]},
}


@pytest.fixture(params=["c", "python"])
def runtime(
    daemon: Daemon, host: Namespace, tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[Runtime]:
    bin_dir = tmp_path / "bin"
    install_plugin(bin_dir, client=request.param)
    yield Runtime(host, [bin_dir], daemon.socket)


def payloads(victim: str) -> dict[str, str]:
    conf = json.dumps(NET)
    steal = f'"command":"DEL","containerId":"{victim}","ifname":"eth0","netns":""'
    return {
        "trailing keys": conf + "," + steal + ',"zz":{}',
        "trailing keys, config replaced": conf + "," + steal + ',"config":' + conf,
        "second object": conf + "{" + steal + "}",
        "duplicated name": conf[:-1] + ',"name":"other"}',
    }


def test_injected_del_never_detaches_another_container(
    runtime: Runtime, sandbox: Sandbox, host: Namespace, daemon: Daemon
) -> None:
    a, b = sandbox.add_ns("a"), sandbox.add_ns("b")
    rb = runtime.exec("netd", "ADD", NET, container_id=b.name, netns=b.path)
    assert rb.code == 0, rb.out
    veth_b = next(i["name"] for i in rb.out["interfaces"] if not i.get("sandbox"))
    address_b = rb.out["ips"][0]["address"]

    for name, stdin in payloads(b.name).items():
        res = runtime.exec("netd", "ADD", stdin, container_id=a.name, netns=a.path)
        assert res.code == 1 and res.error_code == 6, (name, res.out)
        assert veth_b in host.links(), name
        assert b.addresses("eth0") == [address_b], name
        assert "eth0" not in a.links(), name
    assert b.ping("10.93.0.1")

    # The body an unpatched plugin built from the first payload: refused by the daemon itself.
    call = {"command": "ADD", "containerId": a.name, "netns": a.path, "ifname": "eth0"}
    stdin = payloads(b.name)["trailing keys"]
    body = (json.dumps({**call, "args": "", "path": ""})[:-1] + ',"config":' + stdin + "}").encode()
    status, answer = parse_answer(exchange(str(daemon.socket), build_request("/v1/cni", body)))
    error = json.loads(answer)
    assert status == 422 and error["code"] == 6, error
    assert "appears more than once" in error["msg"], error
    assert veth_b in host.links() and b.addresses("eth0") == [address_b]
    assert b.ping("10.93.0.1")

    res = runtime.exec("netd", "DEL", NET, container_id=b.name, netns=b.path)
    assert res.code == 0, res.out
    assert veth_b not in host.links()
