"""Write a netd config file from a dict: the small TOML subset netd's config uses.

Top-level keys first, then one ``[table]`` per nested dict (``[a.b]`` for deeper ones). Values:
strings, booleans, integers, floats, paths (as strings) and lists of those. Anything else is a
TypeError naming the key, so a test never writes a config it did not mean.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import PurePath
from typing import Any


def value(key: str, v: Any) -> str:
    """One TOML value."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if not math.isfinite(v):
            raise TypeError(f"config key {key}: {v!r} is not a finite number")
        return repr(v)
    if isinstance(v, str | PurePath):
        # A JSON string is a TOML basic string (same escapes, \uXXXX included).
        return json.dumps(str(v))
    if isinstance(v, list | tuple):
        return "[" + ", ".join(value(key, x) for x in v) + "]"
    raise TypeError(f"config key {key}: cannot write {type(v).__name__} {v!r} as TOML")


def dumps(settings: Mapping[str, Any], table: str = "") -> str:
    """``settings`` as TOML text (``table``: the dotted name of the table being written)."""
    lines = []
    if table:
        lines.append(f"[{table}]")
    nested = []
    for key, v in settings.items():
        name = f"{table}.{key}" if table else key
        if isinstance(v, Mapping):
            nested.append((name, v))
        else:
            lines.append(f"{key} = {value(name, v)}")
    text = "\n".join(lines) + "\n" if lines else ""
    for name, sub in nested:
        text += "\n" + dumps(sub, name)
    return text
