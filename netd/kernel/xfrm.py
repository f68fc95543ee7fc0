"""IPsec SAs and policies of the encrypted overlay, through iproute2's ``ip xfrm`` (thin I/O).

Why ``ip xfrm`` and not pyroute2: pyroute2 (0.9) has no NETLINK_XFRM family — only the
``xfrm`` *link* kind — and writing ``xfrm_usersa_info``/``xfrm_userpolicy_info`` structures by
hand would be a home-made netlink protocol. iproute2 is already a dependency, its xfrm code is
the reference user of that API, and a handful of SAs per peer is nowhere near a hot path.

Everything here acts on the calling process's network namespace (the daemon's host
namespace) and finds netd's objects by tag, never by guessing:
- SAs (``ip xfrm state``): ESP, transport mode, ``reqid`` :data:`REQID`; listed with
  ``ip xfrm state list reqid REQID``, so another IKE daemon's SAs are never touched;
- policies (``ip xfrm policy``): direction out, selector ``udp dport 4789`` from this node to a
  peer, mark :data:`MARK`/:data:`MARK_MASK` (only VXLAN packets of encrypted networks carry it:
  :mod:`netd.kernel.ipsec_nft`), template ESP transport with ``reqid`` :data:`REQID` and the
  SPI of the key generation that sends. netd's are the out policies with that mark and reqid.

Keys never appear on a command line (``/proc/<pid>/cmdline`` is world-readable): SA writes
go through ``ip -batch -`` on stdin. Algorithms: AES-128-CBC with HMAC-SHA-256-128 (RFC 3602,
RFC 4868), which every IPsec-capable kernel has; AES-GCM (Docker's choice) is not in every
kernel's crypto set, and both ends must use the same.
"""

from __future__ import annotations

import functools
import re
import subprocess
from collections.abc import Sequence
from ipaddress import IPv4Address

from ..cluster.ipsec_keys import PolicySpec, StateSpec
from ..errors import KernelError

REQID = 0x6E657464  # "netd": the reqid of every SA and policy template netd makes
MARK = 0x00E50000  # set on VXLAN packets of encrypted networks (ipsec_nft), matched by policies
MARK_MASK = 0x00FF0000
PRIORITY = 1000  # of netd's policies (lower wins; IKE daemons' defaults are higher numbers)
VXLAN_PORT = 4789
ENC = "cbc(aes)"
AUTH = "hmac(sha256)"
ICV_BITS = 128
TIMEOUT = 10.0

NO_ESP = (
    "this kernel cannot do IPsec ESP (CONFIG_INET_ESP, with cbc(aes) and hmac(sha256)); "
    "an encrypted overlay is refused rather than sent in clear"
)

StateKey = tuple[IPv4Address, IPv4Address, int]
PolicyKey = tuple[IPv4Address, IPv4Address]


def _ip(args: Sequence[str], doing: str, stdin: str | None = None) -> str:
    """``ip ARGS`` (stdin ``stdin``); KernelError naming ``doing`` and ip's message."""
    try:
        done = subprocess.run(
            ["ip", *args],
            input=stdin,
            capture_output=True,
            text=True,
            timeout=TIMEOUT,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as e:
        raise KernelError(f"{doing}: running ip: {e}") from e
    if done.returncode != 0:
        message = " ".join(done.stderr.split()) or f"exit status {done.returncode}"
        if "Requested type not found" in message:
            message += f" ({NO_ESP})"
        raise KernelError(f"{doing}: {message}")
    return done.stdout


def _state_line(verb: str, s: StateSpec) -> str:
    return (
        f"xfrm state {verb} src {s.src} dst {s.dst} proto esp spi 0x{s.spi:08x} "
        f"reqid 0x{REQID:08x} mode transport replay-window 64 "
        f"enc '{ENC}' 0x{s.enc.hex()} auth-trunc '{AUTH}' 0x{s.auth.hex()} {ICV_BITS}"
    )


def _batch(lines: Sequence[str], doing: str) -> None:
    if lines:
        _ip(["-batch", "-"], doing, stdin="\n".join(lines) + "\n")


def add_states(states: Sequence[StateSpec]) -> None:
    """Add SAs (KernelError if one exists or the kernel refuses; earlier ones stay added)."""
    for s in states:
        _batch([_state_line("add", s)], f"adding IPsec SA {s.src} -> {s.dst} spi 0x{s.spi:08x}")


def update_states(states: Sequence[StateSpec]) -> None:
    """Re-key existing SAs in place (same src, dst, SPI; new keys)."""
    for s in states:
        _batch(
            [_state_line("update", s)], f"re-keying IPsec SA {s.src} -> {s.dst} spi 0x{s.spi:08x}"
        )


def delete_state(key: StateKey) -> None:
    """Delete one SA of netd's (KernelError unless it is gone afterwards)."""
    src, dst, spi = key
    doing = f"deleting IPsec SA {src} -> {dst} spi 0x{spi:08x}"
    try:
        _ip(["xfrm", "state", "delete", "src", str(src), "dst", str(dst), "proto", "esp",
             "spi", f"0x{spi:08x}"], doing)  # fmt: skip
    except KernelError as e:
        if "No such process" not in e.message:  # ESRCH: already gone
            raise


_STATE_HEAD = re.compile(r"^src (\S+) dst (\S+)\s*$")
_STATE_ID = re.compile(r"^\s+proto esp spi 0x([0-9a-f]+) reqid (\d+) mode transport")
_ENC = re.compile(r"^\s+enc \S+ 0x([0-9a-f]+)")
_AUTH = re.compile(r"^\s+auth-trunc \S+ 0x([0-9a-f]+) \d+")


def list_states() -> dict[StateKey, StateSpec]:
    """netd's SAs (reqid :data:`REQID`) in this namespace, with their keys."""
    out = _ip(["xfrm", "state", "list", "reqid", str(REQID)], "listing IPsec SAs")
    return parse_states(out)


def parse_states(text: str) -> dict[StateKey, StateSpec]:
    """The ESP transport SAs of reqid :data:`REQID` in ``ip xfrm state list`` output."""
    found: dict[StateKey, StateSpec] = {}
    src = dst = None
    spi: int | None = None
    enc = auth = b""

    def flush() -> None:
        if src is not None and dst is not None and spi is not None:
            found[(src, dst, spi)] = StateSpec(src, dst, spi, enc, auth)

    for line in text.splitlines():
        if head := _STATE_HEAD.match(line):
            flush()
            src, dst, spi, enc, auth = None, None, None, b"", b""
            try:
                src, dst = IPv4Address(head[1]), IPv4Address(head[2])
            except ValueError:  # an IPv6 SA: not one of netd's
                src = dst = None
        elif (ident := _STATE_ID.match(line)) and int(ident[2]) == REQID:
            spi = int(ident[1], 16)
        elif m := _ENC.match(line):
            enc = bytes.fromhex(m[1])
        elif m := _AUTH.match(line):
            auth = bytes.fromhex(m[1])
    flush()
    return found


def _selector(src: IPv4Address, dst: IPv4Address) -> list[str]:
    return ["src", f"{src}/32", "dst", f"{dst}/32", "proto", "udp", "dport", str(VXLAN_PORT),
            "dir", "out", "mark", f"0x{MARK:08x}", "mask", f"0x{MARK_MASK:08x}"]  # fmt: skip


def set_policy(p: PolicySpec) -> None:
    """Create or replace the outbound policy from ``p.src`` to ``p.dst`` (atomic: packets
    switch from the old SA to ``p.spi`` between two packets)."""
    _ip(["xfrm", "policy", "update", *_selector(p.src, p.dst), "priority", str(PRIORITY),
         "tmpl", "src", str(p.src), "dst", str(p.dst), "proto", "esp", "spi", f"0x{p.spi:08x}",
         "reqid", str(REQID), "mode", "transport"],
        f"setting the IPsec policy {p.src} -> {p.dst} (spi 0x{p.spi:08x})")  # fmt: skip


def delete_policy(key: PolicyKey) -> None:
    """Delete netd's outbound policy from ``key[0]`` to ``key[1]`` (gone already: fine)."""
    src, dst = key
    try:
        _ip(["xfrm", "policy", "delete", *_selector(src, dst)],
            f"deleting the IPsec policy {src} -> {dst}")  # fmt: skip
    except KernelError as e:
        if "No such file or directory" not in e.message:  # ENOENT: already gone
            raise


def list_policies() -> dict[PolicyKey, PolicySpec]:
    """netd's outbound policies in this namespace (mark and reqid netd's)."""
    return parse_policies(_ip(["xfrm", "policy", "list", "dir", "out"], "listing IPsec policies"))


_POL_HEAD = re.compile(r"^src (\S+)/32 dst (\S+)/32 proto udp dport (\d+)\s*$")
_POL_MARK = re.compile(r"^\s+mark 0x([0-9a-f]+)/0x([0-9a-f]+)")
_POL_TMPL = re.compile(r"^\s+proto esp spi 0x([0-9a-f]+) reqid (\d+) mode transport")


def parse_policies(text: str) -> dict[PolicyKey, PolicySpec]:
    """netd's policies in ``ip xfrm policy list`` output: VXLAN selector, netd's mark, an
    ESP template of reqid :data:`REQID`."""
    found: dict[PolicyKey, PolicySpec] = {}
    head: tuple[IPv4Address, IPv4Address] | None = None
    marked = False
    for line in text.splitlines():
        if not line.startswith((" ", "\t")):
            head, marked = None, False
            m = _POL_HEAD.match(line)
            if m and int(m[3]) == VXLAN_PORT:
                try:
                    head = (IPv4Address(m[1]), IPv4Address(m[2]))
                except ValueError:
                    head = None
        elif head and (m := _POL_MARK.match(line)):
            marked = int(m[1], 16) == MARK and int(m[2], 16) == MARK_MASK
        elif head and marked and (m := _POL_TMPL.match(line)) and int(m[2]) == REQID:
            found[head] = PolicySpec(head[0], head[1], int(m[1], 16))
    return found


@functools.cache
def esp_missing() -> str:
    """ "" if this kernel can make netd's SAs, else why not (probed once, in a throwaway
    namespace made by ``unshare --net``: no real namespace ever holds the probe's SA)."""
    probe = StateSpec(IPv4Address("127.0.0.1"), IPv4Address("127.0.0.2"), 0x100,
                      bytes(16), bytes(32))  # fmt: skip
    try:
        done = subprocess.run(
            ["unshare", "--net", "ip", "-batch", "-"],
            input=_state_line("add", probe) + "\n",
            capture_output=True,
            text=True,
            timeout=TIMEOUT,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"cannot probe for IPsec ESP: {e}"
    if done.returncode == 0:
        return ""
    message = " ".join(done.stderr.split())
    if "Requested type not found" in message or "not found" in message:
        return NO_ESP
    return f"probing for IPsec ESP: {message}"
