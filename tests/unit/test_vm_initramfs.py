"""The pure parts of netns_fixtures.vm: module load order from modules.dep, the newc cpio writer."""

from __future__ import annotations

import pytest
from netns_fixtures.vm import VmError, cpio_newc, module_order

DEP = """\
kernel/net/9p/9pnet_virtio.ko.xz: kernel/drivers/virtio/virtio_ring.ko.xz kernel/net/9p/9pnet.ko.xz
kernel/net/9p/9pnet.ko.xz:
kernel/fs/9p/9p.ko.xz: kernel/net/9p/9pnet.ko.xz kernel/fs/netfs/netfs.ko.xz
kernel/fs/netfs/netfs.ko.xz:
kernel/drivers/virtio/virtio_ring.ko.xz:
kernel/fs/overlayfs/overlay.ko.xz:
"""


def test_module_order_loads_dependencies_first_once_and_skips_builtins() -> None:
    order = module_order(
        DEP, ["9pnet_virtio", "9p", "overlay"], "kernel/drivers/virtio/virtio_pci.ko"
    )
    names = [p.rsplit("/", 1)[1].split(".ko")[0] for p in order]
    assert names == ["virtio_ring", "9pnet", "9pnet_virtio", "netfs", "9p", "overlay"]
    assert module_order(DEP, ["virtio_pci", "overlay"], "kernel/drivers/virtio/virtio_pci.ko") == [
        "kernel/fs/overlayfs/overlay.ko.xz"
    ]


def test_module_order_names_a_module_it_cannot_find() -> None:
    with pytest.raises(VmError, match=r"'esp4' is not in modules\.dep"):
        module_order(DEP, ["esp4"])


def parse_newc(data: bytes) -> list[tuple[str, int, bytes]]:
    """An independent reader of the newc format (header: magic + 13 eight-digit hex fields)."""
    found, at = [], 0
    while True:
        assert data[at : at + 6] == b"070701"
        fields = [int(data[at + 6 + 8 * i : at + 14 + 8 * i], 16) for i in range(13)]
        mode, size, namesize = fields[1], fields[6], fields[11]
        name_at = at + 110
        name = data[name_at : name_at + namesize - 1].decode()
        assert data[name_at + namesize - 1] == 0
        body = name_at + namesize + (-(name_at + namesize) % 4)
        if name == "TRAILER!!!":
            assert (body + size) % 4 == 0
            return found
        found.append((name, mode, data[body : body + size]))
        at = body + size + (-(body + size) % 4)


def test_cpio_newc_round_trips_names_modes_and_unaligned_data() -> None:
    entries = [("bin", 0o040755, b""), ("bin/sh", 0o100755, b"#!x\n"), ("init", 0o100755, b"12345")]
    archive = cpio_newc(entries)
    assert len(archive) % 4 == 0
    assert parse_newc(archive) == entries
