"""Compose behaves as docker compose users expect (issue #13 §6), with real DNS and connections.

Each test runs its own daemon in a fresh host namespace; where ports are published it uses a
real firewall backend (both backends where the firewall rule itself is what is tested), and an
"outside" namespace wired to the host (192.0.2.1 / 192.0.2.2) plays the client on the LAN.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from netns_fixtures import Namespace, Sandbox, wait_for
from netns_fixtures.daemon import Daemon
from test_compose_up import Compose, compose_project

# Answers every TCP connection with the hostname of the UTS namespace it runs in.
WHOAMI = r"""
import socket, sys
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", int(sys.argv[1]))); s.listen(16)
while True:
    c, _ = s.accept(); c.sendall(socket.gethostname().encode()); c.close()
"""
ASK = r"""
import socket, sys
s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=2)
print(s.recv(100).decode())
"""
# A UDP "DNS server" that answers anything with b"hijacked" (what a pihole would be).
UDP_ECHO = r"""
import socket
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("0.0.0.0", 53))
while True:
    d, a = s.recvfrom(512); s.sendto(b"hijacked", a)
"""
UDP_ASK = r"""
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(2)
s.sendto(b"q", (sys.argv[1], 53)); print(s.recv(100).decode())
"""


@pytest.fixture
def compose(sandbox: Sandbox, daemon: Daemon, tmp_path: Path) -> Iterator[Compose]:
    """A compose project bound to the test's daemon (firewall: none; see test_compose_up)."""
    yield from compose_project(sandbox, daemon, tmp_path)


@contextmanager
def firewalled(
    sandbox: Sandbox, host: Namespace, tmp_path: Path, backend: str = "nftables"
) -> Iterator[tuple[Daemon, Namespace]]:
    """A daemon with a real firewall backend, and an outside namespace wired to the host."""
    daemon = Daemon(host, firewall=backend).start()
    try:
        outside = sandbox.add_ns("outside")
        sandbox.wire(host, outside, "192.0.2.1/24", "192.0.2.2/24")
        yield daemon, outside
    finally:
        daemon.close_checked()


def project(sandbox: Sandbox, daemon: Daemon, tmp: Path, suffix: str) -> Compose:
    """A second (third...) project on the same daemon: its own directory and name."""
    tmp.mkdir(exist_ok=True)
    c = Compose(sandbox, daemon, tmp)
    c.name = f"{sandbox.prefix}-{suffix}"
    return c


def serve(c: Compose, service: str, *argv: str) -> subprocess.Popen[str]:
    """Start a long-running command through `netd compose exec` (its hostname, its DNS)."""
    flags = [x for f in c.files for x in ("-f", f)]
    return subprocess.Popen(
        [
            *(str(Path(sys.executable).parent / "netd"), "--socket", str(c.daemon.socket)),
            *("compose", *flags, "-p", c.name, "exec", service, "--", *argv),
        ],
        cwd=c.dir,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        text=True,
    )


def stop(*procs: subprocess.Popen[str]) -> None:
    for proc in procs:
        proc.kill()  # by the PID we started
        proc.wait()


def ask(ns: Namespace, host: str, port: int) -> str:
    return ns.run(sys.executable, "-c", ASK, host, str(port), check=False).strip()


def answers(ns: Namespace, host: str, port: int, want: str) -> bool:
    """Wait until host:port answers ``want`` (the server may take a moment to listen)."""
    try:
        wait_for(f"{host}:{port} answering {want}", lambda: ask(ns, host, port) == want, 15, 0.2)
    except Exception:
        return False
    return True


# --- port 53 published by one project: the other's DNS still works ----------------------------


@pytest.mark.parametrize("backend", ["nftables", "iptables"])
def test_published_port_53_does_not_capture_gateway_dns(
    sandbox: Sandbox, host: Namespace, tmp_path: Path, backend: str
) -> None:
    with firewalled(sandbox, host, tmp_path, backend) as (daemon, outside):
        pihole = project(sandbox, daemon, tmp_path / "a", "pihole")
        other = project(sandbox, daemon, tmp_path / "b", "other")
        procs = []
        try:
            pihole.write(
                "services:\n  pihole:\n    ports: ['53:53/udp', '53:53/tcp']\n"
                "networks: {default: {ipam: {config: [{subnet: 10.240.0.0/24}]}}}\n"
            )
            pihole.up()
            other.write(
                "services:\n  client: {}\n  peer: {}\n"
                "networks: {default: {ipam: {config: [{subnet: 10.241.0.0/24}]}}}\n"
            )
            other.up()
            procs.append(serve(pihole, "pihole", sys.executable, "-c", UDP_ECHO))
            # the published port works from the LAN...
            wait_for(
                "pihole answering on the host's address",
                lambda: (
                    outside.run(sys.executable, "-c", UDP_ASK, "192.0.2.1", check=False).strip()
                    == "hijacked"
                ),
                15,
                0.2,
            )
            # ...and the other project still resolves through netd's DNS on its gateway
            peer = other.addr("default", "peer")
            got = other.exec("client", "dig", "+short", "+time=2", "+tries=2", "peer")
            assert got.returncode == 0 and got.stdout.strip() == peer, got
            got = other.exec("client", "getent", "hosts", "peer")
            assert got.returncode == 0 and peer in got.stdout, got
            # and the host itself reaches netd's DNS on the gateway (the output chain), not the
            # pihole: a real DNS header comes back (netd answers its containers' names to its
            # containers only, so no address is expected here)
            got = host.run("dig", "+time=2", "+tries=2", "@10.241.0.1", "peer", check=False)
            assert "->>HEADER<<-" in got and "hijacked" not in got, got
        finally:
            stop(*procs)
            other.cleanup()
            pihole.cleanup()
    assert not other.leftovers() and not pihole.leftovers()


# --- ports of a service whose first network is internal ----------------------------------------


def test_port_of_service_with_internal_first_network_answers(
    sandbox: Sandbox, host: Namespace, tmp_path: Path
) -> None:
    with firewalled(sandbox, host, tmp_path) as (daemon, outside):
        c = Compose(sandbox, daemon, tmp_path)
        procs = []
        try:
            c.write(
                """
                services:
                  web:
                    hostname: webhost
                    networks: [back, front]
                    ports: ["18083:8000"]
                networks:
                  back: {internal: true}
                  front: {}
                """
            )
            c.up()
            procs.append(serve(c, "web", sys.executable, "-c", WHOAMI, "8000"))
            assert answers(outside, "192.0.2.1", 18083, "webhost")
            rows = json.loads(c.run("ps", "--format", "json").stdout)
            assert rows[0]["ports"] == ["0.0.0.0:18083->8000/tcp"]
            ep = c.network("front")["endpoints"][0]
            assert ep["port_mappings"] and not c.network("back")["endpoints"][0]["port_mappings"]
        finally:
            stop(*procs)
            c.cleanup()
    assert not c.leftovers()


# --- a host-port range with replicas: one port each -------------------------------------------


def test_each_replica_gets_its_own_port_from_the_range(
    sandbox: Sandbox, host: Namespace, tmp_path: Path
) -> None:
    with firewalled(sandbox, host, tmp_path) as (daemon, outside):
        c = Compose(sandbox, daemon, tmp_path)
        procs = []
        try:
            c.write("services:\n  web:\n    scale: 2\n    ports: ['18100-18101:8000']\n")
            c.up()
            for n in (1, 2):
                procs.append(serve(c, f"web.{n}", sys.executable, "-c", WHOAMI, "8000"))
            # each replica's own hostname (its UTS namespace) answers on its own port
            assert answers(outside, "192.0.2.1", 18100, f"{c.name}-web-1")
            assert answers(outside, "192.0.2.1", 18101, f"{c.name}-web-2")
            assert "nothing changed" in c.up()
        finally:
            stop(*procs)
            c.cleanup()
    assert not c.leftovers()


# --- daemon errors during up point at the file ---------------------------------------------------


def test_daemon_error_during_up_names_the_files_line(
    sandbox: Sandbox, host: Namespace, tmp_path: Path
) -> None:
    with firewalled(sandbox, host, tmp_path) as (daemon, _):
        first = project(sandbox, daemon, tmp_path / "a", "one")
        second = project(sandbox, daemon, tmp_path / "b", "two")
        try:
            first.write("services:\n  web:\n    ports: ['18110:80']\n")
            first.up()
            second.write("services:\n  api:\n    image: x\n    ports:\n      - '18110:81'\n")
            before = second.leftovers()
            got = second.run("up", check=False)
            assert got.returncode == 1, got
            err = got.stderr.strip()
            assert err.startswith("Error: compose.yaml:4: services.api.ports: "), err
            assert "18110" in err and "POST /v1" not in err, err
            assert second.leftovers() == before  # rolled back: no sandbox, no state file
            _, nets = daemon.request("GET", "/v1/networks")
            assert not [n for n in nets if n["name"].startswith(second.name)]
        finally:
            second.cleanup()
            first.cleanup()


# --- [::1] is refused clearly, whoever asks ----------------------------------------------------


def test_ipv6_loopback_publish_is_refused(compose: Compose) -> None:
    compose.write("services:\n  web:\n    ports: ['[::1]:18120:80']\n")
    got = compose.run("up", check=False)
    assert got.returncode == 1
    assert got.stderr.startswith(
        'Error: compose.yaml:3: services.web.ports[0]: "[::1]:18120:80" host address ::1 '
        "cannot be published on"
    ), got.stderr
    # the API (and so the CLI and CNI) refuses it too, before anything changes
    compose.daemon.cli("network", "create", "plain")
    ns = compose.sandbox.add_ns("c")
    status, body = compose.daemon.request(
        "POST",
        "/v1/networks/plain/connect",
        {
            "netns": ns.path,
            "publish": [{"host_port": 18120, "container_port": 80, "host_ip": "::1"}],
        },
    )
    assert status == 400, body
    assert body["error"]["field"] == "port_mappings[0].host_ip", body
    assert compose.daemon.request("GET", "/v1/networks/plain")[1]["endpoints"] == []
    compose.daemon.cli("network", "rm", "plain")


# --- names: links, external key, hostname ------------------------------------------------------


def test_links_hostname_external_and_exec(compose: Compose) -> None:
    compose.daemon.cli("network", "create", "extnet", "--subnet", "10.242.0.0/24")
    try:
        compose.write(
            """
            services:
              web:
                links: ["db:database"]
                hostname: webhost
                domainname: example.org
              db: {}
              side:
                networks: [extnet]
            networks:
              extnet: {external: true}
            """
        )
        compose.up()
        db = compose.addr("default", "db")
        for cmd in (("dig", "+short", "+time=2", "+tries=2", "database"), ("getent", "hosts")):
            got = compose.exec("web", *cmd, *(["database"] if cmd[0] == "getent" else []))
            assert got.returncode == 0 and db in got.stdout, got
        # hostname and domainname: the sandbox's own UTS namespace
        assert compose.exec("web", "hostname").stdout.strip() == "webhost"
        assert compose.exec("web", "domainname").stdout.strip() == "example.org"
        assert compose.exec("db", "hostname").stdout.strip() == f"{compose.name}-db-1"
        assert (
            compose.sandbox.prefix
            not in subprocess.run(["hostname"], capture_output=True, text=True, check=True).stdout
        )  # the machine's own hostname is untouched
        # `external: true` without `name:` is the key as is
        _, ext = compose.daemon.request("GET", "/v1/networks/extnet")
        assert [e["container_id"] for e in ext["endpoints"]] == [f"{compose.name}-side-1"]
        # a missing command exits 127, as a shell would; a command's own code is kept
        got = compose.exec("web", "no-such-command-here")
        assert got.returncode == 127 and "not found" in got.stderr, got
        assert compose.exec("web", "sh", "-c", "exit 3").returncode == 3
        compose.run("down")
        assert not compose.leftovers()
    finally:
        compose.daemon.cli("network", "rm", "extnet")


# --- profiles, `up SERVICE`, and -p NAME alone ------------------------------------------------

PROFILED = """
services:
  web: {depends_on: [db]}
  db: {}
  other: {}
  debug: {profiles: [debug]}
"""


def test_profiles_up_service_and_project_name_alone(compose: Compose, tmp_path: Path) -> None:
    compose.write(PROFILED)
    compose.run("up", "web")
    sb = lambda: sorted(  # noqa: E731 - a tiny local query
        p.removeprefix(f"/run/netns/{compose.name}-")
        for p in compose.leftovers()
        if p.startswith("/run/netns/")
    )
    assert sb() == ["db-1", "web-1"]
    compose.run("--profile", "debug", "up")
    assert sb() == ["db-1", "debug-1", "other-1", "web-1"]
    compose.up()  # without the profile: debug is disabled, not removed
    assert sb() == ["db-1", "debug-1", "other-1", "web-1"]
    # exec names the service: enabled whatever its profiles, as compose does
    got = compose.exec("debug", "hostname")
    assert got.returncode == 0 and got.stdout.strip() == f"{compose.name}-debug-1", got
    # ps, exec and down with -p NAME alone, from a directory without a compose file
    empty = tmp_path / "elsewhere"
    empty.mkdir()
    cli = compose.daemon.cli
    rows = json.loads(
        cli("compose", "-p", compose.name, "ps", "--format", "json", cwd=empty).stdout
    )
    assert sorted(r["sandbox"] for r in rows) == [
        f"{compose.name}-{s}-1" for s in ("db", "debug", "other", "web")
    ]
    assert all(r["state"] == "up" and r["networks"] for r in rows), rows
    db = compose.addr("default", "db")
    got = cli("compose", "-p", compose.name, "exec", "web", "getent", "hosts", "db", cwd=empty)
    assert db in got.stdout
    cli("compose", "-p", compose.name, "down", cwd=empty)
    assert not compose.leftovers()
    _, nets = compose.daemon.request("GET", "/v1/networks")
    assert not [n for n in nets if n["name"].startswith(compose.name)]
    got = cli("compose", "-p", compose.name, "ps", cwd=empty, check=False)
    assert got.returncode == 1 and "holds no project of that name" in got.stderr


def test_unset_variable_warns(compose: Compose) -> None:
    compose.write("services:\n  web:\n    image: ${NETD_TEST_UNSET_IMAGE}\n")
    got = compose.run("up")
    assert (
        'WARNING: The "NETD_TEST_UNSET_IMAGE" variable is not set. Defaulting to a blank string.'
        in got.stderr
    )
