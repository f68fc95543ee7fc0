# ruff: noqa: E501 - exact error messages and YAML snippets are clearer unwrapped
"""Parsing compose files: merge, include, extends, interpolation, project names, exact errors."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from netd.compose.errors import ComposeError
from netd.compose.interpolate import interpolate_text, parse_env_file
from netd.compose.model import Port
from netd.compose.plan import network_body, render_hosts, render_resolv, sandboxes
from netd.compose.ports import parse_port
from netd.compose.project import load_project, normalise_project_name


def write(tmp: Path, name: str, text: str) -> str:
    (tmp / name).write_text(textwrap.dedent(text))
    return name


def load(tmp: Path, *texts: str, env: dict[str, str] | None = None, project: str | None = "p"):  # type: ignore[no-untyped-def]
    files = [write(tmp, f"c{i}.yaml" if i else "compose.yaml", t) for i, t in enumerate(texts)]
    return load_project(files, project=project, environ=env or {}, cwd=tmp)


def test_minimal_default_network(tmp_path: Path) -> None:
    p = load(tmp_path, "services: {web: {image: nginx, volumes: [x:/y], x-foo: 1}}\nx-any: 3\n")
    assert list(p.networks) == ["default"]
    assert p.networks["default"].name == "p_default"
    assert p.services["web"].attachments[0].network == "default"
    assert [sb.name for sb in sandboxes(p)] == ["p-web-1"]


def test_networks_map_and_attributes(tmp_path: Path) -> None:
    p = load(
        tmp_path,
        """
        services:
          web:
            networks:
              front: {aliases: [www], ipv4_address: 10.1.0.5, mac_address: "02:42:AC:11:00:02",
                      interface_name: fe0, priority: 1}
              back: {gw_priority: 10}
        networks:
          front:
            driver: bridge
            driver_opts: {com.docker.network.driver.mtu: "1400", com.docker.network.bridge.host_binding_ipv4: "1.2.3.4"}
            labels: [a=b]
            ipam: {driver: default, config: [{subnet: 10.1.0.0/24, gateway: 10.1.0.254, ip_range: 10.1.0.128/25, aux_addresses: {r: 10.1.0.2}}]}
          back: {name: custom-back, internal: true, enable_ipv6: true}
        """,
    )
    front = p.networks["front"]
    assert front.options == {"mtu": "1400"}
    assert p.warnings == (
        "networks.front.driver_opts.com.docker.network.bridge.host_binding_ipv4: not supported by netd, ignored",
    )
    assert front.labels["a"] == "b" and front.labels["com.docker.compose.network"] == "front"
    assert p.networks["back"].name == "custom-back"
    web = p.services["web"]
    assert [a.network for a in web.attachments] == ["back", "front"]  # gw_priority first
    fa = web.attachments[1]
    assert (fa.ipv4_address, fa.mac_address, fa.interface_name) == (
        "10.1.0.5",
        "02:42:ac:11:00:02",
        "fe0",
    )
    body = network_body(front)
    assert body["subnets"] == [
        {
            "subnet": "10.1.0.0/24",
            "gateway": "10.1.0.254",
            "ip_range": "10.1.0.128/25",
            "aux_addresses": {"r": "10.1.0.2"},
        }
    ]
    assert body["labels"]["com.docker.compose.config-hash"]
    connects = sandboxes(p)[0].connects
    assert connects[1][1]["aliases"] == ["p-web-1", "www"]
    assert connects[1][1]["ifname"] == "fe0"


def test_merge_override_files(tmp_path: Path) -> None:
    p = load(
        tmp_path,
        """
        services:
          web: {networks: [a], ports: ["80:80"], dns: [1.1.1.1], extra_hosts: ["h1:10.0.0.1"]}
        networks: {a: {}, b: {}}
        """,
        """
        services:
          web:
            networks: {b: {aliases: [x]}}
            ports: ["443:443"]
            dns: [1.1.1.1, 8.8.8.8]
            extra_hosts: {h2: 10.0.0.2}
        networks: {a: {internal: true}}
        """,
    )
    web = p.services["web"]
    assert [a.network for a in web.attachments] == ["a", "b"]
    assert web.attachments[1].aliases == ("x",)
    assert [x.host_port for x in web.ports] == [80, 443]
    assert web.dns == ("1.1.1.1", "8.8.8.8")
    assert web.extra_hosts == (("h1", "10.0.0.1"), ("h2", "10.0.0.2"))
    assert p.networks["a"].internal


def test_reset_and_override_tags(tmp_path: Path) -> None:
    p = load(
        tmp_path,
        "services: {web: {networks: [a, b], ports: ['80:80']}}\nnetworks: {a: {}, b: {}}\n",
        "services: {web: {networks: !override [b], ports: !reset []}}\n",
    )
    assert [a.network for a in p.services["web"].attachments] == ["b"]
    assert p.services["web"].ports == ()


def test_extends_and_include(tmp_path: Path) -> None:
    write(tmp_path, "base.yaml", "services: {common: {networks: [shared], dns: [9.9.9.9]}}\n")
    write(tmp_path, "inc.yaml", "services: {cache: {networks: [shared]}}\nnetworks: {shared: {}}\n")
    p = load(
        tmp_path,
        """
        include: [inc.yaml]
        services:
          web: {extends: {file: base.yaml, service: common}, hostname: w}
          api: {extends: web}
        """,
    )
    assert p.services["web"].dns == ("9.9.9.9",)
    assert p.services["api"].hostname == "w"
    assert [a.network for a in p.services["cache"].attachments] == ["shared"]


def test_interpolation_and_env_file(tmp_path: Path) -> None:
    write(tmp_path, ".env", "SUBNET=10.9.0.0/24\nexport NAME='lit$X'\n# c\nEMPTY=\n")
    p = load(
        tmp_path,
        """
        services:
          web:
            networks: {n: {ipv4_address: "${IP:-10.9.0.7}"}}
            hostname: ${HOST-h1}
            dns_opt: ["x$$y", "${EMPTY:-d}", "${EMPTY-e}"]
        networks:
          n: {ipam: {config: [{subnet: $SUBNET}]}}
        """,
        env={"HOST": "fromenv"},
    )
    assert p.networks["n"].ipam[0].subnet == "10.9.0.0/24"
    web = p.services["web"]
    assert web.attachments[0].ipv4_address == "10.9.0.7"
    assert web.hostname == "fromenv"
    assert web.dns_opt == ("x$y", "d", "")


def test_interpolate_text_forms() -> None:
    env = {"A": "1", "E": ""}
    assert interpolate_text("${A}${B:-x${A}}$A$$A${E+set}${E:+no}", env) == "1x11$Aset"
    assert parse_env_file('A="x\\ny"\nB=1 # c\nC=${A}', "e") == {"A": "x\ny", "B": "1", "C": "x\ny"}


@pytest.mark.parametrize(
    ("name", "want"),
    [("My Project!", "myproject"), ("_x-Y.z", "x-yz"), ("web_1", "web_1")],
)
def test_project_name_normalised(name: str, want: str) -> None:
    assert normalise_project_name(name) == want


def test_project_name_precedence(tmp_path: Path) -> None:
    d = tmp_path / "My_Dir"
    d.mkdir()
    write(d, "compose.yaml", "services: {a: {}}\n")
    assert load_project([], environ={}, cwd=d).name == "my_dir"
    assert load_project([], environ={"COMPOSE_PROJECT_NAME": "envp"}, cwd=d).name == "envp"
    write(d, "compose.yaml", "name: fromfile\nservices: {a: {}}\n")
    assert load_project([], environ={"COMPOSE_PROJECT_NAME": "envp"}, cwd=d).name == "fromfile"
    assert load_project([], project="cli", environ={}, cwd=d).name == "cli"


@pytest.mark.parametrize(
    ("spec", "want"),
    [
        ("80", [Port(80)]),
        (80, [Port(80)]),
        ("8080:80", [Port(80, 8080)]),
        ("22:22", [Port(22, 22)]),
        ("127.0.0.1:8080:80/udp", [Port(80, 8080, "udp", "127.0.0.1")]),
        ("127.0.0.1::80", [Port(80, None, "tcp", "127.0.0.1")]),
        ("[fd00::1]:53:53/udp", [Port(53, 53, "udp", "fd00::1")]),
        ("8000-8002:80", [Port(80, 8000, "tcp", None, 8002)]),
        ("9000-9001:90-91", [Port(90, 9000), Port(91, 9001)]),
        (
            {"target": 80, "published": "8000", "host_ip": "10.0.0.1", "protocol": "udp"},
            [Port(80, 8000, "udp", "10.0.0.1")],
        ),
    ],
)
def test_ports(spec: object, want: list[Port]) -> None:
    assert parse_port(spec, None, "ports[0]") == want


ERRORS = [
    (
        "services: {web: {networks: {front: {ipv4_address: 10.0.0.300}}}}\nnetworks: {front: {}}\n",
        'compose.yaml:1: services.web.networks.front.ipv4_address: "10.0.0.300" is not an IPv4 address',
    ),
    (
        "services:\n  web:\n    networks:\n      front:\n        ipv4_address: 10.9.9.9\nnetworks:\n  front:\n    ipam: {config: [{subnet: 10.0.0.0/24}]}\n",
        'compose.yaml:5: services.web.networks.front.ipv4_address: "10.9.9.9" is not in any subnet of network "front" (10.0.0.0/24)',
    ),
    (
        "services: {web: {}}\nnetworks:\n  default:\n    driver: weave\n",
        'compose.yaml:4: networks.default.driver: "weave" is not a known network driver (netd supports: bridge, macvlan, ipvlan, overlay)',
    ),
    (
        "services: {web: {networks: [nope]}}\n",
        "compose.yaml:1: services.web.networks.nope: is not defined in the top-level networks",
    ),
    (
        "networks:\n  ext:\n    external: true\n    driver: bridge\n",
        "compose.yaml:4: networks.ext.driver: external networks may have no other attribute than name",
    ),
    (
        "networks:\n  n:\n    ipam:\n      config:\n        - subnet: 10.0.0.0/24\n          gateway: 10.1.0.1\n",
        'compose.yaml:6: networks.n.ipam.config[0].gateway: "10.1.0.1" is not inside subnet 10.0.0.0/24',
    ),
    (
        "networks:\n  n:\n    ipam: {config: [{subnet: 10.0.0.1/24}]}\n",
        'compose.yaml:3: networks.n.ipam.config[0].subnet: "10.0.0.1/24" is not a subnet (10.0.0.1/24 has host bits set)',
    ),
    (
        "services:\n  web:\n    networks:\n      n: {mac_address: zz}\nnetworks: {n: {}}\n",
        'compose.yaml:4: services.web.networks.n.mac_address: "zz" is not a MAC address (xx:xx:xx:xx:xx:xx)',
    ),
    (
        "services:\n  web:\n    networks:\n      n:\n        interface_name: waytoolonginterface\nnetworks: {n: {}}\n",
        'compose.yaml:5: services.web.networks.n.interface_name: "waytoolonginterface" at most 15 characters (IFNAMSIZ is 16)',
    ),
    (
        "services:\n  web:\n    network_mode: host\n    networks: [a]\nnetworks: {a: {}}\n",
        'compose.yaml:3: services.web.network_mode: "host" cannot be combined with networks',
    ),
    (
        "services:\n  web:\n    network_mode: service:nope\n",
        "compose.yaml:3: services.web.network_mode: \"service:nope\" service 'nope' is not defined",
    ),
    (
        "services:\n  web:\n    ports: ['80:80:80:80']\n",
        "compose.yaml:3: services.web.ports[0]: \"80:80:80:80\" '80:80' is not an IP address",
    ),
    (
        "services:\n  web:\n    network_mode: none\n    ports: ['80:80']\n",
        "compose.yaml:4: services.web.ports: cannot publish ports with network_mode none",
    ),
    (
        "services:\n  web:\n    scale: 2\n    container_name: solo\n",
        'compose.yaml:4: services.web.container_name: "solo" cannot be used with more than one replica',
    ),
    (
        "services:\n  web:\n    extra_hosts: ['h:notanip']\n",
        "compose.yaml:3: services.web.extra_hosts: \"h:notanip\" 'notanip' is not an IP address",
    ),
    (
        "networks:\n  n:\n    internal: maybe\n",
        'compose.yaml:3: networks.n.internal: "maybe" must be true or false',
    ),
    (
        "networks:\n  n:\n    driver_opts: {mtu: '9'}\n",
        'compose.yaml:3: networks.n.driver_opts.mtu: "9" must be an integer from 68 to 65535',
    ),
    (
        "services:\n  web:\n    hostname: ${H:?set H please}\n",
        'compose.yaml:3: services.web.hostname: "${H:?set H please}" required variable H is missing a value: set H please',
    ),
    (
        "services:\n  web:\n    networks:\n      n: {ipv6_address: 'fd00::5'}\nnetworks: {n: {}}\n",
        'compose.yaml:4: services.web.networks.n.ipv6_address: "fd00::5" needs enable_ipv6 on network "n"',
    ),
    ("services: [a\n", "compose.yaml:2: invalid YAML: expected ',' or ']', but got '<stream end>'"),
]


@pytest.mark.parametrize(("text", "message"), ERRORS)
def test_errors(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ComposeError) as exc:
        load(tmp_path, text)
    assert str(exc.value) == message


def test_resolv_and_hosts(tmp_path: Path) -> None:
    p = load(
        tmp_path,
        """
        services:
          web:
            hostname: w
            domainname: example.org
            dns: [192.0.2.53]
            dns_search: [corp.example]
            dns_opt: [ndots:2]
            extra_hosts: ["gw:host-gateway", "h6=::1"]
        """,
    )
    web = p.services["web"]
    answers = [
        {"addresses": ["10.0.0.2/24"], "dns": {"nameservers": ["10.0.0.1"], "search": ["dns.netd"]}}
    ]
    assert render_resolv(web, answers) == (
        "# written by netd compose\nnameserver 10.0.0.1\nnameserver 192.0.2.53\n"
        "search corp.example dns.netd\noptions ndots:2\n"
    )
    hosts = render_hosts(web, "p-web-1", answers, "10.0.0.1")
    assert "10.0.0.2\tw.example.org w\n" in hosts
    assert hosts.endswith("10.0.0.1\tgw\n::1\th6\n")


@pytest.mark.parametrize("value", [".inf", "-.inf", ".nan", "1.5"])
def test_replicas_that_are_no_integer_are_refused_at_their_line(tmp_path: Path, value: str) -> None:
    # .inf used to escape as an OverflowError traceback (found by the compose fuzzer).
    text = f"services:\n  web:\n    image: nginx\n    deploy: {{replicas: {value}}}\n"
    with pytest.raises(ComposeError, match="must be an integer"):
        load(tmp_path, text)


def test_macvlan_driver_opts_are_the_driver_s(tmp_path: Path) -> None:
    text = (
        "services: {web: {}}\n"
        "networks:\n  default:\n    driver: macvlan\n"
        "    driver_opts: {parent: eth0, macvlan_mode: vepa}\n"
    )
    project = load(tmp_path, text)
    (net,) = project.networks.values()
    assert (net.driver, net.options) == ("macvlan", {"parent": "eth0", "macvlan_mode": "vepa"})
    with pytest.raises(ComposeError) as exc:
        load(tmp_path, text.replace("macvlan_mode: vepa", "enable_icc: 'false'"))
    assert str(exc.value).startswith(
        'compose.yaml:5: networks.default.driver_opts.enable_icc: "false" not supported by '
        "driver macvlan: its containers' traffic does not pass a host interface"
    ), str(exc.value)
