"""Shared helpers for the benchmarks: percentiles, tables, result files, plugin execs.

Benchmarks are plain scripts, not tests (TESTING.md tier 4): they print a table and write a
JSON file under ``benchmarks/results/`` (gitignored). This module holds what more than one of
them needs: nearest-rank percentiles and a summary of latency samples, a fixed-width table
renderer, the machine description printed next to every table, and the minimal CNI exec logic
a runtime performs (config on stdin, ``CNI_*`` in the environment, result on stdout, chained
plugins fed the previous result). It does not create namespaces or start daemons; the scripts
do that through ``netns_fixtures``.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import os
import platform
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS_DIR = ROOT / "benchmarks" / "results"
# The fixtures package lives outside the installed distribution (tests/conftest.py does the same).
if str(ROOT / "netns-fixtures") not in sys.path:
    sys.path.insert(0, str(ROOT / "netns-fixtures"))

from netns_fixtures.daemon import unix_request  # noqa: E402  (needs the path above)


def percentile(samples: Sequence[float], q: float) -> float:
    """Nearest-rank percentile ``q`` (0 < q <= 100) of ``samples``.

    Nearest-rank returns a value that was actually measured (no interpolation), which is what a
    latency table should show. Raises ValueError for an empty sample or a q outside (0, 100].
    """
    if not samples:
        raise ValueError("percentile of an empty sample")
    if not 0 < q <= 100:
        raise ValueError(f"percentile q must be in (0, 100], got {q}")
    ordered = sorted(samples)
    rank = math.ceil(q / 100 * len(ordered))
    return ordered[max(rank, 1) - 1]


def summarize(samples: Sequence[float]) -> dict[str, float]:
    """``{"n", "p50", "p95", "max", "mean"}`` of latency samples (same unit as the input)."""
    return {
        "n": len(samples),
        "p50": percentile(samples, 50),
        "p95": percentile(samples, 95),
        "max": max(samples),
        "mean": sum(samples) / len(samples),
    }


def ratio(ours: float | None, theirs: float | None) -> float | None:
    """``ours / theirs``, or None when either side is missing or the reference is zero."""
    if ours is None or theirs is None or theirs == 0:
        return None
    return ours / theirs


def fmt(value: object, digits: int = 1) -> str:
    """A table cell: floats rounded, None as an em dash, everything else str()."""
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def format_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A Markdown pipe table (readable in a terminal too); numbers right-aligned."""
    cells = [[fmt(c) for c in row] for row in rows]
    widths = [len(h) for h in headers]
    for row in cells:
        if len(row) != len(headers):
            raise ValueError(f"table row has {len(row)} cells, headers have {len(headers)}")
        widths = [max(w, len(c)) for w, c in zip(widths, row, strict=True)]
    numeric = [
        all(isinstance(row[i], int | float) or row[i] is None for row in rows) and bool(rows)
        for i in range(len(headers))
    ]

    def line(values: Sequence[str]) -> str:
        padded = [
            v.rjust(w) if num else v.ljust(w)
            for v, w, num in zip(values, widths, numeric, strict=True)
        ]
        return "| " + " | ".join(padded) + " |"

    rule = (
        "|"
        + "|".join(
            "-" * (w + 1) + ":" if num else "-" * (w + 2)
            for w, num in zip(widths, numeric, strict=True)
        )
        + "|"
    )
    return "\n".join([line(list(headers)), rule, *(line(r) for r in cells)])


def machine_description() -> dict[str, Any]:
    """CPU model and count, memory, kernel and Python: printed next to every figure."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as info:
            for row in info:
                if row.startswith("model name"):
                    cpu = row.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    mem_gib: float | None = None
    try:
        with open("/proc/meminfo") as info:
            for row in info:
                if row.startswith("MemTotal:"):
                    mem_gib = round(int(row.split()[1]) / 1024 / 1024, 1)
                    break
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cpus": os.cpu_count(),
        "mem_gib": mem_gib,
        "kernel": platform.release(),
        "python": platform.python_version(),
    }


def write_results(name: str, data: Mapping[str, Any], directory: Path = RESULTS_DIR) -> Path:
    """Write ``data`` (plus a UTC timestamp) as ``<directory>/<name>-<timestamp>.json``."""
    directory.mkdir(parents=True, exist_ok=True)
    stamp = _dt.datetime.now(_dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    path = directory / f"{name}-{stamp}.json"
    path.write_text(json.dumps({"timestamp": stamp, **data}, indent=2, sort_keys=True) + "\n")
    return path


class PluginError(RuntimeError):
    """A plugin exited non-zero; the message names the plugin, verb and its output."""


@dataclass(frozen=True)
class Exec:
    """What one plugin exec produced, with its wall time in milliseconds."""

    code: int
    out: Any
    err: str
    ms: float


def exec_plugin(
    binary: Path | str,
    command: str,
    config: Mapping[str, Any],
    *,
    container_id: str = "",
    netns: str = "",
    ifname: str = "eth0",
    cni_path: str = "",
    env: Mapping[str, str] | None = None,
    argv: Sequence[str] = (),
) -> Exec:
    """Exec one CNI plugin the way libcni does and time it (fork to exit, output read).

    Runs in the caller's network namespace: the benchmark calls this from a worker already
    inside the sandbox host namespace, so no ``ip netns exec`` cost is added per call.
    """
    environ = {
        "PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"),
        "CNI_COMMAND": command,
        "CNI_CONTAINERID": container_id,
        "CNI_NETNS": netns,
        "CNI_IFNAME": ifname,
        "CNI_ARGS": "",
        "CNI_PATH": cni_path,
        **(env or {}),
    }
    t0 = time.perf_counter()
    proc = subprocess.run(
        [str(binary), *argv],
        input=json.dumps(config),
        capture_output=True,
        text=True,
        env=environ,
        timeout=120,
    )
    ms = (time.perf_counter() - t0) * 1000
    try:
        out = json.loads(proc.stdout) if proc.stdout.strip() else None
    except ValueError:
        out = proc.stdout
    return Exec(proc.returncode, out, proc.stderr, ms)


def run_chain(
    bin_dirs: Sequence[Path],
    conflist: Mapping[str, Any],
    command: str,
    *,
    container_id: str,
    netns: str,
    prev_result: Any = None,
    env: Mapping[str, str] | None = None,
) -> Any:
    """Run a conflist like libcni (ADD in order with prevResult, DEL in reverse); the result.

    For DEL, pass the cached ADD result as ``prev_result`` (libcni does for 1.0.0 configs).
    Raises PluginError on the first plugin that fails.
    """
    plugins = list(conflist["plugins"])
    order = plugins if command == "ADD" else list(reversed(plugins))
    cni_path = ":".join(str(d) for d in bin_dirs)
    prev = prev_result
    for plugin in order:
        binary = next((d / plugin["type"] for d in bin_dirs if (d / plugin["type"]).exists()), None)
        if binary is None:
            raise PluginError(f"plugin {plugin['type']!r} not found in {cni_path}")
        conf = {"cniVersion": conflist["cniVersion"], "name": conflist["name"], **plugin}
        if prev is not None:
            conf["prevResult"] = prev
        res = exec_plugin(
            binary,
            command,
            conf,
            container_id=container_id,
            netns=netns,
            cni_path=cni_path,
            env=env,
        )
        if res.code != 0:
            raise PluginError(
                f"{plugin['type']} {command} for {container_id} exited {res.code}: "
                f"{res.out or res.err.strip()}"
            )
        if command == "ADD":
            prev = res.out
    return prev if command == "ADD" else None


def post_json(socket_path: str, path: str, body: Any, timeout: float = 120) -> tuple[int, Any]:
    """One ``POST`` with a JSON body over a Unix socket, to time the daemon without a plugin."""
    return unix_request(socket_path, "POST", path, body, timeout)
