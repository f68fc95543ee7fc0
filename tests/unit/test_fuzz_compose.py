"""Hostile compose files: generated documents and mutated real examples through load_project.

The only acceptable outcomes are a Project, or an InvalidInput (normally a ComposeError) whose
message names where the problem is: the file (and line, when the parser gave one) or the key
path. Any other exception type is a crash. ``NETD_FUZZ_EXAMPLES`` raises the example count.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from netd.compose.errors import ComposeError
from netd.compose.project import Project, load_project
from netd.errors import InvalidInput

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = int(os.environ.get("NETD_FUZZ_EXAMPLES") or 200)
REAL = [
    ROOT / "examples" / "three-tier" / "compose.yaml",
    *sorted((ROOT / "tests" / "compose").glob("*.yaml")),
]
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

# Keys the loader gives meaning to, so generated trees reach deep validation, not just "unknown".
KEYS = [
    "name", "services", "networks", "volumes", "image", "ports", "expose", "aliases",
    "ipv4_address", "ipv6_address", "ipam", "config", "subnet", "gateway", "ip_range",
    "driver", "driver_opts", "internal", "enable_ipv6", "external", "labels", "depends_on",
    "network_mode", "hostname", "domainname", "dns", "dns_search", "extra_hosts", "mac_address",
    "extends", "include", "service", "file", "x-any", "attachable", "priority", "links",
    "container_name", "scale", "deploy", "replicas", "default", "frontend", "web", "db",
    "published", "target", "protocol", "host_ip", "mode", "environment", "env_file", "profiles",
]  # fmt: skip
ODD = [
    "10.0.0.0/24", "10.0.0.300", "fd00::/64", "::1", "8080:80", "127.0.0.1:80:80/udp",
    "${X}", "${X:-d}", "${X:?need}", "$$", "${", "web", "net:alias", "service:web",
    "host", "none", "bridge", "0-65536:1", "a" * 300, "", " ", "\x00", "é", "1e999",
]  # fmt: skip
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True),
    st.sampled_from(ODD),
    st.text(max_size=30),
)
KEY = st.one_of(st.sampled_from(KEYS), st.text(max_size=12), st.integers(-3, 3), st.booleans())
TREES = st.recursive(
    SCALARS,
    lambda kids: st.one_of(st.lists(kids, max_size=4), st.dictionaries(KEY, kids, max_size=5)),
    max_leaves=40,
)
DOCUMENTS = st.dictionaries(st.sampled_from(["services", "networks", "name", "volumes"]), TREES)


def check(text: str) -> None:
    """Load ``text`` as compose.yaml; fail unless it is a Project or a located InvalidInput."""
    with tempfile.TemporaryDirectory(prefix="netd-fuzz-compose-") as tmp:
        path = Path(tmp) / "compose.yaml"
        path.write_text(text, errors="surrogateescape")
        try:
            project = load_project(["compose.yaml"], project="fuzz", environ={}, cwd=Path(tmp))
        except InvalidInput as exc:
            message = str(exc)
            assert message.strip(), repr(exc)
            assert "Traceback" not in message
            if isinstance(exc, ComposeError):
                assert exc.where is not None or exc.path, message
            else:
                assert exc.field or "compose.yaml" in message, message
            return
        assert isinstance(project, Project)


def dump(doc: Any) -> str:
    """YAML text for a generated tree (non-string keys and odd floats included)."""
    return yaml.safe_dump(doc, default_flow_style=False, allow_unicode=True)


@FUZZ
@given(DOCUMENTS)
def test_generated_documents(doc: dict[str, Any]) -> None:
    check(dump(doc))


@FUZZ
@given(st.text(max_size=400))
def test_arbitrary_text(text: str) -> None:
    check(text)


@st.composite
def mutated(draw: st.DrawFn) -> str:
    """A real example with a few line-level edits: deletions, duplicates, splices, garbage."""
    lines = draw(st.sampled_from(REAL)).read_text().splitlines()
    for _ in range(draw(st.integers(1, 4))):
        i = draw(st.integers(0, max(0, len(lines) - 1)))
        op = draw(st.sampled_from(["drop", "dup", "indent", "dedent", "value", "insert", "cut"]))
        if not lines:
            lines = [draw(st.text(max_size=40))]
            continue
        line = lines[i]
        if op == "drop":
            del lines[i]
        elif op == "dup":
            lines.insert(i, line)
        elif op == "indent":
            lines[i] = "  " + line
        elif op == "dedent":
            lines[i] = line[2:]
        elif op == "value" and ":" in line:
            key = line.split(":", 1)[0]
            value = yaml.safe_dump(draw(SCALARS)).splitlines()
            lines[i] = f"{key}: {value[0] if value else ''}"
        elif op == "insert":
            lines.insert(i, draw(st.text(max_size=40)))
        else:
            lines[i] = line[: draw(st.integers(0, len(line)))]
    return "\n".join(lines) + "\n"


@FUZZ
@given(mutated())
def test_mutated_real_examples(text: str) -> None:
    check(text)


def test_real_examples_load() -> None:
    """The unmutated seeds are valid (so mutations start from something that loads)."""
    for path in REAL:
        check(path.read_text())


def test_non_string_service_name_is_a_compose_error(tmp_path: Path) -> None:
    """Regression (found by fuzzing): `services: {0: ...}` raised KeyError in extends."""
    (tmp_path / "compose.yaml").write_text("services:\n  0: {image: x}\n")
    try:
        load_project(["compose.yaml"], project="p", environ={}, cwd=tmp_path)
    except ComposeError as exc:
        assert str(exc) == "compose.yaml:2: services.0: name must be a string"
    else:
        raise AssertionError("a service named 0 (an integer) was accepted")


TAGS = ["!!int", "!!float", "!!timestamp", "!!binary", "!!set", "!!str", "!!bool", "!!null"]
SLOTS = [
    "name: {}",
    "services: {}",
    "services: {{web: {}}}",
    "services: {{web: {{image: x, ports: [{}]}}}}",
    "services: {{web: {{image: x, networks: {}}}}}",
    "services: {{web: {{image: x, networks: {{n: {{ipv4_address: {}}}}}}}}}\nnetworks: {{n: {{}}}}",
    "networks: {{n: {{ipam: {{config: [{{subnet: {}}}]}}}}}}",
    "networks: {{n: {{labels: {}, driver_opts: {{mtu: {}}}}}}}",
]


@FUZZ
@given(
    st.sampled_from(SLOTS),
    st.sampled_from(TAGS),
    st.sampled_from(["08", "2020-13-01", "abc", "aGk=", "{a: null}", "[1]", "1e999", "0x", "''"]),
)
def test_tagged_values(slot: str, tag: str, value: str) -> None:
    """Explicit YAML tags build values no compose key expects (bytes, sets, dates) or fail."""
    check(slot.replace("{}", f"{tag} {value}", 1).replace("{}", "1500"))


def test_unbuildable_tagged_scalar_is_a_compose_error(tmp_path: Path) -> None:
    """Regression (found by fuzzing): `!!int 08` raised a bare ValueError out of PyYAML."""
    (tmp_path / "compose.yaml").write_text("services:\n  web: {image: x, scale: !!int 08}\n")
    try:
        load_project(["compose.yaml"], project="p", environ={}, cwd=tmp_path)
    except ComposeError as exc:
        assert str(exc).startswith("compose.yaml: invalid YAML value: ValueError("), str(exc)
    else:
        raise AssertionError("!!int 08 was accepted")


def test_expose_not_a_list_is_a_compose_error(tmp_path: Path) -> None:
    """Regression (found by fuzzing): `expose: 5000` raised TypeError ('int' not iterable)."""
    (tmp_path / "compose.yaml").write_text("services:\n  web:\n    image: x\n    expose: 5000\n")
    try:
        load_project(["compose.yaml"], project="p", environ={}, cwd=tmp_path)
    except ComposeError as exc:
        assert str(exc) == "compose.yaml:4: services.web.expose: 5000 must be a list", str(exc)
    else:
        raise AssertionError("expose: 5000 was accepted")
