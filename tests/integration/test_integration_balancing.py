"""Which server answers, in what order: the tagged-backend idiom of HAProxy's regression tests."""

from __future__ import annotations

from tests.integration.aclient import Client, get
from tests.integration.configs import frontend_port, make_config


def _weighted(servers, weights):
    return [{"name": s.name, "address": s.address, "weight": w} for s, w in zip(servers, weights, strict=True)]


def _order(run_balancer, config: str, count: int, *, same_connection: bool = False) -> list[str]:
    async def scenario(balancer):
        port = frontend_port(balancer)
        if same_connection:
            async with await Client.connect(port) as client:
                responses = [await client.get(f"/{i}") for i in range(count)]
        else:
            responses = [await get(port, f"/{i}") for i in range(count)]
        assert all(r.status == 200 for r in responses), responses
        return [r.header("Server-Name") for r in responses]

    return run_balancer(config, scenario)


def test_roundrobin_equal_weights_rotates(run_balancer, backends):
    servers = backends("a", "b", "c")
    order = _order(run_balancer, make_config(servers, backend={"balance": "roundrobin"}), 9)
    assert order == ["a", "b", "c"] * 3


def test_roundrobin_is_smooth_weighted(run_balancer, backends):
    """Weights 5, 1, 1 interleave as NGINX's smooth weighted round robin does."""
    servers = backends("a", "b", "c")
    config = make_config(_weighted(servers, [5, 1, 1]), backend={"balance": "roundrobin"})
    order = _order(run_balancer, config, 14)
    assert order == ["a", "a", "b", "a", "c", "a", "a"] * 2


def test_roundrobin_order_is_per_backend_not_per_connection(run_balancer, backends):
    """Requests over one keep-alive connection are balanced one by one, like separate clients."""
    servers = backends("a", "b", "c")
    config = make_config(_weighted(servers, [5, 1, 1]), backend={"balance": "roundrobin"})
    order = _order(run_balancer, config, 7, same_connection=True)
    assert order == ["a", "a", "b", "a", "c", "a", "a"]


def test_static_rr_follows_the_weights(run_balancer, backends):
    servers = backends("a", "b", "c")
    config = make_config(_weighted(servers, [5, 1, 1]), backend={"balance": "static-rr"})
    order = _order(run_balancer, config, 21)
    cycles = [order[i : i + 7] for i in range(0, 21, 7)]
    assert cycles[0] == cycles[1] == cycles[2], f"static-rr repeats one cycle: {cycles}"
    assert sorted(cycles[0]) == ["a"] * 5 + ["b", "c"]


def test_static_rr_equal_weights_rotates(run_balancer, backends):
    servers = backends("a", "b")
    order = _order(run_balancer, make_config(servers, backend={"balance": "static-rr"}), 6)
    assert order == ["a", "b"] * 3


def test_zero_weight_server_gets_nothing(run_balancer, backends):
    servers = backends("a", "b")
    config = make_config(_weighted(servers, [1, 0]), backend={"balance": "roundrobin"})
    assert _order(run_balancer, config, 5) == ["a"] * 5
    assert servers[1].requests == []
