"""Weights from agent reports (`balance = "agent_load"`), the "least load" of the seeds.

An agent on each server reports how much more work it can take, as a percentage (HAProxy's
agent-check "75%"). The effective weight is `weight x percent / 100`, and requests are spread
over effective weights by smooth weighted round robin. A server at 0% gets nothing while
another can take the request; if every server is at 0% the plain weights apply, since
refusing everything would only move the overload to the clients.

Where the percentage comes from: in this build the master applies the agent's report to the
weight it publishes to the workers (runtime.master_state.ServerStatus.effective), so
`server.weight` already arrives scaled and a report of 0% makes the server unusable before
it gets here; this selector then is weighted round robin over live, agent-driven weights.
A runtime that keeps the report apart instead sets `ServerRuntime.agent_weight` (percent,
0..100), with the configured weight left in `weight`, and this selector applies it; it must
not do both. Either way a new report is a weight change: the backend tells lb.pool, which
builds a new selector.
"""

from __future__ import annotations

from balancer.lb.base import Selector
from balancer.lb.roundrobin import SmoothWeightedRoundRobin
from balancer.runtime.state import ServerRuntime


def effective_weight(server: ServerRuntime) -> int:
    """The server's weight scaled by its agent's last report, in hundredths of a weight."""
    report = server.agent_weight
    if report < 0:
        return server.weight * 100
    return server.weight * min(100, report)


class AgentLoad(Selector):
    __slots__ = ("_resting", "_rotation")

    def __init__(self, servers: list[ServerRuntime]) -> None:
        weights = [effective_weight(s) for s in servers]
        if not any(weights):
            weights = [max(s.weight, 1) for s in servers]
        chosen = [(s, w) for s, w in zip(servers, weights, strict=True) if w > 0]
        self._rotation = SmoothWeightedRoundRobin([s for s, _ in chosen], weights=[w for _, w in chosen])
        # Servers whose agent reported 0%: only for a retry that has nowhere else to go.
        self._resting = [s for s, w in zip(servers, weights, strict=True) if w <= 0]

    def pick(self, key: bytes | None, avoid: ServerRuntime | None) -> ServerRuntime | None:
        server = self._rotation.pick(key, avoid)
        if server is not None and server is avoid:
            for other in self._resting:
                if other is not avoid:
                    return other
        return server
