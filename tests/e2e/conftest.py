"""Fixtures for the e2e tier: `balancer run -c FILE` as a real process, real clients.

A test describes a site the way an operator would: tagged backends, a TOML file, a port.
`site` gives a fresh port and access-log path; `site.start(toml)` writes the file, starts
the process and waits until it listens; teardown stops it (SIGTERM, then kill).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import pytest
from tests.support import BalancerProcess, TaggedBackend
from tests.support.site import Site


@pytest.fixture
def site(tmp_path: Path) -> Iterator[Site]:
    s = Site(tmp_path / "site")
    yield s
    s.stop()


@pytest.fixture(scope="module")
def module_dir(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> Path:
    return tmp_path_factory.mktemp(request.module.__name__.rsplit(".", 1)[-1])


@pytest.fixture
def balancer_process(tmp_path: Path) -> Iterator[Callable[..., BalancerProcess]]:
    """Factory: `balancer_process(config_text, port_or_ports)` -> a started, listening process."""
    started: list[BalancerProcess] = []

    def start(config: str, ports: int | Sequence[int], name: str = "balancer.toml") -> BalancerProcess:
        path = tmp_path / name
        path.write_text(config)
        proc = BalancerProcess(path, log_dir=tmp_path / f"proc{len(started)}")
        started.append(proc)
        for port in [ports] if isinstance(ports, int) else ports:
            proc.wait_ready(port)
        return proc

    yield start
    for proc in started:
        proc.kill()


@pytest.fixture
def tagged() -> Iterator[Callable[..., list[TaggedBackend]]]:
    """Factory: `tagged("s1", "s2")` -> started TaggedBackends, stopped at teardown."""
    with contextlib.ExitStack() as stack:

        def make(*names: str) -> list[TaggedBackend]:
            return [stack.enter_context(TaggedBackend(name)) for name in names]

        yield make


@pytest.fixture(scope="module")
def web() -> Iterator[TaggedBackend]:
    """One server, "web", for the tests of a module (a module may define its own `web`)."""
    with TaggedBackend("web") as backend:
        yield backend
