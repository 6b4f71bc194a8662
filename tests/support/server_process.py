"""A TaggedBackend in a process of its own, so a test can kill it as an operator's server dies:
SIGKILL (the kernel resets its connections and refuses new ones), SIGSTOP (it stops
answering while the kernel still completes handshakes), SIGCONT.

    python -m tests.support.server_process NAME PORT
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from tests.support.ports import free_port

__all__ = ["ServerProcess"]

ROOT = Path(__file__).resolve().parents[2]


class ServerProcess:
    """One tagged HTTP server (`Server-Name: NAME`) as a child process on 127.0.0.1."""

    def __init__(self, name: str, port: int = 0) -> None:
        self.name = name
        self.port = port or free_port()
        self.address = f"127.0.0.1:{self.port}"
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 10) -> ServerProcess:
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "tests.support.server_process", self.name, str(self.port)],
            cwd=ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise RuntimeError(f"server {self.name} exited with {self._proc.returncode}")
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                return self
            time.sleep(0.02)
        raise TimeoutError(f"server {self.name} did not listen on {self.port} within {timeout}s")

    def signal(self, sig: int) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.send_signal(sig)

    def kill(self) -> None:
        """Die at once, as a crashed server does; the port then refuses connections."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait(10)

    def stop_answering(self) -> None:
        self.signal(signal.SIGSTOP)

    def resume(self) -> None:
        self.signal(signal.SIGCONT)

    def __enter__(self) -> ServerProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.resume()
        self.kill()


def _main() -> None:
    from tests.support.backends import TaggedBackend

    name, port = sys.argv[1], int(sys.argv[2])
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM, signal.SIGINT})
    server = TaggedBackend(name, port=port).start()
    try:
        signal.sigwait({signal.SIGTERM, signal.SIGINT})
    finally:
        server.stop()


if __name__ == "__main__":
    _main()
