"""A DEL with no daemon listening is spooled and succeeds; the daemon replays the spool.

The plugin side runs both installed executables (compiled C client and Python launcher) as a
runtime execs them; the replay side runs the real handler and Service (null driver, real
SQLite). Each unusable record, each refusal is checked for what it leaves behind.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import socket
import stat
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from service_kit import make_service

from netd.cni import plugin, spec, spool
from netd.cni.install import install_plugin
from netd.cni.replay import replay
from netd.model import AttachRequest, NetworkSpec, SubnetRequest
from netd.service import Service

CONF = {"cniVersion": "1.0.0", "name": "web", "type": "netd", "ipam": {"subnet": "10.44.0.0/24"}}
ENV = {"CNI_CONTAINERID": "c1", "CNI_NETNS": "/run/netns/c1", "CNI_IFNAME": "eth0"}


@pytest.fixture
def workdir() -> Iterator[Path]:
    # Unix socket paths are limited to 108 bytes; pytest's tmp_path can be longer.
    path = Path(tempfile.mkdtemp(prefix="ndspool"))
    yield path
    shutil.rmtree(path)


@pytest.fixture(params=["c", "python"])
def launcher(workdir: Path, request: pytest.FixtureRequest) -> Path:
    return install_plugin(workdir / "bin", client=request.param)[0]


def execute(
    launcher: Path, command: str, config: Any, sock: str, **env: str
) -> tuple[int, Any, str]:
    import subprocess

    full = {"CNI_COMMAND": command, "CNI_PATH": "/opt/cni/bin", **ENV, "NETD_SOCKET": sock, **env}
    proc = subprocess.run(
        [str(launcher)],
        input=json.dumps(config).encode(),
        env=full,
        capture_output=True,
        timeout=30,
    )
    out = proc.stdout.decode()
    return proc.returncode, (json.loads(out) if out.strip() else None), proc.stderr.decode()


def records(sock: str) -> list[dict[str, Any]]:
    directory = Path(spool.spool_dir(sock))
    return [json.loads(p.read_text()) for p in sorted(directory.iterdir()) if p.is_file()]


@pytest.mark.skipif(os.geteuid() != 0, reason="only root spools")
def test_del_without_daemon_is_spooled_and_succeeds(launcher: Path, workdir: Path) -> None:
    sock = str(workdir / "absent.sock")
    rc, out, err = execute(launcher, "DEL", CONF, sock, CNI_ARGS="IgnoreUnknown=1")
    assert (rc, out) == (0, None), err
    assert "recorded in" in err and spool.spool_dir(sock) in err
    directory = Path(spool.spool_dir(sock))
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    [name] = os.listdir(directory)  # no temporary file left behind
    assert name.endswith(".json") and not name.startswith(".")
    assert stat.S_IMODE((directory / name).stat().st_mode) == 0o600
    [doc] = records(sock)
    assert doc["format"] == 1 and abs(doc["spooled_at"] - time.time()) < 60
    assert doc["call"] == {
        "command": "DEL",
        "containerId": "c1",
        "netns": "/run/netns/c1",
        "ifname": "eth0",
        "args": "IgnoreUnknown=1",
        "path": "/opt/cni/bin",
        "config": CONF,
    }
    assert spool.read(str(directory / name)) == doc


@pytest.mark.skipif(os.geteuid() != 0, reason="only root spools")
def test_refused_connection_is_spooled(launcher: Path, workdir: Path) -> None:
    sock = str(workdir / "dead.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.bind(sock)  # a socket file nobody listens on: ECONNREFUSED (a daemon that died)
    rc, out, _ = execute(launcher, "DEL", CONF, sock)
    assert (rc, out) == (0, None)
    assert [d["call"]["containerId"] for d in records(sock)] == ["c1"]


@pytest.mark.skipif(os.geteuid() != 0, reason="only root spools")
def test_spool_is_made_where_no_daemon_ever_ran(launcher: Path, workdir: Path) -> None:
    # After a reboot /run/netd does not exist until the daemon first starts.
    sock = str(workdir / "run" / "netd" / "netd.sock")
    rc, out, _ = execute(launcher, "DEL", CONF, sock)
    assert (rc, out) == (0, None)
    assert [d["call"]["containerId"] for d in records(sock)] == ["c1"]
    assert stat.S_IMODE(os.stat(workdir / "run" / "netd").st_mode) == 0o755


def test_other_verbs_are_not_spooled(launcher: Path, workdir: Path) -> None:
    sock = str(workdir / "absent.sock")
    rc, out, _ = execute(launcher, "ADD", CONF, sock)
    assert rc == 1 and out["code"] == spec.TRY_AGAIN_LATER
    assert not os.path.exists(spool.spool_dir(sock))


@pytest.mark.skipif(os.geteuid() != 0, reason="only root spools")
def test_spool_open_to_others_is_refused(launcher: Path, workdir: Path) -> None:
    sock = str(workdir / "absent.sock")
    os.mkdir(spool.spool_dir(sock), 0o755)
    os.chmod(spool.spool_dir(sock), 0o755)
    rc, out, _ = execute(launcher, "DEL", CONF, sock)
    assert rc == 1 and out["code"] == spec.TRY_AGAIN_LATER
    assert "recording the DEL in" in out["msg"] and "mode 0700" in out["msg"], out
    assert os.listdir(spool.spool_dir(sock)) == []


@pytest.mark.skipif(os.geteuid() != 0, reason="only root spools")
def test_socket_from_the_config_decides_the_spool(workdir: Path) -> None:
    sock = str(workdir / "conf.sock")
    code = plugin.run(
        {"CNI_COMMAND": "DEL", **ENV}, json.dumps({**CONF, "socket": sock}).encode(), _Out()
    )
    assert code == 0
    assert [d["call"]["config"]["socket"] for d in records(sock)] == [sock]


def test_non_root_cannot_spool(workdir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    out = _Out()
    sock = str(workdir / "absent.sock")
    code = plugin.run(
        {"CNI_COMMAND": "DEL", "NETD_SOCKET": sock, **ENV}, json.dumps(CONF).encode(), out
    )
    err = json.loads(out.text)
    assert code == 1 and err["code"] == spec.TRY_AGAIN_LATER and "only root" in err["msg"]
    assert not os.path.exists(spool.spool_dir(sock))


def test_daemon_that_does_not_answer_is_not_spooled(workdir: Path) -> None:
    # After a timeout the daemon may hold the request: a spooled copy could undo a later ADD.
    sock = str(workdir / "silent.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as listener:
        listener.bind(sock)
        listener.listen(1)
        out = _Out()
        env = {"CNI_COMMAND": "DEL", "NETD_SOCKET": sock, **ENV}
        code = plugin.run(env, json.dumps(CONF).encode(), out, timeout=0.2)
    err = json.loads(out.text)
    assert code == 1 and err["code"] == spec.TRY_AGAIN_LATER and "did not answer" in err["msg"]
    assert not os.path.exists(spool.spool_dir(sock))


class _Out:
    def __init__(self) -> None:
        self.text = ""

    def write(self, s: str) -> int:
        self.text += s
        return len(s)


# --- reading records -------------------------------------------------------------------------


def _write_raw(directory: Path, name: str, data: bytes) -> Path:
    directory.mkdir(mode=0o700, exist_ok=True)
    path = directory / name
    path.write_bytes(data)
    return path


@pytest.mark.parametrize(
    ("data", "why"),
    [
        (b"{not json", "not JSON"),
        (b"[]", "not a spool record"),
        (
            json.dumps({"format": 1, "spooled_at": 1.0, "call": {"command": "ADD"}}).encode(),
            "not a CNI DEL",
        ),
        (
            json.dumps({"format": 1, "spooled_at": "x", "call": {"command": "DEL"}}).encode(),
            "not a time",
        ),
        (
            json.dumps(
                {"format": 1, "spooled_at": 1.0, "netns_inode": -1, "call": {"command": "DEL"}}
            ).encode(),
            "not an inode",
        ),
    ],
)
def test_malformed_records_are_refused(tmp_path: Path, data: bytes, why: str) -> None:
    path = _write_raw(tmp_path / "s", "1.json", data)
    with pytest.raises(ValueError, match=why):
        spool.read(str(path))


@pytest.mark.skipif(os.geteuid() != 0, reason="needs chown")
def test_record_not_owned_by_root_is_refused(tmp_path: Path) -> None:
    doc = spool.record({"command": "DEL"})
    path = _write_raw(tmp_path / "s", "1.json", json.dumps(doc).encode())
    assert spool.read(str(path))["call"] == {"command": "DEL"}
    os.chown(path, 65534, 65534)
    with pytest.raises(ValueError, match="owned by uid 65534"):
        spool.read(str(path))


def test_symlinked_record_is_refused(tmp_path: Path) -> None:
    target = _write_raw(
        tmp_path / "s", "real", json.dumps(spool.record({"command": "DEL"})).encode()
    )
    (tmp_path / "s" / "2.json").symlink_to(target)
    with pytest.raises(OSError):
        spool.read(str(tmp_path / "s" / "2.json"))


# --- replay in the daemon --------------------------------------------------------------------


def _call(cid: str, config: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "command": "DEL",
        "containerId": cid,
        "netns": f"/run/netns/{cid}",
        "ifname": "eth0",
        "args": "",
        "path": "",
        "config": config or {**CONF, "name": "net1"},
    }


async def _service_with(tmp_path: Path, *cids: str) -> Service:
    svc = make_service(tmp_path)
    await svc.start()
    await svc.create_network(
        NetworkSpec(name="net1", subnets=(SubnetRequest(subnet="10.61.0.0/24"),))
    )
    for cid in cids:
        await svc.attach(AttachRequest("net1", cid, "eth0", f"/run/netns/{cid}", netns_inode=77))
    return svc


def _keys(svc: Service) -> set[str]:
    return {e.container_id for e in svc.endpoints(svc.find_network("net1"))}


@pytest.mark.skipif(os.geteuid() != 0, reason="the spool is root's")
def test_replay_detaches_and_empties_the_spool(tmp_path: Path) -> None:
    directory = tmp_path / "netd.sock.del-spool"

    async def scenario() -> None:
        svc = await _service_with(tmp_path, "c1", "c2", "c3")
        written = time.time()
        spool.write(str(directory), spool.record(_call("c1"), 77, now=written))
        spool.write(str(directory), spool.record(_call("nosuch"), now=written))  # idempotent
        spool.write(str(directory), spool.record(_call("c2", {**CONF, "name": "gone"})))
        # Written before c3 was attached (again): stale, dropped without touching c3.
        spool.write(str(directory), spool.record(_call("c3"), now=written - 3600))
        _write_raw(directory, "zz-broken.json", b"{oops")
        # c1; an unknown container and an unknown network are success (c2 is on net1).
        assert await replay(svc, directory) == 3
        assert _keys(svc) == {"c2", "c3"}
        assert os.listdir(directory) == [spool.REJECTED]
        assert os.listdir(directory / spool.REJECTED) == ["zz-broken.json"]
        assert await replay(svc, directory) == 0  # a second pass finds nothing

    asyncio.run(scenario())


@pytest.mark.skipif(os.geteuid() != 0, reason="the spool is root's")
def test_replay_skips_a_record_for_another_namespace(tmp_path: Path) -> None:
    directory = tmp_path / "sp"

    async def scenario() -> None:
        svc = await _service_with(tmp_path, "c1")
        spool.write(str(directory), spool.record(_call("c1"), netns_inode=78, now=0.0))
        assert await replay(svc, directory) == 0
        assert _keys(svc) == {"c1"} and os.listdir(directory) == []

    asyncio.run(scenario())


def test_spool_open_to_others_is_not_replayed(tmp_path: Path) -> None:
    directory = tmp_path / "sp"
    directory.mkdir(mode=0o755)
    os.chmod(directory, 0o755)
    (directory / "1.json").write_text(json.dumps(spool.record(_call("c1"), now=0.0)))

    async def scenario() -> None:
        svc = await _service_with(tmp_path, "c1")
        assert await replay(svc, directory) == 0
        assert _keys(svc) == {"c1"}
        assert os.listdir(directory) == ["1.json"]  # left for a human, never trusted

    asyncio.run(scenario())


def test_no_spool_is_nothing_to_replay(tmp_path: Path) -> None:
    async def scenario() -> None:
        svc = await _service_with(tmp_path, "c1")
        assert await replay(svc, tmp_path / "absent") == 0

    asyncio.run(scenario())
