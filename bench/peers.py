#!/usr/bin/env python3
"""The Python peers measured beside balancer: python-pyproxy (HTTP) and pproxy on uvloop (TCP).

They live in a venv of their own, bench/.venv-peers (gitignored), so the project's venv never
carries them; matplotlib (bench/plot.py) and py-spy (profiles) are installed there too.

    .venv/bin/python bench/peers.py install     # creates bench/.venv-peers with pip (PyPI)

What each peer can do here, as found on 2026-12-04:
- python-pyproxy 0.2.2: an HTTP reverse proxy with round robin over targets: measured in run.py.
- pproxy 2.7.9: a TCP tunnel to one address (no HTTP reverse proxy mode, no balancing by
  request): measured in tcp.py only; in run.py it is reported as unable to do the mode.
"""

from __future__ import annotations

import json
import subprocess
import sys
import venv
from pathlib import Path

BENCH = Path(__file__).resolve().parent
VENV = BENCH / ".venv-peers"
PYTHON = VENV / "bin" / "python"
PACKAGES = ("python-pyproxy==0.2.2", "pproxy==2.7.9", "uvloop", "matplotlib", "py-spy")
PPROXY_LAUNCHER = BENCH / "pproxy_uvloop.py"


class NotInstalled(Exception):
    """The peers' venv is missing: say how to make it."""


def require() -> Path:
    if not PYTHON.exists():
        raise NotInstalled(f"{VENV} missing: run `.venv/bin/python bench/peers.py install`")
    return PYTHON


def pproxy_argv(pproxy_args: list[str]) -> list[str]:
    return [str(require()), str(PPROXY_LAUNCHER), *pproxy_args]


def pyproxy_argv(config: Path) -> list[str]:
    require()
    return [str(VENV / "bin" / "pyproxy"), "start", str(config)]


def pyproxy_config(listen: int, targets: list[int]) -> str:
    """JSON for python-pyproxy: one route over the targets, no access log (HAProxy logs nothing
    either), no retries (a failed request must show)."""
    config = {
        "server": {"bind_host": "127.0.0.1", "bind_port": listen, "backlog": 4096},
        "logging": {"level": "warning", "access_log": False},
        "routes": [
            {
                "path": "/",
                "upstream": {"targets": [{"host": "127.0.0.1", "port": port} for port in targets], "max_retries": 0},
            }
        ],
    }
    return json.dumps(config, indent=2)


def version(package: str) -> str:
    if not PYTHON.exists():
        return "not installed"
    code = f"import importlib.metadata as m; print(m.version({package!r}))"
    done = subprocess.run([str(PYTHON), "-c", code], capture_output=True, text=True, timeout=30, check=False)
    return done.stdout.strip() or "not installed"


def install() -> int:
    if not PYTHON.exists():
        venv.create(VENV, with_pip=True)
    return subprocess.call([str(PYTHON), "-m", "pip", "install", "-q", *PACKAGES])


if __name__ == "__main__":
    if sys.argv[1:] != ["install"]:
        print(__doc__)
        sys.exit(2)
    sys.exit(install())
