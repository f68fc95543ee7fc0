"""Contract suites: one set of checks per seam, run against every implementation of it.

A seam's suite (``kit.contract_firewall``, ``kit.contract_driver``) declares its
implementations in a list of :class:`Impl` (adding one is one line) and its checks as plain
functions of a *subject* (the implementation under test with what the checks need around it).
Implementations that need no kernel run in the pytest process (tests/unit/test_contract_*.py);
those that configure the kernel run, one check per process, inside a sandbox host namespace
(tests/ns/test_contract_*_ns.py) through this module's command line::

    ip netns exec <host> python tests/kit/contract.py <seam> <impl> <check> '<json args>'

which prints ``PASS``, ``SKIP <reason>`` (exit 3) or the failure's traceback (exit 1). A check
that does not apply to an implementation raises :class:`Skip` with the reason, so the report
says so: nothing is silently passed. ``make`` may raise it too, for an implementation this
machine cannot run at all (a driver whose kernel feature is missing).
"""

from __future__ import annotations

import importlib
import json
import subprocess
import sys
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

TESTS = Path(__file__).resolve().parent.parent
SKIP_EXIT = 3


class Skip(Exception):
    """The check does not apply to this implementation; the message says why."""


@dataclass(frozen=True)
class Impl:
    """One implementation of a seam: ``make(args)`` builds its subject (which has ``close()``);
    ``kernel``: it configures the kernel, so its checks run inside a sandbox namespace."""

    name: str
    make: Callable[[dict[str, Any]], Any]
    kernel: bool = False
    # check -> why it fails today: run as a strict xfail, so the day it passes the mark must go
    known_failures: dict[str, str] = field(default_factory=dict)


Check = Callable[[Any], None]


@dataclass(frozen=True)
class Suite:
    """A seam's implementations and checks."""

    seam: str
    impls: list[Impl]
    checks: dict[str, Check]

    def impl(self, name: str) -> Impl:
        """The implementation called ``name``."""
        return next(i for i in self.impls if i.name == name)

    def cases(self, *, kernel: bool) -> list[Any]:
        """pytest params (implementation, check) of the implementations that do (not) need a
        kernel; a known failure is a strict xfail naming its reason."""
        import pytest

        return [
            pytest.param(
                i.name,
                c,
                id=f"{i.name}-{c}",
                marks=[pytest.mark.xfail(reason=i.known_failures[c], strict=True)]
                if c in i.known_failures
                else [],
            )
            for i in self.impls
            if i.kernel == kernel
            for c in self.checks
        ]


def load(seam: str) -> Suite:
    """The suite of ``seam`` (module ``kit.contract_<seam>``, attribute ``SUITE``)."""
    suite: Suite = importlib.import_module(f"kit.contract_{seam}").SUITE
    return suite


def run_here(suite: Suite, impl: str, check: str, args: dict[str, Any] | None = None) -> None:
    """Run one check in this process; pytest.skip on :class:`Skip`."""
    import pytest

    try:
        subject = suite.impl(impl).make(args or {})
    except Skip as why:  # the implementation cannot run here at all (a kernel feature)
        pytest.skip(f"{impl}: {why}")
    try:
        suite.checks[check](subject)
    except Skip as why:
        pytest.skip(f"{impl}: {why}")
    finally:
        subject.close()


def run_in(argv: list[str], suite: Suite, impl: str, check: str, args: dict[str, Any]) -> None:
    """Run one check in a fresh process started by ``argv`` (``ip netns exec <ns>``)."""
    import pytest

    cmd = [*argv, sys.executable, str(Path(__file__)), suite.seam, impl, check, json.dumps(args)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    if proc.returncode == SKIP_EXIT:
        pytest.skip(f"{impl}: {proc.stdout.strip().removeprefix('SKIP ')}")
    assert proc.returncode == 0 and proc.stdout.strip().endswith("PASS"), (
        f"{suite.seam} contract check {check} failed on {impl}:\n{proc.stdout}\n{proc.stderr}"
    )


def main(argv: list[str]) -> int:
    """Command line: run one check of one implementation here, print the outcome."""
    seam, impl, check, args = argv[0], argv[1], argv[2], json.loads(argv[3])
    suite = load(seam)
    try:
        subject = suite.impl(impl).make(args)
    except Skip as why:  # the implementation cannot run here at all (a kernel feature)
        print(f"SKIP {why}")
        return SKIP_EXIT
    try:
        suite.checks[check](subject)
    except Skip as why:
        print(f"SKIP {why}")
        return SKIP_EXIT
    except BaseException:
        traceback.print_exc(file=sys.stdout)
        return 1
    finally:
        subject.close()
    print("PASS")
    return 0


if __name__ == "__main__":
    # Run as a script: import the package's copy of this module, so that the checks' Skip is
    # the one caught here.
    sys.path.insert(0, str(TESTS))
    from kit.contract import main as _main

    sys.exit(_main(sys.argv[1:]))
