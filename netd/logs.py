"""Structured daemon logging and request ids.

One request id per API request ties its log lines, its audit record and the caller together:
the aiohttp middleware from :func:`make_request_id_middleware` takes the id from an incoming
``X-Request-Id`` header (when it is a sane token) or makes a new one, keeps it in a context
variable for the request's task (``asyncio.to_thread`` copies it into worker threads), and
returns it in the ``X-Request-Id`` response header. A logging filter copies the current id into
every record, and the formatters here write ``text``, ``json`` (one object per line) or
``logfmt`` to stderr, where systemd's journald picks them up.

It does not decide what is logged (modules log with ``logging.getLogger("netd.*")``), and it
does not write the audit trail (``netd.security.audit``), which only reads the current id.
"""

from __future__ import annotations

import contextvars
import json
import logging
import re
import secrets
import sys
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any, Literal, TextIO

from aiohttp import web
from aiohttp.typedefs import Middleware

LogFormat = Literal["text", "json", "logfmt"]
LOG_FORMATS: tuple[str, ...] = ("text", "json", "logfmt")
HEADER = "X-Request-Id"
# Ids from callers end up in logs and audit lines: only plain tokens, bounded length, so a
# caller cannot inject newlines, quotes or megabytes into them.
_VALID_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:@/+=-]{0,127}$")

REQUEST_ID: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "netd_request_id", default=None
)
REQUEST_ID_KEY: web.RequestKey[str] = web.RequestKey("request_id", str)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

# LogRecord attributes that are not "extra" fields a caller passed.
_STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime", "request_id"}


def new_request_id() -> str:
    """A fresh random request id (16 hex digits)."""
    return secrets.token_hex(8)


def current_request_id() -> str | None:
    """The id of the request being handled in this context, None outside a request."""
    return REQUEST_ID.get()


def accept_request_id(value: str | None) -> str:
    """``value`` when it is an acceptable id from a caller, else a new id."""
    if value and _VALID_ID.match(value):
        return value
    return new_request_id()


def make_request_id_middleware() -> Middleware:
    """The aiohttp middleware assigning a request id (outermost, so every layer sees it)."""

    @web.middleware
    async def request_id(request: web.Request, handler: Handler) -> web.StreamResponse:
        rid = accept_request_id(request.headers.get(HEADER))
        request[REQUEST_ID_KEY] = rid
        token = REQUEST_ID.set(rid)
        try:
            response = await handler(request)
        except web.HTTPException as exc:
            exc.headers[HEADER] = rid
            raise
        finally:
            REQUEST_ID.reset(token)
        if not response.prepared:
            response.headers[HEADER] = rid
        return response

    return request_id


class RequestIdFilter(logging.Filter):
    """Sets ``record.request_id`` from the context (None outside requests); never drops."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "request_id"):
            record.request_id = REQUEST_ID.get()
        return True


def _timestamp(record: logging.LogRecord) -> str:
    moment = datetime.fromtimestamp(record.created, UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _fields(record: logging.LogRecord) -> dict[str, Any]:
    """The record as ordered key/value pairs: time, level, logger, request id, message, extras."""
    out: dict[str, Any] = {
        "time": _timestamp(record),
        "level": record.levelname.lower(),
        "logger": record.name,
    }
    rid = getattr(record, "request_id", None)
    if rid is not None:
        out["request_id"] = rid
    out["msg"] = record.getMessage()
    for key, value in vars(record).items():
        if key not in _STANDARD and not key.startswith("_"):
            out[key] = value
    return out


class JsonFormatter(logging.Formatter):
    """One JSON object per line; exceptions under ``exc``."""

    def format(self, record: logging.LogRecord) -> str:
        data = _fields(record)
        if record.exc_info:
            data["exc"] = self.formatException(record.exc_info)
        return json.dumps(data, default=str, ensure_ascii=False)


def logfmt_value(value: Any) -> str:
    """A value as logfmt writes it: bare when it is a plain token, else double-quoted."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    text = str(value)
    if text and not any(c in text for c in ' ="\\\n\t') and text.isprintable():
        return text
    escaped = text.replace("\\", "\\\\").replace('"', '\\"')
    escaped = escaped.replace("\n", "\\n").replace("\t", "\\t")
    return '"' + escaped + '"'


class LogfmtFormatter(logging.Formatter):
    """``key=value`` pairs on one line (Heroku/Prometheus logfmt); exceptions under ``exc``."""

    def format(self, record: logging.LogRecord) -> str:
        data = _fields(record)
        if record.exc_info:
            data["exc"] = self.formatException(record.exc_info)
        return " ".join(f"{key}={logfmt_value(value)}" for key, value in data.items())


class TextFormatter(logging.Formatter):
    """The human format, with ``[request id]`` after the logger name inside requests."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s%(rid)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        rid = getattr(record, "request_id", None)
        record.rid = f" [{rid}]" if rid else ""
        return super().format(record)


def make_formatter(fmt: str) -> logging.Formatter:
    """The formatter for a ``log_format`` value (ValueError naming it when unknown)."""
    if fmt == "json":
        return JsonFormatter()
    if fmt == "logfmt":
        return LogfmtFormatter()
    if fmt == "text":
        return TextFormatter()
    raise ValueError(f"log_format {fmt!r}: must be one of {', '.join(LOG_FORMATS)}")


def setup_logging(level: str, fmt: str = "text", stream: TextIO | None = None) -> logging.Handler:
    """Route the root logger to ``stream`` (stderr) in ``fmt`` at ``level``; returns the handler.

    Replaces handlers installed by an earlier call, so calling it twice does not log twice.
    """
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(make_formatter(fmt))
    handler.addFilter(RequestIdFilter())
    handler.set_name("netd")
    root = logging.getLogger()
    for old in [h for h in root.handlers if h.get_name() == "netd"]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    return handler
