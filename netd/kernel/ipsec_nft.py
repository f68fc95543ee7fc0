"""Which VXLAN packets IPsec protects: the ``inet netd_ipsec`` nftables table (thin I/O).

Only the encrypted networks' VNIs are encrypted (Docker's per-network semantics): an
unencrypted overlay on the same nodes stays plain VXLAN. The VNI is bytes 4-6 of the VXLAN
header, right after the 8-byte UDP header: ``@th,96,24`` (RFC 7348 §5).

- out: a ``route`` chain marks the node's own VXLAN packets of those VNIs with
  :data:`~netd.kernel.xfrm.MARK`; the mark changes, so the kernel routes the packet again and
  finds netd's xfrm policy (which matches only marked packets): ESP.
- in: the kernel does not check xfrm policies for packets of a UDP tunnel socket (VXLAN's
  ``encap_rcv`` runs first), so a plain VXLAN packet of an encrypted VNI would be accepted
  from anyone on the underlay. The input chain drops it unless it arrived through IPsec
  (``meta ipsec missing``), as Docker's ``-m policy --pol none -j DROP`` rule does.

A table of its own, apart from the firewall's ``inet netd``: it is needed whatever
``firewall`` backend is configured, and replaced whole (declare, delete, declare in one
``nft -f`` transaction) on every change.
"""

from __future__ import annotations

import subprocess
from collections.abc import Collection

from ..errors import FirewallError
from .xfrm import MARK, VXLAN_PORT

TABLE = "netd_ipsec"
TIMEOUT = 10.0


def build_ruleset(vnis: Collection[int]) -> str:
    """``nft -f`` input that makes the table exactly the rules for ``vnis`` (none: no table).

    The rules, for VNIs 100 and 200::

        table inet netd_ipsec {
          chain output {
            type route hook output priority mangle; policy accept;
            udp dport 4789 @th,96,24 { 100, 200 } meta mark set meta mark | 0x00e50000
          }
          chain input {
            type filter hook input priority filter; policy accept;
            udp dport 4789 @th,96,24 { 100, 200 } meta ipsec missing counter drop
          }
        }
    """
    for vni in vnis:
        if isinstance(vni, bool) or not isinstance(vni, int) or not 1 <= vni <= 0xFFFFFF:
            raise ValueError(f"VNI {vni!r} is not 1..16777215")
    reset = f"table inet {TABLE}\ndelete table inet {TABLE}\n"
    if not vnis:
        return reset
    match = f"udp dport {VXLAN_PORT} @th,96,24 {{ {', '.join(str(v) for v in sorted(vnis))} }}"
    return reset + (
        f"table inet {TABLE} {{\n"
        "  chain output {\n"
        "    type route hook output priority mangle; policy accept;\n"
        f"    {match} meta mark set meta mark | 0x{MARK:08x}\n"
        "  }\n"
        "  chain input {\n"
        "    type filter hook input priority filter; policy accept;\n"
        f"    {match} meta ipsec missing counter drop\n"
        "  }\n"
        "}\n"
    )


def apply(vnis: Collection[int]) -> None:
    """Make the table match ``vnis`` (remove it when empty); FirewallError naming nft's reason."""
    doing = f"setting the IPsec VXLAN rules (table inet {TABLE}) for VNIs {sorted(vnis)}"
    try:
        done = subprocess.run(
            ["nft", "-f", "-"],
            input=build_ruleset(vnis),
            capture_output=True,
            text=True,
            timeout=TIMEOUT,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as e:
        raise FirewallError(f"{doing}: running nft: {e}") from e
    if done.returncode != 0:
        raise FirewallError(f"{doing}: {' '.join(done.stderr.split())}")


def current() -> str:
    """The table as ``nft list`` prints it, "" when it does not exist."""
    done = subprocess.run(
        ["nft", "list", "table", "inet", TABLE],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )
    return done.stdout if done.returncode == 0 else ""
