"""The HTTP side of :class:`netd.store.etcd.EtcdStore`: one client per etcd member, TLS, and
failures said in a few words.

etcd3gw talks to etcd's grpc-gateway over ``requests``; this module builds its clients (with
the CA file given winning over the environment's bundles) and turns the exceptions of
``requests``, ``urllib3``, ``ssl`` and etcd itself into one line that names the cause.
"""

from __future__ import annotations

import http.client
import json as _json
import ssl
from typing import Any
from urllib.parse import urlsplit

import requests
import urllib3
from etcd3gw.client import Etcd3Client
from etcd3gw.exceptions import ConnectionTimeoutError, Etcd3Exception
from requests.utils import DEFAULT_CA_BUNDLE_PATH

from ..errors import InvalidInput

_Tls = tuple[str | None, str | None, str | None]  # CA file, client certificate, client key


class _Endpoint:
    """One etcd member as the client sees it: its URL and a gateway client bound to it."""

    def __init__(
        self, url: str, timeout: float, tls: tuple[str | None, str | None, str | None]
    ) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise InvalidInput("etcd_endpoints", url, "must be http://HOST:PORT or https://...")
        self.url = url
        fields = ("etcd_ca_file", "etcd_cert_file", "etcd_key_file")
        for field, path in zip(fields, tls, strict=True):
            if path is not None:
                _check_readable(field, path)
        if (tls[1] is None) != (tls[2] is None):
            raise InvalidInput(
                "etcd_cert_file" if tls[1] is None else "etcd_key_file",
                "(unset)",
                "a client certificate and its key go together: set both or neither",
            )
        session = _Session()
        # etcd is never reached through an HTTP proxy of the environment (HTTP_PROXY on a
        # host would otherwise route the cluster's state through it), and the CA is the one
        # configured here, not a bundle from the environment. It also spares every call the
        # scan of the environment and ~/.netrc that requests does by default (~0.1 ms each).
        session.trust_env = False
        if tls[0] is not None:
            session.verify = tls[0]
        if tls[1] is not None and tls[2] is not None:
            session.cert = (tls[1], tls[2])
        self.client = Etcd3Client(
            host=parts.hostname,
            port=parts.port or 2379,
            protocol=parts.scheme,
            timeout=timeout,
            api_path="/v3/",  # etcd >= 3.4; saves the discovery request
            session=session,
        )


def _check_readable(field: str, path: str) -> None:
    """InvalidInput naming ``field`` unless ``path`` is a file this process can read (requests
    would otherwise fail later, on the first call, with an error outside its own tree)."""
    try:
        with open(path, "rb"):
            pass
    except OSError as e:
        raise InvalidInput(field, path, f"cannot be read: {e.strerror or e}") from e


class _Session(requests.Session):
    """The session etcd3gw is given: requests for the watch stream, urllib3 for the rest.

    Every call but the watch is one small JSON POST to one etcd member: it goes straight to a
    urllib3 connection pool (the transport requests itself uses), without requests' session
    machinery (cookies, hooks, redirects, adapters), which cost ~0.35 ms of CPU per call
    here, under the daemon's GIL, while an attach's interface is being made. Its failures are
    raised as requests' exceptions, wrapping urllib3's, as requests would, so etcd3gw and
    :func:`_reason` see what they always saw.

    Its own CA file (etcd_ca_file) wins over the environment's: plain requests lets
    REQUESTS_CA_BUNDLE or CURL_CA_BUNDLE replace ``session.verify`` (psf/requests#3829), so
    with either set, as on many Debian hosts, etcd's private CA was silently ignored. The
    session is made with ``trust_env`` off (:class:`_Endpoint`), so requests (the watch) reads
    no environment at all, and the urllib3 pool is built from ``verify`` and ``cert`` only.
    """

    _pool: urllib3.PoolManager | None = None

    def post(self, url: str | bytes, data: Any = None, json: Any = None, **kw: Any) -> Any:
        if kw.get("stream") or set(kw) - {"timeout"}:
            return super().post(url, data=data, json=json, **kw)
        body = data if json is None else _json.dumps(json)
        return self._send(str(url), body, kw.get("timeout"))

    def _send(self, url: str, body: str | bytes | None, timeout: float | None) -> _Answer:
        pool = self._pool
        if pool is None:
            pool = self._pool = self._make_pool()
        try:
            r = pool.request(
                "POST", url, body=body, headers=_HEADERS, retries=False, redirect=False,
                timeout=urllib3.Timeout(connect=timeout, read=timeout),
            )  # fmt: skip
        except urllib3.exceptions.ConnectTimeoutError as e:
            raise requests.exceptions.ConnectTimeout(e) from e
        except urllib3.exceptions.ReadTimeoutError as e:
            raise requests.exceptions.ReadTimeout(e) from e
        except urllib3.exceptions.SSLError as e:
            raise requests.exceptions.SSLError(e) from e
        except (urllib3.exceptions.HTTPError, OSError) as e:
            raise requests.exceptions.ConnectionError(e) from e
        return _Answer(r.status, r.reason or "", r.data)

    def _make_pool(self) -> urllib3.PoolManager:
        verify, cert = self.verify, self.cert
        tls: dict[str, Any] = {}
        if verify is False:
            tls["cert_reqs"] = "CERT_NONE"
        else:
            tls["cert_reqs"] = "CERT_REQUIRED"
            tls["ca_certs"] = verify if isinstance(verify, str) else DEFAULT_CA_BUNDLE_PATH
        if isinstance(cert, tuple):
            tls["cert_file"], tls["key_file"] = cert
        # As many connections as the store's writer threads (netd.cluster.store) may use.
        return urllib3.PoolManager(num_pools=4, maxsize=16, **tls)


_HEADERS = {"Content-Type": "application/json"}


class _Answer:
    """What etcd3gw reads of an answer: the status, the reason and the JSON body."""

    def __init__(self, status: int, reason: str, content: bytes) -> None:
        self.status_code = status
        self.reason = reason
        self.content = content

    @property
    def text(self) -> str:
        return self.content.decode(errors="replace")

    def json(self) -> Any:
        return _json.loads(self.content)


def _reason(e: BaseException) -> str:
    """A foreign error in a few words: timeouts said as such, TLS and socket failures by their
    cause (never the HTTP library's wrapper reprs), HTTP errors by etcd's own message."""
    if isinstance(e, ConnectionTimeoutError | requests.Timeout):
        return "timed out"
    chain = _causes(e)
    for x in chain:
        if isinstance(x, ssl.SSLCertVerificationError):
            return (
                f"TLS: etcd's certificate was not accepted ({x.verify_message}); is "
                "etcd_ca_file the CA that signed it, and the endpoint an address it names?"
            )
    for x in chain:
        if isinstance(x, ssl.SSLError):
            # etcd rejecting a client certificate (or its absence) ends the handshake: under
            # TLS 1.3 the client sees an EOF, under 1.2 an alert.
            what = "etcd closed it" if isinstance(x, ssl.SSLEOFError) else x.reason or str(x)
            return (
                f"TLS: the handshake with etcd failed ({what.lower().replace('_', ' ')}); "
                "does etcd want a client certificate (etcd_cert_file, etcd_key_file) signed by "
                "a CA it trusts?"
            )
    for x in chain:
        if isinstance(x, OSError) and x.errno is not None and x.strerror:
            return x.strerror.lower()
    for x in chain:
        if isinstance(x, ConnectionResetError | http.client.RemoteDisconnected):
            return "etcd closed the connection"
    if isinstance(e, Etcd3Exception) and e.detail_text:
        return _etcd_message(e.detail_text)
    last = chain[-1]
    text = " ".join(str(a) for a in last.args if a) if last.args else type(last).__name__
    return text[:300]


def _causes(e: BaseException) -> list[BaseException]:
    """``e`` and what caused it, outermost first: etcd3gw raises its own errors while handling
    requests' (``__context__``), requests wraps urllib3's (``args[0]``), urllib3 keeps the
    socket or TLS error as ``reason`` or ``__cause__``."""
    out: list[BaseException] = []
    x: BaseException | None = e
    while x is not None and all(x is not seen for seen in out) and len(out) < 20:
        out.append(x)
        inner = getattr(x, "reason", None)
        if not isinstance(inner, BaseException):
            inner = next((a for a in x.args if isinstance(a, BaseException)), None)
        x = inner or x.__cause__ or x.__context__
    return out


def _etcd_message(body: str) -> str:
    """etcd's gateway answers errors as JSON ``{"error": ..., "message": ...}``; its text."""
    try:
        doc = _json.loads(body)
    except ValueError:
        return body.strip()[:300]
    if isinstance(doc, dict):
        return str(doc.get("message") or doc.get("error") or body)[:300]
    return body.strip()[:300]
