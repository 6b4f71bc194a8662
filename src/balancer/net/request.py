"""A request as the HTTP session carries it, and the request heads a frontend remembers.

`Request` is one request and, as it goes, what its log line will say; the session
(net.http_session) fills it from the parser's callbacks, or a `KnownRequest` fills it at
once when a read repeats a head the frontend has seen. A request asks the connection it came
on a few things (its client address, TLS, the local address) through `RequestOwner`, a
mypyc trait the session implements, so this module never imports the session.
"""

from __future__ import annotations

from typing import Final

from mypy_extensions import trait

from balancer.net.context import BackendContext
from balancer.proto.http1 import NO_TOKENS, block_fields
from balancer.route.persistence import CookieValue
from balancer.route.rules import NumericIP
from balancer.runtime.record import LogRecord
from balancer.runtime.state import ServerRuntime

# A request's replay list while nothing was kept; never appended to (Request.replay).
NOTHING_KEPT: Final[list[bytes]] = []


@trait
class RequestOwner:
    """What a Request asks of the client connection it came on (net.http_session.HttpSession)."""

    def source_ip(self) -> NumericIP | None:
        raise NotImplementedError

    def local_port(self) -> int:
        raise NotImplementedError

    def over_tls(self) -> bool:
        raise NotImplementedError

    def local_text(self) -> str:
        """The local address the client reached, as text (hash key `5tuple`)."""
        raise NotImplementedError


class Request(LogRecord):
    """One request and, as it goes, what its log line will say."""

    __slots__ = (
        "_headers",
        "attempts",
        "backend",
        "body_bytes",
        "body_done",
        "buffering",
        "chunked",
        "conn_tokens",
        "connection_values",
        "content_length",
        "fields_block",
        "head_done",
        "head_line",
        "header_block",
        "holds_slot",
        "hop_headers",
        "host",
        "host_count",
        "keep_alive",
        "method",
        "path",
        "pending",
        "persisted",
        "query",
        "queued_at",
        "refused",
        "replay",
        "response_started",
        "server",
        "session",
        "stale_retries",
        "t_start",
        "te",
        "upgrade",
        "url",
        "version",
        "xff_values",
    )

    def __init__(
        self,
        session: RequestOwner,
        t_start: float,
        frontend_name: str,
        client_ip: str,
        client_port: int,
        wall: float,
        client_text: str,
    ) -> None:
        """`t_start`: loop time of its first byte; `wall`: the same on the wall clock."""
        super().__init__(frontend_name, client_ip, client_port, wall, client_text)
        self.session = session
        self.t_start = t_start
        self.method = b""
        self.url = b""
        self.head_line = b""  # "METHOD target HTTP/1.1" CRLF: the request line sent to servers
        self.path = b""
        self.query = b""
        self.version = "1.1"
        # The header fields but Connection's (`headers`); None while they are only in
        # `fields_block`, the head's lines as received (proto/_heads.c), until asked for.
        self._headers: list[tuple[bytes, bytes]] | None = None
        self.fields_block = b""
        # `headers` as header lines (as received, or joined once for a known head:
        # KnownRequest), while nothing has changed them; b"" otherwise.
        self.header_block = b""
        # Created on the first header that needs them (most requests have none).
        self.hop_headers: list[tuple[bytes, bytes]] | None = None  # seen by rules, never forwarded as is
        self.host = b""
        self.host_count = 0
        self.connection_values: list[bytes] | None = None
        self.conn_tokens = NO_TOKENS
        self.xff_values: list[bytes] | None = None
        self.te = b""
        self.content_length = 0
        self.upgrade = b""
        self.chunked = False
        self.keep_alive = True
        self.head_done = False
        self.body_done = False
        self.buffering = False  # its body is read whole before a server is chosen (buffer_request)
        self.body_bytes = 0
        # Framed body bytes not yet sent to a server; created when there are some.
        self.pending: list[bytes] | None = None
        # Framed body bytes sent, for a retry; None once past REPLAY_LIMIT. Starts as the
        # shared NOTHING_KEPT (most requests have no body), replaced on the first append.
        self.replay: list[bytes] | None = NOTHING_KEPT
        self.backend: BackendContext | None = None
        self.server: ServerRuntime | None = None
        self.attempts = 0
        self.stale_retries = 0
        self.response_started = False
        self.holds_slot = False  # counted in server.active (server maxconn)
        self.queued_at = -1.0  # loop time it started waiting for a server slot; -1: not waiting
        # The error status it gets in its turn, once the requests before it are answered
        # (HttpSession._reject); 0: not refused.
        self.refused = 0
        self.persisted: CookieValue | None = None  # the valid persistence cookie it carried

    @property
    def headers(self) -> list[tuple[bytes, bytes]]:
        """The header fields (name, value) but the Connection ones, in order: the list is
        made from `fields_block` when first asked for (rules on headers, a header hash,
        cookie persistence); a request forwarded as received never makes it. Whoever changes
        the list empties `header_block`, which then no longer says what the list holds."""
        headers = self._headers
        if headers is None:
            headers = self._headers = block_fields(self.fields_block) if self.fields_block else []
        return headers

    @headers.setter
    def headers(self, headers: list[tuple[bytes, bytes]]) -> None:
        self._headers = headers

    def source_ip(self) -> NumericIP | None:
        return self.session.source_ip()

    def local_port(self) -> int:
        return self.session.local_port()

    def over_tls(self) -> bool:
        return self.session.over_tls()

    def forget_forwarded_for(self) -> None:
        self.xff_values = None  # shared with a KnownRequest: replaced, never changed

    def hold(self, framed: bytes) -> None:
        """Keep body bytes for the server until the request is sent to one."""
        if self.pending is None:
            self.pending = [framed]
        else:
            self.pending.append(framed)

    @property
    def local_address(self) -> str:
        return self.session.local_text()


class KnownRequest:
    """What the parser and on_headers_complete made of a read that held exactly one request
    head: HTTP/1.1, keep-alive, no body, no upgrade. The parser accepted these bytes under
    this frontend's limits, so the same bytes read again are the same request, and
    HttpSession._take_known makes it from this without the parser: an API client, a health
    check or a load test sends one head again and again, and parsing it is a fifth of the
    proxy's own work per request. Remembered per frontend (FrontendContext.known_requests,
    by the read's bytes): limits and forwardfor differ between frontends."""

    __slots__ = (
        "bytes_in",
        "conn_tokens",
        "head_line",
        "header_block",
        "headers",
        "hop_headers",
        "host",
        "host_count",
        "method",
        "path",
        "query",
        "request_line",
        "url",
        "xff",
        "xff_values",
    )

    def __init__(self, request: Request) -> None:
        """Taken from a request whose head is done, before anything routes it (rules and
        persistence rewrite its headers)."""
        self.method = request.method
        self.url = request.url
        self.head_line = request.head_line
        self.path = request.path
        self.query = request.query
        self.headers = tuple(request.headers)  # a request gets a list of its own
        self.header_block = request.header_block or b"".join([b"%b: %b\r\n" % header for header in request.headers])
        # Never changed once the head is parsed (rules only read them): shared.
        self.hop_headers = request.hop_headers
        self.xff_values = request.xff_values
        self.conn_tokens = request.conn_tokens
        self.host = request.host
        self.host_count = request.host_count
        self.xff = request.xff
        self.request_line = request.request_line
        self.bytes_in = request.bytes_in

    def fill(self, request: Request) -> Request:
        """`request`, new, made this request, read whole."""
        request.method = self.method
        request.url = self.url
        request.head_line = self.head_line
        request.path = self.path
        request.query = self.query
        request.headers = list(self.headers)
        request.header_block = self.header_block
        request.hop_headers = self.hop_headers
        request.xff_values = self.xff_values
        request.conn_tokens = self.conn_tokens
        request.host = self.host
        request.host_count = self.host_count
        request.xff = self.xff
        request.request_line = self.request_line
        request.bytes_in = self.bytes_in
        request.t_request = 0.0
        request.head_done = True
        request.body_done = True
        return request
