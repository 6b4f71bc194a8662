"""The worker's garbage-collector settings (runtime/collector.py), checked in a child
process so this test process keeps CPython's defaults."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import balancer

CHILD = """
import gc, weakref
from balancer.runtime.collector import YOUNG_THRESHOLD, settle_after_start

class Node:
    pass

kept = [Node() for _ in range(1000)]
settle_after_start()
assert gc.get_freeze_count() >= 1000, gc.get_freeze_count()
assert gc.get_threshold()[0] == YOUNG_THRESHOLD, gc.get_threshold()

# A cycle made while serving is still collected once enough containers have been made.
a, b = Node(), Node()
a.other, b.other = b, a
gone = weakref.ref(a)
del a, b
churn = [[] for _ in range(2 * YOUNG_THRESHOLD)]
assert gone() is None, "cycle not collected"
print("ok")
"""


def test_settle_freezes_start_up_objects_and_still_collects_cycles() -> None:
    src = str(Path(balancer.__file__).resolve().parent.parent)
    env = {**os.environ, "PYTHONPATH": src}
    done = subprocess.run([sys.executable, "-c", CHILD], env=env, capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"
