"""Command-line entry point: `balancer run|check|demo` (SPEC.md "Commands")."""

from __future__ import annotations

import argparse
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
    demo.add_argument("--stats-port", type=int, default=8404, help="where the stats page is (default 8404)")

    ctl = commands.add_parser("ctl", help="runtime API client: show servers|stats|bgp|dns|vrrp, set server, reload")
    where = ctl.add_mutually_exclusive_group()
    where.add_argument("--socket", default=None, help="admin unix socket (default /run/balancer/admin.sock)")
    where.add_argument("--url", default=None, help="admin API over TCP, e.g. http://127.0.0.1:9100")
    ctl.add_argument("--json", action="store_true", help="print JSON for scripts")
    ctl.add_argument("words", nargs="*", metavar="COMMAND")

    agent = commands.add_parser("agent", help="agent-check responder for a server host")
    agent.add_argument("--port", type=int, required=True)
    agent.add_argument("--state-file", default=None, help="file holding up|drain|maint|down [NN%%]")
    agent.add_argument("--host", default="", help="address to listen on (default: all)")

    imported = commands.add_parser("import-haproxy", help="print the TOML equivalent of an haproxy.cfg")
    imported.add_argument("file", type=Path, metavar="FILE")
    imported.add_argument(
        "--accept-loss",
        action="store_true",
        help="write the translation even when directives that allow, deny, redirect, authenticate or strip "
        "cannot be translated (each is recorded as a comment in the output)",
    )
    imported.add_argument(
        "--haproxy-version",
        default=None,
        metavar="X.Y",
        help="the HAProxy version whose .if blocks are taken (default 2.6)",
    )

    worker = commands.add_parser("worker")  # started by the master, not by people
    worker.add_argument("--name", required=True)
    worker.add_argument("--generation", type=int, default=1)
    worker.add_argument("--slot", type=int, default=0)

    args = parser.parse_args(argv)
    if args.command == "worker":
        from balancer.worker import run_worker

        return run_worker(args.name, args.generation, args.slot)
    if args.command == "check":
        return cmd_check(args.config)
    if args.command == "run":
        return cmd_run(args.config)
    if args.command == "ctl":
        from balancer.admin.ctl import DEFAULT_SOCKET, run_ctl

        return run_ctl(args.url or args.socket or DEFAULT_SOCKET, args.json, args.words)
    if args.command == "agent":
        from balancer.agent import run_agent

        return run_agent(args.port, args.state_file, args.host)
    if args.command == "import-haproxy":
        return cmd_import_haproxy(args.file, accept_loss=args.accept_loss, haproxy_version=args.haproxy_version)
    if args.command == "demo":
        from balancer.demo import run_demo

        return run_demo(args.port, args.stats_port)
    return 2


def cmd_check(path: Path) -> int:
    from balancer.config import ConfigError, read_config_text
    from balancer.server import parse_runnable

    try:
        parse_runnable(read_config_text(path), str(path))
    except ConfigError as exc:
        for problem in exc.problems:
            print(problem)
        return 1
    print("configuration is valid")
    return 0


def cmd_run(path: Path) -> int:
    from balancer.stats.eventlog import setup_event_log
    from balancer.supervisor import run_master

    setup_event_log()
    return run_master(path)


def log_format_problem(template: str) -> str:
    """Why balancer's access log cannot use this HAProxy log-format template, or ""."""
    from balancer.stats.logformat import LogFormatError, LogTemplate

    try:
        LogTemplate(template)
    except LogFormatError as exc:
        return str(exc)
    return ""


def cmd_import_haproxy(path: Path, *, accept_loss: bool = False, haproxy_version: str | None = None) -> int:
    """Print the translation on stdout, what was not translated on stderr. Exit 1, printing
    no translation, when the file cannot be read or is not a text configuration, when
    HAProxy itself would refuse it, when a directive that allows, denies, redirects,
    authenticates or strips cannot be translated (unless `accept_loss`: the translation
    is then weaker than its source and says so in comments), or when the translation does
    not pass our own validation."""
    from balancer.config.haproxy import read_haproxy_file, serves, translate, validate
    from balancer.config.haproxy.conditions import DEFAULT_VERSION, parse_version

    version = haproxy_version or DEFAULT_VERSION
    if parse_version(version) is None:
        print(f"--haproxy-version {version!r}: expected a version such as 2.8", file=sys.stderr)
        return 1
    text, problem, notes = read_haproxy_file(path)
    if text is None:
        print(problem, file=sys.stderr)
        return 1
    for note in notes:
        print(note, file=sys.stderr)
    try:
        result = translate(
            text,
            str(path),
            base_dir=path.parent,
            accept_loss=accept_loss,
            haproxy_version=version,
            log_format_problem=log_format_problem,
        )
    except Exception as exc:  # a defect of ours: say so in one line, never a traceback
        print(
            f"{path}: import-haproxy failed ({type(exc).__name__}: {exc}); please report it with this file",
            file=sys.stderr,
        )
        return 1
    for warning in result.warnings:
        print(warning, file=sys.stderr)
    if result.errors:
        for error in result.errors:
            print(f"{error} (HAProxy refuses this file)", file=sys.stderr)
        return 1
    if result.losses:
        for loss in result.losses:
            print(f"{loss} [weaker: the directive allows, denies, redirects, authenticates or strips]", file=sys.stderr)
        if not accept_loss:
            print(
                f"{path}: not imported: without these {len(result.losses)} directive(s) the configuration would be "
                "weaker than its source; fix them, or pass --accept-loss to import without them knowingly",
                file=sys.stderr,
            )
            return 1
    problems = validate(result.toml, "<translated>", base_dir=path.parent)
    if problems:
        print(f"{path}: the translation is not a valid configuration (a bug in import-haproxy):", file=sys.stderr)
        for problem in problems:
            print(f"  {problem}", file=sys.stderr)
        return 1
    if not serves(result.toml):
        print(f"{path}: nothing to serve: no frontend could be translated (see the lines above)", file=sys.stderr)
        return 1
    sys.stdout.write(result.toml)
    return 0
