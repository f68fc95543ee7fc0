"""The optional external authorisation hook, in the spirit of Docker's AuthZ plugins.

``policy.authz_command`` names a program run (as root, by the daemon) for every mutating request
that the policy already allows. It gets one JSON document on stdin::

    {"caller": {"uid": 1000, "gid": 1000, "pid": 4242, "cmdline": "netd network create web"},
     "method": "POST", "path": "/v1/networks", "route": "/v1/networks",
     "body": {"name": "web"}}

and must print ``{"allow": true|false, "reason": "..."}`` on stdout within the timeout. It can
only narrow the policy, never widen it. It fails closed: a timeout, a non-zero exit, output that
is not that JSON object, or a program that cannot be started all deny the request.

``body`` is the request body as sent, parsed as JSON when it is JSON (else a string). No request
field carries a secret today, so nothing is removed; a future secret field must be stripped in
:func:`hook_document`.

This module does not decide the policy and does not audit (``policy``, ``middleware``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
from collections.abc import Sequence
from typing import Any

from ..model import Caller
from .policy import Decision

log = logging.getLogger("netd.security.authz_hook")
MAX_OUTPUT = 64 * 1024
# The hook gets a minimal environment: nothing of the daemon's leaks into it.
HOOK_ENV = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8"}


def hook_document(
    caller: Caller, cmdline: str | None, method: str, path: str, route: str, body: Any
) -> dict[str, Any]:
    """The JSON document given to the hook on stdin."""
    return {
        "caller": {"uid": caller.uid, "gid": caller.gid, "pid": caller.pid, "cmdline": cmdline},
        "method": method,
        "path": path,
        "route": route,
        "body": body,
    }


def parse_answer(raw: bytes) -> Decision:
    """The hook's stdout as a Decision; anything but ``{"allow": bool, ...}`` denies."""
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        return Decision(False, f"authz hook printed no JSON: {raw[:80]!r}")
    if not isinstance(data, dict) or not isinstance(data.get("allow"), bool):
        return Decision(False, f"authz hook answer lacks a boolean 'allow': {raw[:80]!r}")
    reason = data.get("reason")
    reason = reason if isinstance(reason, str) and reason else "no reason given"
    return Decision(data["allow"], f"authz hook: {reason}")


class AuthzHook:
    """Runs the hook command once per request (a fresh process each time; fail closed)."""

    def __init__(self, argv: Sequence[str], timeout: float = 2.0) -> None:
        if not argv:
            raise ValueError("authz hook: empty command")
        self.argv = list(argv)
        self.timeout = timeout

    async def check(self, document: dict[str, Any]) -> Decision:
        """Ask the hook about one request described by ``document`` (see :func:`hook_document`)."""
        stdin = json.dumps(document).encode()
        try:
            proc = await asyncio.create_subprocess_exec(
                *self.argv,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                env=HOOK_ENV,
                cwd="/",
                start_new_session=True,
            )
        except OSError as exc:
            log.error("authz hook %s could not start: %s", self.argv[0], exc)
            return Decision(False, f"authz hook {self.argv[0]!r} could not start: {exc.strerror}")
        try:
            out, err = await asyncio.wait_for(proc.communicate(stdin), self.timeout)
        except TimeoutError:
            await _kill(proc)
            log.warning("authz hook %s timed out after %g s", self.argv[0], self.timeout)
            return Decision(False, f"authz hook timed out after {self.timeout:g} s")
        except BaseException:
            await _kill(proc)
            raise
        if proc.returncode != 0:
            detail = err.decode("utf-8", "replace").strip()[:200]
            log.warning("authz hook %s exited %s: %s", self.argv[0], proc.returncode, detail)
            return Decision(False, f"authz hook exited {proc.returncode}: {detail}")
        if len(out) > MAX_OUTPUT:
            return Decision(False, f"authz hook printed more than {MAX_OUTPUT} bytes")
        return parse_answer(out)


async def _kill(proc: asyncio.subprocess.Process) -> None:
    """Kill the hook (our own child, by its pid's process group) and reap it."""
    if proc.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, 9)
    with contextlib.suppress(Exception):
        await asyncio.wait_for(proc.wait(), 5)
