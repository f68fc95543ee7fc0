"""The API's request limits: per-caller concurrency cap and per-request time limit.

Real aiohttp servers on loopback (aiohttp.test_utils) inside ``asyncio.run``; the caller is set
by a stand-in for server.py's middleware from an ``X-Uid`` header, except where the real one is
used to check the ordering.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from netd.api import server
from netd.api.keys import CALLER
from netd.api.limits import make_limits_middleware
from netd.errors import ConfigError, InvalidInput
from netd.model import Caller

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
Client = TestClient[web.Request, web.Application]


@web.middleware
async def fake_caller(request: web.Request, handler: Handler) -> web.StreamResponse:
    uid = request.headers.get("X-Uid")
    request[CALLER] = Caller(uid=int(uid), gid=int(uid), pid=1) if uid else None
    return await handler(request)


class Gate:
    """A handler that holds every request until released, counting who got in."""

    def __init__(self) -> None:
        self.open = asyncio.Event()
        self.entered: list[str | None] = []
        self.finished = 0

    async def handle(self, request: web.Request) -> web.Response:
        self.entered.append(request.headers.get("X-Uid"))
        await self.open.wait()
        self.finished += 1
        return web.json_response({"ok": True})


def run(app: web.Application, body: Callable[[Client], Awaitable[None]]) -> None:
    async def main() -> None:
        async with TestClient(TestServer(app)) as client:
            await body(client)

    asyncio.run(main())


async def wait_until(cond: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not cond():
        assert asyncio.get_running_loop().time() < deadline, "condition not reached"
        await asyncio.sleep(0.01)


def test_cap_is_per_caller_and_frees_slots() -> None:
    gate = Gate()
    app = web.Application(middlewares=[fake_caller, make_limits_middleware(2, 30)])
    app.router.add_get("/x", gate.handle)

    async def body(client: Client) -> None:
        first = [asyncio.ensure_future(client.get("/x", headers={"X-Uid": "1000"})) for _ in "ab"]
        await wait_until(lambda: len(gate.entered) == 2)
        over = await client.get("/x", headers={"X-Uid": "1000"})
        assert over.status == 503
        assert over.headers["Retry-After"] == "1"
        err = (await over.json())["error"]
        assert err["code"] == "too_many_requests"
        assert err["field"] == "caller"
        assert err["value"] == 1000
        assert "1000" in err["message"] and "2 requests" in err["message"]
        # Another user is not held back by uid 1000's flood.
        other = asyncio.ensure_future(client.get("/x", headers={"X-Uid": "1001"}))
        await wait_until(lambda: len(gate.entered) == 3)
        assert gate.entered[2] == "1001"
        gate.open.set()
        for fut in [*first, other]:
            resp = await fut
            assert resp.status == 200
        again = await client.get("/x", headers={"X-Uid": "1000"})
        assert again.status == 200
        assert gate.finished == 4

    run(app, body)


def test_timeout_answers_503_and_lets_the_operation_finish() -> None:
    done: list[str] = []

    async def slow(request: web.Request) -> web.Response:
        await asyncio.sleep(0.4)
        done.append(request.path)  # reached only if not cancelled
        return web.json_response({})

    app = web.Application(middlewares=[fake_caller, make_limits_middleware(1, 0.1)])
    app.router.add_post("/slow", slow)

    async def body(client: Client) -> None:
        t0 = asyncio.get_running_loop().time()
        resp = await client.post("/slow", headers={"X-Uid": "7"})
        elapsed = asyncio.get_running_loop().time() - t0
        assert resp.status == 503
        err = (await resp.json())["error"]
        assert err["code"] == "timeout"
        assert "POST /slow timed out after 0.1 s" in err["message"]
        assert elapsed < 0.35
        # The abandoned operation still holds uid 7's only slot until it ends.
        busy = await client.post("/slow", headers={"X-Uid": "7"})
        assert (await busy.json())["error"]["code"] == "too_many_requests"
        await wait_until(lambda: done == ["/slow"])
        await asyncio.sleep(0.05)
        resp = await client.post("/slow", headers={"X-Uid": "7"})
        assert (await resp.json())["error"]["code"] == "timeout"  # admitted again
        await wait_until(lambda: len(done) == 2)

    run(app, body)
    assert done == ["/slow", "/slow"]


def test_behind_the_real_caller_middleware_errors_keep_their_shape() -> None:
    calls: list[int] = []

    async def bad(request: web.Request) -> web.Response:
        calls.append(1)
        raise InvalidInput("netns", "/proc/1/ns/net", "is the host")

    async def ok(request: web.Request) -> web.Response:
        return web.json_response({"caller": request[CALLER]})

    app = web.Application(middlewares=[server.middleware, make_limits_middleware(1, 5)])
    app.router.add_post("/bad", bad)
    app.router.add_get("/ok", ok)

    async def body(client: Client) -> None:
        for _ in range(3):  # the slot is released after an error, or the 2nd would be refused
            resp = await client.post("/bad")
            assert resp.status == 400
            assert (await resp.json())["error"]["field"] == "netns"
        resp = await client.get("/ok")
        assert resp.status == 200
        assert await resp.json() == {"caller": None}  # TCP: no SO_PEERCRED, one shared pool

    run(app, body)
    assert len(calls) == 3


def test_misordered_middlewares_fail_loudly() -> None:
    async def ok(request: web.Request) -> web.Response:
        return web.json_response({})

    app = web.Application(middlewares=[make_limits_middleware()])
    app.router.add_get("/ok", ok)

    async def body(client: Client) -> None:
        resp = await client.get("/ok")
        assert resp.status == 500

    run(app, body)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"max_concurrent_per_caller": 0}, "max_concurrent_per_caller"),
        ({"max_concurrent_per_caller": True}, "max_concurrent_per_caller"),
        ({"request_timeout": 0}, "request_timeout"),
        ({"request_timeout": float("nan")}, "request_timeout"),
    ],
)
def test_bad_settings_are_refused(kwargs: dict[str, Any], field: str) -> None:
    with pytest.raises(ConfigError) as exc:
        make_limits_middleware(**kwargs)
    assert exc.value.field == field


def test_keepalive_timeout_cuts_a_client_trickling_its_headers(tmp_path: Any) -> None:
    # The setting docs/security.md recommends for the daemon's AppRunner, at a test scale.
    async def ok(request: web.Request) -> web.Response:
        return web.json_response({})

    async def main() -> float:
        app = web.Application()
        app.router.add_get("/x", ok)
        runner = web.AppRunner(app, access_log=None, keepalive_timeout=0.5)
        await runner.setup()
        path = str(tmp_path / "s.sock")
        await web.UnixSite(runner, path).start()
        try:
            reader, writer = await asyncio.open_unix_connection(path)
            t0 = asyncio.get_running_loop().time()
            writer.write(b"GET /x HTTP/1.1\r\n")
            for _ in range(50):  # one header byte every 0.1 s: 5 s if never cut
                try:
                    writer.write(b"X")
                    await writer.drain()
                except ConnectionError:
                    break
                with contextlib.suppress(TimeoutError):
                    if await asyncio.wait_for(reader.read(1), 0.1) == b"":
                        break  # EOF: the server closed the connection
            elapsed = asyncio.get_running_loop().time() - t0
            writer.close()
            return elapsed
        finally:
            await runner.cleanup()

    elapsed = asyncio.run(main())
    assert elapsed < 2.0
