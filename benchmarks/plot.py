"""Plots for docs/benchmarks.md from the benchmark scripts' JSON under benchmarks/results/.

Run after the benchmarks (``python benchmarks/plot.py``): it picks, for each plot, the newest
result file that has what the plot compares, and writes PNGs into ``docs/img/``:

- ``cni-latency.png``: the distribution of CNI ADD and DEL latencies per plugin chain (netd and
  the reference plugins), one box per chain, from ``bench_cni-*.json`` samples;
- ``firewall-port-cost.png``: the cost of publishing one more port (p50, with a bar up to
  p95) against the number already published, per backend, from
  ``firewall-*.json``.

matplotlib is an optional dependency (``pip install 'netd[bench]'``). This module only reads
results and draws; it does not run benchmarks and does not edit the Markdown.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS_DIR = ROOT / "benchmarks" / "results"
IMG_DIR = ROOT / "docs" / "img"
REFERENCE = "bridge+host-local"


def _pyplot() -> Any:
    try:
        import matplotlib

        matplotlib.use("Agg")  # files only: no display on servers and CI
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise SystemExit(
            f"plotting needs matplotlib ({exc}); install it with: pip install 'netd[bench]'"
        ) from exc
    return plt


def pick(
    directory: Path,
    prefix: str,
    accept: Callable[[dict[str, Any]], bool],
    rank: Callable[[dict[str, Any]], int] = lambda data: 0,
) -> tuple[Path, dict[str, Any]] | None:
    """The ``<prefix>-<timestamp>.json`` that ``accept`` takes with the highest ``rank``.

    Ties go to the newest file (timestamps in the names sort in time order).
    """
    best: tuple[tuple[int, str], Path, dict[str, Any]] | None = None
    for path in directory.glob(f"{prefix}-*.json"):
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if not isinstance(data, dict) or not accept(data):
            continue
        key = (rank(data), path.name)
        if best is None or key > best[0]:
            best = (key, path, data)
    return (best[1], best[2]) if best is not None else None


def chains(data: dict[str, Any]) -> int:
    """How many plugin chains a CNI result compares (more is a better picture)."""
    return sum(1 for r in data.get("results", []) if r.get("add_samples_ms"))


def has_netd_and_reference(data: dict[str, Any]) -> bool:
    """A CNI result with samples for netd and for the reference bridge plugin."""
    names = {r.get("name") for r in data.get("results", []) if r.get("add_samples_ms")}
    return "netd" in names and REFERENCE in names


def has_rows(data: dict[str, Any]) -> bool:
    """A firewall result with at least one row."""
    return bool(data.get("rows"))


def plot_cni(data: dict[str, Any], out: Path) -> Path:
    """Box plots of ADD and DEL latency per plugin chain (log scale)."""
    plt = _pyplot()
    results = [r for r in data["results"] if r.get("add_samples_ms")]
    names = [r["name"] for r in results]
    fig, axes = plt.subplots(1, 2, figsize=(11, 0.6 * len(names) + 2.2), sharey=True)
    for ax, key, title in zip(axes, ("add", "del"), ("ADD", "DEL"), strict=True):
        samples = [r.get(f"{key}_samples_ms") or [0.0] for r in results]
        ax.boxplot(samples, orientation="horizontal", whis=(5, 95), showfliers=False)
        ax.set_yticks(range(1, len(names) + 1), names)
        ax.set_xscale("log")
        ax.set_xlabel("ms (box: p25-p75, whiskers: p5-p95)")
        ax.set_title(f"CNI {title} latency")
        ax.grid(axis="x", which="both", alpha=0.3)
    fig.suptitle(
        f"{data.get('containers', '?')} containers, sequential; "
        f"netd firewall {data.get('firewall', '?')}; {_machine(data)}",
        fontsize=9,
    )
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out


def plot_firewall(data: dict[str, Any], out: Path) -> Path:
    """Cost of publishing one more port vs ports already published, per backend (log-log)."""
    plt = _pyplot()
    backends: dict[str, list[dict[str, Any]]] = {}
    for row in data["rows"]:
        backends.setdefault(row["backend"], []).append(row)
    fig, ax = plt.subplots(figsize=(7, 4.2))
    for backend, rows in backends.items():
        rows.sort(key=lambda r: r["existing"])
        xs = [max(r["existing"], 1) for r in rows]  # 0 drawn at 1 on the log axis
        p50 = [r["add"]["p50"] for r in rows]
        p95 = [r["add"]["p95"] for r in rows]
        ax.errorbar(
            xs,
            p50,
            yerr=[[0.0] * len(rows), [b - a for a, b in zip(p50, p95, strict=True)]],
            marker="o",
            capsize=3,
            label=backend,
        )
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("ports already published (0 drawn at 1)")
    ax.set_ylabel("publish one more port, ms (p50, bar to p95)")
    ax.set_title(f"Firewall: cost of one more published port; {_machine(data)}", fontsize=9)
    ax.grid(which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out


def _machine(data: dict[str, Any]) -> str:
    m = data.get("machine") or {}
    return f"{m.get('cpus', '?')} CPUs {m.get('cpu', '')}, kernel {m.get('kernel', '?')}".strip()


def main(argv: Sequence[str] | None = None) -> int:
    """Write every plot whose input exists; print what was written and from which file."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", type=Path, default=RESULTS_DIR)
    parser.add_argument("--out", type=Path, default=IMG_DIR)
    args = parser.parse_args(argv)
    Rank = Callable[[dict[str, Any]], int]
    jobs: list[tuple[str, Callable[[dict[str, Any]], bool], Rank, Any, str]] = [
        ("bench_cni", has_netd_and_reference, chains, plot_cni, "cni-latency.png"),
        ("firewall", has_rows, lambda data: 0, plot_firewall, "firewall-port-cost.png"),
    ]
    missing = 0
    for prefix, accept, rank, draw, name in jobs:
        found = pick(args.results, prefix, accept, rank)
        if found is None:
            print(f"{name}: no usable {prefix}-*.json in {args.results}", file=sys.stderr)
            missing += 1
            continue
        src, data = found
        path = draw(data, args.out / name)
        print(f"{path} from {src.name}")
    return 1 if missing == len(jobs) else 0


if __name__ == "__main__":
    sys.exit(main())
