"""What an HttpSession hands a server's response to when its client does not take HTTP/1.1
bytes: an HTTP/2 stream (net.h2_stream) takes the response the upstream has parsed already,
as events, instead of the HTTP/1.1 bytes it would have to parse again.

The calls come in this order, for one response: `relay_head` once, `relay_body` zero or more
times (the body un-chunked), `relay_trailers` at most once (a chunked response's trailer
fields), `relay_end` once the response is whole. A response the session makes itself (an
error page, a redirect, a 403, a 100 Continue) is still written as HTTP/1.1 bytes
(asyncio.Transport.write) and the sink reads them; so is nothing else.
"""

from __future__ import annotations

from mypy_extensions import trait


@trait
class ResponseSink:
    """A mypyc trait (net.h2_stream.H2Stream implements it): compiled calls through it stay
    native, and the session never imports the stream."""

    def relay_head(self, status: int, lines: bytes) -> None:
        """The final response head: its status and header lines, each CRLF-prefixed or
        CRLF-ended (hop-by-hop ones already dropped but for Connection, which the session
        may add), after the response rules and the persistence cookie."""
        raise NotImplementedError

    def relay_body(self, data: bytes) -> None:
        """Body bytes, not chunk-framed."""
        raise NotImplementedError

    def relay_trailers(self, lines: bytes) -> None:
        """A chunked response's trailer field lines ("Name: value" CRLF each), as forwarded
        to an HTTP/1.1 client (proto.http1.last_chunk)."""
        raise NotImplementedError

    def relay_end(self) -> None:
        """The response is whole."""
        raise NotImplementedError
