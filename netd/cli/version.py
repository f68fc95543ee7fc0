"""What ``netd --version`` reports: the package version and the build (git commit) it came from.

The build is found, first hit wins:

1. ``netd/_build.py`` (``COMMIT = "..."``), written into the wheel at build time by
   :func:`write_build_module` (a setuptools ``build_py`` hook calls it);
2. pip's ``direct_url.json`` for the installed distribution, which records the commit when
   pip installed from a VCS URL (``pip install git+https://...``);
3. the git checkout the package is imported from (editable installs: ``pip install -e .``),
   with ``-dirty`` when tracked files differ from that commit;
4. ``unknown``.

It does not talk to the daemon (``netd status`` shows the daemon's version).
"""

from __future__ import annotations

import importlib
import json
import subprocess
from importlib import metadata
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parents[1]


def package_version() -> str:
    """The installed distribution's version, else the package's ``__version__``."""
    try:
        return metadata.version("netd")
    except metadata.PackageNotFoundError:
        from .. import __version__

        return __version__


def _from_build_module() -> str | None:
    try:
        module = importlib.import_module("netd._build")
    except ImportError:
        return None
    commit = getattr(module, "COMMIT", None)
    return commit if isinstance(commit, str) and commit else None


def _from_direct_url() -> str | None:
    try:
        text = metadata.distribution("netd").read_text("direct_url.json")
    except metadata.PackageNotFoundError:
        return None
    if not text:
        return None
    try:
        commit = json.loads(text).get("vcs_info", {}).get("commit_id")
    except (ValueError, AttributeError):
        return None
    return commit[:12] if isinstance(commit, str) and commit else None


def git_commit(directory: Path) -> str | None:
    """``<short commit>[-dirty]`` of the git work tree holding ``directory``; None if none."""

    def git(*args: str) -> str | None:
        try:
            proc = subprocess.run(
                ["git", "-C", str(directory), *args],
                capture_output=True,
                text=True,
                timeout=5,
            )
        except (OSError, subprocess.TimeoutExpired):
            return None
        return proc.stdout.strip() if proc.returncode == 0 else None

    commit = git("rev-parse", "--short=12", "HEAD")
    if not commit:
        return None
    status = git("status", "--porcelain", "--untracked-files=no")
    return f"{commit}-dirty" if status else commit


def build() -> tuple[str, str]:
    """(build, where it came from): ``("5a8d1ed0c2ab", "git checkout")`` or ``("unknown", "")``."""
    found = _from_build_module()
    if found:
        return found, "build"
    found = _from_direct_url()
    if found:
        return found, "pip direct_url"
    # Only a checkout the package itself lives in: never the git repo of the current directory.
    if (PACKAGE_DIR.parent / ".git").exists():
        found = git_commit(PACKAGE_DIR.parent)
        if found:
            return found, "git checkout"
    return "unknown", ""


def version_text() -> str:
    """The ``netd --version`` line."""
    commit, source = build()
    suffix = f" ({source})" if source else ""
    return f"netd version {package_version()}, build {commit}{suffix}"


def write_build_module(package_dir: Path, source_dir: Path) -> Path | None:
    """Write ``<package_dir>/_build.py`` with the commit of ``source_dir`` (build time).

    Called from setup.py's ``build_py``/``sdist`` hooks with the build's copy of the package;
    writes nothing (returns None) unless ``source_dir`` itself is the top of a git checkout (an
    unpacked sdist inside some other repository must not take that repository's commit), so
    ``--version`` falls back to a ``_build.py`` shipped in the sdist, or the other sources.
    """
    if not (source_dir / ".git").exists():
        return None
    commit = git_commit(source_dir)
    if commit is None:
        return None
    path = package_dir / "_build.py"
    # The sdist's release tree hard-links the sources: never write through a link.
    path.unlink(missing_ok=True)
    path.write_text(
        f'"""Generated at build time: the commit netd was built from."""\n\nCOMMIT = "{commit}"\n'
    )
    return path
