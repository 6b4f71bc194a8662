"""bench/conn_cost.py --callgrind: run a balancer worker under valgrind callgrind.

On PYTHONPATH with CONN_COST_OUT set, this re-executes `python -m balancer worker ...` (and
nothing else: the master runs natively) under callgrind with instrumentation off, so the
worker starts fast enough for the master's ready timeout; conn_cost.py turns it on.
"""

import os
import sys

if "worker" in sys.argv and not os.environ.get("CONN_COST_VG") and os.environ.get("CONN_COST_OUT"):
    os.environ["CONN_COST_VG"] = "1"
    os.execv(
        "/usr/bin/valgrind",
        [
            "valgrind",
            "--tool=callgrind",
            "--instr-atstart=no",
            f"--callgrind-out-file={os.environ['CONN_COST_OUT']}/callgrind.out.%p",
            sys.executable,
            *sys.orig_argv[1:],
        ],
    )
