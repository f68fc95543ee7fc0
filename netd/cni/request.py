"""Decode the body of ``POST /v1/cni`` into the call ``handle_cni`` serves, refusing ambiguity.

The plugin clients put the runtime's stdin in place of ``config`` only after checking that it is
exactly one JSON object, so a config cannot carry keys of the call around it (issue #14: a
config ending ``...},"command":"DEL","containerId":"victim",...`` once turned an ADD into a DEL
of another container). This is the daemon's half, and it holds against any client, including
an older installed plugin that pasted stdin unchecked: the body must be strict JSON
(``netd.cni.strict``: a key twice in any object is refused, not "last wins"), and the call has
exactly the keys below, each of the type and size the plugins send. Every refusal is a CNI error
object (6 for the body's shape, 4 for an environment value), never a bare HTTP 400.
"""

from __future__ import annotations

from typing import Any

from . import spec, strict
from .environment import show

# key in the call → (the variable it carries, its limit in characters); config is separate.
ENV_KEYS = {
    "command": ("CNI_COMMAND", 16),
    "containerId": ("CNI_CONTAINERID", spec.MAX_CONTAINER_ID),
    "netns": ("CNI_NETNS", spec.MAX_NETNS),
    "ifname": ("CNI_IFNAME", spec.MAX_IFNAME),
    "args": ("CNI_ARGS", spec.MAX_ENV_TEXT),
    "path": ("CNI_PATH", spec.MAX_ENV_TEXT),
}
KEYS = (*ENV_KEYS, "config")


class CallRefused(spec.CniError):
    """A body that is not a CNI call; ``version`` is the one to answer in."""

    def __init__(self, code: int, msg: str, version: str = spec.CURRENT_VERSION) -> None:
        super().__init__(code, msg)
        self.version = version


def decode_call(raw: bytes) -> dict[str, Any]:
    """The call in ``raw``; CallRefused when it is not exactly one well-formed call."""
    try:
        # One level more than a config may have: the call object around it.
        body = strict.loads(raw, spec.MAX_JSON_DEPTH + 1)
    except strict.StrictJSONError as exc:
        raise CallRefused(
            spec.DECODE_FAILURE, f"CNI call: the request body is refused: {exc}"
        ) from exc
    if not isinstance(body, dict):
        raise CallRefused(
            spec.DECODE_FAILURE, f"CNI call: expected a JSON object, not {type(body).__name__}"
        )
    version = spec.reply_version(body.get("config"))
    unknown = [key for key in body if key not in KEYS]
    if unknown:
        raise CallRefused(
            spec.DECODE_FAILURE,
            f"CNI call: unknown key {show(unknown[0])}; a call has only {', '.join(KEYS)}",
            version,
        )
    for key, (variable, limit) in ENV_KEYS.items():
        value = body.get(key, "")
        if not isinstance(value, str):
            raise CallRefused(
                spec.INVALID_ENVIRONMENT,
                f"CNI call: invalid {variable} ({key}) {value!r:.64}: must be a string",
                version,
            )
        if len(value) > limit:
            raise CallRefused(
                spec.INVALID_ENVIRONMENT,
                f"CNI call: invalid {variable} ({key}) {show(value)}: at most {limit} characters",
                version,
            )
    if "command" not in body:
        raise CallRefused(
            spec.INVALID_ENVIRONMENT, "required env variable CNI_COMMAND is missing", version
        )
    if not isinstance(body.get("config"), dict):
        raise CallRefused(
            spec.DECODE_FAILURE,
            "CNI call: config must be a JSON object (the network config)",
            version,
        )
    return body
