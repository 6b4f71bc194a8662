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
