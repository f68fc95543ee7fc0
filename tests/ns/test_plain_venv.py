"""netd installed into a plain virtualenv (no --system-site-packages) refuses to start cleanly.

Debian's python3-seccomp and python3-nftables are not on PyPI, so a plain venv cannot see them
(issue #13, item 1). The venv here is real: a fresh ``python -m venv`` whose only extra paths are
the test venv's own site-packages (aiohttp, pydantic, pyroute2, ...), this source tree,
and a copy of the system's dist-packages (symlinks) without Debian's seccomp and nftables
bindings: what ``pip install`` into a plain venv gives, without going to PyPI again.
"""

from __future__ import annotations

import json
import site
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest
from netns_fixtures import Namespace

ROOT = Path(__file__).resolve().parents[2]
MAIN = "from netd.cli.main import main; main()"


@pytest.fixture
def plain_python(tmp_path: Path) -> str:
    """The interpreter of a new venv that sees PyPI packages and netd, not Debian's."""
    venv = tmp_path / "plain"
    base = getattr(sys, "_base_executable", sys.executable)
    subprocess.run([base, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=60)
    python = venv / "bin" / "python"
    purelib = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    ).stdout.strip()
    ours = sysconfig.get_paths()["purelib"]
    # Our venv sees the system's dist-packages; the plain one must see the same packages less
    # the two that only Debian ships.
    shadow = tmp_path / "dist-packages"
    shadow.mkdir()
    for site_dir in site.getsitepackages():
        if site_dir == ours or not Path(site_dir).is_dir():
            continue
        for entry in Path(site_dir).iterdir():
            if entry.name.startswith(("seccomp", "nftables")) or (shadow / entry.name).exists():
                continue
            (shadow / entry.name).symlink_to(entry)
    (Path(purelib) / "netd-test.pth").write_text(f"{ours}\n{ROOT}\n{shadow}\n")
    probe = subprocess.run(
        [str(python), "-c", "import aiohttp, netd, seccomp"], capture_output=True, timeout=30
    )
    assert b"No module named 'seccomp'" in probe.stderr, probe.stderr
    return str(python)


def test_daemon_refuses_to_start_with_one_line(
    plain_python: str, host: Namespace, tmp_path: Path
) -> None:
    config = tmp_path / "netd.toml"
    config.write_text("# defaults\n")
    argv = host.argv(
        plain_python,
        "-c",
        MAIN,
        "--socket",
        str(tmp_path / "netd.sock"),
        "daemon",
        "--state-dir",
        str(tmp_path / "state"),
        "--managed-netns",
        host.path,
        "--config",
        str(config),
        "--firewall-backend",
        "nftables",
    )
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    assert "'seccomp'" in lines[0] and "python3-seccomp" in lines[0], lines[0]
    assert "python3-nftables" in lines[0], lines[0]
    assert not (tmp_path / "netd.sock").exists()
    assert "netd" not in host.run("ip", "-o", "link", "show")


def test_doctor_names_the_missing_packages(plain_python: str, host: Namespace) -> None:
    argv = host.argv(
        plain_python, "-c", MAIN, "doctor", "--format", "json", "--config", "/dev/null"
    )
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1, proc.stderr
    found = {f["check"]: f for f in json.loads(proc.stdout)}
    check = found["python modules"]
    assert check["status"] == "fail"
    assert "python3-seccomp" in check["detail"] and "seccomp" in check["fix"]
