"""benchmarks/plot.py: picks the right result file and writes real PNGs."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[2]
PNG = b"\x89PNG\r\n\x1a\n"


def plot_module() -> ModuleType:
    pytest.importorskip("matplotlib")
    spec = importlib.util.spec_from_file_location("bench_plot", ROOT / "benchmarks/plot.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def cni(names: list[str]) -> dict[str, object]:
    results = [
        {"name": n, "add_samples_ms": [1.0 + i, 2.0, 3.0], "del_samples_ms": [2.0, 4.0]}
        for i, n in enumerate(names)
    ]
    return {"containers": 3, "firewall": "none", "results": results, "machine": {"cpus": 2}}


def firewall() -> dict[str, object]:
    rows = [
        {"backend": b, "existing": n, "add": {"p50": base * (1 + n / 1000), "p95": base * 2}}
        for b, base in (("nftables", 0.4), ("iptables", 70.0))
        for n in (0, 100, 1000)
    ]
    return {"rows": rows, "machine": {"cpus": 2, "cpu": "x", "kernel": "6"}}


def test_picks_the_file_with_most_chains_then_newest(tmp_path: Path) -> None:
    plot = plot_module()
    files = {
        "bench_cni-20260101T000000Z.json": cni(["netd", "bridge+host-local", "netavark"]),
        "bench_cni-20260102T000000Z.json": cni(["netd", "bridge+host-local"]),
        "bench_cni-20260103T000000Z.json": cni(["netd"]),  # no reference: never picked
        "bench_cni-20260104T000000Z.json": "not json",
    }
    for name, data in files.items():
        (tmp_path / name).write_text(data if isinstance(data, str) else json.dumps(data))
    found = plot.pick(tmp_path, "bench_cni", plot.has_netd_and_reference, plot.chains)
    assert found is not None and found[0].name == "bench_cni-20260101T000000Z.json"
    newest = plot.pick(tmp_path, "bench_cni", plot.has_netd_and_reference)
    assert newest is not None and newest[0].name == "bench_cni-20260102T000000Z.json"
    assert plot.pick(tmp_path, "firewall", plot.has_rows) is None


def test_main_writes_both_pngs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    plot = plot_module()
    results, out = tmp_path / "results", tmp_path / "img"
    results.mkdir()
    (results / "bench_cni-20260101T000000Z.json").write_text(
        json.dumps(cni(["netd", "bridge+host-local"]))
    )
    (results / "firewall-20260101T000000Z.json").write_text(json.dumps(firewall()))
    assert plot.main(["--results", str(results), "--out", str(out)]) == 0
    for name in ("cni-latency.png", "firewall-port-cost.png"):
        data = (out / name).read_bytes()
        assert data.startswith(PNG) and len(data) > 10_000, name
    assert "from bench_cni-20260101T000000Z.json" in capsys.readouterr().out
    empty = tmp_path / "empty"
    empty.mkdir()
    assert plot.main(["--results", str(empty), "--out", str(out)]) == 1


def test_docs_embed_the_committed_plots() -> None:
    text = (ROOT / "docs/benchmarks.md").read_text()
    for name in ("cni-latency.png", "firewall-port-cost.png"):
        assert f"](img/{name})" in text
        assert (ROOT / "docs/img" / name).read_bytes().startswith(PNG)
