"""Schemathesis over the real daemon's ``/openapi.json``, on its Unix socket, in a sandbox.

Every operation of the document is fuzzed with valid (positive) and schema-violating (negative)
requests. Checks on every answer: never a 5xx; the answer conforms to the document (status,
content type, body schema); a 4xx is a JSON error naming what was wrong; and a 4xx changed
nothing: ``GET /v1/networks`` and the host namespace's links are the same before and after.
No operation is excluded. ``NETD_FUZZ_EXAMPLES`` (default 50) sets the examples per operation
and mode.

The document is the contract: a request generated as *valid* (positive mode) may be refused with
a 400 only for a rule the document states in a description because no pattern can (a namespace
file that does not exist, a subnet that overlaps or has host bits, two spellings of one option
disagreeing: ``SEMANTIC_RULES``), never for its syntax.
"""

from __future__ import annotations

import json
import os
import socket
from typing import Any

import requests
import schemathesis
from hypothesis import HealthCheck, given, settings
from netns_fixtures import Namespace
from netns_fixtures.daemon import Daemon
from requests.adapters import HTTPAdapter
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from urllib3.connection import HTTPConnection
from urllib3.connectionpool import HTTPConnectionPool

# Examples per operation and mode / per property; raise for longer runs.
EXAMPLES = int(os.environ.get("NETD_FUZZ_EXAMPLES") or 50)
BASE_URL = "http://netd"
FUZZ_NET = {"name": "fuzz", "subnets": [{"subnet": "10.77.0.0/24"}]}
CNI_CODES = {1, 2, 3, 4, 5, 6, 7, 11, 50, 51}
# (field prefix, message fragments; empty: any) of the 400s a schema-valid request may get.
SEMANTIC_RULES: list[tuple[str, tuple[str, ...]]] = [
    (
        "netns",
        (
            "no such file",
            "not a namespace file",
            "not a network namespace",
            "cannot open",
            "cannot resolve",
            "daemon's own",
            "initial network namespace",
            "changed while",
        ),
    ),
    ("options.", ("conflicts with",)),
    # One options schema serves every driver; each key's description names the drivers that
    # take it, and the chosen driver refuses the others (or says why it does not support it).
    ("options.", ("unknown option for driver", "not supported by driver")),
    # macvlan/ipvlan: the parent must be an Ethernet link in the daemon's namespace (or IF.VID
    # of one, on a kernel with 802.1Q links), and a VLAN id is 1-4094: the description says so.
    (
        "options.parent",
        ("no such link", "does not exist", "cannot create it", "cannot use it", "VLAN id"),
    ),
    # The driver enum lists the daemon's drivers; one this kernel cannot run (ipvlan on the
    # test machines) is refused naming the missing feature, as the description says.
    ("driver", ("not supported on this host",)),
    ("options.mtu", ("on a network with IPv6",)),  # RFC 8200's 1280 minimum
    ("options.", ("IPAM-only network",)),  # driver "ipam" takes no options (but dns=false)
    ("options.anti_spoof", ("needs the nftables firewall",)),  # this daemon runs firewall none
    ("since", ("expected a duration", "too far back")),  # date-shaped, but no date
    ("subnet", ()),  # subnets[i].subnet/gateway/ip_range/aux_address: host bits, overlaps, inside
    ("gateway", ()),
    ("ip_range", ()),
    ("aux_address", ()),
    ("ips", ()),  # static addresses inside the network's subnets, one per family
]


def is_semantic(error: dict[str, Any]) -> bool:
    """Whether a 400 refuses a documented rule of the request as a whole, not its syntax."""
    field, message = str(error.get("field") or ""), str(error.get("message") or "")
    return any(
        field.startswith(prefix) and (not fragments or any(f in message for f in fragments))
        for prefix, fragments in SEMANTIC_RULES
    )


CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]


class UnixAdapter(HTTPAdapter):
    """A requests transport that sends every request to one Unix socket (the daemon's)."""

    def __init__(self, path: str) -> None:
        super().__init__()
        self.path = path

    def get_connection_with_tls_context(
        self, request: Any, verify: Any, proxies: Any = None, cert: Any = None
    ) -> HTTPConnectionPool:
        path = self.path

        class Connection(HTTPConnection):
            def _new_conn(self) -> socket.socket:
                sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                sock.settimeout(60)
                sock.connect(path)
                return sock

        class Pool(HTTPConnectionPool):
            ConnectionCls = Connection

        return Pool("netd")


def snapshot(daemon: Daemon, host: Namespace) -> tuple[Any, Any]:
    """What a rejected request must not change: the API's networks and the host's links."""
    status, nets = daemon.request("GET", "/v1/networks")
    assert status == 200, nets
    links = sorted(
        (link["ifname"], link.get("address"), link.get("master"), link.get("ifalias"))
        for link in host.links().values()
    )
    return nets, links


def check_cni_error(body: dict[str, Any]) -> None:
    """A CNI error object (SPEC.md "Error"): a valid code and a message."""
    code = body["code"]
    assert isinstance(code, int) and (code in CNI_CODES or code >= 100), body
    assert isinstance(body["msg"], str) and body["msg"], body


def fuzz_operation(
    daemon: Daemon,
    host: Namespace,
    session: requests.Session,
    cases: Any,
    counts: dict[int, int],
    positive: bool = False,
) -> None:
    """Send EXAMPLES cases of one operation; check every answer; count answers by status."""

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(cases)
    def fuzz(case: schemathesis.Case) -> None:
        before = snapshot(daemon, host)
        response = case.call(base_url=BASE_URL, session=session)
        counts[response.status_code] = counts.get(response.status_code, 0) + 1
        if case.operation.path == "/v1/cni" and response.status_code == 422:
            # The plugin's channel: a CNI error object, not ErrorBody. The document does not
            # describe it yet (reported), so it is checked here instead.
            check_cni_error(json.loads(response.content))
            assert snapshot(daemon, host) == before, case.as_curl_command()
            return
        case.validate_response(response, checks=CHECKS)
        if 400 <= response.status_code < 500:
            error = json.loads(response.content)["error"]
            assert error["code"] and error["message"], error
            if positive and response.status_code == 400:
                assert is_semantic(error), ("the document accepts what the API refuses", error)
            assert snapshot(daemon, host) == before, (case.as_curl_command(), error)

    fuzz()


def test_openapi_operations(daemon: Daemon, host: Namespace) -> None:
    status, doc = daemon.request("GET", "/openapi.json")
    assert status == 200
    schema = schemathesis.openapi.from_dict(doc)
    session = requests.Session()
    session.mount(BASE_URL, UnixAdapter(str(daemon.socket)))
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) == sum(len(v) for v in doc["paths"].values())
    seen: dict[str, dict[int, int]] = {}

    # A network that exists, so {name} operations also get past the lookup to their bodies.
    assert daemon.request("POST", "/v1/networks", FUZZ_NET)[0] == 201
    runs: list[tuple[Any, GenerationMode, dict[str, str] | None]] = []
    for operation in operations:
        described = doc["paths"][operation.path][operation.method.lower()]
        modes = [GenerationMode.POSITIVE]
        # Only a body has a schema to violate: the path parameters are unconstrained strings, so
        # their positive run already sends arbitrary text (a negative run is Unsatisfiable).
        if described.get("requestBody"):
            modes.append(GenerationMode.NEGATIVE)
        runs += [(operation, mode, None) for mode in modes]
        if "{name}" in operation.path and operation.method.upper() != "DELETE":
            runs += [(operation, mode, {"name": "fuzz"}) for mode in modes]
    for operation, mode, fixed in runs:
        label = f"{operation.label} {mode.value}" + (" name=fuzz" if fixed else "")
        counts = seen.setdefault(label, {})
        if fixed:  # prune (or a fuzzed create/remove) may have removed it
            daemon.request("POST", "/v1/networks", FUZZ_NET)
        fuzz_operation(
            daemon,
            host,
            session,
            operation.as_strategy(mode, path_parameters=fixed),
            counts,
            positive=mode == GenerationMode.POSITIVE,
        )
    print(json.dumps(seen, indent=1))
    log = daemon.log()
    assert "Traceback" not in log, log


DEEP_BODIES = [
    b'{"name":' * 50_000 + b"1" + b"}" * 50_000,  # nesting past json's recursion limit
    b"[" * 100_000,
]
RAW_BODIES = [
    b'{"name": "\xff\xfe"}',  # not UTF-8
    b'{"name": NaN}',
    b'{"name": 1e999999}',
    b'{"name": ' + b"9" * 5000 + b"}",
    b'{"name": "\\ud800"}',  # lone surrogate escape
    b"\x00" * 100,
    b"",
    b"null",
]


def test_raw_hostile_bodies(daemon: Daemon, host: Namespace) -> None:
    """Bodies no JSON generator makes: every POST answers a 4xx error naming it, no change."""
    before = snapshot(daemon, host)
    posts = ["/v1/networks", "/v1/networks/x/connect", "/v1/networks/x/disconnect", "/v1/cni"]
    for path in posts:
        for body in RAW_BODIES:
            status, answer = daemon.request("POST", path, body)
            assert 400 <= status < 500, (path, body[:40], status, answer)
            if path == "/v1/cni":  # the plugin's channel answers a CNI error object (422)
                assert status == 422 and answer["code"] == 6, answer
                check_cni_error(answer)
            else:
                assert answer["error"]["message"], answer
    assert snapshot(daemon, host) == before
    assert "Traceback" not in daemon.log()


def test_deeply_nested_bodies(daemon: Daemon, host: Namespace) -> None:
    """Found by fuzzing: a deeply nested JSON body must be a 400 naming the body."""
    before = snapshot(daemon, host)
    for body in DEEP_BODIES:
        status, answer = daemon.request("POST", "/v1/networks", body)
        assert status == 400, (status, answer)
        assert answer["error"]["field"] == "body", answer
    assert snapshot(daemon, host) == before
