"""Strict JSON for CNI: exactly one RFC 8259 document, nothing a second parser could read apart.

STANDARD LIBRARY ONLY (the plugin imports it under ``python3 -I -S``). Both plugin clients and
the ``POST /v1/cni`` route decode with :func:`loads`. Python's ``json`` is lenient where that
matters for a request built around the runtime's stdin: it keeps the last of duplicated keys,
accepts ``NaN``/``Infinity``, reads ``1e999`` as infinity, and ``json.loads`` on bytes accepts a
byte order mark and UTF-16. Here each of those is an error, so that what the plugin validated is
what the daemon reads, byte for byte, and a config can never carry keys of the request around it.
The compiled client (``client.c``) accepts a subset of what this accepts and hands the rest to
the Python plugin, so both report the same error.
"""

from __future__ import annotations

import json

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing costs start-up time; annotations are strings here
    from typing import Any

WHITESPACE = b" \t\n\r"  # RFC 8259 §2; bytes.strip() would also strip \v and \f


class StrictJSONError(ValueError):
    """The text is not exactly one strict JSON document; the message says why."""


def _object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj: dict[str, Any] = {}
    for key, value in pairs:
        if key in obj:
            raise StrictJSONError(f"key {key[:64]!r} appears more than once in one object")
        obj[key] = value
    return obj


def _constant(name: str) -> Any:
    raise StrictJSONError(f"{name} is not a JSON value (RFC 8259 §6)")


def _float(text: str) -> float:
    value = float(text)
    if value in (float("inf"), float("-inf")):
        raise StrictJSONError(f"number {text[:40]} is out of range")
    return value


_DECODER = json.JSONDecoder(object_pairs_hook=_object, parse_constant=_constant, parse_float=_float)


def depth(value: Any) -> int:
    """How deeply objects and arrays nest in ``value`` (a scalar is 0, ``{}`` is 1)."""
    deepest = 0
    stack = [(value, 1)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, dict):
            children = list(item.values())
        elif isinstance(item, list):
            children = item
        else:
            continue
        deepest = max(deepest, level)
        stack.extend((child, level + 1) for child in children)
    return deepest


def loads(raw: bytes, max_depth: int) -> Any:
    """Decode ``raw`` (UTF-8, one JSON value, no more than ``max_depth`` levels deep).

    Raises StrictJSONError naming the first problem.
    """
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise StrictJSONError(f"not UTF-8: {exc}") from exc
    if text.startswith("\ufeff"):
        raise StrictJSONError(
            "starts with a byte order mark, which JSON text must not (RFC 8259 §8.1)"
        )
    try:
        value = _DECODER.decode(text)
    except StrictJSONError:
        raise
    except RecursionError as exc:  # the scanner recurses per level: ~1000 levels end it
        raise StrictJSONError(f"nested deeper than {max_depth} levels") from exc
    except ValueError as exc:  # JSONDecodeError; ValueError for an int of > 4300 digits
        raise StrictJSONError(str(exc)) from exc
    if depth(value) > max_depth:
        raise StrictJSONError(f"nested deeper than {max_depth} levels")
    return value
