"""Failed DNS queries while `netd daemon` restarts (issue #13, section 3).

Root; builds its own sandbox (a host namespace running a real `netd daemon`, containers "web"
and "client" on network "app" 10.77.0.0/24) and never touches the initial namespace. From the
client namespace, ``netns-fixtures/netns_fixtures/dnsload.py`` sends an A query for "web" to
the gateway every 5 ms (200 q/s, 16 source ports, 1 s timeout per query) while the daemon is:

- ``SIGTERM + start``: stopped with SIGTERM, left down ``--down`` seconds, started again;
- ``SIGKILL + start``: killed with SIGKILL, down, started;
- ``upgrade (replace)``: stopped with SIGTERM and started with another DNS setting
  (``dns_ttl``), so the new daemon cannot adopt the worker and replaces it;
- ``SIGTERM + netd dns stop + start``: the workers are stopped too, i.e. what every restart
  did before this change (the DNS worker died with the daemon).

Each scenario runs ``--rounds`` times; the table shows queries sent, failed (no or wrong answer
within 1 s), the longest outage (from a failed query to the next answered one) and the
slowest answer, summed / maxed over the rounds. A JSON file goes to benchmarks/results/.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from common import ROOT, format_table, machine_description, write_results

LOAD = ROOT / "netns-fixtures" / "netns_fixtures" / "dnsload.py"
GW = "10.77.0.1"


def _wait(what: str, check: Any, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what}: not within {timeout} s")
        time.sleep(0.02)


def one_round(daemon: Any, client: Any, web_addr: str, scenario: str, args: Any) -> dict[str, Any]:
    """Run the load across one stop/start of the daemon; return dnsload's figures."""
    tmp = Path(tempfile.mkdtemp(prefix="nbench-dnsr-"))
    stop_file, ready = tmp / "stop", tmp / "ready"
    load = client.spawn(
        sys.executable, str(LOAD), GW, "web", web_addr, "--rate", str(args.rate),
        "--timeout", "1", "--stop-file", str(stop_file), "--ready-file", str(ready),
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    _wait("first answer", ready.exists, 20)
    time.sleep(args.before)
    sig = signal.SIGKILL if scenario == "SIGKILL + start" else signal.SIGTERM
    daemon.stop(sig)
    if scenario.startswith("SIGTERM + netd dns stop"):
        subprocess.run(
            [str(Path(sys.executable).parent / "netd"), "dns", "stop", "--state-dir",
             str(daemon.state_dir)],
            check=True, capture_output=True, timeout=60,
        )  # fmt: skip
    if scenario == "upgrade (replace)":
        ttl = 7 if "dns_ttl = 7" not in daemon.config_path().read_text() else 5
        daemon.config_path().write_text(f"dns_ttl = {ttl}\n")
    time.sleep(args.down)
    started = time.monotonic()
    daemon.start()
    ready_s = time.monotonic() - started
    time.sleep(args.after)
    stop_file.touch()
    out, _ = load.communicate(timeout=60)
    client.sandbox.processes.remove(load)
    result = dict(json.loads(out))
    result["daemon_ready_s"] = round(ready_s, 3)
    result["workers_after"] = len(daemon.dns_worker_pids())
    return result


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--rate", type=int, default=200, help="queries per second")
    p.add_argument("--down", type=float, default=1.0, help="seconds the daemon stays down")
    p.add_argument("--before", type=float, default=1.0, help="seconds of load before the stop")
    p.add_argument("--after", type=float, default=1.5, help="seconds of load after the start")
    args = p.parse_args()
    if os.geteuid() != 0:
        sys.exit("bench_dns_restart.py needs root (it builds network namespaces)")
    from netns_fixtures import Sandbox
    from netns_fixtures.daemon import Daemon

    scenarios = [
        "SIGTERM + start",
        "SIGKILL + start",
        "upgrade (replace)",
        "SIGTERM + netd dns stop + start",
    ]
    rows = []
    raw: dict[str, list[dict[str, Any]]] = {}
    with Sandbox(prefix=f"nbench-{os.getpid()}") as box:
        host = box.add_host()
        daemon = Daemon(host).start()
        try:
            web, client = box.add_ns("web"), box.add_ns("client")
            daemon.cli("network", "create", "app", "--subnet", "10.77.0.0/24")
            out = daemon.cli(
                "network", "connect", "app", "--netns", web.path, "--name", "web",
                "--format", "json",
            ).stdout  # fmt: skip
            web_addr = json.loads(out)["addresses"][0].split("/")[0]
            daemon.cli("network", "connect", "app", "--netns", client.path, "--name", "client")
            for scenario in scenarios:
                runs = [
                    one_round(daemon, client, web_addr, scenario, args) for _ in range(args.rounds)
                ]
                raw[scenario] = runs
                rows.append(
                    [
                        scenario,
                        args.rounds,
                        sum(r["sent"] for r in runs),
                        sum(r["failed"] for r in runs),
                        f"{max(r['longest_outage_s'] for r in runs) * 1000:.0f}",
                        f"{max(r['max_latency_s'] for r in runs) * 1000:.1f}",
                        f"{max(r['daemon_ready_s'] for r in runs):.2f}",
                        max(r["workers_after"] for r in runs),
                    ]
                )
                print(f"{scenario}: {runs}", file=sys.stderr, flush=True)
        finally:
            daemon.close()
    headers = [
        "scenario", "rounds", "sent", "failed", "longest outage ms", "slowest answer ms",
        "daemon ready s", "workers after",
    ]  # fmt: skip
    print(format_table(headers, rows))
    print(f"\n{args.rate} q/s, daemon down {args.down} s per round")
    print(f"machine: {machine_description()}")
    path = write_results("dns_restart", {"args": vars(args), "rows": rows, "raw": raw})
    print(f"results: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
