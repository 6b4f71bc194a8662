"""Hash-based balancing through the proxy: the key comes from the request as `hash_key` says."""

from __future__ import annotations

import pytest
from tests.integration.aclient import get
from tests.integration.configs import frontend_port, make_config


def _server(response) -> str:
    return response.header("server-name") or "?"


@pytest.mark.parametrize("hash_type", ["map", "consistent"])
def test_uri_hash_sends_one_uri_to_one_server(run_balancer, backends, hash_type):
    servers = backends("s1", "s2", "s3")
    config = make_config(servers, backend={"balance": "uri", "hash_key": "uri", "hash_type": hash_type})

    async def scenario(balancer):
        port = frontend_port(balancer)
        seen: dict[str, set[str]] = {}
        for _ in range(3):
            for i in range(30):
                uri = f"/item/{i}?v={i % 3}"
                seen.setdefault(uri, set()).add(_server(await get(port, uri)))
        return seen

    seen = run_balancer(config, scenario)
    assert all(len(names) == 1 for names in seen.values()), seen
    assert len(set().union(*seen.values())) == 3, "30 URIs spread over all three servers"


def test_header_hash_pins_a_tenant_and_keyless_requests_still_balance(run_balancer, backends):
    servers = backends("s1", "s2", "s3")
    config = make_config(servers, backend={"balance": "hdr", "hash_key": "hdr(X-Tenant)"})

    async def scenario(balancer):
        port = frontend_port(balancer)
        pinned = {_server(await get(port, "/", [("X-Tenant", "acme")])) for _ in range(12)}
        keyless = [_server(await get(port, "/")) for _ in range(12)]
        return pinned, keyless

    pinned, keyless = run_balancer(config, scenario)
    assert len(pinned) == 1
    assert set(keyless) == {"s1", "s2", "s3"}, "without the header requests are balanced round robin"


@pytest.mark.parametrize("balance", ["maglev", "ring", "source"])
def test_source_hash_pins_a_client(run_balancer, backends, balance):
    servers = backends("s1", "s2", "s3")
    config = make_config(servers, backend={"balance": balance, "hash_key": "src"})

    async def scenario(balancer):
        port = frontend_port(balancer)
        return {_server(await get(port, f"/{i}")) for i in range(20)}

    assert len(run_balancer(config, scenario)) == 1, "one client address, one server"


def test_url_param_and_cookie_keys(run_balancer, backends):
    servers = backends("s1", "s2", "s3")
    param = make_config(servers, backend={"balance": "url_param", "hash_key": "url_param(user)"})
    cookie = make_config(servers, backend={"balance": "maglev", "hash_key": "cookie(sid)"})

    async def by_param(balancer):
        port = frontend_port(balancer)
        return {_server(await get(port, f"/x?a={i}&user=42")) for i in range(15)}

    async def by_cookie(balancer):
        port = frontend_port(balancer)
        return {_server(await get(port, f"/{i}", [("Cookie", "theme=dark; sid=abc123")])) for i in range(15)}

    assert len(run_balancer(param, by_param)) == 1
    assert len(run_balancer(cookie, by_cookie)) == 1
