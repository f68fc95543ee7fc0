"""netd.dns.mmsg on real sockets: bursts from several IPv4 and IPv6 clients, batch boundaries,
oversized datagrams, batched answers reaching the right peers, a refused answer skipped, and a
shutdown waking a blocked receive.

Everything runs on 127.0.0.1 and ::1 inside a sandbox namespace (a helper script per test,
spawned there), never in the machine's own namespace.
"""

from __future__ import annotations

import json
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
from netns_fixtures import Sandbox

from netd.dns import mmsg

PY = sys.executable
ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.skipif(not mmsg.available(), reason="libc has no recvmmsg/sendmmsg")

_COMMON = textwrap.dedent(
    """
    import json, socket, sys, threading, time
    sys.path.insert(0, {root!r})
    from netd.dns.mmsg import Batcher

    def server(family, host):
        s = socket.socket(family, socket.SOCK_DGRAM)
        s.bind((host, 0))
        return s

    def clients(family, host, n):
        out = []
        for _ in range(n):
            c = socket.socket(family, socket.SOCK_DGRAM)
            c.bind((host, 0))
            c.settimeout(5)
            out.append(c)
        return out

    def drain(b, want):
        got, sizes = [], []
        while len(got) < want:
            batch = b.recv()
            sizes.append(len(batch))
            got.extend((d, ip, b.address(slot)) for d, ip, slot in batch)
        return got, sizes
    """
)


def _run(sandbox: Sandbox, tmp_path: Path, body: str) -> Any:
    ns = sandbox.add_ns("mm")
    script = tmp_path / "helper.py"
    script.write_text(_COMMON.format(root=str(ROOT)) + textwrap.dedent(body))
    return json.loads(ns.run(PY, str(script), timeout=30))


BURST = """
    result = {}
    for family, host in ((socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1")):
        srv = server(family, host)
        b = Batcher(srv, batch=32)
        cs = clients(family, host, 3)
        sent = {}
        for round_ in range(40):  # 120 datagrams queued before the first recv: 4 batches
            for i, c in enumerate(cs):
                payload = f"q {i} {round_} ".encode() * (1 + round_ % 7)
                c.sendto(payload, srv.getsockname())
                sent[payload] = c.getsockname()
        time.sleep(0.2)
        answered = {}
        sizes = []
        received = []
        while len(received) < len(sent):
            batch = b.recv()
            sizes.append(len(batch))
            for data, ip, slot in batch:
                addr = b.address(slot)
                received.append([data.decode(), ip, list(addr)])
            n = b.send([(b"A " + data, slot) for data, ip, slot in batch])
            assert n == len(batch), (n, len(batch))
        for c in cs:
            got = []
            for _ in range(40):
                data, peer = c.recvfrom(4096)
                got.append(data.decode())
            answered[str(c.getsockname()[1])] = got
        result[host] = {
            "sent": {k.decode(): list(v) for k, v in sent.items()},
            "received": received, "sizes": sizes, "answered": answered,
        }
    print(json.dumps(result))
"""


def test_burst_from_several_clients_v4_and_v6(sandbox: Sandbox, tmp_path: Path) -> None:
    result = _run(sandbox, tmp_path, BURST)
    for host in ("127.0.0.1", "::1"):
        r = result[host]
        sent = r["sent"]
        # every payload back exactly once, from the right source address and port
        assert sorted(d for d, _, _ in r["received"]) == sorted(sent)
        for data, ip, addr in r["received"]:
            assert ip == host
            assert addr[0] == host and addr[1] == sent[data][1]
            if host == "::1":
                assert len(addr) == 4 and addr[3] == 0
            else:
                assert len(addr) == 2
        # queued before the first call: full batches of 32, then the rest
        assert r["sizes"] == [32, 32, 32, 24]
        # each client got an answer to each of its own queries, in order
        for port, answers in r["answered"].items():
            mine = [d for d, src in sent.items() if src[1] == int(port)]
            assert answers == ["A " + d for d in mine]


TRUNC = """
    srv = server(socket.AF_INET, "127.0.0.1")
    b = Batcher(srv, batch=8, size=4096)
    (c,) = clients(socket.AF_INET, "127.0.0.1", 1)
    for payload in (b"small", b"x" * 5000, b"y" * 4096, b"z" * 4097, b"last"):
        c.sendto(payload, srv.getsockname())
    time.sleep(0.2)
    got = [(len(d), d[:5].decode()) for d, ip, slot in b.recv()]
    print(json.dumps(got))
"""


def test_oversized_datagrams_are_dropped(sandbox: Sandbox, tmp_path: Path) -> None:
    got = _run(sandbox, tmp_path, TRUNC)
    # 5000 and 4097 bytes do not fit the 4096-byte slot: dropped, the neighbours intact
    assert got == [[5, "small"], [4096, "yyyyy"], [4, "last"]]


SKIP = """
    srv = server(socket.AF_INET, "127.0.0.1")
    b = Batcher(srv, batch=8)
    cs = clients(socket.AF_INET, "127.0.0.1", 3)
    for i, c in enumerate(cs):
        c.sendto(f"q{i}".encode(), srv.getsockname())
    time.sleep(0.2)
    batch = b.recv()
    assert [d for d, _, _ in batch] == [b"q0", b"q1", b"q2"], batch
    # destination port 0 makes the kernel refuse the middle answer (EINVAL)
    slot = batch[1][2]
    b._names_v[slot * 28 + 2 : slot * 28 + 4] = b"\\0\\0"
    n = b.send([(b"a" + d, slot) for d, _, slot in batch])
    out = {"sent": n}
    for i, c in enumerate(cs):
        c.settimeout(0.5)
        try:
            out[str(i)] = c.recv(100).decode()
        except TimeoutError:
            out[str(i)] = None
    print(json.dumps(out))
"""


def test_refused_answer_is_skipped_and_the_rest_sent(sandbox: Sandbox, tmp_path: Path) -> None:
    out = _run(sandbox, tmp_path, SKIP)
    assert out == {"sent": 2, "0": "aq0", "1": None, "2": "aq2"}


SHUTDOWN = """
    srv = server(socket.AF_INET6, "::1")
    b = Batcher(srv)
    result = {}
    def loop():
        result["batch"] = b.recv()
    t = threading.Thread(target=loop)
    t.start()
    time.sleep(0.3)
    alive_while_blocked = t.is_alive()
    try:
        srv.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    t.join(2)
    print(json.dumps({"blocked": alive_while_blocked, "woke": not t.is_alive(),
                      "batch": result.get("batch")}))
"""


def test_shutdown_wakes_a_blocked_receive(sandbox: Sandbox, tmp_path: Path) -> None:
    out = _run(sandbox, tmp_path, SHUTDOWN)
    assert out == {"blocked": True, "woke": True, "batch": []}


def test_send_more_than_a_batch_is_refused() -> None:
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:  # never bound or used
        b = mmsg.Batcher(s, batch=2)
        with pytest.raises(ValueError, match="more than the batch 2"):
            b.send([(b"x", 0)] * 3)
        with pytest.raises(TypeError, match="payload bytearray, not bytes"):
            b.send([(bytearray(b"x"), 0)])  # type: ignore[list-item]
