"""What the micro benchmarks (bench/micro_http.py, bench/micro_h2.py) share: the standard
library's profiler, imported where bench/ cannot shadow it.

A script run as `python bench/X.py` has bench/ first on sys.path, where bench/profile.py would
stand for the standard library's `profile` that cProfile imports, and bench/h2.py for the `h2`
package. Importing this module moves bench/ to the end of sys.path (so the scripts' own helpers,
such as varied_heads, stay importable, and every other name finds the standard library or the
venv first), then imports cProfile and pstats for the script: `from micro import cProfile, pstats`.
"""

from __future__ import annotations

import os
import sys

if sys.path and os.path.abspath(sys.path[0]) == os.path.dirname(os.path.abspath(__file__)):
    sys.path.append(sys.path.pop(0))

import cProfile
import pstats

__all__ = ["cProfile", "pstats"]
