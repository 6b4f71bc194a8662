"""Custom access-log lines from an HAProxy `log-format` string (a subset of its variables).

`global.log_format` is "text" (HAProxy's httplog layout), "json", or a template such as

    %ci:%cp [%tr] %ft %b/%s %TR/%Tw/%Tc/%Tr/%Ta %ST %B %tsc %{+Q}r

compiled once at load into pieces (literal text, or a function of the record), so a line
costs one join. The variables are HAProxy's names for what an access record holds:

| variable | value |
|---|---|
| `%ci` `%cp` | client IP, port |
| `%t` `%tr` | when the request's first byte came, `dd/Mon/yyyy:HH:MM:SS.mmm` (local time) |
| `%Ts` | the same as seconds since the epoch |
| `%ft` `%f` | frontend name |
| `%b` `%s` | backend, server (`-` when none) |
| `%TR` `%Tw` `%Tc` `%Tr` `%Ta` `%Tt` | timers in ms (request, queue, connect, response, total, total); -1: never |
| `%ST` | status sent to the client (0 when none) |
| `%B` `%U` | bytes sent to the client, bytes received from it |
| `%ts` `%tsc` | termination state: 2 letters (`%tsc` adds `--` for the cookie letters HAProxy has) |
| `%r` | the request line; `%HM` `%HU` `%HP` `%HQ` `%HV` its method, URI, path, query, version |
| `%H` `%pid` | host name, worker process id |
| `%xff` | the X-Forwarded-For the client sent (balancer's own; HAProxy writes %[req.hdr(x-forwarded-for)]) |
| `%%` | a percent sign |

`%{+Q}` before a variable quotes it (`"..."`, as HAProxy's default formats do for `%r`).
Anything else after `%` (HAProxy's sample fetches `%[...]`, captures `%hr`, ...) is refused
at load with the variable named.
"""

from __future__ import annotations

import os
import re
import socket
from collections.abc import Callable

from balancer.runtime.record import LogRecord

# A piece of a line: the record and the line's time text (made once per millisecond by the
# access log) -> text.
Field = Callable[[LogRecord, str], str]

_HOST = socket.gethostname()


def _ms(value: float) -> str:
    return "-1" if value < 0 else str(int(value))


def _request_part(index: int) -> Field:
    """A part of the request line "METHOD URI HTTP/x.y" (0 method, 1 URI, 2 version)."""

    def part(r: LogRecord, _: str) -> str:
        parts = r.request_line.split(" ")
        return parts[index] if len(parts) == 3 else "-"

    return part


def _path_or_query(query: bool) -> Field:
    def piece(r: LogRecord, _: str) -> str:
        parts = r.request_line.split(" ")
        if len(parts) != 3:
            return "-"
        path, sep, rest = parts[1].partition("?")
        return (sep + rest) if query else path

    return piece


VARIABLES: dict[str, Field] = {
    "ci": lambda r, _: r.client_ip,
    "cp": lambda r, _: str(r.client_port),
    "t": lambda _, when: when,
    "tr": lambda _, when: when,
    "Ts": lambda r, _: str(int(r.start_time)),
    "ft": lambda r, _: r.frontend_name,
    "f": lambda r, _: r.frontend_name,
    "b": lambda r, _: r.backend_name,
    "s": lambda r, _: r.server_name,
    "TR": lambda r, _: _ms(r.t_request),
    "Tq": lambda r, _: _ms(r.t_request),
    "Tw": lambda r, _: _ms(r.t_queue),
    "Tc": lambda r, _: _ms(r.t_connect),
    "Tr": lambda r, _: _ms(r.t_response),
    "Ta": lambda r, _: _ms(r.t_total),
    "Tt": lambda r, _: _ms(r.t_total),
    "ST": lambda r, _: str(r.status),
    "B": lambda r, _: str(r.bytes_out),
    "U": lambda r, _: str(r.bytes_in),
    "ts": lambda r, _: r.termination,
    "tsc": lambda r, _: r.termination + "--",
    "r": lambda r, _: r.request_line or "<BADREQ>",
    "HM": _request_part(0),
    "HU": _request_part(1),
    "HV": _request_part(2),
    "HP": _path_or_query(False),
    "HQ": _path_or_query(True),
    "H": lambda _, __: _HOST,
    "pid": lambda _, __: str(os.getpid()),
    "xff": lambda r, _: r.xff or "-",
}

# %% | %{flags}name | %name (longest names first so that %tsc is not %ts + "c")
_TOKEN = re.compile(
    r"%(?:(%)|(?:\{([^}]*)\})?(" + "|".join(sorted(map(re.escape, VARIABLES), key=len, reverse=True)) + r")|(.?))"
)


class LogFormatError(ValueError):
    pass


class LogTemplate:
    """A compiled log-format string. `format(record, when)` gives the line, newline included."""

    __slots__ = ("pieces", "source")

    def __init__(self, source: str) -> None:
        """Raises LogFormatError naming the first variable it does not know."""
        self.source = source
        self.pieces: list[str | Field] = []
        position = 0
        for match in _TOKEN.finditer(source):
            self._literal(source[position : match.start()])
            position = match.end()
            percent, flags, name, _ = match.groups()
            if percent:
                self._literal("%")
            elif name is not None:
                field = VARIABLES[name]
                if flags is not None:
                    if flags != "+Q":
                        raise LogFormatError(f"unsupported log-format flags %{{{flags}}} (only +Q)")
                    field = _quoted(field)
                self.pieces.append(field)
            else:
                rest = source[match.start() : match.start() + 12]
                raise LogFormatError(f"unknown log-format variable {rest!r} (see docs/configuration.md, Access log)")
        self._literal(source[position:] + "\n")

    def _literal(self, text: str) -> None:
        if not text:
            return
        if self.pieces and isinstance(self.pieces[-1], str):
            self.pieces[-1] += text
        else:
            self.pieces.append(text)

    def format(self, record: LogRecord, when: str) -> str:
        return "".join([piece if isinstance(piece, str) else piece(record, when) for piece in self.pieces])


def _quoted(field: Field) -> Field:
    return lambda r, when: '"' + field(r, when).replace('"', '\\"') + '"'


def is_template(log_format: str) -> bool:
    """Whether a `global.log_format` value is a template rather than "text" or "json"."""
    return log_format not in ("text", "json")
