"""Command-line entry point: `balancer run|check|demo` (SPEC.md "Commands")."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from pathlib import Path

from balancer import __version__


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="balancer", description="A software load balancer.")
    parser.add_argument("--version", action="version", version=f"balancer {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = commands.add_parser("run", help="run in the foreground until SIGTERM/SIGINT")
    run.add_argument("-c", "--config", required=True, type=Path, metavar="FILE")
    check = commands.add_parser("check", help="validate a configuration file")
    check.add_argument("-c", "--config", required=True, type=Path, metavar="FILE")
    demo = commands.add_parser("demo", help="run three demo web servers behind a balancer")
    demo.add_argument("--port", type=int, default=8080, help="where the balancer listens (default 8080)")

    args = parser.parse_args(argv)
    if args.command == "check":
        return cmd_check(args.config)
    if args.command == "run":
        return cmd_run(args.config)
    if args.command == "demo":
        from balancer.demo import run_demo

        return run_demo(args.port)
    return 2


def setup_event_log(level: int = logging.INFO) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s: %(message)s"))
    root = logging.getLogger("balancer")
    root.handlers[:] = [handler]
    root.setLevel(level)
    root.propagate = False


def cmd_check(path: Path) -> int:
    from balancer.config import ConfigError, load_config

    try:
        load_config(path)
    except ConfigError as exc:
        for problem in exc.problems:
            print(problem)
        return 1
    print("configuration is valid")
    return 0


def cmd_run(path: Path) -> int:
    from balancer.config import ConfigError, load_config

    setup_event_log()
    try:
        config = load_config(path)
    except ConfigError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        return 1
    import uvloop

    try:
        return uvloop.run(_serve(path, config))
    except KeyboardInterrupt:
        return 0


async def _serve(path: Path, config: object) -> int:
    from balancer.config import ConfigError, load_config
    from balancer.config.model import Config
    from balancer.server import Balancer, UnsupportedConfig

    assert isinstance(config, Config)
    log = logging.getLogger("balancer")
    loop = asyncio.get_running_loop()
    try:
        balancer = Balancer(config)
        await balancer.start()
    except (OSError, UnsupportedConfig) as exc:
        log.error("%s", exc)
        return 1
    stop = asyncio.Event()
    stops = 0

    def on_stop() -> None:
        nonlocal stops
        stops += 1
        if stops > 1:
            log.warning("second stop signal: stopping at once")
            balancer.access_log.flush()
            raise SystemExit(0)
        log.info("stopping: finishing requests in flight (grace %ss)", balancer.config.global_.grace)
        stop.set()

    async def reload() -> None:
        try:
            new_config = load_config(path)
            await balancer.reload(new_config)
        except ConfigError as exc:
            for problem in exc.problems:
                log.error("reload refused: %s", problem)
        except (OSError, UnsupportedConfig) as exc:
            log.error("reload refused: %s", exc)

    loop.add_signal_handler(signal.SIGTERM, on_stop)
    loop.add_signal_handler(signal.SIGINT, on_stop)
    loop.add_signal_handler(signal.SIGHUP, lambda: loop.create_task(reload()))
    loop.add_signal_handler(signal.SIGUSR1, balancer.access_log.open)
    log.info("balancer %s running with %s", __import__("balancer").__version__, path)
    await stop.wait()
    await balancer.stop()
    log.info("stopped")
    return 0
