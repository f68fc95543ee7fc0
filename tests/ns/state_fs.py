"""A daemon whose state directory is a filesystem the test controls: a small tmpfs to fill up,
or a read-only mount.

The mount is made inside a mount namespace of the daemon's own (``unshare --mount`` between
``ip netns exec`` and ``netd``), so the machine's mount table never changes and the mount
disappears with the daemon. Propagation is ``slave``: namespaces the test adds under
/run/netns after the start still reach the daemon. The test reaches the mount through
``nsenter --mount`` into the daemon's namespace.
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

from netns_fixtures import Namespace
from netns_fixtures.daemon import Daemon

# Run as `sh -c SCRIPT sh STATE_DIR SETUP netd ...`: set up the mount, then become the daemon.
_SCRIPT = 'state="$1"; eval "$2" || exit 97; shift 2; exec "$@"'

TMPFS = 'mount -t tmpfs -o size=2m,mode=0700 netd-test-state "$state"'
READ_ONLY_TMPFS = 'mount -t tmpfs -o ro,size=1m,mode=0700 netd-test-state "$state"'
# The existing state directory, bound onto itself and made read-only (our own bind mount only).
READ_ONLY_BIND = 'mount --bind "$state" "$state" && mount -o remount,bind,ro "$state"'


class StateFsDaemon(Daemon):
    """A :class:`Daemon` whose state directory is mounted by ``setup`` (a shell snippet that
    may use ``$state``) in the daemon's private mount namespace."""

    def __init__(self, host: Namespace, *, setup: str = TMPFS, **kw: Any) -> None:
        super().__init__(host, **kw)
        self.setup = setup
        self.state_dir.mkdir(parents=True, exist_ok=True)

    def argv(self) -> list[str]:
        """``unshare`` + the mount, then the daemon's usual command line."""
        wrap = ["unshare", "--mount", "--propagation", "slave", "--", "sh", "-c", _SCRIPT, "sh"]
        return [*wrap, str(self.state_dir), self.setup, *super().argv()]

    def in_mounts(self, *cmd: str, check: bool = False) -> subprocess.CompletedProcess[str]:
        """Run ``cmd`` in the daemon's mount namespace (where its state filesystem is)."""
        assert self.proc is not None, "the daemon is not running"
        return subprocess.run(
            ["nsenter", f"--mount=/proc/{self.proc.pid}/ns/mnt", "--", *cmd],
            capture_output=True,
            text=True,
            timeout=60,
            check=check,
        )

    @property
    def filler(self) -> Path:
        """The file that fills the state filesystem."""
        return self.state_dir / "filler"

    def fill(self) -> None:
        """Fill the state filesystem to the last block (dd stops at ENOSPC)."""
        done = self.in_mounts("dd", "if=/dev/zero", f"of={self.filler}", "bs=4096")
        assert "No space left on device" in done.stderr, done.stderr

    def unfill(self) -> None:
        """Free the space again."""
        self.in_mounts("rm", "-f", str(self.filler), check=True)
