"""Header rewriting: hop-by-hop headers stay on their hop; X-Forwarded-For / -Proto are added."""

from __future__ import annotations

from tests.integration.aclient import Client
from tests.integration.configs import frontend_port, make_config

HOP_BY_HOP = {"keep-alive", "proxy-connection", "te", "upgrade", "x-hop-secret"}


def test_hop_by_hop_request_headers_are_not_forwarded(run_balancer, backends):
    (s1,) = backends("s1")
    headers = [
        ("Connection", "keep-alive, TE, X-Hop-Secret"),
        ("Keep-Alive", "timeout=30"),
        ("Proxy-Connection", "keep-alive"),
        ("TE", "trailers"),
        ("Upgrade", "h2c"),  # not named in Connection: not a real upgrade, and never end to end
        ("X-Hop-Secret", "for the proxy only"),
        ("X-End-To-End", "kept"),
    ]

    async def scenario(balancer):
        async with await Client.connect(frontend_port(balancer)) as client:
            first = await client.get("/echo", headers)
            second = await client.get("/echo", headers)  # Connection: keep-alive kept the connection
        return first, second

    first, second = run_balancer(make_config([s1]), scenario)
    assert (first.status, second.status) == (200, 200)
    for request in s1.requests:
        names = {name.lower() for name, _ in request.headers}
        assert not names & HOP_BY_HOP, f"hop-by-hop headers forwarded: {sorted(names & HOP_BY_HOP)}"
        # The proxy may speak for itself on its own hop, but never repeat the client's options.
        tokens = {t.strip().lower() for v in request.header_values("Connection") for t in v.split(",")}
        assert tokens <= {"keep-alive", "close"}, f"client's Connection options forwarded: {tokens}"
        assert request.header("X-End-To-End") == "kept"


def test_hop_by_hop_response_headers_are_rewritten_for_the_client(run_balancer, backends):
    (s1,) = backends("s1")

    async def scenario(balancer):
        async with await Client.connect(frontend_port(balancer)) as client:
            response = await client.get("/keepalive-header")
            again = await client.get("/")
        return response, again

    response, again = run_balancer(make_config([s1]), scenario)
    assert response.status == 200
    # The server's Keep-Alive parameters describe the proxy's server connection, not the client's.
    assert response.header("Keep-Alive") is None
    assert response.header("Server-Name") == "s1"  # end-to-end headers pass untouched
    assert response.header("Content-Type") == "text/plain"
    assert again.status == 200


def test_x_forwarded_for_is_appended_and_proto_is_set(run_balancer, backends):
    (s1,) = backends("s1")

    async def scenario(balancer):
        async with await Client.connect(frontend_port(balancer)) as client:
            await client.get("/with", [("X-Forwarded-For", "203.0.113.7")])
            await client.get("/without")

    run_balancer(make_config([s1], frontend={"forwardfor": True}), scenario)
    with_xff, without_xff = s1.requests
    assert ", ".join(with_xff.header_values("X-Forwarded-For")) == "203.0.113.7, 127.0.0.1"
    assert without_xff.header_values("X-Forwarded-For") == ["127.0.0.1"]
    assert with_xff.header_values("X-Forwarded-Proto") == ["http"]
    assert without_xff.header_values("X-Forwarded-Proto") == ["http"]


def test_forwardfor_off_leaves_the_request_alone(run_balancer, backends):
    (s1,) = backends("s1")

    async def scenario(balancer):
        async with await Client.connect(frontend_port(balancer)) as client:
            await client.get("/", [("X-Forwarded-For", "203.0.113.7")])

    run_balancer(make_config([s1], frontend={"forwardfor": False}), scenario)
    (request,) = s1.requests
    assert request.header_values("X-Forwarded-For") == ["203.0.113.7"]
    assert request.header("X-Forwarded-Proto") is None


def test_del_header_x_forwarded_for_drops_what_the_client_sent(run_balancer, backends):
    """HAProxy's `http-request del-header X-Forwarded-For` + `option forwardfor`: the server
    sees only the address balancer saw, never what a client claims (issue #13)."""
    (s1,) = backends("s1")
    config = make_config([s1], frontend={"rule": [{"del_header": ["X-Forwarded-For"]}]})

    async def scenario(balancer):
        async with await Client.connect(frontend_port(balancer)) as client:
            for _ in range(2):  # the second read of the same head takes the known-request path
                response = await client.get("/xff", headers=[("X-Forwarded-For", "6.6.6.6")])
                assert response.status == 200

    run_balancer(config, scenario)
    assert [r.header_values("X-Forwarded-For") for r in s1.requests] == [["127.0.0.1"], ["127.0.0.1"]]
