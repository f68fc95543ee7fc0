"""`netd demo` turns a step that cannot run into a one-line error, not a traceback."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest


@pytest.mark.skipif(os.geteuid() != 0, reason="the demo refuses to run without root first")
def test_a_missing_tool_is_one_line_and_no_traceback() -> None:
    # Without `ip` on PATH the very first sandbox step fails before any namespace exists.
    proc = subprocess.run(
        [sys.executable, "-c", "from netd.cli.main import main; main()", "demo"],
        env={**os.environ, "PATH": "/nonexistent"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    assert "Error: the demo stopped: [Errno 2] No such file or directory: 'ip'" in proc.stderr
