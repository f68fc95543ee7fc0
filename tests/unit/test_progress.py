"""Progress display of long CLI operations: live plain lines, or a bar on a terminal."""

from __future__ import annotations

import io
import logging

from netd.cli.progress import live_actions, unit_of

LOGGER = "netd.test.progress"
UNITS = ["p_front", "p-web-1", "p-web-2"]
ACTIONS = [
    "created network p_front",
    "created sandbox p-web-1",
    "connected p-web-1 to p_front: 10.89.0.2/24",
    "wrote /etc/netns/p-web-1/resolv.conf and hosts",
    "created sandbox p-web-2",
]


class Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_unit_of_finds_words_and_path_components() -> None:
    assert unit_of("connected p-web-1 to p_front: x", UNITS) == "p-web-1"
    assert unit_of("wrote /etc/netns/p-web-2/hosts", UNITS) == "p-web-2"
    assert unit_of("created network p_frontier", UNITS) is None


def test_plain_lines_appear_as_they_happen_and_logger_is_restored() -> None:
    out = io.StringIO()
    log = logging.getLogger(LOGGER)
    before = (log.level, log.propagate, list(log.handlers))
    with live_actions(LOGGER, UNITS, "project p", out) as shown:
        for n, line in enumerate(ACTIONS, 1):
            log.info("%s", line)
            assert out.getvalue().splitlines() == ACTIONS[:n]  # not buffered to the end
        assert shown.seen == UNITS
    assert out.getvalue() == "".join(f"{a}\n" for a in ACTIONS)  # no bar when not a TTY
    assert (log.level, log.propagate, list(log.handlers)) == before


def test_terminal_gets_a_bar_and_keeps_the_lines() -> None:
    out = Tty()
    log = logging.getLogger(LOGGER)
    with live_actions(LOGGER, UNITS, "project p", out) as shown:
        assert shown._progress is not None
        for line in ACTIONS:
            log.info("%s", line)
        task = shown._progress.tasks[0]
        assert (task.completed, task.total) == (2, 3)  # the third unit is still in progress
    text = out.getvalue()
    for line in ACTIONS:
        assert line in text
    assert "\x1b[" in text  # drawn with terminal control sequences
    assert task.completed == 3  # filled at the end
