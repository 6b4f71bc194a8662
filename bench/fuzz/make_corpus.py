"""Write the seed corpus of bench/fuzz: realistic requests for request_path.py (plain,
keep-alive pipelined, chunked, auth, redirects, the rules' paths, and every case of
tests/integration/test_integration_desync_corpus.py) and inputs for proto_targets.py.

Each request_path seed starts with the control byte request_path.split reads: 0x00 (one
read, no half-close), 0x01 (one read, then a half-close) or 0x36 (four reads).
Run from the worktree: `python bench/fuzz/make_corpus.py` (rewrites the folder).
"""

from __future__ import annotations

import base64
import hashlib
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # for `tests`

from tests.integration.test_integration_desync_corpus import CASES

HERE = Path(__file__).resolve().parent
AUTH = base64.b64encode(b"ann:s3cret")

REQUESTS = [
    b"GET / HTTP/1.1\r\nHost: www.example.com\r\nUser-Agent: curl/8.5\r\nAccept: */*\r\n\r\n",
    b"GET /index.html HTTP/1.0\r\n\r\n",
    b"GET /a HTTP/1.1\r\nHost: x\r\n\r\nGET /b HTTP/1.1\r\nHost: x\r\n\r\n"
    b"GET /c HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    b"POST /upload HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nX-Debug: 1\r\n\r\n"
    b"5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\nTrailer: t\r\n\r\n",
    b"PUT /item HTTP/1.1\r\nHost: x\r\nContent-Length: 11\r\nCookie2: a\r\n\r\nhello world",
    b"POST /form HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabcGET /next HTTP/1.1\r\nHost: x\r\n\r\n",
    b"GET /admin/ HTTP/1.1\r\nHost: x\r\n\r\n",
    b"GET /admin/users HTTP/1.1\r\nHost: x\r\nAuthorization: Basic " + AUTH + b"\r\n\r\n",
    b"GET /admin/users HTTP/1.1\r\nHost: x\r\nAuthorization: Basic Ym9iOg==\r\n\r\n",
    b"GET /x HTTP/1.1\r\nHost: x\r\nX-Block: yes\r\n\r\n",
    b"GET /page?q=1 HTTP/1.1\r\nHost: old.example.com:8080\r\n\r\n",
    b"GET /doc.http HTTP/1.1\r\nHost: x\r\n\r\n",
    b"GET /api/v1/users HTTP/1.1\r\nHost: x\r\nAccept: application/json\r\nX-User: ann\r\n\r\n",
    b"GET /api/v1/users HTTP/1.1\r\nHost: x\r\nAccept: application/json\r\nX-Api-Key: bad\r\n\r\n",
    b"GET /items?id=42&x=1 HTTP/1.1\r\nHost: x\r\n\r\n",
    b"GET /s/123 HTTP/1.1\r\nHost: x\r\nCookie: sid=abc; SERVERID=s2\r\n\r\n",
    b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n",
    b"GET http://other.example.com/abs HTTP/1.1\r\nHost: x\r\n\r\n",
    b"GET /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
    b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n",
    b"OPTIONS * HTTP/1.1\r\nHost: x\r\n\r\n",
    b"POST /e HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 4\r\n\r\nbody",
    b"GET / HTTP/1.1\r\nHost: x\r\nX-Forwarded-For: 10.0.0.1\r\nX-Forwarded-Proto: https\r\n\r\n",
    b"HEAD / HTTP/1.1\r\nHost: x\r\nConnection: keep-alive, X-Drop\r\nX-Drop: 1\r\n\r\n",
]

PROTO = [
    b"\x00PROXY TCP4 192.0.2.1 198.51.100.2 56324 443\r\nGET / HTTP/1.1\r\n",
    b"\x00PROXY TCP6 2001:db8::1 2001:db8::2 1 2\r\n",
    b"\x00PROXY UNKNOWN\r\n",
    b"\x00\r\n\r\n\x00\r\nQUIT\n\x21\x11\x00\x0c\xc0\x00\x02\x01\xc6\x33\x64\x02\xdb\xfc\x01\xbb",
    b"\x01HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: keep-alive\r\n\r\nhello",
    b"\x01HTTP/1.1 204 No Content\r\nTransfer-Encoding: chunked\r\n\r\n",
    b"\x01HTTP/1.0 302 Found\r\nLocation: /x\r\nSet-Cookie: a=b\r\n\r\n",
    b"\x02HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/html\r\nCache-Control: no-cache\r\n\r\n<h1>down</h1>",
    b"\x02HTTP/1.0 403 Forbidden\n\nno",
    b"\x03Basic " + AUTH,
    b"\x03basic  Ym9iOg==",
    b"\x04up 75%\n",
    b"\x04drain maxconn:30 weight:50\n",
    b"\x04down#broken\n",
]


def write(folder: Path, seeds: list[bytes]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.iterdir():
        old.unlink()
    for seed in seeds:
        (folder / hashlib.sha1(seed).hexdigest()).write_bytes(seed)


def main() -> None:
    http = [b"\x00" + r for r in REQUESTS] + [b"\x01" + r for r in REQUESTS[:4]]
    http += [b"\x36" + r for r in REQUESTS[2:6]]
    http += [b"\x00" + case.data for case in CASES]
    write(HERE / "corpus" / "http", http)
    write(HERE / "corpus" / "proto", PROTO)
    print(f"{len(http)} request seeds, {len(PROTO)} proto seeds")


if __name__ == "__main__":
    main()
