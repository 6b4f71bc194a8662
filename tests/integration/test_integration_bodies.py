"""Message bodies through the proxy: request bodies (streamed), 100-continue, bodiless responses, 1xx."""

from __future__ import annotations

import asyncio
import hashlib
import json
import random

from tests.integration.aclient import (
    Client,
    chunked,
    open_with_buffers,
    request_bytes,
    until_stalled,
    wait_until,
)
from tests.integration.configs import frontend_port, make_config
from tests.integration.peers import RawServer, head_field, ok_response, read_head

MB = 1024 * 1024


def _payload(size: int, seed: int) -> bytes:
    return random.Random(seed).randbytes(size)  # binary, so CR/LF and NUL bytes are in it


async def _send_in_pieces(client: Client, data: bytes, piece: int = 64 * 1024) -> None:
    for start in range(0, len(data), piece):
        await client.send(data[start : start + piece])


def test_content_length_body_reaches_the_server(run_balancer, backends):
    (s1,) = backends("s1")
    body = _payload(1000, 1)

    async def scenario(balancer):
        async with await Client.connect(frontend_port(balancer)) as client:
            return await client.request("POST", "/upload", [("Content-Type", "application/octet-stream")], body)

    response = run_balancer(make_config([s1]), scenario)
    assert response.status == 200
    assert s1.requests[-1].method == "POST"
    assert s1.requests[-1].body == body


def test_chunked_body_reaches_the_server(run_balancer, backends):
    (s1,) = backends("s1")
    body = _payload(100_000, 2)

    async def scenario(balancer):
        async with await Client.connect(frontend_port(balancer)) as client:
            first = await client.request("POST", "/up", [("Transfer-Encoding", "chunked")], chunked(body, 7000))
            second = await client.get("/after")  # the chunked framing was consumed exactly
        return first, second

    first, second = run_balancer(make_config([s1]), scenario)
    assert (first.status, second.status) == (200, 200)
    assert s1.requests[0].body == body
    assert s1.requests[1].target == "/after"


def test_five_megabyte_upload_arrives_intact(run_balancer, backends):
    (s1,) = backends("s1")
    body = _payload(5 * MB, 3)
    digest = hashlib.sha256(body).hexdigest()

    async def scenario(balancer):
        async with await Client.connect(frontend_port(balancer)) as client:
            await client.send(request_bytes("POST", "/upload/cl", [("Content-Length", str(len(body)))]))
            await _send_in_pieces(client, body)
            by_length = await client.read_response("POST", timeout=20)
            await client.send(request_bytes("POST", "/upload/chunked", [("Transfer-Encoding", "chunked")]))
            await _send_in_pieces(client, chunked(body, 100_000))
            by_chunks = await client.read_response("POST", timeout=20)
        return by_length, by_chunks

    # The server's own record of each body is the check (its /echo would hold the GIL for a
    # long time turning 5 MB of binary into JSON, and starve the balancer's loop).
    responses = run_balancer(make_config([s1]), scenario)
    assert [r.status for r in responses] == [200, 200]
    assert [r.target for r in s1.requests] == ["/upload/cl", "/upload/chunked"]
    for request in s1.requests:
        assert (len(request.body), hashlib.sha256(request.body).hexdigest()) == (len(body), digest)


def test_request_body_is_streamed_not_buffered(run_balancer):
    """The server sees the first megabytes while the client still holds back the rest."""
    body = _payload(5 * MB, 4)
    received = bytearray()

    async def handler(reader, writer, index):
        head = await read_head(reader)
        length = int(head_field(head, "Content-Length") or 0)
        while len(received) < length:
            chunk = await reader.read(min(65536, length - len(received)))
            if not chunk:
                return
            received.extend(chunk)
        writer.write(ok_response(hashlib.sha256(received).hexdigest().encode()))
        await writer.drain()

    server = RawServer(handler)

    async def scenario(balancer):
        async with server.serving(), await Client.connect(frontend_port(balancer)) as client:
            await client.send(request_bytes("POST", "/stream", [("Content-Length", str(len(body)))]))
            await _send_in_pieces(client, body[: 2 * MB])
            await wait_until(
                lambda: len(received) >= MB,
                timeout=5,
                message="the server got less than 1 MB of the 2 MB sent: the proxy buffers request bodies",
            )
            await _send_in_pieces(client, body[2 * MB :])
            return await client.read_response("POST", timeout=20)

    response = run_balancer(make_config([("raw", server.address)]), scenario)
    assert response.status == 200
    assert response.body.decode() == hashlib.sha256(body).hexdigest()


def test_expect_100_continue(run_balancer, backends):
    (s1,) = backends("s1")
    body = b"hello after continue"

    async def scenario(balancer):
        async with await Client.connect(frontend_port(balancer)) as client:
            await client.send(
                request_bytes("POST", "/echo", [("Expect", "100-continue"), ("Content-Length", str(len(body)))])
            )
            interim = await client.read_response("POST", interim=True, timeout=3)
            await client.send(body)
            final = await client.read_response("POST")
        return interim, final

    interim, final = run_balancer(make_config([s1]), scenario)
    assert interim.status == 100
    assert final.status == 200
    assert all(r.status == 100 for r in final.interim)
    assert json.loads(final.body)["body"] == body.decode()
    assert s1.requests[-1].body == body


def test_head_204_and_304_have_no_body(run_balancer, backends):
    (s1,) = backends("s1")

    async def scenario(balancer):
        async with await Client.connect(frontend_port(balancer)) as client:
            head = await client.request("HEAD", "/bytes/5000")
            no_content = await client.get("/status/204")
            not_modified = await client.get("/status/304", [("If-None-Match", '"x"')])
            # any stray body byte would now sit in front of this response's status line
            after = await client.get("/after")
        return head, no_content, not_modified, after

    head, no_content, not_modified, after = run_balancer(make_config([s1]), scenario)
    assert (head.status, head.body) == (200, b"")
    assert head.header("Content-Length") == "5000"  # a HEAD answer keeps the GET's length
    assert (no_content.status, no_content.body) == (204, b"")
    assert no_content.header("Transfer-Encoding") is None
    assert (not_modified.status, not_modified.body) == (304, b"")
    assert (after.status, after.body) == (200, b"s1\n")


def test_interim_1xx_response_is_relayed_before_the_final_one(run_balancer):
    async def handler(reader, writer, index):
        while True:
            await read_head(reader)
            writer.write(b"HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload\r\n\r\n")
            await writer.drain()
            await asyncio.sleep(0.05)
            writer.write(ok_response(b"final\n"))
            await writer.drain()

    server = RawServer(handler)

    async def scenario(balancer):
        async with server.serving(), await Client.connect(frontend_port(balancer)) as client:
            first = await client.get("/")
            second = await client.get("/again")
        return first, second

    for response in run_balancer(make_config([("raw", server.address)]), scenario):
        assert [r.status for r in response.interim] == [103]
        assert response.interim[0].header("Link") == "</style.css>; rel=preload"
        assert (response.status, response.body) == (200, b"final\n")


def test_empty_lines_between_an_interim_and_the_final_response_are_skipped(run_balancer):
    """llhttp accepts CRLFs before a status line; the final head must come through intact."""

    async def handler(reader, writer, index):
        await read_head(reader)
        writer.write(b"HTTP/1.1 100 Continue\r\n\r\n\r\n\r\n" + ok_response(b"final\n"))
        await writer.drain()

    server = RawServer(handler)

    async def scenario(balancer):
        async with server.serving(), await Client.connect(frontend_port(balancer)) as client:
            return await client.get("/")

    response = run_balancer(make_config([("raw", server.address)]), scenario)
    assert (response.status, response.body) == (200, b"final\n")


def test_a_content_length_named_by_connection_still_frames_the_response(run_balancer):
    """Framing is never hop-by-hop (HAProxy keeps it): the body is framed by its length and
    the connection stays usable."""

    async def handler(reader, writer, index):
        await read_head(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nConnection: Content-Length\r\nContent-Length: 3\r\n\r\nabc")
        await writer.drain()
        # returning closes the connection

    server = RawServer(handler)

    async def scenario(balancer):
        async with server.serving(), await Client.connect(frontend_port(balancer)) as client:
            response = await client.get("/")
            again = await client.get("/")  # the next request is still served on this connection
        return response, again

    response, again = run_balancer(make_config([("raw", server.address)]), scenario)
    assert (response.status, response.body, again.status) == (200, b"abc", 200)
    assert response.header("Content-Length") == "3"
    assert "close" not in response.connection_tokens()


def test_response_delimited_by_close_is_relayed_whole(run_balancer):
    body = _payload(300_000, 5)

    async def handler(reader, writer, index):
        await read_head(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nConnection: close\r\n\r\n")
        writer.write(body)
        await writer.drain()
        # returning closes the connection: that end is the end of the body

    server = RawServer(handler)

    async def scenario(balancer):
        async with server.serving(), await Client.connect(frontend_port(balancer)) as client:
            return await client.get("/")

    response = run_balancer(make_config([("raw", server.address)]), scenario)
    assert response.status == 200
    assert response.complete
    assert response.body == body


def test_slow_client_download_holds_the_server_back(run_balancer):
    """A client that stops reading a 64 MB response: the proxy must stop reading from the
    server rather than buffer the response (the server stalls after a few MB of socket
    buffers), and deliver every byte once the client reads again."""
    size = 64 * MB
    block = b"d" * MB
    sent = 0

    async def source(reader, writer, index):
        nonlocal sent
        await read_head(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % size)
        while sent < size:
            writer.write(block)
            sent += len(block)
            await writer.drain()

    server = RawServer(source, sndbuf=64 * 1024)

    async def scenario(balancer):
        async with server.serving():
            reader, writer = await open_with_buffers(frontend_port(balancer), rcvbuf=64 * 1024)
            try:
                writer.write(request_bytes("GET", "/download"))
                stalled_at = await until_stalled(lambda: sent)
                head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
                total = 0
                while total < size:
                    chunk = await asyncio.wait_for(reader.read(MB), 10)
                    assert chunk, f"connection closed after {total} body bytes"
                    total += len(chunk)
                return stalled_at, head, total
            finally:
                writer.close()

    stalled_at, head, total = run_balancer(make_config([("raw", server.address)]), scenario, timeout=60)
    assert stalled_at < 40 * MB, f"the server could send {stalled_at / MB:.0f} MB to a client reading nothing"
    assert head.startswith(b"HTTP/1.1 200 ")
    assert total == size


def test_slow_server_upload_holds_the_client_back(run_balancer):
    """A server that stops reading a 64 MB request body: the proxy must stop reading from the
    client, then pass every byte on once the server reads again."""
    size = 64 * MB
    block = b"u" * MB
    reading = asyncio.Event()
    received = 0

    async def sink(reader, writer, index):
        nonlocal received
        await read_head(reader)
        await reading.wait()
        while received < size:
            chunk = await reader.read(MB)
            if not chunk:
                return
            received += len(chunk)
        writer.write(ok_response())
        await writer.drain()

    server = RawServer(sink, rcvbuf=64 * 1024)

    async def scenario(balancer):
        async with server.serving():
            reader, writer = await open_with_buffers(frontend_port(balancer), sndbuf=64 * 1024)
            sent = 0

            async def pump():
                nonlocal sent
                writer.write(request_bytes("POST", "/upload", [("Content-Length", str(size))]))
                while sent < size:
                    writer.write(block)
                    sent += len(block)
                    await writer.drain()

            task = asyncio.create_task(pump())
            try:
                stalled_at = await until_stalled(lambda: sent)
                reading.set()
                await asyncio.wait_for(task, 20)
                client = Client(reader, writer)
                return stalled_at, await client.read_response("POST", timeout=20)
            finally:
                task.cancel()
                writer.close()

    stalled_at, response = run_balancer(make_config([("raw", server.address)]), scenario, timeout=60)
    assert stalled_at < 40 * MB, f"the client could send {stalled_at / MB:.0f} MB to a server reading nothing"
    assert response.status == 200
    assert received == size


def _buffered_config(server_address: str) -> str:
    return make_config([("raw", server_address)], frontend={"buffer_request": True})


async def _echo_body(reader, writer, index):
    head = await read_head(reader)
    lines = head.split(b"\r\n")
    length = next(int(line.split(b":")[1]) for line in lines if line.lower().startswith(b"content-length"))
    body = await reader.readexactly(length)
    expect = [line for line in lines if line.lower().startswith(b"expect")]
    writer.write(ok_response(b"%d %d" % (len(body), len(expect))))
    await writer.drain()


def test_buffer_request_reads_the_whole_body_before_choosing_a_server(run_balancer):
    """PLB's idea (seed 002): a slow upload costs no server connection while it crawls in."""
    server = RawServer(_echo_body)

    async def scenario(balancer):
        frontend = balancer.frontends["www"]
        async with server.serving(), await Client.connect(frontend_port(balancer)) as client:
            await client.send(b"POST /up HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n12345")

            def half_read() -> bool:
                return any(s.parsing is not None and s.parsing.body_bytes == 5 for s in frontend.sessions)

            await wait_until(half_read, message="the proxy never read the first half of the body")
            before = (server.connections, frontend.requests)
            await client.send(b"67890")
            response = await client.read_response("POST")
            return before, response

    before, response = run_balancer(_buffered_config(server.address), scenario)
    assert before == (0, 0), "a server was chosen before the body was whole"
    assert (response.status, response.body) == (200, b"10 0")


def test_buffer_request_answers_expect_100_continue_itself(run_balancer):
    server = RawServer(_echo_body)

    async def scenario(balancer):
        async with server.serving(), await Client.connect(frontend_port(balancer)) as client:
            await client.send(b"POST /up HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 4\r\n\r\n")
            interim = await client.read_response("POST", interim=True)
            await client.send(b"body")
            return interim, await client.read_response("POST")

    interim, response = run_balancer(_buffered_config(server.address), scenario)
    assert interim.status == 100
    assert (response.status, response.body) == (200, b"4 0"), "the server must get the body without Expect"


def test_trailers_cross_the_proxy_both_ways_over_http11(run_balancer, backends):
    (s1,) = backends("s1")
    body = chunked(b"abc", 2)[: -len(b"0\r\n\r\n")] + b"0\r\nX-Sum: 7\r\nTE: trailers\r\n\r\n"

    async def scenario(balancer):
        async with await Client.connect(frontend_port(balancer)) as client:
            upload = await client.request("POST", "/echo", [("Transfer-Encoding", "chunked")], body)
            download = await client.get("/trailers")
            after = await client.get("/after")  # the framing of both was consumed exactly
        return upload, download, after

    upload, download, after = run_balancer(make_config([s1]), scenario)
    echoed = json.loads(upload.body)
    assert (echoed["body"], echoed["trailers"]) == ("abc", [["X-Sum", "7"]])  # hop-by-hop TE dropped
    assert download.body == b"part-1\npart-2\n"
    # As the server sent them, but for Trailer, which no trailer section may carry.
    assert download.trailers == [("X-Checksum", "42"), ("Grpc-Status", "0"), ("Grpc-Message", "all good")]
    assert (after.status, after.body) == (200, b"s1\n")


def test_a_trailer_section_read_in_pieces_arrives_whole(run_balancer):
    end = b"0\r\nGrpc-Status: 0\r\nGrpc-Message: " + b"m" * 3000 + b"\r\n\r\n"

    async def handler(reader, writer, index):
        await read_head(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n")
        for start in range(0, len(end), 700):  # several reads of the proxy, most likely
            writer.write(end[start : start + 700])
            await writer.drain()
            await asyncio.sleep(0.005)
        await read_head(reader)

    server = RawServer(handler)

    async def scenario(balancer):
        async with server.serving(), await Client.connect(frontend_port(balancer)) as client:
            return await client.get("/")

    response = run_balancer(make_config([("raw", server.address)]), scenario)
    assert response.body == b"abc"
    assert response.trailers == [("Grpc-Status", "0"), ("Grpc-Message", "m" * 3000)]
