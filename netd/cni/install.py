"""Install the CNI plugin: a launcher named ``netd`` on the runtime's CNI_PATH, and a conflist.

The launcher is a two-line Python script run with ``-I -S`` (isolated, no site): it puts the
directory holding the ``netd`` package on ``sys.path`` and calls ``netd.cni.plugin.main``, so
a container start pays for the interpreter and the standard library only. Files are written
atomically (temporary file, then rename) because a runtime may exec the plugin at any moment.
This module does not talk to the daemon.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path

from ..errors import InvalidInput
from ..names import check_network_name

PLUGIN_NAME = "netd"
# The capabilities netd serves itself (CONVENTIONS.md); runtimes fill runtimeConfig for them.
CAPABILITIES = ("portMappings", "ips", "mac", "dns", "aliases")
# Debian 12's libcni, Podman 4.3 and containerd 1.6 read ``cniVersion`` and speak up to 1.0.0;
# newer libcni (≥1.2) picks the highest common entry of ``cniVersions``.
CONFLIST_VERSION = "1.0.0"
CONFLIST_VERSIONS = ("1.0.0", "1.1.0")


def package_root() -> Path:
    """The directory that contains the ``netd`` package (what the launcher puts on sys.path)."""
    return Path(__file__).resolve().parent.parent.parent


def launcher_text(python: str | None = None, root: Path | None = None) -> str:
    """The launcher script. Linux passes a shebang's arguments as one, hence ``-IS``."""
    python = python or sys.executable
    root = root or package_root()
    return (
        f"#!{python} -IS\n"
        f"import sys; sys.path.insert(0, {str(root)!r}); "
        "from netd.cni.fast import main; main()\n"
    )


def conflist(network: str, socket: str | None = None) -> dict[str, object]:
    """An example conflist using netd alone (it handles port mappings itself)."""
    plugin: dict[str, object] = {
        "type": PLUGIN_NAME,
        "capabilities": {name: True for name in CAPABILITIES},
    }
    if socket:
        plugin["socket"] = socket
    return {
        "cniVersion": CONFLIST_VERSION,
        "cniVersions": list(CONFLIST_VERSIONS),
        "name": network,
        "plugins": [plugin],
    }


def _write_atomic(path: Path, text: str, mode: int) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w") as out:
            out.write(text)
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def install_plugin(
    bin_dir: Path,
    *,
    conf_dir: Path | None = None,
    network: str = "netd",
    socket: str | None = None,
) -> list[Path]:
    """Write ``<bin_dir>/netd`` (and ``<conf_dir>/10-netd-<network>.conflist``); the paths.

    Raises InvalidInput for a bad network name or socket path; OSError from the file system
    passes through with its path.
    """
    check_network_name(network, "network")
    if socket is not None and not socket.startswith("/"):
        raise InvalidInput("socket", socket, "must be an absolute path")
    written = []
    bin_dir.mkdir(parents=True, exist_ok=True)
    launcher = bin_dir / PLUGIN_NAME
    _write_atomic(launcher, launcher_text(), 0o755)
    written.append(launcher)
    if conf_dir is not None:
        conf_dir.mkdir(parents=True, exist_ok=True)
        path = conf_dir / f"10-netd-{network}.conflist"
        _write_atomic(path, json.dumps(conflist(network, socket), indent=2) + "\n", 0o644)
        written.append(path)
    return written
