"""The event log: balancer's own messages (python logging under "balancer") to stderr.

One place for its format, used by every command that runs processes (run, demo, the
workers); syslog is added beside it by stats.syslog.configure_event_syslog.
"""

from __future__ import annotations

import logging
import sys


def setup_event_log(level: int = logging.INFO) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s: %(message)s"))
    root = logging.getLogger("balancer")
    root.handlers[:] = [handler]
    root.setLevel(level)
    root.propagate = False
