"""Progress of long CLI operations (``compose up`` with many services): a bar or plain lines.

The operation itself (``netd.compose.apply``) reports each action through its logger as it
happens; :func:`live_actions` listens on that logger for the operation's duration. On a terminal
it draws a ``rich`` progress bar over the work units (networks, then sandboxes) with each action
printed above it; otherwise (pipes, logs, CI) it prints each action as a plain line the moment
it happens, so scripts see the same text they always did, just sooner.

It does not know what the actions mean: a line advances the bar when it names a unit not seen
before (the operation works through units in order).
"""

from __future__ import annotations

import contextlib
import logging
import re
import sys
from collections.abc import Iterator
from typing import Any, TextIO

import click

_SPLIT = re.compile(r"[\s/:]+")


def unit_of(line: str, units: list[str]) -> str | None:
    """The first work unit named in ``line`` (as a word or a path component), if any."""
    known = set(units)
    for word in _SPLIT.split(line):
        if word in known:
            return word
    return None


class ActionLines(logging.Handler):
    """Receives the operation's action lines; prints them and advances the progress."""

    def __init__(self, units: list[str], stream: TextIO, tty: bool, title: str) -> None:
        super().__init__(logging.INFO)
        self.units = units
        self.stream = stream
        self.seen: list[str] = []
        self.lines: list[str] = []
        self._progress: Any = None
        self._task: Any = None
        if tty:
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

            self._progress = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                console=Console(file=stream),
                transient=True,
            )
            self._task = self._progress.add_task(title, total=max(len(units), 1))

    def start(self) -> None:
        """Draw the bar (terminal only)."""
        if self._progress is not None:
            self._progress.start()

    def finish(self) -> None:
        """Fill the bar (units with nothing to do send no line) and take it down."""
        if self._progress is not None:
            self._progress.update(self._task, completed=max(len(self.units), 1))
            self._progress.stop()

    def emit(self, record: logging.LogRecord) -> None:
        line = record.getMessage()
        self.lines.append(line)
        unit = unit_of(line, self.units)
        if unit is not None and unit not in self.seen:
            self.seen.append(unit)
        if self._progress is None:
            click.echo(line, file=self.stream)
            return
        self._progress.console.print(line, markup=False, highlight=False)
        self._progress.update(self._task, completed=max(len(self.seen) - 1, 0))


@contextlib.contextmanager
def live_actions(
    logger: str, units: list[str], title: str, stream: TextIO | None = None
) -> Iterator[ActionLines]:
    """Show ``logger``'s INFO lines as they happen, with a bar when ``stream`` is a terminal."""
    out = stream if stream is not None else sys.stdout
    tty = out.isatty()
    handler = ActionLines(units, out, tty, title)
    log = logging.getLogger(logger)
    saved = (log.level, log.propagate)
    # The CLI has no log handlers of its own: the lines come here only, not to stderr too.
    log.setLevel(logging.INFO)
    log.propagate = False
    log.addHandler(handler)
    try:
        handler.start()
        yield handler
    finally:
        handler.finish()
        log.removeHandler(handler)
        log.setLevel(saved[0])
        log.propagate = saved[1]
