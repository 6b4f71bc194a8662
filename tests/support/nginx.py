"""NGINX as a real peer in e2e tests, run in the foreground with its own prefix.

Everything it writes (pid, error log, temp dirs, access logs the test asks for) stays under
the given directory, so the system nginx and its files are never touched.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

from tests.support.tools import require_tool

__all__ = ["NginxProcess", "find_nginx"]


def find_nginx() -> str:
    """The nginx binary; Debian puts it in /usr/sbin, which a user's PATH may lack.
    Skips (fails under CI=true) when it is not installed."""
    return shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin:/usr/local/sbin") or require_tool("nginx")


class NginxProcess:
    """`nginx -p DIR -c DIR/nginx.conf` with `daemon off`, 1 worker; `http_body` goes inside
    the `http { }` block (server blocks, log formats). Use as a context manager."""

    def __init__(self, directory: Path, http_body: str) -> None:
        self.dir = directory
        self.http_body = http_body
        self.proc: subprocess.Popen[bytes] | None = None
        self.error_log = directory / "error.log"

    def config(self) -> str:
        kinds = ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
        temps = "\n".join(f"    {kind}_temp_path {self.dir}/{kind}_temp;" for kind in kinds)
        return (
            "worker_processes 1;\n"
            "daemon off;\n"
            f"pid {self.dir}/nginx.pid;\n"
            f"error_log {self.error_log} info;\n"
            "events { worker_connections 1024; }\n"
            "http {\n"
            f"{temps}\n"
            f"{self.http_body}\n"
            "}\n"
        )

    def start(self) -> NginxProcess:
        nginx = find_nginx()
        self.dir.mkdir(parents=True, exist_ok=True)
        self.dir.chmod(0o755)  # workers run as `nobody` when started as root
        conf = self.dir / "nginx.conf"
        conf.write_text(self.config())
        with open(self.dir / "nginx.out", "wb") as out:
            self.proc = subprocess.Popen(
                [nginx, "-p", f"{self.dir}/", "-c", str(conf), "-e", str(self.error_log)],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        return self

    def output(self) -> str:
        parts = []
        for path in (self.dir / "nginx.out", self.error_log):
            with contextlib.suppress(OSError):
                parts.append(path.read_text(errors="replace"))
        return "\n".join(parts)

    def wait_ready(self, port: int, timeout: float = 10) -> None:
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise AssertionError(f"nginx exited with {self.proc.returncode}:\n{self.output()}")
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
            if time.monotonic() >= deadline:
                raise AssertionError(f"nginx not listening on 127.0.0.1:{port} after {timeout}s:\n{self.output()}")
            time.sleep(0.05)

    def stop(self) -> None:
        if self.proc is None:
            return
        for sig in (signal.SIGQUIT, signal.SIGKILL):
            if self.proc.poll() is not None:
                break
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.proc.pid, sig)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(5)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)  # a worker left behind

    def __enter__(self) -> NginxProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
