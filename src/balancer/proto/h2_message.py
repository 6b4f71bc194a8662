"""HTTP/2 messages as HTTP/1.1 messages and back (RFC 9113 8.2-8.3), sans I/O.

A proxy that speaks HTTP/2 to clients and HTTP/1.1 to servers carries each stream as one
HTTP/1.1 exchange: the request's header list (pseudo-header fields first, names in lower
case, framed by proto.h2_connection) becomes an HTTP/1.1 request head, and a response head
becomes a header list for the client. This module holds those translations and the
HTTP/2 rules they need; it does no I/O and imports no asyncio.

What it refuses (MalformedRequest, a stream error): a field holding CR, LF or NUL, a
field name that is not a lower-case token, a method or path that would not read back as
the same request line, a request without :method or (but for CONNECT) :scheme and
:path, a pseudo-header field repeated, unknown, or after a regular field (RFC 9113 8.3).
They are checked here, in one place: a field that slipped through would be read by the
HTTP/1.1 parser as a second header or request line.
"""

from __future__ import annotations

from typing import Final

# The client connection preface (RFC 9113 3.4): what a prior-knowledge (h2c) client sends first.
PREFACE: Final = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

# Connection-specific header fields (RFC 9113 8.2.2): never sent in HTTP/2.
CONNECTION_SPECIFIC: Final = frozenset(
    {b"connection", b"keep-alive", b"proxy-connection", b"transfer-encoding", b"upgrade", b"te"}
)

# Bytes a token (a header name, a method) may hold (RFC 9110 5.6.2), upper case excluded
# for names: HTTP/2 field names are lower case.
_TCHAR: Final = frozenset(b"!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")
_NAME_CHAR: Final = frozenset(b"!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyz")

Header = tuple[bytes, bytes]


class MalformedRequest(Exception):
    """A request HTTP/2 calls malformed (RFC 9113 8.1.1): the stream is reset with PROTOCOL_ERROR."""


def _token(value: bytes, chars: frozenset[int]) -> bool:
    if not value:
        return False
    for byte in value:  # noqa: SIM110 (a loop beats a generator compiled)
        if byte not in chars:
            return False
    return True


def _clean_value(value: bytes) -> bool:
    # An int needle: `bytes in bytes` first tries the needle as an int and raises and
    # clears a TypeError (~2k instructions each); an int goes straight to memchr.
    return 13 not in value and 10 not in value and 0 not in value


class RequestHead:
    """An HTTP/2 request head as the HTTP/1.1 request that carries it to a server."""

    __slots__ = ("chunked", "head", "method")

    def __init__(self, head: bytes, method: bytes, chunked: bool) -> None:
        self.head = head  # request line, header lines, blank line
        self.method = method
        self.chunked = chunked  # the body (DATA frames) goes as chunks: no content-length said its size


def request_head(headers: list[Header], end_stream: bool) -> RequestHead:
    """The HTTP/1.1 request for a request's header list. `end_stream`: the HEADERS frame
    ended the stream (no body). :authority becomes Host (and replaces a Host field, which
    a client must not send different, RFC 9113 8.3.1); cookie fields are joined with "; "
    (8.2.3); a body of unknown length is sent chunked. Raises MalformedRequest."""
    method = path = authority = scheme = b""
    fields: list[bytes] = []
    cookies: list[bytes] = []
    host = b""
    has_length = False
    regular = False  # a regular field was seen: no pseudo-header may follow (8.3)
    seen = 0  # the pseudo-header fields seen, one bit each: none may repeat
    for name, value in headers:
        if not _clean_value(value):
            raise MalformedRequest(f"CR, LF or NUL in the value of {name!r}")
        if name[:1] == b":":
            if regular:
                raise MalformedRequest(f"pseudo-header {name!r} after a regular field")
            if name == b":method":
                bit = 1
                method = value
            elif name == b":path":
                bit = 2
                path = value
            elif name == b":authority":
                bit = 4
                authority = value
            elif name == b":scheme":
                bit = 8
                scheme = value
            elif name == b":protocol":
                bit = 16
            else:
                raise MalformedRequest(f"unknown pseudo-header {name!r}")
            if seen & bit:
                raise MalformedRequest(f"duplicate pseudo-header {name!r}")
            seen |= bit
            continue
        regular = True
        if not _token(name, _NAME_CHAR):
            raise MalformedRequest(f"invalid field name {name!r}")
        if name in CONNECTION_SPECIFIC:
            if name == b"te" and value.strip().lower() == b"trailers":
                # Allowed in HTTP/2 (8.2.2): the client takes trailers. Forwarded, as HAProxy
                # does: a gRPC server answers nothing to a request without it.
                fields += (b"te: trailers\r\n",)
                continue
            raise MalformedRequest(f"connection-specific field {name!r}")
        if name == b"cookie":
            cookies.append(value)
            continue
        if name == b"host":
            host = value
            continue
        if name == b"content-length":
            has_length = True
        fields += (name, b": ", value, b"\r\n")
    if not _token(method, _TCHAR):
        raise MalformedRequest("missing or invalid :method")
    if method == b"CONNECT":
        path = authority
    elif not scheme:
        raise MalformedRequest("missing :scheme")
    if not path or 32 in path or 9 in path:  # space, tab (int needles: see _clean_value)
        raise MalformedRequest("missing or invalid :path")
    authority = authority or host
    if 32 in authority or 9 in authority:
        raise MalformedRequest("invalid :authority")
    chunked = not end_stream and not has_length
    parts = [method, b" ", path, b" HTTP/1.1\r\n"]
    if authority:
        parts += (b"host: ", authority, b"\r\n")
    parts += fields
    if cookies:
        parts += (b"cookie: ", b"; ".join(cookies), b"\r\n")
    if chunked:
        parts.append(b"transfer-encoding: chunked\r\n")
    elif end_stream and not has_length and method in (b"POST", b"PUT", b"PATCH"):
        parts.append(b"content-length: 0\r\n")  # servers want a length on these
    parts.append(b"\r\n")
    return RequestHead(b"".join(parts), method, chunked)


def trailer_section(trailers: list[Header]) -> bytes:
    """The end of a chunked body carrying `trailers` (pseudo-header fields and
    connection-specific fields dropped). Raises MalformedRequest as request_head()."""
    parts = [b"0\r\n"]
    for name, value in trailers:
        if not _clean_value(value) or not _token(name, _NAME_CHAR):
            raise MalformedRequest(f"invalid trailer field {name!r}")
        if name in CONNECTION_SPECIFIC or name in (b"content-length", b"host"):
            continue
        parts += (name, b": ", value, b"\r\n")
    parts.append(b"\r\n")
    return b"".join(parts)


def response_field(name: bytes) -> bytes | None:
    """The HTTP/2 name of an HTTP/1.1 response field `name` (lower case), or None for a
    field HTTP/2 must not carry (connection-specific)."""
    lowered = name.lower()
    if lowered in CONNECTION_SPECIFIC:
        return None
    return lowered


def response_trailer_field(name: bytes) -> bytes | None:
    """The HTTP/2 name of a trailer field `name` of an HTTP/1.1 response, or None for one
    HTTP/2 forbids in a trailer section (RFC 9113 8.1, RFC 9110 6.5.1): connection-specific,
    framing (content-length) and routing (host) fields, and Trailer."""
    lowered = name.lower()
    if lowered in CONNECTION_SPECIFIC or lowered in _NOT_TRAILERS or lowered[:1] == b":":
        return None
    return lowered


# Fields a trailer section must not carry, beside the connection-specific ones.
_NOT_TRAILERS: Final = frozenset({b"content-length", b"host", b"trailer"})


def response_headers(status: int, lines: bytes) -> list[Header]:
    """The header list of an HTTP/1.1 response head for an HTTP/2 client: `:status`, then the
    fields of `lines` (header lines as the upstream keeps them, CRLF-separated; empty lines
    skipped) with lower-case names, connection-specific ones dropped. The reference of
    proto/_h2_fields.c's response_block, which encodes this list, and what a build without C
    sends."""
    headers: list[Header] = [(b":status", b"%d" % status)]
    for line in lines.split(b"\r\n"):
        if not line:
            continue
        name, _, value = line.partition(b":")
        name = name.lower()
        if name not in CONNECTION_SPECIFIC:
            headers.append((name, value.strip(b" \t")))
    return headers


def response_trailers(lines: bytes) -> list[Header]:
    """The trailer fields of `lines` ("Name: value" CRLF each) HTTP/2 lets a trailer section
    carry (response_trailer_field), names in lower case."""
    trailers: list[Header] = []
    for line in lines.split(b"\r\n"):
        name, _, value = line.partition(b":")
        field = response_trailer_field(name) if line else None
        if field is not None:
            trailers.append((field, value.strip(b" \t")))
    return trailers


def http2_request_line(line: str) -> str:
    """The access log's request line for a request that came over HTTP/2: the HTTP/1.1
    line it was carried as, with the protocol it came in."""
    if line.endswith(" HTTP/1.1"):
        return line[:-8] + "HTTP/2.0"
    return line
