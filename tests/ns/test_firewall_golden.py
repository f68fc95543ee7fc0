"""The golden nftables JSON is accepted by the real kernel and libnftables, as one batch."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from netns_fixtures import Namespace, Sandbox

GOLDEN = Path(__file__).resolve().parent.parent / "unit" / "golden" / "firewall_ruleset.json"


def load(host: Namespace, cmds: list[Any], tmp: Path) -> bool:
    tmp.write_text(json.dumps({"nftables": cmds}))
    return host.ok("nft", "-j", "-f", str(tmp))


def listing(host: Namespace) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = json.loads(host.run("nft", "-j", "list", "ruleset"))["nftables"]
    return [o for o in out if "metainfo" not in o]


def test_golden_ruleset_loads_atomically(sandbox: Sandbox, tmp_path: Path) -> None:
    host = sandbox.add_host()
    cmds = json.loads(GOLDEN.read_text())
    tmp = tmp_path / "batch.json"
    assert load(host, cmds, tmp)
    first = listing(host)
    wanted = [c["add"]["rule"] for c in cmds if "rule" in c.get("add", {})]
    assert len([o for o in first if "rule" in o]) == len(wanted)
    # Loading it again replaces, never duplicates (add + delete + add table in one batch).
    assert load(host, cmds, tmp)
    assert len([o for o in listing(host) if "rule" in o]) == len(wanted)
    # One bad command (an interface name longer than IFNAMSIZ) and nothing changes at all.
    bad = {"family": "inet", "table": "netd", "name": "bridges", "elem": ["x" * 40]}
    assert not load(
        host,
        [{"add": {"table": {"family": "inet", "name": "extra"}}}, {"add": {"element": bad}}],
        tmp,
    )
    assert not any(o.get("table", {}).get("name") == "extra" for o in listing(host))
