"""Structured logs and request ids: formatters, id acceptance, and one request end to end."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import os
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from service_kit import make_service

from netd.api.server import CALLER, make_app
from netd.logs import (
    REQUEST_ID,
    accept_request_id,
    logfmt_value,
    make_formatter,
    setup_logging,
)
from netd.model import Caller
from netd.security.audit import AuditLog
from netd.security.middleware import make_auth_middleware
from netd.security.policy import Policy, PolicyConfig


@pytest.fixture
def captured() -> Any:
    """The root logger writing JSON into a buffer; restored afterwards."""
    root = logging.getLogger()
    saved = (root.handlers[:], root.level)
    buf = io.StringIO()
    handler = setup_logging("info", "json", buf)
    yield buf
    root.removeHandler(handler)
    root.handlers[:] = saved[0]
    root.setLevel(saved[1])


def emit(fmt: str, msg: str, *args: Any, rid: str | None = None, **extra: Any) -> str:
    record = logging.LogRecord("netd.test", logging.WARNING, __file__, 1, msg, args, None)
    for key, value in extra.items():
        setattr(record, key, value)
    record.request_id = rid
    return make_formatter(fmt).format(record)


def test_json_lines_carry_request_id_and_extras() -> None:
    line = emit("json", "attached %s", "c1", rid="abc123", network="web")
    data = json.loads(line)
    assert data["level"] == "warning" and data["logger"] == "netd.test"
    assert data["msg"] == "attached c1" and data["request_id"] == "abc123"
    assert data["network"] == "web" and data["time"].endswith("Z")
    assert "request_id" not in json.loads(emit("json", "outside"))


def test_logfmt_quotes_what_needs_quoting() -> None:
    line = emit("logfmt", 'bad "x"\nnext', rid="r-1")
    assert line.split(" ")[1:4] == ["level=warning", "logger=netd.test", "request_id=r-1"]
    assert line.endswith('msg="bad \\"x\\"\\nnext"')
    assert "\n" not in line
    assert logfmt_value("plain") == "plain" and logfmt_value("a b") == '"a b"'
    assert logfmt_value(None) == "" and logfmt_value(True) == "true"


def test_text_format_and_unknown_format() -> None:
    assert " netd.test [r9]: hello" in emit("text", "hello", rid="r9")
    assert " netd.test: hello" in emit("text", "hello")
    with pytest.raises(ValueError, match="log_format 'xml'"):
        make_formatter("xml")


def test_incoming_ids_are_honoured_only_when_plain_tokens() -> None:
    assert accept_request_id("cri-0f3a.7") == "cri-0f3a.7"
    for bad in (None, "", "a b", "x\ny", "-leading", "é", "a" * 129):
        made = accept_request_id(bad)
        assert made != bad and len(made) == 16 and int(made, 16) >= 0


def test_setup_twice_does_not_duplicate(captured: io.StringIO) -> None:
    setup_logging("info", "json", captured)
    logging.getLogger("netd.x").info("once")
    assert captured.getvalue().count('"once"') == 1


ROOT = Caller(0, 0, os.getpid())


def test_request_id_ties_response_audit_and_log_lines(
    tmp_path: Path, captured: io.StringIO
) -> None:
    audit = AuditLog(tmp_path / "audit.log").start()
    service = make_service(tmp_path)
    app = make_app(service)

    @web.middleware
    async def as_root(request: web.Request, handler: Any) -> web.StreamResponse:
        request[CALLER] = ROOT  # TCP test client: no SO_PEERCRED
        return await handler(request)

    app.middlewares.append(as_root)
    app.middlewares.append(make_auth_middleware(Policy(PolicyConfig()), audit))
    app.on_startup.append(lambda _: service.start())

    async def scenario() -> list[tuple[int, str]]:
        out = []
        async with TestClient(TestServer(app)) as client:
            body = {"name": "web", "subnets": [{"subnet": "10.90.0.0/24"}]}
            for headers in ({"X-Request-Id": "cni-add-42"}, {}, {"X-Request-Id": "bad id"}):
                resp = await client.post("/v1/networks", json=body, headers=headers)
                out.append((resp.status, resp.headers["X-Request-Id"]))
            resp = await client.get("/v1/nope")
            out.append((resp.status, resp.headers["X-Request-Id"]))
        return out

    answers = asyncio.run(scenario())
    audit.close()
    assert REQUEST_ID.get() is None  # reset after each request
    assert answers[0] == (201, "cni-add-42")
    assert answers[1][0] == 409 and answers[2][0] == 409
    ids = [rid for _, rid in answers]
    assert len(set(ids)) == 4 and ids[2] != "bad id"  # fresh ids, errors included
    records = [json.loads(line) for line in (tmp_path / "audit.log").read_text().splitlines()]
    assert [r["request_id"] for r in records] == ids[:3]
    logs = [json.loads(line) for line in captured.getvalue().splitlines()]
    created = [entry for entry in logs if entry.get("request_id") == "cni-add-42"]
    assert created and any("web" in entry["msg"] for entry in created), logs
    startup = [entry for entry in logs if "ready" in entry["msg"]]
    assert startup and all("request_id" not in entry for entry in startup)
