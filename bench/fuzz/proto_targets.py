"""Atheris target over the parsers of proto/ (no asyncio, no sockets).

The input's first byte picks the parser (modulo 5), the rest is its input:
  0 parse_proxy_header: returns (info, consumed) or None, or raises ProxyProtocolError;
    what it consumed never exceeds the input.
  1 accept_response_head (split_response_head and content_length_value) on heads llhttp
    accepts, cut as UpstreamConnection._take_head cuts them: must not raise.
  2 parse_error_file: an ErrorPage or ValueError.
  3 basic_credentials: (user, password) or None, never an exception.
  4 parse_agent_reply: an AgentReply or AgentReplyError.
Any other exception, or a broken invariant, is a crash.

Run (one core; from the worktree):
    PYTHONPATH=$PWD/src /work/main/.venv/bin/python bench/fuzz/proto_targets.py \
        -runs=1000000 -max_len=4096 bench/fuzz/corpus/proto
"""

from __future__ import annotations

import sys

import atheris

with atheris.instrument_imports(include=["balancer"]):
    import httptools

    from balancer.proto.agent import AgentReplyError, parse_agent_reply
    from balancer.proto.basic_auth import basic_credentials
    from balancer.proto.errorfile import parse_error_file
    from balancer.proto.http1 import accept_response_head
    from balancer.proto.proxy import ProxyProtocolError, parse_proxy_header


class HeadSeen:
    """httptools callbacks: notes that the parser accepted a whole response head."""

    def __init__(self) -> None:
        self.done = False

    def on_headers_complete(self) -> None:
        self.done = True


def accepted_head(data: bytes) -> bytes | None:
    """The head UpstreamConnection would hand to accept_response_head for `data`, or None
    when llhttp does not accept a whole head there."""
    start = 0
    while data[start : start + 2] == b"\r\n":
        start += 2
    end = data.find(b"\r\n\r\n", start)
    if end < 0:
        return None
    seen = HeadSeen()
    parser = httptools.HttpResponseParser(seen)
    try:
        parser.feed_data(data[: end + 4])
    except httptools.HttpParserError:
        return None
    return data[start:end] if seen.done else None


def TestOneInput(raw: bytes) -> None:
    if not raw:
        return
    which, data = raw[0] % 5, raw[1:]
    if which == 0:
        try:
            parsed = parse_proxy_header(data)
        except ProxyProtocolError:
            return
        if parsed is not None:
            info, consumed = parsed
            assert 0 < consumed <= len(data), (consumed, len(data))
            assert 0 <= info.source_port <= 65535 and 0 <= info.dest_port <= 65535, info
    elif which == 1:
        head = accepted_head(data)
        if head is not None:
            split, length = accept_response_head(head)
            assert length >= -1
            assert split[4] == (length >= 0), (split, length)
    elif which == 2:
        try:
            page = parse_error_file(data)
        except ValueError:
            return
        assert 100 <= page.status <= 599, page.status
    elif which == 3:
        credentials = basic_credentials(data)
        assert credentials is None or isinstance(credentials, tuple)
    else:
        try:
            parse_agent_reply(data)
        except AgentReplyError:
            return


def main() -> None:
    atheris.Setup(sys.argv, TestOneInput)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
