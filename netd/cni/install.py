"""Install the CNI plugin: an executable named ``netd`` on the runtime's CNI_PATH, and a conflist.

Two forms of the executable, chosen by ``client``:

- ``c``: ``client.c`` compiled with the host's C compiler (``$CC`` or ``cc``). It starts in
  about 1 ms instead of the interpreter's 10-15 ms, and hands unusual calls to the Python
  plugin (it is built with this interpreter's path and the package root baked in).
- ``python``: a two-line script run with ``-I -S`` (isolated, no site) that puts the directory
  holding the ``netd`` package on ``sys.path`` and calls ``netd.cni.fast.main``.

``auto`` (the default) builds the C client when a compiler is there and falls back to the
script otherwise. Files are written atomically (temporary file, then rename) because a runtime
may exec the plugin at any moment. This module does not talk to the daemon.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Literal

from ..errors import InvalidInput, NetdError
from ..names import check_network_name
from . import spec
from .spec import SUPPORTED_VERSIONS

Client = Literal["auto", "c", "python"]
CLIENT_SOURCE = Path(__file__).with_name("client.c")

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


def compiler() -> str | None:
    """The C compiler to build the client with (``$CC`` or ``cc``), or None."""
    return shutil.which(os.environ.get("CC") or "cc")


def _c_string(value: str, field: str) -> str:
    # Baked into the binary as a C string literal; refuse what would need escaping.
    if any(ch in value for ch in '"\\\n') or not value.isprintable():
        raise InvalidInput(field, value, "cannot be compiled into the C client")
    return f'"{value}"'


def client_limits() -> dict[str, int]:
    """The limits compiled into the C client, from ``netd.cni.spec`` (the Python plugin's)."""
    return {
        "MAX_CONFIG": spec.MAX_CONFIG_BYTES,
        "MAX_DEPTH": spec.MAX_JSON_DEPTH,
        "MAX_CONTAINER_ID": spec.MAX_CONTAINER_ID,
        "MAX_IFNAME": spec.MAX_IFNAME,
        "MAX_NETNS": spec.MAX_NETNS,
        "MAX_ENV_TEXT": spec.MAX_ENV_TEXT,
    }


def build_client(target: Path, python: str | None = None, root: Path | None = None) -> None:
    """Compile ``client.c`` into ``target`` (an executable); NetdError when the build fails."""
    cc = compiler()
    if cc is None:
        raise NetdError("building the C CNI client: no C compiler (set CC or install gcc)")
    python = python or sys.executable
    root = root or package_root()
    versions = ",".join(f'"{v}"' for v in SUPPORTED_VERSIONS)
    argv = [
        cc,
        "-O2",
        "-std=gnu11",
        "-Wall",
        f"-DNETD_PYTHON={_c_string(python, 'python')}",
        # A Python string literal inside the C string: sys.path.insert(0, "<root>").
        f'-DNETD_ROOT="\\"{_c_string(str(root), "root")[1:-1]}\\""',
        f"-DNETD_VERSIONS={versions}",
        *(f"-DNETD_{name}={value}" for name, value in client_limits().items()),
        "-o",
        str(target),
        str(CLIENT_SOURCE),
    ]
    # Static linking skips the dynamic loader: ~0.35 ms less per exec. Without libc.a, dynamic.
    proc = subprocess.run([*argv, "-static"], capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        proc = subprocess.run(argv, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise NetdError(f"building the C CNI client with {cc} failed: {proc.stderr.strip()}")


def _install_executable(path: Path, client: Client) -> None:
    if client == "python" or (client == "auto" and compiler() is None):
        _write_atomic(path, launcher_text(), 0o755)
        return
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    os.close(fd)
    try:
        build_client(Path(tmp))
        os.chmod(tmp, 0o755)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


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
    client: Client = "auto",
) -> list[Path]:
    """Write ``<bin_dir>/netd`` (and ``<conf_dir>/10-netd-<network>.conflist``); the paths.

    Raises InvalidInput for a bad network name or socket path; OSError from the file system
    passes through with its path.
    """
    check_network_name(network, "network")
    if socket is not None and not socket.startswith("/"):
        raise InvalidInput("socket", socket, "must be an absolute path")
    if client not in ("auto", "c", "python"):
        raise InvalidInput("client", client, "must be auto, c or python")
    written = []
    bin_dir.mkdir(parents=True, exist_ok=True)
    launcher = bin_dir / PLUGIN_NAME
    _install_executable(launcher, client)
    written.append(launcher)
    if conf_dir is not None:
        conf_dir.mkdir(parents=True, exist_ok=True)
        path = conf_dir / f"10-netd-{network}.conflist"
        _write_atomic(path, json.dumps(conflist(network, socket), indent=2) + "\n", 0o644)
        written.append(path)
    return written
