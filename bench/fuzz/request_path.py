"""Atheris target over the HTTP request path: client bytes into a real HttpSession.

What it drives: a `Balancer` built from CONFIG below (rules that set, delete and test
headers, a deny, a redirect, a Basic-auth userlist, `forwardfor` on, hashing backends on
a header, a query parameter and a cookie, cookie persistence, a `monitor_uri`), and for each
input one `HttpSession` of its frontend, exactly as a listener makes them. The fuzzer's
bytes arrive as 1..8 `data_received` calls (how many and where they are cut comes from
the input's first byte, see `split`),
then `eof_received` and `connection_lost`, the way the event loop delivers a client.

No sockets: the client side is `FakeTransport` (what HttpSession calls on a transport),
and the server side is stubbed at the session boundary: `BackendContext.connect` is
replaced by a coroutine that fails with ConnectionRefusedError. Every request a rule lets
through therefore walks the real dispatch, connect-failure, retry, redispatch and 503 code
(and the access log line), but nothing is ever sent to a server.

The property (issue #18, "0 tracebacks under fuzzing"): nothing escapes a protocol
callback, nothing reaches the loop's exception handler, and the `balancer` loggers log
nothing at ERROR (the session logs "internal error" when it catches what it did not
expect). Any of these fails the input with an AssertionError naming what was seen.

Run (one core; from the worktree, interpreted so that coverage is of the Python code):
    PYTHONPATH=$PWD/src /work/main/.venv/bin/python bench/fuzz/request_path.py \
        -runs=1000000 -max_len=4096 -workers=1 -jobs=1 bench/fuzz/corpus/http
"""

from __future__ import annotations

import asyncio
import logging
import random
import sys
from typing import Any

import atheris

with atheris.instrument_imports(include=["balancer", "httptools"]):
    from balancer.config import parse_config
    from balancer.net.context import BackendContext
    from balancer.net.http_session import HttpSession
    from balancer.server import Balancer

CONFIG = """
[global]
log = "file:/dev/null"

[[userlist]]
name = "ops"
user = [{ name = "ann", password = "s3cret" }]

[[frontend]]
name = "www"
bind = ["127.0.0.1:0"]
default_backend = "web"
forwardfor = true
monitor_uri = "/health"

  [[frontend.rule]]
  if = { path_beg = ["/admin"] }
  unless = { http_auth = "ops" }
  action = "auth"

  [[frontend.rule]]
  if = { hdr = { "X-Block" = [] } }
  action = "deny"

  [[frontend.rule]]
  if = { host = ["old.example.com"] }
  redirect = { prefix = "https://new.example.com", code = 301 }

  [[frontend.rule]]
  if = { path_end = [".http"] }
  redirect = { scheme = "https" }

  [[frontend.rule]]
  if = { method = ["POST", "PUT"] }
  set_header = { "X-Write" = "1" }
  del_header = ["X-Debug", "Cookie2"]

  [[frontend.rule]]
  if = { path_beg = ["/api"], hdr_sub = { "Accept" = ["json"] } }
  use_backend = "api"

  [[frontend.rule]]
  if = { url_param = { "id" = [] } }
  use_backend = "items"

  [[frontend.rule]]
  if = { path_reg = ["^/s/[0-9]+$"], ignore_case = true }
  use_backend = "sticky"

[[backend]]
name = "web"
balance = "roundrobin"
server = [{ name = "w1", address = "127.0.0.1:9" }, { name = "w2", address = "127.0.0.1:9" }]

[[backend]]
name = "api"
balance = "hdr"
hash_key = "hdr(X-User)"
server = [{ name = "a1", address = "127.0.0.1:9" }, { name = "a2", address = "127.0.0.1:9" }]

  [[backend.rule]]
  if = { hdr = { "X-Api-Key" = ["bad"] } }
  action = "deny"

[[backend]]
name = "items"
balance = "ring"
hash_key = "url_param(id)"
retries = 1
server = [{ name = "i1", address = "127.0.0.1:9" }]

[[backend]]
name = "sticky"
balance = "maglev"
hash_key = "cookie(sid)"
cookie = { name = "SERVERID", mode = "insert" }
server = [{ name = "s1", address = "127.0.0.1:9" }, { name = "s2", address = "127.0.0.1:9" }]
"""

MAX_CHUNKS = 8


class FakeTransport(asyncio.Transport):
    """The client's side of a connection: keeps what the session writes, opens nothing."""

    def __init__(self) -> None:
        super().__init__()
        self.written: list[bytes] = []
        self.closing = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if self.closing:
            return
        self.written.append(bytes(data))

    def close(self) -> None:
        self.closing = True

    def abort(self) -> None:
        self.closing = True

    def write_eof(self) -> None:
        pass

    def can_write_eof(self) -> bool:
        return True

    def is_closing(self) -> bool:
        return self.closing

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        pass

    def get_write_buffer_size(self) -> int:
        return 0

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        if name == "peername":
            return ("192.0.2.7", 40000)
        if name == "sockname":
            return ("127.0.0.1", 8080)
        return default


async def refused(self: BackendContext, *args: Any, **kwargs: Any) -> Any:
    """Stands for BackendContext.connect: the server refuses, no socket is opened."""
    raise ConnectionRefusedError(111, "refused (fuzz stub)")


BackendContext.connect = refused  # type: ignore[method-assign,assignment]

problems: list[str] = []


class ErrorRecorder(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        problems.append(f"{record.name}: {record.getMessage()} {record.exc_info!r}")


def on_loop_exception(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
    problems.append(f"loop: {context.get('message')} {context.get('exception')!r}")


logging.getLogger("balancer").addHandler(ErrorRecorder(logging.ERROR))
logging.getLogger("balancer").setLevel(logging.ERROR)  # warnings (connect failed) cost time
loop = asyncio.new_event_loop()
loop.set_exception_handler(on_loop_exception)
# Built once (a maglev table costs milliseconds); what a client leaves behind in it that could
# make one input depend on the ones before (the frontend's known request heads) is cleared
# per input in one_client.
BALANCER = Balancer(parse_config(CONFIG))
FRONTEND = BALANCER.frontends["www"]


def split(raw: bytes) -> tuple[bool, list[bytes]]:
    """An input is one control byte, then the client's bytes verbatim (so that seeds are
    plain requests and the fuzzer's mutations of them stay readable). Control byte: bit 0
    half-closes after the last read; bits 1-3 are the number of reads less one; bits 4-7
    seed the choice of the cut points (deterministic: an input always replays the same)."""
    if not raw:
        return False, []
    control, data = raw[0], raw[1:]
    count = ((control >> 1) & 7) + 1
    picker = random.Random(control >> 4)
    cuts = sorted(picker.randrange(1, len(data)) for _ in range(count - 1)) if len(data) > 1 else []
    chunks: list[bytes] = []
    start = 0
    for cut in cuts:
        if cut > start:
            chunks.append(data[start:cut])
            start = cut
    chunks.append(data[start:])
    return bool(control & 1), chunks


async def one_client(chunks: list[bytes], half_close: bool) -> None:
    FRONTEND.known_requests.clear()
    session = HttpSession(FRONTEND)
    transport = FakeTransport()
    session.connection_made(transport)
    for data in chunks:
        if data:
            session.data_received(data)
        # Let connect tasks (refused) and the outbox run between reads, as the loop would.
        for _ in range(4):
            await asyncio.sleep(0)
    if half_close:
        session.eof_received()
        for _ in range(4):
            await asyncio.sleep(0)
    session.connection_lost(None)
    for _ in range(2):
        await asyncio.sleep(0)


def TestOneInput(raw: bytes) -> None:
    half_close, chunks = split(raw)
    problems.clear()
    loop.run_until_complete(one_client(chunks, half_close))
    if problems:
        raise AssertionError("; ".join(problems))


def main() -> None:
    atheris.Setup(sys.argv, TestOneInput)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
