"""netns_fixtures.vm's kernel cache: one kernel per meta-package, the others' kept.

The ESP test boots Debian 12's 6.12 kernel, the firewall's kernel test its default 6.1: fetching
one must not delete the other (each is fetched again otherwise, and a test already booting it
loses its files). apt is replaced by a stand-in that writes what ``apt-get download``,
``dpkg -x`` and ``depmod`` would leave; the cache logic is the real one.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pytest
from netns_fixtures import vm


def fake_apt(monkeypatch: pytest.MonkeyPatch, packages: dict[str, str]) -> list[str]:
    fetched: list[str] = []

    def run(cmd: Sequence[str], doing: str, *, cwd: Path | None = None, timeout: float = 0) -> str:
        if cmd[:2] == ["apt-cache", "depends"]:
            return f"{cmd[2]}\n  Depends: {packages[cmd[2]]}\n"
        if cmd[:2] == ["apt-get", "download"]:
            assert cwd is not None
            fetched.append(cmd[-1])
            (cwd / f"{cmd[-1]}_1_amd64.deb").write_text("deb")
        elif cmd[0] == "dpkg":
            version = Path(cmd[2]).name.split("_")[0].removeprefix("linux-image-")
            boot = Path(cmd[3]) / "boot"
            boot.mkdir(parents=True)
            (boot / f"vmlinuz-{version}").write_text("kernel")
        return ""

    monkeypatch.setattr(vm, "_run", run)
    return fetched


def test_a_kernel_of_another_meta_package_stays_an_older_one_of_the_same_goes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    packages = {
        "linux-image-6.12-amd64": "linux-image-6.12.118+deb12-amd64",
        "linux-image-amd64": "linux-image-6.1.0-57-amd64",
    }
    fetched = fake_apt(monkeypatch, packages)
    k612 = vm.prepare_kernel(tmp_path, meta="linux-image-6.12-amd64")
    k61 = vm.prepare_kernel(tmp_path, meta="linux-image-amd64")
    assert (k612.version, k61.version) == ("6.12.118+deb12-amd64", "6.1.0-57-amd64")
    assert k612.vmlinuz.exists() and k61.vmlinuz.exists()
    # Both cached: asking again fetches nothing.
    assert vm.prepare_kernel(tmp_path, meta="linux-image-6.12-amd64") == k612
    assert fetched == ["linux-image-6.12.118+deb12-amd64", "linux-image-6.1.0-57-amd64"]
    # A newer 6.1 replaces the older 6.1 only.
    packages["linux-image-amd64"] = "linux-image-6.1.0-58-amd64"
    k61b = vm.prepare_kernel(tmp_path, meta="linux-image-amd64")
    assert sorted(p.name for p in tmp_path.glob("linux-image-*")) == [
        "linux-image-6.1.0-58-amd64",
        "linux-image-6.12.118+deb12-amd64",
    ]
    assert k61b.vmlinuz.exists() and k612.vmlinuz.exists()
    assert (k61b.root / ".ready").read_text().split()[0] == "linux-image-amd64"
