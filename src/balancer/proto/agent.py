"""The agent-check protocol (HAProxy's `agent-check`), sans I/O.

An agent answers a TCP connection with one line of ASCII words, in any order, separated
by spaces, commas or tabs, optionally followed by `#` and a comment:

    up 75%          ready, at 75% of the configured weight
    drain # load    no new sessions
    maint           nothing
    down            health down (also: fail, stopped)

`parse_agent_reply` accepts that and returns what it said; words it does not know are
ignored (HAProxy does the same), so agents may send more than we understand. Each reply
is the agent's whole view: a reply without drain/maint means ready (so `up 50%` after
`drain` ends the drain), one without down means up; a weight persists until replaced.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_WORD = re.compile(r"[\s,]+")
_PERCENT = re.compile(r"^(\d{1,3})%$")


@dataclass(frozen=True)
class AgentReply:
    admin_state: str | None = None  # "ready", "drain" or "maint" when the agent said so
    health: str | None = None  # "up" or "down" when the agent said so
    weight_percent: int | None = None  # 0..100
    comment: str = ""


class AgentReplyError(ValueError):
    pass


def parse_agent_reply(data: bytes) -> AgentReply:
    """Parse the first line of an agent's reply. Raises AgentReplyError when it says nothing."""
    line = data.split(b"\n", 1)[0].decode("ascii", "replace").strip()
    text, _, comment = line.partition("#")
    admin_state: str | None = None
    health: str | None = None
    percent: int | None = None
    for word in _WORD.split(text.strip().lower()):
        if not word:
            continue
        if word == "up":
            health = "up"
        elif word == "ready":
            admin_state = "ready"
        elif word in ("drain", "maint"):
            admin_state = word
        elif word in ("down", "fail", "failed", "stopped"):
            health = "down"
        elif match := _PERCENT.match(word):
            percent = min(int(match.group(1)), 100)
    if admin_state is None and health is None and percent is None:
        raise AgentReplyError(f"agent reply says nothing usable: {line!r}")
    return AgentReply(admin_state, health, percent, comment.strip())
