"""`netd demo`: the daemon end to end inside a disposable sandbox, narrated.

Builds a sandbox "host" namespace (never the machine's own) wired to an "internet" namespace,
starts `netd daemon` in it with the embedded SQLite store and the nftables firewall, and brings up
the bundled three-tier compose example (examples/three-tier) with `netd compose up`: a public
``frontend`` network and an internal ``backend`` network holding the database. It then shows
real DNS (glibc's resolver inside the sandboxes), real traffic, the internal network's isolation
and a published port reached from the "internet". Everything is deleted at the end, also on
failure or Ctrl-C.

It runs from a source checkout: the sandbox comes from ``netns-fixtures/`` next to the package.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import click

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "three-tier" / "compose.yaml"


def _fixtures() -> Any:
    sys.path.insert(0, str(ROOT / "netns-fixtures"))
    try:
        import netns_fixtures
        import netns_fixtures.daemon
    except ImportError:
        raise click.ClickException(
            "the demo runs from a source checkout (netns-fixtures/ not found next to netd/)"
        ) from None
    return netns_fixtures


class Narrator:
    """Prints steps and checks; counts failed checks."""

    def __init__(self) -> None:
        self.failed = 0

    def step(self, text: str) -> None:
        click.echo(click.style(f"\n==> {text}", bold=True))

    def show(self, text: str) -> None:
        click.echo("    " + text.rstrip().replace("\n", "\n    "))

    def check(self, what: str, ok: bool, expect: bool = True) -> None:
        good = ok == expect
        self.failed += 0 if good else 1
        mark = click.style("ok  ", fg="green") if good else click.style("FAIL", fg="red")
        click.echo(f"    [{mark}] {what}")


@click.command()
@click.option("--keep", is_flag=True, help="wait for Enter before tearing the sandbox down")
def demo(keep: bool) -> None:
    """Run netd end to end in a sandbox network namespace and show what it does."""
    if os.geteuid() != 0:
        raise click.ClickException("the demo needs root (it creates network namespaces)")
    fx = _fixtures()
    say = Narrator()
    box = fx.Sandbox(prefix=f"ndemo-{os.getpid()}")
    daemon = None
    try:
        say.step("Sandbox: a disposable 'host' namespace plays the machine netd manages")
        host = box.add_host()
        outside = box.add_ns("internet")
        box.wire(host, outside, "192.0.2.1/24", "192.0.2.2/24", a_if="uplink0", b_if="wan0")
        host.run("ip", "route", "add", "default", "via", "192.0.2.2")
        say.show(f"host namespace {host.name}; 'internet' namespace {outside.name} at 192.0.2.2")

        say.step("Start `netd daemon` inside it (embedded SQLite store, nftables firewall)")
        daemon = fx.daemon.Daemon(host, firewall="auto").start()
        say.show(f"socket {daemon.socket}, state {daemon.state_dir}")
        say.show(daemon.cli("status").stdout)

        compose = ["compose", "-f", str(EXAMPLE), "-p", box.prefix]
        say.step(f"`netd compose up` the bundled three-tier example ({EXAMPLE.relative_to(ROOT)})")
        say.show("frontend (public): web, client; backend (internal): web, api, db")
        daemon.cli(*compose, "up")
        say.show(daemon.cli(*compose, "ps").stdout)
        say.show(daemon.cli("network", "ls").stdout)

        def run(service: str, *cmd: str) -> bool:
            proc = daemon.cli(*compose, "exec", service, "--", *cmd, check=False)
            return proc.returncode == 0

        def resolve(service: str, name: str) -> str:
            proc = daemon.cli(*compose, "exec", service, "--", "getent", "hosts", name, check=False)
            return proc.stdout.split()[0] if proc.returncode == 0 and proc.stdout else ""

        say.step("DNS: services find each other by name, only on networks they share")
        for who, name, expect in (
            ("client", "web", True),
            ("web", "db", True),
            ("web", "api.internal", True),
            ("client", "www", True),
            ("client", "db", False),
        ):
            got = resolve(who, name)
            say.check(f"{who}: getent hosts {name} -> {got or 'not found'}", bool(got), expect)

        say.step("Traffic")
        ping = ("ping", "-n", "-q", "-c", "1", "-W", "2")
        say.check("client -> web (frontend)", run("client", *ping, "web"))
        say.check("web -> db (backend)", run("web", *ping, "db"))
        say.check(
            "client -> db's address 10.210.1.10 on the internal backend is blocked",
            run("client", *ping, "10.210.1.10"),
            expect=False,
        )
        say.check(
            "client -> the internet (192.0.2.2), masqueraded", run("client", *ping, "192.0.2.2")
        )
        say.check(
            "db (internal network only) -> the internet is blocked",
            run("db", *ping, "192.0.2.2"),
            expect=False,
        )

        say.step("Published port: web's :80 as host :8080, reached from the internet")
        server = subprocess.Popen(
            [
                fx.daemon.NETD,
                "--socket",
                str(daemon.socket),
                *compose,
                "exec",
                "web",
                "--",
                sys.executable,
                "-c",
                _HTTP_ONE_SHOT,
            ],
            start_new_session=True,
        )
        try:
            got = ""
            for _ in range(20):
                time.sleep(0.25)
                got = outside.run("curl", "-s", "-m", "2", "http://192.0.2.1:8080/", check=False)
                if got:
                    break
            say.check(
                f"curl http://192.0.2.1:8080/ from the internet -> {got.strip()!r}",
                "hello from web" in got,
            )
        finally:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()

        say.step("What netd did (network inspect, abridged)")
        for net in json.loads(
            daemon.cli(
                "network", "inspect", f"{box.prefix}_frontend", f"{box.prefix}_backend"
            ).stdout
        ):
            say.show(
                f"{net['name']}: bridge {net['bridge']}, {net['subnets'][0]['subnet']}, "
                f"internal={net['internal']}, {len(net['endpoints'])} endpoints"
            )
            for ep in net["endpoints"]:
                say.show(
                    f"  {ep['name']:<8}{ep['ifname']:<6}{' '.join(ep['addresses']):<18}"
                    f"host veth {ep['host_ifname']}"
                )
        if keep:
            click.prompt("sandbox kept; press Enter to tear down", default="", show_default=False)

        say.step("`netd compose down`: remove sandboxes, endpoints and networks")
        daemon.cli(*compose, "down")
        links = [n for n in host.links() if n.startswith(("nd-", "nv"))]
        say.check("no netd bridge or veth left in the host namespace", not links)
        say.check("no project network left", not daemon.cli("network", "ls", "-q").stdout.strip())
    except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
        # A step that could not run at all (a missing tool, the daemon not starting): say which
        # and why, without a traceback; the sandbox is still torn down below.
        raise click.ClickException(f"the demo stopped: {exc}") from exc
    finally:
        if daemon is not None:
            # Best effort on the failure path: compose down removes the project's sandboxes.
            daemon.cli("compose", "-f", str(EXAMPLE), "-p", box.prefix, "down", check=False)
            daemon.close()
        box.close()
    if say.failed:
        raise click.ClickException(f"{say.failed} demo check(s) failed")
    click.echo(click.style("\nDemo complete: sandbox deleted, nothing left behind.", bold=True))


_HTTP_ONE_SHOT = """
import http.server
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200); self.end_headers(); self.wfile.write(b"hello from web\\n")
    def log_message(self, *a): pass
http.server.HTTPServer(("0.0.0.0", 80), H).serve_forever()
"""
