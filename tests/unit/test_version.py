"""`netd --version`: package version plus the build, from each source in order."""

from __future__ import annotations

import subprocess
import sys
import types
from pathlib import Path

import pytest
from click.testing import CliRunner

from netd.cli import version as v
from netd.cli.main import cli

ROOT = Path(__file__).resolve().parents[2]


def git(cwd: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-C", str(cwd), *args], check=True, capture_output=True, text=True
    ).stdout.strip()


def test_cli_reports_version_and_checkout_commit() -> None:
    head = git(ROOT, "rev-parse", "--short=12", "HEAD")
    for flag in ("--version", "-v"):
        result = CliRunner().invoke(cli, [flag])
        assert result.exit_code == 0, result.output
        line = result.output.strip()
        assert line.startswith(f"netd version {v.package_version()}, build {head}"), line
        assert line.endswith("(git checkout)")


def test_build_module_wins(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = types.ModuleType("netd._build")
    fake.COMMIT = "0123456789ab"  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "netd._build", fake)
    assert v.build() == ("0123456789ab", "build")
    assert v.version_text().endswith("build 0123456789ab (build)")


def test_pip_direct_url_commit(monkeypatch: pytest.MonkeyPatch) -> None:
    class Dist:
        def read_text(self, name: str) -> str | None:
            assert name == "direct_url.json"
            return (
                '{"url": "git+https://x/netd", "vcs_info": {"vcs": "git", "commit_id": "%s"}}'
                % ("f" * 40)
            )

    monkeypatch.setattr(v.metadata, "distribution", lambda name: Dist())
    assert v.build() == ("f" * 12, "pip direct_url")


def test_unknown_outside_a_checkout(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(v, "_from_direct_url", lambda: None)
    monkeypatch.setattr(v, "PACKAGE_DIR", tmp_path / "site-packages" / "netd")
    assert v.build() == ("unknown", "")
    assert v.version_text() == f"netd version {v.package_version()}, build unknown"


def test_write_build_module_at_build_time(tmp_path: Path) -> None:
    src, pkg = tmp_path / "src", tmp_path / "build" / "netd"
    src.mkdir()
    pkg.mkdir(parents=True)
    assert v.write_build_module(pkg, src) is None  # not a checkout: nothing written
    git(src, "init", "-q")
    (src / "f").write_text("x")
    git(src, "add", "f")
    git(src, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "c")
    path = v.write_build_module(pkg, src)
    assert path == pkg / "_build.py"
    namespace: dict[str, object] = {}
    exec(path.read_text(), namespace)
    assert namespace["COMMIT"] == git(src, "rev-parse", "--short=12", "HEAD")
    (src / "f").write_text("changed")
    v.write_build_module(pkg, src)
    assert path.read_text().rstrip().endswith('-dirty"')
