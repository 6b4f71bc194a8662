"""Health as an operator meets it: active checks take dead servers out and bring them back,
`balancer agent` drains and re-weights a server, backups stand in only while no primary is up.

Every test runs a real `balancer run -c FILE` with two workers and the admin API on a TCP port,
and reads server health from `GET /api/servers`. Checks run in the master; workers pick up what
it publishes on a 100 ms beat, so every change is polled with a deadline, and traffic that must
see the change is sent only after a bounded "settle" poll has seen it from both workers.
Client requests each open a new connection (`Connection: close`), so the kernel spreads them
over both workers; each reports the `Server-Name` that answered.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import socket
import subprocess
import sys
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from tests.support import TaggedBackend, free_port, wait_until
from tests.support.config import server_blocks, toml_value
from tests.support.site import Site

from balancer.server import SYNC_INTERVAL

pytestmark = pytest.mark.e2e

# -- clients -----------------------------------------------------------------------------------


def get(port: int, path: str = "/", timeout: float = 5) -> tuple[int, str]:
    """One GET on a new connection: (status, Server-Name), or (0, error text) when it broke."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        connection.request("GET", path, headers={"Connection": "close"})
        response = connection.getresponse()
        response.read()
        return response.status, response.getheader("Server-Name", "")
    except (OSError, http.client.HTTPException) as exc:
        return 0, f"{type(exc).__name__}: {exc}"
    finally:
        connection.close()


def names(site: Site, count: int) -> list[str]:
    """`count` GETs; every one must be a 200. The Server-Name of each."""
    out = []
    for i in range(count):
        status, name = get(site.port, f"/n{i}")
        assert status == 200, f"request {i} of {count}: {status} {name}\n{tail(site)}"
        out.append(name)
    return out


def tail(site: Site) -> str:
    return "--- balancer output ---\n" + (site.process.output()[-3000:] if site.process else "")


def wait_beats(site: Site, beats: int) -> None:
    """Keep sending GETs for `beats` worker sync beats (server.SYNC_INTERVAL): long enough
    for every worker to have applied what the master published before."""
    end = time.monotonic() + beats * SYNC_INTERVAL
    i = 0
    while time.monotonic() < end:
        i += 1
        get(site.port, f"/beat{i}")


def settle(
    site: Site, ok: Callable[[str], bool], run: int = 40, span: float = 3 * SYNC_INTERVAL, timeout: float = 10
) -> None:
    """Send GETs until `run` consecutive ones, over at least `span` seconds (three sync
    beats), are answered by a server `ok` accepts.

    Workers apply a change from the master on their own beat (server.SYNC_INTERVAL); new
    connections spread by the kernel over both workers for that long show that both have
    it. A count alone is not enough: 40 requests can fit in a few milliseconds, before a
    worker's next beat.
    """
    deadline = time.monotonic() + timeout
    streak = 0
    streak_start = 0.0
    seen: deque[str] = deque(maxlen=20)
    i = 0
    while True:
        i += 1
        status, name = get(site.port, f"/settle{i}")
        seen.append(f"{status}:{name}")
        now = time.monotonic()
        if status == 200 and ok(name):
            if streak == 0:
                streak_start = now
            streak += 1
        else:
            streak = 0
        if streak >= run and now - streak_start >= span:
            return
        if now > deadline:
            raise AssertionError(f"traffic did not settle within {timeout}s; last: {list(seen)}\n{tail(site)}")


class ClientLoop(threading.Thread):
    """GETs one after another from a thread until stopped, `limit` requests or `seconds` pass."""

    def __init__(self, port: int, limit: int = 60_000, seconds: float = 40) -> None:
        super().__init__(name="client-loop", daemon=True)
        self.port = port
        self.limit = limit
        self.seconds = seconds
        self.results: list[tuple[float, int, str]] = []  # (monotonic time, status, Server-Name or error)
        self.halt = threading.Event()

    def run(self) -> None:
        deadline = time.monotonic() + self.seconds
        for i in range(self.limit):
            if self.halt.is_set() or time.monotonic() > deadline:
                return
            status, name = get(self.port, f"/loop{i}")
            self.results.append((time.monotonic(), status, name))

    def count(self) -> int:
        return len(self.results)

    def finish(self) -> None:
        self.halt.set()
        self.join(10)
        assert not self.is_alive(), "client loop did not stop"

    def failures(self) -> list[tuple[float, int, str]]:
        return [r for r in self.results if r[1] != 200]

    def served_between(self, start: float, end: float) -> Counter[str]:
        return Counter(name for t, status, name in self.results if start <= t <= end and status == 200)


# -- servers that are not well-behaved -----------------------------------------------------------


class SilentServer:
    """Accepts TCP connections on 127.0.0.1 and never writes a byte (until stopped)."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(0.1)
        self.port = self.listener.getsockname()[1]
        self.address = f"127.0.0.1:{self.port}"
        self.accepted: list[socket.socket] = []
        self._halt = threading.Event()
        self._thread = threading.Thread(target=self._accept, name="silent-server", daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while not self._halt.is_set():
            try:
                conn, _ = self.listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.accepted.append(conn)

    def stop(self) -> None:
        self._halt.set()
        self._thread.join(5)
        self.listener.close()
        for conn in self.accepted:
            conn.close()


@pytest.fixture
def silent() -> Iterator[SilentServer]:
    server = SilentServer()
    yield server
    server.stop()


# -- the balancer under test -------------------------------------------------------------------


def site_toml(site: Site, admin_port: int, default_backend: str, backends: str) -> str:
    return (
        site.global_toml(extra="workers = 2")
        + f'\n[admin]\nbind = "127.0.0.1:{admin_port}"\n'
        + f'\n[[frontend]]\nname = "www"\nbind = ["127.0.0.1:{site.port}"]\nmode = "http"\n'
        + f'default_backend = "{default_backend}"\n'
        + backends
    )


def backend_toml(name: str, servers: list[Any], **keys: Any) -> str:
    lines = ["\n[[backend]]", f'name = "{name}"', 'balance = "roundrobin"']
    lines += [f"{key} = {toml_value(value)}" for key, value in keys.items()]
    return "\n".join(lines) + "\n" + server_blocks(servers)


def api(admin_port: int, path: str, method: str = "GET", timeout: float = 5) -> Any:
    """Call the admin API over admin.bind; the JSON it answers (must be a 200)."""
    connection = http.client.HTTPConnection("127.0.0.1", admin_port, timeout=timeout)
    try:
        connection.request(method, path, headers={"Connection": "close"})
        response = connection.getresponse()
        body = response.read()
    finally:
        connection.close()
    assert response.status == 200, (method, path, response.status, body[:300])
    return json.loads(body)


def api_servers(admin_port: int) -> dict[str, dict[str, Any]]:
    """GET /api/servers, keyed by server name."""
    return {row["server"]: row for row in api(admin_port, "/api/servers")}


def usable_in(admin_port: int, backend: str) -> int:
    """`usable` of `backend` in GET /api/stats."""
    (row,) = [b for b in api(admin_port, "/api/stats")["backends"] if b["backend"] == backend]
    return int(row["usable"])


def wait_server(admin_port: int, server: str, predicate: Callable[[dict[str, Any]], bool], timeout: float, what: str):
    """Poll /api/servers until `server`'s row satisfies `predicate`; return that row."""
    last: dict[str, Any] = {}

    def probe() -> dict[str, Any] | None:
        nonlocal last
        last = api_servers(admin_port)[server]
        return last if predicate(last) else None

    try:
        return wait_until(probe, timeout=timeout, interval=0.05, what=what)
    except AssertionError as exc:
        raise AssertionError(f"{exc}; last row of {server}: {last}") from None


def event_line(site: Site, *needles: str, timeout: float = 3) -> str:
    """The first line of the balancer's event log (stderr) containing every needle."""

    def find() -> str | None:
        assert site.process is not None
        return next((line for line in site.process.output().splitlines() if all(n in line for n in needles)), None)

    try:
        return str(wait_until(find, timeout=timeout, interval=0.05, what=f"an event log line with {needles}"))
    except AssertionError:
        assert site.process is not None
        raise AssertionError(f"no log line with {needles}; output:\n{site.process.output()[-3000:]}") from None


# -- 1. a server dies under load, comes back with slowstart --------------------------------------

INTERVAL, FALL, RISE, SLOWSTART = 0.5, 2, 2, 3.0
SYNC_MARGIN = 0.5  # the 100 ms state beat, the API poll and scheduling on a busy box


def test_killed_server_goes_down_without_failed_requests_then_ramps_back(site, tagged):
    s1, s2, s3 = tagged("s1", "s2", "s3")
    s3_port = s3.port
    admin = free_port()
    check = {"type": "http", "path": "/", "interval": "500ms", "fall": FALL, "rise": RISE, "timeout": "300ms"}
    site.start(
        site_toml(
            site,
            admin,
            "web",
            backend_toml(
                "web",
                [s1, s2, {"name": "s3", "address": s3.address, "slowstart": "3s"}],
                check=check,
                retries=2,
                redispatch=True,
                timeouts={"connect": "1s", "server": "5s", "queue": "2s"},
            ),
        ),
        ports=[site.port, admin],
    )
    assert api_servers(admin)["s3"]["health"] == "up"

    client = ClientLoop(site.port)
    client.start()
    revived: TaggedBackend | None = None
    try:
        wait_until(lambda: client.count() >= 100, timeout=10, what="100 requests before the kill")
        served_before = Counter(name for _, _, name in client.results)
        assert set(served_before) == {"s1", "s2", "s3"}, served_before

        # kill s3: the client keeps going; retries + redispatch hide it until the check says down
        s3.stop()
        killed_at = time.monotonic()
        limit = FALL * INTERVAL + INTERVAL + SYNC_MARGIN
        row = wait_server(admin, "s3", lambda r: r["health"] == "down", timeout=limit + 3, what="s3 down")
        took = time.monotonic() - killed_at
        assert took <= limit, f"s3 went down {took:.2f}s after the kill (limit {limit}s)"
        assert "connect" in row["last_check"], row
        line = event_line(site, "s3", "DOWN")
        assert "web/s3" in line and "was up" in line, line
        assert row["last_check"] in line, f"the log line does not say why ({row['last_check']}): {line}"
        assert "2 of 3" in line, f"the log line does not say what is left usable: {line}"
        assert {r["server"]: r["health"] for r in api_servers(admin).values()} == {"s1": "up", "s2": "up", "s3": "down"}
        count = client.count()
        wait_until(lambda: client.count() >= count + 100, timeout=10, what="100 requests while s3 is down")

        # bring s3 back on the same port: up after `rise` checks, at a fraction of its weight
        revived = TaggedBackend("s3", port=s3_port).start()
        restarted_at = time.monotonic()
        limit = RISE * INTERVAL * 1.1 + INTERVAL + SYNC_MARGIN
        row = wait_server(admin, "s3", lambda r: r["health"] == "up", timeout=limit + 3, what="s3 up")
        up_at = time.monotonic()
        assert up_at - restarted_at <= limit, f"s3 came back {up_at - restarted_at:.2f}s after restart (limit {limit}s)"
        assert row["weight"] == 100
        assert row["effective_weight"] < 50, f"no slowstart ramp right after recovery: {row}"
        event_line(site, "s3", "UP")
        row = wait_server(
            admin, "s3", lambda r: r["effective_weight"] == 100, timeout=SLOWSTART + 1, what="s3 at full weight"
        )
        full_at = time.monotonic()
        assert full_at - up_at > SLOWSTART / 2, f"the ramp took only {full_at - up_at:.2f}s"
        count = client.count()
        wait_until(lambda: client.count() >= count + 100, timeout=10, what="100 requests after the ramp")
    finally:
        client.finish()
        if revived is not None:
            revived.stop()

    assert client.failures() == [], f"{len(client.failures())} of {client.count()} GETs failed: {client.failures()[:5]}"
    during_ramp = client.served_between(up_at, full_at)
    assert sum(during_ramp.values()) >= 100, during_ramp
    assert during_ramp["s3"] > 0, f"s3 got nothing while ramping: {during_ramp}"
    assert during_ramp["s3"] < during_ramp["s1"] and during_ramp["s3"] < during_ramp["s2"], during_ramp
    share = during_ramp["s3"] / sum(during_ramp.values())
    assert share < 0.3, f"s3 share during slowstart {share:.2f} (a full share is 0.33): {during_ramp}"


# -- 2. `balancer agent`: drain, then up at 50% ----------------------------------------------------


def agent_command() -> list[str]:
    script = Path(sys.executable).parent / "balancer"
    return [str(script)] if script.exists() else [sys.executable, "-m", "balancer"]


@pytest.fixture
def agent_process(tmp_path: Path) -> Iterator[Callable[[int, Path], subprocess.Popen[bytes]]]:
    started: list[subprocess.Popen[bytes]] = []

    def start(port: int, state_file: Path) -> subprocess.Popen[bytes]:
        # --host 127.0.0.1: the agent answers for the server on 127.0.0.1 only (see the test)
        command = [*agent_command(), "agent", "--port", str(port), "--state-file", str(state_file)]
        command += ["--host", "127.0.0.1"]
        log = open(tmp_path / f"agent{len(started)}.log", "wb")  # noqa: SIM115 - closed with the process
        proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        log.close()
        started.append(proc)

        def answers() -> bool:
            assert proc.poll() is None, (tmp_path / f"agent{len(started) - 1}.log").read_text()
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
                    return sock.recv(100).endswith(b"\n")
            except OSError:
                return False

        wait_until(answers, timeout=10, interval=0.05, what="balancer agent answering")
        return proc

    yield start
    for proc in started:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)


def agent_says(port: int) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=2) as sock:
        return sock.recv(100)


def test_agent_drain_stops_new_traffic_and_up_50_halves_the_share(site, tmp_path, agent_process):
    # The agent is configured per backend and asked at each server's own host. On one test host
    # the agent would answer for every server, so the other server listens on 127.0.0.2 (still
    # loopback) where the agent, bound to 127.0.0.1, refuses: an unreachable agent changes nothing.
    agent_port = free_port()
    state_file = tmp_path / "agent-state"
    state_file.write_text("up 100%\n")
    agent = agent_process(agent_port, state_file)
    assert agent_says(agent_port) == b"up 100%\n"

    with TaggedBackend("a") as a, TaggedBackend("b", host="127.0.0.2") as b:
        admin = free_port()
        site.start(
            site_toml(
                site,
                admin,
                "web",
                backend_toml("web", [a, b], agent={"port": agent_port, "interval": "300ms"}),
            ),
            ports=[site.port, admin],
        )
        wait_server(admin, "a", lambda r: r["agent"] == "ready 100%", timeout=5, what="the agent's first reply")
        assert api_servers(admin)["b"]["agent"] == "ready", "b has no agent and must stay as configured"
        assert set(names(site, 20)) == {"a", "b"}

        # drain: the agent says so, the master publishes it, no new connection reaches a
        state_file.write_text("drain\n")
        row = wait_server(admin, "a", lambda r: r["agent"].startswith("drain"), timeout=3, what="a drained by agent")
        assert row["state"] == "ready", "the agent's drain must not overwrite the operator's state"
        assert row["health"] == "up"
        line = event_line(site, "web/a", "agent", "drain")
        assert "1 of 2" in line, line
        settle(site, lambda name: name == "b")
        drained = Counter(names(site, 200))
        assert drained == {"b": 200}, f"a drained server got new requests: {drained}\n{tail(site)}"
        assert agent.poll() is None

        # up 50%: a is back at half its configured weight, so 50 of 150
        state_file.write_text("up 50%\n")
        row = wait_server(admin, "a", lambda r: r["agent"] == "ready 50%", timeout=3, what="a back at 50%")
        assert row["weight"] == 100 and row["effective_weight"] == 50, row
        settle(site, lambda name: name == "a", run=1, span=0)  # one worker has it ...
        wait_beats(site, 3)  # ... and the other within a beat
        counts = Counter(names(site, 2000))
        share = counts["a"] / 2000
        assert abs(share - 1 / 3) <= 0.05, f"a's share {share:.3f} at 50% weight (expected 0.333 +- 0.05): {counts}"


# -- 3. failing checks: a 500, and a server that accepts but never answers --------------------------


def test_a_500_on_the_health_path_and_a_silent_server_go_down(site, tagged, silent):
    (erring, hanging) = tagged("erring", "hanging")
    admin = free_port()
    fast = {"interval": "300ms", "fall": 2, "rise": 2, "timeout": "300ms"}
    site.start(
        site_toml(
            site,
            admin,
            "errors",
            backend_toml("errors", [erring], check={"type": "http", "path": "/status/500", **fast})
            + backend_toml("silent", [{"name": "silent", "address": silent.address}], check={"type": "http", **fast})
            + backend_toml("hang", [hanging], check={"type": "http", "path": "/hang", **fast})
            + backend_toml(
                "tcponly", [{"name": "silent-tcp", "address": silent.address}], check={"type": "tcp", **fast}
            )
            + backend_toml(
                "expect5xx",
                [{"name": "erring-5xx", "address": erring.address}],
                check={"type": "http", "path": "/status/500", "expect": "5xx", **fast},
            )
            + backend_toml(
                "bodymatch",
                [{"name": "erring-body", "address": erring.address}],
                check={"type": "http", "path": "/", "body": "^err", **fast},
            )
            + backend_toml(
                "bodymiss",
                [{"name": "erring-miss", "address": erring.address}],
                check={"type": "http", "path": "/", "body": "nomatch", **fast},
            ),
        ),
        ports=[site.port, admin],
    )

    # each goes down within fall x (interval + timeout) and a margin
    limit = 2 * (0.3 * 1.1 + 0.3) + 2
    row = wait_server(admin, "erring", lambda r: r["health"] == "down", timeout=limit, what="erring down")
    assert "500" in row["last_check"], row
    line = event_line(site, "errors/erring", "DOWN")
    assert "500" in line, line

    row = wait_server(admin, "silent", lambda r: r["health"] == "down", timeout=limit, what="silent down")
    assert "timeout" in row["last_check"], row
    line = event_line(site, "silent/silent", "DOWN")
    assert "timeout" in line, line
    assert silent.accepted, "the check never connected to the silent server"

    row = wait_server(admin, "hanging", lambda r: r["health"] == "down", timeout=limit, what="hanging down")
    assert "timeout" in row["last_check"], row
    assert "/hang" in hanging.paths

    # a TCP check only asks whether the port accepts: the silent server passes it
    rows = api_servers(admin)
    assert rows["silent-tcp"]["health"] == "up", rows["silent-tcp"]
    assert "ok" in rows["silent-tcp"]["last_check"], rows["silent-tcp"]
    # `expect` and `body`: a 500 that is expected passes, a body that does not match fails
    assert rows["erring-5xx"]["health"] == "up", rows["erring-5xx"]
    assert rows["erring-body"]["health"] == "up", rows["erring-body"]
    row = wait_server(admin, "erring-miss", lambda r: r["health"] == "down", timeout=limit, what="body mismatch down")
    assert "body" in row["last_check"], row

    # with its only server down, the default backend answers 503 (once the workers have it)
    def unavailable() -> bool:
        return get(site.port, "/x")[0] == 503

    wait_until(unavailable, timeout=3, interval=0.05, what="503 from a backend whose only server is down")
    assert [get(site.port, f"/y{i}")[0] for i in range(10)] == [503] * 10


# -- 4. backup servers ---------------------------------------------------------------------------


def test_backup_serves_only_while_no_primary_is_up(site, tagged):
    p1, p2, spare = tagged("p1", "p2", "spare")
    ports = {"p1": p1.port, "p2": p2.port}
    admin = free_port()
    check = {"type": "http", "path": "/", "interval": "300ms", "fall": 2, "rise": 2, "timeout": "300ms"}
    site.start(
        site_toml(
            site,
            admin,
            "web",
            backend_toml(
                "web",
                [p1, p2, {"name": "spare", "address": spare.address, "backup": True}],
                check=check,
                retries=2,
                redispatch=True,
            ),
        ),
        ports=[site.port, admin],
    )
    limit = 2 * 0.3 * 1.1 + 0.3 + 2

    served = Counter(names(site, 100))
    assert served["spare"] == 0, served
    assert set(served) == {"p1", "p2"}, served

    # every primary down: the backup takes all the traffic
    p1.stop()
    p2.stop()
    for name in ("p1", "p2"):
        wait_server(admin, name, lambda r: r["health"] == "down", timeout=limit, what=f"{name} down")
    assert api_servers(admin)["spare"]["health"] == "up"
    settle(site, lambda name: name == "spare")
    served = Counter(names(site, 100))
    assert served == {"spare": 100}, served

    # primaries back: the backup gets nothing again
    revived = [TaggedBackend(name, port=port).start() for name, port in ports.items()]
    try:
        for name in ("p1", "p2"):
            wait_server(admin, name, lambda r: r["health"] == "up", timeout=limit, what=f"{name} up")
        settle(site, lambda name: name in ("p1", "p2"))
        served = Counter(names(site, 100))
        assert served["spare"] == 0, served
        assert set(served) == {"p1", "p2"}, served
    finally:
        for server in revived:
            with contextlib.suppress(Exception):
                server.stop()


# -- what the admin API reports, and reloads --------------------------------------------------------


def test_stats_do_not_count_a_server_the_agent_drained_as_usable(site, tmp_path, agent_process):
    # The master's own log line says "1 of 2 servers usable"; /api/stats must agree with it.
    agent_port = free_port()
    state_file = tmp_path / "agent-state"
    state_file.write_text("up 100%\n")
    agent_process(agent_port, state_file)
    with TaggedBackend("a") as a, TaggedBackend("b", host="127.0.0.2") as b:
        admin = free_port()
        site.start(
            site_toml(site, admin, "web", backend_toml("web", [a, b], agent={"port": agent_port, "interval": "300ms"})),
            ports=[site.port, admin],
        )
        wait_server(admin, "a", lambda r: r["agent"] == "ready 100%", timeout=5, what="the agent's first reply")
        assert usable_in(admin, "web") == 2

        state_file.write_text("drain\n")
        wait_server(admin, "a", lambda r: r["agent"].startswith("drain"), timeout=3, what="a drained by agent")
        assert "1 of 2" in event_line(site, "web/a", "agent", "drain")
        assert usable_in(admin, "web") == 1, f"/api/stats: {api(admin, '/api/stats')['backends']}"


def test_a_reload_during_slowstart_lets_the_ramp_finish(site, tagged):
    s1, s2 = tagged("s1", "s2")
    s1_port = s1.port
    admin = free_port()
    slowstart = 4.0
    check = {"type": "http", "path": "/", "interval": "300ms", "fall": 1, "rise": 1, "timeout": "300ms"}
    site.start(
        site_toml(
            site,
            admin,
            "web",
            backend_toml("web", [{"name": "s1", "address": s1.address, "slowstart": "4s"}, s2], check=check),
        ),
        ports=[site.port, admin],
    )
    s1.stop()
    wait_server(admin, "s1", lambda r: r["health"] == "down", timeout=3, what="s1 down")
    revived = TaggedBackend("s1", port=s1_port).start()
    try:
        row = wait_server(admin, "s1", lambda r: r["health"] == "up", timeout=3, what="s1 up")
        up_at = time.monotonic()
        assert row["effective_weight"] < 100, row

        # reload the unchanged file in the middle of the ramp
        assert api(admin, "/api/reload", method="POST", timeout=20)["reloaded"] is True
        row = api_servers(admin)["s1"]
        assert row["health"] == "up", row
        assert time.monotonic() - up_at < slowstart, "the reload took longer than the ramp; nothing was tested"

        remaining = slowstart - (time.monotonic() - up_at)
        wait_server(
            admin,
            "s1",
            lambda r: r["effective_weight"] == 100,
            timeout=remaining + 1.5,
            what="s1 at full weight after a reload during slowstart",
        )
    finally:
        revived.stop()
