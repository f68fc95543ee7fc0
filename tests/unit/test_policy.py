"""Authorisation decisions, the /proc group reader, and the external hook (no root needed)."""

from __future__ import annotations

import asyncio
import os
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from netd.model import Caller
from netd.security.authz_hook import AuthzHook, hook_document, parse_answer
from netd.security.policy import Decision, Policy, PolicyConfig, is_mutation
from netd.security.procinfo import caller_groups, proc_groups, read_cmdline

NETD_GID = 998
ROOT = Caller(uid=0, gid=0, pid=1)
ALICE = Caller(uid=1000, gid=1000, pid=4242)  # in group netd via /proc
BOB = Caller(uid=1001, gid=1001, pid=4343)  # in no special group


def fake_proc(tmp_path: Path, caller: Caller, groups: str, euid: int | None = None) -> Path:
    """A /proc tree with one status file, as the kernel formats it."""
    euid = caller.uid if euid is None else euid
    d = tmp_path / "proc" / str(caller.pid)
    d.mkdir(parents=True)
    (d / "status").write_text(
        f"Name:\tnetd\nUmask:\t0022\nState:\tS (sleeping)\nPid:\t{caller.pid}\n"
        f"Uid:\t{caller.uid}\t{euid}\t{caller.uid}\t{euid}\n"
        f"Gid:\t{caller.gid}\t{caller.gid}\t{caller.gid}\t{caller.gid}\n"
        f"FDSize:\t64\nGroups:\t{groups}\n"
    )
    (d / "cmdline").write_bytes(b"netd\0network\0create\0web\0")
    return tmp_path / "proc"


def policy(tmp_path: Path, **cfg: object) -> Policy:
    proc = fake_proc(tmp_path, ALICE, f"24 {NETD_GID} 1000 ")
    fake_proc(tmp_path, BOB, "24 1001")
    return Policy(
        PolicyConfig(**cfg),  # type: ignore[arg-type]
        groups_of=lambda c: caller_groups(c, proc_root=proc),
        gid_of=lambda name: NETD_GID if name == "netd" else None,
    )


def test_root_may_do_everything(tmp_path: Path) -> None:
    p = policy(tmp_path, others="none")
    for method, route in [
        ("GET", "/v1/networks"),
        ("POST", "/v1/networks"),
        ("DELETE", "/v1/networks/{name}"),
        ("POST", "/v1/admin/something"),
    ]:
        d = p.authorize(ROOT, method, route)
        assert d.allowed and d.role == "admin" and d.reason == "uid 0 is root"


def test_listed_admin_may_do_everything(tmp_path: Path) -> None:
    d = policy(tmp_path, admins=[1001]).authorize(BOB, "POST", "/v1/admin/x")
    assert d.allowed and d.role == "admin" and "policy.admins" in d.reason


def test_group_member_manages_networks_and_endpoints(tmp_path: Path) -> None:
    p = policy(tmp_path)
    for method, route in [
        ("POST", "/v1/networks"),
        ("POST", "/v1/networks/prune"),
        ("DELETE", "/v1/networks/{name}"),
        ("POST", "/v1/networks/{name}/connect"),
        ("POST", "/v1/networks/{name}/disconnect"),
        ("POST", "/v1/cni"),
        ("GET", "/v1/status"),
    ]:
        d = p.authorize(ALICE, method, route, "ADD" if route == "/v1/cni" else None)
        assert d.allowed, (method, route, d)
        assert d.role == "manager"
        assert d.reason == "uid 1000 is in group 'netd' (gid 998)"


def test_group_member_may_not_use_admin_routes(tmp_path: Path) -> None:
    d = policy(tmp_path).authorize(ALICE, "POST", "/v1/recover")
    assert not d.allowed and d.role == "manager"
    assert "only root and policy.admins" in d.reason
    # a prefix look-alike is not a network route
    assert not policy(tmp_path / "b").authorize(ALICE, "POST", "/v1/networksx").allowed


def test_only_admins_read_the_audit_trail(tmp_path: Path) -> None:
    """Its files are root-only; through the API it stays so (it holds callers' command lines)."""
    p = policy(tmp_path, admins=[1001], rootless_users=[1002])
    assert p.authorize(ROOT, "GET", "/v1/audit").allowed
    assert p.authorize(BOB, "GET", "/v1/audit").allowed  # in policy.admins
    d = p.authorize(ALICE, "GET", "/v1/audit")
    assert not d.allowed and d.role == "manager"
    assert d.reason == (
        "uid 1000 is in group 'netd' (gid 998); only root and policy.admins may read /v1/audit"
    )
    carol = Caller(uid=1002, gid=1002, pid=4444)
    fake_proc(tmp_path, carol, "1002")
    assert not p.authorize(carol, "GET", "/v1/audit").allowed
    d = policy(tmp_path / "o").authorize(Caller(uid=1003, gid=1003, pid=4545), "GET", "/v1/audit")
    assert not d.allowed and d.role == "other"


def test_others_read_only_by_default(tmp_path: Path) -> None:
    p = policy(tmp_path)
    assert p.authorize(BOB, "GET", "/v1/networks").allowed
    assert p.authorize(BOB, "GET", "/v1/networks/{name}").allowed
    d = p.authorize(BOB, "POST", "/v1/networks")
    assert not d.allowed and d.role == "other"
    assert d.reason == (
        "uid 1001 is not root, not in policy.admins and not in group 'netd'; "
        "others may only read (policy.others = 'read')"
    )
    assert not p.authorize(BOB, "DELETE", "/v1/networks/{name}").allowed
    assert not p.authorize(BOB, "POST", "/v1/cni", "ADD").allowed
    assert not p.authorize(BOB, "POST", "/v1/cni", "CHECK").allowed
    assert p.authorize(BOB, "POST", "/v1/cni", "VERSION").allowed
    assert p.authorize(BOB, "POST", "/v1/cni", "STATUS").allowed


def test_others_none(tmp_path: Path) -> None:
    p = policy(tmp_path, others="none")
    d = p.authorize(BOB, "GET", "/v1/networks")
    assert not d.allowed and d.reason.endswith("policy.others is 'none'")
    assert not p.authorize(BOB, "POST", "/v1/cni", "STATUS").allowed
    assert p.authorize(ALICE, "GET", "/v1/networks").allowed  # managers still read


def test_no_credentials_is_denied(tmp_path: Path) -> None:
    d = policy(tmp_path).authorize(None, "GET", "/v1/status")
    assert not d.allowed and "not a Unix socket" in d.reason


def test_missing_manage_group_makes_nobody_a_manager(tmp_path: Path) -> None:
    p = policy(tmp_path, manage_group="nosuchgroup")
    assert not p.authorize(ALICE, "POST", "/v1/networks").allowed


def test_is_mutation() -> None:
    assert not is_mutation("GET", "/v1/networks")
    assert not is_mutation("head", "/v1/status")
    assert is_mutation("POST", "/v1/networks")
    assert is_mutation("PUT", "/v1/anything")
    assert is_mutation("POST", "/v1/cni", None)  # malformed body: treated as a mutation
    assert not is_mutation("POST", "/v1/cni", "version")
    for verb in ("ADD", "DEL", "CHECK", "GC"):
        assert is_mutation("POST", "/v1/cni", verb)


def test_proc_groups_checks_the_effective_uid(tmp_path: Path) -> None:
    proc = fake_proc(tmp_path, ALICE, f"{NETD_GID} 5", euid=1234)  # pid reused by uid 1234
    assert proc_groups(ALICE, proc_root=proc) is None
    # falls back to the user database (uid 1000 may not exist here: then just the gid)
    assert ALICE.gid in caller_groups(ALICE, proc_root=proc)
    assert NETD_GID not in caller_groups(ALICE, proc_root=proc)


def test_proc_groups_of_gone_process(tmp_path: Path) -> None:
    assert proc_groups(Caller(1000, 1000, 999999), proc_root=tmp_path) is None
    assert read_cmdline(999999, proc_root=tmp_path) is None


def test_proc_groups_reads_this_process() -> None:
    me = Caller(uid=os.geteuid(), gid=os.getegid(), pid=os.getpid())
    assert proc_groups(me) == frozenset(os.getgroups())


def test_read_cmdline(tmp_path: Path) -> None:
    proc = fake_proc(tmp_path, ALICE, "")
    assert read_cmdline(ALICE.pid, proc_root=proc) == "netd network create web"
    (proc / str(ALICE.pid) / "cmdline").write_bytes(b"x\0" * 1000)
    got = read_cmdline(ALICE.pid, proc_root=proc, limit=10)
    assert got == "x x x x x ..."
    assert read_cmdline(os.getpid()) is not None


def test_config_rules() -> None:
    with pytest.raises(ValidationError, match="absolute path"):
        PolicyConfig(authz_command=("hook",))
    with pytest.raises(ValidationError, match="plain group name"):
        PolicyConfig(manage_group="a b")
    with pytest.raises(ValidationError):
        PolicyConfig(others="write")  # type: ignore[arg-type]
    with pytest.raises(ValidationError):
        PolicyConfig(admins=(-1,))


# --- the external hook -----------------------------------------------------------------------


def hook_script(tmp_path: Path, body: str) -> list[str]:
    path = tmp_path / "hook.py"
    path.write_text("import json, sys, time\n" + body)
    return [sys.executable, str(path)]


DOC = hook_document(ALICE, "netd network create web", "POST", "/v1/networks", "/v1/networks", {})


def check(argv: list[str], doc: dict[str, Any] = DOC, timeout: float = 2.0) -> Decision:
    return asyncio.run(AuthzHook(argv, timeout).check(doc))


def test_hook_allows_and_sees_the_request(tmp_path: Path) -> None:
    argv = hook_script(
        tmp_path,
        "doc = json.load(sys.stdin)\n"
        "ok = doc['caller']['uid'] == 1000 and doc['method'] == 'POST' and doc['body'] == {}\n"
        "print(json.dumps({'allow': ok, 'reason': 'checked ' + doc['caller']['cmdline']}))\n",
    )
    d = check(argv)
    assert d.allowed, d
    assert d.reason == "authz hook: checked netd network create web"


def test_hook_denies(tmp_path: Path) -> None:
    argv = hook_script(tmp_path, "print(json.dumps({'allow': False, 'reason': 'not today'}))\n")
    d = check(argv)
    assert not d.allowed and d.reason == "authz hook: not today"


def test_hook_timeout_denies_and_kills(tmp_path: Path) -> None:
    argv = hook_script(
        tmp_path,
        f"open({str(tmp_path / 'pid')!r}, 'w').write(str(__import__('os').getpid()))\n"
        "time.sleep(30)\n",
    )
    t0 = time.monotonic()
    d = check(argv, timeout=0.5)
    assert time.monotonic() - t0 < 5
    assert not d.allowed and d.reason == "authz hook timed out after 0.5 s"
    pid = int((tmp_path / "pid").read_text())
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)  # killed and reaped


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ("print('yes please')\n", "printed no JSON"),
        ("print(json.dumps({'allow': 'true'}))\n", "lacks a boolean 'allow'"),
        ("print(json.dumps([True]))\n", "lacks a boolean 'allow'"),
        ("print(json.dumps({'allow': True}))\nsys.exit(3)\n", "exited 3"),
        ("", "printed no JSON"),
    ],
)
def test_hook_garbage_denies(tmp_path: Path, body: str, reason: str) -> None:
    d = check(hook_script(tmp_path, body))
    assert not d.allowed and reason in d.reason, d


def test_hook_that_cannot_start_denies(tmp_path: Path) -> None:
    d = check([str(tmp_path / "missing")])
    assert not d.allowed and "could not start" in d.reason


def test_parse_answer_without_reason() -> None:
    d = parse_answer(b'{"allow": true}')
    assert d.allowed and d.reason == "authz hook: no reason given"


def test_manage_group_lookup_is_cached() -> None:
    calls: list[str] = []

    def gid_of(name: str) -> int | None:
        calls.append(name)
        return None

    p = Policy(PolicyConfig(), groups_of=lambda c: frozenset({c.gid}), gid_of=gid_of)
    for _ in range(100):
        assert not p.authorize(BOB, "POST", "/v1/networks").allowed
    assert calls == ["netd"]
    p._gid_cache = {k: (t - 11, g) for k, (t, g) in p._gid_cache.items()}  # ten seconds later
    p.authorize(BOB, "POST", "/v1/networks")
    assert calls == ["netd", "netd"]
