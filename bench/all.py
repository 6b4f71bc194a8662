#!/usr/bin/env python3
"""Every benchmark in one command: the table with ratios, one JSON, PNG plots in bench/results/.

Runs, each as its own process (each is also runnable alone, see bench/README.md):

- `run.py`     HTTP: varied heads (the default workload) and identical heads, keep-alive and
               `Connection: close`, POST bodies of 1 KiB and 100 KiB; HAProxy, NGINX, pyfloor,
               python-pyproxy, balancer; `--repeat` interleaved rounds, medians.
- `tls.py`     full handshakes ECDSA / RSA, TLS keep-alive, idle plain and TLS connections at
               scale (RSS, time to open); HAProxy and balancer.
- `tcp.py`     L4 `mode = "tcp"`: bulk throughput (iperf3) and new connections; HAProxy
               `mode tcp`, pproxy on uvloop, balancer.
- `h2.py`      HTTP/2 (h2load, 1 and 100 streams per connection) over TLS ALPN h2 and h2c;
               HAProxy and balancer.
- `latency.py` added p50 / p99 latency at half of the lowest peak.

then prints one summary table (balancer, HAProxy, balancer/HAProxy, the best Python peer), writes
everything to bench/results/all-latest.json (and a dated copy) and draws bench/results/*.png
with bench/plot.py (matplotlib: the `bench` extra, or bench/.venv-peers from bench/peers.py).

    .venv/bin/python bench/all.py                 # the real run: --duration 10 --repeat 3
    .venv/bin/python bench/all.py --quick         # smoke: 1 s runs, tiny counts, HAProxy + balancer

The exit status is 1 when a part failed (its figures are then missing from the summary).
"""

from __future__ import annotations

import argparse
import datetime
import json
import shlex
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import peers  # bench/peers.py: the venv that has matplotlib when the project's has not
import run as harness  # bench/run.py: defaults shared by every part

BENCH = Path(__file__).resolve().parent
DEFAULT_DIR = BENCH / "results"
PARTS = ("run", "tls", "tcp", "h2", "latency")


def part_argv(args: argparse.Namespace, part: str, output: Path) -> list[str]:
    """The command line of one part, from all.py's options."""
    common = ["--balancer-cmd", args.balancer_cmd, "--output", str(output), "--duration", str(args.duration)]
    quick = args.quick
    if part == "run":
        only = "haproxy,balancer" if quick else "haproxy,nginx,pyfloor,pyproxy,balancer"
        extra = ["--only", only, "--repeat", str(args.repeat), "--warmup", "0" if quick else "1"]
    elif part == "tls":
        extra = ["--idle-plain", str(args.idle_plain), "--idle-tls", str(args.idle_tls), "--repeat", str(args.repeat)]
        extra += ["--clients", "1"] if quick else []
    elif part == "tcp":
        extra = ["--only", "haproxy,balancer" if quick else "haproxy,pproxy,balancer", "--repeat", str(args.repeat)]
        extra += ["--warmup", "0"] if quick else []
    elif part == "h2":
        # Quick: h2c only (4 one-second runs per proxy); the TLS runs are in the real run.
        extra = ["--warmup", "0", "--transports", "h2c"] if quick else ["--repeat", str(args.repeat)]
    else:
        extra = ["--only", "haproxy,balancer" if quick else "haproxy,nginx,balancer"]
        extra += ["--warmup", "0"] if quick else []
    return [sys.executable, str(BENCH / f"{part}.py"), *common, *extra]


def run_parts(args: argparse.Namespace, tmp_outputs: dict[str, Path]) -> dict[str, int]:
    codes: dict[str, int] = {}
    for part in args.parts:
        argv = part_argv(args, part, tmp_outputs[part])
        harness.progress(f"\n=== {part}: {shlex.join(argv)}")
        # Each part prints its own tables as it goes; ours comes at the end.
        codes[part] = subprocess.call(argv)
    return codes


def load(path: Path) -> dict[str, object] | None:
    try:
        data: dict[str, object] = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data


# --------------------------------------------------------------------------- summary


Row = tuple[str, float | None, float | None, float | None, str]  # measure, balancer, haproxy, peer, peer name


def rows_run(data: dict[str, object]) -> list[Row]:
    results = data.get("results", [])
    assert isinstance(results, list)
    by = {(r["proxy"], r["scenario"]): r["rps_per_core"] for r in results}
    rows: list[Row] = []
    for scenario in harness.SCENARIOS:
        if ("balancer", scenario) in by or ("haproxy", scenario) in by:
            peer = by.get(("pyproxy", scenario))
            rows.append(
                (
                    f"HTTP {scenario}: req/s per core",
                    by.get(("balancer", scenario)),
                    by.get(("haproxy", scenario)),
                    peer,
                    "pyproxy",
                )
            )
    return rows


def rows_tls(data: dict[str, object]) -> list[Row]:
    rows: list[Row] = []
    hs = {(h["proxy"], h["key"]): h for h in data.get("handshakes", [])}  # type: ignore[union-attr]
    for key in ("ecdsa", "rsa"):
        b, h = hs.get(("balancer", key)), hs.get(("haproxy", key))
        rows.append((f"TLS {key} handshakes per core", b and b["per_core"], h and h["per_core"], None, ""))
    ka = {(k["proxy"], k["heads"]): k for k in data.get("keepalive", [])}  # type: ignore[union-attr]
    for heads in ("varied", "identical"):
        b, h = ka.get(("balancer", heads)), ka.get(("haproxy", heads))
        rows.append((f"TLS keep-alive {heads}: req/s per core", b and b["per_core"], h and h["per_core"], None, ""))
    idle = {(i["proxy"], i["kind"]): i for i in data.get("idle", [])}  # type: ignore[union-attr]
    for kind in ("plain", "tls"):
        b, h = idle.get(("balancer", kind)), idle.get(("haproxy", kind))
        if b or h:
            held = (b or h)["wanted"]  # type: ignore[index]
            mib = [x and round(x["rss_after"] / 2**20, 1) for x in (b, h)]
            rows.append((f"{held} idle {kind}: RSS MiB (lower is better)", mib[0], mib[1], None, ""))
            requested = (b or h).get("requested", held)  # type: ignore[union-attr]
            if requested > held:  # capped by the open-files limit: RSS extrapolated per connection
                at = [x and x.get("rss_at_requested") and round(x["rss_at_requested"] / 2**20, 1) for x in (b, h)]
                rows.append((f"{requested} idle {kind}: RSS MiB, extrapolated", at[0], at[1], None, ""))
            secs = [x and x["open_seconds"] for x in (b, h)]
            rows.append((f"{held} idle {kind}: seconds to open (lower is better)", secs[0], secs[1], None, ""))
    return rows


def rows_tcp(data: dict[str, object]) -> list[Row]:
    bulk = {b["proxy"]: b["gbit_per_core"] for b in data.get("bulk", [])}  # type: ignore[union-attr]
    conns = {c["proxy"]: c["per_core"] for c in data.get("connections", [])}  # type: ignore[union-attr]
    return [
        ("L4 bulk: Gbit per core", bulk.get("balancer"), bulk.get("haproxy"), bulk.get("pproxy"), "pproxy"),
        ("L4 new connections per core", conns.get("balancer"), conns.get("haproxy"), conns.get("pproxy"), "pproxy"),
    ]


def rows_h2(data: dict[str, object]) -> list[Row]:
    per_core = {(r["proxy"], r["transport"], r["streams"]): r["rps_per_core"] for r in data.get("runs", [])}  # type: ignore[union-attr]
    keys = sorted({(transport, streams) for _, transport, streams in per_core})
    return [
        (
            f"HTTP/2 {t} -m{m}: req/s per core",
            per_core.get(("balancer", t, m)),
            per_core.get(("haproxy", t, m)),
            None,
            "",
        )
        for t, m in keys
    ]


def rows_latency(data: dict[str, object]) -> list[Row]:
    paced = {p["target"]: p for p in data.get("paced", [])}  # type: ignore[union-attr]
    b, h = paced.get("balancer"), paced.get("haproxy")
    return [
        (f"added {q} ms at half peak (lower is better)", b and b[f"added_{q}_ms"], h and h[f"added_{q}_ms"], None, "")
        for q in ("p50", "p99")
    ]


def summary_rows(sections: dict[str, dict[str, object]]) -> list[Row]:
    makers = {"run": rows_run, "tls": rows_tls, "tcp": rows_tcp, "h2": rows_h2, "latency": rows_latency}
    return [row for part, data in sections.items() for row in makers[part](data)]


def summary_table(rows: list[Row]) -> str:
    def num(value: float | None) -> str:
        if value is None:
            return "-"
        return f"{value:,.0f}" if abs(value) >= 100 else f"{value:.2f}"

    header = ("measure", "balancer", "HAProxy", "balancer/HAProxy", "Python peer", "balancer/peer")
    lines = []
    for measure, mine, theirs, peer, peer_name in rows:
        ratio = harness.fmt(mine / theirs if mine is not None and theirs else None, "{:.2f}x")
        peer_ratio = harness.fmt(mine / peer if mine is not None and peer else None, "{:.2f}x")
        lines.append(
            (measure, num(mine), num(theirs), ratio, f"{peer_name} {num(peer)}" if peer_name else "", peer_ratio)
        )
    return harness.text_table(header, lines)


def draw(json_path: Path, out_dir: Path) -> list[str]:
    """Draw the PNGs with a Python that has matplotlib: ours, else the peers' venv."""
    python = sys.executable
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        try:
            python = str(peers.require())
        except peers.NotInstalled as exc:
            harness.progress(f"no plots: matplotlib is not installed here and {exc}")
            return []
    done = subprocess.run(
        [python, str(BENCH / "plot.py"), str(json_path), str(out_dir)], capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        harness.progress(f"no plots: plot.py failed: {done.stderr.strip()[-400:]}")
        return []
    return done.stdout.split()


# --------------------------------------------------------------------------- main


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="smoke run: 1 s, tiny idle counts, HAProxy + balancer")
    p.add_argument("--duration", type=int, default=None, help="seconds per measured run (default 10, quick 1)")
    p.add_argument(
        "--repeat",
        type=int,
        default=None,
        help="rounds of run.py, tls.py, tcp.py and h2.py, medians (default 3, quick 1)",
    )
    p.add_argument("--idle-plain", type=int, default=None, help="idle plain connections (default 120000, quick 200)")
    p.add_argument("--idle-tls", type=int, default=None, help="idle TLS connections (default 40000, quick 100)")
    p.add_argument("--parts", type=harness.csv_choice(PARTS), default=list(PARTS), help="e.g. run,tcp")
    p.add_argument("--balancer-cmd", default=harness.DEFAULT_BALANCER_CMD, help="as in bench/run.py")
    p.add_argument("--output-dir", type=Path, default=DEFAULT_DIR, help="JSON and PNGs (default: %(default)s)")
    p.add_argument("--no-plots", action="store_true", help="skip the PNGs")
    p.add_argument(
        "--from-parts",
        action="store_true",
        help="run nothing: build the summary, JSON and PNGs from the part files already in --output-dir",
    )
    args = p.parse_args(argv)
    defaults = {"duration": (10, 1), "repeat": (3, 1), "idle_plain": (120_000, 200), "idle_tls": (40_000, 100)}
    for name, (normal, quick) in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, quick if args.quick else normal)
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    out_dir: Path = args.output_dir
    out_dir.mkdir(parents=True, exist_ok=True)
    outputs = {part: out_dir / f"{part}-part.json" for part in args.parts}
    started = datetime.datetime.now(datetime.UTC)
    if args.from_parts:
        codes: dict[str, int] = {}
    else:
        for path in outputs.values():
            path.unlink(missing_ok=True)  # never report a previous run's figures as this one's
        try:
            codes = run_parts(args, outputs)
        except KeyboardInterrupt:
            harness.progress("interrupted")
            return 130
    sections = {part: data for part, path in outputs.items() if (data := load(path)) is not None}
    rows = summary_rows(sections)
    report: dict[str, object] = {
        "date": started.isoformat(timespec="seconds"),
        "command": shlex.join([Path(sys.executable).name, *sys.argv]),
        "options": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "exit_codes": codes,
        "summary": [{"measure": m, "balancer": b, "haproxy": h, "peer": p, "peer_name": n} for m, b, h, p, n in rows],
        **sections,
    }
    latest = out_dir / "all-latest.json"
    harness.write_json(latest, report)
    harness.write_json(out_dir / f"all-{started:%Y%m%dT%H%M%SZ}.json", report)
    print(f"\n=== summary ({started:%Y-%m-%d %H:%M} UTC; compare within this run only)")
    print(summary_table(rows))
    plots = [] if args.no_plots else draw(latest, out_dir)
    harness.progress(f"\nJSON: {latest}" + (f"\nplots: {' '.join(plots)}" if plots else ""))
    missing = [part for part in args.parts if part not in sections]
    if missing:
        harness.progress(f"parts without results: {', '.join(missing)}")
    return 1 if missing or any(codes.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
