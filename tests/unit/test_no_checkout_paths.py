"""No tracked file may name the absolute path of a checkout.

A test that runs `/some/checkout/.venv/bin/python` passes on the machine that has that
checkout and fails on every fresh clone elsewhere (issue #13, item 1). This check runs as part
of the README's test command, so such a path cannot land again.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

# An absolute path into a virtualenv or into a checkout's own top-level folders: what a
# hard-coded interpreter or fixture path looks like. Relative forms (".venv/bin/python",
# ROOT / ".venv") are fine.
_SUSPECT = re.compile(
    r"""["'\s=(](/(?:[\w.+-]+/)+)(?:\.venv/bin/|netd/|tests/|netns-fixtures/|scripts/bootstrap)"""
)


def _tracked_files() -> list[Path]:
    try:
        out = subprocess.run(
            ["git", "-C", str(ROOT), "ls-files", "-z"],
            capture_output=True,
            check=True,
            timeout=30,
        ).stdout
    except (OSError, subprocess.CalledProcessError):
        # A source tree without git (an unpacked sdist): check the package and tests instead.
        return [
            p
            for d in ("netd", "tests", "netns-fixtures", "benchmarks", "scripts")
            for p in (ROOT / d).rglob("*")
            if p.is_file()
        ]
    return [ROOT / name for name in out.decode().split("\0") if name]


def _text(path: Path) -> str | None:
    try:
        data = path.read_bytes()
    except OSError:
        return None
    if b"\0" in data[:4096]:
        return None
    return data.decode("utf-8", "replace")


def test_no_tracked_file_names_this_checkouts_path() -> None:
    root = str(ROOT)
    offenders = []
    for path in _tracked_files():
        text = _text(path)
        if text is not None and root in text:
            offenders.append(str(path.relative_to(ROOT)))
    assert offenders == [], (
        f"these tracked files name the checkout's absolute path {root}: {offenders}"
    )


def test_no_tracked_file_names_an_absolute_checkout_path() -> None:
    offenders = []
    for path in _tracked_files():
        text = _text(path)
        if text is None:
            continue
        for lineno, line in enumerate(text.splitlines(), 1):
            m = _SUSPECT.search(line)
            if m and not m.group(1).startswith(
                ("/usr/", "/opt/", "/etc/", "/run/", "/var/", "/tmp/")
            ):
                offenders.append(f"{path.relative_to(ROOT)}:{lineno}: {line.strip()[:120]}")
    assert offenders == [], "absolute paths of a checkout in tracked files:\n" + "\n".join(
        offenders
    )


def test_the_check_catches_a_hard_coded_interpreter() -> None:
    # The pattern must catch the defect it exists for, or the two tests above prove nothing.
    # The samples are built at run time so that this file does not trip the check itself.
    checkout = "/" + "/".join(("home", "dev", "netd"))
    assert _SUSPECT.search(f'PY = "{checkout}/.venv/bin/python"')
    assert _SUSPECT.search(f"cd {checkout}/netns-fixtures/x")
    assert not _SUSPECT.search('PY = str(ROOT / ".venv" / "bin" / "python")')
