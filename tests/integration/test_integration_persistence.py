"""Session persistence through the proxy: cookies (insert, prefix, rewrite) and the stick table,
and what a persisted client meets when its server drains, goes into maint or down."""

from __future__ import annotations

import asyncio
import json

from tests.integration.aclient import Client, Response, get
from tests.integration.configs import frontend_port, make_config
from tests.support import TcpEchoServer, closed_port


def _server(response: Response) -> str:
    return response.header("server-name") or "?"


def _set_cookie(response: Response, name: str) -> str | None:
    """The value the response sets for cookie `name` (None when it sets none)."""
    for header in response.header_all("set-cookie"):
        key, _, rest = header.partition("=")
        if key.strip() == name:
            return rest.split(";", 1)[0]
    return None


def _insert(**cookie) -> dict:
    return {"cookie": {"name": "SERVERID", **cookie}}


def test_cookie_insert_pins_a_client_across_requests_and_connections(run_balancer, backends):
    servers = backends("s1", "s2", "s3")
    config = make_config(servers, backend=_insert(httponly=True, secure=True))

    async def scenario(balancer):
        port = frontend_port(balancer)
        first = await get(port, "/")
        value = _set_cookie(first, "SERVERID")
        jar = [("Cookie", f"theme=dark; SERVERID={value}")]
        again = [await get(port, f"/{i}", jar) for i in range(20)]  # a new connection each
        async with await Client.connect(port) as client:  # and on one keep-alive connection
            again += [await client.get(f"/ka/{i}", jar) for i in range(10)]
        strangers = [_server(await get(port, "/")) for _ in range(6)]
        return first, value, again, strangers

    first, value, again, strangers = run_balancer(config, scenario)
    assert value == _server(first), "the cookie names the server that answered"
    assert first.header_all("set-cookie") == [f"SERVERID={value}; path=/; HttpOnly; Secure"]
    assert first.header("cache-control") == "private", "a response carrying an inserted cookie is not cacheable"
    assert {_server(r) for r in again} == {value}
    assert all(r.header("set-cookie") is None for r in again), "a client with a valid cookie is not sent it again"
    assert set(strangers) == {"s1", "s2", "s3"}, "clients without the cookie are still balanced"


def test_an_unknown_or_forged_cookie_is_balanced_and_replaced(run_balancer, backends):
    servers = backends("s1", "s2")
    config = make_config(servers, backend=_insert())

    async def scenario(balancer):
        port = frontend_port(balancer)
        return [await get(port, "/", [("Cookie", f"SERVERID={value}")]) for value in ("s9", "s1|x|y", "s1\tx")]

    for response in run_balancer(config, scenario):
        assert _set_cookie(response, "SERVERID") == _server(response)


def test_cookie_prefix_round_trips_the_servers_own_cookie(run_balancer, backends):
    servers = backends("s1", "s2", "s3")
    config = make_config(servers, backend={"cookie": {"name": "JSESSIONID", "mode": "prefix"}})

    async def scenario(balancer):
        port = frontend_port(balancer)
        login = await get(port, "/set-cookie/JSESSIONID/abc~123")
        plain = await get(port, "/set-cookie/lang/en")
        value = _set_cookie(login, "JSESSIONID")
        jar = [("Cookie", f"lang=en; JSESSIONID={value}")]
        echoes = [await get(port, "/echo", jar) for _ in range(10)]
        return login, plain, value, echoes

    login, plain, value, echoes = run_balancer(config, scenario)
    owner = _server(login)
    assert value == f"{owner}~abc~123"
    assert login.header_all("set-cookie") == [f"JSESSIONID={owner}~abc~123; Path=/"], "attributes untouched"
    assert login.header("cache-control") is None, "prefix mode adds nothing"
    assert _set_cookie(plain, "lang") == "en", "other cookies pass untouched"
    assert {_server(r) for r in echoes} == {owner}
    for response in echoes:
        headers = dict((name.lower(), v) for name, v in json.loads(response.body)["headers"])
        assert headers["cookie"] == "lang=en; JSESSIONID=abc~123", "the server sees its own value"


def test_cookie_rewrite_replaces_the_servers_value_by_its_name(run_balancer, backends):
    servers = backends("s1", "s2")
    config = make_config(servers, backend={"cookie": {"name": "SID", "mode": "rewrite"}})

    async def scenario(balancer):
        port = frontend_port(balancer)
        first = await get(port, "/set-cookie/SID/placeholder")
        value = _set_cookie(first, "SID")
        later = [await get(port, "/", [("Cookie", f"SID={value}")]) for _ in range(6)]
        return first, value, later

    first, value, later = run_balancer(config, scenario)
    assert value == _server(first)
    assert {_server(r) for r in later} == {value}


def test_drain_keeps_persisted_clients_but_takes_no_new_ones(run_balancer, backends):
    servers = backends("s1", "s2", "s3")
    config = make_config(servers, backend=_insert())

    async def scenario(balancer):
        port = frontend_port(balancer)
        runtime = balancer.backends["web"]
        runtime.set_state(runtime.by_name["s2"], "drain")
        persisted = [_server(await get(port, f"/{i}", [("Cookie", "SERVERID=s2")])) for i in range(8)]
        fresh = [await get(port, f"/new/{i}") for i in range(9)]
        return persisted, fresh

    persisted, fresh = run_balancer(config, scenario)
    assert persisted == ["s2"] * 8
    assert {_server(r) for r in fresh} == {"s1", "s3"}
    assert all(_set_cookie(r, "SERVERID") == _server(r) for r in fresh)


def test_maint_and_down_redispatch_and_rewrite_the_cookie(run_balancer, backends):
    servers = backends("s1", "s2", "s3")
    config = make_config(servers, backend=_insert())

    async def scenario(balancer):
        port = frontend_port(balancer)
        runtime = balancer.backends["web"]
        results = {}
        for cause in ("maint", "down"):
            s1 = runtime.by_name["s1"]
            if cause == "maint":
                runtime.set_state(s1, "maint")
            else:
                runtime.set_health(s1, "down")
            moved = await get(port, "/", [("Cookie", "SERVERID=s1")])
            new_value = _set_cookie(moved, "SERVERID")
            after = [_server(await get(port, "/", [("Cookie", f"SERVERID={new_value}")])) for _ in range(5)]
            results[cause] = (_server(moved), new_value, after)
            runtime.set_state(s1, "ready")
            runtime.set_health(s1, "up")
        back = _server(await get(port, "/", [("Cookie", "SERVERID=s1")]))
        return results, back

    results, back = run_balancer(config, scenario)
    for cause, (server, new_value, after) in results.items():
        assert server in ("s2", "s3"), cause
        assert new_value == server, f"{cause}: the cookie follows the client to its new server"
        assert after == [server] * 5, cause
    assert back == "s1", "a cookie for a server back in service goes to it again"


def test_without_redispatch_a_client_of_a_server_in_maint_is_balanced_anew(run_balancer, backends):
    """Issue #13: HAProxy moves a client whose cookie names a maint or down server unless
    `option persist`; `redispatch = false` used to answer it 503."""
    servers = backends("s1", "s2")
    config = make_config(servers, backend={**_insert(), "redispatch": False})

    async def scenario(balancer):
        port = frontend_port(balancer)
        runtime = balancer.backends["web"]
        runtime.set_state(runtime.by_name["s1"], "maint")
        moved = await get(port, "/", [("Cookie", "SERVERID=s1")])
        runtime.set_state(runtime.by_name["s1"], "ready")
        runtime.set_health(runtime.by_name["s1"], "down")
        moved_again = await get(port, "/", [("Cookie", "SERVERID=s1")])
        return moved, moved_again

    moved, moved_again = run_balancer(config, scenario)
    for response in (moved, moved_again):
        assert response.status == 200 and _server(response) == "s2"
        assert _set_cookie(response, "SERVERID") == "s2"


def test_persist_keeps_a_client_on_its_server_in_maint(run_balancer, backends):
    servers = backends("s1", "s2")
    config = make_config(servers, backend={**_insert(), "persist": True, "redispatch": False})

    async def scenario(balancer):
        port = frontend_port(balancer)
        runtime = balancer.backends["web"]
        runtime.set_state(runtime.by_name["s1"], "maint")
        kept = [await get(port, "/", [("Cookie", "SERVERID=s1")]) for _ in range(4)]
        strangers = [await get(port, "/") for _ in range(4)]
        return kept, strangers

    kept, strangers = run_balancer(config, scenario)
    assert [(r.status, _server(r)) for r in kept] == [(200, "s1")] * 4
    assert all(r.header("set-cookie") is None for r in kept)
    assert {_server(r) for r in strangers} == {"s2"}, "new clients never go to a server in maint"


def test_a_persisted_server_that_refuses_connections_is_redispatched(run_balancer, backends):
    (alive,) = backends("alive")
    dead = ("dead", f"127.0.0.1:{closed_port()}")
    config = make_config([dead, alive], backend={**_insert(), "retries": 1, "timeouts": {"connect": "1s"}})

    async def scenario(balancer):
        return await get(frontend_port(balancer), "/", [("Cookie", "SERVERID=dead")])

    response = run_balancer(config, scenario)
    assert response.status == 200 and _server(response) == "alive"
    assert _set_cookie(response, "SERVERID") == "alive"


def test_dated_cookie_expires_after_maxidle(run_balancer, backends):
    servers = backends("s1", "s2")
    config = make_config(servers, backend=_insert(maxidle="1s"))

    async def scenario(balancer):
        port = frontend_port(balancer)
        first = await get(port, "/")
        value = _set_cookie(first, "SERVERID")
        soon = await get(port, "/", [("Cookie", f"SERVERID={value}")])
        await asyncio.sleep(2.2)
        late = [await get(port, "/", [("Cookie", f"SERVERID={value}")]) for _ in range(2)]
        return first, value, soon, late

    first, value, soon, late = run_balancer(config, scenario)
    assert value is not None and value.startswith(_server(first) + "|")
    assert _server(soon) == _server(first)
    # Expired: balanced anew (round robin moves on) and given a fresh cookie every time.
    assert all(_set_cookie(r, "SERVERID") not in (None, value) for r in late)
    assert {_server(r) for r in late} == {"s1", "s2"}


def test_stick_table_pins_a_source_address(run_balancer, backends):
    servers = backends("s1", "s2", "s3")
    config = make_config(servers, backend={"stick": {"on": "src", "expire": "30m", "size": 1000}})

    async def scenario(balancer):
        port = frontend_port(balancer)
        runtime = balancer.backends["web"]
        first = [_server(await get(port, f"/{i}")) for i in range(10)]
        owner = runtime.by_name[first[0]]
        runtime.set_state(owner, "drain")
        drained = [_server(await get(port, f"/d/{i}")) for i in range(5)]
        runtime.set_state(owner, "maint")
        moved = [_server(await get(port, f"/m/{i}")) for i in range(5)]
        return first, drained, moved

    first, drained, moved = run_balancer(config, scenario)
    assert len(set(first)) == 1, "one client address, one server, though balance is round robin"
    assert drained == first[:5], "drain keeps the stuck client"
    assert len(set(moved)) == 1 and moved[0] != first[0], "maint moves it, and it sticks to the new server"


def test_tcp_stick_table_pins_a_source_address(run_balancer):
    echoes = [TcpEchoServer(f"t{i}", greeting=f"t{i}\n".encode()).start() for i in range(3)]
    try:
        config = make_config(
            echoes,
            mode="tcp",
            frontend={"forwardfor": False},
            backend={"stick": {"expire": "1m", "size": 10}},
        )

        async def greeting(port: int) -> bytes:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            try:
                return await asyncio.wait_for(reader.readline(), 5)
            finally:
                writer.close()

        async def scenario(balancer):
            port = frontend_port(balancer)
            return [await greeting(port) for _ in range(9)]

        greetings = run_balancer(config, scenario)
    finally:
        for echo in echoes:
            echo.stop()
    assert len(set(greetings)) == 1, greetings
    assert sum(e.connections for e in echoes) == 9


def test_indirect_insert_cookie_never_reaches_the_server(run_balancer, backends):
    """Issue #13 / #16: with `cookie = { name = "SERVERID", mode = "insert" }` the server never
    receives SERVERID (HAProxy `indirect`), and other cookies reach it unchanged."""
    servers = backends("s1", "s2")
    config = make_config(servers, backend=_insert())

    async def scenario(balancer):
        port = frontend_port(balancer)
        first = await get(port, "/")
        value = _set_cookie(first, "SERVERID")
        async with await Client.connect(port) as client:
            again = [await client.get("/", [("Cookie", f"theme=dark; SERVERID={value}")]) for _ in range(3)]
            alone = await client.get("/", [("Cookie", f"SERVERID={value}")])
        return value, again, alone

    value, again, alone = run_balancer(config, scenario)
    server = next(s for s in servers if s.name == value)
    seen = [r.header_values("Cookie") for r in server.requests]
    assert seen == [[], ["theme=dark"], ["theme=dark"], ["theme=dark"], []]
    assert all(_server(r) == value and r.header("set-cookie") is None for r in [*again, alone])
