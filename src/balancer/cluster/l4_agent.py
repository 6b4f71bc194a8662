"""`python -m balancer.cluster.l4_agent FILE`: run the `[[l4]]` tables of FILE in this
network namespace until stdin closes: the kernel programming (balancer.cluster.l4) and the
health checks of the L7 nodes (balancer.cluster.l4_health).

A stand-in for the supervisor child `balancer run` will own: the tests drive it inside
`ip netns exec`. Commands, one per line on stdin:
    down TABLE NODE   an operator takes the node out: no new flows (established ones stay)
    up TABLE NODE     the operator puts it back (it takes flows again while healthy)
    stop              undo everything and exit (so does end of input or SIGTERM)
Lines it prints: `ready`, `ok CHANGED_SLOTS SECONDS KERNEL_SECONDS` (the whole update, and
the nft transaction in it), `health TABLE NODE up|down REASON`, `error MESSAGE`.
"""

from __future__ import annotations

import asyncio
import signal
import sys
import threading

from balancer.cluster.l4 import L4Error, L4Node
from balancer.cluster.l4_health import L4Health
from balancer.cluster.nft import NftError
from balancer.config import ConfigError, load_config


def _say(line: str) -> None:
    print(line, flush=True)


def _health_event(table: str, node: str, state: str, reason: str) -> None:
    _say(f"health {table} {node} {state} {reason}")


def _read_stdin(loop: asyncio.AbstractEventLoop, lines: asyncio.Queue[str]) -> None:
    """In a daemon thread (a blocked read must not keep the process alive after SIGTERM):
    every line of stdin, then "" at its end."""
    for line in sys.stdin:
        loop.call_soon_threadsafe(lines.put_nowait, line)
    loop.call_soon_threadsafe(lines.put_nowait, "")


async def _serve(node: L4Node, names: list[str]) -> None:
    health = L4Health(node, _health_event)
    health.start()
    loop = asyncio.get_running_loop()
    lines: asyncio.Queue[str] = asyncio.Queue()
    threading.Thread(target=_read_stdin, args=(loop, lines), daemon=True).start()
    loop.add_signal_handler(signal.SIGTERM, lines.put_nowait, "")
    try:
        while True:
            line = await lines.get()
            words = line.split()
            if not line or words == ["stop"]:
                break
            if len(words) != 3 or words[0] not in ("up", "down") or words[1] not in names:
                _say(f"error cannot parse {line.strip()!r}")
                continue
            try:
                changed = await health.set_admin(names.index(words[1]), words[2], words[0] == "down")
            except NftError as exc:
                _say(f"error {exc}")
                continue
            _say(f"ok {changed} {node.last_update_seconds:.4f} {node.last_kernel_seconds:.4f}")
    finally:
        await health.stop()


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m balancer.cluster.l4_agent FILE", file=sys.stderr)
        return 2
    try:
        config = load_config(argv[0])
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 1
    node = L4Node(config.l4)
    try:
        node.start()
    except L4Error as exc:
        _say(f"error {exc}")
        return 1
    try:
        _say("ready")
        asyncio.run(_serve(node, [table.name for table in config.l4]))
    finally:
        node.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
