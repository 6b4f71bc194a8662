"""stats.accesslog: the text line of a record, field by field, and its JSON twin."""

from __future__ import annotations

import json
import re
import time

import pytest

from balancer.runtime.record import LogRecord
from balancer.stats.accesslog import AccessLog

TEXT_LINE = re.compile(
    r"^(?P<client>\S+) \[(?P<time>\d\d/\w{3}/\d{4}:\d\d:\d\d:\d\d\.\d{3})\] (?P<frontend>\S+)"
    r" (?P<backend>[^/\s]+)/(?P<server>\S+) (?P<timers>-?\d+(?:/-?\d+){4}) (?P<status>\d+)"
    r' (?P<bytes>\d+) (?P<termination>\S\S) "(?P<request>[^"]*)"(?: xff="(?P<xff>[^"]*)")?\n$'
)


def record(**fields: object) -> LogRecord:
    r = LogRecord("www", "192.0.2.7", 40312, time.time(), "192.0.2.7:40312")
    r.backend_name, r.server_name = "web", "s1"
    r.request_line = "GET /a?b=1 HTTP/1.1"
    for name, value in fields.items():
        setattr(r, name, value)
    return r


@pytest.mark.parametrize(
    ("timers", "expected"),
    [
        ((0.2, 0.0, 0.0, 1.9, 2.4), "0/0/0/1/2"),  # truncated like HAProxy's, not rounded
        ((3.0, -1.0, -1.0, -1.0, 3.5), "3/-1/-1/-1/3"),  # phases that never happened
        ((999.9, 1000.0, 12345.6, 0.0, 98765.0), "999/1000/12345/0/98765"),  # past the table
    ],
)
def test_text_line_timers(timers: tuple[float, ...], expected: str) -> None:
    t_request, t_queue, t_connect, t_response, t_total = timers
    r = record(t_request=t_request, t_queue=t_queue, t_connect=t_connect, t_response=t_response, t_total=t_total)
    match = TEXT_LINE.match(AccessLog("none").format_text(r))
    assert match is not None
    assert match["timers"] == expected


@pytest.mark.parametrize(("status", "bytes_out"), [(200, 0), (503, 999), (200, 1000), (404, 7_340_032)])
def test_text_line_fields(status: int, bytes_out: int) -> None:
    r = record(status=status, bytes_out=bytes_out, termination="SC", t_total=1.0)
    line = AccessLog("none").format_text(r)
    match = TEXT_LINE.match(line)
    assert match is not None, line
    assert (match["client"], match["frontend"], match["backend"], match["server"]) == (
        "192.0.2.7:40312",
        "www",
        "web",
        "s1",
    )
    assert (int(match["status"]), int(match["bytes"]), match["termination"]) == (status, bytes_out, "SC")
    assert match["request"] == "GET /a?b=1 HTTP/1.1"
    assert match["xff"] is None
    assert match["time"] == time.strftime("%d/%b/%Y:%H:%M:%S", time.localtime(r.start_time)) + (
        f".{int(r.start_time * 1000) % 1000:03d}"
    )


def test_text_line_xff_and_one_timestamp_per_millisecond() -> None:
    log = AccessLog("none")
    first = record(xff="203.0.113.9, 198.51.100.1")
    second = record(start_time=first.start_time + 0.0004)  # the same millisecond or the next
    third = record(start_time=first.start_time + 2.5)  # another second
    lines = [TEXT_LINE.match(log.format_text(r)) for r in (first, second, third)]
    assert all(lines)
    assert lines[0]["xff"] == "203.0.113.9, 198.51.100.1"
    for r, match in zip((first, second, third), lines, strict=True):
        assert match is not None
        stamp = time.strftime("%d/%b/%Y:%H:%M:%S", time.localtime(r.start_time))
        assert match["time"] == f"{stamp}.{int(r.start_time * 1000) % 1000:03d}"


def test_json_line_has_the_text_lines_fields() -> None:
    log = AccessLog("none", fmt="json")
    r = record(status=502, bytes_in=77, bytes_out=1500, termination="SH", t_request=0.0, t_queue=0.0, t_total=5.2)
    r.xff = "203.0.113.9"
    entry = json.loads(log.format_json(r))
    assert entry["client"] == "192.0.2.7:40312"
    assert (entry["client_ip"], entry["client_port"]) == ("192.0.2.7", 40312)
    assert (entry["frontend"], entry["backend"], entry["server"]) == ("www", "web", "s1")
    assert entry["timers"] == {"request": 0, "queue": 0, "connect": -1, "response": -1, "total": 5}
    assert (entry["status"], entry["bytes_in"], entry["bytes_out"]) == (502, 77, 1500)
    assert (entry["termination"], entry["request"], entry["xff"]) == ("SH", "GET /a?b=1 HTTP/1.1", "203.0.113.9")
    text = TEXT_LINE.match(AccessLog("none").format_text(r))
    assert text is not None and text["time"] == entry["time"]
