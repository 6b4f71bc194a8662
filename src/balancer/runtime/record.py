"""What one access log line tells about a request (L7) or a connection (L4).

The proxy fills a record in as the exchange goes; the access log (stats.accesslog)
formats it once at the end. Timers are milliseconds, -1 when the phase never happened,
named as in HAProxy's log: request (Tq), queue (Tw), connect (Tc), response (Tr), total (Ta).
The termination state is HAProxy's two letters: who ended it (`-` normal, `C` client,
`S` server, `P` proxy, `I` internal, `c`/`s` client/server timeout) and in which phase
(`R` request, `Q` queue, `C` connect, `H` response headers, `D` data, `-` done).
"""

from __future__ import annotations


class LogRecord:
    __slots__ = (
        "backend_name",
        "bytes_in",
        "bytes_out",
        "client",
        "client_ip",
        "client_port",
        "frontend_name",
        "request_line",
        "server_name",
        "start_time",
        "status",
        "t_connect",
        "t_queue",
        "t_request",
        "t_response",
        "t_total",
        "termination",
        "xff",
    )

    def __init__(
        self, frontend_name: str, client_ip: str, client_port: int, start_time: float, client: str = ""
    ) -> None:
        """`client` is "ip:port" when the caller has it at hand (one text per connection)."""
        self.frontend_name = frontend_name
        self.client_ip = client_ip
        self.client_port = client_port
        self.client = client or f"{client_ip}:{client_port}"
        self.start_time = start_time  # wall clock, seconds since the epoch
        self.backend_name = "-"
        self.server_name = "-"
        self.t_request = -1.0
        self.t_queue = -1.0
        self.t_connect = -1.0
        self.t_response = -1.0
        self.t_total = -1.0
        self.status = 0
        self.bytes_in = 0
        self.bytes_out = 0
        self.termination = "--"
        self.request_line = ""
        self.xff = ""


class LogSink:
    """Where finished records go: stats.accesslog.AccessLog. A class rather than a callable
    so the compiled call from a connection is direct; this base drops them."""

    def log(self, record: LogRecord) -> None:
        pass
