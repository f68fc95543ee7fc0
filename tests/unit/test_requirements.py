"""Which Python bindings the daemon needs, by firewall backend (netd.requirements)."""

from __future__ import annotations

import pytest

from netd.errors import ConfigError
from netd.requirements import NFTABLES, SECCOMP, missing, require


def _only(*present: str):  # type: ignore[no-untyped-def]
    return lambda module: module in present


def test_everything_present() -> None:
    assert missing("nftables", _only("seccomp", "nftables")) == []


def test_seccomp_is_always_needed() -> None:
    for backend in ("nftables", "iptables", "none", "auto"):
        assert SECCOMP in missing(backend, _only("nftables"), lambda: True)


def test_nftables_needed_only_where_it_is_used() -> None:
    assert missing("nftables", _only("seccomp")) == [NFTABLES]
    assert missing("iptables", _only("seccomp")) == []
    assert missing("none", _only("seccomp")) == []
    # auto falls back to iptables when its tools exist, and needs nftables when they do not.
    assert missing("auto", _only("seccomp"), lambda: True) == []
    assert missing("auto", _only("seccomp"), lambda: False) == [NFTABLES]


def test_the_message_names_module_package_and_fix() -> None:
    line = SECCOMP.describe()
    assert "'seccomp'" in line and "python3-seccomp" in line
    assert "--system-site-packages" in line
    assert "\n" not in line


def test_require_passes_here_or_names_the_package(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("netd.requirements.importable", lambda module: module != "seccomp")
    with pytest.raises(ConfigError, match="python3-seccomp"):
        require("none")
