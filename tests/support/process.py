"""Run `balancer` as a real process, the way an operator does."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

__all__ = ["BalancerProcess", "run_balancer", "wait_until"]


def _command(args: Sequence[str]) -> list[str]:
    return [sys.executable, "-m", "balancer", *args]


def run_balancer(*args: str, timeout: float = 30, cwd: str | Path | None = None) -> subprocess.CompletedProcess[str]:
    """Run a short `balancer ARGS...` command (e.g. `check -c FILE`) and capture its output."""
    return subprocess.run(_command(args), capture_output=True, text=True, timeout=timeout, cwd=cwd, check=False)


def wait_until(predicate: Callable[[], Any], timeout: float = 5, interval: float = 0.02, what: str = "") -> Any:
    """Poll `predicate` until it returns something truthy; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what or predicate!r}")
        time.sleep(interval)


def _listening_inodes(port: int) -> set[str] | None:
    """Socket inodes listening on TCP `port` (any address), from /proc; None where there is no /proc."""
    inodes: set[str] = set()
    found_table = False
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        found_table = True
        for line in lines:
            fields = line.split()
            if len(fields) > 9 and fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                inodes.add(fields[9])
    return inodes if found_table else None


def _listens_in_group(pgid: int, port: int) -> bool | None:
    """Whether a process in group `pgid` holds the socket listening on `port`; None if unknown."""
    inodes = _listening_inodes(port)
    if inodes is None:
        return None
    targets = {f"socket:[{inode}]" for inode in inodes}
    for proc_dir in Path("/proc").glob("[0-9]*"):
        try:
            stat = (proc_dir / "stat").read_text()
            if int(stat.rsplit(")", 1)[1].split()[2]) != pgid:
                continue
            for fd in (proc_dir / "fd").iterdir():
                with contextlib.suppress(OSError):
                    if os.readlink(fd) in targets:
                        return True
        except (OSError, ValueError, IndexError):
            continue
    return False


class BalancerProcess:
    """`balancer run -c CONFIG` in a child process with stdout/stderr captured to files.

    Starts at construction (pass `start=False` to start later). Use as a context manager:
    leaving the block always kills the process if it is still running.
    """

    def __init__(
        self,
        config_path: str | Path,
        *,
        log_dir: str | Path | None = None,
        extra_args: Sequence[str] = (),
        env: dict[str, str] | None = None,
        cwd: str | Path | None = None,
        start: bool = True,
        program: Sequence[str] | None = None,
        unset: Sequence[str] = (),
    ) -> None:
        """`program`: the command that runs balancer (default: this Python's `-m balancer`; an
        installed `bin/balancer` to test an installation). `unset`: environment variables removed."""
        self.config_path = Path(config_path)
        self.log_dir = Path(log_dir) if log_dir is not None else Path(tempfile.mkdtemp(prefix="balancer-"))
        self.stdout_path = self.log_dir / "balancer.stdout"
        self.stderr_path = self.log_dir / "balancer.stderr"
        self.args = ["run", "-c", str(self.config_path), *extra_args]
        self.program = list(program) if program is not None else None
        merged = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
        self.env = {name: value for name, value in merged.items() if name not in unset}
        self.cwd = cwd
        self.proc: subprocess.Popen[bytes] | None = None
        if start:
            self.start()

    def start(self) -> BalancerProcess:
        if self.proc is not None:
            return self
        self.log_dir.mkdir(parents=True, exist_ok=True)
        with open(self.stdout_path, "wb") as out, open(self.stderr_path, "wb") as err:
            # Its own process group, so cleanup also reaches any worker processes it forks.
            self.proc = subprocess.Popen(
                [*self.program, *self.args] if self.program is not None else _command(self.args),
                stdout=out,
                stderr=err,
                stdin=subprocess.DEVNULL,
                env=self.env,
                cwd=self.cwd,
                start_new_session=True,
            )
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None, "process not started"
        return self.proc.pid

    @property
    def returncode(self) -> int | None:
        return None if self.proc is None else self.proc.poll()

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def output(self) -> str:
        """Everything the process wrote so far: stdout, then stderr."""
        parts = []
        for path in (self.stdout_path, self.stderr_path):
            with contextlib.suppress(FileNotFoundError):
                parts.append(path.read_text(errors="replace"))
        return "".join(parts)

    def stdout(self) -> str:
        try:
            return self.stdout_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def wait_ready(self, port: int, timeout: float = 10, host: str = "127.0.0.1") -> None:
        """Poll until `host:port` accepts a TCP connection; fail with the output if the process died.

        On Linux the listening socket must also belong to this process (or a worker it forked):
        with several test runs on one machine a port picked as free may be taken by someone
        else, and a test must not talk to a stranger's listener.
        """
        deadline = time.monotonic() + timeout
        foreign = False
        while True:
            if not self.alive():
                code = self.returncode
                raise AssertionError(
                    f"balancer exited with code {code} before listening on {host}:{port}\n"
                    f"--- output ---\n{self.output()}"
                )
            try:
                with socket.create_connection((host, port), timeout=0.5):
                    pass
            except OSError:
                pass
            else:
                owned = _listens_in_group(self.pid, port)
                if owned is None or owned:
                    return
                foreign = True
            if time.monotonic() >= deadline:
                why = "another process holds the port" if foreign else "nothing listens"
                raise AssertionError(
                    f"balancer did not listen on {host}:{port} within {timeout}s ({why})\n"
                    f"--- output ---\n{self.output()}"
                )
            time.sleep(0.05)

    def send_signal(self, sig: int) -> None:
        assert self.proc is not None, "process not started"
        self.proc.send_signal(sig)

    def wait(self, timeout: float = 10) -> int:
        assert self.proc is not None, "process not started"
        return self.proc.wait(timeout)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10) -> int:
        """Send `sig`, wait up to `timeout` seconds and return the exit code.

        If the process does not exit in time it is killed and an AssertionError is raised,
        since a balancer that ignores SIGTERM is a bug a test must see.
        """
        assert self.proc is not None, "process not started"
        if self.proc.poll() is not None:
            return self.proc.returncode
        self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(
                f"balancer did not exit within {timeout}s of signal {sig}\n--- output ---\n{self.output()}"
            ) from None

    def kill(self) -> None:
        """SIGKILL the process and whatever is left in its process group (workers it forked)."""
        if self.proc is None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        if self.proc.poll() is None:
            self.proc.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(5)

    def __enter__(self) -> BalancerProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.kill()

    def __repr__(self) -> str:
        return f"<BalancerProcess pid={self.proc.pid if self.proc else None} config={self.config_path}>"
