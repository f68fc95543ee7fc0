"""The compose error: an InvalidInput that points at a file, a line and a key path.

Messages read ``compose.yaml:12: services.web.networks.front.ipv4_address: "10.0.0.300" is not
an IPv4 address`` — file and line (when the YAML parser gave one), the dotted key path, the
value as written (JSON-quoted) and the rule it breaks. Nothing is changed when one is raised
during loading or planning.
"""

from __future__ import annotations

import json
from typing import Any

from ..errors import InvalidInput, NetdError

_NO_VALUE = object()


def _show(value: Any) -> str:
    try:
        return json.dumps(value, default=str)
    except (TypeError, ValueError):
        return repr(value)


class ComposeError(InvalidInput):
    """A compose file is invalid (or does not fit the daemon's state); names file:line and key."""

    def __init__(
        self, where: tuple[str, int] | None, path: str, value: Any = _NO_VALUE, rule: str = ""
    ) -> None:
        prefix = ""
        if where is not None:
            prefix = f"{where[0]}:{where[1]}: " if where[1] else f"{where[0]}: "
        shown = "" if value is _NO_VALUE or value is None else _show(value) + " "
        head = f"{path}: " if path else ""
        message = f"{prefix}{head}{shown}{rule}"
        NetdError.__init__(
            self, message, field=path or None, value=None if value is _NO_VALUE else value
        )
        self.rule = rule
        self.where = where
        self.path = path
