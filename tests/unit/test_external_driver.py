"""External driver plugins (netd.drivers.external) against small fake plugins written here.

Each fake is a real executable run the way the daemon runs plugins (one process per call); it
appends every request it gets to a log file, so a test can check what netd sent. Nothing here
touches a network namespace: the kernel side is tests/ns/test_external_driver_ns.py.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any

import pytest
from netns_fixtures import wait_for

from netd.drivers import get_driver
from netd.drivers.external import ExternalDriver, load_external_drivers
from netd.errors import Conflict, InvalidInput, KernelError, NotFound, Unavailable
from netd.model import Endpoint, Network, PortMapping, Subnet

HEADER = """#!{python}
import json, os, signal, sys, time
req = json.load(sys.stdin)
with open({log!r}, "a") as fh:
    fh.write(json.dumps(req) + "\\n")
verb = req["verb"]
def answer(obj, code=0):
    sys.stdout.write(json.dumps(obj))
    sys.stdout.flush()
    sys.exit(code)
if verb == "capabilities":
    answer({caps})
"""
CAPS = {"contract": "netd.driver/1", "capabilities": {"host_interface": True}}


def make_plugin(
    directory: Path, name: str, body: str = "answer({})", caps: Any = CAPS, mode: int = 0o755
) -> Path:
    """A fake plugin: the header answers ``capabilities``; ``body`` handles the other verbs."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    log = str(directory / f"{name}.requests")
    path.write_text(HEADER.format(python=sys.executable, log=log, caps=repr(caps)) + body + "\n")
    path.chmod(mode)
    return path


def requests(path: Path) -> list[dict[str, Any]]:
    """What the fake at ``path`` was sent, in order."""
    log = path.parent / f"{path.name}.requests"
    if not log.exists():
        return []
    return [json.loads(line) for line in log.read_text().splitlines()]


def network(**kw: Any) -> Network:
    base: dict[str, Any] = {
        "id": "c0ffee" * 10 + "abcd",
        "name": "pnet",
        "driver": "fake",
        "subnets": (
            Subnet(
                ipaddress.ip_network("10.55.0.0/24"),
                ipaddress.ip_address("10.55.0.1"),
                ip_range=ipaddress.ip_network("10.55.0.128/25"),
                aux_addresses={"printer": ipaddress.ip_address("10.55.0.9")},
            ),
        ),
        "options": {"dns": "false", "speed": "fast"},
        "labels": {"secret-label": "label-value"},
        "owner_uid": 4242,
        "created": 12345.0,
    }
    base.update(kw)
    return Network(**base)


def endpoint(**kw: Any) -> Endpoint:
    base: dict[str, Any] = {
        "network_id": "c0ffee" * 10 + "abcd",
        "container_id": "ctr1",
        "ifname": "eth0",
        "netns": "/run/netns/nowhere",
        "host_ifname": "nv0000000000000",
        "addresses": (ipaddress.ip_interface("10.55.0.5/24"),),
        "mac": "02:00:00:00:00:05",
        "name": "secret-dns-name",
        "aliases": ("secret-alias",),
        "port_mappings": (PortMapping(8080, 80),),
        "dns_servers": ("9.9.9.9",),
        "state": "ready",
        "owner_uid": 4242,
        "origin": "cni",
    }
    base.update(kw)
    return Endpoint(**base)


# --- capabilities ------------------------------------------------------------------------------


def test_capabilities_are_fetched_once_and_cached(tmp_path: Path) -> None:
    path = make_plugin(tmp_path, "fake", 'answer({"objects": []})')
    driver = ExternalDriver(path, 5)
    assert driver.name == "fake" and driver.capabilities.host_interface
    assert not driver.capabilities.firewall and not driver.capabilities.port_mappings
    driver.inventory()
    driver.inventory()
    assert [r["verb"] for r in requests(path)] == ["capabilities", "inventory", "inventory"]
    assert all(r["contract"] == "netd.driver/1" and r["driver"] == "fake" for r in requests(path))


@pytest.mark.parametrize(
    ("caps", "said"),
    [
        ({"contract": "netd.driver/1", "capabilities": {"teleport": True}}, "teleport"),
        ({"contract": "netd.driver/1", "capabilities": {"firewall": True}}, "'firewall' must"),
        ({"contract": "netd.driver/1", "capabilities": {"port_mappings": True}}, "port_mappings"),
        ({"contract": "netd.driver/1", "capabilities": {"host_interface": "yes"}}, "not true"),
        ({"contract": "netd.driver/1", "capabilities": {"dns": "everywhere"}}, "everywhere"),
        ({"contract": "netd.driver/1", "capabilities": {"kernel_features": "veth"}}, "list"),
        ({"contract": "netd.driver/2", "capabilities": {}}, "netd.driver/2"),
        ({"capabilities": {}}, "contract None"),
        ({"contract": "netd.driver/1"}, 'no "capabilities"'),
    ],
)
def test_capabilities_are_checked_strictly(tmp_path: Path, caps: Any, said: str) -> None:
    path = make_plugin(tmp_path, "fake", caps=caps)
    with pytest.raises(KernelError) as info:
        ExternalDriver(path, 5)
    assert info.value.message.startswith('driver plugin "fake" capabilities: ')
    assert said in info.value.message


# --- a plugin that hangs, crashes or babbles ---------------------------------------------------

HANG = """
pid = os.fork()
if pid == 0:
    time.sleep(300)
    os._exit(0)
with open({pids!r}, "w") as fh:
    fh.write(f"{{os.getpid()}} {{pid}}")
time.sleep(300)
"""


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_a_hung_plugin_is_killed_with_everything_it_forked(tmp_path: Path) -> None:
    pids = tmp_path / "pids"
    path = make_plugin(tmp_path, "hang", HANG.format(pids=str(pids)))
    driver = ExternalDriver(path, 0.5)
    with pytest.raises(Unavailable) as info:
        driver.inventory()
    assert info.value.message == (
        f'driver plugin "hang" inventory: no answer within 0.5 s; the plugin ({path}) was killed'
    )
    assert info.value.http_status == 503
    leader, helper = (int(p) for p in pids.read_text().split())
    assert not _alive(leader)
    wait_for("the forked helper to die", lambda: not _alive(helper), timeout=10)


def test_a_helper_holding_stdout_open_does_not_delay_the_answer(tmp_path: Path) -> None:
    pids = tmp_path / "pids"
    body = f"""
pid = os.fork()
if pid == 0:
    time.sleep(300)  # keeps the stdout pipe open
    os._exit(0)
open({str(pids)!r}, "w").write(str(pid))
answer({{"objects": []}})
"""
    path = make_plugin(tmp_path, "forks", body)
    # With 60 s to spare, a call that waited for the pipe's EOF would end in a timeout.
    assert ExternalDriver(path, 60).inventory() == {}
    wait_for("the forked helper to die", lambda: not _alive(int(pids.read_text())), timeout=10)


@pytest.mark.parametrize(
    ("body", "said"),
    [
        ('sys.stderr.write("boom\\n"); sys.exit(3)', "exited with status 3: boom"),
        ("os.kill(os.getpid(), signal.SIGSEGV)", "killed by SIGSEGV"),
        ('print("Traceback? no: garbage")', "printed something that is not JSON"),
        ("sys.exit(0)", "printed nothing on stdout"),
        ('print("[1, 2]")', "printed JSON that is not an object (list)"),
        ('answer({"ok": True}, 4)', "exited with status 4 (and no error object)"),
        ('answer({"objects": "many"})', '"objects" must be a list'),
        ('answer({"objects": [{"tag": "netd:ext:fake:x", "ifname": "a/b"}]})', "must match"),
        ('sys.stdout.write("x" * (5 << 20))', "printed more than 4194304 bytes"),
    ],
)
def test_a_broken_plugin_is_a_kernel_error_naming_it(tmp_path: Path, body: str, said: str) -> None:
    path = make_plugin(tmp_path, "fake", body)
    driver = ExternalDriver(path, 10)
    with pytest.raises(KernelError) as info:
        driver.inventory()
    assert info.value.message.startswith('driver plugin "fake" inventory: '), info.value.message
    assert said in info.value.message
    assert info.value.http_status == 500


def test_stderr_is_logged_bounded(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = make_plugin(tmp_path, "fake", 'sys.stderr.write("why " * 100000); sys.exit(1)')
    driver = ExternalDriver(path, 10)
    with caplog.at_level(logging.WARNING, "netd.drivers.external"), pytest.raises(KernelError):
        driver.inventory()
    said = [r.getMessage() for r in caplog.records if "said" in r.getMessage()]
    assert len(said) == 1 and said[0].startswith('driver plugin "fake" inventory said: why why')
    assert len(said[0]) < 2100


def test_a_plugin_that_cannot_start_is_a_kernel_error(tmp_path: Path) -> None:
    path = make_plugin(tmp_path, "fake", 'answer({"objects": []})')
    driver = ExternalDriver(path, 5)
    path.write_text("#!/nonexistent/interpreter\n")
    with pytest.raises(KernelError, match=r'driver plugin "fake" inventory: cannot run .*fake'):
        driver.inventory()
    assert driver.available() == ""
    path.chmod(0o644)
    assert "not executable" in driver.available()


def test_a_large_request_is_written_whole(tmp_path: Path) -> None:
    body = 'answer({"options": {"size": str(len(req["options"]["big"]))}})'
    driver = ExternalDriver(make_plugin(tmp_path, "fake", body), 10)
    # Bigger than a pipe's buffer (64 KiB): the request is written as the plugin reads.
    assert driver.validate_options({"big": "y" * 300_000}) == {"size": "300000"}


# --- errors a plugin reports -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "cls", "status"),
    [
        ("not_found", NotFound, 404),
        ("conflict", Conflict, 409),
        ("unavailable", Unavailable, 503),
        ("kernel", KernelError, 500),
        ("no_such_code", KernelError, 500),
    ],
)
def test_plugin_errors_map_to_netd_errors(
    tmp_path: Path, code: str, cls: type, status: int
) -> None:
    body = f'answer({{"error": {{"code": {code!r}, "message": "it went wrong"}}}}, 1)'
    driver = ExternalDriver(make_plugin(tmp_path, "fake", body), 5)
    with pytest.raises(cls) as info:
        driver.inventory()
    assert info.value.http_status == status
    assert info.value.message.startswith('driver plugin "fake" inventory: it went wrong')
    if code == "no_such_code":
        assert "unknown error code 'no_such_code'" in info.value.message


def test_invalid_input_names_the_field_and_value(tmp_path: Path) -> None:
    body = (
        'answer({"error": {"code": "invalid_input", "message": "must be slow or fast", '
        '"field": "options.speed", "value": "warp"}}, 1)'
    )
    driver = ExternalDriver(make_plugin(tmp_path, "fake", body), 5)
    with pytest.raises(InvalidInput) as info:
        driver.validate_options({"speed": "warp"})
    assert info.value.to_dict() == {
        "code": "invalid_input",
        "message": "invalid options.speed 'warp': must be slow or fast (driver fake)",
        "field": "options.speed",
        "value": "warp",
    }
    assert info.value.http_status == 400


def test_an_error_even_with_exit_status_zero_is_an_error(tmp_path: Path) -> None:
    body = 'answer({"error": {"code": "conflict", "message": "taken"}})'
    with pytest.raises(Conflict):
        ExternalDriver(make_plugin(tmp_path, "fake", body), 5).inventory()


# --- what a plugin is sent ---------------------------------------------------------------------

NETWORK_KEYS = {"id", "name", "driver", "subnets", "options", "internal", "ipv6", "mtu", "tag"}
ENDPOINT_KEYS = {
    "network_id",
    "container_id",
    "ifname",
    "netns",
    "host_ifname",
    "tag",
    "addresses",
    "gateways",
    "mac",
    "host_mac",
}


def test_records_sent_hold_only_public_fields(tmp_path: Path) -> None:
    path = make_plugin(tmp_path, "fake", 'answer({"failures": [], "problems": []})')
    driver = ExternalDriver(path, 5)
    net, ep = network(), endpoint()
    driver.ensure_network(net)
    assert driver.check_endpoint(net, ep).problems == []
    assert driver.teardown_endpoint(net, ep) == []
    assert driver.teardown_network(net) == []
    sent = requests(path)[1:]
    assert [r["verb"] for r in sent] == [
        "network_create",
        "endpoint_check",
        "endpoint_detach",
        "network_remove",
    ]
    for req in sent:
        assert set(req) <= {"contract", "verb", "driver", "network", "endpoint"}
        assert set(req["network"]) == NETWORK_KEYS
        assert req["network"]["options"] == {"speed": "fast"}  # "dns" is netd's own key
        assert req["network"]["subnets"] == [{"subnet": "10.55.0.0/24", "gateway": "10.55.0.1"}]
        text = json.dumps(req)
        for private in ("4242", "secret", "label", "printer", "10.55.0.128", "9.9.9.9", "8080"):
            assert private not in text, (private, text)
    record = sent[1]["endpoint"]
    assert set(record) == ENDPOINT_KEYS
    assert record["addresses"] == ["10.55.0.5/24"] and record["gateways"] == ["10.55.0.1"]
    assert record["host_ifname"].startswith("nx") and len(record["host_ifname"]) == 15
    assert record["tag"] == "netd:ext:fake:c0ffeec0ffee:eth0:ctr1"
    assert sent[0]["network"]["tag"] == "netd:ext:fake:c0ffeec0ffee"


def test_an_internal_network_sends_no_gateways(tmp_path: Path) -> None:
    path = make_plugin(tmp_path, "fake", 'answer({"problems": []})')
    driver = ExternalDriver(path, 5)
    driver.check_endpoint(network(internal=True), endpoint())
    assert requests(path)[-1]["endpoint"]["gateways"] == []


def test_options_without_driver_keys_need_no_call(tmp_path: Path) -> None:
    path = make_plugin(tmp_path, "fake", 'answer({"options": {"speed": "fast"}})')
    driver = ExternalDriver(path, 5)
    assert driver.validate_options({"com.docker.network.driver.mtu": " 1400", "dns": "No"}) == {
        "mtu": "1400",
        "dns": "false",
    }
    assert [r["verb"] for r in requests(path)] == ["capabilities"]
    with pytest.raises(InvalidInput) as info:
        driver.validate_options({"mtu": "9"})
    assert info.value.field == "options.mtu"
    assert driver.validate_options({"Speed": "FAST", "mtu": "1500"}) == {
        "speed": "fast",
        "mtu": "1500",
    }
    assert requests(path)[-1]["options"] == {"Speed": "FAST"}


def test_netds_keys_are_declared_and_firewall_keys_refused_without_a_call(
    tmp_path: Path,
) -> None:
    # The network-wide keys come from netd.options (COMMON_OPTIONS), not a list of the
    # plugin module's own; contract 1 has no firewall, so its keys are refused as for macvlan.
    path = make_plugin(tmp_path, "fake", 'answer({"options": {}})')
    driver = ExternalDriver(path, 5)
    keys = driver.option_keys
    assert (keys.driver, keys.firewall, keys.open) == ("fake", False, True)
    assert set(keys.accepted()) == {"mtu", "dns", "dns_servers", "dns_forward_internal"}
    with pytest.raises(InvalidInput) as info:
        driver.validate_options({"com.docker.network.bridge.enable_icc": "false", "x": "1"})
    assert info.value.field == "options.com.docker.network.bridge.enable_icc"
    assert info.value.rule.startswith("not supported by driver fake: its containers' traffic")
    assert [r["verb"] for r in requests(path)] == ["capabilities"]


def test_a_plugin_may_not_return_netds_own_option_keys(tmp_path: Path) -> None:
    path = make_plugin(tmp_path, "fake", 'answer({"options": {"dns": "true"}})')
    with pytest.raises(KernelError, match="returned netd's own keys"):
        ExternalDriver(path, 5).validate_options({"speed": "fast"})


def test_failures_of_removals_and_checks_are_returned_not_raised(tmp_path: Path) -> None:
    path = make_plugin(tmp_path, "fake", 'sys.stderr.write("disk on fire\\n"); sys.exit(2)')
    driver = ExternalDriver(path, 5)
    expected = 'driver plugin "fake" {}: exited with status 2: disk on fire'
    assert driver.teardown_network(network()) == [expected.format("network_remove")]
    assert driver.teardown_endpoint(network(), endpoint()) == [expected.format("endpoint_detach")]
    assert driver.check_endpoint(network(), endpoint()).problems == [
        expected.format("endpoint_check")
    ]


def test_tags_names_and_cni_interfaces_need_no_call(tmp_path: Path) -> None:
    path = make_plugin(tmp_path, "fake")
    driver = ExternalDriver(path, 5)
    net, ep = network(), endpoint(host_ifname="nxabc", host_mac="02:00:00:00:00:01")
    assert driver.endpoint_host_ifname(net, "ctr1", "eth0").startswith("nx")
    assert driver.network_tags(net) == frozenset()  # no network_object declared
    assert driver.endpoint_tags(net, ep) == {"netd:ext:fake:c0ffeec0ffee:eth0:ctr1"}
    assert [(i.name, i.sandbox, i.container) for i in driver.cni_interfaces(net, ep)] == [
        ("nxabc", "", False),
        ("eth0", "/run/netns/nowhere", True),
    ]
    assert driver.host_interface(net) == ""
    assert driver.describe(net, [ep])["plugin"] == str(path)
    assert [r["verb"] for r in requests(path)] == ["capabilities"]


def test_remove_object_only_removes_what_the_inventory_reports(tmp_path: Path) -> None:
    body = """
if verb == "inventory":
    answer({"objects": [{"tag": "netd:ext:fake:c0ffeec0ffee:eth0:x", "ifname": "nxmine"},
                        {"tag": "netd:c0ffeec0ffee:eth0:x", "ifname": "nvbridge"},
                        {"tag": "netd:ext:fake2:c0ffeec0ffee:eth0:x", "ifname": "nxother"},
                        {"tag": "netd:parent:fake:" + "c0" * 32, "ifname": "nmfake"}]})
answer({"removed": True})
"""
    path = make_plugin(tmp_path, "fake", body)
    driver = ExternalDriver(path, 5)
    assert driver.inventory() == {"netd:ext:fake:c0ffeec0ffee:eth0:x": "nxmine"}
    assert driver.remove_object("nvbridge") is False
    assert driver.remove_object("nxother") is False  # another plugin's (fake2), by its tag
    assert driver.remove_object("nmfake") is False  # not an external driver's kind of tag
    assert driver.remove_object("nxmine") is True
    removes = [r for r in requests(path) if r["verb"] == "object_remove"]
    assert [r["object"] for r in removes] == [
        {"tag": "netd:ext:fake:c0ffeec0ffee:eth0:x", "ifname": "nxmine"}
    ]


# --- discovery ---------------------------------------------------------------------------------


def test_discovery_loads_usable_plugins_by_file_name(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    plugins = tmp_path / "drivers"
    make_plugin(plugins, "good")
    make_plugin(plugins, "also.good-2")
    make_plugin(plugins, "bridge")
    make_plugin(plugins, "loose", mode=0o775)
    make_plugin(plugins, "notexec", mode=0o644)
    make_plugin(plugins, "-dash")
    make_plugin(plugins, ".hidden")
    make_plugin(plugins, "broken", caps={"contract": "netd.driver/1", "capabilities": {"x": 1}})
    (plugins / "subdir").mkdir()
    with caplog.at_level(logging.INFO, "netd.drivers.external"):
        found = load_external_drivers(plugins, reserved={"bridge", "ipam"}, timeout=5)
    assert sorted(found) == ["also.good-2", "good"]
    said = "\n".join(r.getMessage() for r in caplog.records)
    assert f"driver plugin {plugins / 'bridge'} refused: 'bridge' is a built-in driver" in said
    assert "loose refused: writable by group or others (mode 775)" in said
    assert "notexec refused: not executable" in said
    assert "-dash refused: file name: must match" in said
    assert "subdir refused: not a regular file" in said
    assert "broken not loaded: " in said and "unknown capabilities ['x']" in said
    assert ".hidden" not in said
    assert load_external_drivers(tmp_path / "absent", reserved=()) == {}


def test_a_writable_plugin_directory_is_refused(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    plugins = tmp_path / "drivers"
    make_plugin(plugins, "good")
    plugins.chmod(0o777)
    with caplog.at_level(logging.ERROR, "netd.drivers.external"):
        assert load_external_drivers(plugins, reserved=()) == {}
    assert "all refused: the directory is writable by group or others" in caplog.text


def test_get_driver_finds_a_plugin_by_name_only(tmp_path: Path) -> None:
    make_plugin(tmp_path, "fake")
    driver = get_driver("fake", plugin_dir=tmp_path)
    assert driver.name == "fake"
    for bad in ("../fake", "sub/fake"):
        with pytest.raises(InvalidInput) as info:
            get_driver(bad, plugin_dir=tmp_path)
        assert info.value.field == "driver"
    with pytest.raises(InvalidInput, match="unknown driver"):
        get_driver("absent", plugin_dir=tmp_path)


def test_setup_on_a_path_that_is_no_namespace_calls_nothing(tmp_path: Path) -> None:
    path = make_plugin(tmp_path, "fake")
    driver = ExternalDriver(path, 5)
    with pytest.raises(InvalidInput) as info:
        driver.setup_endpoint(network(), endpoint(netns=str(tmp_path)))
    assert info.value.field == "netns"
    assert [r["verb"] for r in requests(path)] == ["capabilities"]
    assert os.path.exists(path)
