"""What the daemon needs from the host's Python before it may start, and where each comes from.

Two of netd's dependencies are not on PyPI: libnftables' bindings (Debian ``python3-nftables``)
and libseccomp's (Debian ``python3-seccomp``). A virtualenv made without
``--system-site-packages`` cannot see them, and a daemon started there used to die later with a
traceback from its DNS worker. :func:`missing` names what is absent and the package that brings
it, so ``netd daemon`` refuses to start with one line and ``netd doctor`` says the same.

What it does not do: install anything, or check the kernel (``netd.doctor`` does).
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable
from dataclasses import dataclass

from .errors import ConfigError


@dataclass(frozen=True)
class Requirement:
    """A Python module netd imports, why, and the Debian package that provides it."""

    module: str
    package: str
    needed_for: str

    def describe(self) -> str:
        """One line: what is missing, what needs it, what to install."""
        return (
            f"Python module {self.module!r} is not importable by {sys.executable} "
            f"({self.needed_for}): install the Debian package {self.package}; in a virtualenv, "
            "create it with --system-site-packages so it sees that package"
        )


SECCOMP = Requirement("seccomp", "python3-seccomp", "the DNS worker's seccomp filter")
NFTABLES = Requirement("nftables", "python3-nftables", 'firewall_backend "nftables"')


def importable(module: str) -> bool:
    """Whether ``module`` imports (and, for ctypes wrappers, finds its shared library)."""
    try:
        importlib.import_module(module)
    except (ImportError, OSError):
        return False
    return True


def missing(
    firewall_backend: str,
    can_import: Callable[[str], bool] | None = None,
    iptables_available: Callable[[], bool] | None = None,
) -> list[Requirement]:
    """The requirements of a daemon with ``firewall_backend`` that this interpreter lacks.

    The DNS worker always needs seccomp. nftables is needed for ``nftables``, and for ``auto``
    only when there is no iptables to fall back to.
    """
    can_import = can_import or importable
    absent = []
    if not can_import(SECCOMP.module):
        absent.append(SECCOMP)
    needs_nft = firewall_backend == "nftables" or (
        firewall_backend == "auto" and not _iptables(iptables_available)
    )
    if needs_nft and not can_import(NFTABLES.module):
        absent.append(NFTABLES)
    return absent


def _iptables(probe: Callable[[], bool] | None) -> bool:
    if probe is None:
        from .firewall.iptables_tools import iptables_available

        probe = iptables_available
    return probe()


def require(firewall_backend: str) -> None:
    """Raise ConfigError naming the first missing requirement (and how many more)."""
    absent = missing(firewall_backend)
    if absent:
        more = f" (and {len(absent) - 1} more: {', '.join(r.package for r in absent[1:])})"
        raise ConfigError(
            "netd cannot start: " + absent[0].describe() + (more if len(absent) > 1 else "")
        )
