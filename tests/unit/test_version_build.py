"""`netd --version` from built packages: a wheel, and a wheel built from an sdist, know HEAD.

Builds with the checkout's own setuptools and no network (``--no-build-isolation``), the way
setup.py's hooks run for ``pip install .`` and ``python -m build``, then runs ``netd --version``
from the unpacked wheel with the checkout off ``sys.path``. Building must not write
``netd/_build.py`` into the source tree nor leave anything ``git status`` would show.
"""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from netd.cli import version as v

ROOT = Path(__file__).resolve().parents[2]
# Paths a build may write in the checkout: all must stay invisible to git.
BUILD_OUTPUTS = ["build", "dist", "netd.egg-info", "netd/_build.py"]

pytestmark = pytest.mark.skipif(
    not (ROOT / ".git").exists(), reason="needs the git checkout netd is built from"
)


def run(*argv: str, cwd: Path = ROOT, env: dict[str, str] | None = None) -> str:
    proc = subprocess.run(list(argv), cwd=cwd, capture_output=True, text=True, timeout=180, env=env)
    assert proc.returncode == 0, f"{argv} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


def checkout_build() -> str | None:
    return v.git_commit(ROOT)


def build_outputs_status() -> str:
    return run("git", "status", "--porcelain", "--untracked-files=all", "--", *BUILD_OUTPUTS)


def version_from(site: Path, cwd: Path) -> str:
    """`netd --version` with only ``site`` providing netd: the checkout is not importable."""
    code = (
        "import sys, netd; from netd.cli.main import main\n"
        "assert netd.__file__.startswith(sys.argv[1]), netd.__file__\n"
        "sys.argv = ['netd', '--version']; main()\n"
    )
    env = {**os.environ, "PYTHONPATH": str(site)}
    # -P: no script/cwd directory on sys.path; cwd is outside the checkout anyway.
    return run(sys.executable, "-P", "-c", code, str(site), cwd=cwd, env=env).strip()


def wheel(source: Path, out: Path) -> Path:
    run(
        sys.executable,
        "-m",
        "pip",
        "wheel",
        "--no-deps",
        "--no-build-isolation",
        "--no-index",
        "--disable-pip-version-check",
        "-q",
        "-w",
        str(out),
        str(source),
        cwd=out.parent,
    )
    (found,) = out.glob("netd-*.whl")
    return found


def assert_reports(line: str, before: str | None, after: str | None) -> None:
    # Other work may commit (or edit) while the build runs: either side of it is correct.
    assert before and after
    expected = {f"build {b} (build)" for b in (before, after)}
    assert line.startswith(f"netd version {v.package_version()}, "), line
    assert any(line.endswith(e) for e in expected), (line, expected)


def test_wheel_reports_head_commit(tmp_path: Path) -> None:
    assert not (ROOT / "netd" / "_build.py").exists()
    status_before = build_outputs_status()
    before = checkout_build()
    whl = wheel(ROOT, tmp_path / "wheels")
    after = checkout_build()

    with zipfile.ZipFile(whl) as zf:
        stamped = zf.read("netd/_build.py").decode()
        zf.extractall(tmp_path / "site")
    assert any(f'COMMIT = "{c}"' in stamped for c in (before, after)), stamped
    assert_reports(version_from(tmp_path / "site", tmp_path), before, after)

    assert not (ROOT / "netd" / "_build.py").exists(), "the build wrote into the source tree"
    assert build_outputs_status() == status_before == ""


def test_wheel_from_sdist_keeps_the_commit(tmp_path: Path) -> None:
    """The sdist has no .git: the commit travels in it as netd/_build.py."""
    before = checkout_build()
    code = "import sys; from setuptools import build_meta as b; print(b.build_sdist(sys.argv[1]))"
    name = run(sys.executable, "-W", "ignore", "-c", code, str(tmp_path / "sdist")).split()[-1]
    after = checkout_build()
    (tmp_path / "src").mkdir()
    run("tar", "-xzf", str(tmp_path / "sdist" / name), "-C", str(tmp_path / "src"))
    (unpacked,) = (tmp_path / "src").iterdir()
    assert not (unpacked / ".git").exists()
    assert (unpacked / "netd" / "_build.py").exists()

    whl = wheel(unpacked, tmp_path / "wheels")
    with zipfile.ZipFile(whl) as zf:
        zf.extractall(tmp_path / "site")
    assert_reports(version_from(tmp_path / "site", tmp_path), before, after)
    assert not (ROOT / "netd" / "_build.py").exists()
    assert build_outputs_status() == ""


def test_no_checkout_no_stamp(tmp_path: Path) -> None:
    """Outside a git checkout the hook writes nothing, also inside another repository."""
    outer = tmp_path / "outer"
    (outer / "pkg" / "netd").mkdir(parents=True)
    run("git", "init", "-q", str(outer))
    assert v.write_build_module(outer / "pkg" / "netd", outer / "pkg") is None
    assert not (outer / "pkg" / "netd" / "_build.py").exists()
