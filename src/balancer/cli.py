"""Command-line entry point: `balancer run|check|demo`."""

from __future__ import annotations

import argparse


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="balancer")
    parser.add_subparsers(dest="command", required=True)
    parser.parse_args(argv)
    return 0
