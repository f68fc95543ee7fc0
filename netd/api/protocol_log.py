"""aiohttp's connection-level log, without tracebacks for requests that are not valid HTTP.

aiohttp answers a request it cannot parse (a NUL byte in a header, a bad method, a line too
long) with a 400 of its own, before any middleware runs, and logs the parser's exception with a
traceback at ERROR. That is the client's mistake, not a fault of the daemon: one WARNING line
says what was refused. Every other record aiohttp logs passes through unchanged, tracebacks
included.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Mapping
from typing import Any

from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.log import server_logger


class ProtocolLog(logging.LoggerAdapter[logging.Logger]):
    """The logger handed to aiohttp's request handler (``AppRunner(..., logger=...)``)."""

    def __init__(self, logger: logging.Logger = server_logger) -> None:
        super().__init__(logger, {})

    def exception(  # type: ignore[override]
        self,
        msg: object,
        *args: object,
        exc_info: Any = True,
        stack_info: bool = False,
        stacklevel: int = 1,
        extra: Mapping[str, object] | None = None,
    ) -> None:
        """A malformed request: one line; anything else: as aiohttp logs it."""
        exc = exc_info if isinstance(exc_info, BaseException) else sys.exc_info()[1]
        if isinstance(exc, HttpProcessingError) and 400 <= exc.code < 500:
            what = " ".join(str(exc.message).split())[:200]
            self.logger.warning("refused a malformed HTTP request (%d): %s", exc.code, what)
            return
        self.logger.exception(
            msg, *args, exc_info=exc_info, stack_info=stack_info, stacklevel=stacklevel, extra=extra
        )
