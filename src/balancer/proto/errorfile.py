"""Error pages from files: a whole raw HTTP response, HAProxy `errorfile` format.

A file holds a status line, header lines and an optional body. Line ends may be CRLF or
bare LF (hand-written files often use LF; HAProxy accepts both). The loaded page is
normalised once: CRLF line ends, no Connection/Content-Length/Transfer-Encoding header of
its own, a Content-Length the proxy computes, and `Connection: close` when the proxy closes.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

MAX_ERROR_FILE = 65536
_STATUS_LINE = re.compile(rb"HTTP/1\.[01] ([1-5]\d\d)(?: [^\r\n]*)?")
_FIELD = re.compile(rb"([!#$%&'*+\-.^_`|~0-9A-Za-z]+):[ \t]*([^\r\n\0]*?)[ \t]*")
_PROXY_OWNED = (b"connection", b"content-length", b"transfer-encoding", b"keep-alive")


@dataclass(frozen=True, slots=True)
class ErrorPage:
    status: int
    keep_alive: bytes  # the response, kept open
    close: bytes  # the response with Connection: close


def parse_error_file(data: bytes) -> ErrorPage:
    """The page in `data`; ValueError says why a file is not an HTTP response."""
    if len(data) > MAX_ERROR_FILE:
        raise ValueError(f"larger than {MAX_ERROR_FILE} bytes")
    end = data.find(b"\r\n\r\n")
    lf_end = data.find(b"\n\n")
    if end < 0 and lf_end < 0:
        raise ValueError("no end of the response head (an empty line after the headers)")
    if end >= 0 and (lf_end < 0 or end < lf_end):
        head, body = data[:end], data[end + 4 :]
    else:
        head, body = data[:lf_end], data[lf_end + 2 :]
    lines = head.replace(b"\r\n", b"\n").split(b"\n")
    match = _STATUS_LINE.fullmatch(lines[0])
    if match is None:
        raise ValueError(f"first line {lines[0][:60]!r} is not an HTTP/1.x status line")
    status = int(match.group(1))
    kept: list[bytes] = []
    for number, line in enumerate(lines[1:], start=2):
        field = _FIELD.fullmatch(line)
        if field is None:
            raise ValueError(f"line {number} of the file is not a header line: {line[:60]!r}")
        if field.group(1).lower() in _PROXY_OWNED:
            continue
        kept.append(field.group(1) + b": " + field.group(2) + b"\r\n")
    if status < 200 or status in (204, 304):
        body = b""
    base = lines[0] + b"\r\n" + b"".join(kept) + b"Content-Length: %d\r\n" % len(body)
    return ErrorPage(status, base + b"\r\n" + body, base + b"Connection: close\r\n\r\n" + body)
