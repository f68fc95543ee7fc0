"""The plugin installer: an executable launcher and an example conflist."""

from __future__ import annotations

import json
import os
import stat
import subprocess
from pathlib import Path

import pytest

from netd.cni.install import Client, build_client, install_plugin, launcher_text
from netd.errors import InvalidInput, NetdError


@pytest.mark.parametrize("client", ["c", "python"])
def test_install_writes_executable_launcher_and_conflist(tmp_path: Path, client: Client) -> None:
    paths = install_plugin(
        tmp_path / "bin",
        conf_dir=tmp_path / "net.d",
        network="web",
        socket="/run/x.sock",
        client=client,
    )
    launcher, conf = paths
    assert launcher == tmp_path / "bin" / "netd"
    assert stat.S_IMODE(launcher.stat().st_mode) == 0o755
    head = launcher.read_bytes()
    if client == "c":
        assert head.startswith(b"\x7fELF")
    else:
        assert head.startswith(b"#!") and b"-IS\n" in head
    assert conf == tmp_path / "net.d" / "10-netd-web.conflist"
    assert json.loads(conf.read_text()) == {
        "cniVersion": "1.0.0",
        "cniVersions": ["1.0.0", "1.1.0"],
        "name": "web",
        "plugins": [
            {
                "type": "netd",
                "capabilities": {
                    "portMappings": True,
                    "ips": True,
                    "mac": True,
                    "dns": True,
                    "aliases": True,
                },
                "socket": "/run/x.sock",
            }
        ],
    }
    assert not [p for p in tmp_path.rglob(".*")]  # no temporary files left behind
    proc = subprocess.run(
        [str(launcher)],
        input=b'{"cniVersion": "1.0.0"}',
        env={"CNI_COMMAND": "VERSION"},
        capture_output=True,
        check=True,
    )
    assert json.loads(proc.stdout)["cniVersion"] == "1.0.0"


def test_install_replaces_existing_launcher(tmp_path: Path) -> None:
    (tmp_path / "netd").write_text("old")
    assert install_plugin(tmp_path, client="python") == [tmp_path / "netd"]
    assert (tmp_path / "netd").read_text() == launcher_text()
    assert os.access(tmp_path / "netd", os.X_OK)


def test_auto_falls_back_to_the_script_without_a_compiler(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CC", "no-such-compiler-netd")
    launcher = install_plugin(tmp_path)[0]
    assert launcher.read_text() == launcher_text()
    with pytest.raises(NetdError, match="no C compiler"):
        install_plugin(tmp_path, client="c")
    assert launcher.read_text() == launcher_text()  # a failed build leaves the old one
    assert [p.name for p in tmp_path.iterdir()] == ["netd"]


def test_c_client_refuses_paths_it_cannot_embed(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput) as info:
        build_client(tmp_path / "netd", python='/usr/bin/py"thon')
    assert info.value.field == "python"


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"network": "bad name"}, "network"),
        ({"socket": "rel.sock"}, "socket"),
        ({"client": "rust"}, "client"),
    ],
)
def test_install_rejects_bad_input(tmp_path: Path, kwargs: dict[str, str], field: str) -> None:
    with pytest.raises(InvalidInput) as info:
        install_plugin(tmp_path / "bin", conf_dir=tmp_path, **kwargs)
    assert info.value.field == field
    assert not (tmp_path / "bin").exists()
