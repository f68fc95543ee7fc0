"""A transaction sent to etcd now and read later, by the thread that sent it or another.

An attach on a network across hosts writes etcd once, while its interface is made
(netd.cluster.store). Sent from a second thread, the request's Python work (JSON, HTTP) shares
the daemon's GIL with the kernel work and slows it as much as it overlaps it. Split in two, it
does not: :meth:`Pipeline.send` writes the request on its own connection and returns at once
(etcd works on it meanwhile), and :meth:`InFlight.answer` reads the reply once the kernel work
is done, usually already there. Nothing runs in between.

This is the standard library's ``http.client``, whose request and response are two calls; the
body is the grpc-gateway's JSON that :mod:`netd.store.etcd_txn` builds, the same etcd3gw
sends. Any failure here is only the caller's cue to send the transaction again the usual way
(etcd3gw, failover across members, bounded, errors said in full): transactions are guarded by
compares, so one that did land is seen as such by its retry.
"""

from __future__ import annotations

import http.client
import json
import ssl
import threading
from typing import Any
from urllib.parse import urlsplit

from ..errors import StoreError

_HEADERS = {"Content-Type": "application/json"}
_IDLE = 8  # connections kept per member between attaches (attaches run in parallel)


class PipelineFailed(StoreError):
    """The pipelined transaction did not get an answer: send it again the usual way."""


class InFlight:
    """One transaction on the wire; :meth:`answer` reads etcd's reply (once)."""

    def __init__(self, pipeline: Pipeline, url: str, conn: http.client.HTTPConnection) -> None:
        self._pipeline = pipeline
        self._url = url
        self._conn: http.client.HTTPConnection | None = conn

    def answer(self) -> dict[str, Any]:
        """etcd's JSON answer; PipelineFailed if there is none (the connection is closed)."""
        conn, self._conn = self._conn, None
        if conn is None:
            raise PipelineFailed("the answer was already read")
        try:
            reply = conn.getresponse()
            body = reply.read()
            if reply.status != 200:
                raise PipelineFailed(f"etcd answered {reply.status} {reply.reason}")
            doc = json.loads(body)
            if not isinstance(doc, dict):
                raise PipelineFailed("etcd's answer is not a JSON object")
        except (OSError, http.client.HTTPException, ValueError) as e:
            conn.close()
            raise PipelineFailed(f"reading etcd's answer: {e}") from e
        except PipelineFailed:
            conn.close()
            raise
        self._pipeline.release(self._url, conn)
        return doc

    def drop(self) -> None:
        """Forget the answer (the caller no longer needs it): close the connection."""
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()


class Pipeline:
    """Connections to etcd members for transactions read later (thread-safe)."""

    def __init__(
        self,
        timeout: float,
        ca_file: str | None = None,
        cert_file: str | None = None,
        key_file: str | None = None,
    ) -> None:
        self.timeout = timeout
        self._tls = (ca_file, cert_file, key_file)
        self._context: ssl.SSLContext | None = None
        self._idle: dict[str, list[http.client.HTTPConnection]] = {}
        self._lock = threading.Lock()

    def send(self, url: str, path: str, body: str) -> InFlight:
        """Write ``POST <url><path>`` with ``body`` and return without waiting for the answer;
        PipelineFailed if it could not be written."""
        with self._lock:
            idle = self._idle.get(url)
            conn = idle.pop() if idle else None
        for reused in (conn is not None, False):
            try:
                if conn is None:
                    conn = self._connect(url)
                conn.request("POST", path, body, _HEADERS)
            except (OSError, ssl.SSLError, http.client.HTTPException, ValueError) as e:
                if conn is not None:
                    conn.close()
                conn = None
                if reused:
                    continue  # an idle connection etcd closed meanwhile: one new one
                raise PipelineFailed(f"sending to etcd at {url}: {e}") from e
            return InFlight(self, url, conn)
        raise PipelineFailed(f"sending to etcd at {url}: no connection")  # pragma: no cover

    def release(self, url: str, conn: http.client.HTTPConnection) -> None:
        """Keep a connection whose answer was read, for the next transaction."""
        with self._lock:
            idle = self._idle.setdefault(url, [])
            if len(idle) < _IDLE:
                idle.append(conn)
                return
        conn.close()

    def close(self) -> None:
        """Close every idle connection."""
        with self._lock:
            idle, self._idle = self._idle, {}
        for conns in idle.values():
            for conn in conns:
                conn.close()

    def _connect(self, url: str) -> http.client.HTTPConnection:
        parts = urlsplit(url)
        host, port = parts.hostname or "", parts.port or 2379
        if parts.scheme != "https":
            return http.client.HTTPConnection(host, port, timeout=self.timeout)
        if self._context is None:
            ca, cert, key = self._tls
            context = ssl.create_default_context(cafile=ca)
            if cert is not None:
                context.load_cert_chain(cert, key)
            self._context = context
        return http.client.HTTPSConnection(host, port, timeout=self.timeout, context=self._context)
