"""A minimal CNI runtime for tests: execs plugin binaries the way libcni does.

Config on stdin, CNI_* in the environment, result on stdout; chained plugins get the previous
result as ``prevResult``. Plugins run inside the sandbox host namespace (where a runtime runs).
"""

from __future__ import annotations

import json
import os
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from netns_fixtures import Namespace

REFERENCE_DIR = Path("/usr/lib/cni")  # Debian's containernetworking-plugins


@dataclass
class CniResult:
    """What one plugin exec produced."""

    code: int
    out: Any
    err: str

    @property
    def error_code(self) -> int | None:
        """The CNI error code, when the plugin failed."""
        return self.out.get("code") if self.code and isinstance(self.out, dict) else None


@dataclass
class Runtime:
    """Execs plugins from ``bin_dirs`` inside ``host`` against the daemon ``socket``."""

    host: Namespace
    bin_dirs: list[Path]
    socket: Path
    extra_env: dict[str, str] = field(default_factory=dict)

    def exec(
        self,
        plugin: str,
        command: str,
        config: dict[str, Any] | str,
        *,
        container_id: str = "",
        netns: str = "",
        ifname: str = "eth0",
        args: str = "",
        env: dict[str, str] | None = None,
    ) -> CniResult:
        """Run one plugin verb; returns the exit code and parsed stdout."""
        path = ":".join(str(d) for d in self.bin_dirs)
        binary = next((d / plugin for d in self.bin_dirs if (d / plugin).exists()), None)
        assert binary is not None, f"plugin {plugin} not in {path}"
        environ = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "CNI_COMMAND": command,
            "CNI_CONTAINERID": container_id,
            "CNI_NETNS": netns,
            "CNI_IFNAME": ifname,
            "CNI_ARGS": args,
            "CNI_PATH": path,
            "NETD_SOCKET": str(self.socket),
            **self.extra_env,
            **(env or {}),
        }
        stdin = config if isinstance(config, str) else json.dumps(config)
        proc = subprocess.run(
            self.host.argv(str(binary)),
            input=stdin,
            capture_output=True,
            text=True,
            env=environ,
            timeout=90,
        )
        try:
            out = json.loads(proc.stdout) if proc.stdout.strip() else None
        except ValueError:
            out = proc.stdout
        return CniResult(proc.returncode, out, proc.stderr)

    def conflist(
        self,
        conflist: dict[str, Any],
        command: str,
        *,
        container_id: str,
        netns: str,
        ifname: str = "eth0",
        args: str = "",
        runtime_config: dict[str, Any] | None = None,
    ) -> CniResult:
        """Run a whole conflist like libcni: ADD in order with prevResult, DEL in reverse."""
        plugins = conflist["plugins"]
        order = plugins if command in ("ADD", "CHECK") else list(reversed(plugins))
        prev: Any = None
        last = CniResult(0, None, "")
        for plugin in order:
            conf = {"cniVersion": conflist["cniVersion"], "name": conflist["name"], **plugin}
            if runtime_config:
                caps = plugin.get("capabilities", {})
                rc = {k: v for k, v in runtime_config.items() if caps.get(k)}
                if rc:
                    conf["runtimeConfig"] = rc
            if prev is not None:
                conf["prevResult"] = prev
            last = self.exec(
                plugin["type"],
                command,
                conf,
                container_id=container_id,
                netns=netns,
                ifname=ifname,
                args=args,
            )
            if last.code != 0:
                return last
            if command == "ADD":
                prev = last.out
        return CniResult(0, prev if command == "ADD" else last.out, last.err)
