"""Docs that must match the code: the generated CLI reference, the config reference, the index."""

from __future__ import annotations

import importlib.util
import re
import tomllib
from pathlib import Path
from types import ModuleType

import click

from netd.cli.main import cli
from netd.config import Config

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"


def gen_cli_docs() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gen_cli_docs", ROOT / "scripts/gen_cli_docs.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_cli_reference_is_up_to_date() -> None:
    expected = gen_cli_docs().render()
    current = (DOCS / "cli.md").read_text()
    assert current == expected, (
        "docs/cli.md is stale: run `.venv/bin/python scripts/gen_cli_docs.py` and commit it"
    )


def test_cli_reference_has_every_command_and_option() -> None:
    text = gen_cli_docs().render()

    def walk(cmd: click.Command, path: str) -> None:
        assert f"## `{path}`" in text, path
        for param in cmd.params:
            if isinstance(param, click.Option) and not param.hidden:
                assert any(opt in text for opt in param.opts), (path, param.opts)
        if isinstance(cmd, click.Group):
            for name, sub in cmd.commands.items():
                if not sub.hidden:
                    walk(sub, f"{path} {name}")

    walk(cli, "netd")
    assert "## `netd doctor`" in text and "## `netd completion`" in text


def test_configuration_reference_documents_every_key() -> None:
    text = (DOCS / "configuration.md").read_text()
    documented = set(re.findall(r"^\| `([a-z_]+)` \|", text, flags=re.M))
    assert documented == set(Config.model_fields), documented ^ set(Config.model_fields)


def test_default_config_lists_every_key_at_its_default() -> None:
    """packaging/netd.toml, uncommented, is a valid config whose values are the defaults."""
    lines = (ROOT / "packaging/netd.toml").read_text().splitlines()
    assignments = [line[2:] for line in lines if re.match(r"# [a-z_]+ = ", line)]
    data = tomllib.loads("\n".join(assignments))
    assert set(data) == set(Config.model_fields), set(data) ^ set(Config.model_fields)
    config = Config(**data)  # every example value is valid
    defaults = Config()
    for key in data:
        if getattr(defaults, key) is not None:  # keys unset by default show an example instead
            assert getattr(config, key) == getattr(defaults, key), key


def test_index_links_every_doc_and_every_link_resolves() -> None:
    index = (DOCS / "index.md").read_text()
    links = set(re.findall(r"\]\(([^)#]+\.md)(?:#[^)]*)?\)", index))
    for link in links:
        assert (DOCS / link).is_file(), f"docs/index.md links to missing {link}"
    pages = {p.name for p in DOCS.glob("*.md")} - {"index.md"}
    assert pages <= links, f"docs/index.md does not link to {sorted(pages - links)}"
