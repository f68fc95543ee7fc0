"""netd's nftables ruleset on Debian 12's default kernel (6.1), in a VM: it loads and works.

Kernels differ in what nf_tables accepts: Linux 6.1 refused a rule that looked up a map as a
set (``ip daddr @snat4``, the direct-routing drop: EINVAL, "Could not process rule: Invalid
argument"), which 6.12 and later accept, so on a stock Debian 12 machine netd's whole ruleset
failed to load and ``netd network create`` failed with it. The machine netd is developed on
runs a newer kernel, so this file boots Debian 12's ``linux-image-amd64`` (6.1) in QEMU over
this machine's files (:mod:`netns_fixtures.vm`: same checkout, .venv, nft) and runs there:

- tests/ns/test_firewall_golden.py: the full golden ruleset (every set, map, chain and rule,
  elements of every kind) loads as one batch, reloads, and a bad batch changes nothing;
- tests/ns/test_firewall_direct_routing.py (nftables): the direct-routing drops, with real
  traffic from an outside namespace, on masqueraded and SNAT networks;
- test_dns_and_firewall_through_the_daemon: ``netd network create`` and ``connect`` through
  the daemon with the nftables backend.

It requires, from the JUnit report, that every one of them passed there (none skipped) and
that the guest ran a 6.1 kernel. It skips, with the reason, never passes, when this machine's
kernel is 6.1 itself (those files then cover it directly), QEMU or busybox-static is missing,
or apt cannot fetch the kernel package (``scripts/bootstrap test`` fetches it beforehand).
Under QEMU's TCG (no usable /dev/kvm) the run takes about 2.5 minutes here.
"""

from __future__ import annotations

import platform
import shlex
from pathlib import Path

import pytest
from netns_fixtures import vm

ROOT = Path(__file__).resolve().parents[2]
META = "linux-image-amd64"  # Debian 12's default kernel: 6.1
SERIES = "6.1"
TARGETS = {
    "tests/ns/test_firewall_golden.py": ["test_golden_ruleset_loads_atomically"],
    "tests/ns/test_firewall_direct_routing.py": [
        "test_only_published_ports_are_reachable_from_outside[nftables]"
    ],
    "tests/ns/test_daemon_integration.py": ["test_dns_and_firewall_through_the_daemon"],
}
# A guard against a hung guest, not a performance bound (2.5 minutes under TCG here).
TIMEOUT = 480


def series(release: str) -> str:
    """``6.1`` of ``6.1.0-57-amd64``: the major.minor of a kernel release."""
    return ".".join(release.split(".")[:2])


def test_nftables_ruleset_loads_and_works_on_debian12_default_kernel(tmp_path: Path) -> None:
    if series(platform.release()) == SERIES:
        pytest.skip(f"this kernel is {platform.release()}: {', '.join(TARGETS)} run directly")
    if missing := vm.missing_tools():
        pytest.skip(f"no VM to boot Debian 12's {SERIES} kernel in: {missing}")
    try:
        kernel = vm.prepare_kernel(meta=META)
    except vm.VmUnavailable as e:
        pytest.skip(f"no VM to boot Debian 12's {SERIES} kernel in: {e}")
    if series(kernel.version) != SERIES:
        pytest.skip(f"apt's {META} is {kernel.version} here, not Debian 12's {SERIES}")
    out = tmp_path / "vm"
    ids = [f"{path}::{name}" for path, names in TARGETS.items() for name in names]
    before = f"uname -r >{shlex.quote(str(out / 'uname.txt'))}"
    result, got = vm.run_pytest(ids, out=out, cwd=ROOT, kernel=kernel, before=before,
                                timeout=TIMEOUT)  # fmt: skip
    assert series((out / "uname.txt").read_text().strip()) == SERIES, result.output[-2000:]
    assert result.status == 0, result.output[-6000:]
    assert set(got) == {name for names in TARGETS.values() for name in names}, got
    assert {name for name, o in got.items() if o != "passed"} == set(), got
