"""Variable interpolation in compose files, and the ``.env`` file format (pure).

Implements the compose-spec rules: ``$VAR`` and ``${VAR}``; ``${VAR:-default}`` (unset or empty),
``${VAR-default}`` (unset); ``${VAR:?message}`` / ``${VAR?message}`` (error); ``${VAR:+alt}`` /
``${VAR+alt}``; defaults may nest further ``${...}``; ``$$`` is a literal ``$``. An unset variable
without a default becomes the empty string, as in docker compose, and its name is reported so
the caller can warn as compose does. Only values are interpolated,
never keys. This module does not read the process environment itself: callers pass a mapping.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from .errors import ComposeError
from .source import LocDict, LocList, Override, Reset, Where, copy_positions, position

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_ENV_LINE = re.compile(r"\s*(?:export\s+)?([A-Za-z_][A-Za-z0-9_.-]*)\s*(?:=\s*(.*))?\Z")


class _Missing(Exception):
    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def _closing(text: str, start: int) -> int:
    """Index of the ``}`` matching the ``${`` whose body starts at ``start``."""
    depth = 1
    i = start
    while i < len(text):
        if text.startswith("$$", i):
            i += 2
            continue
        if text.startswith("${", i):
            depth += 1
            i += 2
            continue
        if text[i] == "}":
            depth -= 1
            if depth == 0:
                return i
        i += 1
    return -1


def _expand(body: str, env: Mapping[str, str], unset: list[str] | None) -> str:
    m = _NAME.match(body)
    if not m:
        raise _Missing(f"invalid interpolation format ${{{body}}}")
    name, rest = m.group(0), body[m.end() :]
    value = env.get(name)
    if not rest:
        if value is None and unset is not None:
            unset.append(name)
        return value or ""
    for op in (":-", ":?", ":+", "-", "?", "+"):
        if rest.startswith(op):
            arg = rest[len(op) :]
            break
    else:
        raise _Missing(f"invalid interpolation format ${{{body}}}")
    is_unset = value is None
    empty = is_unset or value == ""
    if op in (":-", "-"):
        use_default = empty if op == ":-" else is_unset
        return interpolate_text(arg, env, unset) if use_default else str(value)
    if op in (":?", "?"):
        if empty if op == ":?" else is_unset:
            why = interpolate_text(arg, env, unset) or f"variable {name} is not set"
            raise _Missing(f"required variable {name} is missing a value: {why}")
        return str(value)
    use_alt = not empty if op == ":+" else not is_unset
    return interpolate_text(arg, env, unset) if use_alt else ""


def interpolate_text(text: str, env: Mapping[str, str], unset: list[str] | None = None) -> str:
    """Interpolate one string; raises ``_Missing`` for ``${VAR:?...}`` or a bad format.

    The names of unset variables used without a default are appended to ``unset`` (docker
    compose warns about each: they silently become the empty string).
    """
    out: list[str] = []
    i = 0
    while i < len(text):
        j = text.find("$", i)
        if j < 0:
            out.append(text[i:])
            break
        out.append(text[i:j])
        if text.startswith("$$", j):
            out.append("$")
            i = j + 2
        elif text.startswith("${", j):
            end = _closing(text, j + 2)
            if end < 0:
                raise _Missing(f"invalid interpolation format {text[j:]!r}: no closing brace")
            out.append(_expand(text[j + 2 : end], env, unset))
            i = end + 1
        else:
            m = _NAME.match(text, j + 1)
            if m:
                if m.group(0) not in env and unset is not None:
                    unset.append(m.group(0))
                out.append(env.get(m.group(0), ""))
                i = m.end()
            else:
                out.append("$")
                i = j + 1
    return "".join(out)


def interpolate(
    tree: Any, env: Mapping[str, str], path: str = "", unset: list[str] | None = None
) -> Any:
    """A copy of ``tree`` with every string value interpolated (positions kept).

    Unset variables used without a default are appended to ``unset``.
    """
    return _walk(tree, env, path, None, unset)


def _walk(
    node: Any, env: Mapping[str, str], path: str, where: Where | None, unset: list[str] | None
) -> Any:
    if isinstance(node, str):
        try:
            return interpolate_text(node, env, unset)
        except _Missing as exc:
            raise ComposeError(where, path, node, exc.message) from None
    if isinstance(node, LocDict):
        out = LocDict(where=node.where)
        for key, value in node.items():
            sub = f"{path}.{key}" if path else str(key)
            out[key] = _walk(value, env, sub, position(node, key), unset)
        return copy_positions(node, out)
    if isinstance(node, LocList):
        items = [
            _walk(v, env, f"{path}[{i}]", position(node, i), unset) for i, v in enumerate(node)
        ]
        return copy_positions(node, LocList(items, where=node.where))
    if isinstance(node, (Reset, Override)):
        return type(node)(_walk(node.value, env, path, where, unset))
    return node


def parse_env_file(
    text: str, filename: str, env: Mapping[str, str] | None = None
) -> dict[str, str]:
    """Parse a ``.env`` file: ``KEY=VALUE`` lines, ``export``, quotes, ``#`` comments.

    Single-quoted values are literal; double-quoted and bare values are interpolated with the
    variables known so far (``env`` then earlier lines), as compose does.
    """
    known: dict[str, str] = dict(env or {})
    out: dict[str, str] = {}
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        m = _ENV_LINE.match(line)
        if not m:
            raise ComposeError((filename, number), "", line, "is not a KEY=VALUE line")
        key, value = m.group(1), m.group(2) or ""
        if len(value) >= 2 and value[0] == value[-1] == "'":
            value = value[1:-1]
        else:
            if len(value) >= 2 and value[0] == value[-1] == '"':
                value = value[1:-1].replace("\\n", "\n").replace('\\"', '"').replace("\\\\", "\\")
            else:
                value = re.split(r"\s+#", value, maxsplit=1)[0].rstrip()
            try:
                value = interpolate_text(value, {**known, **out})
            except _Missing as exc:
                raise ComposeError((filename, number), key, None, exc.message) from None
        out[key] = value
    return out
