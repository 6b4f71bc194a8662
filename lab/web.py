"""A lab web server: answers every GET with its own name, so a client sees which server
served it. HTTP/1.1 keep-alive, one thread per connection, a listen backlog of 4096 (the
standard library's default of 5 makes hundreds of concurrent connects take seconds).

    python -m lab.web NAME ADDRESS PORT
"""

from __future__ import annotations

import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Server(ThreadingHTTPServer):
    request_queue_size = 4096
    daemon_threads = True
    name = ""


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Buffered, flushed once per request: the head and the body leave in one send. Unbuffered
    # (the default), they are two, and a SIGKILL between them (seed 001's case f) leaves a
    # response whose head a proxy has already forwarded: its client's connection must break.
    wbufsize = 1 << 16
    disable_nagle_algorithm = True

    def do_GET(self) -> None:
        assert isinstance(self.server, Server)
        body = f"{self.server.name}\n".encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass  # one line per request would fill the log during a bench


def main(argv: list[str]) -> int:
    if len(argv) != 3:
        print("usage: python -m lab.web NAME ADDRESS PORT", file=sys.stderr)
        return 2
    server = Server((argv[1], int(argv[2])), Handler)
    server.name = argv[0]
    print(f"{argv[0]} listening on {argv[1]}:{argv[2]}", flush=True)
    server.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
