"""The access log: one line per HTTP request or TCP connection, text, JSON or a template.

Lines are buffered, as UTF-8, and written at most every 50 ms or when 64 KiB are pending,
so logging costs one write for many requests instead of a syscall each. Text lines follow
HAProxy's httplog layout so existing log tooling keeps working:

    127.0.0.1:50312 [21/Nov/2026:23:59:01.123] www web/s1 0/0/1/2/3 200 120 -- "GET / HTTP/1.1"

with timers request/queue/connect/response/total in ms, then status, bytes sent to the
client, termination state, and the request line. A trailing `xff="..."` field appears when
the request carried X-Forwarded-For.

With a `syslog:udp://HOST:PORT` target each line is one RFC 5424 datagram (stats.syslog),
sent when the buffer is flushed.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from typing import Final

from balancer.runtime.record import LogRecord, LogSink
from balancer.stats.logformat import LogTemplate, is_template
from balancer.stats.syslog import FACILITY_LOCAL0, SEVERITY_INFO, SyslogSender, parse_target

try:
    # The text line appended to the buffer in one C call (stats/_logline.c); None (not
    # built: BALANCER_PURE=1): format_text, which it mirrors, then encoded.
    from balancer.stats import _logline
except ImportError:  # pragma: no cover - a build without C
    _logline = None  # type: ignore[assignment]

FLUSH_DELAY: Final = 0.05
FLUSH_BYTES: Final = 65536

# The C function itself, bound once: a module attribute is a dict lookup per call.
_append_text: Final = _logline.append_text if _logline is not None else None


_MILLIS: Final = [f"{ms:03d}" for ms in range(1000)]
# Most timers, statuses and small sizes, with the separator that follows them in a text
# line: a list index instead of an int-to-str conversion, and one piece fewer to join.
_SLASHED: Final = [f"{n}/" for n in range(-1, 1000)]
_SPACED: Final = [f"{n} " for n in range(-1, 1000)]


def _slashed(n: int) -> str:
    return _SLASHED[n + 1] if -1 <= n < 1000 else f"{n}/"


def _spaced(n: int) -> str:
    return _SPACED[n + 1] if -1 <= n < 1000 else f"{n} "


def _ms(value: float) -> int:
    return -1 if value < 0 else int(value)


class AccessLog(LogSink):
    """Buffered writer of access lines to a file descriptor or a syslog collector.

    `target` is the config's `global.log`: "stdout", "stderr", "none", "file:/path" or
    "syslog:udp://HOST:PORT".
    """

    def __init__(self, target: str = "stdout", fmt: str = "text", facility: int = FACILITY_LOCAL0) -> None:
        """`fmt`: "text", "json" or a log-format template (stats.logformat), validated
        already. `facility`: the syslog facility code of the lines (stats.syslog.facility_code)."""
        self.target = target
        self.json = fmt == "json"
        self.template = LogTemplate(fmt) if is_template(fmt) else None
        self.facility = facility
        self._fd = -1
        self._own_fd = False
        self._syslog: SyslogSender | None = None
        self._pending = bytearray()  # lines not written yet, in UTF-8
        self._flush_handle: asyncio.TimerHandle | None = None
        self._second = -1
        self._second_text = ""
        self._milli = -1
        self._milli_text = ""
        self._bracketed = ""  # "[" _milli_text "] ", for text lines
        self.enabled = target != "none"
        self.open()

    def open(self) -> None:
        """Open (or reopen, for logrotate) the target. Lines still buffered go to the old one."""
        self.flush()
        self.close_fd()
        syslog = parse_target(self.target)
        if syslog is not None:
            try:
                self._syslog = SyslogSender(*syslog)
            except OSError as exc:
                print(f"balancer: access log to {self.target}: {exc}", file=sys.stderr)
        elif self.target.startswith("file:"):
            self._fd = os.open(self.target[5:], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
            self._own_fd = True
        elif self.target == "stderr":
            self._fd = sys.stderr.fileno()
        elif self.enabled:
            self._fd = sys.stdout.fileno()

    def close_fd(self) -> None:
        if self._own_fd and self._fd >= 0:
            os.close(self._fd)
        self._fd = -1
        self._own_fd = False
        if self._syslog is not None:
            self._syslog.close()
            self._syslog = None

    def log(self, record: LogRecord) -> None:
        if not self.enabled:
            return
        if self.template is not None:
            line = self.template.format(record, self._timestamp(record.start_time))
            self._pending += line.encode("utf-8", "replace")
        elif self.json:
            self._pending += self.format_json(record).encode("utf-8", "replace")
        else:
            self.append_text(self._pending, record)
        if len(self._pending) >= FLUSH_BYTES:
            self.flush()
        elif self._flush_handle is None:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                self.flush()
                return
            self._flush_handle = loop.call_later(FLUSH_DELAY, self.flush)

    def _timestamp(self, when: float) -> str:
        # A busy proxy logs many lines per millisecond: the text is made once for each.
        milli = int(when * 1000)
        if milli == self._milli:
            return self._milli_text
        second = milli // 1000
        if second != self._second:
            self._second = second
            self._second_text = time.strftime("%d/%b/%Y:%H:%M:%S", time.localtime(second))
        self._milli = milli
        # `%`, not `milli - second * 1000`: compiled, a product of an operand above 2**30 (a
        # second of the epoch) takes the generic, boxed multiplication (~800 instructions).
        self._milli_text = f"{self._second_text}.{_MILLIS[milli % 1000]}"
        self._bracketed = f"[{self._milli_text}] "
        return self._milli_text

    def append_text(self, out: bytearray, r: LogRecord) -> None:
        """`r`'s text line, in UTF-8, at the end of `out`: format_text's line, made in C
        when built (stats/_logline.c)."""
        if _append_text is None:
            out += self.format_text(r).encode("utf-8", "replace")
            return
        self._timestamp(r.start_time)  # brings _bracketed up to date
        _append_text(
            out,
            r.client,
            self._bracketed,
            r.frontend_name,
            r.backend_name,
            r.server_name,
            int(r.t_request),
            int(r.t_queue),
            int(r.t_connect),
            int(r.t_response),
            int(r.t_total),
            r.status,
            r.bytes_out,
            r.termination,
            r.request_line,
            r.xff,
        )

    def format_text(self, r: LogRecord) -> str:
        # int() truncates the float timers like HAProxy's, and -1.0 (phase never happened)
        # prints as -1. One f-string, its newline included (no second copy of the line to
        # append it), of as few pieces as can be: this runs once per request, and joining
        # costs per piece.
        self._timestamp(r.start_time)  # brings _bracketed up to date
        xff = f' xff="{r.xff}"' if r.xff else ""
        return (
            f"{r.client} {self._bracketed}{r.frontend_name} {r.backend_name}/{r.server_name} "
            f"{_slashed(int(r.t_request))}{_slashed(int(r.t_queue))}{_slashed(int(r.t_connect))}"
            f"{_slashed(int(r.t_response))}{_spaced(int(r.t_total))}"
            f'{_spaced(r.status)}{_spaced(r.bytes_out)}{r.termination} "{r.request_line}"{xff}\n'
        )

    def format_json(self, r: LogRecord) -> str:
        fields = {
            "client": r.client,
            "client_ip": r.client_ip,
            "client_port": r.client_port,
            "time": self._timestamp(r.start_time),
            "frontend": r.frontend_name,
            "backend": r.backend_name,
            "server": r.server_name,
            "timers": {
                "request": _ms(r.t_request),
                "queue": _ms(r.t_queue),
                "connect": _ms(r.t_connect),
                "response": _ms(r.t_response),
                "total": _ms(r.t_total),
            },
            "status": r.status,
            "bytes_in": r.bytes_in,
            "bytes_out": r.bytes_out,
            "termination": r.termination,
            "request": r.request_line,
        }
        if r.xff:
            fields["xff"] = r.xff
        return json.dumps(fields, separators=(",", ":")) + "\n"

    def flush(self) -> None:
        if self._flush_handle is not None:
            self._flush_handle.cancel()
            self._flush_handle = None
        if not self._pending:
            return
        lines, self._pending = self._pending, bytearray()
        if self._syslog is not None:
            header = self._syslog.header(self.facility, SEVERITY_INFO)
            for line in lines[:-1].split(b"\n"):  # every line ends with one
                self._syslog.send(header, line)
            return
        if self._fd < 0:
            return
        try:
            view = memoryview(lines)
            while view:
                written = os.write(self._fd, view)
                view = view[written:]
        except OSError as exc:
            print(f"balancer: access log write failed: {exc}", file=sys.stderr)

    def close(self) -> None:
        self.flush()
        self.close_fd()
