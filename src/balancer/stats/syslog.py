"""Syslog over UDP (RFC 5424 messages, RFC 5426 transport) for `global.log = "syslog:udp://HOST:PORT"`.

One datagram per line, no octet counting, no structured data:

    <134>1 2026-11-22T00:09:31.719Z lb1 balancer 4242 - - 127.0.0.1:58190 [22/Nov/...] www web/s1 ...

Access lines go out with facility `global.log_facility` (local0 by default), severity info;
event lines (python logging) with facility daemon and the severity of their level. The
message is the access line or the event text as `global.log_format` says (text, or one
JSON object). UDP syslog is lossy by design: a send that would block or fails is dropped,
never retried, so logging can not stall the proxy.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import socket
import time
import typing

from balancer.config.model import Config, Facility

FACILITY_DAEMON = 3
FACILITY_LOCAL0 = 16
SEVERITY_INFO = 6
MAX_DATAGRAM = 8192  # rsyslog's default maximum message size; longer messages are cut
APP_NAME = "balancer"

_TARGET = re.compile(r"syslog:udp://(?:\[(?P<v6>[^\]]+)\]|(?P<host>[^:/\[\]]+)):(?P<port>\d+)")
_SEVERITY = {logging.CRITICAL: 2, logging.ERROR: 3, logging.WARNING: 4, logging.INFO: 6, logging.DEBUG: 7}


FACILITIES: tuple[str, ...] = typing.get_args(Facility)  # index = RFC 5424 facility code


def facility_code(name: str) -> int:
    """The numeric facility of a name of `global.log_facility` ("local2" -> 18)."""
    return FACILITIES.index(name)


def parse_target(target: str) -> tuple[str, int] | None:
    """(host, port) of a `syslog:udp://HOST:PORT` target; None for any other target."""
    match = _TARGET.fullmatch(target)
    if match is None:
        return None
    return (match["v6"] or match["host"], int(match["port"]))


def severity(level: int) -> int:
    """The RFC 5424 severity of a python logging level."""
    for threshold, value in sorted(_SEVERITY.items(), reverse=True):
        if level >= threshold:
            return value
    return 7


def _hostname() -> str:
    """HOSTNAME as RFC 5424 wants it: printable US-ASCII, at most 255 characters, '-' if unknown."""
    name = "".join(c for c in socket.gethostname() if 33 <= ord(c) <= 126)[:255]
    return name or "-"


def timestamp(when: float) -> str:
    """RFC 3339 time in UTC with milliseconds, e.g. 2026-11-22T00:09:31.719Z."""
    second = int(when)
    return "%s.%03dZ" % (time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second)), int((when - second) * 1000))


class SyslogSender:
    """A non-blocking UDP socket that sends RFC 5424 messages to one collector."""

    def __init__(self, host: str, port: int) -> None:
        # Resolved once: the target is normally an address literal, so this does not block.
        family, _, _, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_DGRAM)[0]
        self.address = address
        self.sock = socket.socket(family, socket.SOCK_DGRAM)
        self.sock.setblocking(False)
        self.hostname = _hostname()
        self.procid = str(os.getpid())

    def header(self, facility: int, sev: int, when: float | None = None) -> bytes:
        """`<PRI>1 TIMESTAMP HOSTNAME APP-NAME PROCID MSGID SD ` (MSGID and SD left out: '-')."""
        stamp = timestamp(time.time() if when is None else when)
        return f"<{facility * 8 + sev}>1 {stamp} {self.hostname} {APP_NAME} {self.procid} - - ".encode("ascii")

    def send(self, header: bytes, message: bytes | bytearray) -> None:
        """One datagram: `header` then `message` (UTF-8, one line), cut to MAX_DATAGRAM."""
        data = header + message
        # A full buffer or an unreachable collector: syslog over UDP drops, the proxy goes on.
        with contextlib.suppress(OSError):
            self.sock.sendto(data[:MAX_DATAGRAM], self.address)

    def close(self) -> None:
        self.sock.close()


class SyslogHandler(logging.Handler):
    """Event log lines (python logging) to syslog: facility daemon, one datagram per record."""

    def __init__(self, host: str, port: int, fmt: str = "text") -> None:
        super().__init__()
        self.sender = SyslogSender(host, port)
        self.json = fmt == "json"
        if not self.json:
            self.setFormatter(logging.Formatter("%(name)s %(levelname)s: %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        try:
            if self.json:
                fields = {
                    "time": timestamp(record.created),
                    "logger": record.name,
                    "level": record.levelname,
                    "message": record.getMessage(),
                }
                if record.exc_info:
                    fields["exception"] = logging.Formatter().formatException(record.exc_info)
                message = json.dumps(fields, separators=(",", ":"))
            else:
                message = self.format(record)
            header = self.sender.header(FACILITY_DAEMON, severity(record.levelno), record.created)
            # One line per datagram: a traceback's newlines would read as many messages to some collectors.
            self.sender.send(header, message.replace("\n", " | ").encode("utf-8", "replace"))
        except Exception:
            self.handleError(record)

    def close(self) -> None:
        self.sender.close()
        super().close()


def configure_event_syslog(config: Config, logger_name: str = "balancer") -> None:
    """Send the event log to syslog as well when `global.log` is a syslog target (and stop when
    it no longer is). Other handlers (stderr) are kept."""
    logger = logging.getLogger(logger_name)
    for handler in [h for h in logger.handlers if isinstance(h, SyslogHandler)]:
        logger.removeHandler(handler)
        handler.close()
    target = parse_target(config.global_.log)
    if target is None:
        return
    try:
        logger.addHandler(SyslogHandler(*target, fmt=config.global_.log_format))
    except OSError as exc:
        logger.error("event log to %s: %s", config.global_.log, exc)
