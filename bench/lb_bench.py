#!/usr/bin/env python3
"""Benchmark the balancing algorithms (lb/): table builds and picks per second.

Not a test. Prints:

1. Maglev table build time for N = 100 and N = 1,000 servers at M = 65537: the paper's table
   built from scratch, and the stable table derived when one server goes down (what lb.pool
   does on a health change). The paper reports 1.8 ms in C at M = 65537.
2. Ring build time (ketama points, weight 100 each) for the same N.
3. Picks per second of every registered algorithm over 10 servers of mixed weights, with a
   key for the algorithms that hash one, nothing in flight; and the per-pick time.

Every figure is the best of --repeat runs (the machine is shared; the best run is the one
least disturbed). CPU time of this process only, so other load on the box matters less.

Usage: .venv/bin/python bench/lb_bench.py [--repeat 5] [--picks 200000]
"""

from __future__ import annotations

import argparse
import platform
import random
import time
from collections.abc import Callable
from functools import partial
from typing import Any

from balancer.config.model import Server
from balancer.lb import maglev
from balancer.lb.base import REGISTRY, USES_KEY, Selector, build_selector
from balancer.lb.ring import Ring, server_points
from balancer.runtime.state import ServerRuntime

M = maglev.DEFAULT_TABLE_SIZE


def servers(weights: list[int], backend: str) -> list[ServerRuntime]:
    return [
        ServerRuntime(Server(name=f"s{i}", address=f"127.0.0.1:{10000 + i % 50000}", weight=w), backend)
        for i, w in enumerate(weights)
    ]


def best_of(repeat: int, run: Callable[[], object], before: Callable[[], object] | None = None) -> float:
    """The least CPU time of `repeat` runs of `run`, in seconds."""
    best = float("inf")
    for _ in range(repeat):
        if before is not None:
            before()
        start = time.process_time()
        run()
        best = min(best, time.process_time() - start)
    return best


def bench_tables(repeat: int) -> None:
    print(f"Table builds (M = {M}), best of {repeat}, CPU time:")
    print(f"  {'':38} {'N = 100':>10} {'N = 1000':>10}")
    rows: dict[str, list[float]] = {
        "maglev: paper table, from scratch": [],
        "maglev: stable table, one server down": [],
        "ring: 4 points per weight, weight 100": [],
        "ring: rebuild (points cached)": [],
    }
    for n in (100, 1000):
        backend = f"bench-{n}"
        full = servers([100] * n, backend)
        identities = [s.name.encode() for s in full]
        weights = [100] * n
        rest = identities[: n // 2] + identities[n // 2 + 1 :]
        rows["maglev: paper table, from scratch"].append(
            best_of(repeat, partial(maglev.build_table, identities, weights, M))
        )
        rows["maglev: stable table, one server down"].append(
            best_of(
                repeat,
                partial(maglev.stable_table, backend, rest, weights[1:], M),
                partial(maglev.stable_table, backend, identities, weights, M),
            )
        )
        rows["ring: 4 points per weight, weight 100"].append(
            best_of(repeat, partial(Ring, full), server_points.cache_clear)
        )
        rows["ring: rebuild (points cached)"].append(best_of(repeat, partial(Ring, full)))
    for label, figures in rows.items():
        print(f"  {label:38} " + " ".join(f"{f * 1000:8.1f}ms" for f in figures))


def keyed_picks(selector: Selector, keys: list[bytes]) -> None:
    pick = selector.pick
    for key in keys:
        pick(key, None)


def plain_picks(selector: Selector, count: int) -> None:
    pick = selector.pick
    for _ in range(count):
        pick(None, None)


def bench_picks(repeat: int, picks: int) -> None:
    weights = [100, 50, 200, 100, 150, 256, 100, 30, 100, 80]
    rng = random.Random(1)
    keys = [rng.randbytes(rng.randint(4, 24)) for _ in range(picks)]
    print(f"\nPicks over {len(weights)} servers of mixed weights, {picks} picks, best of {repeat}, CPU time:")
    print(f"  {'algorithm':22} {'picks/s':>12} {'per pick':>10}")
    for name in REGISTRY:
        group = servers(weights, f"picks-{name}")
        options: dict[str, Any] = {"rng": random.Random(2)} if name == "random" else {}
        selector = build_selector(name, group, **options)
        if name in USES_KEY:
            seconds = best_of(repeat, partial(keyed_picks, selector, keys))
        else:
            seconds = best_of(repeat, partial(plain_picks, selector, picks))
        label = name + (" (keyed)" if name in USES_KEY else "")
        print(f"  {label:22} {picks / seconds:12,.0f} {seconds / picks * 1e6:8.2f}µs")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--picks", type=int, default=200_000)
    args = parser.parse_args()
    print(f"Python {platform.python_version()} on {platform.machine()}, {platform.system()}\n")
    bench_tables(args.repeat)
    bench_picks(args.repeat, args.picks)


if __name__ == "__main__":
    main()
