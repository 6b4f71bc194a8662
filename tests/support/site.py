"""`Site`: one `balancer run` process under test, its port, config file and access log."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from tests.support.ports import free_port
from tests.support.process import BalancerProcess, wait_until

__all__ = ["Site"]


class Site:
    """One balancer process under test, its port, its config file and its access log."""

    def __init__(self, directory: Path) -> None:
        self.dir = directory
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.log_path = self.dir / "access.log"
        self.config_path = self.dir / "balancer.toml"
        self.process: BalancerProcess | None = None

    def global_toml(self, log_format: str = "text", extra: str = "") -> str:
        return f'[global]\ngrace = "2s"\nlog = "file:{self.log_path}"\nlog_format = "{log_format}"\n{extra}\n'

    def start(self, config: str, ports: Sequence[int] | None = None, timeout: float = 15) -> BalancerProcess:
        """Write `config`, run `balancer run -c` on it and wait until every port listens."""
        assert self.process is None, "one process per site"
        self.config_path.write_text(config)
        self.process = BalancerProcess(self.config_path, log_dir=self.dir)
        for port in ports if ports is not None else [self.port]:
            self.process.wait_ready(port, timeout=timeout)
        return self.process

    def url(self, path: str = "/") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    # -- access log ------------------------------------------------------------------------

    def log_lines(self) -> list[str]:
        try:
            text = self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return []
        return [line for line in text.splitlines() if line.strip()]

    def wait_log(self, predicate: Callable[[str], bool], timeout: float = 5, what: str = "", after: int = 0) -> str:
        """The first access-log line matching `predicate`, polling until `timeout`.

        `after` skips that many lines: pass `len(site.log_lines())` taken before the action
        to look only at what the action logged.
        """

        def find() -> str | None:
            return next((line for line in self.log_lines()[after:] if predicate(line)), None)

        try:
            return str(wait_until(find, timeout=timeout, what=what or "an access log line"))
        except AssertionError:
            lines = "\n".join(self.log_lines()[-20:])
            output = self.process.output()[-3000:] if self.process else ""
            raise AssertionError(
                f"no access log line for {what or predicate!r} within {timeout}s in {self.log_path}\n"
                f"--- last log lines ---\n{lines}\n--- balancer output ---\n{output}"
            ) from None

    def json_log(self) -> list[dict[str, Any]]:
        entries = []
        for line in self.log_lines():
            with contextlib.suppress(ValueError):
                entries.append(json.loads(line))
        return entries

    def wait_json_log(
        self, predicate: Callable[[dict[str, Any]], bool], timeout: float = 5, what: str = "", after: int = 0
    ) -> dict[str, Any]:
        line = self.wait_log(lambda text: _json_matches(text, predicate), timeout=timeout, what=what, after=after)
        return dict(json.loads(line))

    def stop(self) -> None:
        if self.process is not None:
            with contextlib.suppress(AssertionError):
                self.process.stop(timeout=10)
            self.process.kill()


def _json_matches(text: str, predicate: Callable[[dict[str, Any]], bool]) -> bool:
    try:
        entry = json.loads(text)
    except ValueError:
        return False
    return isinstance(entry, dict) and bool(predicate(entry))
