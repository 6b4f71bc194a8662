"""agent_load: smooth weighted round robin over weight x the agent's last report (percent)."""

from __future__ import annotations

from lbkit import assert_shares_follow_weights, idle_shares, make_servers

from balancer.lb.agent_load import AgentLoad, effective_weight
from balancer.runtime.state import ServerRuntime


def agent_servers(weights: list[int], reports: list[int | None]) -> list[ServerRuntime]:
    servers: list[ServerRuntime] = []
    for server, report in zip(make_servers(weights, backend="agent"), reports, strict=True):
        if report is not None:
            server.agent_weight = report
        servers.append(server)
    return servers


def test_effective_weight() -> None:
    a, b, c, d = agent_servers([100, 100, 50, 200], [None, 50, 100, 0])
    assert [effective_weight(s) for s in (a, b, c, d)] == [10_000, 5000, 5000, 0]
    [plain] = make_servers([80])
    assert effective_weight(plain) == 8000


def test_simulation_shares_follow_effective_weights() -> None:
    servers = agent_servers([100, 100, 200, 50, 256], [None, 25, 60, 100, 10])
    observed = idle_shares(AgentLoad(servers))
    effective = [effective_weight(s) for s in servers]
    total = sum(effective)
    expected = {s.name: w / total for s, w in zip(servers, effective, strict=True)}
    assert max(abs(observed[name] - share) for name, share in expected.items()) <= 0.01


def test_without_reports_shares_follow_weights() -> None:
    servers = make_servers([30, 100, 150, 200, 256])
    assert_shares_follow_weights(idle_shares(AgentLoad(servers)), servers)


def test_zero_percent_gets_nothing_but_a_retry_with_nowhere_else_to_go() -> None:
    a, b = servers = agent_servers([100, 100], [0, 80])
    selector = AgentLoad(servers)
    assert all(selector.pick(None, None) is b for _ in range(50))
    assert selector.pick(None, b) is a


def test_every_server_at_zero_falls_back_to_plain_weights() -> None:
    servers = agent_servers([100, 100, 200], [0, 0, 0])
    assert_shares_follow_weights(idle_shares(AgentLoad(servers), 10_000), servers)
