"""The process model as an operator meets it: a master, its workers, reloads, stops, limits.

`balancer run -c FILE` is a master process that binds every listener and runs `global.workers`
worker processes sharing those sockets. Its stderr says `worker started: pid=P generation=G
slot=S` and `worker exited: pid=P generation=G status=...`; that log and /proc are how these
tests find the workers. A reload (SIGHUP) ends with `reload complete: generation G` or with one
`reload refused: FILE:LINE: message` per problem. `Master.start` also waits until the master
catches SIGHUP/SIGTERM/SIGINT (/proc/PID/status), since a signal sent before that would kill it.

Every test bounds its waits and, whatever happens, ends the master and every process it started
(see `Master.cleanup`): a worker left behind would hold the test's ports and skew later tests.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import http.client
import json
import os
import re
import signal
import subprocess
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from tests.support import BalancerProcess, TaggedBackend, free_port, require_tool, wait_until
from tests.support.config import server_blocks

pytestmark = pytest.mark.e2e

STARTED = re.compile(r"worker started: pid=(\d+) generation=(\d+) slot=(\d+)")
EXITED = re.compile(r"worker exited: pid=(\d+) generation=(\d+) status=(\S+)")
COMPLETE = re.compile(r"reload complete: generation (\d+)")
REFUSED = re.compile(r"reload refused: (\S+?):(\d+): \S")


# -- processes, seen through /proc -----------------------------------------------------------


@dataclass(frozen=True)
class ProcStat:
    state: str
    ppid: int
    start_time: int


def proc_stat(pid: int) -> ProcStat | None:
    """State, parent and start time (clock ticks since boot) of `pid`; None if it is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text.rsplit(")", 1)[1].split()  # the command name may hold spaces and parentheses
    return ProcStat(fields[0], int(fields[1]), int(fields[19]))


def running(pid: int, parent: int | None = None) -> bool:
    """`pid` exists and is not a zombie (and, when given, is still a child of `parent`)."""
    stat = proc_stat(pid)
    return stat is not None and stat.state != "Z" and (parent is None or stat.ppid == parent)


def handles(pid: int, *signals: int) -> bool:
    """`pid` has a handler installed for (or blocks, to read them another way) every one of `signals`."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    masks = {
        key: int(value, 16)
        for key, _, value in (line.partition(":\t") for line in status.splitlines())
        if key in ("SigCgt", "SigBlk")
    }
    handled = masks.get("SigCgt", 0) | masks.get("SigBlk", 0)
    return all(handled & (1 << (sig - 1)) for sig in signals)


def children(pid: int) -> set[int]:
    """The live (non-zombie) children of `pid`."""
    found: set[int] = set()
    task_dir = Path(f"/proc/{pid}/task")
    try:
        tasks = list(task_dir.iterdir())
    except OSError:
        return found
    if (task_dir / str(pid) / "children").exists():
        for task in tasks:
            with contextlib.suppress(OSError, ValueError):
                found.update(int(p) for p in (task / "children").read_text().split())
    else:  # kernel without CONFIG_PROC_CHILDREN: scan every process's parent
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                stat = proc_stat(int(entry))
                if stat is not None and stat.ppid == pid:
                    found.add(int(entry))
    return {child for child in found if running(child)}


def descendants(pid: int) -> dict[int, int]:
    """Every process below `pid`, as pid -> start time (to tell a reused pid apart)."""
    result: dict[int, int] = {}
    todo = [pid]
    while todo:
        for child in children(todo.pop()):
            stat = proc_stat(child)
            if stat is not None and child not in result:
                result[child] = stat.start_time
                todo.append(child)
    return result


# -- the master under test -------------------------------------------------------------------


@dataclass(frozen=True)
class WorkerStart:
    pid: int
    generation: int
    slot: int


class Master:
    """One `balancer run` under test: its config file, port, log, workers and cleanup."""

    def __init__(self, directory: Path) -> None:
        self.dir = directory
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.config_path = self.dir / "balancer.toml"
        self.process: BalancerProcess | None = None
        self._seen: dict[int, int] = {}  # every worker pid met so far -> its start time

    # the log --------------------------------------------------------------------------------

    def log(self) -> str:
        return self.process.output() if self.process else ""

    def tail(self, lines: int = 60) -> str:
        return "--- balancer output (tail) ---\n" + "\n".join(self.log().splitlines()[-lines:])

    def started(self) -> list[WorkerStart]:
        return [WorkerStart(int(m[1]), int(m[2]), int(m[3])) for m in STARTED.finditer(self.log())]

    def exited(self) -> set[int]:
        return {int(m[1]) for m in EXITED.finditer(self.log())}

    def workers(self, generation: int) -> list[WorkerStart]:
        """Workers of `generation` the log says were started and have not exited."""
        gone = self.exited()
        return [w for w in self.started() if w.generation == generation and w.pid not in gone]

    def completed_reloads(self) -> list[int]:
        return [int(m[1]) for m in COMPLETE.finditer(self.log())]

    def wait_for(self, predicate: Callable[[], Any], timeout: float, what: str) -> Any:
        """Poll `predicate` until truthy; fail with the log tail (or at once if the master died)."""

        def check() -> Any:
            if self.process is not None and not self.process.alive():
                raise AssertionError(f"the master exited ({self.process.returncode}) while {what}\n{self.tail()}")
            return predicate()

        try:
            return wait_until(check, timeout=timeout, interval=0.05, what=what)
        except AssertionError as exc:
            if "--- balancer output" in str(exc):
                raise
            raise AssertionError(f"{exc}\n{self.tail()}") from None

    # lifecycle ------------------------------------------------------------------------------

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def start(self, config: str, workers: int, timeout: float = 30) -> list[WorkerStart]:
        """Write `config`, start the master; wait for `workers` workers, a first 200 and its signal handlers."""
        assert self.process is None, "one master per test"
        self.config_path.write_text(config)
        self.process = BalancerProcess(self.config_path, log_dir=self.dir)
        first = self.wait_for(
            lambda: len(self.workers(1)) >= workers and self.workers(1),
            timeout=timeout,
            what=f"{workers} 'worker started: ... generation=1' lines",
        )
        self.wait_for(lambda: fetch(self.port, "/", timeout=2).status == 200, timeout=timeout, what="a first 200")
        # Until the master has its handlers, SIGHUP or SIGTERM would kill it by default action.
        self.wait_for(
            lambda: handles(self.pid, signal.SIGHUP, signal.SIGTERM, signal.SIGINT),
            timeout=timeout,
            what="the master to handle SIGHUP, SIGTERM and SIGINT",
        )
        self.remember()
        return list(first)

    def remember(self) -> None:
        """Note the master's current descendants, so cleanup can end them even if it cannot."""
        if self.process is not None and self.process.alive():
            for pid, start_time in descendants(self.pid).items():
                self._seen.setdefault(pid, start_time)

    def reload(self, config: str | None = None, timeout: float = 30) -> int:
        """Optionally rewrite the file, SIGHUP, wait for the next `reload complete`; its generation."""
        assert self.process is not None
        before = len(self.completed_reloads())
        refusals = self.log().count("reload refused:")
        if config is not None:
            self.config_path.write_text(config)
        self.remember()
        self.process.send_signal(signal.SIGHUP)

        def complete() -> bool:
            if self.log().count("reload refused:") > refusals:
                raise AssertionError(f"reload #{before + 1} was refused\n{self.tail()}")
            return len(self.completed_reloads()) > before

        self.wait_for(complete, timeout=timeout, what=f"reload complete #{before + 1}")
        self.remember()
        return self.completed_reloads()[-1]

    def cleanup(self, timeout: float = 15) -> None:
        """End the master (SIGTERM, then SIGKILL) and every worker it ever had."""
        if self.process is None:
            return
        self.remember()
        for worker in self.started():
            stat = proc_stat(worker.pid)
            if stat is not None and stat.ppid == self.pid:
                self._seen.setdefault(worker.pid, stat.start_time)
        if self.process.alive():
            with contextlib.suppress(AssertionError):
                self.process.stop(timeout=timeout)
        self.process.kill()
        for pid, start_time in self._seen.items():
            stat = proc_stat(pid)
            if stat is not None and stat.start_time == start_time and stat.state != "Z":
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)


@pytest.fixture
def master(tmp_path: Path) -> Iterator[Master]:
    m = Master(tmp_path / "site")
    try:
        yield m
    finally:
        m.cleanup()


def site_config(
    master: Master,
    servers: list[Any],
    *,
    workers: int = 2,
    grace: str = "3s",
    frontend: str = "",
    backend: str = "",
    log: str = "none",
    global_: str = "",
    tables: str = "",
    **server_keys: Any,
) -> str:
    """One frontend on `master.port` in front of backend `web` with `servers`; `global_`
    adds [global] keys, `tables` whole tables ([admin], ...)."""
    return f"""[global]
workers = {workers}
grace = "{grace}"
log = "{log}"
{global_}
{tables}

[[frontend]]
name = "www"
bind = ["127.0.0.1:{master.port}"]
default_backend = "web"
{frontend}
[[backend]]
name = "web"
{backend}
""" + server_blocks(servers, **server_keys)


# -- clients ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Outcome:
    """One request on its own connection: when it ran and what came back (status None: no answer)."""

    started: float
    ended: float
    status: int | None
    body: bytes = b""
    error: str = ""

    @property
    def elapsed(self) -> float:
        return self.ended - self.started


def fetch(port: int, path: str, timeout: float = 10) -> Outcome:
    """GET `path` on a fresh connection (`Connection: close`), never retried."""
    started = time.monotonic()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path, headers={"Connection": "close"})
        response = conn.getresponse()
        body = response.read()
        return Outcome(started, time.monotonic(), response.status, body)
    except (OSError, http.client.HTTPException) as exc:
        return Outcome(started, time.monotonic(), None, error=repr(exc))
    finally:
        conn.close()


def fetch_all(port: int, paths: list[str], timeout: float = 15) -> list[Outcome]:
    """The requests for `paths` at once, one thread and one connection each."""
    with concurrent.futures.ThreadPoolExecutor(len(paths)) as pool:
        return list(pool.map(lambda path: fetch(port, path, timeout), paths))


def fetch_staggered(port: int, paths: list[str], timeout: float = 15, gap: float = 0.005) -> list[Outcome]:
    """Like fetch_all, but the connections open `gap` seconds apart: a burst of connections
    all waiting at once goes to whichever worker wakes first, one at a time they spread."""

    def one(index: int, path: str) -> Outcome:
        time.sleep(index * gap)  # not synchronisation: a connection rate, as clients arrive
        return fetch(port, path, timeout)

    with concurrent.futures.ThreadPoolExecutor(len(paths)) as pool:
        return list(pool.map(one, range(len(paths)), paths))


def failures(outcomes: list[Outcome]) -> list[Outcome]:
    return [o for o in outcomes if o.status != 200]


class ClientLoop:
    """`concurrency` threads sending requests, each on a fresh connection, until stopped.

    A loop never runs longer than `limit` seconds, so a test that fails half-way cannot
    leave it running.
    """

    def __init__(self, port: int, path: str = "/", concurrency: int = 1, limit: float = 60) -> None:
        self.port = port
        self.path = path
        self.outcomes: list[Outcome] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._deadline = time.monotonic() + limit
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(concurrency)]

    def _run(self) -> None:
        while not self._stop.is_set() and time.monotonic() < self._deadline:
            outcome = fetch(self.port, self.path, timeout=10)
            with self._lock:
                self.outcomes.append(outcome)

    def __len__(self) -> int:
        with self._lock:
            return len(self.outcomes)

    def __enter__(self) -> ClientLoop:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> list[Outcome]:
        self._stop.set()
        for thread in self._threads:
            thread.join(15)
        with self._lock:
            return list(self.outcomes)


def describe(outcomes: list[Outcome], at: float = 0.0) -> str:
    return "\n".join(
        f"  t={o.started - at:+.3f}s..{o.ended - at:+.3f}s status={o.status} {o.error}" for o in outcomes[:20]
    )


# -- wrk -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class WrkResult:
    requests: int
    socket_errors: dict[str, int]
    non_2xx_3xx: int


def parse_wrk(text: str) -> WrkResult:
    """wrk's summary; it prints the error lines only when a count is not 0."""
    requests = re.search(r"(\d+) requests in ", text)
    assert requests, f"no summary in wrk's output:\n{text}"
    errors = dict.fromkeys(("connect", "read", "write", "timeout"), 0)
    socket_errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    if socket_errors:
        errors = dict(zip(errors, map(int, socket_errors.groups()), strict=True))
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    return WrkResult(int(requests[1]), errors, int(non_2xx[1]) if non_2xx else 0)


# -- the tests -------------------------------------------------------------------------------

RELOADS = 20
GRACE = 3.0
NEVER_RULE = """
  [[frontend.rule]]
  if = { path_beg = ["/never"] }
  use_backend = "web"
"""


@pytest.mark.timeout(170)
def test_twenty_reloads_under_keepalive_load_drop_nothing(master, tagged):
    wrk = require_tool("wrk")
    s1, s2 = tagged("s1", "s2")
    configs = [
        site_config(master, [s1, s2], grace=f"{GRACE:g}s"),
        site_config(
            master,
            [{"name": "s1", "address": s1.address, "weight": 50}, s2],
            grace=f"{GRACE:g}s",
            frontend=NEVER_RULE,
        ),
    ]
    master.start(configs[0], workers=2)

    def served() -> int:
        return len(s1.requests) + len(s2.requests)

    # wrk runs "long enough" and is stopped with SIGINT (it then prints its summary) once the
    # reloads are done, so its run matches however long the reloads take on this machine.
    load = subprocess.Popen(
        [wrk, "-t1", "-c16", "-d150s", "--timeout", "5s", f"http://127.0.0.1:{master.port}/"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    generations = [1]
    try:
        master.wait_for(lambda: served() >= 200, timeout=15, what="wrk's load to reach the servers")
        deadline = time.monotonic() + 110
        for i in range(1, RELOADS + 1):
            assert time.monotonic() < deadline, f"only {i - 1} reloads within 110s\n{master.tail()}"
            generations.append(master.reload(configs[i % 2], timeout=20))
            # let load flow through the new generation before the next reload (the recorded
            # requests are dropped as they go: wrk sends hundreds of thousands of them)
            s1.requests.clear()
            s2.requests.clear()
            try:
                master.wait_for(lambda: served() >= 100, timeout=15, what=f"load after reload {i}")
            except AssertionError as exc:
                raise AssertionError(f"{exc}\n{stalled(master, [s1, s2], load)}") from None
            assert load.poll() is None, f"wrk ended during the reloads:\n{load.communicate()[0]}"
        load.send_signal(signal.SIGINT)
        output, _ = load.communicate(timeout=20)
    finally:
        if load.poll() is None:
            load.kill()
            load.wait()

    assert generations == sorted(set(generations)), f"generations not increasing: {generations}"
    result = parse_wrk(output)
    assert result.requests > 1000, output
    assert result.socket_errors == dict.fromkeys(("connect", "read", "write", "timeout"), 0), (
        f"wrk saw socket errors across {RELOADS} reloads:\n{output}\n{master.tail()}"
    )
    assert result.non_2xx_3xx == 0, f"wrk saw error statuses across {RELOADS} reloads:\n{output}\n{master.tail()}"

    # No worker of an old generation outlives grace (the master kills leftovers).
    latest = generations[-1]
    old = {w.pid for w in master.started() if w.generation < latest}
    assert len(old) >= 2 * RELOADS, f"expected {2 * RELOADS}+ old workers in the log\n{master.tail()}"
    master.wait_for(
        lambda: not [pid for pid in old if running(pid, parent=master.pid)],
        timeout=GRACE + 5,
        what="every old-generation worker to be gone",
    )
    current = {w.pid for w in master.workers(latest)}
    logged = {w.pid for w in master.started()}
    kids = children(master.pid) & logged
    assert len(current) == 2, f"generation {latest} should have 2 live workers\n{master.tail()}"
    assert kids == current, (
        f"master's worker children {sorted(kids)} != generation {latest} workers {sorted(current)}\n{master.tail()}"
    )
    assert not [pid for pid in old if running(pid)], "an old-generation worker still runs"


def stalled(master: Master, servers: list[TaggedBackend], load: subprocess.Popen[str]) -> str:
    """What a test can still tell when load stopped flowing: a direct request each way, wrk's view."""
    through = fetch(master.port, "/", timeout=3)
    direct = [fetch(server.port, "/", timeout=3) for server in servers]
    load.send_signal(signal.SIGINT)
    try:
        output = load.communicate(timeout=10)[0]
    except subprocess.TimeoutExpired:
        output = "(wrk did not stop)"
    return (
        f"a request through the balancer now: {through.status} {through.error}\n"
        f"requests straight to the servers now: {[(d.status, d.error) for d in direct]}\n"
        f"--- wrk ---\n{output}"
    )


def test_invalid_reload_is_refused_with_file_and_line_and_serving_continues(master, tagged):
    (s1,) = tagged("s1")
    good = site_config(master, [s1])
    master.start(good, workers=2)
    workers_before = {w.pid for w in master.workers(1)}
    lines = good.splitlines()
    # two problems, at known lines: an unknown frontend key and a bad server address
    lines.insert(lines.index('default_backend = "web"') + 1, 'colour = "blue"')
    lines[lines.index(f'  address = "{s1.address}"')] = '  address = "not an address"'
    bad = "\n".join(lines) + "\n"
    colour_line = lines.index('colour = "blue"') + 1
    address_line = lines.index('  address = "not an address"') + 1

    with ClientLoop(master.port, "/", concurrency=2) as clients:
        master.wait_for(lambda: len(clients) >= 20, timeout=10, what="20 requests before the reload")
        master.config_path.write_text(bad)
        master.process.send_signal(signal.SIGHUP)
        master.wait_for(lambda: REFUSED.search(master.log()), timeout=10, what="'reload refused: FILE:LINE:'")
        at_refusal = len(clients)
        master.wait_for(
            lambda: len(clients) >= max(200, at_refusal + 50), timeout=30, what="200+ requests across the reload"
        )
        outcomes = clients.stop()

    assert not failures(outcomes), f"{len(failures(outcomes))} of {len(outcomes)} requests failed:\n" + describe(
        failures(outcomes), outcomes[0].started
    )
    refused = [(Path(m[1]), int(m[2])) for m in REFUSED.finditer(master.log())]
    assert {path.resolve() for path, _ in refused} == {master.config_path.resolve()}, master.tail()
    reported = {line for _, line in refused}
    assert colour_line in reported, f"unknown key on line {colour_line} not reported: {refused}\n{master.tail()}"
    assert address_line in reported, f"bad address on line {address_line} not reported: {refused}\n{master.tail()}"
    # nothing was started or stopped: the old workers keep serving
    assert not [w for w in master.started() if w.generation != 1], master.tail()
    assert {w.pid for w in master.workers(1)} == workers_before, master.tail()
    assert all(running(pid, parent=master.pid) for pid in workers_before)
    assert not master.completed_reloads()

    # and the master still reloads once the file is fixed
    assert master.reload(good) == 2


def test_a_killed_worker_is_restarted_and_only_its_requests_fail(master, tagged):
    (s1,) = tagged("s1")
    master.start(site_config(master, [s1]), workers=2)
    victim, survivor = sorted(master.workers(1), key=lambda w: w.slot)
    concurrency = 4

    with ClientLoop(master.port, "/", concurrency=concurrency) as clients:
        master.wait_for(lambda: len(clients) >= 50, timeout=10, what="50 requests before the kill")
        killed_at = time.monotonic()
        os.kill(victim.pid, signal.SIGKILL)
        replacement = master.wait_for(
            lambda: [w for w in master.started() if (w.generation, w.slot) == (1, victim.slot) and w.pid != victim.pid],
            timeout=10,
            what=f"a new 'worker started' line for slot {victim.slot}",
        )[0]
        restarted_at = time.monotonic()
        master.remember()
        master.wait_for(
            lambda: len([o for o in clients.outcomes if o.started > restarted_at]) >= 50,
            timeout=15,
            what="50 requests after the restart",
        )
        outcomes = clients.stop()

    failed = failures(outcomes)
    assert len(failed) <= concurrency, (
        f"{len(failed)} requests failed; only the ≤{concurrency} in flight on the killed worker may:\n"
        + describe(failed, killed_at)
    )
    late = [o for o in failed if o.started > restarted_at]
    assert not late, "requests sent after the restart failed:\n" + describe(late, killed_at)
    assert all(o.body == b"s1\n" for o in outcomes if o.status == 200)
    assert victim.pid in master.exited(), f"no 'worker exited: pid={victim.pid}' line\n{master.tail()}"
    assert replacement.generation == 1
    assert running(replacement.pid, parent=master.pid), master.tail()
    assert running(survivor.pid, parent=master.pid), "the other worker should have kept serving"
    assert not running(victim.pid)


def test_sigterm_lets_slow_requests_finish_then_exits_0(master, tagged):
    (s1,) = tagged("s1")
    grace = 5.0
    master.start(site_config(master, [s1], grace=f"{grace:g}s"), workers=2)
    workers = [w.pid for w in master.workers(1)]

    with concurrent.futures.ThreadPoolExecutor(5) as pool:
        futures = [pool.submit(fetch, master.port, "/slow/1500", 15) for _ in range(5)]
        master.wait_for(
            lambda: s1.paths.count("/slow/1500") == 5, timeout=10, what="5 slow requests to reach the server"
        )
        signalled_at = time.monotonic()
        master.process.send_signal(signal.SIGTERM)
        outcomes = [future.result(timeout=20) for future in futures]

    assert [(o.status, o.body) for o in outcomes] == [(200, b"s1\n")] * 5, describe(outcomes, signalled_at)
    try:
        code = master.process.wait(timeout=grace + 3)
    except subprocess.TimeoutExpired:
        raise AssertionError(f"the master did not exit within grace + 3s of SIGTERM\n{master.tail()}") from None
    exited_after = time.monotonic() - signalled_at
    assert code == 0, master.tail()
    assert exited_after <= grace, f"exited {exited_after:.1f}s after SIGTERM (grace {grace:g}s)"
    wait_until(lambda: not any(running(pid) for pid in workers), timeout=5, what="every worker to be gone")


def test_a_second_sigterm_stops_at_once(master, tagged):
    (s1,) = tagged("s1")
    master.start(site_config(master, [s1], workers=1, grace="30s"), workers=1)
    workers = [w.pid for w in master.workers(1)]

    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        hanging = pool.submit(fetch, master.port, "/hang", 20)
        master.wait_for(lambda: "/hang" in s1.paths, timeout=10, what="/hang to reach the server")
        master.process.send_signal(signal.SIGTERM)
        # graceful: a request is in flight and grace is 30s, so the master must not be gone yet
        with pytest.raises(subprocess.TimeoutExpired):
            master.process.wait(timeout=1.0)
        signalled_at = time.monotonic()
        master.process.send_signal(signal.SIGTERM)
        try:
            master.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"a second SIGTERM did not stop the master within 5s\n{master.tail()}") from None
        stopped_after = time.monotonic() - signalled_at
        hanging.result(timeout=25)

    assert stopped_after < 3, f"the second SIGTERM took {stopped_after:.1f}s"
    wait_until(lambda: not any(running(pid) for pid in workers), timeout=5, what="every worker to be gone")


def test_frontend_maxconn_makes_excess_connections_wait(master, tagged):
    (s1,) = tagged("s1")
    master.start(site_config(master, [s1], workers=1, frontend="maxconn = 2"), workers=1)

    began = time.monotonic()
    outcomes = fetch_all(master.port, ["/slow/500"] * 6, timeout=15)
    took = time.monotonic() - began

    assert [o.status for o in outcomes] == [200] * 6, describe(outcomes, began)
    # two connections at a time: three rounds of 500ms, and nothing hangs
    assert took >= 1.4, f"6 x 500ms requests took {took:.2f}s: more than 2 were served at once"
    assert took < 10, f"6 x 500ms requests took {took:.2f}s"


def test_server_maxconn_queue_timeout_gives_503(master, tagged):
    (s1,) = tagged("s1")
    master.start(
        site_config(
            master,
            [s1],
            workers=1,
            backend='timeouts = { connect = "1s", server = "5s", queue = "300ms" }',
            maxconn=1,
        ),
        workers=1,
    )
    served_before = s1.paths.count("/slow/1000")

    began = time.monotonic()
    outcomes = fetch_all(master.port, ["/slow/1000"] * 4, timeout=10)
    took = time.monotonic() - began

    statuses = sorted(o.status or 0 for o in outcomes)
    # one request holds the only slot for 1s; the others wait in the queue and give up at 300ms
    assert statuses == [200, 503, 503, 503], describe(outcomes, began)
    for outcome in outcomes:
        if outcome.status == 503:
            assert b"<html" in outcome.body.lower() and b"503" in outcome.body, outcome.body
            assert len(outcome.body) < 1024, outcome.body
            assert 0.25 <= outcome.elapsed < 0.95, f"a 503 came after {outcome.elapsed:.2f}s, not ~300ms"
    assert s1.paths.count("/slow/1000") - served_before == 1, "queued requests that timed out reached the server"
    assert took < 5, f"4 requests took {took:.2f}s"


def test_server_maxconn_serves_the_queue_in_arrival_order(master, tagged):
    (s1,) = tagged("s1")
    master.start(
        site_config(
            master,
            [s1],
            workers=1,
            backend='timeouts = { connect = "1s", server = "5s", queue = "5s" }',
            maxconn=1,
        ),
        workers=1,
    )

    began = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(3) as pool:
        first = pool.submit(fetch, master.port, "/slow/400?n=0", 10)
        master.wait_for(lambda: "/slow/400?n=0" in targets(s1), timeout=5, what="the first request at the server")
        second = pool.submit(fetch, master.port, "/slow/400?n=1", 10)
        time.sleep(0.2)  # not synchronisation: the second request must be queued before the third arrives
        third = pool.submit(fetch, master.port, "/slow/400?n=2", 10)
        outcomes = [f.result(timeout=15) for f in (first, second, third)]
    took = time.monotonic() - began

    assert [o.status for o in outcomes] == [200] * 3, describe(outcomes, began)
    order = [t for t in targets(s1) if t.startswith("/slow/400")]
    assert order == ["/slow/400?n=0", "/slow/400?n=1", "/slow/400?n=2"], order
    assert took >= 1.1, f"3 x 400ms requests took {took:.2f}s with server maxconn = 1"


def targets(server: TaggedBackend) -> list[str]:
    return [r.target for r in server.requests]


# -- limits shared by the workers of a node ----------------------------------------------------

SERVED_BY = 'log_format = "%pid %s %ST %HU"'
# The kernel hands a burst of connections to whichever worker wakes first, on a busy box
# sometimes all of them: a load that must reach both workers is sent again, at most this often.
SPREAD_ATTEMPTS = 4


def served(log: Path, prefix: str) -> list[tuple[int, str, int]]:
    """(worker pid, server, status) of each access-log line for a URI starting with
    `prefix` (the config's log_format is SERVED_BY)."""
    if not log.exists():
        return []
    rows = []
    for line in log.read_text().splitlines():
        pid, server, status, path = line.split(" ", 3)
        if path.startswith(prefix):
            rows.append((int(pid), server, int(status)))
    return rows


def accepted_by(port: int) -> Counter[int]:
    """Client connections on `port` that a process has accepted, by process id (a
    connection still in the kernel's accept queue belongs to none)."""
    out = subprocess.run(
        ["ss", "-Htnp", "state", "established", f"( sport = :{port} )"], capture_output=True, text=True, timeout=10
    ).stdout
    return Counter(int(pid) for pid in re.findall(r"pid=(\d+)", out))


@pytest.mark.parametrize("maxconn,clients", [(4, 40), (10, 100)])
def test_server_maxconn_holds_for_the_node_with_two_workers(master, tagged, maxconn, clients):
    """Both workers take requests; the server never sees more than its maxconn at once,
    and every request is answered (the rest wait in the queues)."""
    (s1,) = tagged("s1")
    log = master.dir / "access.log"
    master.start(
        site_config(
            master,
            [s1],
            log=f"file:{log}",
            global_=SERVED_BY,
            backend='timeouts = { connect = "1s", server = "10s", queue = "30s" }',
            maxconn=maxconn,
        ),
        workers=2,
    )
    for attempt in range(SPREAD_ATTEMPTS):
        s1.most_busy = 0
        path = f"/slow/300?round={attempt}&n="
        began = time.monotonic()
        outcomes = fetch_staggered(master.port, [f"{path}{i}" for i in range(clients)], timeout=60)

        assert failures(outcomes) == [], describe(failures(outcomes), began)
        assert s1.most_busy == maxconn, f"the server saw {s1.most_busy} requests at once with maxconn = {maxconn}"
        rows = master.wait_for(
            lambda: len(served(log, path)) == clients and served(log, path),  # noqa: B023 (waited for here)
            timeout=10,
            what=f"{clients} access-log lines",
        )
        by_worker = Counter(pid for pid, _, _ in rows)
        if len(by_worker) == 2:
            break
    assert len(by_worker) == 2, f"one worker took every request, {SPREAD_ATTEMPTS} times: the test proved nothing"


def test_tcp_server_maxconn_holds_for_the_node_with_two_workers(master, tagged):
    """TCP mode: a connection holds its server slot while it lasts; with two workers the
    server never has more than maxconn connections' requests at once."""
    (s1,) = tagged("s1")
    log = master.dir / "access.log"
    master.start(
        site_config(
            master,
            [s1],
            log=f"file:{log}",
            global_='log_format = "%pid %s"',
            frontend='mode = "tcp"',
            backend='mode = "tcp"\ntimeouts = { connect = "1s", server = "10s", queue = "30s" }',
            maxconn=3,
        ),
        workers=2,
    )
    for _ in range(SPREAD_ATTEMPTS):
        s1.most_busy = 0
        before = len(log.read_text().splitlines()) if log.exists() else 0
        outcomes = fetch_staggered(master.port, [f"/slow/200?n={i}" for i in range(24)], timeout=60)

        assert failures(outcomes) == [], describe(failures(outcomes))
        assert s1.most_busy == 3, f"the server saw {s1.most_busy} connections' requests at once with maxconn = 3"
        lines = master.wait_for(
            lambda: len(log.read_text().splitlines()) - before >= 24 and log.read_text().splitlines()[before:],  # noqa: B023
            timeout=10,
            what="24 access-log lines",
        )
        workers = {line.split(" ")[0] for line in lines}
        if len(workers) == 2:
            break
    assert len(workers) == 2, f"one worker took every connection, {SPREAD_ATTEMPTS} times: the test proved nothing"


def test_leastconn_avoids_a_server_busy_through_the_other_worker(master, tagged):
    """A request held on s1 by one worker; every new request, whichever worker accepts
    it, goes to s2 (with per-worker counts the other worker would see s1 idle and send it
    half of them)."""
    s1, s2 = tagged("s1", "s2")
    log = master.dir / "access.log"
    admin_port = free_port()
    master.start(
        site_config(
            master,
            [s1, {"name": "s2", "address": s2.address, "state": "maint"}],
            log=f"file:{log}",
            global_=SERVED_BY,
            tables=f'[admin]\nbind = "127.0.0.1:{admin_port}"\n',
            backend='balance = "leastconn"',
        ),
        workers=2,
    )
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        held = pool.submit(fetch, master.port, "/slow/10000", 20)
        master.wait_for(lambda: s1.busy == 1, timeout=5, what="the held request at s1")
        put = urllib.request.Request(
            f"http://127.0.0.1:{admin_port}/api/servers/web/s2", data=b'{"state": "ready"}', method="PUT"
        )
        with urllib.request.urlopen(put, timeout=5) as reply:
            assert reply.status == 200
        # Until both workers have applied the change (within 0.1 s), a request may still go to s1.
        master.wait_for(
            lambda: (
                fetch(master.port, "/warm", 5).status == 200
                and len({pid for pid, server, _ in served(log, "/warm") if server == "s2"}) == 2
            ),
            timeout=10,
            what="both workers sending to s2",
        )
        # Fresh connections until each worker has answered 20 (the kernel picks the worker).
        outcomes: list[Outcome] = []
        per_worker: Counter[int] = Counter()
        while len(outcomes) < 400 and not (len(per_worker) == 2 and min(per_worker.values()) >= 20):
            outcomes.append(fetch(master.port, f"/short?n={len(outcomes)}", 5))
            per_worker = Counter(pid for pid, _, _ in served(log, "/short"))
        assert s1.busy == 1, "the held request ended before the test did"
        assert held.result(timeout=20).status == 200
    assert failures(outcomes) == [], describe(failures(outcomes))
    lines = master.wait_for(
        lambda: len(served(log, "/short")) == len(outcomes) and served(log, "/short"),
        timeout=10,
        what="an access-log line per request",
    )
    assert len({pid for pid, _, _ in lines}) == 2, f"one worker took every request of {len(outcomes)}"
    assert {server for _, server, _ in lines} == {"s2"}, Counter(f"{pid}->{server}" for pid, server, _ in lines)


def test_frontend_maxconn_holds_for_the_node_with_two_workers(master, tagged):
    """frontend maxconn = 10, two workers, 30 clients: never more than 10 served at once
    (counted at the server, one request per connection), all answered, by both workers.
    (A connection accepted over the limit waits parked, unread: see net.gate.)"""
    (s1,) = tagged("s1")
    log = master.dir / "access.log"
    master.start(site_config(master, [s1], log=f"file:{log}", global_=SERVED_BY, frontend="maxconn = 10"), workers=2)
    for attempt in range(SPREAD_ATTEMPTS):
        s1.most_busy = 0
        path = f"/slow/400?round={attempt}&n="
        began = time.monotonic()
        outcomes = fetch_staggered(master.port, [f"{path}{i}" for i in range(30)], timeout=30)
        took = time.monotonic() - began

        assert failures(outcomes) == [], describe(failures(outcomes), began)
        assert s1.most_busy == 10, f"the server saw {s1.most_busy} requests at once with frontend maxconn = 10"
        assert took >= 1.1, f"30 x 400ms requests took {took:.2f}s: more than 10 were served at once"
        rows = master.wait_for(
            lambda: len(served(log, path)) == 30 and served(log, path),  # noqa: B023 (waited for here)
            timeout=10,
            what="30 log lines",
        )
        workers = {pid for pid, _, _ in rows}
        if len(workers) == 2:
            break
    assert len(workers) == 2, f"one worker took every connection, {SPREAD_ATTEMPTS} times: the test proved nothing"


def test_a_killed_worker_leaves_no_server_slot_behind(master, tagged):
    """maxconn = 2: the worker holding the slots is SIGKILLed; once it is replaced, the
    node's count is the truth again (0 in the API) and both slots serve at once."""
    (s1,) = tagged("s1")
    admin_port = free_port()
    master.start(
        site_config(
            master,
            [s1],
            tables=f'[admin]\nbind = "127.0.0.1:{admin_port}"\n',
            backend='timeouts = { connect = "1s", server = "10s", queue = "500ms" }',
            maxconn=2,
        ),
        workers=2,
    )

    def active() -> int:
        with urllib.request.urlopen(f"http://127.0.0.1:{admin_port}/api/stats", timeout=5) as reply:
            stats = json.loads(reply.read())
        return sum(row["active"] for row in stats["servers"])

    workers = {w.pid for w in master.workers(1)}
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        held = [pool.submit(fetch, master.port, f"/slow/5000?n={i}", 15) for i in range(2)]
        master.wait_for(lambda: s1.busy == 2, timeout=5, what="both slots taken")
        master.wait_for(lambda: active() == 2, timeout=5, what="the API to count both slots")
        # Only the workers' own: with tests running side by side, another process's
        # outgoing connection may have this port as its local one.
        holders = Counter({pid: count for pid, count in accepted_by(master.port).items() if pid in workers})
        victim = holders.most_common(1)[0][0]
        os.kill(victim, signal.SIGKILL)
        master.wait_for(lambda: len(master.workers(1)) == 2 and victim in master.exited(), 10, "a replacement")
        survivor_held = holders[next(pid for pid in workers if pid != victim)]
        # What the dead worker held is gone with it: the API counts only what is still held.
        master.wait_for(lambda: active() == survivor_held, timeout=5, what=f"active == {survivor_held}")
        free = 2 - survivor_held
        outcomes = fetch_all(master.port, ["/slow/200"] * free, timeout=10)
        assert failures(outcomes) == [], describe(outcomes)
        statuses = sorted(str(future.result(timeout=15).status) for future in held)
    # The dead worker's clients lost their requests; the survivor's were served.
    assert statuses == sorted(["200"] * survivor_held + ["None"] * (2 - survivor_held)), statuses
    master.wait_for(lambda: active() == 0, timeout=5, what="active == 0 once every request ended")
