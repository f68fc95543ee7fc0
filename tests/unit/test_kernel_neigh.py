"""netd.kernel.neigh's encoding and decoding, checked against pyroute2's (no kernel needed)."""

from __future__ import annotations

import struct
from ipaddress import IPv4Address

from pyroute2.netlink.rtnl import RTM_NEWNEIGH
from pyroute2.netlink.rtnl.ndmsg import ndmsg

from netd.kernel.neigh import (
    _NDMSG,
    AF_BRIDGE,
    NDA_DST,
    NDA_LLADDR,
    NTF_SELF,
    NUD_NOARP,
    NUD_PERMANENT,
    _attrs,
    _fdb,
)


def test_an_fdb_request_reads_back_as_pyroute2_decodes_it() -> None:
    body = _fdb(7, "02:aa:bb:cc:dd:ee", IPv4Address("192.168.90.2"))
    header = struct.pack("=IHHII", 16 + len(body), RTM_NEWNEIGH, 0, 1, 0)  # linux/netlink.h
    msg = ndmsg(header + body)
    msg.decode()
    assert (msg["family"], msg["ifindex"], msg["flags"]) == (AF_BRIDGE, 7, NTF_SELF)
    assert msg["state"] == NUD_PERMANENT | NUD_NOARP
    assert msg.get_attr("NDA_LLADDR") == "02:aa:bb:cc:dd:ee"
    assert msg.get_attr("NDA_DST") == "192.168.90.2"


def test_attributes_are_cut_as_encoded() -> None:
    msg = ndmsg()
    msg["family"] = 2
    msg["ifindex"] = 9
    msg["state"] = NUD_PERMANENT
    msg["attrs"] = [["NDA_DST", "10.70.0.12"], ["NDA_LLADDR", "02:00:00:00:00:12"]]
    msg.encode()
    body = bytes(msg.data[16:])
    assert _NDMSG.unpack_from(body)[3:5] == (9, NUD_PERMANENT)
    attrs = _attrs(body, _NDMSG.size)
    assert attrs[NDA_DST] == bytes([10, 70, 0, 12])
    assert attrs[NDA_LLADDR] == bytes.fromhex("020000000012")
    assert _attrs(body[:-3], _NDMSG.size).get(NDA_LLADDR) != bytes.fromhex("020000000012")
