"""What the daemon answered, as the runtime must see it: a CNI result, nothing, or an error.

STANDARD LIBRARY ONLY (the plugin imports it under ``python3 -I -S``). The plugin prints nothing
it has not checked: whatever listens on the socket (a stale daemon, another program that took
the path) may answer anything, and a runtime that reads garbage with exit status 0 goes on with
a container that has no network. The rules, which ``client.c`` applies too:

- ``200`` to ``ADD``: a strict JSON object with ``cniVersion`` equal to the config's (netd
  answers in the version asked), ``ips`` a non-empty array of objects, ``interfaces`` and
  ``routes`` arrays of objects and ``dns`` an object when present, and no ``code`` key.
- ``200`` to ``DEL``, ``CHECK``, ``GC`` and ``STATUS``: an empty body, ``{}`` or ``null``.
- any other status: a CNI error object (integer ``code`` ≥ 1, string ``msg``), or netd's API
  error ``{"error": {...}}`` (503 → 11, 403 → 105, 413 → 7).

Anything else is error 999 naming the socket, the verb and what was wrong.
"""

from __future__ import annotations

from . import spec, strict

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

_EMPTY = (b"", b"{}", b"null")


def _show(body: bytes) -> str:
    return repr(body[:200]) + ("..." if len(body) > 200 else "")


def _objects(value: object) -> bool:
    return isinstance(value, list) and all(isinstance(item, dict) for item in value)


def result_problem(result: object, version: str) -> str | None:
    """Why ``result`` is not an ADD result netd would send in ``version``; None when it is."""
    if not isinstance(result, dict):
        return f"a JSON {type(result).__name__}, not an object"
    if "code" in result:
        return "it has a code key (an error object needs a non-200 status)"
    if result.get("cniVersion") != version:
        return f"its cniVersion is {result.get('cniVersion')!r}, the config asked for {version!r}"
    if not _objects(result.get("ips")) or not result["ips"]:
        return "ips must be a non-empty array of objects"
    for key in ("interfaces", "routes"):
        if key in result and not _objects(result[key]):
            return f"{key} must be an array of objects"
    if "dns" in result and not isinstance(result["dns"], dict):
        return "dns must be an object"
    return None


def _error(status: int, body: bytes, broken: str) -> spec.CniError:
    """The CniError a non-200 answer carries; ``broken`` prefixes the message when it is none."""
    try:
        parsed: Any = strict.loads(body, spec.MAX_JSON_DEPTH) if body.strip() else None
    except strict.StrictJSONError as exc:
        return spec.CniError(
            spec.INTERNAL, f"{broken} HTTP {status}, not JSON ({exc}): {_show(body)}"
        )
    if isinstance(parsed, dict):
        code, msg = parsed.get("code"), parsed.get("msg")
        if type(code) is int and code >= 1 and isinstance(msg, str):
            details = parsed.get("details")
            return spec.CniError(code, msg, details if isinstance(details, str) else "")
        error = parsed.get("error")
        if isinstance(error, dict) and isinstance(error.get("message"), str):
            mapped = {
                403: spec.PERMISSION_DENIED,
                413: spec.INVALID_CONFIG,
                503: spec.TRY_AGAIN_LATER,
            }.get(status, spec.INTERNAL)
            return spec.CniError(mapped, f"netd daemon answered HTTP {status}: {error['message']}")
    return spec.CniError(
        spec.INTERNAL, f"{broken} HTTP {status} without a CNI error object: {_show(body)}"
    )


def interpret(command: str, version: str, path: str, raw: bytes) -> Any:
    """The result to print (None for nothing) from the daemon's raw HTTP answer, or CniError.

    ``version`` is the config's cniVersion as ``spec.reply_version`` gives it; ``path`` the
    socket, named in every error about the answer.
    """
    broken = f"netd daemon at {path} answered CNI {command} with"
    try:
        # Imported here: the module is the plugin's only other use of the transport.
        from .transport import parse_answer

        status, body = parse_answer(raw)
    except ConnectionError as exc:
        raise spec.CniError(spec.INTERNAL, f"{broken} something that is not HTTP: {exc}") from None
    if status != 200:
        raise _error(status, body, broken)
    if command != "ADD":
        if body.strip(strict.WHITESPACE) in _EMPTY:
            return None
        raise spec.CniError(
            spec.INTERNAL, f"{broken} HTTP 200 and a body where none belongs: {_show(body)}"
        )
    try:
        result = strict.loads(body, spec.MAX_JSON_DEPTH)
    except strict.StrictJSONError as exc:
        raise spec.CniError(
            spec.INTERNAL, f"{broken} HTTP 200 but not JSON ({exc}): {_show(body)}"
        ) from None
    problem = result_problem(result, version)
    if problem:
        raise spec.CniError(
            spec.INTERNAL, f"{broken} HTTP 200 but not a CNI result: {problem}: {_show(body)}"
        )
    return result
