"""The DNS worker's log channel (netd.dns.logchan): worker handler and daemon pump."""

from __future__ import annotations

import json
import logging
import os

import pytest
from netns_fixtures import wait_for

from netd.dns.logchan import MAX_LINE, PUMP_RATE, ChannelHandler, LogPump, encode


def record(msg: str, level: int = logging.WARNING, *args: object) -> logging.LogRecord:
    return logging.makeLogRecord(
        {"name": "netd.dns.worker", "levelno": level, "levelname": "X", "msg": msg, "args": args}
    )


def read_lines(fd: int) -> list[dict[str, object]]:
    os.set_blocking(fd, False)
    data = b""
    try:
        while chunk := os.read(fd, 65536):
            data += chunk
    except BlockingIOError:
        pass
    return [json.loads(line) for line in data.splitlines()]


def test_lines_are_json_and_never_longer_than_a_pipe_write() -> None:
    line = encode(record("x" * 100000))
    assert len(line) <= MAX_LINE and line.endswith(b"\n")
    assert json.loads(line)["msg"].endswith("(100000 characters)")
    assert json.loads(encode(record("a\nb %d", logging.ERROR, 5))) == {
        "level": logging.ERROR, "logger": "netd.dns.worker", "msg": "a\nb 5",
    }  # fmt: skip


def test_without_a_daemon_lines_wait_and_the_oldest_are_counted_as_dropped() -> None:
    h = ChannelHandler(capacity=3)
    for i in range(5):
        h.handle(record(f"line {i}"))
    assert h.dropped == 2
    r, w = os.pipe()
    try:
        h.attach(w)
        got = [str(d["msg"]) for d in read_lines(r)]
        assert got == [
            "2 log lines were dropped while no daemon was reading", "line 2", "line 3", "line 4",
        ]  # fmt: skip
        assert h.dropped == 0 and h.dropped_total == 2
    finally:
        os.close(r)
        h.close()
        os.close(w)


def test_a_daemon_that_goes_away_is_survived_and_the_next_gets_the_backlog() -> None:
    r1, w1 = os.pipe()
    h = ChannelHandler(w1)
    h.handle(record("to the first"))
    assert [d["msg"] for d in read_lines(r1)] == ["to the first"]
    os.close(r1)  # the daemon exits: EPIPE from now on (Python ignores SIGPIPE)
    h.handle(record("while nobody reads"))
    assert h.fd is None and len(h.buffer) == 1
    r2, w2 = os.pipe()
    try:
        h.attach(w2)
        h.handle(record("to the second"))
        assert [d["msg"] for d in read_lines(r2)] == ["while nobody reads", "to the second"]
    finally:
        os.close(r2)
        os.close(w2)


def test_a_full_pipe_keeps_lines_until_flush() -> None:
    r, w = os.pipe()
    h = ChannelHandler(w, capacity=10000)
    try:
        n = 0
        while not h.buffer:
            h.handle(record("y" * 1000))
            n += 1
        waiting = len(h.buffer)
        got = read_lines(r)
        h.flush()
        got += read_lines(r)
        assert len(got) == n and not h.buffer and waiting >= 1
    finally:
        os.close(r)
        os.close(w)


@pytest.fixture
def pump() -> tuple[LogPump, list[logging.LogRecord]]:
    logger = logging.getLogger("test.dns.pump")
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    got: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, rec: logging.LogRecord) -> None:
            got.append(rec)

    logger.handlers = [Keep()]
    return LogPump(logger), got


def test_pump_logs_in_the_daemon_and_escapes_what_the_worker_wrote(
    pump: tuple[LogPump, list[logging.LogRecord]],
) -> None:
    p, got = pump
    r, w = p.open()
    p.watch(r, 4242)
    os.write(w, encode(record("fine")))
    os.write(w, json.dumps({"level": 99, "msg": "fake\n2024 ERROR netd: owned"}).encode() + b"\n")
    os.write(w, b"not json \x1b[31m\n")
    os.close(w)  # the worker exits: EOF closes the read end
    wait_for("three lines", lambda: len(got) >= 3, 5)
    p.stop()
    msgs = [rec.getMessage() for rec in got]
    assert msgs[0] == "DNS worker 4242: fine"
    assert "\n" not in msgs[1] and msgs[1].endswith("fake\\n2024 ERROR netd: owned")
    assert got[1].levelno == logging.CRITICAL  # clamped to a known level
    assert "\x1b" not in msgs[2] and "unparsable" in msgs[2]
    assert all(getattr(rec, "dns_worker", None) == 4242 for rec in got)


def test_pump_limits_a_flooding_worker(pump: tuple[LogPump, list[logging.LogRecord]]) -> None:
    p, got = pump
    r, w = p.open()
    p.watch(r, 7)
    for i in range(1000):
        os.write(w, encode(record(f"spam {i}")))
    os.close(w)
    wait_for("the summary", lambda: any("not logged" in x.getMessage() for x in got), 5)
    p.stop()
    spam = [x for x in got if "spam" in x.getMessage()]
    assert len(spam) <= PUMP_RATE * 4 + PUMP_RATE  # the burst, plus what refilled meanwhile
