"""The CNI plugin executable: a thin client that forwards one CNI call to the netd daemon.

STANDARD LIBRARY ONLY, started as ``python3 -I -S`` by the launcher ``netd cni install`` writes:
every import here costs start-up time on every container start. It checks what it can without
the daemon (the environment, that stdin is JSON), answers VERSION itself, and forwards every
other verb as one ``POST /v1/cni`` on the daemon's Unix socket. All CNI semantics (version
negotiation, config parsing, results) live in the daemon (``netd.cni.handler``), so the plugin
and the daemon can never disagree about them.

Socket: the config key ``socket`` > the environment variable ``NETD_SOCKET`` >
``/run/netd/netd.sock``. A DEL that finds no daemon listening there is recorded in the daemon's
spool (``netd.cni.spool``) and succeeds; the daemon replays it before it serves again.
"""

from __future__ import annotations

import json
import os
import sys

from . import spec

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing and collections.abc cost start-up time; annotations are strings
    from collections.abc import Mapping
    from typing import IO, Any

TIMEOUT = 60.0  # seconds of daemon silence; an ADD may queue behind others under load

# Which environment variables each verb needs (SPEC.md "Parameters"). CNI_PATH is required by
# the spec for the runtime to set, but netd never execs another plugin, so it is not enforced.
REQUIRED_ENV = {
    "ADD": ("CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME"),
    "CHECK": ("CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME"),
    "DEL": ("CNI_CONTAINERID", "CNI_IFNAME"),
    "GC": (),
    "STATUS": (),
    "VERSION": (),
}


def read_config(raw: bytes, command: str) -> dict[str, Any]:
    """Decode the stdin config; CniError(6) when it is not a JSON object."""
    if not raw.strip():
        if command == "VERSION":
            return {}
        raise spec.CniError(spec.DECODE_FAILURE, f"CNI {command}: no network config on stdin")
    try:
        config = json.loads(raw)
    except (ValueError, RecursionError) as exc:  # deep nesting (`{"a":{"a":...`): found by fuzzing
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


def check_env(env: Mapping[str, str]) -> str:
    """The command, after checking the variables it needs are set; CniError(4) otherwise."""
    command = env.get("CNI_COMMAND", "")
    if not command:
        raise spec.CniError(
            spec.INVALID_ENVIRONMENT, "required env variable CNI_COMMAND is missing"
        )
    if command not in REQUIRED_ENV:
        raise spec.CniError(
            spec.INVALID_ENVIRONMENT,
            f"unknown CNI_COMMAND {command!r}; expected one of {', '.join(spec.COMMANDS)}",
        )
    missing = [name for name in REQUIRED_ENV[command] if not env.get(name)]
    if missing:
        raise spec.CniError(
            spec.INVALID_ENVIRONMENT,
            f"CNI {command}: required env variables missing: {', '.join(missing)}",
        )
    return command


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
    from .wire import DEFAULT_SOCKET

    return env.get("NETD_SOCKET") or DEFAULT_SOCKET


def _answer_error(status: int, body: Any) -> spec.CniError:
    """Turn a non-200 answer into the CniError to print."""
    if isinstance(body, dict) and isinstance(body.get("code"), int) and "msg" in body:
        return spec.CniError(body["code"], str(body["msg"]), str(body.get("details") or ""))
    error = body.get("error") if isinstance(body, dict) else None
    message = error.get("message") if isinstance(error, dict) else None
    code = {403: spec.PERMISSION_DENIED, 503: spec.TRY_AGAIN_LATER}.get(status, spec.INTERNAL)
    return spec.CniError(code, f"netd daemon answered HTTP {status}: {message or body!r}")


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
        parsed: Any = json.loads(config)
    except (ValueError, RecursionError):
        parsed = {}
    out.write(json.dumps(err.to_result(spec.reply_version(parsed))).encode() + b"\n")
    return 1


def build_call(command: str, config: dict[str, Any], env: Mapping[str, str]) -> dict[str, Any]:
    """The body of ``POST /v1/cni`` for one invocation."""
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


def report_unreachable(
    command: str,
    config: bytes,
    path: str,
    exc: OSError,
    out: IO[bytes],
    env: Mapping[str, str] | None = None,
) -> int:
    """Fast path's rare case: spool a DEL, or print the unreachable-daemon error; exit code."""
    from .fast import TIMEOUT

    if command == "DEL":
        try:
            parsed = read_config(config, command)
        except spec.CniError as decode_error:  # the daemon would refuse it too: code 6
            return _print_error(decode_error, config, out)
        error = spool_del(build_call(command, parsed, env or os.environ), path, exc, TIMEOUT)
        return 0 if error is None else _print_error(error, config, out)
    return _print_error(unreachable_error(command, path, exc, TIMEOUT), config, out)


def report_answer(
    command: str, config: bytes, answer: tuple[int, bytes] | None, out: IO[bytes]
) -> int:
    """Fast path's rare case: an answer that is not 200/422 (or not plain HTTP); exit code."""
    try:
        read_config(config, command)  # the daemon refused stdin that is not JSON: code 6
    except spec.CniError as decode_error:
        return _print_error(decode_error, config, out)
    if answer is None:
        not_http = spec.CniError(spec.INTERNAL, f"CNI {command}: the daemon's answer is not HTTP")
        return _print_error(not_http, config, out)
    status, body = answer
    try:
        parsed: Any = json.loads(body) if body.strip() else None
    except (ValueError, RecursionError):
        parsed = body[:200].decode("utf-8", "replace")
    return _print_error(_answer_error(status, parsed), config, out)


def forward(command: str, config: dict[str, Any], env: Mapping[str, str], timeout: float) -> Any:
    """POST the call to the daemon; the result (None for verbs without output) or CniError."""
    # Imported here so that VERSION, which Podman asks of every plugin, does not pay for it.
    from .wire import request_json

    path = socket_path(config, env)
    call = build_call(command, config, env)
    try:
        status, body = request_json(path, "POST", "/v1/cni", call, timeout=timeout)
    except OSError as exc:
        error = spool_del(call, path, exc, timeout) if command == "DEL" else None
        if command == "DEL" and error is None:
            return None  # recorded for replay: DEL succeeds
        raise error or unreachable_error(command, path, exc, timeout) from exc
    except ValueError as exc:
        raise spec.CniError(spec.INTERNAL, f"netd daemon at {path}: {exc}") from exc
    if status != 200:
        raise _answer_error(status, body)
    return body or None


def run(env: Mapping[str, str], stdin: bytes, stdout: IO[str], timeout: float = TIMEOUT) -> int:
    """One plugin invocation: write the result or error object to ``stdout``; the exit code."""
    config: dict[str, Any] = {}
    try:
        command = check_env(env)
        config = read_config(stdin, command)
        if command == "VERSION":
            result: Any = spec.version_result(config)
        else:
            result = forward(command, config, env, timeout)
    except spec.CniError as exc:
        stdout.write(json.dumps(exc.to_result(spec.reply_version(config))) + "\n")
        return 1
    if result is not None:
        stdout.write(json.dumps(result) + "\n")
    return 0


def main() -> None:
    """Entry point of the ``netd`` CNI plugin executable."""
    code = run(os.environ, sys.stdin.buffer.read(), sys.stdout)
    sys.stdout.flush()
    sys.exit(code)


if __name__ == "__main__":
    main()
