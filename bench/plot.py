#!/usr/bin/env python3
"""Draw the PNGs of one bench/all.py run: `plot.py all-latest.json OUT_DIR` (needs matplotlib).

One figure per part, grouped bars per proxy: http.png (req/s per proxy core per scenario),
tls.png (handshakes and keep-alive per core; idle RSS per connection), tcp.png (L4 bulk and new
connections per core), latency.png (p50 / p99 at half of peak), ratios.png (balancer/HAProxy of
every summary row, 1.0 marked). Prints the paths written.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt


def grouped(ax: Any, groups: Sequence[str], series: dict[str, Sequence[float | None]], title: str, unit: str) -> None:
    """Bars of each series (a proxy) side by side within each group (a scenario)."""
    width = 0.8 / max(len(series), 1)
    for n, (name, values) in enumerate(series.items()):
        xs = [g + n * width for g in range(len(groups))]
        ax.bar(xs, [v or 0 for v in values], width, label=name)
    ax.set_xticks([g + 0.4 - width / 2 for g in range(len(groups))], groups, rotation=20, ha="right", fontsize=8)
    ax.set_title(title, fontsize=10)
    ax.set_ylabel(unit, fontsize=8)
    ax.legend(fontsize=7)


def by_proxy(rows: list[dict[str, Any]], key: str, group: str, value: str) -> tuple[list[str], dict[str, list[Any]]]:
    groups = list(dict.fromkeys(r[group] for r in rows))
    proxies = list(dict.fromkeys(r[key] for r in rows))
    table = {(r[key], r[group]): r[value] for r in rows}
    return groups, {p: [table.get((p, g)) for g in groups] for p in proxies}


def save(fig: Any, path: Path, written: list[str]) -> None:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    written.append(str(path))


def main(argv: Sequence[str]) -> int:
    data = json.loads(Path(argv[0]).read_text())
    out = Path(argv[1])
    date = str(data.get("date", ""))[:16]
    written: list[str] = []
    if "run" in data:
        groups, series = by_proxy(data["run"]["results"], "proxy", "scenario", "rps_per_core")
        fig, ax = plt.subplots(figsize=(9, 4.5))
        grouped(ax, groups, series, f"HTTP: req/s per proxy core ({date})", "req/s per proxy CPU second")
        save(fig, out / "http.png", written)
    if "tls" in data:
        tls = data["tls"]
        fig, axes = plt.subplots(1, 3, figsize=(12, 4))
        groups, series = by_proxy(tls["handshakes"], "proxy", "key", "per_core")
        grouped(axes[0], groups, series, "TLS full handshakes per core", "handshakes / CPU s")
        groups, series = by_proxy(tls["keepalive"], "proxy", "heads", "per_core")
        grouped(axes[1], groups, series, "TLS keep-alive req/s per core", "req/s / CPU s")
        idle = [{**i, "kib": (i["per_connection"] or 0) / 1024} for i in tls["idle"]]
        groups, series = by_proxy(idle, "proxy", "kind", "kib")
        grouped(axes[2], groups, series, "idle connection RSS", "KiB per connection")
        save(fig, out / "tls.png", written)
    if "tcp" in data:
        tcp = data["tcp"]
        fig, axes = plt.subplots(1, 2, figsize=(9, 4))
        bulk = [{**b, "what": "bulk"} for b in tcp["bulk"]]
        groups, series = by_proxy(bulk, "proxy", "what", "gbit_per_core")
        grouped(axes[0], groups, series, "L4 bulk", "Gbit per proxy CPU second")
        conns = [{**c, "what": "new connections"} for c in tcp["connections"]]
        groups, series = by_proxy(conns, "proxy", "what", "per_core")
        grouped(axes[1], groups, series, "L4 new connections", "connections per proxy CPU second")
        save(fig, out / "tcp.png", written)
    if "latency" in data:
        paced = data["latency"]["paced"]
        rows = [{"target": p["target"], "q": q, "ms": p[f"{q}_ms"]} for p in paced for q in ("p50", "p90", "p99")]
        groups, series = by_proxy(rows, "target", "q", "ms")
        fig, ax = plt.subplots(figsize=(7, 4))
        grouped(ax, groups, series, "latency at half of peak (direct = backend alone)", "ms")
        save(fig, out / "latency.png", written)
    ratios = [
        (row["measure"], row["balancer"] / row["haproxy"])
        for row in data.get("summary", [])
        if row["balancer"] is not None and row["haproxy"]
    ]
    if ratios:
        fig, ax = plt.subplots(figsize=(9, 0.35 * len(ratios) + 1))
        ax.barh([m for m, _ in ratios], [r for _, r in ratios])
        ax.axvline(1.0, color="black", linewidth=0.8)
        ax.invert_yaxis()
        ax.tick_params(labelsize=7)
        ax.set_title(f"balancer / HAProxy ({date}; 'lower is better' rows: below 1 is better)", fontsize=9)
        save(fig, out / "ratios.png", written)
    print("\n".join(written))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
