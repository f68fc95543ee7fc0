"""The daemon's ``/openapi.json`` describes the drivers it runs: their names and their options."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from aiohttp.test_utils import TestClient, TestServer
from service_kit import make_service

from netd.api.server import make_app
from netd.drivers.ipam import IpamOnlyDriver
from netd.drivers.macvlan import MacvlanDriver
from netd.drivers.null import NullDriver


def document(tmp_path: Path, drivers: dict[str, Any]) -> dict[str, Any]:
    app = make_app(make_service(tmp_path, drivers=drivers))

    async def fetch() -> dict[str, Any]:
        async with TestClient(TestServer(app)) as client:
            resp = await client.get("/openapi.json")
            assert resp.status == 200
            doc: dict[str, Any] = await resp.json()
            return doc

    return asyncio.run(fetch())


def test_the_options_schema_is_the_daemons_drivers(tmp_path: Path) -> None:
    doc = document(tmp_path, {"macvlan": MacvlanDriver(), "ipam": IpamOnlyDriver()})
    create = doc["paths"]["/v1/networks"]["post"]["requestBody"]["content"]["application/json"]
    props = create["schema"]["properties"]
    assert props["driver"]["enum"] == ["ipam", "macvlan"]
    assert "not supported on this host" in props["driver"]["description"]
    options = props["options"]
    assert "parent" in options["properties"] and "bridge" not in options["properties"]
    assert "enable_icc" not in options["properties"]  # no driver here takes the firewall keys
    assert options["additionalProperties"] is False
    assert options["maxProperties"] == 64


def test_an_open_driver_lets_any_key_through_the_document(tmp_path: Path) -> None:
    # The null driver's keys are open, as an external plugin's are.
    doc = document(tmp_path, {"null": NullDriver()})
    create = doc["paths"]["/v1/networks"]["post"]["requestBody"]["content"]["application/json"]
    assert create["schema"]["properties"]["options"]["additionalProperties"] == {"type": "string"}
