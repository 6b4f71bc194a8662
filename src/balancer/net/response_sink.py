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

from typing import Protocol


class ResponseSink(Protocol):
    def relay_head(self, status: int, lines: bytes) -> None:
        """The final response head: its status and header lines, each CRLF-prefixed or
        CRLF-ended (hop-by-hop ones already dropped but for Connection, which the session
        may add), after the response rules and the persistence cookie."""

    def relay_body(self, data: bytes) -> None:
        """Body bytes, not chunk-framed."""

    def relay_trailers(self, lines: bytes) -> None:
        """A chunked response's trailer field lines ("Name: value" CRLF each), as forwarded
        to an HTTP/1.1 client (proto.http1.last_chunk)."""

    def relay_end(self) -> None:
        """The response is whole."""
