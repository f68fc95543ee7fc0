"""Realistic multi-service compose files (tests/compose/, examples/) brought up and checked."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from netns_fixtures import Sandbox
from netns_fixtures.daemon import Daemon
from test_compose_up import Compose, compose_project

ROOT = Path(__file__).resolve().parents[2]

# file -> (client service, name it resolves, network key, service owning the name)
CASES = {
    "tests/compose/wordpress.yaml": ("wordpress", "db", "default", "db"),
    "tests/compose/microservices.yaml": ("worker", "cache", "back-tier", "redis"),
    "tests/compose/gitea.yaml": ("db", "gitea", "gitea", "server"),
    "examples/three-tier/compose.yaml": ("web", "api.internal", "backend", "api"),
}


@pytest.fixture
def compose(sandbox: Sandbox, daemon: Daemon, tmp_path: Path) -> Iterator[Compose]:
    """A compose project bound to the test's daemon (see test_compose_up)."""
    yield from compose_project(sandbox, daemon, tmp_path)


@pytest.mark.parametrize("path", list(CASES))
def test_realistic_file(compose: Compose, path: str) -> None:
    client, name, key, owner = CASES[path]
    shutil.copy(ROOT / path, compose.dir / "compose.yaml")
    compose.files.append(str(compose.dir / "compose.yaml"))
    compose.up()
    target = compose.addr(key, owner)
    assert compose.sb(client).ping(target)
    got = compose.exec(client, "getent", "hosts", name)
    assert got.returncode == 0 and target in got.stdout, got
    assert "nothing changed" in compose.up()
    compose.run("down")
    assert not compose.leftovers()
