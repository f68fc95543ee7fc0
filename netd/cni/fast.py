"""The CNI plugin's entry points: ``main`` for the launcher, ``handoff`` for the compiled client.

Every container start execs the plugin, so its start-up is paid on every ADD and DEL. Measured
on the 2-vCPU machines: ``python3 -IS`` alone takes ~10-15 ms; the ``socket`` module ~10 ms more
(``enum``, ``selectors``), ``json`` ~3 ms. ``VERSION``, which Podman asks of every plugin before
every ADD, is answered here from the raw stdin with ``os`` and ``sys`` only. Every other verb
goes to :func:`netd.cni.plugin.run`, which validates the environment and stdin, sends one
request on ``_socket`` (``netd.cni.transport``) and checks the answer before printing it.
"""

from __future__ import annotations

import os
import sys

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing costs start-up time; annotations are strings here
    from typing import IO

DEFAULT_SOCKET = "/run/netd/netd.sock"


def read_stdin() -> bytes:
    """Stdin, up to one byte past the config limit (enough to refuse it; a flood is not read)."""
    from .spec import MAX_CONFIG_BYTES  # stdlib-free constants module

    return sys.stdin.buffer.read(MAX_CONFIG_BYTES + 1)


def requested_version(config: bytes) -> str | None:
    """The config's top-level-looking ``"cniVersion": "X"`` when it occurs exactly once."""
    key = b'"cniVersion"'
    if config.count(key) != 1:
        return None
    rest = config[config.index(key) + len(key) :].lstrip()
    if not rest.startswith(b":"):
        return None
    rest = rest[1:].lstrip()
    if not rest.startswith(b'"'):
        return None
    value = rest[1 : rest.find(b'"', 1)]
    return value.decode("ascii", "replace")


def version_answer(config: bytes) -> bytes | None:
    """VERSION's answer (asked of every plugin on every container start) or None if unusual."""
    from .spec import SUPPORTED_VERSIONS  # stdlib-free constants module

    version = requested_version(config)
    if version not in SUPPORTED_VERSIONS:
        return None
    listed = ",".join(f'"{v}"' for v in SUPPORTED_VERSIONS)
    return f'{{"cniVersion":"{version}","supportedVersions":[{listed}]}}'.encode()


def run_fast(env: dict[str, str], raw: bytes, out: IO[bytes]) -> int | None:
    """Exit code after answering VERSION locally, or None when :func:`plugin.run` must handle it."""
    if env.get("CNI_COMMAND", "") != "VERSION":
        return None
    version = version_answer(raw.strip())
    if version is None:
        return None
    out.write(version + b"\n")
    return 0


def handoff() -> None:
    """Entry point the compiled client (``client.c``) execs for a call it does not handle.

    Stdin is the original config, replayed. ``NETD_CNI_UNREACHABLE`` (an errno) says the daemon
    at ``NETD_CNI_SOCKET`` could not be reached and nothing was sent; ``NETD_CNI_ANSWER_FD``
    holds an answer the compiled client would not print (it is judged here, never re-sent).
    Without either, the call is unusual (a bad variable or stdin) and the full path handles it.
    """
    raw = read_stdin()
    env = os.environ
    command = env.get("CNI_COMMAND", "")
    answer_fd = env.get("NETD_CNI_ANSWER_FD", "")
    unreachable = env.get("NETD_CNI_UNREACHABLE", "")
    if answer_fd.isdigit():
        from .plugin import report_answer

        with os.fdopen(int(answer_fd), "rb") as answer:
            code = report_answer(command, raw, answer.read(), sys.stdout, env)
    elif unreachable.isdigit():
        from .plugin import report_unreachable

        error = OSError(int(unreachable), os.strerror(int(unreachable)))
        path = env.get("NETD_CNI_SOCKET") or DEFAULT_SOCKET
        code = report_unreachable(command, raw, path, error, sys.stdout.buffer)
    else:
        from .plugin import run

        code = run(env, raw, sys.stdout)
    sys.stdout.flush()
    sys.exit(code)


def main() -> None:
    """Entry point of the ``netd`` CNI plugin executable."""
    raw = read_stdin()
    code = run_fast(dict(os.environ), raw, sys.stdout.buffer)
    if code is None:
        from .plugin import run

        code = run(os.environ, raw, sys.stdout)
    sys.stdout.flush()
    sys.exit(code)


if __name__ == "__main__":
    main()
