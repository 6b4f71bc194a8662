"""Weighted random with the power of two choices (`balance = "random"`).

Two servers are drawn at random, each with probability proportional to its weight, and the
one with fewer requests in flight per unit of weight (`load() / weight`, every worker's) wins; on a tie the
first draw wins. With an idle backend every pick is therefore a plain weighted draw and shares
follow weights exactly; under load the second choice steers away from busy servers, which
keeps the worst queue exponentially shorter than one random choice (Mitzenmacher) while each
pick stays O(log N).

The random source is injected (`rng`) so tests are deterministic.
"""

from __future__ import annotations

import random
from bisect import bisect_right
from itertools import accumulate

from balancer.lb.base import Selector
from balancer.lb.common import weights_of
from balancer.runtime.state import ServerRuntime


class PowerOfTwoChoices(Selector):
    __slots__ = ("_bounds", "_index", "_inverse", "_random", "_servers", "_total", "_weights")

    def __init__(self, servers: list[ServerRuntime], *, rng: random.Random | None = None) -> None:
        self._servers, self._weights = weights_of(servers)
        self._inverse = [1.0 / w for w in self._weights]
        # _bounds[i] is the sum of the weights of servers 0..i: a draw u in [0, total) lands on
        # the first server whose bound exceeds it.
        self._bounds = list(accumulate(self._weights))
        self._total = self._bounds[-1] if self._bounds else 0
        self._index = {id(s): i for i, s in enumerate(self._servers)}
        self._random = (rng if rng is not None else random.Random()).random

    def _draw(self, skip: int) -> int:
        """A weighted random server index, never `skip` (-1: none skipped)."""
        if skip < 0:
            u = self._random() * self._total
        else:
            weight = self._weights[skip]
            u = self._random() * (self._total - weight)
            if u >= self._bounds[skip] - weight:
                u += weight  # jump over the skipped server's stretch
        return min(bisect_right(self._bounds, u), len(self._bounds) - 1)

    def pick(self, key: bytes | None, avoid: ServerRuntime | None) -> ServerRuntime | None:
        servers = self._servers
        if len(servers) <= 1:
            return servers[0] if servers else None
        skip = self._index.get(id(avoid), -1) if avoid is not None else -1
        a = self._draw(skip)
        b = self._draw(skip)
        inverse = self._inverse
        if servers[b].load() * inverse[b] < servers[a].load() * inverse[a]:
            return servers[b]
        return servers[a]
