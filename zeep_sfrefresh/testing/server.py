"""The HTTP plumbing under the stand-in org: sockets, threads, keep-alive, and nothing else.

Knows no Salesforce: it turns each request into a :class:`Request`, asks the application for
an :class:`Answer` and writes it back (or drops the connection when told to, or trickles it
byte by byte). Kept apart from :mod:`zeep_sfrefresh.testing.org` so the org's protocol logic
reads without socket details, and so stopping is handled in one place:
:meth:`LoopbackServer.close_connections` cuts idle keep-alive connections, and the server's
``stopping`` event ends a trickle between two bytes, which lets ``server_close()`` join every
handler thread promptly.

Given an :class:`ssl.SSLContext` it serves https: each accepted connection is wrapped
without a handshake, and the handshake happens on the connection's own thread, so a client
that connects and stalls holds up only its own thread, never the accept loop.
"""

from __future__ import annotations

import contextlib
import json
import socket
import ssl
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Protocol, cast
from urllib.parse import urlsplit

__all__ = ["MAX_BODY", "Answer", "App", "LoopbackServer", "Request"]

MAX_BODY = 10 * 1024 * 1024
"""Largest request body accepted; bigger ones get HTTP 413 and a closed connection."""

_LINE_LIMIT = 65537


@dataclass(frozen=True)
class Request:
    """One HTTP request, fully read."""

    method: str
    path: str
    query: str
    headers: Mapping[str, str]
    """Header values by lower-case name."""
    body: bytes


@dataclass
class Answer:
    """What to write back; ``drop`` closes the connection without any response."""

    status: int = 200
    body: bytes = b""
    content_type: str = "text/xml;charset=UTF-8"
    headers: dict[str, str] = field(default_factory=dict)
    """Extra headers. A ``Date`` here replaces the one the server adds."""
    drop: bool = False
    trickle: float = 0.0
    """Seconds between two bytes: when above 0 the whole answer (status line, headers, body)
    is written one byte at a time and the connection is closed afterwards. The trickle stops
    early, quietly, when the client hangs up or the server is stopping."""
    on_done: Callable[[], None] | None = field(default=None, repr=False, compare=False)
    """Called once by the server when it is done with the answer: written in full, cut short
    (client gone, server stopping) or dropped. Lets the app hold state (an in-flight mark)
    for as long as a slow answer is on the wire; whoever writes an answer must call it."""

    @classmethod
    def json(cls, status: int, value: object, headers: Mapping[str, str] | None = None) -> Answer:
        """A compact JSON answer with Salesforce's JSON content type."""
        body = json.dumps(value, separators=(",", ":")).encode("utf-8")
        return cls(status, body, "application/json;charset=UTF-8", dict(headers or {}))


class App(Protocol):
    """What the server serves: the org implements this."""

    def handle(self, request: Request) -> Answer:
        """Answer one request (called on the connection's thread)."""
        ...

    def record_internal_error(self, error: BaseException) -> None:
        """Note an exception ``handle`` raised (the client gets a bare HTTP 500)."""
        ...


class LoopbackServer(ThreadingHTTPServer):
    """A threading HTTP server on 127.0.0.1 that can be stopped cleanly; ``port`` 0 (the
    default) takes a free one. With ``ssl_context`` (a server-side context) it speaks https."""

    daemon_threads = False
    block_on_close = True  # server_close() joins the handler threads
    allow_reuse_address = True
    request_queue_size = 128  # race tests open dozens of connections at once

    def __init__(
        self,
        app: App,
        stopping: threading.Event | None = None,
        port: int = 0,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.app = app
        self.ssl_context = ssl_context
        self.stopping = stopping if stopping is not None else threading.Event()
        """Set when the server is being stopped: a trickling answer ends at its next pause.
        The app may share its own event here; :meth:`close_connections` sets it too."""
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        super().__init__(("127.0.0.1", port), _Handler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind does a reverse DNS lookup (getfqdn), slow on some hosts.
        self.socket.bind(self.server_address)
        self.server_address = self.socket.getsockname()
        host, port = self.server_address[:2]
        self.server_name = str(host)
        self.server_port = int(port)

    def get_request(self) -> tuple[socket.socket, Any]:
        """Accept a connection; with TLS, wrap it but leave the handshake to its thread.

        A handshake here would run on the accept loop, where one slow or silent client
        would keep every other client waiting.
        """
        connection, address = self.socket.accept()
        if self.ssl_context is not None:
            connection = self.ssl_context.wrap_socket(
                connection, server_side=True, do_handshake_on_connect=False
            )
        return connection, address

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._connections_lock:
            self._connections.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self._connections_lock:
            self._connections.discard(request)
        super().shutdown_request(request)

    def close_connections(self) -> None:
        """Shut every open connection so idle keep-alive handler threads end at once.

        Also sets ``stopping``, so a trickling answer stops instead of writing into a dead socket.
        """
        self.stopping.set()
        with self._connections_lock:
            connections = list(self._connections)
        for connection in connections:
            with contextlib.suppress(OSError):
                # The plain socket's shutdown, also for a TLS one: SSLSocket.shutdown would
                # first drop the TLS state that the connection's own thread may be using.
                socket.socket.shutdown(connection, socket.SHUT_RDWR)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # Clients hang up mid-answer in timeout tests; not worth a traceback on stderr.
        pass


class _BadRequest(Exception):
    def __init__(self, status: int) -> None:
        super().__init__(status)
        self.status = status


class _Handler(BaseHTTPRequestHandler):
    """HTTP/1.1 with keep-alive; every answer carries Content-Length."""

    protocol_version = "HTTP/1.1"
    server_version = "StandInOrg"
    timeout = 60  # an idle keep-alive connection's thread ends after this
    # TCP_NODELAY: a trickled answer goes out a byte per write, and with Nagle's algorithm
    # every byte after the first would wait ~40 ms for the client's delayed ACK.
    disable_nagle_algorithm = True

    def version_string(self) -> str:
        return self.server_version

    def log_message(self, format: str, *args: Any) -> None:
        # Quiet on purpose: request lines and errors could carry tokens.
        pass

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            return self._read_chunked()
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            raise _BadRequest(400) from None
        if length < 0:
            raise _BadRequest(400)
        if length > MAX_BODY:
            raise _BadRequest(413)
        return self.rfile.read(length) if length else b""

    def _read_chunked(self) -> bytes:
        chunks: list[bytes] = []
        total = 0
        while True:
            line = self.rfile.readline(_LINE_LIMIT)
            try:
                size = int(line.split(b";", 1)[0].strip(), 16)
            except ValueError:
                raise _BadRequest(400) from None
            if size == 0:
                while self.rfile.readline(_LINE_LIMIT) not in (b"\r\n", b"\n", b""):
                    pass
                return b"".join(chunks)
            total += size
            if total > MAX_BODY:
                raise _BadRequest(413)
            chunks.append(self.rfile.read(size))
            self.rfile.readline(_LINE_LIMIT)

    def handle(self) -> None:
        """Serve the connection; a TLS one shakes hands first, here on its own thread.

        A failed handshake (a client that does not trust the certificate, plain http on the
        https port, a client that never speaks and times out or is cut by stop()) ends the
        connection quietly.
        """
        if isinstance(self.connection, ssl.SSLSocket):
            try:
                self.connection.do_handshake()
            except (OSError, ValueError):  # ssl.SSLError is an OSError
                self.close_connection = True
                return
        super().handle()

    def _head(self, answer: Answer) -> list[tuple[str, str]]:
        """The headers of an answer, in the order ``send_response`` and ``_send`` write them.

        A 204 has no body, so no Content-Type or Content-Length either (RFC 9110 forbids a
        Content-Length there), as Salesforce's 204s to PATCH and DELETE.
        """
        head = [("Server", self.version_string())]
        if not any(name.lower() == "date" for name in answer.headers):
            head.append(("Date", self.date_time_string()))
        if answer.status != 204:
            head.append(("Content-Type", answer.content_type))
            head.append(("Content-Length", str(len(answer.body))))
        head.extend(answer.headers.items())
        return head

    def _send(self, answer: Answer) -> None:
        if answer.drop:
            self.close_connection = True
            with contextlib.suppress(OSError):
                self.connection.shutdown(socket.SHUT_RDWR)
            return
        if answer.trickle > 0:
            self._trickle(answer)
            return
        head = self._head(answer)
        if any(name.lower() == "connection" and value.lower() == "close" for name, value in head):
            self.close_connection = True  # what send_header would have noted
        # One write for the status line, the headers and the body: one segment for the
        # client to read, as a real server sends a small answer.
        self.wfile.write(self._bytes(answer, head))

    def _bytes(self, answer: Answer, head: list[tuple[str, str]]) -> bytes:
        """The whole answer as written on the wire: status line, ``head``, body."""
        reason = self.responses.get(answer.status, ("",))[0]
        lines = [f"{self.protocol_version} {answer.status} {reason}".rstrip()]
        lines.extend(f"{name}: {value}" for name, value in head)
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1", "strict") + answer.body

    def _trickle(self, answer: Answer) -> None:
        """Write the whole answer one byte at a time, ``answer.trickle`` seconds apart.

        The bytes are what ``_send`` would write, plus ``Connection: close`` since the
        connection is closed afterwards. Ends early and quietly when the client hangs up or
        the server is stopping.
        """
        self.close_connection = True
        head = self._head(answer)
        if not any(name.lower() == "connection" for name, _ in head):
            head.append(("Connection", "close"))
        data = self._bytes(answer, head)
        stopping = cast(LoopbackServer, self.server).stopping
        for index in range(len(data)):
            if index and stopping.wait(answer.trickle):
                return
            try:
                self.wfile.write(data[index : index + 1])
                self.wfile.flush()
            except OSError:  # the client hung up (BrokenPipeError, ConnectionResetError...)
                return

    def _serve(self) -> None:
        app = cast(LoopbackServer, self.server).app
        try:
            body = self._read_body()
        except _BadRequest as bad:
            self.close_connection = True
            self._send(Answer(bad.status, b"", "text/plain;charset=UTF-8"))
            return
        parts = urlsplit(self.path)
        headers = {name.lower(): value for name, value in self.headers.items()}
        request = Request(self.command, parts.path, parts.query, headers, body)
        try:
            answer = app.handle(request)
        except Exception as error:  # noqa: BLE001 - reported to the app, the thread lives on
            app.record_internal_error(error)
            answer = Answer(500, b"stand-in org internal error", "text/plain;charset=UTF-8")
            self.close_connection = True
        try:
            self._send(answer)
        finally:
            if answer.on_done is not None:
                answer.on_done()

    do_GET = _serve
    do_POST = _serve
    do_PUT = _serve
    do_PATCH = _serve
    do_DELETE = _serve
