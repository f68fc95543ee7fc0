"""IPsec ESP for real on a machine whose kernel has none: the encrypted-overlay tests in a VM.

tests/ns/test_overlay_encrypted_ns.py checks the ESP path (SAs, ESP on the wire, key
rotation) only on a kernel with ``CONFIG_INET_ESP``; elsewhere its ESP test skips and its
other tests take their fail-closed branch. The machine netd is developed on is such a kernel.
This file boots Debian 12's own kernel, which has ESP as modules, in QEMU over this machine's
files (:mod:`netns_fixtures.vm`: same checkout, same .venv, same ip/nft/etcd), runs that file
there and requires, from its JUnit report, that *every* test in it passed there — none
skipped, none failed — and that netd's own probe found ESP in the guest's kernel (so the
ESP branches ran, not the fail-closed ones).

It skips, with the reason, never passes, when: this machine's kernel does ESP itself (the
file then covers ESP directly), QEMU or busybox-static is missing, or apt cannot fetch the
kernel package. Where /dev/kvm cannot boot Debian's kernel (no /dev/kvm, or PVM) the VM runs on
QEMU's TCG, slower but complete: 3 to 4.5 minutes here.
"""

from __future__ import annotations

import re
import shlex
import sys
from pathlib import Path

import pytest
from netns_fixtures import vm

from netd.kernel import xfrm

ROOT = Path(__file__).resolve().parents[2]
TARGET = "tests/ns/test_overlay_encrypted_ns.py"
# A guard against a hung guest, not a performance bound: under TCG the run takes 3 minutes on
# an idle 2-core machine here and up to 4.5 while other test suites share the cores.
TIMEOUT = 480


def test_encrypted_overlay_tests_all_pass_in_a_vm_with_esp(tmp_path: Path) -> None:
    if not (why := xfrm.esp_missing()):
        pytest.skip(f"this kernel does IPsec ESP: {TARGET} runs its ESP tests directly")
    if missing := vm.missing_tools():
        pytest.skip(f"no VM to run the ESP tests in ({why}): {missing}")
    try:
        kernel = vm.prepare_kernel()
    except vm.VmUnavailable as e:
        pytest.skip(f"no VM to run the ESP tests in ({why}): {e}")
    out = tmp_path / "vm"
    probe = "from netd.kernel import xfrm; print(xfrm.esp_missing() or 'ESP')"
    python = shlex.quote(sys.executable)
    before = f"{python} -c {shlex.quote(probe)} >{shlex.quote(str(out / 'esp.txt'))} 2>&1"
    result, got = vm.run_pytest([TARGET], out=out, cwd=ROOT, kernel=kernel, before=before,
                                timeout=TIMEOUT)  # fmt: skip
    assert result.status == 0, result.output[-6000:]
    # netd's own probe, in the guest: the ESP branches of the tests ran, not the fail-closed ones.
    assert (out / "esp.txt").read_text().strip() == "ESP", (out / "esp.txt").read_text()
    tests = set(re.findall(r"^def (test_\w+)", (ROOT / TARGET).read_text(), re.MULTILINE))
    assert set(got) == tests, (got, tests)
    assert {name for name, o in got.items() if o != "passed"} == set(), got
