"""Logs leaving the process: syslog over UDP (RFC 5424) and a log file reopened on SIGUSR1.

`log = "syslog:udp://HOST:PORT"` sends every access line (facility local0) and every event
line (facility daemon) as one RFC 5424 datagram, from the master and from each worker, with
the message as `log_format` says. The test is the collector: a UDP socket it binds itself.

`log = "file:PATH"` is reopened by every worker on SIGUSR1 (sent to the master, which forwards
it), so logrotate can rename the file and have the next lines start a new one.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import re
import signal
import socket
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import pytest
from tests.support import TaggedBackend, free_port, wait_until
from tests.support.config import server_blocks
from tests.support.process import BalancerProcess
from tests.support.site import Site

pytestmark = pytest.mark.e2e

# <PRI>VERSION SP TIMESTAMP SP HOSTNAME SP APP-NAME SP PROCID SP MSGID SP STRUCTURED-DATA [SP MSG]
RFC5424 = re.compile(
    r"<(?P<pri>\d{1,3})>(?P<version>1) "
    r"(?P<timestamp>-|\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d{1,6})?(?:Z|[+-]\d\d:\d\d)) "
    r"(?P<hostname>[!-~]{1,255}) "
    r"(?P<app>[!-~]{1,48}) "
    r"(?P<procid>[!-~]{1,128}) "
    r"(?P<msgid>[!-~]{1,32}) "
    r"(?P<sd>-|(?:\[[^\]]*\])+)"
    r"(?: (?P<msg>.*))?",
    re.DOTALL,
)
# 127.0.0.1:50312 [21/Nov/2026:23:59:01.123] www web/s1 0/0/1/2/3 200 120 -- "GET / HTTP/1.1" xff="..."
ACCESS_TEXT = re.compile(
    r'\d+\.\d+\.\d+\.\d+:\d+ \[[^\]]+\] www web/s1 -?\d+(?:/-?\d+){4} (?P<status>\d{3}) \d+ -- "(?P<request>[^"]*)"'
    r'(?: xff="(?P<xff>[^"]*)")?'
)
LOCAL0, DAEMON, INFO = 16, 3, 6


@dataclass
class Message:
    facility: int
    severity: int
    timestamp: datetime
    hostname: str
    app: str
    procid: int
    msgid: str
    sd: str
    msg: str


def parse_rfc5424(datagram: bytes) -> Message:
    text = datagram.decode("utf-8")
    match = RFC5424.fullmatch(text)
    assert match, f"not an RFC 5424 message: {text!r}"
    pri = int(match["pri"])
    assert 0 <= pri <= 191, text
    assert match["timestamp"] != "-", text
    assert match["msg"], f"no MSG: {text!r}"
    assert "\n" not in match["msg"], f"one line per datagram: {text!r}"
    return Message(
        facility=pri // 8,
        severity=pri % 8,
        timestamp=datetime.fromisoformat(match["timestamp"]),
        hostname=match["hostname"],
        app=match["app"],
        procid=int(match["procid"]),
        msgid=match["msgid"],
        sd=match["sd"],
        msg=match["msg"],
    )


class Collector:
    """A syslog collector for one test: a UDP socket on 127.0.0.1 and what it received."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.1)
        self.port = int(self.sock.getsockname()[1])
        self.datagrams: list[bytes] = []

    def receive(self) -> list[bytes]:
        with contextlib.suppress(TimeoutError):
            while True:
                self.datagrams.append(self.sock.recv(65536))
        return self.datagrams

    def wait_for(self, predicate: Callable[[Message], bool], what: str, timeout: float = 10) -> Message:
        """The first message (every datagram parsed so far as RFC 5424) matching `predicate`."""

        def find() -> Message | None:
            return next((m for m in map(parse_rfc5424, self.receive()) if predicate(m)), None)

        try:
            message: Message = wait_until(find, timeout=timeout, interval=0.05, what=what)
        except AssertionError:
            received = "\n".join(d.decode(errors="replace") for d in self.datagrams[-20:])
            raise AssertionError(f"no syslog message for {what} within {timeout}s; received:\n{received}") from None
        return message

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def collector() -> Iterator[Collector]:
    c = Collector()
    yield c
    c.close()


def get(port: int, path: str, headers: dict[str, str] | None = None) -> int:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        connection.request("GET", path, headers={"Connection": "close", **(headers or {})})
        response = connection.getresponse()
        response.read()
        return response.status
    finally:
        connection.close()


@pytest.fixture
def syslog_site(
    tmp_path: Path, collector: Collector, tagged: Callable[..., list[TaggedBackend]]
) -> Iterator[Callable[..., tuple[BalancerProcess, int]]]:
    """Factory: `syslog_site(log_format)` -> (a balancer logging to `collector`, its frontend port)."""
    started: list[BalancerProcess] = []

    def start(log_format: str, facility: str = "local0") -> tuple[BalancerProcess, int]:
        port = free_port()
        path = tmp_path / "balancer.toml"
        path.write_text(
            f'[global]\nworkers = 2\ngrace = "1s"\nlog = "syslog:udp://127.0.0.1:{collector.port}"\n'
            f'log_format = "{log_format}"\nlog_facility = "{facility}"\n'
            f'\n[[frontend]]\nname = "www"\nbind = ["127.0.0.1:{port}"]\ndefault_backend = "web"\n'
            '\n[[backend]]\nname = "web"\n' + server_blocks(tagged("s1"))
        )
        process = BalancerProcess(path, log_dir=tmp_path)
        started.append(process)
        process.wait_ready(port, timeout=15)
        return process, port

    yield start
    for process in started:
        with contextlib.suppress(AssertionError):
            process.stop(timeout=10)
        process.kill()


def worker_pids(master: int) -> set[int]:
    pids = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == master:
                pids.add(int(stat.parent.name))
    return pids


# -- syslog -----------------------------------------------------------------------------------------


def test_access_and_event_lines_arrive_as_rfc5424_text(syslog_site, collector):
    process, port = syslog_site("text")
    assert get(port, "/plain?who=syslog") == 200
    assert get(port, "/forwarded?who=syslog", {"X-Forwarded-For": "203.0.113.7"}) == 200

    plain = collector.wait_for(lambda m: "/plain?who=syslog" in m.msg, "the plain request's access line")
    forwarded = collector.wait_for(lambda m: "/forwarded?who=syslog" in m.msg, "the forwarded request's line")
    running = collector.wait_for(lambda m: "balancer running" in m.msg, "the master's 'balancer running' event")
    listening = collector.wait_for(lambda m: "listening on" in m.msg, "a worker's 'listening' event")

    workers = worker_pids(process.pid)
    for access in (plain, forwarded):
        assert (access.facility, access.severity) == (LOCAL0, INFO)
        assert access.app == "balancer"
        assert access.procid in workers, f"access lines come from the workers {workers}: {access}"
        assert (access.msgid, access.sd) == ("-", "-")
        assert abs(access.timestamp.timestamp() - time.time()) < 60
        assert access.timestamp.utcoffset() is not None
        assert access.hostname == "".join(c for c in socket.gethostname() if 33 <= ord(c) <= 126)[:255]
    match = ACCESS_TEXT.fullmatch(plain.msg)
    assert match, plain.msg
    assert (match["status"], match["request"], match["xff"]) == ("200", "GET /plain?who=syslog HTTP/1.1", None)
    match = ACCESS_TEXT.fullmatch(forwarded.msg)
    assert match, forwarded.msg
    assert match["xff"] == "203.0.113.7", "an access line carries X-Forwarded-For when the request had one"

    assert running.facility == DAEMON
    assert running.severity == INFO
    assert running.procid == process.pid, "the master's events come from the master"
    assert running.msg.startswith("balancer.master INFO: balancer running")
    assert listening.facility == DAEMON
    assert listening.procid in workers


def test_log_facility_sets_the_facility_of_access_lines(syslog_site, collector):
    """Issue #13: HAProxy `log ... local2` was sent as local0."""
    _, port = syslog_site("text", "local2")
    assert get(port, "/facility") == 200
    access = collector.wait_for(lambda m: "/facility" in m.msg, "the request's access line")
    assert (access.facility, access.severity) == (LOCAL0 + 2, INFO)


def test_json_log_format_sends_json_messages(syslog_site, collector):
    process, port = syslog_site("json")
    assert get(port, "/json?who=syslog", {"X-Forwarded-For": "198.51.100.1, 10.0.0.1"}) == 200

    access = collector.wait_for(lambda m: "/json?who=syslog" in m.msg, "the request's access line")
    event = collector.wait_for(lambda m: "balancer running" in m.msg, "the 'balancer running' event")

    assert (access.facility, access.severity) == (LOCAL0, INFO)
    entry = json.loads(access.msg)
    assert entry["request"] == "GET /json?who=syslog HTTP/1.1"
    assert (entry["frontend"], entry["backend"], entry["server"], entry["status"]) == ("www", "web", "s1", 200)
    assert entry["xff"] == "198.51.100.1, 10.0.0.1"

    assert event.facility == DAEMON
    assert event.procid == process.pid
    fields = json.loads(event.msg)
    assert fields["level"] == "INFO"
    assert fields["logger"] == "balancer.master"
    assert fields["message"].startswith("balancer running")
    datetime.fromisoformat(fields["time"])


def test_every_datagram_is_well_formed(syslog_site, collector):
    process, port = syslog_site("text")
    for i in range(20):
        assert get(port, f"/many/{i}") == 200
    collector.wait_for(lambda m: "/many/19 " in m.msg, "the last request's line")
    process.stop(timeout=10)
    collector.wait_for(lambda m: m.msg.endswith("INFO: stopped"), "the master's 'stopped' event")

    messages = [parse_rfc5424(d) for d in collector.receive()]
    access = [m for m in messages if m.facility == LOCAL0]
    assert sorted(int(m.msg.split("/many/")[1].split()[0]) for m in access if "/many/" in m.msg) == list(range(20))
    assert {m.facility for m in messages} == {LOCAL0, DAEMON}
    assert all(m.app == "balancer" for m in messages)
    warnings = [m.msg for m in messages if m.facility == DAEMON and m.severity <= 4]
    assert warnings == [], "a clean run logs no warnings or errors"


# -- SIGUSR1 reopens a log file ---------------------------------------------------------------------


def open_by_group(pgid: int, path: Path) -> set[int]:
    """Pids in process group `pgid` holding `path` open (as the kernel names it now)."""
    holders = set()
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            if int((proc / "stat").read_text().rsplit(")", 1)[1].split()[2]) != pgid:
                continue
            for fd in (proc / "fd").iterdir():
                with contextlib.suppress(OSError):
                    if os.readlink(fd) == str(path):
                        holders.add(int(proc.name))
        except (OSError, ValueError, IndexError):
            continue
    return holders


def test_sigusr1_reopens_the_access_log_after_logrotate_renames_it(site: Site, tagged):
    (s1,) = tagged("s1")
    process = site.start(
        site.global_toml(extra="workers = 2")
        + f'\n[[frontend]]\nname = "www"\nbind = ["127.0.0.1:{site.port}"]\ndefault_backend = "web"\n'
        + '\n[[backend]]\nname = "web"\n'
        + server_blocks([s1])
    )
    # Both workers have their log open once the master says it runs.
    wait_until(lambda: "balancer running" in process.output(), timeout=15, what="both workers to serve")
    assert get(site.port, "/before-rotate") == 200
    site.wait_log(lambda line: "/before-rotate" in line, what="the first line")

    rotated = site.log_path.with_name("access.log.1")
    site.log_path.rename(rotated)
    # Until told, the workers keep writing to the file they have open, whatever its name now.
    assert get(site.port, "/while-renamed") == 200
    wait_until(lambda: "/while-renamed" in rotated.read_text(), timeout=5, what="a line in the renamed file")
    assert not site.log_path.exists()

    workers = worker_pids(process.pid)
    assert len(workers) == 2
    process.send_signal(signal.SIGUSR1)
    wait_until(
        lambda: open_by_group(process.pid, site.log_path) == workers and not open_by_group(process.pid, rotated),
        timeout=10,
        what="both workers to close the rotated file and open a new one",
    )

    for i in range(10):
        assert get(site.port, f"/after-rotate/{i}") == 200
    # Each worker flushes its own buffer: wait for all ten lines, in whatever order.
    wait_until(lambda: len(site.log_lines()) >= 10, timeout=5, what="the ten lines after the rotation")

    new_lines = site.log_lines()
    assert sorted(int(line.split("/after-rotate/")[1].split()[0]) for line in new_lines) == list(range(10))
    old_text = rotated.read_text()
    assert "/before-rotate" in old_text and "/while-renamed" in old_text
    assert "/after-rotate" not in old_text
    assert process.alive()
