"""One JSON parser for request bodies: every non-JSON body is a ValueError."""

from __future__ import annotations

import pytest

from netd.api.body import loads


@pytest.mark.parametrize(
    "raw",
    [b"{not json", b"\xff\xfe", b"[" * 100_000 + b"]" * 100_000, b"", b"1e999999x"],
    ids=["syntax", "not-utf8", "deep", "empty", "trailing"],
)
def test_every_bad_body_is_a_value_error(raw: bytes) -> None:
    with pytest.raises(ValueError):
        loads(raw)


def test_json_parses() -> None:
    assert loads(b'{"command": "ADD", "n": [1, 2]}') == {"command": "ADD", "n": [1, 2]}
