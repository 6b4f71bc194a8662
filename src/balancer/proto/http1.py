"""HTTP/1.1 message rules for a proxy (RFC 9110, RFC 9112), sans I/O.

Theory of operation: httptools (llhttp) does the byte-level framing and already refuses the
classic desync inputs (Content-Length with Transfer-Encoding, duplicate or malformed
Content-Length, Transfer-Encoding other than a final chunked, obs-fold, whitespace before
the colon, bad chunk sizes). This module adds what a proxy must decide on top of the parsed
header list: which headers are hop-by-hop and must never cross the proxy, what a request
that is still ambiguous looks like, and how heads and bodies are written back out.
Everything here takes and returns bytes; nothing does I/O.
"""

from __future__ import annotations

import re
from http import HTTPStatus
from typing import Final

# Headers that describe one connection, not the message (RFC 9110 7.6.1). Never forwarded;
# the proxy writes its own Connection header and re-frames bodies it re-chunks.
HOP_BY_HOP: Final = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
        b"proxy-authenticate",
        b"proxy-authorization",
    }
)

# A hop-by-hop header line inside a head whose lines each start with CRLF: (name, value).
# The lookahead on the first letter spares the alternation at most line starts.
HOP_BY_HOP_LINE: Final = re.compile(
    rb"\r\n(?=[cCkKpPtTuU])(connection|keep-alive|proxy-connection|te|trailer|transfer-encoding|upgrade"
    rb"|proxy-authenticate|proxy-authorization)[ \t]*:[ \t]*([^\r\n]*)",
    re.IGNORECASE,
)
CONTENT_LENGTH_LINE: Final = re.compile(rb"\r\ncontent-length[ \t]*:", re.IGNORECASE)

# Methods a client may safely see retried on another connection (RFC 9110 9.2.2).
IDEMPOTENT_METHODS: Final = frozenset({b"GET", b"HEAD", b"OPTIONS", b"TRACE", b"PUT", b"DELETE"})

CRLF: Final = b"\r\n"
LAST_CHUNK: Final = b"0\r\n\r\n"


class BadRequest(Exception):
    """A request that must be answered with `status` and the connection closed."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


_SIMPLE_CONNECTION: Final = {b"close": {b"close"}, b"keep-alive": {b"keep-alive"}}


def connection_tokens(values: list[bytes]) -> set[bytes]:
    """Lower-cased tokens of every Connection header value."""
    if len(values) == 1:
        simple = _SIMPLE_CONNECTION.get(values[0].lower())
        if simple is not None:
            return set(simple)
    tokens: set[bytes] = set()
    for value in values:
        for token in value.split(b","):
            token = token.strip().lower()
            if token:
                tokens.add(token)
    return tokens


def drop_connection_named(lines: bytes, connection_value: bytes) -> bytes:
    """Remove from CRLF-prefixed header `lines` the headers a Connection value names."""
    extra = connection_tokens([connection_value]) - {b"close", b"keep-alive", b"upgrade"}
    if not extra:
        return lines
    names = b"|".join(re.escape(name) for name in extra)
    return re.sub(rb"\r\n(?:" + names + rb")[ \t]*:[^\r\n]*", b"", lines, flags=re.IGNORECASE)


def check_request_head(version: str, hosts: int, transfer_encoding: bytes) -> None:
    """Refuse what httptools lets through (or refuses only once the body comes) but a
    proxy must not forward. `hosts` is how many Host headers the request carried,
    `transfer_encoding` its Transfer-Encoding value (b"" when absent). Raises BadRequest.
    """
    if version not in ("1.1", "1.0"):
        raise BadRequest(505 if version[:1] > "1" else 400, f"unsupported HTTP version {version}")
    if hosts > 1:
        raise BadRequest(400, "more than one Host header")
    if hosts == 0 and version == "1.1":
        raise BadRequest(400, "missing Host header")
    if transfer_encoding and not transfer_encoding.rstrip().lower().endswith(b"chunked"):
        raise BadRequest(400, "Transfer-Encoding without a final chunked")
    if transfer_encoding and version == "1.0":
        # RFC 9112 6.1: Transfer-Encoding in an HTTP/1.0 message means its framing is faulty.
        raise BadRequest(400, "Transfer-Encoding in an HTTP/1.0 request")


def chunk(data: bytes) -> bytes:
    """Frame `data` as one chunk of a chunked body (empty data gives nothing, not the last chunk)."""
    if not data:
        return b""
    return b"%x\r\n%b\r\n" % (len(data), data)


def status_line(status: int, reason: bytes = b"") -> bytes:
    if not reason:
        reason = _REASONS.get(status, b"Unknown")
    return b"HTTP/1.1 %d %b\r\n" % (status, reason)


_REASONS: Final = {int(s): s.phrase.encode() for s in HTTPStatus}
_ERROR_TEXT: Final = {
    400: "Your browser sent an invalid request.",
    403: "Request forbidden by administrative rules.",
    404: "Not found.",
    405: "Method not allowed.",
    408: "Your browser didn't send a complete request in time.",
    413: "The request body is larger than this service accepts.",
    414: "The request URI is too long.",
    429: "You have sent too many requests in a given amount of time.",
    431: "The request headers are too large.",
    500: "An internal error occurred.",
    501: "The request method is not supported.",
    502: "The server returned an invalid or incomplete response.",
    503: "No server is available to handle this request.",
    504: "The server didn't respond in time.",
    505: "HTTP version not supported.",
}


def _build_error(status: int, close: bool) -> bytes:
    reason = _REASONS.get(status, b"Error").decode()
    text = _ERROR_TEXT.get(status, reason)
    body = f"<html><body><h1>{status} {reason}</h1>\n{text}\n</body></html>\n".encode()
    head = (
        status_line(status)
        + b"Content-Type: text/html\r\nCache-Control: no-cache\r\n"
        + b"Content-Length: %d\r\n" % len(body)
        + (b"Connection: close\r\n" if close else b"")
        + CRLF
    )
    return head + body


_ERRORS: Final[dict[tuple[int, bool], bytes]] = {}


def error_response(status: int, close: bool = True) -> bytes:
    """A complete short-HTML error response; `close` adds `Connection: close`."""
    key = (status, close)
    response = _ERRORS.get(key)
    if response is None:
        response = _ERRORS[key] = _build_error(status, close)
    return response


def redirect_response(code: int, location: bytes, close: bool) -> bytes:
    """A bodyless redirect. `location` must already be a valid header value."""
    if b"\r" in location or b"\n" in location:
        raise ValueError("CR or LF in a redirect location")
    return (
        status_line(code)
        + b"Location: "
        + location
        + b"\r\nContent-Length: 0\r\nCache-Control: no-cache\r\n"
        + (b"Connection: close\r\n" if close else b"")
        + CRLF
    )


def bodiless_status(status: int) -> bool:
    """Responses that never carry a body, whatever their headers say (RFC 9110 6.4.1)."""
    return status < 200 or status in (204, 304)
