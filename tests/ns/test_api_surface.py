"""The API's edges against a real daemon: malformed HTTP, 405, and a published schema that says
what the API refuses.

Each refused request below is refused by the daemon with a 400 naming the field *and* called
invalid by the daemon's own ``/openapi.json`` (checked with jsonschema, independently of
pydantic); a request the document calls valid is accepted.
"""

from __future__ import annotations

import socket
from typing import Any

import jsonschema
import pytest
from netns_fixtures import Namespace, Sandbox
from netns_fixtures.daemon import Daemon


def raw_request(daemon: Daemon, data: bytes) -> tuple[int, dict[str, str], bytes]:
    """Send raw bytes on the daemon's socket; (status, headers lower-cased, body)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(30)
        sock.connect(str(daemon.socket))
        sock.sendall(data)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    head, _, body = b"".join(chunks).partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines[1:]:
        key, _, value = line.partition(":")
        headers[key.strip().lower()] = value.strip()
    return int(lines[0].split()[1]), headers, body


def test_405_names_the_allowed_methods(daemon: Daemon) -> None:
    for method, path, allowed in (
        ("PUT", "/v1/status", {"GET"}),
        ("PATCH", "/v1/networks", {"GET", "POST"}),
        ("POST", "/v1/networks/x", {"GET", "DELETE"}),
    ):
        request = f"{method} {path} HTTP/1.1\r\nHost: netd\r\nConnection: close\r\n"
        request += "Content-Length: 0\r\n\r\n"
        status, headers, body = raw_request(daemon, request.encode())
        assert status == 405, (method, path, body)
        shown = {m.strip() for m in headers["allow"].split(",")}
        assert allowed <= shown, headers
        assert b"method_not_allowed" in body


@pytest.mark.parametrize(
    "request_bytes",
    [
        b"GET /v1/status HTTP/1.1\r\nHost: netd\r\nX-Probe: a\x00b\r\nConnection: close\r\n\r\n",
        b"GET /v1/status HTTP/1.1\r\nHo\x00st: netd\r\nConnection: close\r\n\r\n",
        b"GET /v1/sta\x00tus HTTP/1.1\r\nHost: netd\r\nConnection: close\r\n\r\n",
    ],
    ids=["nul-in-value", "nul-in-name", "nul-in-target"],
)
def test_nul_bytes_are_a_400_and_one_log_line(daemon: Daemon, request_bytes: bytes) -> None:
    status, _, _ = raw_request(daemon, request_bytes)
    assert status == 400
    assert daemon.request("GET", "/v1/status")[0] == 200  # the daemon carries on
    log = daemon.log()
    assert "Traceback" not in log, log
    assert "refused a malformed HTTP request (400)" in log, log


def body_validator(doc: dict[str, Any], path: str, method: str = "post") -> Any:
    schema = doc["paths"][path][method]["requestBody"]["content"]["application/json"]["schema"]
    resolver = jsonschema.RefResolver.from_schema(doc)
    return jsonschema.Draft202012Validator(schema, resolver=resolver)


def test_the_document_refuses_what_the_api_refuses(daemon: Daemon, sandbox: Sandbox) -> None:
    c = sandbox.add_ns("c")
    status, doc = daemon.request("GET", "/openapi.json")
    assert status == 200
    assert daemon.request("POST", "/v1/networks", {"name": "surface"})[0] == 201
    create = body_validator(doc, "/v1/networks")
    connect = body_validator(doc, "/v1/networks/{name}/connect")
    disconnect = body_validator(doc, "/v1/networks/{name}/disconnect")
    refused: list[tuple[Any, str, dict[str, Any]]] = [
        (create, "/v1/networks", {"name": ""}),
        (create, "/v1/networks", {"name": "a b"}),
        (create, "/v1/networks", {"name": "n" * 129}),
        (create, "/v1/networks", {"name": "x1", "driver": "nosuchdriver"}),
        (
            create,
            "/v1/networks",
            {"name": "x1", "driver": "macvlan", "options": {"macvlan_mode": "x"}},
        ),
        (create, "/v1/networks", {"name": "x1", "driver": "macvlan", "options": {"parent": "a/b"}}),
        (create, "/v1/networks", {"name": "x1", "ipv4": False}),
        (create, "/v1/networks", {"name": "x1", "subnets": [{"subnet": "10.9.0.0/33"}]}),
        (create, "/v1/networks", {"name": "x1", "subnets": [{"gateway": "10.9.0.1"}]}),
        (create, "/v1/networks", {"name": "x1", "subnets": [{"subnet": "nope"}]}),
        (create, "/v1/networks", {"name": "x1", "options": {"nope": "1"}}),
        (create, "/v1/networks", {"name": "x1", "options": {"mtu": "10"}}),
        (create, "/v1/networks", {"name": "x1", "options": {"enable_icc": "maybe"}}),
        (create, "/v1/networks", {"name": "x1", "labels": {"": "v"}}),
        (connect, "/v1/networks/surface/connect", {"netns": ""}),
        (connect, "/v1/networks/surface/connect", {"netns": "run/netns/x"}),
        (connect, "/v1/networks/surface/connect", {"netns": c.path + "\x00"}),
        (connect, "/v1/networks/surface/connect", {"netns": c.path, "ifname": ""}),
        (connect, "/v1/networks/surface/connect", {"netns": c.path, "ifname": "e" * 16}),
        (connect, "/v1/networks/surface/connect", {"netns": c.path, "container_id": "-x"}),
        (connect, "/v1/networks/surface/connect", {"netns": c.path, "mac": "01:00:00:00:00:01"}),
        (connect, "/v1/networks/surface/connect", {"netns": c.path, "mac": "00:00:00:00:00:00"}),
        (connect, "/v1/networks/surface/connect", {"netns": c.path, "ips": ["10.0.0.300"]}),
        (connect, "/v1/networks/surface/connect", {"netns": c.path, "dns_servers": ["dns"]}),
        (
            connect,
            "/v1/networks/surface/connect",
            {"netns": c.path, "publish": [{"host_port": 1, "container_port": 1, "host_ip": "x"}]},
        ),
        (disconnect, "/v1/networks/surface/disconnect", {}),
        (disconnect, "/v1/networks/surface/disconnect", {"container_id": None}),
        (disconnect, "/v1/networks/surface/disconnect", {"container_id": ""}),
    ]
    for validator, path, body in refused:
        status, answer = daemon.request("POST", path, body)
        assert status == 400, (path, body, status, answer)
        assert answer["error"]["field"], answer
        assert not validator.is_valid(body), (path, body, "the document accepts it")
    lookup = doc["paths"]["/v1/dns/lookup"]["get"]["parameters"]
    assert {"name": "name", "min": 1} in [
        {"name": p["name"], "min": p["schema"].get("minLength")} for p in lookup
    ]
    assert daemon.request("GET", "/v1/dns/lookup?name=")[0] == 400
    # And what the document calls valid is accepted.
    body = {"name": "x1", "options": {"mtu": " 1400 ", "enable_icc": "TRUE"}, "labels": {"a": ""}}
    assert create.is_valid(body)
    assert daemon.request("POST", "/v1/networks", body)[0] == 201
    body = {"netns": c.path, "ifname": "e" * 15, "mac": "02-00-00-00-00-01"}
    assert connect.is_valid(body)
    status, ep = daemon.request("POST", "/v1/networks/surface/connect", body)
    assert status == 201, ep
    assert disconnect.is_valid({"netns": c.path})
    assert daemon.request("POST", "/v1/networks/surface/disconnect", {"netns": c.path})[0] == 200


def test_status_reports_store_health(daemon: Daemon, host: Namespace) -> None:
    status, body = daemon.request("GET", "/v1/status")
    assert status == 200 and body["ready"] is True and body["store"]["ok"] is True, body
    assert "reason" not in body
