"""Throwaway certificates for tests of etcd over TLS, made with the ``openssl`` command.

:func:`make_pki` writes a CA, a server certificate for the given IP addresses (SAN) and a client
certificate into a directory the test owns (a pytest temporary directory): everything an etcd
with ``--client-cert-auth`` and a netd node talking to it need. Keys are ECDSA P-256 and live
one day; nothing is written outside ``directory``. The same commands are in docs/multi-host.md
("TLS"), for people setting it up by hand.

``openssl`` comes with Debian; it is used rather than a Python library so the certificates are
made the way an operator would make them.
"""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from . import run

DAYS = "1"


@dataclass(frozen=True)
class Pki:
    """Where the CA, the server's and the client's certificates and keys are (PEM files)."""

    ca_cert: Path
    ca_key: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path


def _openssl() -> str:
    binary = shutil.which("openssl")
    if binary is None:
        raise RuntimeError("openssl not found: install Debian's openssl package")
    return binary


def make_ca(directory: Path, name: str) -> tuple[Path, Path]:
    """A self-signed CA named ``name``: (certificate, key) under ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    cert, key = directory / f"{name}.crt", directory / f"{name}.key"
    run([
        _openssl(), "req", "-x509", "-new", "-nodes", "-days", DAYS,
        "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
        "-keyout", str(key), "-out", str(cert), "-subj", f"/CN={name}",
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign",
    ])  # fmt: skip
    return cert, key


def issue(
    directory: Path,
    ca: tuple[Path, Path],
    name: str,
    *,
    ips: Sequence[str] = (),
    usage: str = "clientAuth",
) -> tuple[Path, Path]:
    """A certificate for ``name`` signed by ``ca``: (certificate, key) under ``directory``.

    ``ips`` become IP subjectAltNames (what a client checks a server's address against);
    ``usage`` is the extended key usage (serverAuth, clientAuth, or both comma-separated).
    """
    cert, key = directory / f"{name}.crt", directory / f"{name}.key"
    csr, ext = directory / f"{name}.csr", directory / f"{name}.ext"
    lines = [
        "basicConstraints=critical,CA:FALSE",
        "keyUsage=critical,digitalSignature,keyEncipherment",
        f"extendedKeyUsage={usage}",
    ]
    if ips:
        lines.append("subjectAltName=" + ",".join(f"IP:{ip}" for ip in ips))
    ext.write_text("\n".join(lines) + "\n")
    run([
        _openssl(), "req", "-new", "-nodes",
        "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
        "-keyout", str(key), "-out", str(csr), "-subj", f"/CN={name}",
    ])  # fmt: skip
    run([
        _openssl(), "x509", "-req", "-in", str(csr), "-days", DAYS,
        "-CA", str(ca[0]), "-CAkey", str(ca[1]), "-CAcreateserial",
        "-out", str(cert), "-extfile", str(ext),
    ])  # fmt: skip
    return cert, key


def make_pki(directory: Path, server_ips: Sequence[str], ca_name: str = "netd-test-ca") -> Pki:
    """A CA, a server certificate for ``server_ips`` and a client certificate (``netd-node``)."""
    ca = make_ca(directory, ca_name)
    server = issue(directory, ca, "etcd-server", ips=server_ips, usage="serverAuth,clientAuth")
    client = issue(directory, ca, "netd-node")
    return Pki(ca[0], ca[1], server[0], server[1], client[0], client[1])
