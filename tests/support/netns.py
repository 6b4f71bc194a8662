"""Network namespaces a test creates and always deletes: the lab of the tier tests.

Every namespace name carries a per-run prefix, so parallel or crashed runs never collide;
`Lab.close()` kills every process it started (by pid), then deletes every namespace.
The root namespace gets no address or route of the lab.
"""

from __future__ import annotations

import contextlib
import os
import select
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path


def ip(*args: str) -> str:
    """Run `ip ARGS`, raising with its stderr on failure; its stdout."""
    result = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=20)
    if result.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {result.stderr.strip()}")
    return result.stdout


class Lab:
    def __init__(self, tag: str) -> None:
        self.prefix = f"{tag}{os.getpid() % 100000}"
        self.namespaces: list[str] = []
        self.processes: list[subprocess.Popen[str]] = []
        self.named: dict[str, subprocess.Popen[str]] = {}  # processes a test wants to find again

    def ns(self, name: str) -> str:
        full = f"{self.prefix}{name}"
        ip("netns", "add", full)
        self.namespaces.append(full)
        ip("-n", full, "link", "set", "lo", "up")
        return full

    def run(self, ns: str, *command: str, timeout: float = 20) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["ip", "netns", "exec", ns, *command], capture_output=True, text=True, timeout=timeout)

    def sh(self, ns: str, *command: str) -> str:
        result = self.run(ns, *command)
        if result.returncode != 0:
            raise RuntimeError(f"{ns}: {' '.join(command)}: {result.stderr.strip()}")
        return result.stdout

    def start(
        self, ns: str, *command: str, env: dict[str, str] | None = None, output: Path | None = None
    ) -> subprocess.Popen[str]:
        """`command` in namespace `ns`, its stdin a pipe. Its stdout and stderr are pipes the
        test reads, or with `output` appended to that file: a long-running process whose
        output nobody reads would block in a write once a pipe's 64 KiB are full."""
        # The child keeps its own descriptor of the file: ours is closed once it is made.
        with contextlib.ExitStack() as stack:
            sink = stack.enter_context(output.open("a")) if output is not None else subprocess.PIPE
            process = subprocess.Popen(
                ["ip", "netns", "exec", ns, *command],
                stdin=subprocess.PIPE,
                stdout=sink,
                stderr=subprocess.STDOUT if output is not None else subprocess.PIPE,
                text=True,
                env=env,
            )
        self.processes.append(process)
        return process

    def python(self, ns: str, *args: str, src: Path | None = None, output: Path | None = None) -> subprocess.Popen[str]:
        # A fatal signal (SIGABRT from a test that gives up waiting) prints every thread's
        # Python stack into the output before the process dies.
        env = dict(os.environ, PYTHONFAULTHANDLER="1")
        if src is not None:
            env["PYTHONPATH"] = f"{src}{os.pathsep}{env.get('PYTHONPATH', '')}"
        return self.start(ns, sys.executable, *args, env=env, output=output)

    def close(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.terminate()
        for process in self.processes:
            try:
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=5)
            for stream in (process.stdin, process.stdout, process.stderr):
                if stream is not None:
                    stream.close()
        for ns in reversed(self.namespaces):
            pids = subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True).stdout.split()
            for pid in pids:
                with contextlib.suppress(ProcessLookupError, ValueError):
                    os.kill(int(pid), 9)
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=20)


def read_line(process: subprocess.Popen[str], timeout: float) -> str:
    """The next line `process` prints, waiting at most `timeout` seconds."""
    assert process.stdout is not None
    ready, _, _ = select.select([process.stdout], [], [], timeout)
    if not ready:
        raise TimeoutError(f"no line from {process.args} within {timeout} s")
    line = process.stdout.readline()
    if not line:
        stderr = process.stderr.read() if process.stderr is not None and process.poll() is not None else ""
        raise EOFError(f"{process.args} ended: {stderr}")
    return line.strip()


def join_bridge(lab: Lab, switch: str, ns: str, address: str, peer: str, mtu: int = 1600) -> None:
    """Connect `ns` to bridge br0 of `switch` through veth e0 (address/prefix on it)."""
    ip("link", "add", "e0", "netns", ns, "mtu", str(mtu), "type", "veth", "peer", "name", peer, "netns", switch)
    ip("-n", switch, "link", "set", peer, "mtu", str(mtu), "master", "br0", "up")
    ip("-n", ns, "addr", "add", address, "dev", "e0")
    ip("-n", ns, "link", "set", "e0", "up")


def sysctl(lab: Lab, ns: str, settings: Sequence[str]) -> None:
    lab.sh(ns, "sysctl", "-qw", *settings)
