#!/usr/bin/env python3
"""Start pproxy (a Python peer, bench/.venv-peers) on uvloop.

pproxy 2.7.9 installs uvloop's policy and then calls asyncio.get_event_loop(), which uvloop
>= 0.22 refuses when no loop is set; this sets a uvloop loop first and keeps pproxy from
replacing the policy. Arguments are pproxy's own, e.g. `-l tunnel{127.0.0.1:8000}://127.0.0.1:9000`.
Run with the bench venv's Python: bench/.venv-peers/bin/python bench/pproxy_uvloop.py ARGS.
"""

from __future__ import annotations

import asyncio
import sys

import uvloop  # type: ignore[import-not-found,unused-ignore]
from pproxy.server import main  # type: ignore[import-not-found,import-untyped,unused-ignore]

if __name__ == "__main__":
    asyncio.set_event_loop(uvloop.new_event_loop())
    uvloop.install = lambda: None  # pproxy calls it; the loop set above must stay
    sys.exit(main())
