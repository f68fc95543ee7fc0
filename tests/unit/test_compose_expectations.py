# ruff: noqa: E501 - exact error messages and YAML snippets are clearer unwrapped
"""What docker compose users expect (issue #13 §6), at the parse and plan level (pure)."""

from __future__ import annotations

import ipaddress
import textwrap
from pathlib import Path

import pytest

from netd.compose.apply import _blame, _connect_path, _is_stale
from netd.compose.errors import ComposeError
from netd.compose.plan import sandboxes
from netd.compose.project import load_project
from netd.errors import Conflict, InvalidInput
from netd.firewall.policy import check_port_mappings
from netd.model import PortMapping


def load(tmp: Path, text: str, **kw: object):  # type: ignore[no-untyped-def]
    (tmp / "compose.yaml").write_text(textwrap.dedent(text))
    kw.setdefault("environ", {})
    return load_project(["compose.yaml"], project="p", cwd=tmp, **kw)  # type: ignore[arg-type]


def refused(tmp: Path, text: str, **kw: object) -> str:
    with pytest.raises(ComposeError) as exc:
        load(tmp, text, **kw)
    return str(exc.value)


def publish(sb_connects: tuple[tuple[str, dict[str, object]], ...]) -> dict[str, object]:
    return {net: body.get("publish") for net, body in sb_connects}


# --- ports of a service whose first network is internal ------------------------------------

INTERNAL_FIRST = """
    services:
      web:
        networks: [back, front]
        ports: ["8080:80"]
    networks:
      back: {internal: true}
      front: {}
"""


def test_ports_go_to_the_first_non_internal_network(tmp_path: Path) -> None:
    p = load(tmp_path, INTERNAL_FIRST)
    [sb] = sandboxes(p)
    assert [n for n, _ in sb.connects] == ["p_back", "p_front"]  # order kept: back is eth0
    assert publish(sb.connects) == {
        "p_back": None,
        "p_front": [{"host_port": 8080, "container_port": 80, "protocol": "tcp"}],
    }


def test_ports_on_only_internal_networks_are_refused(tmp_path: Path) -> None:
    msg = refused(
        tmp_path,
        """
        services:
          web:
            networks: [back]
            ports: ["8080:80"]
        networks:
          back: {internal: true}
        """,
    )
    assert msg == (
        "compose.yaml:5: services.web.ports: cannot be published: every network of service "
        "'web' is internal (back); attach it to a non-internal network too"
    )


def test_an_external_internal_network_is_skipped_once_the_daemon_says_so(tmp_path: Path) -> None:
    text = """
        services:
          web:
            networks: [ext, front]
            ports: ["8080:80"]
        networks:
          ext: {external: true}
          front: {}
    """
    p = load(tmp_path, text)
    [sb] = sandboxes(p)
    assert publish(sb.connects)["ext"]  # the file cannot tell: the first network
    [sb] = sandboxes(p, frozenset({"ext"}))  # the daemon says ext is internal
    assert publish(sb.connects)["ext"] is None and publish(sb.connects)["p_front"]


# --- external networks ----------------------------------------------------------------------


def test_external_without_name_is_the_key_as_is(tmp_path: Path) -> None:
    p = load(
        tmp_path,
        """
        services: {web: {networks: [shared, named]}}
        networks:
          shared: {external: true}
          named: {external: true, name: other-net}
        """,
    )
    assert p.networks["shared"].name == "shared"
    assert p.networks["named"].name == "other-net"


# --- links and depends_on -------------------------------------------------------------------


def test_link_alias_is_added_to_the_target_on_shared_networks(tmp_path: Path) -> None:
    p = load(
        tmp_path,
        """
        services:
          web: {links: ["db:database", "cache"], networks: [front, back]}
          db: {networks: [back, other]}
          cache: {networks: [front]}
        networks: {front: {}, back: {}, other: {}}
        """,
    )
    db = next(sb for sb in sandboxes(p) if sb.service == "db")
    aliases = {net: body["aliases"] for net, body in db.connects}
    assert aliases == {"p_back": ["p-db-1", "database"], "p_other": ["p-db-1"]}
    assert p.warnings == ()


def test_link_without_a_shared_network_warns(tmp_path: Path) -> None:
    p = load(
        tmp_path,
        """
        services:
          web: {links: ["db:database"], networks: [a]}
          db: {networks: [b]}
        networks: {a: {}, b: {}}
        """,
    )
    assert p.warnings == (
        "services.web.links: db:database: 'web' and 'db' share no network, so 'database' cannot resolve",
    )


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "services:\n  web:\n    depends_on: [db]\n",
            'compose.yaml:3: services.web.depends_on: "db" depends on undefined service "db"',
        ),
        (
            "services:\n  web:\n    depends_on:\n      cache: {condition: service_started}\n      db: {condition: service_healthy}\n  cache: {}\n",
            'compose.yaml:5: services.web.depends_on: "db" depends on undefined service "db"',
        ),
        (
            "services:\n  web:\n    links:\n      - db:database\n",
            'compose.yaml:4: services.web.links: "db" links to undefined service "db"',
        ),
    ],
    ids=["depends_on-list", "depends_on-map", "links"],
)
def test_references_to_undefined_services_are_refused(
    tmp_path: Path, text: str, message: str
) -> None:
    assert refused(tmp_path, text) == message


def test_optional_dependency_may_be_missing(tmp_path: Path) -> None:
    p = load(tmp_path, "services:\n  web:\n    depends_on: {db: {required: false}}\n")
    assert p.services["web"].depends_on == (("db", False),)


# --- port ranges and replicas ---------------------------------------------------------------


def test_host_range_gives_each_replica_its_own_port(tmp_path: Path) -> None:
    p = load(tmp_path, "services:\n  web:\n    scale: 3\n    ports: ['8000-8002:80']\n")
    ports = {sb.name: sb.connects[0][1]["publish"] for sb in sandboxes(p)}
    assert {n: [x["host_port"] for x in v] for n, v in ports.items()} == {  # type: ignore[attr-defined]
        "p-web-1": [8000],
        "p-web-2": [8001],
        "p-web-3": [8002],
    }


def test_replicas_with_deploy_and_a_long_syntax_range(tmp_path: Path) -> None:
    p = load(
        tmp_path,
        "services:\n  web:\n    deploy: {replicas: 2}\n    ports: [{target: 80, published: '9000-9005'}]\n",
    )
    assert [sb.connects[0][1]["publish"][0]["host_port"] for sb in sandboxes(p)] == [9000, 9001]  # type: ignore[index]


@pytest.mark.parametrize(
    ("ports", "message"),
    [
        (
            "['8080:80']",
            'compose.yaml:4: services.web.ports[0]: "8080:80" host port 8080 cannot be published by 3 replicas (each needs its own: give a range, e.g. "8080-8082:80")',
        ),
        (
            "['8000-8001:80']",
            'compose.yaml:4: services.web.ports[0]: "8000-8001:80" host port range 8000-8001 has fewer ports than the 3 replicas',
        ),
    ],
)
def test_replicas_without_enough_host_ports_are_refused(
    tmp_path: Path, ports: str, message: str
) -> None:
    assert refused(tmp_path, f"services:\n  web:\n    scale: 3\n    ports: {ports}\n") == message


# --- profiles and `up SERVICE...` -----------------------------------------------------------

PROFILES = """
    services:
      web: {depends_on: [db]}
      db: {}
      debug: {profiles: [debug], depends_on: [db]}
      test_lib: {profiles: [test]}
      coverage: {profiles: [test], depends_on: [test_lib]}
      broken: {profiles: [debug2], depends_on: [test_lib]}
"""


def names(p: object) -> list[str]:
    return [sb.name for sb in sandboxes(p)]  # type: ignore[arg-type]


def test_profiles_select_services(tmp_path: Path) -> None:
    assert names(load(tmp_path, PROFILES)) == ["p-web-1", "p-db-1"]
    assert names(load(tmp_path, PROFILES, profiles=["test"])) == [
        "p-web-1",
        "p-db-1",
        "p-test_lib-1",
        "p-coverage-1",
    ]
    env = {"COMPOSE_PROFILES": "debug,test"}
    assert "p-debug-1" in names(load(tmp_path, PROFILES, environ=env))
    # an enabled service referring to one disabled by profiles: compose refuses
    msg = refused(tmp_path, PROFILES, profiles=["debug2"])
    assert msg == (
        'compose.yaml:8: services.broken.depends_on: "test_lib" refers to service "test_lib", '
        "which is disabled by profiles (enable one of: test, with --profile)"
    )
    assert len(names(load(tmp_path, PROFILES, profiles=["*"]))) == 6


def test_up_service_targets_it_and_its_dependencies(tmp_path: Path) -> None:
    p = load(tmp_path, PROFILES, services=["web"])
    assert p.targets == ("web", "db") and names(p) == ["p-web-1", "p-db-1"]
    # a targeted service is enabled whatever its profiles, and its profiles become active
    p = load(tmp_path, PROFILES, services=["coverage"])
    assert names(p) == ["p-test_lib-1", "p-coverage-1"]
    assert refused(tmp_path, PROFILES, services=["nope"]) == (
        '"nope" no such service (services: web, db, debug, test_lib, coverage, broken)'
    )


def test_up_service_leaves_other_services_sandboxes(tmp_path: Path) -> None:
    p = load(tmp_path, PROFILES, services=["web"])
    assert _is_stale(p, "p-web-2")  # a replica of a targeted service beyond its scale
    assert not _is_stale(p, "p-test_lib-1")  # defined but not targeted: left alone
    assert _is_stale(p, "p-gone-1")  # no longer in the file: an orphan
    p = load(tmp_path, PROFILES)
    assert not _is_stale(p, "p-debug-1")  # disabled by profiles: left alone


def test_networks_only_of_disabled_services_are_not_created(tmp_path: Path) -> None:
    text = """
        services:
          web: {networks: [a]}
          tool: {profiles: [tools], networks: [b]}
        networks: {a: {}, b: {}, declared: {}}
    """
    assert sorted(load(tmp_path, text).networks) == ["a", "declared"]
    assert sorted(load(tmp_path, text, profiles=["tools"]).networks) == ["a", "b", "declared"]


# --- interpolation ----------------------------------------------------------------------------


def test_unset_variable_warns_like_docker_compose(tmp_path: Path) -> None:
    p = load(
        tmp_path,
        "services:\n  web:\n    image: ${IMAGE}\n    hostname: $HOST\n    environment: ['A=${IMAGE}', 'B=${D:-x.example}']\n",
    )
    assert p.warnings == (
        'The "IMAGE" variable is not set. Defaulting to a blank string.',
        'The "HOST" variable is not set. Defaulting to a blank string.',
    )
    assert (
        load(tmp_path, "services:\n  web:\n    image: ${IMAGE}\n", environ={"IMAGE": ""}).warnings
        == ()
    )


# --- hostname, [::1] --------------------------------------------------------------------------


def test_hostname_longer_than_host_name_max_is_refused(tmp_path: Path) -> None:
    long = "h" * 40 + "." + "d" * 30
    assert refused(tmp_path, f"services:\n  web:\n    hostname: {long}\n") == (
        f'compose.yaml:3: services.web.hostname: "{long}" is longer than 63 characters (HOST_NAME_MAX)'
    )


def test_ipv6_loopback_is_refused_in_compose(tmp_path: Path) -> None:
    msg = refused(tmp_path, "services:\n  web:\n    ports: ['[::1]:8080:80']\n")
    assert msg.startswith(
        'compose.yaml:3: services.web.ports[0]: "[::1]:8080:80" host address ::1 cannot be '
        "published on: the kernel does not deliver IPv6 loopback traffic"
    )
    msg = refused(
        tmp_path, "services:\n  web:\n    ports: [{target: 80, published: 80, host_ip: '::1'}]\n"
    )
    assert "services.web.ports[0].host_ip" in msg and "host address ::1" in msg


def test_ipv6_loopback_is_refused_for_every_caller() -> None:
    ok = PortMapping(8080, 80, "tcp", ipaddress.ip_address("127.0.0.1"))
    check_port_mappings((ok, PortMapping(8081, 80, "tcp", ipaddress.ip_address("::"))))
    with pytest.raises(InvalidInput) as exc:
        check_port_mappings((ok, PortMapping(8080, 80, "tcp", ipaddress.ip_address("::1"))))
    assert exc.value.field == "port_mappings[1].host_ip" and exc.value.value == "::1"
    assert "IPv6 has no route_localnet" in str(exc.value)


# --- daemon errors point at the file ------------------------------------------------------------


def test_daemon_errors_are_reported_against_the_files_line(tmp_path: Path) -> None:
    p = load(tmp_path, INTERNAL_FIRST)
    [sb] = sandboxes(p)
    err = Conflict(
        "POST /v1/networks/p_front/connect: host port 8080/tcp is already published",
        field="port_mappings",
    )
    err.daemon_message = "host port 8080/tcp is already published by x"  # type: ignore[attr-defined]
    out = _blame(p, _connect_path(sb, "front", err), err)
    assert isinstance(out, Conflict)
    assert (
        str(out)
        == "compose.yaml:5: services.web.ports: host port 8080/tcp is already published by x"
    )
    other = InvalidInput("mac", "x", "bad")
    assert _connect_path(sb, "front", other) == "services.web.networks.front.mac_address"
    # no recorded position for the key itself: the nearest parent's line
    assert str(_blame(p, "services.web.networks.front.mac_address", other)).startswith(
        "compose.yaml:4: services.web.networks.front.mac_address: "
    )
