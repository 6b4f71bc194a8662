"""Replay corpus folders through a fuzz target and print the share of function lines run
in the modules it is about (coverage.py is not a dependency; sys.settrace is enough).

    PYTHONPATH=$PWD/src /work/main/.venv/bin/python bench/fuzz/line_coverage.py \
        request_path bench/fuzz/corpus/http /tmp/fz/http_out

Counts lines inside functions and methods only (module-level lines run at import, before
the trace starts). Run it after a fuzz run has ended: libFuzzer deletes corpus files it
reduces.
"""

from __future__ import annotations

import contextlib
import importlib
import sys
import types
from pathlib import Path
from typing import Any

import atheris

WATCH = {
    "request_path": [
        "balancer/net/http_session.py",
        "balancer/net/request.py",
        "balancer/proto/http1.py",
        "balancer/route/rules.py",
        "balancer/proto/basic_auth.py",
    ],
    "proto_targets": [
        "balancer/proto/proxy.py",
        "balancer/proto/http1.py",
        "balancer/proto/errorfile.py",
        "balancer/proto/basic_auth.py",
        "balancer/proto/agent.py",
    ],
}


def lines_of(code: types.CodeType) -> set[int]:
    found = {line for _, _, line in code.co_lines() if line is not None}
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            found |= lines_of(const)
    return found


def main() -> None:
    target, folders = sys.argv[1], sys.argv[2:]
    sys.argv = sys.argv[:1]
    sys.path.insert(0, str(Path(__file__).parent))
    atheris.instrument_imports = lambda **_: contextlib.nullcontext()  # plain bytecode to trace
    module = importlib.import_module(target)
    watched = WATCH[target]
    hit: dict[str, set[int]] = {name: set() for name in watched}

    def tracer(frame: types.FrameType, event: str, arg: Any) -> Any:
        for name in watched:
            if frame.f_code.co_filename.endswith(name):
                seen = hit[name]

                def local(frame: types.FrameType, event: str, arg: Any, seen: set[int] = seen) -> Any:
                    if event == "line":
                        seen.add(frame.f_lineno)
                    return local

                return local
        return None

    count = 0
    sys.settrace(tracer)
    for folder in folders:
        for path in sorted(Path(folder).iterdir()):
            module.TestOneInput(path.read_bytes())
            count += 1
    sys.settrace(None)
    print(f"replayed {count} inputs")
    root = Path(importlib.import_module("balancer").__file__ or "").parent.parent
    for name in watched:
        code = compile((root / name).read_text(), name, "exec")
        body: set[int] = set()
        for const in code.co_consts:
            if isinstance(const, types.CodeType):
                body |= lines_of(const)
        ran = hit[name] & body
        print(f"{name}: {len(ran)}/{len(body)} function lines ({100 * len(ran) / len(body):.0f}%)")


if __name__ == "__main__":
    main()
