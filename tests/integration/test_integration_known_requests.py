"""Request heads a frontend has seen before: the same bytes read again are the same request.

A read that holds exactly one bodiless HTTP/1.1 keep-alive request head is remembered by
its frontend (net.http_session KnownRequest); the same bytes read again, on any connection
of that frontend, make the request without the parser. Nothing a client or a server sees
may change: each repetition is routed by the rules, rewritten, forwarded with
X-Forwarded-For and logged exactly as the first (parsed) one was, and every read that is
not exactly one such head (a head in pieces, a pipelined pair, bytes in the middle of a
message, another frontend's limits) still goes through the parser.

Each scenario sends one head per write and waits for its response before the next, so on
loopback each write is one read by the balancer: the repetitions after the first are the
ones served from the memo. A few scenarios also look at the frontend's memo itself
(`known_requests`), only to check they exercise what they are about.
"""

from __future__ import annotations

import asyncio
import itertools
import json
from pathlib import Path
from typing import Any

from tests.integration.aclient import Client, Response, request_bytes, wait_until
from tests.integration.configs import frontend_port, make_config
from tests.integration.peers import RawServer, ok_response, read_head
from tests.support.process import wait_until as wait_until_blocking

from balancer.net.http_session import KNOWN_MAX, KNOWN_PAUSE

ROUNDS = 8

PLAIN = b"GET /echo/plain?x=1 HTTP/1.1\r\nHost: test.local\r\nUser-Agent: repeat/1\r\nAccept: */*\r\n\r\n"
FORWARDED = b"GET /echo/forwarded HTTP/1.1\r\nHost: test.local\r\nX-Forwarded-For: 203.0.113.7\r\n\r\n"


def _memo(balancer: Any, frontend: str = "www") -> dict[bytes, Any]:
    """The request heads `frontend` remembers, by the bytes of the read that held each."""
    return balancer.frontends[frontend].known_requests


def _sessions(balancer: Any, frontend: str = "www") -> list[Any]:
    """The frontend's live client connections (net.http_session.HttpSession)."""
    return list(balancer.frontends[frontend].sessions)


async def _has_read(balancer: Any, requests: int = 1) -> None:
    """Wait until the one client connection of "www" holds `requests` requests, begun or
    whole: the balancer has read what was sent so far, so what is sent next is another read."""
    await wait_until(
        lambda: any(len(session.queue) >= requests for session in _sessions(balancer)),
        message=f"the balancer did not read {requests} request(s)",
    )


async def _connect_from(port: int, source_ip: str) -> Client:
    """A client connection to 127.0.0.1:`port` from another loopback address."""
    reader, writer = await asyncio.wait_for(
        asyncio.open_connection("127.0.0.1", port, local_addr=(source_ip, 0), limit=1 << 20), timeout=5
    )
    return Client(reader, writer)


async def _send(client: Client, head: bytes, method: str = "GET") -> Response:
    """One write, one response."""
    await client.send(head)
    return await client.read_response(method)


async def _repeat(port: int, *heads: bytes, after: str = "") -> list[tuple[bytes, Response]]:
    """Each of `heads` ROUNDS times over, one write and one response each, on one connection
    and then on a second (the memo is the frontend's, not a connection's); with `after`, a
    GET of it ends each connection, to show the connection is still in step."""
    seen: list[tuple[bytes, Response]] = []
    for _ in range(2):
        async with await Client.connect(port) as client:
            for _ in range(ROUNDS):
                for head in heads:
                    seen.append((head, await _send(client, head)))
            if after:
                seen.append((b"", await client.get(after)))
    return seen


def _echoed(response: Response) -> dict[str, Any]:
    assert response.status == 200, response
    return json.loads(response.body)


def _values(echo: dict[str, Any], name: str) -> list[str]:
    """The values of header `name` the server received, as /echo reports them."""
    return [value for key, value in echo["headers"] if key.lower() == name.lower()]


def _two_frontend_config(server_address: str) -> str:
    """Frontend "www" with default limits and "small" with tight ones and no forwardfor,
    both in front of the same backend: the same head means different things to each."""
    return f"""[global]
log = "none"

[[frontend]]
name = "www"
bind = ["127.0.0.1:0"]
mode = "http"
default_backend = "web"

[[frontend]]
name = "small"
bind = ["127.0.0.1:0"]
mode = "http"
default_backend = "web"
forwardfor = false
limits = {{ header_count = 3, request_line = 40 }}

[[backend]]
name = "web"
mode = "http"

[[backend.server]]
name = "s1"
address = "{server_address}"
"""


# -- the same head again and again --------------------------------------------------------


def test_a_repeated_head_is_forwarded_the_same_every_time_on_every_connection(run_balancer, backends):
    s1, s2 = backends("s1", "s2")
    heads = [PLAIN, FORWARDED]

    async def scenario(balancer):
        port = frontend_port(balancer)
        seen: list[tuple[bytes, Response]] = []
        remembered = []
        for _ in range(2):  # a second connection: the memo is the frontend's, not the connection's
            async with await Client.connect(port) as client:
                for _ in range(ROUNDS):
                    for head in heads:
                        response = await _send(client, head)
                        seen.append((head, response))
                        remembered.append(head in _memo(balancer))
        return seen, remembered

    seen, remembered = run_balancer(make_config([s1, s2]), scenario)
    assert all(remembered), "the scenario is about remembered heads: each was remembered once answered"
    assert len(s1.requests) + len(s2.requests) == len(seen) == 2 * 2 * ROUNDS
    first_echo: dict[bytes, dict[str, Any]] = {}
    for head, response in seen:
        first_echo.setdefault(head, _echoed(response))  # the parsed one; the others came from the memo
    for head, response in seen:
        assert "close" not in response.connection_tokens()
        echo = _echoed(response)
        assert echo["server"] == response.header("Server-Name")
        assert (echo["method"], echo["version"]) == ("GET", "HTTP/1.1")
        assert echo["target"] == head.split(b" ")[1].decode()
        assert echo["headers"] == first_echo[head]["headers"], "every repetition reaches the server alike"
        assert _values(echo, "Host") == ["test.local"]
        assert _values(echo, "X-Forwarded-Proto") == ["http"]
        if head is FORWARDED:
            assert _values(echo, "X-Forwarded-For") == ["203.0.113.7, 127.0.0.1"], "client IP appended once"
        else:
            assert _values(echo, "X-Forwarded-For") == ["127.0.0.1"]
            assert _values(echo, "User-Agent") == ["repeat/1"]
            assert _values(echo, "Accept") == ["*/*"]
    names = [response.header("Server-Name") for _, response in seen]
    assert set(names) == {"s1", "s2"}
    assert all(a != b for a, b in itertools.pairwise(names)), f"round robin stopped alternating: {names}"


def test_hop_by_hop_headers_of_a_repeated_head_never_reach_the_server(run_balancer, backends):
    (s1,) = backends("s1")
    head = (
        b"GET /echo/hop HTTP/1.1\r\nHost: test.local\r\nConnection: keep-alive, X-Hop-Secret\r\n"
        b"X-Hop-Secret: for the proxy only\r\nKeep-Alive: timeout=30\r\nX-End-To-End: kept\r\n\r\n"
    )

    async def scenario(balancer):
        async with await Client.connect(frontend_port(balancer)) as client:
            responses = [await _send(client, head) for _ in range(ROUNDS)]
        return responses, head in _memo(balancer)

    responses, remembered = run_balancer(make_config([s1]), scenario)
    assert remembered
    for response in responses:
        echo = _echoed(response)
        names = {name.lower() for name, _ in echo["headers"]}
        assert not names & {"x-hop-secret", "keep-alive"}, f"hop-by-hop headers forwarded: {echo['headers']}"
        tokens = {t.strip().lower() for v in _values(echo, "Connection") for t in v.split(",")}
        assert tokens <= {"keep-alive", "close"}
        assert _values(echo, "X-End-To-End") == ["kept"]
    assert len(s1.requests) == ROUNDS


def test_a_repeated_head_request_gets_a_bodiless_response_every_time(run_balancer, backends):
    (s1,) = backends("s1")
    head = b"HEAD /bytes/100 HTTP/1.1\r\nHost: test.local\r\n\r\n"

    async def scenario(balancer):
        async with await Client.connect(frontend_port(balancer)) as client:
            responses = [await _send(client, head, "HEAD") for _ in range(ROUNDS)]
            after = await client.get("/echo/after")  # a body left over would show up here
        return responses, after, head in _memo(balancer)

    responses, after, remembered = run_balancer(make_config([s1]), scenario)
    assert remembered
    assert [(r.status, r.header("Content-Length"), r.body) for r in responses] == [(200, "100", b"")] * ROUNDS
    assert _echoed(after)["target"] == "/echo/after"
    assert [r.method for r in s1.requests] == ["HEAD"] * ROUNDS + ["GET"]


def test_a_repeated_head_that_arrives_while_the_previous_one_is_in_flight_waits_its_turn(run_balancer):
    # The server holds its second request until the next copy of the same head is read on
    # the same connection: that copy is pipelined, and it must go out only after the answer.
    answered = 0
    release = asyncio.Event()

    async def handler(reader, writer, index):
        nonlocal answered
        while True:
            await read_head(reader)
            if answered == 1:
                await asyncio.wait_for(release.wait(), 5)
            writer.write(ok_response(b"answer %d\n" % answered))
            answered += 1
            await writer.drain()

    server = RawServer(handler)
    head = b"GET /in-flight HTTP/1.1\r\nHost: test.local\r\n\r\n"

    async def scenario(balancer):
        async with server.serving(), await Client.connect(frontend_port(balancer)) as client:
            warm = await _send(client, head)  # remembered now
            assert head in _memo(balancer)
            await client.send(head)
            await _has_read(balancer, 1)
            await client.send(head)  # read while the first copy is at the server
            await _has_read(balancer, 2)
            release.set()
            responses = [await client.read_response() for _ in range(2)]
            last = await _send(client, head)
        return [warm, *responses, last]

    responses = run_balancer(make_config([("raw", server.address)]), scenario)
    assert [(r.status, r.body) for r in responses] == [(200, b"answer %d\n" % i) for i in range(4)]


def test_a_head_known_from_one_client_is_forwarded_and_judged_for_the_next_client(run_balancer, backends):
    # The memo is shared by every client of the frontend: what depends on the client (its
    # address in X-Forwarded-For, src rules) is the connection's, never the remembered head's.
    (s1,) = backends("s1")
    config = make_config([s1], frontend={"rule": [{"if": {"src": ["127.0.0.3/32"]}, "action": "deny"}]})

    async def scenario(balancer):
        port = frontend_port(balancer)
        seen = []
        for source in ("127.0.0.1", "127.0.0.2", "127.0.0.1"):
            async with await _connect_from(port, source) as client:
                seen += [(source, await _send(client, FORWARDED)) for _ in range(3)]
        assert FORWARDED in _memo(balancer)
        async with await _connect_from(port, "127.0.0.3") as client:
            denied = await _send(client, FORWARDED)
        return seen, denied

    seen, denied = run_balancer(config, scenario)
    for source, response in seen:
        assert _values(_echoed(response), "X-Forwarded-For") == [f"203.0.113.7, {source}"]
    assert denied.status == 403
    assert len(s1.requests) == 9, "the denied client reached no server"


def test_a_repeated_post_with_an_empty_body_is_forwarded_every_time(run_balancer, backends):
    (s1,) = backends("s1")
    head = b"POST /echo/empty HTTP/1.1\r\nHost: test.local\r\nContent-Length: 0\r\n\r\n"

    async def scenario(balancer):
        async with await Client.connect(frontend_port(balancer)) as client:
            responses = [await _send(client, head) for _ in range(ROUNDS)]
            after = await client.get("/echo/after")
        return responses, after, head in _memo(balancer)

    responses, after, remembered = run_balancer(make_config([s1]), scenario)
    assert remembered
    for response in responses:
        echo = _echoed(response)
        assert (echo["method"], echo["target"], echo["body_length"]) == ("POST", "/echo/empty", 0)
        assert _values(echo, "Content-Length") == ["0"]
    assert _echoed(after)["target"] == "/echo/after"
    assert [r.method for r in s1.requests] == ["POST"] * ROUNDS + ["GET"]


def test_many_different_heads_and_oversized_ones_are_all_answered_right(run_balancer, backends):
    # More distinct heads than the memo holds (it is emptied when full), then the first ones
    # again, and a head too large to be remembered, repeated.
    (s1,) = backends("s1")
    distinct = [request_bytes("GET", f"/echo/{i}") for i in range(300)]
    large = request_bytes("GET", "/echo/large", [("X-Filler", "f" * 1500)])

    async def scenario(balancer):
        async with await Client.connect(frontend_port(balancer)) as client:
            first = [await _send(client, head) for head in distinct]
            again = [await _send(client, head) for head in distinct[:20]]
            big = [await _send(client, large) for _ in range(3)]
        return first, again, big, len(_memo(balancer)), large in _memo(balancer)

    first, again, big, memo_size, large_remembered = run_balancer(make_config([s1]), scenario)
    assert [_echoed(r)["target"] for r in first] == [f"/echo/{i}" for i in range(300)]
    assert [_echoed(r)["target"] for r in again] == [f"/echo/{i}" for i in range(20)]
    for response in big:
        echo = _echoed(response)
        assert echo["target"] == "/echo/large"
        assert _values(echo, "X-Filler") == ["f" * 1500]
    assert memo_size <= 256
    assert not large_remembered
    assert len(s1.requests) == 323


def test_a_frontend_whose_heads_all_differ_stops_remembering_them_for_a_while(run_balancer, backends):
    """A whole memo of heads that were never read again (browsers: every head differs) costs
    a hash and an entry per read for nothing: the frontend stops looking reads up for
    KNOWN_PAUSE reads, answers them all the same, and remembers heads again after that."""
    (s1,) = backends("s1")
    distinct = [request_bytes("GET", f"/echo/{i}") for i in range(KNOWN_MAX + 1)]
    repeated = request_bytes("GET", "/echo/repeated")

    async def scenario(balancer):
        frontend = balancer.frontends["www"]
        async with await Client.connect(frontend_port(balancer)) as client:
            first = [await _send(client, head) for head in distinct]
            paused = frontend.known_pause
            during = [await _send(client, repeated) for _ in range(3)]
            memo_during = len(_memo(balancer))
            frontend.known_pause = 1  # as after KNOWN_PAUSE - 1 more reads
            after = [await _send(client, repeated) for _ in range(4)]
            remembered = type(_memo(balancer).get(repeated)).__name__
        return first, paused, during, memo_during, after, remembered

    first, paused, during, memo_during, after, remembered = run_balancer(make_config([s1]), scenario)
    assert [_echoed(r)["target"] for r in first] == [f"/echo/{i}" for i in range(KNOWN_MAX + 1)]
    assert paused == KNOWN_PAUSE, "paused once the memo was full of heads never read again"
    assert memo_during == 0
    assert [_echoed(r)["target"] for r in during + after] == ["/echo/repeated"] * 7
    assert remembered == "KnownRequest", "remembered again once the pause is over"
    assert len(s1.requests) == KNOWN_MAX + 1 + 7


# -- rules -------------------------------------------------------------------------------


def test_header_rewrite_rules_apply_afresh_to_every_repetition_of_a_head(run_balancer, backends):
    # The second rule deletes the header the first one tests: were the remembered head
    # rewritten in place, the next repetition would match the first rule instead.
    (s1,) = backends("s1")
    rules = [
        {"unless": {"hdr": {"X-Debug": ["1"]}}, "set_header": {"X-No-Debug": "yes"}},
        {"if": {"hdr": {"X-Debug": ["1"]}}, "set_header": {"X-Was-Debug": "yes"}, "del_header": ["X-Debug"]},
        {"set_header": {"X-Env": "test"}},
    ]
    head = b"GET /echo/rw HTTP/1.1\r\nHost: test.local\r\nX-Debug: 1\r\nX-Env: prod\r\nX-Keep: yes\r\n\r\n"

    async def scenario(balancer):
        seen = await _repeat(frontend_port(balancer), head)
        return [response for _, response in seen], head in _memo(balancer)

    responses, remembered = run_balancer(make_config([s1], frontend={"rule": rules}), scenario)
    assert remembered
    assert len(responses) == 2 * ROUNDS
    for response in responses:
        echo = _echoed(response)
        assert _values(echo, "X-Debug") == []
        assert _values(echo, "X-Was-Debug") == ["yes"]
        assert _values(echo, "X-No-Debug") == []
        assert _values(echo, "X-Env") == ["test"]
        assert _values(echo, "X-Keep") == ["yes"]
        assert _values(echo, "X-Forwarded-For") == ["127.0.0.1"]
    assert len(s1.requests) == 2 * ROUNDS


def test_a_deny_rule_refuses_every_repetition_of_a_head(run_balancer, backends):
    (s1,) = backends("s1")
    config = make_config([s1], frontend={"rule": [{"if": {"path_beg": ["/admin"]}, "action": "deny"}]})
    denied = b"GET /admin/users HTTP/1.1\r\nHost: test.local\r\n\r\n"
    allowed = b"GET /public HTTP/1.1\r\nHost: test.local\r\n\r\n"

    async def scenario(balancer):
        port = frontend_port(balancer)
        results = []
        for _ in range(ROUNDS):
            async with await Client.connect(port) as client:
                assert (await _send(client, allowed)).status == 200  # the connection's first read is known
                response = await _send(client, denied)
                results.append((response, await client.read_until_closed(timeout=3)))
        return results

    results = run_balancer(config, scenario)
    for response, rest in results:
        assert response.status == 403, response
        assert b"<" in response.body
        assert rest == b""
    assert [r.target for r in s1.requests] == ["/public"] * ROUNDS


def test_a_redirect_rule_redirects_every_repetition_of_a_head(run_balancer, backends):
    (s1,) = backends("s1")
    rule = {"if": {"path": ["/old"]}, "redirect": {"location": "/new", "code": 302}}
    head = b"GET /old HTTP/1.1\r\nHost: test.local\r\n\r\n"

    async def scenario(balancer):
        seen = await _repeat(frontend_port(balancer), head, after="/after")
        return [response for _, response in seen], head in _memo(balancer)

    responses, remembered = run_balancer(make_config([s1], frontend={"rule": [rule]}), scenario)
    assert remembered
    redirects = [r for r in responses if r.status != 200]
    assert len(redirects) == 2 * ROUNDS
    for response in redirects:
        assert response.status == 302
        assert response.header("Location") == "/new"
        assert "close" not in response.connection_tokens()
    assert [r.target for r in s1.requests] == ["/after", "/after"]


def test_a_use_backend_rule_routes_every_repetition_of_a_head(run_balancer, backends):
    web, blog = backends("web1", "blog1")
    config = make_config(
        [web],
        frontend={"rule": [{"if": {"path_beg": ["/blog"]}, "use_backend": "blog"}]},
        extra_backends=[({"name": "blog"}, [blog])],
    )
    to_blog = b"GET /blog/post HTTP/1.1\r\nHost: test.local\r\n\r\n"
    to_web = b"GET /home HTTP/1.1\r\nHost: test.local\r\n\r\n"

    async def scenario(balancer):
        seen = await _repeat(frontend_port(balancer), to_blog, to_web)
        names = [(head, response.header("Server-Name")) for head, response in seen]
        return names, to_blog in _memo(balancer) and to_web in _memo(balancer)

    names, remembered = run_balancer(config, scenario)
    assert remembered
    assert all(name == ("blog1" if head is to_blog else "web1") for head, name in names), names
    assert blog.paths == ["/blog/post"] * 2 * ROUNDS
    assert web.paths == ["/home"] * 2 * ROUNDS


# -- reads that are not one whole head ------------------------------------------------------


def test_a_head_split_over_two_reads_is_answered_and_its_tail_alone_is_refused(run_balancer, backends):
    (s1,) = backends("s1")
    start, tail = b"GET /echo/x HTTP/1.1\r\nHo", b"st: a\r\n\r\n"

    async def scenario(balancer):
        port = frontend_port(balancer)
        split = []
        for _ in range(3):
            async with await Client.connect(port) as client:
                await client.send(start)
                await _has_read(balancer)  # the request has begun: the tail is another read
                await client.send(tail)
                split.append(await client.read_response())
        tail_known = tail in _memo(balancer)
        refused = []
        for _ in range(2):
            async with await Client.connect(port) as client:
                await client.send(tail)
                refused.append((await client.read_response(), await client.read_until_closed(timeout=3)))
        return split, tail_known, refused

    split, tail_known, refused = run_balancer(make_config([s1]), scenario)
    for response in split:
        echo = _echoed(response)
        assert echo["target"] == "/echo/x"
        assert _values(echo, "Host") == ["a"]
    assert not tail_known, "the end of a head is no head"
    for response, rest in refused:
        assert response.status == 400, response
        assert rest == b""
    assert len(s1.requests) == 3


def test_a_known_head_read_inside_another_head_is_part_of_that_head(run_balancer, backends):
    # The second read is byte for byte a head the frontend knows, but it arrives while the
    # parser is inside a header value: it is that value (and the rest of the same head).
    (s1,) = backends("s1")
    known = b"GET /echo/known HTTP/1.1\r\nHost: test.local\r\n\r\n"
    start = b"GET /echo/outer HTTP/1.1\r\nX-Carrier: "

    async def scenario(balancer):
        async with await Client.connect(frontend_port(balancer)) as client:
            warm = await _send(client, known)
            assert known in _memo(balancer)
        async with await Client.connect(frontend_port(balancer)) as client:
            await client.send(start)
            await _has_read(balancer)
            await client.send(known)
            outer = await client.read_response()
            after = await _send(client, known)
        return warm, outer, after

    warm, outer, after = run_balancer(make_config([s1]), scenario)
    assert _echoed(warm)["target"] == "/echo/known"
    echo = _echoed(outer)
    assert echo["target"] == "/echo/outer"
    assert _values(echo, "X-Carrier") == ["GET /echo/known HTTP/1.1"]
    assert _values(echo, "Host") == ["test.local"]
    assert _echoed(after)["target"] == "/echo/known"
    assert [r.target for r in s1.requests] == ["/echo/known", "/echo/outer", "/echo/known"]


def test_a_body_identical_to_a_known_head_is_forwarded_as_a_body(run_balancer, backends):
    (s1,) = backends("s1")
    known = b"GET /echo/known HTTP/1.1\r\nHost: test.local\r\n\r\n"
    post = b"POST /echo/upload HTTP/1.1\r\nHost: test.local\r\nContent-Length: %d\r\n\r\n" % len(known)

    async def scenario(balancer):
        async with await Client.connect(frontend_port(balancer)) as client:
            warm = await _send(client, known)
            assert known in _memo(balancer)
            await client.send(post)
            await wait_until(  # the POST's head is read: what follows is another read, its body
                lambda: any(s.queue and s.queue[0].head_done for s in _sessions(balancer)),
                message="the POST head was not read",
            )
            await client.send(known)
            upload = await client.read_response()
            after = await _send(client, known)
        return warm, upload, after

    warm, upload, after = run_balancer(make_config([s1]), scenario)
    assert _echoed(warm)["target"] == "/echo/known"
    echo = _echoed(upload)
    assert (echo["method"], echo["target"]) == ("POST", "/echo/upload")
    assert echo["body"] == known.decode()
    assert _echoed(after)["target"] == "/echo/known"
    assert [r.method for r in s1.requests] == ["GET", "POST", "GET"]


def test_two_pipelined_requests_in_one_write_get_two_responses_every_time(run_balancer, backends):
    (s1,) = backends("s1")
    first = b"GET /echo/a HTTP/1.1\r\nHost: test.local\r\n\r\n"
    second = b"GET /echo/b HTTP/1.1\r\nHost: test.local\r\n\r\n"
    pair = first + second

    async def scenario(balancer):
        targets = []
        async with await Client.connect(frontend_port(balancer)) as client:
            targets.append([_echoed(await _send(client, first))["target"]])  # "a" alone is known
            for _ in range(ROUNDS):
                await client.send(pair)
                targets.append([_echoed(await client.read_response())["target"] for _ in range(2)])
            targets.append([_echoed(await _send(client, first))["target"]])
        return targets, pair in _memo(balancer)

    targets, pair_known = run_balancer(make_config([s1]), scenario)
    assert targets == [["/echo/a"]] + [["/echo/a", "/echo/b"]] * ROUNDS + [["/echo/a"]]
    assert not pair_known, "two requests are never remembered as one"
    assert s1.paths == ["/echo/a"] + ["/echo/a", "/echo/b"] * ROUNDS + ["/echo/a"]


def test_a_head_followed_by_the_start_of_the_next_is_answered_in_order(run_balancer, backends):
    (s1,) = backends("s1")
    first = b"GET /echo/a HTTP/1.1\r\nHost: test.local\r\n\r\n"
    second_start, second_end = b"GET /echo/b HTTP/1.1\r\nHo", b"st: test.local\r\n\r\n"

    async def scenario(balancer):
        rounds = []
        async with await Client.connect(frontend_port(balancer)) as client:
            for _ in range(3):
                await client.send(first + second_start)
                one = await client.read_response()
                await _has_read(balancer)  # "b" has begun, so its end is a read of its own
                await client.send(second_end)
                two = await client.read_response()
                rounds.append((_echoed(one)["target"], _echoed(two)["target"]))
        return rounds, first + second_start in _memo(balancer)

    rounds, known = run_balancer(make_config([s1]), scenario)
    assert rounds == [("/echo/a", "/echo/b")] * 3
    assert not known
    assert len(s1.requests) == 6


# -- per frontend ---------------------------------------------------------------------------


def test_a_head_known_to_one_frontend_is_still_judged_by_another_frontends_limits(run_balancer, backends):
    (s1,) = backends("s1")
    many_headers = b"GET /echo/many HTTP/1.1\r\nHost: test.local\r\nA: 1\r\nB: 2\r\nC: 3\r\n\r\n"
    long_line = b"GET /echo/" + b"l" * 60 + b" HTTP/1.1\r\nHost: test.local\r\n\r\n"
    forwarded = b"GET /echo/fwd HTTP/1.1\r\nHost: test.local\r\nX-Forwarded-For: 203.0.113.7\r\n\r\n"

    async def scenario(balancer):
        big, small = frontend_port(balancer, "www"), frontend_port(balancer, "small")
        accepted = []
        async with await Client.connect(big) as client:
            for _ in range(ROUNDS):
                for head in (many_headers, long_line, forwarded):
                    accepted.append((head, await _send(client, head)))
        assert {many_headers, long_line, forwarded} <= set(_memo(balancer, "www"))
        refused = []
        for _ in range(3):
            for head in (many_headers, long_line):
                async with await Client.connect(small) as client:
                    response = await _send(client, head)
                    refused.append((head, response, await client.read_until_closed(timeout=3)))
        async with await Client.connect(small) as client:
            plain = [await _send(client, forwarded) for _ in range(ROUNDS)]
        async with await Client.connect(big) as client:
            again = await _send(client, forwarded)
        return accepted, refused, plain, again

    accepted, refused, plain, again = run_balancer(_two_frontend_config(s1.address), scenario)
    for head, response in accepted:
        assert _echoed(response)["target"] == head.split(b" ")[1].decode()
    for head, response, rest in refused:
        assert response.status == (431 if head is many_headers else 414), (head, response)
        assert rest == b""
    for response in plain:  # "small" forwards the header as received and adds nothing
        echo = _echoed(response)
        assert _values(echo, "X-Forwarded-For") == ["203.0.113.7"]
        assert _values(echo, "X-Forwarded-Proto") == []
    assert _values(_echoed(again), "X-Forwarded-For") == ["203.0.113.7, 127.0.0.1"]
    assert len(s1.requests) == 3 * ROUNDS + ROUNDS + 1


# -- the access log --------------------------------------------------------------------------


def _json_log(path: Path, count: int) -> list[dict[str, Any]]:
    """The access log's records once there are `count` of them (the writer may flush later)."""

    def records() -> list[dict[str, Any]] | None:
        lines = path.read_text().splitlines() if path.exists() else []
        return [json.loads(line) for line in lines] if len(lines) >= count else None

    return wait_until_blocking(records, timeout=5, what=f"{count} access log lines in {path}")


def test_access_log_lines_of_a_repeated_head_are_alike_and_count_the_head_exactly(run_balancer, backends, tmp_path):
    (s1,) = backends("s1")
    log = tmp_path / "access.json"
    plain = b"GET /logged?q=1 HTTP/1.1\r\nHost: test.local\r\nUser-Agent: repeat/1\r\n\r\n"
    hop = b"GET /logged/hop HTTP/1.1\r\nHost: test.local\r\nConnection: keep-alive\r\nX-Forwarded-For: 10.1.2.3\r\n\r\n"
    config = make_config([s1], global_={"log": f"file:{log}", "log_format": "json"})

    async def scenario(balancer):
        seen = await _repeat(frontend_port(balancer), plain, hop)
        assert all(response.status == 200 for _, response in seen)
        return plain in _memo(balancer) and hop in _memo(balancer)

    assert run_balancer(config, scenario)
    records = _json_log(log, 2 * 2 * ROUNDS)
    assert len(records) == 2 * 2 * ROUNDS
    expected = {"GET /logged?q=1 HTTP/1.1": len(plain), "GET /logged/hop HTTP/1.1": len(hop)}
    for record in records:
        assert record["request"] in expected, record
        assert (record["frontend"], record["backend"], record["server"]) == ("www", "web", "s1")
        assert (record["status"], record["termination"]) == (200, "--")
        assert str(record["client"]).startswith("127.0.0.1")
        assert record["bytes_in"] == expected[record["request"]], record
        assert record["bytes_out"] > 0
    assert [r["request"] for r in records] == ["GET /logged?q=1 HTTP/1.1", "GET /logged/hop HTTP/1.1"] * 2 * ROUNDS


# -- heads that are never remembered --------------------------------------------------------


def test_a_repeated_head_with_connection_close_is_answered_and_closed_every_time(run_balancer, backends):
    (s1,) = backends("s1")
    head = b"GET /echo/bye HTTP/1.1\r\nHost: test.local\r\nConnection: close\r\n\r\n"
    warm = b"GET /echo/bye HTTP/1.1\r\nHost: test.local\r\n\r\n"  # the same request, kept alive

    async def scenario(balancer):
        results = []
        for _ in range(ROUNDS):
            async with await Client.connect(frontend_port(balancer)) as client:
                assert (await _send(client, warm)).status == 200
                response = await _send(client, head)
                results.append((response, await client.read_until_closed(timeout=3)))
        return results, head in _memo(balancer)

    results, remembered = run_balancer(make_config([s1]), scenario)
    assert not remembered
    for response, rest in results:
        assert _echoed(response)["target"] == "/echo/bye"
        assert "close" in response.connection_tokens()
        assert rest == b""
    assert len(s1.requests) == 2 * ROUNDS


def test_a_repeated_http10_head_behaves_as_http10_every_time(run_balancer, backends):
    (s1,) = backends("s1")
    keep = b"GET /echo/old HTTP/1.0\r\nHost: test.local\r\nConnection: keep-alive\r\n\r\n"
    bare = b"GET /echo/old HTTP/1.0\r\nHost: test.local\r\n\r\n"

    async def scenario(balancer):
        port = frontend_port(balancer)
        async with await Client.connect(port) as client:
            kept = [await _send(client, keep) for _ in range(ROUNDS)]
        closed = []
        for _ in range(3):
            async with await Client.connect(port) as client:
                response = await _send(client, bare)
                closed.append((response, await client.read_until_closed(timeout=3)))
        return kept, closed, keep in _memo(balancer) or bare in _memo(balancer)

    kept, closed, remembered = run_balancer(make_config([s1]), scenario)
    assert not remembered
    for response in kept:
        assert _echoed(response)["version"] == "HTTP/1.1"  # the proxy speaks HTTP/1.1 to servers
        assert "keep-alive" in response.connection_tokens()
        assert "close" not in response.connection_tokens()
    for response, rest in closed:
        assert _echoed(response)["target"] == "/echo/old"
        assert "keep-alive" not in response.connection_tokens()
        assert rest == b""
    assert len(s1.requests) == ROUNDS + 3


def test_a_backend_host_rewrite_applies_to_every_repetition_of_a_head(run_balancer, backends):
    (s1,) = backends("s1")

    async def scenario(balancer):
        async with await Client.connect(frontend_port(balancer)) as client:
            return [await _send(client, PLAIN) for _ in range(ROUNDS)]

    responses = run_balancer(make_config([s1], backend={"host": "internal.example"}), scenario)
    for response in responses:
        echo = _echoed(response)
        assert _values(echo, "Host") == ["internal.example"], "the backend's Host replaces the client's, once"
        assert _values(echo, "User-Agent") == ["repeat/1"]
