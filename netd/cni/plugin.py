"""The CNI plugin executable: a thin client that forwards one CNI call to the netd daemon.

STANDARD LIBRARY ONLY, started as ``python3 -I -S`` by the launcher ``netd cni install`` writes:
every import here costs start-up time on every container start. It checks what it can without
the daemon (the environment, that stdin is JSON), answers VERSION itself, and forwards every
other verb as one ``POST /v1/cni`` on the daemon's Unix socket. All CNI semantics (version
negotiation, config parsing, results) live in the daemon (``netd.cni.handler``), so the plugin
and the daemon can never disagree about them.

The request is built so that stdin can only ever be the ``config`` value: stdin must be exactly
one strict JSON object (``netd.cni.strict``: no trailing bytes, no duplicated keys, no NaN, no
BOM, at most 64 levels deep, at most 512 KiB), and only then are its bytes put in place of
``config``. The daemon's answer is checked before anything is printed (``netd.cni.answer``).

Socket: the config key ``socket`` > the environment variable ``NETD_SOCKET`` >
``/run/netd/netd.sock``. A DEL that finds no daemon listening there is recorded in the daemon's
spool (``netd.cni.spool``) and succeeds; the daemon replays it before it serves again.
"""

from __future__ import annotations

import json
import os
import sys

from . import answer, spec, strict
from .environment import check_env
from .transport import DEFAULT_SOCKET, TIMEOUT, build_request, exchange

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing and collections.abc cost start-up time; annotations are strings
    from collections.abc import Mapping
    from typing import IO, Any


def read_config(raw: bytes, command: str) -> dict[str, Any]:
    """Decode the stdin config: CniError(7) when too large, 6 when not one strict JSON object."""
    if len(raw) > spec.MAX_CONFIG_BYTES:
        raise spec.CniError(
            spec.INVALID_CONFIG,
            f"CNI {command}: the network config on stdin is larger than "
            f"{spec.MAX_CONFIG_BYTES} bytes",
        )
    if not raw.strip(strict.WHITESPACE):
        if command == "VERSION":
            return {}
        raise spec.CniError(spec.DECODE_FAILURE, f"CNI {command}: no network config on stdin")
    try:
        config = strict.loads(raw, spec.MAX_JSON_DEPTH)
    except strict.StrictJSONError as exc:
        raise spec.CniError(
            spec.DECODE_FAILURE, f"CNI {command}: decoding the config on stdin: {exc}"
        ) from exc
    if not isinstance(config, dict):
        raise spec.CniError(
            spec.DECODE_FAILURE,
            f"CNI {command}: the config on stdin must be a JSON object, "
            f"not {type(config).__name__}",
        )
    return config


def socket_path(config: dict[str, Any], env: Mapping[str, str]) -> str:
    """Where the daemon listens: config ``socket`` (or ``ipam.socket``) > NETD_SOCKET > default."""
    try:
        flat = spec.flatten_config(config)
    except spec.CniError:
        flat = {}  # the daemon reports the bad conflist with its own words
    ipam = flat.get("ipam")
    for configured in (flat.get("socket"), ipam.get("socket") if isinstance(ipam, dict) else None):
        if isinstance(configured, str) and configured:
            return configured
    return env.get("NETD_SOCKET") or DEFAULT_SOCKET


def unreachable_error(command: str, path: str, exc: OSError, timeout: float) -> spec.CniError:
    """The error for a daemon that cannot be reached or did not answer in time."""
    # Unavailable for STATUS (code 50); "try again later" for everything else (code 11).
    down = spec.PLUGIN_NOT_AVAILABLE if command == "STATUS" else spec.TRY_AGAIN_LATER
    if isinstance(exc, TimeoutError):
        return spec.CniError(
            down, f"netd daemon at {path} did not answer CNI {command} within {timeout:g} s"
        )
    return spec.CniError(
        down,
        f"netd daemon not reachable at {path}: {exc}; "
        "start it with `netd daemon` (or systemctl start netd)",
    )


def _print_error(err: spec.CniError, config: bytes, out: IO[bytes]) -> int:
    try:
        parsed: Any = strict.loads(config, spec.MAX_JSON_DEPTH)
    except ValueError:
        parsed = {}
    out.write(json.dumps(err.to_result(spec.reply_version(parsed))).encode() + b"\n")
    return 1


def build_call(command: str, config: dict[str, Any], env: Mapping[str, str]) -> dict[str, Any]:
    """The call ``POST /v1/cni`` carries, as a dict (what the DEL spool records)."""
    return {
        "command": command,
        "containerId": env.get("CNI_CONTAINERID", ""),
        "netns": env.get("CNI_NETNS", ""),
        "ifname": env.get("CNI_IFNAME", ""),
        "args": env.get("CNI_ARGS", ""),
        "path": env.get("CNI_PATH", ""),
        "config": config,
    }


def spool_del(
    call: dict[str, Any], path: str, exc: OSError, timeout: float
) -> spec.CniError | None:
    """A DEL the daemon could not take: record it in the daemon's spool (``netd.cni.spool``).

    None when it was recorded (DEL succeeds: the daemon replays it before it serves again);
    otherwise the error to report. Only a daemon that is certainly not listening (no socket
    file, connection refused) is spooled for: after a timeout the daemon may hold the request.
    """
    from . import spool

    down = unreachable_error("DEL", path, exc, timeout)
    if exc.errno not in spool.DAEMON_DOWN:
        return down
    directory = spool.spool_dir(path)
    try:
        inode = spool.netns_inode_of(str(call.get("netns") or ""))
        written = spool.write(directory, spool.record(call, inode))
    except OSError as err:
        return spec.CniError(
            down.code, f"{down.msg}; recording the DEL in {directory} failed: {err}"
        )
    # Runtimes log a plugin's stderr; say where the DEL went.
    sys.stderr.write(
        f"netd: daemon not reachable at {path} ({exc.strerror}); DEL of "
        f"{call.get('containerId')}/{call.get('ifname')} recorded in {written}; the daemon "
        "replays it when it starts\n"
    )
    return None


def encode_call(command: str, stdin: bytes, env: Mapping[str, str]) -> bytes:
    """The body of ``POST /v1/cni``: the environment as JSON strings, then stdin as ``config``.

    ``stdin`` must have passed :func:`read_config`: exactly one strict JSON object, so its bytes
    (the runtime's, unchanged, as the compiled client sends them) end where ``config`` ends and
    cannot add or repeat a key of the call around it.
    """
    call = build_call(command, {}, env)
    del call["config"]
    head = json.dumps(call, separators=(",", ":")).encode()
    return head[:-1] + b',"config":' + stdin.strip(strict.WHITESPACE) + b"}"


def report_unreachable(
    command: str,
    config: bytes,
    path: str,
    exc: OSError,
    out: IO[bytes],
    env: Mapping[str, str] | None = None,
) -> int:
    """The compiled client's rare case: spool a DEL, or print the unreachable-daemon error."""
    if command == "DEL":
        try:
            parsed = read_config(config, command)
        except spec.CniError as decode_error:  # the daemon would refuse it too: code 6
            return _print_error(decode_error, config, out)
        error = spool_del(build_call(command, parsed, env or os.environ), path, exc, TIMEOUT)
        return 0 if error is None else _print_error(error, config, out)
    return _print_error(unreachable_error(command, path, exc, TIMEOUT), config, out)


def report_answer(
    command: str, config: bytes, raw: bytes, out: IO[str], env: Mapping[str, str]
) -> int:
    """The compiled client's rare case: an answer it would not print itself; the exit code.

    The answer is judged exactly as :func:`run` judges one (``netd.cni.answer``), so the request
    is never sent twice and both clients print the same thing.
    """
    result: Any = None
    parsed: dict[str, Any] = {}
    try:
        parsed = read_config(config, command)
        version = spec.reply_version(parsed)
        result = answer.interpret(command, version, socket_path(parsed, env), raw)
    except spec.CniError as exc:
        out.write(json.dumps(exc.to_result(spec.reply_version(parsed))) + "\n")
        return 1
    if result is not None:
        out.write(json.dumps(result) + "\n")
    return 0


def forward(
    command: str, config: dict[str, Any], stdin: bytes, env: Mapping[str, str], timeout: float
) -> Any:
    """POST the call to the daemon; the result (None for verbs without output) or CniError."""
    path = socket_path(config, env)
    request = build_request("/v1/cni", encode_call(command, stdin, env))
    try:
        raw = exchange(path, request, timeout)
    except OSError as exc:
        error = None
        if command == "DEL":
            error = spool_del(build_call(command, config, env), path, exc, timeout)
            if error is None:
                return None  # recorded for replay: DEL succeeds
        raise error or unreachable_error(command, path, exc, timeout) from exc
    return answer.interpret(command, spec.reply_version(config), path, raw)


def run(env: Mapping[str, str], stdin: bytes, stdout: IO[str], timeout: float = TIMEOUT) -> int:
    """One plugin invocation: write the result or error object to ``stdout``; the exit code."""
    config: dict[str, Any] = {}
    try:
        command = check_env(env)
        config = read_config(stdin, command)
        if command == "VERSION":
            result: Any = spec.version_result(config)
        else:
            result = forward(command, config, stdin, env, timeout)
    except spec.CniError as exc:
        stdout.write(json.dumps(exc.to_result(_reply_version(config, stdin))) + "\n")
        return 1
    if result is not None:
        stdout.write(json.dumps(result) + "\n")
    return 0


def _reply_version(config: dict[str, Any], stdin: bytes) -> str:
    """The version to answer an error in: the config's, even when the error came before it."""
    if not config and len(stdin) <= spec.MAX_CONFIG_BYTES:
        try:  # contextlib.suppress would cost the plugin ~7 ms of imports
            config = strict.loads(stdin, spec.MAX_JSON_DEPTH)
        except ValueError:
            config = {}
    return spec.reply_version(config)


def main() -> None:
    """Entry point for ``python3 -m netd.cni.plugin`` (the executable's is ``netd.cni.fast``)."""
    # Up to one byte past the limit, as netd.cni.fast.read_stdin: enough to refuse a flood.
    # (Not imported from there: fast imports this module, and the graph has no cycles.)
    code = run(os.environ, sys.stdin.buffer.read(spec.MAX_CONFIG_BYTES + 1), sys.stdout)
    sys.stdout.flush()
    sys.exit(code)


if __name__ == "__main__":
    main()
