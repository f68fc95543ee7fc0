"""Parsing request bodies as JSON, one way for every reader of a body.

Three readers look at a request body (the API handler, the audit record, the metrics label);
each must survive any bytes a client sends. :func:`loads` makes every way a body can fail to be
JSON a ``ValueError`` — including ``RecursionError`` from a deeply nested document, which is
not one and once escaped as a 500 from two of the readers — so callers catch one type.
"""

from __future__ import annotations

import json
from typing import Any


def loads(raw: bytes) -> Any:
    """``json.loads(raw)``; ValueError for anything that is not a JSON document."""
    try:
        return json.loads(raw)
    except RecursionError as exc:
        raise ValueError("nested too deeply") from exc
    # UnicodeDecodeError and json.JSONDecodeError are ValueErrors already.
