"""Module-scoped sandbox worlds: a sandbox, a world-readable scratch directory, and a clean end.

Several namespace tests build one read-mostly topology per module (a sandbox host, containers
and a netd process) because building it costs seconds. :func:`sandbox_world` is their common
frame: it builds the world, yields it, and whatever happened deletes the scratch directory and
every namespace, closes the world's process output, and asserts nothing was left behind.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Protocol, TypeVar

from netns_fixtures import Sandbox, leftovers


class World(Protocol):
    """A world runs one process (its stdout is a pipe the frame closes)."""

    proc: subprocess.Popen[Any]


W = TypeVar("W", bound=World)


@contextmanager
def sandbox_world(build: Callable[[Sandbox, Path], W], tmp_prefix: str) -> Iterator[W]:
    """``build(sandbox, scratch_dir)``, yielded, then torn down whatever happened.

    The scratch directory is 0755: netd's DNS workers run as nobody and read files in it, and
    pytest's own temporary directories are 0700.
    """
    box = Sandbox()
    tmp = Path(tempfile.mkdtemp(prefix=tmp_prefix))
    tmp.chmod(0o755)
    world: W | None = None
    try:
        world = build(box, tmp)
        yield world
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        failures = box.close()
        if world is not None and world.proc.stdout is not None:
            world.proc.stdout.close()
        assert not failures, failures
        assert not leftovers(box.prefix)
