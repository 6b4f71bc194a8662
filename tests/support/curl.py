"""Drive the real `curl` command line client against the balancer."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass, field

from tests.support.http import Response, parse_responses
from tests.support.tools import require_tool

__all__ = ["CurlResult", "curl", "curl_raw"]


@dataclass
class CurlResult:
    """What one curl invocation showed: every response (1xx included, in order), stderr, exit code."""

    returncode: int
    responses: list[Response]
    stdout: bytes
    stderr: str = field(repr=False)

    @property
    def final(self) -> Response:
        """The last non-1xx response (the answer to the last URL)."""
        for response in reversed(self.responses):
            if response[0] >= 200:
                return response
        raise AssertionError(f"curl received no final response (exit {self.returncode}): {self.stderr}")

    @property
    def status(self) -> int:
        return self.final[0]

    @property
    def headers(self) -> dict[str, str]:
        return self.final[1]

    @property
    def body(self) -> bytes:
        return self.final[2]

    @property
    def finals(self) -> list[Response]:
        """Final responses only, one per URL fetched."""
        return [r for r in self.responses if r[0] >= 200]


def curl_raw(*args: str, timeout: float = 30) -> subprocess.CompletedProcess[bytes]:
    """Run `curl -sS --noproxy * ARGS...`; the caller chooses how output is shown."""
    exe = require_tool("curl")
    command = [exe, "-sS", "--noproxy", "*", "--max-time", str(timeout), *args]
    return subprocess.run(command, capture_output=True, timeout=timeout + 10, check=False)


def curl(*args: str, timeout: float = 30, head: bool = False) -> CurlResult:
    """Run `curl -i ARGS...` and parse every response it printed (several URLs allowed)."""
    proc = curl_raw("-i", *args, timeout=timeout)
    stderr = proc.stderr.decode(errors="replace")
    try:
        responses = parse_responses(proc.stdout, head=head)
    except ValueError as exc:
        raise AssertionError(f"curl output is not HTTP ({exc}); exit {proc.returncode}; stderr: {stderr}") from None
    return CurlResult(proc.returncode, responses, proc.stdout, stderr)
