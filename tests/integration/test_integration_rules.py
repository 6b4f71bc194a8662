"""Frontend rules: routing, deny, redirect and header rewriting, seen from both ends."""

from __future__ import annotations

from tests.integration.aclient import Client, get
from tests.integration.configs import frontend_port, make_config


def test_rules_route_to_another_backend(run_balancer, backends):
    web, blog, api = backends("web1", "blog1", "api1")
    config = make_config(
        [web],
        frontend={
            "rule": [
                {"if": {"path_beg": ["/blog"]}, "use_backend": "blog"},
                {"if": {"host": ["api.example"]}, "use_backend": "api"},
            ]
        },
        extra_backends=[({"name": "blog"}, [blog]), ({"name": "api"}, [api])],
    )

    async def scenario(balancer):
        port = frontend_port(balancer)
        async with await Client.connect(port) as client:
            names = []
            for path, host in [("/", "www.example"), ("/blog/post", "www.example"), ("/x", "api.example")]:
                response = await client.get(path, [("Host", host)])
                names.append(response.header("Server-Name"))
            return names

    assert run_balancer(config, scenario) == ["web1", "blog1", "api1"]


def test_deny_rule_answers_403_without_contacting_a_server(run_balancer, backends):
    (s1,) = backends("s1")
    config = make_config([s1], frontend={"rule": [{"if": {"path_beg": ["/admin"]}, "action": "deny"}]})

    async def scenario(balancer):
        port = frontend_port(balancer)
        return await get(port, "/admin/users"), await get(port, "/public")

    denied, allowed = run_balancer(config, scenario)
    assert denied.status == 403
    assert b"<" in denied.body
    assert allowed.status == 200
    assert [r.target for r in s1.requests] == ["/public"]


def test_redirect_rule(run_balancer, backends):
    (s1,) = backends("s1")
    rule = {"if": {"path": ["/old"]}, "redirect": {"location": "https://example.com/new", "code": 301}}

    async def scenario(balancer):
        return await get(frontend_port(balancer), "/old")

    response = run_balancer(make_config([s1], frontend={"rule": [rule]}), scenario)
    assert response.status == 301
    assert response.header("Location") == "https://example.com/new"
    assert s1.requests == []


def test_set_and_del_header_rules_rewrite_the_request(run_balancer, backends):
    (s1,) = backends("s1")
    rules = [
        {"set_header": {"X-Env": "test"}, "del_header": ["X-Debug"]},
        {"if": {"hdr": {"X-Name": ["v1"]}}, "use_backend": "web"},
    ]

    async def scenario(balancer):
        return await get(frontend_port(balancer), "/", [("X-Debug", "1"), ("X-Env", "prod"), ("X-Name", "v1")])

    response = run_balancer(make_config([s1], frontend={"rule": rules}), scenario)
    assert response.status == 200
    (request,) = s1.requests
    assert request.header_values("X-Env") == ["test"]
    assert request.header("X-Debug") is None
    assert request.header("X-Name") == "v1"


def test_ignore_case_routes_upper_case_paths_and_a_browsers_websocket_upgrade(run_balancer, backends):
    """Issue #13: `-i` was lost, so /Page.CSS and `Upgrade: WebSocket` reached the wrong backend."""
    web, static, ws = backends("web1", "static1", "ws1")
    config = make_config(
        [web],
        frontend={
            "rule": [
                {"if": {"path_end": [".css"], "ignore_case": True}, "use_backend": "static"},
                {"if": {"hdr": {"upgrade": ["websocket"]}, "ignore_case": True}, "use_backend": "ws"},
            ]
        },
        extra_backends=[({"name": "static"}, [static]), ({"name": "ws"}, [ws])],
    )

    async def scenario(balancer):
        port = frontend_port(balancer)
        css = await get(port, "/Page.CSS")
        upgrade = await get(port, "/chat", [("Connection", "Upgrade"), ("Upgrade", "WebSocket")])
        plain = await get(port, "/page.html")
        return [r.header("Server-Name") for r in (css, upgrade, plain)]

    assert run_balancer(config, scenario) == ["static1", "ws1", "web1"]


def test_backend_rules_run_after_the_frontend_chose_the_backend(run_balancer, backends):
    (s1,) = backends("s1")
    config = make_config(
        [s1],
        backend={
            "rule": [
                {"if": {"path_beg": ["/admin"]}, "action": "deny"},
                {"add_header": {"X-Seen-By": "web"}},
            ]
        },
    )

    async def scenario(balancer):
        port = frontend_port(balancer)
        return await get(port, "/admin/x"), await get(port, "/ok", [("X-Seen-By", "client")])

    denied, allowed = run_balancer(config, scenario)
    assert denied.status == 403 and allowed.status == 200
    (request,) = s1.requests
    assert request.target == "/ok"
    assert request.header_values("X-Seen-By") == ["client", "web"], "add_header appends"


def test_redirect_scheme_keeps_host_and_uri(run_balancer, backends):
    (s1,) = backends("s1")
    rule = {"unless": {"ssl": True}, "redirect": {"scheme": "https", "code": 301}}

    async def scenario(balancer):
        return await get(frontend_port(balancer), "/cart?id=7", [("Host", "shop.example")])

    response = run_balancer(make_config([s1], frontend={"rule": [rule]}), scenario)
    assert response.status == 301
    assert response.header("Location") == "https://shop.example/cart?id=7"
    assert s1.requests == []


def test_auth_rule_challenges_then_lets_valid_credentials_through(run_balancer, backends):
    (s1,) = backends("s1")
    config = (
        make_config([s1], frontend={"rule": [{"unless": {"http_auth": "ops"}, "action": "auth", "realm": "Ops area"}]})
        + '\n[[userlist]]\nname = "ops"\nuser = [{ name = "ann", password = "s3cret" }]\n'
    )

    async def scenario(balancer):
        port = frontend_port(balancer)
        async with await Client.connect(port) as client:
            challenged = await client.get("/")
            wrong = await client.get("/", [("Authorization", "Basic YW5uOm5v")])  # ann:no
            good = await client.get("/", [("Authorization", "Basic YW5uOnMzY3JldA==")])  # ann:s3cret
        return challenged, wrong, good

    challenged, wrong, good = run_balancer(config, scenario)
    assert challenged.status == 401 and wrong.status == 401
    assert challenged.header("WWW-Authenticate") == 'Basic realm="Ops area"'
    assert good.status == 200
    assert len(s1.requests) == 1
