"""stats.logformat: HAProxy log-format templates for access lines."""

from __future__ import annotations

import os
import time

import pytest

from balancer.runtime.record import LogRecord
from balancer.stats.accesslog import AccessLog
from balancer.stats.logformat import LogFormatError, LogTemplate

HTTPLOG = "%ci:%cp [%tr] %ft %b/%s %TR/%Tw/%Tc/%Tr/%Ta %ST %B %tsc %{+Q}r"


def record(**fields: object) -> LogRecord:
    r = LogRecord("www", "192.0.2.7", 40312, 1_700_000_000.25, "192.0.2.7:40312")
    r.backend_name, r.server_name = "web", "s1"
    r.request_line = "GET /a?b=1 HTTP/1.1"
    r.t_request, r.t_queue, r.t_connect, r.t_response, r.t_total = 0.4, 0.0, 1.0, 12.7, 14.2
    r.status, r.bytes_out, r.bytes_in, r.termination = 200, 512, 80, "--"
    for name, value in fields.items():
        setattr(r, name, value)
    return r


def test_haproxys_httplog_format_gives_haproxys_line() -> None:
    line = LogTemplate(HTTPLOG).format(record(), "14/Nov/2023:22:13:20.250")
    assert (
        line == '192.0.2.7:40312 [14/Nov/2023:22:13:20.250] www web/s1 0/0/1/12/14 200 512 ---- "GET /a?b=1 HTTP/1.1"\n'
    )


def test_request_parts_bytes_and_literals() -> None:
    template = LogTemplate("%HM %HP %HQ %HV up=%U pid=%pid 100%% ts=%Ts xff=%{+Q}xff")
    line = template.format(record(xff='203.0.113.9, "x"'), "-")
    assert line == f'GET /a ?b=1 HTTP/1.1 up=80 pid={os.getpid()} 100% ts=1700000000 xff="203.0.113.9, \\"x\\""\n'


def test_phases_that_never_happened_and_a_refused_request() -> None:
    line = LogTemplate("%Tw/%Tc/%Tr %ST %r %HM").format(
        record(t_queue=-1.0, t_connect=-1.0, t_response=-1.0, status=400, request_line=""), "-"
    )
    assert line == "-1/-1/-1 400 <BADREQ> -\n"


@pytest.mark.parametrize("bad", ["%[req.hdr(host)]", "%hr", "%{+X}ci", "%zz", "ends with %"])
def test_what_it_does_not_know_is_refused_by_name(bad: str) -> None:
    with pytest.raises(LogFormatError, match="log-format"):
        LogTemplate(bad)


def test_the_access_log_writes_template_lines(tmp_path) -> None:
    path = tmp_path / "access.log"
    log = AccessLog(f"file:{path}", "%ci %ST %{+Q}r")
    log.log(record(start_time=time.time()))
    log.close()
    assert path.read_text() == '192.0.2.7 200 "GET /a?b=1 HTTP/1.1"\n'
