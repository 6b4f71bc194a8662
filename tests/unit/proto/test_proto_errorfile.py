"""Error files (HAProxy `errorfile` format) read into pages the proxy can send."""

from __future__ import annotations

import pytest

from balancer.proto.errorfile import parse_error_file


def test_lf_file_becomes_crlf_with_the_proxys_own_length_and_connection() -> None:
    page = parse_error_file(
        b"HTTP/1.0 503 Service Unavailable\nCache-Control: no-cache\nContent-Length: 1\n\n<h1>down</h1>\n"
    )
    body = b"<h1>down</h1>\n"
    assert page.status == 503
    assert page.keep_alive == (
        b"HTTP/1.0 503 Service Unavailable\r\nCache-Control: no-cache\r\nContent-Length: 14\r\n\r\n" + body
    )
    assert page.close.endswith(b"Content-Length: 14\r\nConnection: close\r\n\r\n" + body)


def test_crlf_file_without_body() -> None:
    page = parse_error_file(b"HTTP/1.1 403 Forbidden\r\nConnection: close\r\n\r\n")
    assert page.keep_alive == b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n"


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"<html>down</html>", "no end of the response head"),
        (b"<html>down</html>\n\n", "is not an HTTP/1.x status line"),
        (b"HTTP/1.0 999 No\n\n", "is not an HTTP/1.x status line"),
        (b"HTTP/1.0 503 x\nnot a header\n\n", "line 2 of the file is not a header line"),
        (b"HTTP/1.0 503 x\r\n\r\n" + b"x" * 70000, "larger than 65536 bytes"),
    ],
)
def test_what_is_not_a_response(data: bytes, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        parse_error_file(data)
