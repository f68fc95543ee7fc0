"""resolv.conf text for sandboxes and containers that should use netd's DNS.

Pure rendering with validation (resolv(5)): at most 3 nameservers are used by glibc, the search
list is at most 6 domains / 256 characters (older glibc), options are single tokens. It does
not write files; the compose/connect code decides where the text goes.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Sequence

from ..errors import InvalidInput
from ..names import check_dns_name

MAXNS = 3  # resolv.h MAXNS: glibc ignores further nameserver lines
MAX_SEARCH = 6
_OPTION = re.compile(r"[a-z0-9-]+(:[0-9]+)?\Z")


def render_resolv_conf(
    nameservers: Sequence[str], search: Sequence[str] = (), options: Sequence[str] = ()
) -> str:
    """The text of a resolv.conf naming ``nameservers`` with a search list and options."""
    if not nameservers:
        raise InvalidInput("nameservers", list(nameservers), "at least one nameserver is needed")
    if len(nameservers) > MAXNS:
        raise InvalidInput("nameservers", list(nameservers), f"glibc uses at most {MAXNS}")
    lines = []
    for ns in nameservers:
        try:
            lines.append(f"nameserver {ipaddress.ip_address(ns)}")
        except ValueError as exc:
            raise InvalidInput("nameservers", ns, "must be an IP address") from exc
    if search:
        if len(search) > MAX_SEARCH:
            raise InvalidInput("search", list(search), f"at most {MAX_SEARCH} domains")
        lines.append("search " + " ".join(check_dns_name(d, "search") for d in search))
    if options:
        for opt in options:
            if not _OPTION.match(opt):
                raise InvalidInput("options", opt, "a resolv.conf option like ndots:1 or edns0")
        lines.append("options " + " ".join(options))
    return "\n".join(lines) + "\n"
