"""`netd daemon --socket PATH` serves on PATH (as `netd --socket PATH daemon` always did)."""

from __future__ import annotations

from netns_fixtures import Namespace
from netns_fixtures.daemon import NETD, Daemon


class DaemonSocketFlag(Daemon):
    """The daemon started with the socket given to the `daemon` subcommand itself."""

    def argv(self) -> list[str]:
        argv = super().argv()
        assert argv[1:3] == ["--socket", str(self.socket)]
        return [NETD, "daemon", "--socket", str(self.socket), *argv[4:]]


def test_daemon_socket_option(host: Namespace) -> None:
    d = DaemonSocketFlag(host)
    assert d.argv()[1:4] == ["daemon", "--socket", str(d.socket)]
    d.start()  # waits until GET /v1/status answers ready on d.socket
    try:
        assert "listening on " + str(d.socket) in d.log()
        assert d.socket.is_socket()
        out = d.cli("network", "create", "web", "--subnet", "10.134.0.0/24").stdout
        assert out.strip()
        assert d.request("GET", "/v1/networks/web")[0] == 200
    finally:
        code = d.stop()
        removed = not d.socket.exists()  # a clean stop removes its socket
        d.close_checked()
    assert code == 0 and removed
