"""`netd demo`: the daemon end to end inside a disposable sandbox, narrated.

Builds a sandbox "host" namespace (never the machine's own), starts `netd daemon` in it with the
embedded SQLite store, creates a public ``frontend`` network and an internal ``backend`` network,
attaches three container namespaces (web on both, db on backend, client on frontend) and shows
real traffic and real DNS. Everything is deleted at the end, also on failure or Ctrl-C.

It runs from a source checkout: the sandbox comes from ``netns-fixtures/`` next to the package.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import click

ROOT = Path(__file__).resolve().parents[2]


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

        say.step("Create networks: frontend (public) and backend (internal)")
        daemon.cli("network", "create", "frontend", "--subnet", "10.201.0.0/24")
        daemon.cli("network", "create", "backend", "--internal", "--subnet", "10.202.0.0/24")
        say.show(daemon.cli("network", "ls").stdout)

        say.step("Attach containers (network namespaces): web on both, db on backend, client")
        ns = {name: box.add_ns(name) for name in ("web", "db", "client")}
        attach = [
            ("frontend", "web", ["-p", "8080:80"]),
            ("backend", "web", []),
            ("backend", "db", []),
            ("frontend", "client", []),
        ]
        servers: dict[str, list[str]] = {name: [] for name in ns}
        for net, name, extra in attach:
            ep = json.loads(
                daemon.cli(
                    "network",
                    "connect",
                    net,
                    "--netns",
                    ns[name].path,
                    "--name",
                    name,
                    "--format",
                    "json",
                    *extra,
                ).stdout
            )
            servers[name] += ep["dns"]["nameservers"]
            say.show(f"{name:<7}{net:<10}{' '.join(ep['addresses']):<28}veth {ep['host_ifname']}")
        for name, n in ns.items():
            _write_resolv(n.name, servers[name])

        say.step("Traffic")
        web_fe = _addr(daemon, "frontend", "web")
        db_be = _addr(daemon, "backend", "db")
        say.check(f"client -> web on frontend ({web_fe})", ns["client"].ping(web_fe))
        say.check(f"web -> db on backend ({db_be})", ns["web"].ping(db_be))
        say.check(
            f"client -> db on internal backend ({db_be}) is blocked",
            ns["client"].ping(db_be),
            expect=False,
        )
        say.check("client -> the internet (192.0.2.2), masqueraded", ns["client"].ping("192.0.2.2"))
        say.check(
            "db (internal network) -> the internet is blocked",
            ns["db"].ping("192.0.2.2"),
            expect=False,
        )

        say.step("DNS: containers find each other by name")
        for who, name, expect in (
            ("web", "db", True),
            ("client", "web", True),
            ("client", "db", False),
        ):
            out = ns[who].run("getent", "hosts", name, check=False).strip()
            say.check(f"{who}: getent hosts {name} -> {out or 'not found'}", bool(out), expect)

        say.step("Published port: web's :80 as host :8080, reached from the internet")
        server = ns["web"].spawn(sys.executable, "-c", _HTTP_ONE_SHOT)
        time.sleep(0.5)
        got = outside.run("curl", "-s", "-m", "3", "http://192.0.2.1:8080/", check=False)
        say.check(
            f"curl http://192.0.2.1:8080/ from the internet -> {got.strip()!r}",
            "hello from web" in got,
        )
        server.kill()

        say.step("What netd did (network inspect frontend, abridged)")
        data = json.loads(daemon.cli("network", "inspect", "frontend").stdout)[0]
        say.show(
            json.dumps({k: data[k] for k in ("name", "bridge", "subnets", "ipam_usage")}, indent=2)
        )
        for ep in data["endpoints"]:
            say.show(
                f"endpoint {ep['container_id']}: {ep['ifname']} {ep['addresses']} "
                f"host veth {ep['host_ifname']}"
            )
        if keep:
            click.prompt("sandbox kept; press Enter to tear down", default="", show_default=False)

        say.step("Tear down: disconnect, remove networks, stop the daemon")
        for net, name, _ in attach:
            daemon.cli("network", "disconnect", net, "--netns", ns[name].path)
        daemon.cli("network", "rm", "frontend", "backend")
        links = [n for n in host.links() if n.startswith(("nd-", "nv"))]
        say.check("no netd bridge or veth left in the host namespace", not links)
    finally:
        if daemon is not None:
            daemon.close()
        _unresolv(box)
        box.close()
    if say.failed:
        raise click.ClickException(f"{say.failed} demo check(s) failed")
    click.echo(click.style("\nDemo complete: sandbox deleted, nothing left behind.", bold=True))


def _addr(daemon: Any, net: str, name: str) -> str:
    data = json.loads(daemon.cli("network", "inspect", net).stdout)[0]
    for ep in data["endpoints"]:
        if ep["name"] == name:
            return str(ep["addresses"][0].split("/")[0])
    raise click.ClickException(f"{name} not on {net}")


def _write_resolv(ns_name: str, servers: list[str]) -> None:
    """resolv.conf for one container (``ip netns exec`` bind-mounts /etc/netns/<ns>/)."""
    etc = Path("/etc/netns") / ns_name
    etc.mkdir(parents=True, exist_ok=True)
    lines = [f"nameserver {s}" for s in servers[:3]] + ["search dns.netd", "options timeout:1"]
    (etc / "resolv.conf").write_text("\n".join(lines) + "\n")


def _unresolv(box: Any) -> None:
    import shutil

    for n in box.namespaces:
        shutil.rmtree(Path("/etc/netns") / n.name, ignore_errors=True)


_HTTP_ONE_SHOT = """
import http.server
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200); self.end_headers(); self.wfile.write(b"hello from web\\n")
    def log_message(self, *a): pass
http.server.HTTPServer(("0.0.0.0", 80), H).serve_forever()
"""
