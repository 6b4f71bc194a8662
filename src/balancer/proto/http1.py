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

# Connection tokens that name no other header.
PLAIN_CONNECTION: Final = frozenset({b"keep-alive", b"close", b"upgrade"})
# Connection tokens that never make a header hop-by-hop: the plain options, and the framing
# and Host headers, which a Connection header must not remove (HAProxy keeps them). Else
# `Connection: Content-Length` would strip the length of a body still forwarded, and the
# server would read that body as a request no rule saw (smuggling).
NOT_NAMEABLE: Final = PLAIN_CONNECTION | frozenset({b"content-length", b"transfer-encoding", b"host"})

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


NO_TOKENS: Final[frozenset[bytes]] = frozenset()
_SIMPLE_CONNECTION: Final = {b"close": frozenset({b"close"}), b"keep-alive": frozenset({b"keep-alive"})}


def connection_tokens(values: list[bytes]) -> frozenset[bytes]:
    """Lower-cased tokens of every Connection header value."""
    if len(values) == 1:
        simple = _SIMPLE_CONNECTION.get(values[0].lower())
        if simple is not None:
            return simple
    tokens: set[bytes] = set()
    for value in values:
        for token in value.split(b","):
            token = token.strip().lower()
            if token:
                tokens.add(token)
    return frozenset(tokens)


def split_response_head(head: bytes) -> ResponseSplit:
    """Split what a proxy must know from a response `head` as received: the status line
    and the header lines, without the blank line that ends them.

    Returns (the status text after "HTTP/1.x ", the header lines without hop-by-hop headers
    nor those a Connection header names, each led by CRLF, whether the last
    Transfer-Encoding ends in chunked, the Upgrade value or b"", whether a Content-Length is
    present, whether the connection may carry another exchange as far as the version and
    Connection say: HTTP/1.1 without "close", HTTP/1.0 with "keep-alive"). httptools has
    validated the head: a status line, header names that are tokens with no space before
    the colon. Header lines pass byte for byte.

    Written for mypyc: slices, indexing and comparisons compile to direct C, while each
    method call on bytes costs a Python method lookup, so names are matched in a loop.
    """
    chunked = False
    upgrade = b""
    has_length = False
    close = False
    keep_alive = False  # an explicit "keep-alive" token, for HTTP/1.0
    kept: list[bytes] | None = None  # once a second header is dropped: the lines kept so far
    cut_at = -1  # the first dropped header: its offset in `lines`, and its length with CRLF
    cut_size = 0
    named: list[bytes] = []
    parts = head.split(b"\r\n")
    status_line = parts[0]
    lines = head[len(status_line) :]
    offset = 0  # in `lines`, of the CRLF before the line
    for line in parts[1:]:
        size = len(line) + 2
        kind = header_kind(line)
        if kind < FIELD_CONNECTION:
            if kind == FIELD_CONTENT_LENGTH:
                has_length = True
            if kept is not None:
                kept.append(line)
            offset += size
            continue
        if cut_at < 0:
            cut_at, cut_size = offset, size
        elif kept is None:
            kept = [lines[:cut_at], lines[cut_at + cut_size : offset]]  # whole lines, CRLF-led
        if kind == FIELD_TRANSFER_ENCODING:
            chunked = line[18:].strip().lower().endswith(b"chunked")
        elif kind == FIELD_UPGRADE:
            upgrade = line[8:].strip()
        elif kind in (FIELD_CONNECTION, FIELD_PROXY_CONNECTION):
            value = line[11:] if kind == FIELD_CONNECTION else line[17:]
            if value == b" keep-alive":
                keep_alive = True
            elif value == b" close":
                close = True
            else:
                tokens = connection_tokens([value])
                close = close or b"close" in tokens
                keep_alive = keep_alive or b"keep-alive" in tokens
                if kind == FIELD_CONNECTION and tokens - NOT_NAMEABLE:
                    named.append(value.strip())
        offset += size
    reusable = not close and (keep_alive or status_line[5:8] == b"1.1")
    if cut_at < 0:
        return status_line[9:], lines, chunked, upgrade, has_length, reusable
    if kept is None:
        out = lines[:cut_at] + lines[cut_at + cut_size :]
    else:
        out = kept[0] + kept[1] + b"".join([b"\r\n" + line for line in kept[2:]])
    for value in named:
        out = drop_connection_named(out, value)
    return status_line[9:], out, chunked, upgrade, has_length, reusable


ResponseSplit = tuple[bytes, bytes, bool, bytes, bool, bool]
# A response head the parser accepted: its split, and the Content-Length value that frames
# its body (-1: none).
AcceptedHead = tuple[ResponseSplit, int]

# Heads accepted before, by their bytes. A server sends the same head again and again (its
# Date changes once a second), and splitting one is most of the proxy's own work on a
# response; a dict lookup hashes the head in C instead. Bounded in entries and in head size;
# cleared when full, so a server whose every head differs (cookies, request ids) costs one
# insert more.
_ACCEPTED: Final[dict[bytes, AcceptedHead]] = {}
_ACCEPTED_MAX: Final = 256
_ACCEPTED_HEAD_MAX: Final = 1024


def accept_response_head(head: bytes) -> AcceptedHead:
    """Split `head` (status line and header lines, no final blank line), which the HTTP
    parser has just accepted, and remember it for accepted_response_head()."""
    accepted = _ACCEPTED.get(head)
    if accepted is None:
        split = split_response_head(head)
        accepted = (split, content_length_value(head) if split[4] else -1)
        if len(head) <= _ACCEPTED_HEAD_MAX:
            if len(_ACCEPTED) >= _ACCEPTED_MAX:
                _ACCEPTED.clear()
            _ACCEPTED[head] = accepted
    return accepted


def accepted_response_head(head: bytes) -> AcceptedHead | None:
    """What accept_response_head() made of these exact bytes, if it saw them: the parser
    accepted them then, so a proxy may take them again without the parser."""
    return _ACCEPTED.get(head)


def content_length_value(head: bytes) -> int:
    """The Content-Length of a head the parser accepted (so one valid value), -1 without."""
    for line in head.split(b"\r\n")[1:]:
        if header_kind(line) == FIELD_CONTENT_LENGTH:
            return int(line[15:].strip(b" \t"))
    return -1


# What header_kind() tells of a header. The hop-by-hop kinds come last: >= CONNECTION.
FIELD_OTHER: Final = 0
FIELD_CONTENT_LENGTH: Final = 1
FIELD_HOST: Final = 2
FIELD_FORWARDED_FOR: Final = 3
FIELD_FORWARDED_PROTO: Final = 4
FIELD_CONNECTION: Final = 5
FIELD_TRANSFER_ENCODING: Final = 6
FIELD_UPGRADE: Final = 7
FIELD_PROXY_CONNECTION: Final = 8  # non-standard; llhttp reads its tokens as Connection's
FIELD_HOP: Final = 9  # another hop-by-hop header (HOP_BY_HOP)


def header_kind(field: bytes) -> int:
    """Which header a proxy must treat apart `field` is: a header name, or a whole
    header line "Name: value". Names match in any case."""
    if not field:
        return FIELD_OTHER
    first = field[0] | 0x20
    if first == 0x63:  # c
        if _named(field, b"content-length"):
            return FIELD_CONTENT_LENGTH
        if _named(field, b"connection"):
            return FIELD_CONNECTION
    elif first == 0x68:  # h
        if _named(field, b"host"):
            return FIELD_HOST
    elif first == 0x78:  # x
        if _named(field, b"x-forwarded-for"):
            return FIELD_FORWARDED_FOR
        if _named(field, b"x-forwarded-proto"):
            return FIELD_FORWARDED_PROTO
    elif first == 0x74:  # t
        if _named(field, b"transfer-encoding"):
            return FIELD_TRANSFER_ENCODING
        if _named_any(field, _T_HOP):
            return FIELD_HOP
    elif first == 0x75:  # u
        if _named(field, b"upgrade"):
            return FIELD_UPGRADE
    elif first == 0x6B:  # k
        if _named(field, b"keep-alive"):
            return FIELD_HOP
    elif first == 0x70:  # p
        if _named(field, b"proxy-connection"):
            return FIELD_PROXY_CONNECTION
        if _named_any(field, _PROXY_HOP):
            return FIELD_HOP
    return FIELD_OTHER


_PROXY_HOP: Final = (b"proxy-authenticate", b"proxy-authorization")
_T_HOP: Final = (b"te", b"trailer")


def _named_any(field: bytes, names: tuple[bytes, ...]) -> bool:
    return any(_named(field, name) for name in names)


def _named(field: bytes, name: bytes) -> bool:
    """Whether `field`, a header name or a "Name: value" line, has the lower-case token
    `name` in any case. OR-ing 0x20 lower-cases a letter and leaves "-" as it is; no other
    byte of a token turns into a lower-case letter or "-"."""
    size = len(name)
    if len(field) != size and (len(field) < size or field[size] != 0x3A):  # ":"
        return False
    return all(field[i] | 0x20 == name[i] for i in range(size))


def drop_connection_named(lines: bytes, connection_value: bytes) -> bytes:
    """Remove from CRLF-prefixed header `lines` the headers a Connection value names
    (never the framing headers nor Host: NOT_NAMEABLE)."""
    extra = connection_tokens([connection_value]) - NOT_NAMEABLE
    if not extra:
        return lines
    names = b"|".join(re.escape(name) for name in extra)
    return re.sub(rb"\r\n(?:" + names + rb")[ \t]*:[^\r\n]*", b"", lines, flags=re.IGNORECASE)


def block_fields(block: bytes) -> list[tuple[bytes, bytes]]:
    """The (name, value) fields of header lines each exactly "Name: value" CRLF, in order:
    a head's block as proto/_heads.c returns it (which checked that form). Raises ValueError
    on a line of another form."""
    fields: list[tuple[bytes, bytes]] = []
    start = 0
    end = len(block)
    while start < end:
        line_end = block.find(b"\r\n", start)
        colon = block.find(b": ", start, line_end)
        if line_end < 0 or colon < 0:
            raise ValueError("not a header line of the form 'Name: value' CRLF")
        fields.append((block[start:colon], block[colon + 2 : line_end]))
        start = line_end + 2
    return fields


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


# The most of a chunked response's end (last chunk and trailer section) the proxy keeps to
# find its trailer fields in (last_chunk): a larger trailer section is dropped.
TRAILER_TAIL: Final = 8192


def last_chunk(tail: bytes) -> bytes | None:
    """The end of a chunked body to forward, from `tail`, the last bytes of a chunked message
    llhttp accepted whole (they end with its trailer section): "0" CRLF, the trailer field
    lines as received but for the framing, Host, X-Forwarded-* and hop-by-hop ones, CRLF. None when
    `tail` does not hold the last-chunk line and the CRLF before it (a trailer section
    larger than the tail kept). Reading backwards is exact: a trailer line starts with a
    token and holds a colon after it, a last-chunk line is zeros then nothing, a chunk
    extension or whitespace."""
    if not tail.endswith(b"\r\n\r\n"):
        return None
    pos = len(tail) - 4  # where the CRLF that ends the last line before the blank one starts
    lines: list[bytes] = []
    while True:
        start = tail.rfind(b"\r\n", 0, pos)
        if start < 0:
            return None
        line = tail[start + 2 : pos]
        rest = line.lstrip(b"0")
        if len(rest) < len(line) and (not rest or rest[0] in b"; \t"):
            break
        lines.append(line)
        pos = start
    if not lines:
        return LAST_CHUNK
    kept = [b"0\r\n"]
    for line in reversed(lines):
        if header_kind(line) == FIELD_OTHER:
            kept += (line, b"\r\n")
    kept.append(b"\r\n")
    return b"".join(kept)


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


def too_many_requests(retry_after: int, close: bool) -> bytes:
    """429 for a client over its rate, saying in how many seconds (at least 1) a request
    would pass (RFC 6585, RFC 9110 Retry-After)."""
    response = error_response(429, close)
    line_end = response.index(b"\r\n") + 2
    return response[:line_end] + b"Retry-After: %d\r\n" % max(1, retry_after) + response[line_end:]


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


def auth_response(realm: bytes, close: bool) -> bytes:
    """401 with a Basic challenge for `realm` (quotes and control characters were refused
    at load), as HAProxy's `http-request auth` answers."""
    body = (
        b"<html><body><h1>401 Unauthorized</h1>\n"
        b"You need a valid user and password to access this content.\n</body></html>\n"
    )
    return (
        status_line(401)
        + b'WWW-Authenticate: Basic realm="'
        + realm
        + b'"\r\nContent-Type: text/html\r\nCache-Control: no-cache\r\n'
        + b"Content-Length: %d\r\n" % len(body)
        + (b"Connection: close\r\n" if close else b"")
        + CRLF
        + body
    )


def monitor_response(status: int, close: bool) -> bytes:
    """The answer to a frontend's monitor_uri: 200 "Service ready" or 503, as HAProxy's."""
    text = b"Service ready." if status == 200 else b"No server is available to handle this request."
    reason = _REASONS.get(status, b"")
    body = b"<html><body><h1>%d %s</h1>\n%s\n</body></html>\n" % (status, reason, text)
    return (
        status_line(status)
        + b"Content-Type: text/html\r\nCache-Control: no-cache\r\n"
        + b"Content-Length: %d\r\n" % len(body)
        + (b"Connection: close\r\n" if close else b"")
        + CRLF
        + body
    )


def status_code(status_text: bytes) -> int:
    """The code of a status text the parser accepted ("200 OK": it starts with three digits)."""
    return (status_text[0] - 48) * 100 + (status_text[1] - 48) * 10 + (status_text[2] - 48)


def bodiless_status(status: int) -> bool:
    """Responses that never carry a body, whatever their headers say (RFC 9110 6.4.1)."""
    return status < 200 or status in (204, 304)
