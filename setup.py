"""Build hooks that stamp the git commit into built packages, for ``netd --version``.

pyproject.toml stays the one metadata source (name, version, deps, entry points, data files);
this file only adds two setuptools commands:

- ``build_py`` writes ``netd/_build.py`` (``COMMIT = "<short commit>[-dirty]"``) into the
  *build* copy of the package, so a wheel (``pip wheel .``, ``pip install .``) knows its commit;
- ``sdist`` writes the same file into the sdist's release tree, so a wheel built later from the
  sdist (no ``.git`` there; ``python -m build`` works this way) still knows it.

Neither writes into the source tree: a checkout reports its live commit (netd/cli/version.py).
Editable installs (``pip install -e``) are left alone for the same reason. Outside a git checkout
(building from an sdist) nothing is stamped, and a ``_build.py`` shipped in the sdist is kept.

``netd/cli/version.py`` is loaded by path, without importing the ``netd`` package: building
must not need netd's runtime dependencies (``--no-build-isolation`` on a bare host).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

from setuptools import setup
from setuptools.command.build_py import build_py
from setuptools.command.sdist import sdist

HERE = Path(__file__).resolve().parent


def _version_module() -> ModuleType:
    """netd/cli/version.py as a standalone module (stdlib imports only at module level)."""
    path = HERE / "netd" / "cli" / "version.py"
    spec = importlib.util.spec_from_file_location("_netd_build_version", path)
    if spec is None or spec.loader is None:
        raise RuntimeError(f"setup.py: cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _stamp(package_dir: Path) -> None:
    written = _version_module().write_build_module(package_dir, HERE)
    if written is not None:
        print(f"netd build: wrote {written}")


class BuildPyWithCommit(build_py):
    """``build_py`` plus ``netd/_build.py`` in the build directory."""

    def run(self) -> None:
        super().run()
        # Editable installs import the source tree, whose git checkout is the live answer.
        if self.dry_run or getattr(self, "editable_mode", False):
            return
        _stamp(Path(self.build_lib) / "netd")


class SdistWithCommit(sdist):
    """``sdist`` plus ``netd/_build.py`` in the release tree (the sdist has no ``.git``)."""

    def make_release_tree(self, base_dir: str, files: list[str]) -> None:
        super().make_release_tree(base_dir, files)
        if not self.dry_run:
            _stamp(Path(base_dir) / "netd")


setup(cmdclass={"build_py": BuildPyWithCommit, "sdist": SdistWithCommit})
