"""The CNI_* environment of one plugin invocation, checked before anything is sent.

STANDARD LIBRARY ONLY (the plugin imports it under ``python3 -I -S``; no ``re``: it costs
start-up time). SPEC.md "Parameters" says which variable each verb needs and what a container
id is; the limits (``netd.cni.spec``) keep every value inside what the daemon's ``/v1/cni``
accepts, so a bad variable is the spec's code 4 here rather than a refusal later. Every value
must be UTF-8: the request carries it as a JSON string. The compiled client (``client.c``)
makes the same checks and hands a failing call to the Python plugin, which words the error.
"""

from __future__ import annotations

from . import spec

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping

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
_NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-")
NAME_RULE = "must match [a-zA-Z0-9][a-zA-Z0-9_.-]*"


def show(value: str, limit: int = 64) -> str:
    """``value`` quoted for a message, cut to ``limit`` characters with its length when longer."""
    if len(value) <= limit:
        return repr(value)
    return f"{value[:limit]!r}... ({len(value.encode('utf-8', 'surrogateescape'))} bytes)"


def _name_problem(value: str, limit: int) -> str | None:
    if len(value) > limit:
        return f"at most {limit} characters"
    if not (value[0].isascii() and value[0].isalnum()) or not _NAME_CHARS.issuperset(value):
        return NAME_RULE
    return None


def _problem(name: str, value: str) -> str | None:
    """Why a set (non-empty) variable is not acceptable; None when it is."""
    try:
        size = len(value.encode("utf-8"))  # os.environ keeps bad bytes as lone surrogates
    except UnicodeEncodeError:
        return "is not UTF-8"
    if name == "CNI_CONTAINERID":  # SPEC.md: alphanumeric plus _ . -, starting alphanumeric
        return _name_problem(value, spec.MAX_CONTAINER_ID)
    if name == "CNI_IFNAME":
        problem = _name_problem(value, spec.MAX_IFNAME)
        return (
            f"{problem} (IFNAMSIZ is 16)" if problem and problem.startswith("at most") else problem
        )
    if name == "CNI_NETNS":
        if not value.startswith("/"):
            return "must be an absolute path"
        if size > spec.MAX_NETNS:
            return f"at most {spec.MAX_NETNS} bytes (PATH_MAX)"
        return None
    if size > spec.MAX_ENV_TEXT:  # CNI_ARGS, CNI_PATH
        return f"at most {spec.MAX_ENV_TEXT} bytes"
    return None


def check_env(env: Mapping[str, str]) -> str:
    """The command, after checking its variables and every CNI_* value; CniError(4) otherwise."""
    command = env.get("CNI_COMMAND", "")
    if not command:
        raise spec.CniError(
            spec.INVALID_ENVIRONMENT, "required env variable CNI_COMMAND is missing"
        )
    if command not in REQUIRED_ENV:
        raise spec.CniError(
            spec.INVALID_ENVIRONMENT,
            f"unknown CNI_COMMAND {show(command)}; expected one of {', '.join(spec.COMMANDS)}",
        )
    missing = [name for name in REQUIRED_ENV[command] if not env.get(name)]
    if missing:
        raise spec.CniError(
            spec.INVALID_ENVIRONMENT,
            f"CNI {command}: required env variables missing: {', '.join(missing)}",
        )
    if command == "VERSION":  # answered locally; nothing else is read
        return command
    for name in ("CNI_CONTAINERID", "CNI_IFNAME", "CNI_NETNS", "CNI_ARGS", "CNI_PATH"):
        value = env.get(name, "")
        problem = _problem(name, value) if value else None
        if problem:
            raise spec.CniError(
                spec.INVALID_ENVIRONMENT, f"CNI {command}: invalid {name} {show(value)}: {problem}"
            )
    return command
