"""stats/_logline.c writes exactly the bytes of AccessLog.format_text's line in UTF-8, and
refuses what it cannot write without touching the buffer."""

from __future__ import annotations

import os
import random
import time

import pytest

from balancer.runtime.record import LogRecord
from balancer.stats import accesslog
from balancer.stats.accesslog import AccessLog

_logline = accesslog._logline
if _logline is None:  # a BALANCER_PURE=1 build has no C module; CI builds it
    pytestmark = pytest.mark.skipif(
        os.environ.get("BALANCER_PURE") == "1", reason="built with BALANCER_PURE=1: no stats/_logline"
    )

TEXTS = ["", "-", "web", "s1", "GET / HTTP/1.1", 'POST /a?b="c" HTTP/2.0', "/é/ü", "x" * 5000, "\udcff/lone"]
TIMERS = [-1.0, 0.0, 0.4, 999.9, 1000.0, 123456.7, 2.0**40]


def random_record(rng: random.Random) -> LogRecord:
    port = rng.randrange(1, 65536)
    r = LogRecord(rng.choice(TEXTS), "192.0.2.7", port, time.time() + rng.uniform(-1e6, 1e6))
    r.backend_name, r.server_name = rng.choice(TEXTS), rng.choice(TEXTS)
    r.t_request, r.t_queue, r.t_connect, r.t_response, r.t_total = (rng.choice(TIMERS) for _ in range(5))
    r.status = rng.choice([0, 200, 404, 503, 999, 1000, 65535])
    r.bytes_out = rng.choice([0, 7, 999, 1000, 2**31, 2**62])
    r.termination = rng.choice(["--", "CD", "sH"])
    r.request_line, r.xff = rng.choice(TEXTS), rng.choice(["", "203.0.113.9, 198.51.100.1", "é"])
    return r


def test_lines_are_format_texts_lines_in_utf8() -> None:
    assert _logline is not None, "stats/_logline was not built (make native)"
    rng = random.Random(7)
    log = AccessLog("none")
    out = bytearray(b"kept\n")
    expected = [b"kept\n"]
    for _ in range(2000):
        r = random_record(rng)
        log.append_text(out, r)
        expected.append(log.format_text(r).encode("utf-8", "replace"))
    assert bytes(out) == b"".join(expected)


@pytest.mark.parametrize(
    ("position", "value", "error"),
    [
        (1, b"client", TypeError),  # a string field given bytes
        (15, None, TypeError),  # xff
        (6, 1.5, TypeError),  # a timer given a float
        (12, 2**64, OverflowError),  # bytes out past 64 bits
    ],
)
def test_refused_arguments_leave_the_buffer_as_it_was(position: int, value: object, error: type) -> None:
    assert _logline is not None, "stats/_logline was not built (make native)"
    strings = ["c", "[t] ", "fe", "be", "s"]
    args: list[object] = [bytearray(b"before\n"), *strings, 0, 0, 0, 0, 0, 200, 5, "--", "GET /", ""]
    args[position] = value
    with pytest.raises(error):
        _logline.append_text(*args)
    assert args[0] == b"before\n"
    with pytest.raises(TypeError):
        _logline.append_text(*args[:-1])
