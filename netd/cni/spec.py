"""CNI spec constants shared by the plugin executable and the daemon: versions and error codes.

STANDARD LIBRARY ONLY: the plugin imports this module under ``python3 -I -S``. It holds what both
sides must agree on (the supported spec versions, the error codes and the error object's shape,
how a conflist given in place of a plugin config is flattened); it does no I/O and knows nothing
about netd's records.

Error codes follow the spec (SPEC.md "Error" section, v1.1.0): 1-99 are the spec's, 100+ are
netd's own. The table is in docs/cni.md.
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:  # the plugin imports this module; typing would cost it start-up time
    from typing import Any

CURRENT_VERSION = "1.1.0"
SUPPORTED_VERSIONS = ("0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0")

# --- spec error codes (SPEC.md "Error"; 50/51 are STATUS-only since 1.1.0) ---
INCOMPATIBLE_VERSION = 1
UNSUPPORTED_FIELD = 2
UNKNOWN_CONTAINER = 3
INVALID_ENVIRONMENT = 4
IO_FAILURE = 5
DECODE_FAILURE = 6
INVALID_CONFIG = 7
TRY_AGAIN_LATER = 11
PLUGIN_NOT_AVAILABLE = 50
PLUGIN_NOT_AVAILABLE_LIMITED = 51

# --- netd's own codes (the spec reserves 100+ for plugins) ---
ADDRESS_EXHAUSTED = 100
PORT_CONFLICT = 101
ATTACHMENT_CONFLICT = 102
KERNEL_FAILURE = 103
FIREWALL_FAILURE = 104
PERMISSION_DENIED = 105
# libcni's types.ErrInternal: an error the plugin did not classify.
INTERNAL = 999

# The verbs the daemon serves; VERSION is answered by the plugin itself.
COMMANDS = ("ADD", "DEL", "CHECK", "GC", "STATUS", "VERSION")

# --- limits both plugin clients enforce before sending (client.c gets them from install.py) ---
# A config and the environment must fit the daemon's default 1 MiB body limit with room to
# spare; real configs are a few KiB. Larger is code 7.
MAX_CONFIG_BYTES = 512 * 1024
# Objects/arrays nested deeper than this are code 6; real configs nest about 6 levels.
MAX_JSON_DEPTH = 64
MAX_CONTAINER_ID = 256  # bytes; as netd.names.MAX_CONTAINER_ID
MAX_IFNAME = 15  # IFNAMSIZ (16, linux/if.h) without the NUL
MAX_NETNS = 4096  # PATH_MAX (linux/limits.h)
MAX_ENV_TEXT = 8192  # CNI_ARGS and CNI_PATH, bytes


class CniError(Exception):
    """A failure to report to the runtime as the spec's error object."""

    def __init__(self, code: int, msg: str, details: str = "") -> None:
        super().__init__(msg)
        self.code = code
        self.msg = msg
        self.details = details

    def to_result(self, cni_version: str) -> dict[str, Any]:
        """The spec's error object, ``{cniVersion, code, msg[, details]}``."""
        out: dict[str, Any] = {"cniVersion": cni_version, "code": self.code, "msg": self.msg}
        if self.details:
            out["details"] = self.details
        return out


def version_key(version: str) -> tuple[int, int, int]:
    """``"1.0.0"`` → ``(1, 0, 0)``; CniError(1) for a string that is not a semantic version."""
    parts = version.split(".")
    if len(parts) != 3 or not all(p.isdigit() for p in parts):
        raise CniError(INCOMPATIBLE_VERSION, f"invalid cniVersion {version!r}: not a x.y.z version")
    return (int(parts[0]), int(parts[1]), int(parts[2]))


def reply_version(config: object) -> str:
    """The version to answer in: the config's ``cniVersion`` when supported, else the current."""
    if isinstance(config, dict):
        requested = config.get("cniVersion")
        if isinstance(requested, str) and requested in SUPPORTED_VERSIONS:
            return requested
    return CURRENT_VERSION


def version_result(config: object) -> dict[str, Any]:
    """The VERSION answer: the version spoken and every version supported."""
    return {"cniVersion": reply_version(config), "supportedVersions": list(SUPPORTED_VERSIONS)}


def flatten_config(config: dict[str, Any]) -> dict[str, Any]:
    """A plugin's own config; a whole conflist (as a person may pipe in) yields its netd entry.

    Runtimes pass each plugin its own config with ``name`` and ``cniVersion`` copied in; a
    conflist has ``plugins`` instead of ``type``. The entry chosen is the first whose type is
    ``netd`` or whose ``ipam.type`` is ``netd``.
    """
    plugins = config.get("plugins")
    if "type" in config or not isinstance(plugins, list):
        return config
    for entry in plugins:
        if not isinstance(entry, dict):
            continue
        ipam = entry.get("ipam")
        if entry.get("type") == "netd" or (isinstance(ipam, dict) and ipam.get("type") == "netd"):
            flat = dict(entry)
            for key in ("name", "cniVersion"):
                if key in config:
                    flat[key] = config[key]
            return flat
    raise CniError(
        INVALID_CONFIG,
        'invalid config: a conflist was given but none of its plugins has type "netd"',
    )
