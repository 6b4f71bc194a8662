"""HTTP/2 to clients (h2c, prior knowledge), frame by frame: the h2 library as the client,
the balancer in-process, tagged HTTP/1.1 servers behind it.

What a client of an HTTP/2 frontend checks: each stream is a request that takes the path
an HTTP/1.1 request takes (rules, balancing, pooled server connections), the response
comes back as HTTP/2 (lower-case fields, no connection-specific ones), bodies flow within
the windows both ways, and the defences hold: a rapid-reset flood, a PING flood, a
malformed request, idle connections and a graceful stop.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json

import h2.errors
import h2.events
import h2.settings
from tests.integration.aclient import Client
from tests.integration.configs import frontend_port, make_config
from tests.integration.h2client import H2Client, rapid_reset_bytes
from tests.support.process import wait_until

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"


def _log_lines(path, count: int) -> list[str]:
    """The access log's lines once there are `count` of them (it is written at a pass's end)."""

    def lines():
        found = path.read_text().splitlines() if path.exists() else []
        return found if len(found) >= count else None

    return wait_until(lines, timeout=5, what=f"{count} access log lines in {path}")


def h2_config(servers, **frontend):
    return make_config(servers, frontend={"h2c": True, **frontend})


def test_a_stream_is_a_request_to_a_pooled_http11_server(run_balancer, backends):
    (s1,) = backends("s1")

    async def scenario(balancer):
        async with await H2Client.connect(frontend_port(balancer)) as client:
            first = await client.request("/echo?x=1", extra=[("cookie", "a=1"), ("cookie", "b=2"), ("x-test", "yes")])
            second = await client.request("/status/204")
            settings = client.conn.remote_settings
            data = [e for e in client.events if isinstance(e, h2.events.DataReceived) and e.stream_id == 1]
            return first, second, settings, data

    first, second, settings, data = run_balancer(h2_config([s1]), scenario)
    # A response of known length ends with its last bytes: no empty DATA frame after them.
    assert data and all(event.data for event in data) and data[-1].stream_ended is not None
    assert first.status == 200 and first.ended
    assert first.header("server-name") == "s1"
    names = [name for name, _ in first.headers]
    assert all(name == name.lower() for name in names)
    assert b"connection" not in names and b"transfer-encoding" not in names
    echoed = json.loads(first.body)
    headers = {name.lower(): value for name, value in echoed["headers"]}
    assert echoed["version"] == "HTTP/1.1" and echoed["target"] == "/echo?x=1"
    assert headers["host"] == "lb.example"  # :authority
    assert headers["cookie"] == "a=1; b=2"  # cookie fields joined (RFC 9113 8.2.3)
    assert headers["x-test"] == "yes"
    assert headers["x-forwarded-for"] == "127.0.0.1"
    assert second.status == 204 and second.body == b""
    assert settings[h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS] == 100
    assert settings[h2.settings.SettingCodes.MAX_FRAME_SIZE] == 16384
    # Both streams went over one pooled server connection.
    assert len({r.peer[1] for r in s1.requests}) == 1


def test_streams_are_multiplexed(run_balancer, backends):
    s1, s2 = backends("s1", "s2")

    async def scenario(balancer):
        loop = asyncio.get_running_loop()
        async with await H2Client.connect(frontend_port(balancer)) as client:
            t0 = loop.time()
            ids = [await client.start(f"/slow/300?i={i}") for i in range(20)]
            responses = await client.wait(*ids, timeout=10)
            return responses, loop.time() - t0

    responses, elapsed = run_balancer(h2_config([s1, s2]), scenario)
    assert [r.status for r in responses] == [200] * 20
    assert elapsed < 3, f"20 streams of 300 ms took {elapsed:.1f}s: not concurrent"
    assert {r.header("server-name") for r in responses} == {"s1", "s2"}  # balanced, per stream
    assert len(s1.requests) + len(s2.requests) == 20


def test_every_stream_of_a_busy_connection_is_its_own_request_and_log_line(run_balancer, backends, tmp_path):
    """The sessions of ended streams carry the connection's next streams (net.h2_session):
    nothing of one request may reach the next one, whether it ended well, was denied, or
    had a body."""
    s1, s2 = backends("s1", "s2")
    log = tmp_path / "access.log"
    config = make_config(
        [s1, s2],
        frontend={"h2c": True, "rule": [{"if": {"path_beg": ["/admin"]}, "action": "deny"}]},
        global_={"log": f"file:{log}", "log_format": "json"},
    )

    async def scenario(balancer):
        answers = []
        async with await H2Client.connect(frontend_port(balancer)) as client:
            for round_ in range(3):
                ids = [await client.start(f"/echo?r={round_}&i={i}", extra=[("x-i", str(i))]) for i in range(10)]
                ids.append(await client.start(f"/admin/{round_}"))
                body = f"up{round_:02d}".encode()
                ids.append(await client.start("/echo", "POST", extra=[("content-length", "4")], body=body))
                answers += await client.wait(*ids, timeout=10)
            answers.append(await client.request("/echo?last=1"))
        return answers

    answers = run_balancer(config, scenario)
    expected = []
    for round_ in range(3):
        for i, answer in enumerate(answers[12 * round_ : 12 * round_ + 10]):
            echoed = json.loads(answer.body)
            headers = {name.lower(): value for name, value in echoed["headers"]}
            assert answer.status == 200 and answer.ended
            assert (echoed["method"], echoed["target"]) == ("GET", f"/echo?r={round_}&i={i}")
            assert headers["x-i"] == str(i) and headers["x-forwarded-for"] == "127.0.0.1"
            expected.append(f"GET /echo?r={round_}&i={i} HTTP/2.0")
        denied, posted = answers[12 * round_ + 10 : 12 * round_ + 12]
        assert denied.status == 403 and denied.ended
        assert posted.status == 200 and json.loads(posted.body)["body"] == f"up{round_:02d}"
        expected += [f"GET /admin/{round_} HTTP/2.0", "POST /echo HTTP/2.0"]
    assert answers[-1].status == 200 and json.loads(answers[-1].body)["target"] == "/echo?last=1"
    expected.append("GET /echo?last=1 HTTP/2.0")
    lines = [json.loads(line) for line in _log_lines(log, len(expected))]
    assert sorted(line["request"] for line in lines) == sorted(expected)  # each stream once
    assert len(s1.requests) + len(s2.requests) == 3 * 11 + 1  # the denied ones never went


def test_a_deny_rule_answers_403_over_h2_and_no_server_is_asked(run_balancer, backends):
    (s1,) = backends("s1")
    config = h2_config([s1], rule=[{"if": {"path_beg": ["/admin"]}, "action": "deny"}])

    async def scenario(balancer):
        async with await H2Client.connect(frontend_port(balancer)) as client:
            return await client.request("/admin/x"), await client.request("/public")

    denied, allowed = run_balancer(config, scenario)
    assert denied.status == 403 and b"403" in denied.body and denied.ended
    assert allowed.status == 200
    assert [r.target for r in s1.requests] == ["/public"]


def test_request_bodies_with_and_without_a_length_and_trailers(run_balancer, backends):
    (s1,) = backends("s1")
    body = bytes(range(256)) * 4096  # 1 MiB: many windows' worth

    async def scenario(balancer):
        async with await H2Client.connect(frontend_port(balancer)) as client:
            sized = await client.request("/echo", "POST", extra=[("content-length", str(len(body)))], body=body)
            unsized = await client.request("/echo", "PUT", body=body)
            trailed = await _with_trailers(client, [("te", "trailers")])
            # With a length HTTP/1.1 has no place for trailers: the body goes, they do not.
            sized_trailed = await _with_trailers(client, [("content-length", "3")])
            return sized, unsized, trailed, sized_trailed

    sized, unsized, trailed, sized_trailed = run_balancer(h2_config([s1]), scenario)
    digest = hashlib.sha256(body).hexdigest()
    for response in (sized, unsized):
        echoed = json.loads(response.body)
        assert (echoed["body_length"], echoed["body_sha256"]) == (len(body), digest)
    sent = {name.lower(): value for name, value in s1.requests[1].headers}
    assert sent.get("transfer-encoding") == "chunked"  # no length given: chunked to the server
    echoed = json.loads(trailed.body)
    assert echoed["body"] == "abc"
    # The trailers end the chunked body, less the connection-specific one; te: trailers
    # (the client takes trailers) reaches the server.
    assert echoed["trailers"] == [["x-checksum", "42"]]
    assert ["te", "trailers"] in echoed["headers"]
    echoed = json.loads(sized_trailed.body)
    assert (echoed["body"], echoed["trailers"]) == ("abc", [])


async def _with_trailers(client, extra):
    """A POST of b"abc" whose trailer section is x-checksum: 42 and a field HTTP/2 allows in
    no trailer section the proxy forwards (te)."""
    stream_id = await client.start("/echo", "POST", extra=extra, body=b"abc", end=False)
    client.conn.send_headers(stream_id, [(b"x-checksum", b"42")], end_stream=True)
    await client.flush()
    (response,) = await client.wait(stream_id)
    return response


def test_a_chunked_response_s_trailers_end_the_stream_as_headers(run_balancer, backends):
    (s1,) = backends("s1")

    async def scenario(balancer):
        async with await H2Client.connect(frontend_port(balancer)) as client:
            trailed = await client.request("/trailers")
            plain = await client.request("/chunked/2")
            head = await client.request("/trailers", "HEAD")
            frames = [type(event).__name__ for event in client.events if getattr(event, "stream_id", 0) == 1]
            return trailed, plain, head, frames

    trailed, plain, head, frames = run_balancer(h2_config([s1]), scenario)
    assert trailed.status == 200 and trailed.body == b"part-1\npart-2\n" and trailed.ended
    # gRPC's status as the last HEADERS frame (RFC 9113 8.1), names in lower case, and the
    # Trailer field, which no trailer section may carry, dropped.
    assert trailed.trailers == [(b"x-checksum", b"42"), (b"grpc-status", b"0"), (b"grpc-message", b"all good")]
    assert frames[-2:] == ["TrailersReceived", "StreamEnded"]
    # Without trailers the stream ends on its DATA, as before; a HEAD response carries none.
    assert plain.body == b"chunk-0\nchunk-1\n" and plain.ended and plain.trailers is None
    assert head.status == 200 and head.body == b"" and head.trailers is None


def test_a_large_download_respects_the_client_window(run_balancer, backends):
    (s1,) = backends("s1")
    size = 4 << 20

    async def scenario(balancer):
        async with await H2Client.connect(frontend_port(balancer), window=65535) as client:
            client.auto_ack = False
            stream_id = await client.start(f"/bytes/{size}")
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 1.0
            # The client hands no window back: the proxy stops at one window.
            while loop.time() < deadline:
                try:
                    await client.read_some(deadline)
                except TimeoutError:
                    break
            held = len(client.responses[stream_id].body)
            client.auto_ack = True
            client.conn.acknowledge_received_data(held, stream_id)
            await client.flush()
            (response,) = await client.wait(stream_id, timeout=20)
            return held, response

    held, response = run_balancer(h2_config([s1]), scenario)
    assert held <= 65535, held
    assert response.status == 200 and len(response.body) == size


def test_rapid_reset_flood_ends_in_enhance_your_calm_and_spares_the_servers(run_balancer, backends):
    (s1,) = backends("s1")
    flood = rapid_reset_bytes(1, 20000, b"/slow/50")  # ~1 MB of HEADERS + RST_STREAM pairs

    async def scenario(balancer):
        client = await H2Client.connect(frontend_port(balancer))
        async with client:
            for start in range(0, len(flood), 65536):
                await client.send_raw(flood[start : start + 65536])
                if client.writer.is_closing():
                    break
            await client.read_until_closed()
            return client.goaway

    goaway = run_balancer(h2_config([s1]), scenario)
    assert goaway is not None and goaway.error_code == h2.errors.ErrorCodes.ENHANCE_YOUR_CALM
    assert len(s1.requests) < 200, len(s1.requests)


def test_a_stream_reset_by_the_client_cancels_its_server_request(run_balancer, backends):
    (s1,) = backends("s1")

    async def scenario(balancer):
        server = balancer.backends["web"].servers[0]
        loop = asyncio.get_running_loop()
        async with await H2Client.connect(frontend_port(balancer)) as client:
            stream_id = await client.start("/hang")
            deadline = loop.time() + 5
            while not s1.requests and loop.time() < deadline:
                await asyncio.sleep(0.01)
            busy = server.active
            client.conn.reset_stream(stream_id, h2.errors.ErrorCodes.CANCEL)
            await client.flush()
            while server.active and loop.time() < deadline:
                await asyncio.sleep(0.01)
            freed = server.active
            return busy, freed, await client.request("/after")

    busy, freed, after = run_balancer(h2_config([s1]), scenario)
    assert (busy, freed) == (1, 0)  # the hung exchange no longer holds the server
    assert after.status == 200


def test_malformed_requests_are_refused_before_any_server(run_balancer, backends):
    (s1,) = backends("s1")

    async def scenario(balancer):
        results = []
        for extra in ([("connection", "close")], [("x-bad", "a\r\nInjected: 1")]):
            client = await H2Client.connect(frontend_port(balancer))
            async with client:
                client.conn.config.validate_outbound_headers = False
                client.conn.config.normalize_outbound_headers = False
                stream_id = await client.start("/x", extra=extra)
                with contextlib.suppress(ConnectionError, TimeoutError):
                    await client.wait(stream_id)
                results.append((client.responses[stream_id].reset, client.goaway))
        return results

    for reset, goaway in run_balancer(h2_config([s1]), scenario):
        assert reset == h2.errors.ErrorCodes.PROTOCOL_ERROR or (
            goaway is not None and goaway.error_code == h2.errors.ErrorCodes.PROTOCOL_ERROR
        )
    assert s1.requests == []


def test_a_ping_flood_ends_in_enhance_your_calm(run_balancer, backends):
    (s1,) = backends("s1")

    async def scenario(balancer):
        client = await H2Client.connect(frontend_port(balancer))
        async with client:
            for i in range(1000):
                client.conn.ping(i.to_bytes(8, "big"))
            await client.flush()
            await client.read_until_closed()
            return client.goaway

    goaway = run_balancer(h2_config([s1]), scenario)
    assert goaway is not None and goaway.error_code == h2.errors.ErrorCodes.ENHANCE_YOUR_CALM


def test_an_idle_connection_gets_goaway(run_balancer, backends):
    (s1,) = backends("s1")
    config = h2_config([s1], timeouts={"http_keep_alive": "300ms"})

    async def scenario(balancer):
        loop = asyncio.get_running_loop()
        client = await H2Client.connect(frontend_port(balancer))
        async with client:
            await client.request("/")
            t0 = loop.time()
            await client.read_until_closed(timeout=5)
            return client.goaway, loop.time() - t0

    goaway, waited = run_balancer(config, scenario)
    assert goaway is not None and goaway.error_code == h2.errors.ErrorCodes.NO_ERROR
    assert 0.2 < waited < 3


def test_a_stop_sends_goaway_and_lets_streams_in_flight_finish(run_balancer, backends):
    (s1,) = backends("s1")

    async def scenario(balancer):
        client = await H2Client.connect(frontend_port(balancer))
        async with client:
            slow = await client.start("/slow/400")
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 5
            while not s1.requests and loop.time() < deadline:
                await asyncio.sleep(0.01)
            stopping = asyncio.ensure_future(balancer.stop(grace=5))
            (response,) = await client.wait(slow)
            await client.read_until_closed()
            await stopping
            return response, client.goaway

    response, goaway = run_balancer(h2_config([s1]), scenario)
    assert response.status == 200 and response.ended
    assert goaway is not None and goaway.error_code == h2.errors.ErrorCodes.NO_ERROR
    assert goaway.last_stream_id == 1


def test_without_h2c_the_preface_keeps_its_http11_answer(run_balancer, backends):
    (s1,) = backends("s1")

    async def scenario(balancer):
        async with await Client.connect(frontend_port(balancer)) as client:
            await client.send(PREFACE)
            return await client.read_response()

    response = run_balancer(make_config([s1]), scenario)
    assert response.status == 400  # as before HTTP/2 was built: llhttp refuses the preface


def test_http11_still_works_on_an_h2c_frontend(run_balancer, backends):
    (s1,) = backends("s1")

    async def scenario(balancer):
        async with await Client.connect(frontend_port(balancer)) as client:
            # Fewer bytes than the preface first, and a prefix of it: "PR" could start it.
            await client.send(b"PR")
            await asyncio.sleep(0.05)
            await client.send(b"OPFIND / HTTP/1.1\r\nHost: x\r\n\r\n")
            first = await client.read_response()
            second = await client.get("/ok", [("Host", "x")])
            return first, second

    first, second = run_balancer(h2_config([s1]), scenario)
    assert first.status == 200 and second.status == 200
    assert [r.method for r in s1.requests] == ["PROPFIND", "GET"]


def test_a_broken_preface_gets_goaway_and_an_http11_line_its_http11_answer(run_balancer, backends):
    """What h2spec 3.5 #2 sends (a first line that is no HTTP/1.x request line) is an HTTP/2
    client's broken preface: GOAWAY PROTOCOL_ERROR and a close. A request line naming
    HTTP/2.0 is still HTTP/1.1's to answer (505), as a malformed HTTP/1.1 one is (400)."""
    (s1,) = backends("s1")

    async def scenario(balancer):
        port = frontend_port(balancer)
        async with await Client.connect(port) as client:
            await client.send(b"INVALID CONNECTION PREFACE\r\n\r\n")
            refused = await client.read_until_closed()
        async with await Client.connect(port) as client:
            await client.send(b"GET / HTTP/2.0\r\nHost: x\r\n\r\n")
            version = await client.read_response()
        async with await Client.connect(port) as client:
            await client.send(b"GET / HTTP/1.1\r\nHost: x\r\nBad : h\r\n\r\n")
            malformed = await client.read_response()
        return refused, version, malformed

    refused, version, malformed = run_balancer(h2_config([s1]), scenario)
    # One frame: 8 bytes of GOAWAY (type 7) on stream 0, last stream 0, PROTOCOL_ERROR (1).
    assert refused == bytes.fromhex("000008070000000000") + (0).to_bytes(4, "big") + (1).to_bytes(4, "big")
    assert version.status == 505 and malformed.status == 400
    assert s1.requests == []


def test_limits_apply_to_a_stream_as_to_an_http11_request(run_balancer, backends):
    (s1,) = backends("s1")
    config = h2_config([s1], limits={"header_count": 10, "body": 1000})

    async def scenario(balancer):
        async with await H2Client.connect(frontend_port(balancer)) as client:
            many = await client.request("/x", extra=[(f"x-h{i}", "v") for i in range(20)])
            large = await client.request("/x", "POST", extra=[("content-length", "5000")], body=b"y" * 5000)
            fine = await client.request("/ok")
            return many, large, fine

    many, large, fine = run_balancer(config, scenario)
    assert many.status == 431 and large.status == 413
    assert fine.status == 200  # the connection carries on: a stream's error is that stream's
    assert [r.target for r in s1.requests] == ["/ok"]


def test_the_client_a_proxy_header_names_is_the_client_of_every_stream(run_balancer, backends):
    (s1,) = backends("s1")
    config = h2_config([s1], accept_proxy=True)

    async def scenario(balancer):
        header = b"PROXY TCP4 192.0.2.7 198.51.100.1 40000 80\r\n"
        async with await H2Client.connect(frontend_port(balancer), preamble=header) as client:
            return await client.request("/a"), await client.request("/b")

    first, second = run_balancer(config, scenario)
    assert first.status == second.status == 200
    assert [r.header("X-Forwarded-For") for r in s1.requests] == ["192.0.2.7", "192.0.2.7"]


def test_a_relayed_response_goes_through_what_an_http11_one_does(run_balancer, backends, tmp_path):
    """The server's response reaches the stream as events, not HTTP/1.1 bytes: response rules,
    the persistence cookie, HEAD, 204/304, a server's 100 Continue, a cut, and the answers
    the proxy makes itself (redirect, errorfile) must all still be what an HTTP/1.1 client gets."""
    (s1,) = backends("s1")
    page = tmp_path / "503.http"
    page.write_bytes(b"HTTP/1.0 503 Custom\nContent-Type: text/plain\nContent-Length: 9\n\nempty now")
    config = make_config(
        [s1],
        frontend={
            "h2c": True,
            "response_rule": [{"set_header": {"X-Frame-Options": "DENY"}, "del_header": ["Server-Name"]}],
            "rule": [
                {"if": {"path": ["/old"]}, "redirect": {"location": "/new", "code": 302}},
                {"if": {"path_beg": ["/empty"]}, "use_backend": "empty"},
            ],
        },
        backend={"cookie": {"name": "SERVERID"}},
        extra_backends=[({"name": "empty", "errorfiles": {"503": str(page)}}, [])],
    )

    async def scenario(balancer):
        async with await H2Client.connect(frontend_port(balancer)) as client:
            plain = await client.request("/")
            head = await client.request("/bytes/10", "HEAD")
            not_modified = await client.request("/status/304")
            continued = await client.request("/echo", "POST", extra=[("expect", "100-continue")], body=b"up")
            cut = await client.request("/partial")
            moved = await client.request("/old")
            empty = await client.request("/empty")
            return plain, head, not_modified, continued, cut, moved, empty

    plain, head, not_modified, continued, cut, moved, empty = run_balancer(config, scenario)
    assert plain.status == 200 and plain.body == b"s1\n" and plain.ended
    assert plain.header("x-frame-options") == "DENY" and plain.header("server-name") is None
    assert plain.header("set-cookie") == "SERVERID=s1; path=/"
    assert (head.status, head.header("content-length"), head.body, head.ended) == (200, "10", b"", True)
    assert (not_modified.status, not_modified.body, not_modified.ended) == (304, b"", True)
    assert continued.status == 200 and json.loads(continued.body)["body"] == "up"  # no 100 on HTTP/2
    assert cut.reset is not None and not cut.ended  # the server broke off: the stream is cut
    assert (moved.status, moved.header("location"), moved.ended) == (302, "/new", True)
    assert (empty.status, empty.body, empty.ended) == (503, b"empty now", True)
