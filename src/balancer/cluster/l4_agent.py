"""`python -m balancer.cluster.l4_agent FILE`: run the `[[l4]]` tables of FILE in this
network namespace until stdin closes, taking health changes as lines on stdin.

A stand-in for the supervisor child `balancer run` will own (it runs no health checks
itself): the tests drive it inside `ip netns exec`. Commands, one per line:
    down TABLE NODE   the node takes no new flows (its established flows stay)
    up TABLE NODE     the node takes new flows again
    stop              undo everything and exit (so does end of input or SIGTERM)
Answers, one line each: `ready`, `ok CHANGED_SLOTS SECONDS KERNEL_SECONDS` (the whole
update, and the nft transaction in it), `error MESSAGE`.
"""

from __future__ import annotations

import signal
import sys
from types import FrameType

from balancer.cluster.l4 import L4Error, L4Node
from balancer.cluster.nft import NftError
from balancer.config import ConfigError, load_config


def _interrupted(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(0)


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
    signal.signal(signal.SIGTERM, _interrupted)
    try:
        node.start()
    except L4Error as exc:
        print(f"error {exc}", flush=True)
        return 1
    names = [table.name for table in config.l4]
    try:
        print("ready", flush=True)
        for line in sys.stdin:
            words = line.split()
            if words == ["stop"]:
                break
            if len(words) != 3 or words[0] not in ("up", "down") or words[1] not in names:
                print(f"error cannot parse {line.strip()!r}", flush=True)
                continue
            index = names.index(words[1])
            usable = set(node.usable[index])
            if words[0] == "up":
                usable.add(words[2])
            else:
                usable.discard(words[2])
            try:
                changed = node.set_usable(index, usable)
            except NftError as exc:
                print(f"error {exc}", flush=True)
                continue
            print(f"ok {changed} {node.last_update_seconds:.4f} {node.last_kernel_seconds:.4f}", flush=True)
    finally:
        node.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
