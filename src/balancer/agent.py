"""`balancer agent`: the agent-check responder to run on a server host.

Each TCP connection gets one line in HAProxy's agent protocol, then the connection closes:
the state written in the state file (`up`, `drain`, `maint`, `down`; anything else or no
file means `up`) and a weight percentage from the host's load: 100% when idle, falling
with the one-minute load average per core, never below 1% while up. Operators drain a
server with `echo drain > FILE` and bring it back with `echo up > FILE`, or pin a weight
with a line such as `up 50%`. A file emptied in the last 2 seconds keeps the last state
read from it: `echo` truncates the file before it writes, and a check landing in between
must not bring a drained server back for one interval. Emptied for longer, it means `up`.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import sys
import time

_STATES = ("up", "drain", "maint", "down", "ready")
# The words last read from each state file that was not empty.
_last_words: dict[str, list[str]] = {}
_REWRITE_GRACE = 2.0  # seconds an empty state file counts as being rewritten


def load_percent() -> int:
    """A weight share from the load average per core: 100 idle, 1 at one runnable task per core."""
    try:
        load = os.getloadavg()[0]
    except OSError:
        return 100
    cores = os.cpu_count() or 1
    return max(1, min(100, round(100 * (1 - load / cores))))


def reply(state_file: str | None) -> bytes:
    state, percent = "up", None
    if state_file:
        try:
            with open(state_file, encoding="utf-8") as handle:
                text = handle.read(256)
                emptied_at = os.fstat(handle.fileno()).st_mtime
        except OSError:
            text, emptied_at = None, 0.0
        words: list[str] = []
        if text is None:  # no file: up
            _last_words.pop(state_file, None)
        elif text:
            words = _last_words[state_file] = text.split("#", 1)[0].lower().split()
        elif time.time() - emptied_at < _REWRITE_GRACE:  # being rewritten
            words = _last_words.get(state_file, [])
        else:
            _last_words.pop(state_file, None)
        for word in words:
            if word in _STATES:
                state = word
            elif re.fullmatch(r"\d{1,3}%", word):
                percent = min(100, int(word[:-1]))
    if percent is None:
        percent = load_percent()
    return f"{state} {percent}%\n".encode()


async def _serve(port: int, state_file: str | None, host: str) -> int:
    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            writer.write(reply(state_file))
            await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(answer, host or None, port)
    print(f"balancer agent: listening on {host or '*'}:{port}, state file {state_file or '(none)'}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    await stop.wait()
    server.close()
    return 0


def run_agent(port: int, state_file: str | None, host: str = "") -> int:
    try:
        return asyncio.run(_serve(port, state_file, host))
    except OSError as exc:
        print(f"balancer agent: cannot listen on port {port}: {exc.strerror}", file=sys.stderr)
        return 1
