"""The runtime API and `balancer ctl` as an operator and a monitoring system meet them.

Every test runs a real `balancer run -c FILE` with two workers, two tagged backends (`s1`, `s2`
in backend `web`, frontend `www`) and the admin API on both a unix socket (`admin.socket`) and
a TCP port on 127.0.0.1 (`admin.bind`). The API is called over the unix socket with
http.client (and once with `curl --unix-socket`); `/metrics` and `/health` over TCP.

Workers publish their counters and pick up server-state changes on a beat (every 100 ms or
so), so everything that crosses that boundary is polled with a deadline, never slept on.
Requests to the frontend each open a new connection, so the kernel spreads them over both
workers.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import re
import shutil
import socket
import stat
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families
from tests.support import TaggedBackend, free_port, run_balancer, wait_until
from tests.support.config import server_blocks
from tests.support.curl import curl_raw
from tests.support.process import BalancerProcess
from tests.support.site import Site

pytestmark = pytest.mark.e2e

SERVER_FIELDS = {
    "backend",
    "server",
    "address",
    "state",
    "health",
    "weight",
    "active",
    "queued",
    "requests",
    "bytes_in",
    "bytes_out",
    "resp_time_ms",
}


# -- clients -----------------------------------------------------------------------------------


class UnixHTTPConnection(http.client.HTTPConnection):
    """http.client over an AF_UNIX stream socket."""

    def __init__(self, path: str, timeout: float = 10) -> None:
        super().__init__("localhost", timeout=timeout)
        self.unix_path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        sock.connect(self.unix_path)
        self.sock = sock


class Reply:
    def __init__(self, status: int, content_type: str, body: bytes) -> None:
        self.status = status
        self.content_type = content_type
        self.body = body

    def json(self) -> Any:
        assert self.content_type.startswith("application/json"), (self.status, self.content_type, self.body)
        return json.loads(self.body)

    def __repr__(self) -> str:
        return f"<Reply {self.status} {self.content_type} {self.body[:300]!r}>"


def http_call(
    connection: http.client.HTTPConnection, method: str, path: str, body: bytes | None = None, json_body: Any = None
) -> Reply:
    headers = {"Connection": "close"}
    if json_body is not None:
        body = json.dumps(json_body).encode()
        headers["Content-Type"] = "application/json"
    try:
        connection.request(method, path, body=body, headers=headers)
        response = connection.getresponse()
        data = response.read()
    finally:
        connection.close()
    return Reply(response.status, response.getheader("Content-Type", ""), data)


def send_requests(port: int, count: int) -> list[str]:
    """`count` GETs to the frontend, a new connection each; every one must be a 200. Server-Name of each."""
    names = []
    for i in range(count):
        reply = http_call(http.client.HTTPConnection("127.0.0.1", port, timeout=10), "GET", f"/r{i}")
        assert reply.status == 200, f"request {i} of {count}: {reply}"
        names.append(reply.body.decode().strip())
    return names


def parse_metrics(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample of a Prometheus text exposition, keyed by (sample name, labels)."""
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return samples


# -- the site under test -----------------------------------------------------------------------


class AdminSite:
    """A balancer with two workers, backends s1/s2, and the admin API on a unix socket and TCP."""

    def __init__(self, site: Site, s1: TaggedBackend, s2: TaggedBackend, socket_dir: Path) -> None:
        self.site = site
        self.s1 = s1
        self.s2 = s2
        self.socket = str(socket_dir / "admin.sock")
        self.admin_port = free_port()
        self.disable_file = site.dir / "disable"

    @property
    def port(self) -> int:
        return self.site.port

    @property
    def config_path(self) -> Path:
        return self.site.config_path

    @property
    def process(self) -> BalancerProcess:
        assert self.site.process is not None
        return self.site.process

    def config(self, s1: dict[str, Any] | None = None, frontend_extra: str = "") -> str:
        """The whole TOML file; `s1` adds or overrides keys of server s1."""
        s1_keys = {"name": "s1", "address": self.s1.address, **(s1 or {})}
        return (
            self.site.global_toml(extra=f'workers = 2\ndisable_file = "{self.disable_file}"')
            + f'\n[admin]\nsocket = "{self.socket}"\nbind = "127.0.0.1:{self.admin_port}"\n'
            + f'\n[[frontend]]\nname = "www"\nbind = ["127.0.0.1:{self.port}"]\nmode = "http"\n'
            + f'default_backend = "web"\n{frontend_extra}\n'
            + '\n[[backend]]\nname = "web"\nbalance = "roundrobin"\n'
            + server_blocks([s1_keys, self.s2])
        )

    def start(self, config: str | None = None) -> BalancerProcess:
        process = self.site.start(config or self.config(), ports=[self.port, self.admin_port])
        # Reloads are only meaningful once the first generation serves.
        wait_until(lambda: "balancer running" in process.output(), timeout=15, what="the first workers to serve")
        return process

    # the API -------------------------------------------------------------------------------------

    def api(self, method: str, path: str, body: bytes | None = None, json_body: Any = None) -> Reply:
        """One call over the unix socket."""
        return http_call(UnixHTTPConnection(self.socket), method, path, body, json_body)

    def tcp(self, method: str, path: str) -> Reply:
        """One call over admin.bind."""
        return http_call(http.client.HTTPConnection("127.0.0.1", self.admin_port, timeout=10), method, path)

    def servers(self) -> list[dict[str, Any]]:
        reply = self.api("GET", "/api/servers")
        assert reply.status == 200, reply
        rows = reply.json()
        assert isinstance(rows, list), rows
        return rows

    def settings(self) -> list[dict[str, Any]]:
        """The SPEC fields of every server (leaving out clocks such as time since the last change)."""
        return [{key: row[key] for key in sorted(SERVER_FIELDS)} for row in self.servers()]

    def server(self, name: str) -> dict[str, Any]:
        return next(row for row in self.servers() if row["backend"] == "web" and row["server"] == name)

    def ctl(self, *words: str) -> Any:
        return run_balancer("ctl", "--socket", self.socket, *words)

    def totals(self) -> tuple[float, float]:
        """(sum of balancer_server_sessions_total over servers, balancer_frontend_http_requests_total for www)."""
        reply = self.tcp("GET", "/metrics")
        assert reply.status == 200, reply
        samples = parse_metrics(reply.body.decode())
        sessions = sum(value for (name, _), value in samples.items() if name == "balancer_server_sessions_total")
        requests = samples[("balancer_frontend_http_requests_total", frozenset({("frontend", "www")}))]
        return sessions, requests

    def wait_totals(self, expected: int, timeout: float = 8) -> tuple[float, float]:
        """Poll /metrics until both totals reach `expected`; then they must equal it exactly."""
        seen: list[tuple[float, float]] = []

        def reached() -> bool:
            seen.append(self.totals())
            return min(seen[-1]) >= expected

        try:
            wait_until(reached, timeout=timeout, interval=0.05, what=f"counters to reach {expected}")
        except AssertionError:
            raise AssertionError(f"totals never reached {expected}: last (sessions, requests) = {seen[-1:]}") from None
        assert seen[-1] == (expected, expected), f"after exactly {expected} requests: {seen[-1]}"
        return seen[-1]

    def wait_only(self, name: str, count: int = 30, timeout: float = 8) -> list[str]:
        """Poll until a batch of `count` new requests all reach server `name` (workers pick up a
        state change on their next beat); the batch that did it."""
        batches: list[list[str]] = []

        def one_batch() -> bool:
            batches.append(send_requests(self.port, count))
            return set(batches[-1]) == {name}

        try:
            wait_until(one_batch, timeout=timeout, interval=0.01, what=f"{count} requests all on {name}")
        except AssertionError:
            raise AssertionError(f"requests still reach other servers; last batch: {batches[-1:]}") from None
        return batches[-1]


@pytest.fixture
def socket_dir() -> Iterator[Path]:
    # AF_UNIX paths are limited to 107 bytes: keep the socket out of pytest's long tmp paths.
    path = Path(tempfile.mkdtemp(prefix="bal-adm-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def admin(site: Site, tagged: Callable[..., list[TaggedBackend]], socket_dir: Path) -> AdminSite:
    s1, s2 = tagged("s1", "s2")
    return AdminSite(site, s1, s2, socket_dir)


# -- 1. reading the servers --------------------------------------------------------------------


def test_api_servers_over_unix_socket_lists_every_server_and_socket_is_private(admin):
    admin.start()

    mode = os.stat(admin.socket).st_mode
    assert stat.S_ISSOCK(mode)
    assert stat.S_IMODE(mode) == 0o600, oct(stat.S_IMODE(mode))

    result = curl_raw("--unix-socket", admin.socket, "http://localhost/api/servers", timeout=10)
    assert result.returncode == 0, result.stderr
    rows = json.loads(result.stdout)
    assert [(row["backend"], row["server"]) for row in rows] == [("web", "s1"), ("web", "s2")]
    for row, backend in zip(rows, (admin.s1, admin.s2), strict=True):
        assert set(row) >= SERVER_FIELDS, f"missing {SERVER_FIELDS - set(row)} in {row}"
        assert row["address"] == backend.address
        assert row["state"] == "ready"
        assert row["health"] == "up"
        assert row["weight"] == 100
        assert row["active"] == 0
        assert row["queued"] == 0
        assert row["requests"] == 0
        assert isinstance(row["resp_time_ms"], int | float)

    # the same API over admin.bind
    tcp_rows = admin.tcp("GET", "/api/servers").json()
    assert [(r["server"], r["state"], r["weight"]) for r in tcp_rows] == [("s1", "ready", 100), ("s2", "ready", 100)]


# -- 2. draining with ctl ----------------------------------------------------------------------


def test_ctl_drain_shows_in_json_and_moves_new_requests_to_the_other_server(admin):
    admin.start()
    assert set(send_requests(admin.port, 10)) == {"s1", "s2"}

    done = admin.ctl("set", "server", "web/s1", "state", "drain")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "drain" in done.stdout

    for words in (["--json", "show", "servers"], ["show", "servers", "--json"]):
        shown = admin.ctl(*words)
        assert shown.returncode == 0, shown.stderr
        rows = {row["server"]: row for row in json.loads(shown.stdout)}
        assert rows["s1"]["state"] == "drain", words
        assert rows["s2"]["state"] == "ready", words

    assert admin.wait_only("s2") == ["s2"] * 30
    # once every worker obeyed, s1 gets nothing more
    seen_by_s1 = len(admin.s1.requests)
    assert send_requests(admin.port, 10) == ["s2"] * 10
    assert len(admin.s1.requests) == seen_by_s1

    # the table form for a terminal names the state too
    table = admin.ctl("show", "servers")
    assert table.returncode == 0, table.stderr
    assert re.search(r"s1.*drain", table.stdout), table.stdout


# -- 3. bad input ------------------------------------------------------------------------------


def test_bad_input_is_refused_clearly_and_changes_nothing(admin):
    admin.start()
    baseline = admin.settings()

    # ctl: a state word that does not exist
    bogus = admin.ctl("set", "server", "web/s1", "state", "bogus")
    assert bogus.returncode == 1, bogus.stdout + bogus.stderr
    for word in ("ready", "drain", "maint", "bogus"):
        assert word in bogus.stderr, bogus.stderr

    # ctl: a server that does not exist, and a weight out of range
    unknown = admin.ctl("set", "server", "web/nope", "state", "drain")
    assert unknown.returncode == 1, unknown.stdout + unknown.stderr
    assert "web/nope" in unknown.stderr
    heavy = admin.ctl("set", "server", "web/s1", "weight", "300")
    assert heavy.returncode == 1, heavy.stdout + heavy.stderr
    assert "256" in heavy.stderr

    # the API itself
    cases: list[tuple[str, str, dict[str, Any], int]] = [
        ("PUT", "/api/servers/web/nope", {"json_body": {"state": "drain"}}, 404),
        ("PUT", "/api/servers/nope/s1", {"json_body": {"state": "drain"}}, 404),
        ("PUT", "/api/servers/web/s1", {"json_body": {"weight": 300}}, 400),
        ("PUT", "/api/servers/web/s1", {"json_body": {"weight": -1}}, 400),
        ("PUT", "/api/servers/web/s1", {"json_body": {"state": "bogus"}}, 400),
        # a good half must not be applied when the other half is refused
        ("PUT", "/api/servers/web/s1", {"json_body": {"state": "drain", "weight": 300}}, 400),
        ("PUT", "/api/servers/web/s1", {"json_body": {"state": "drain", "color": "red"}}, 400),
        ("PUT", "/api/servers/web/s1", {"body": b'{"state": "drain"'}, 400),
        ("PUT", "/api/servers/web/s1", {"body": b"not json at all"}, 400),
        ("GET", "/api/nothing-here", {}, 404),
        ("POST", "/api/servers", {}, 405),
    ]
    for method, path, kwargs, status in cases:
        reply = admin.api(method, path, **kwargs)
        assert reply.status == status, f"{method} {path} {kwargs}: {reply}"
        error = reply.json()
        assert isinstance(error, dict), error
        assert isinstance(error.get("error"), str), error
        assert error["error"].strip(), error
    assert "256" in admin.api("PUT", "/api/servers/web/s1", json_body={"weight": 300}).json()["error"]
    assert "web/nope" in admin.api("PUT", "/api/servers/web/nope", json_body={"state": "drain"}).json()["error"]

    assert admin.settings() == baseline

    # ctl that cannot reach anything, and ctl that makes no sense
    missing = run_balancer("ctl", "--socket", str(admin.site.dir / "no-such.sock"), "show", "servers")
    assert missing.returncode == 3, missing.stdout + missing.stderr
    assert "no-such.sock" in missing.stderr
    nonsense = admin.ctl("frobnicate", "the", "widgets")
    assert nonsense.returncode == 2, nonsense.stdout + nonsense.stderr
    assert "frobnicate" in nonsense.stderr
    bad_weight = admin.ctl("set", "server", "web/s1", "weight", "heavy")
    assert bad_weight.returncode == 2, bad_weight.stdout + bad_weight.stderr

    assert admin.settings() == baseline
    assert set(send_requests(admin.port, 10)) == {"s1", "s2"}


# -- 4. Prometheus -----------------------------------------------------------------------------


def test_metrics_parse_and_add_up_to_exactly_what_was_sent(admin):
    admin.start()
    reply = admin.tcp("GET", "/metrics")
    assert reply.status == 200, reply
    assert reply.content_type.startswith("text/plain"), reply.content_type
    families = {family.name for family in text_string_to_metric_families(reply.body.decode())}
    assert {"balancer_server_sessions", "balancer_frontend_http_requests"} <= families, families
    assert admin.totals() == (0, 0)

    sent = 200
    names = send_requests(admin.port, sent)

    admin.wait_totals(sent)
    samples = parse_metrics(admin.tcp("GET", "/metrics").body.decode())
    per_server = {
        dict(labels)["server"]: value
        for (name, labels), value in samples.items()
        if name == "balancer_server_sessions_total" and dict(labels)["backend"] == "web"
    }
    assert per_server == {"s1": names.count("s1"), "s2": names.count("s2")}
    assert per_server == {"s1": len(admin.s1.requests), "s2": len(admin.s2.requests)}
    # the JSON API agrees with /metrics
    assert {row["server"]: row["requests"] for row in admin.servers()} == per_server


def test_metrics_have_a_response_time_histogram_per_backend(admin):
    """Issue 6 asks for a response-time histogram per backend (like HAProxy's exporter):
    a `histogram` family labelled `backend` whose `_count` is the number of responses timed."""
    admin.start()
    sent = 20
    send_requests(admin.port, sent)
    admin.wait_totals(sent)

    def web_histograms() -> dict[str, float]:
        families = text_string_to_metric_families(admin.tcp("GET", "/metrics").body.decode())
        return {
            sample.name: sample.value
            for family in families
            if family.type == "histogram"
            for sample in family.samples
            if sample.name.endswith("_count") and sample.labels.get("backend") == "web"
        }

    found = web_histograms()
    assert found, "no histogram family with a backend label in /metrics"
    wait_until(lambda: sent in web_histograms().values(), timeout=5, what=f"a backend histogram _count of {sent}")


# -- 5. counters across a reload ---------------------------------------------------------------


class TotalsPoller(threading.Thread):
    """Reads /metrics totals in a loop (bounded in time) so a dip during a reload is seen."""

    def __init__(self, admin: AdminSite, limit: float = 40) -> None:
        super().__init__(daemon=True)
        self.admin = admin
        self.limit = limit
        self.stop_event = threading.Event()
        self.readings: list[tuple[float, float]] = []
        self.errors: list[str] = []

    def run(self) -> None:
        deadline = time.monotonic() + self.limit
        while not self.stop_event.is_set() and time.monotonic() < deadline:
            try:
                self.readings.append(self.admin.totals())
            except (OSError, AssertionError, KeyError, ValueError) as exc:
                self.errors.append(repr(exc))
            self.stop_event.wait(0.02)

    def finish(self) -> None:
        self.stop_event.set()
        self.join(10)


def test_counters_survive_a_reload(admin):
    admin.start()
    first, more = 60, 40
    send_requests(admin.port, first)
    admin.wait_totals(first)

    poller = TotalsPoller(admin)
    poller.start()
    try:
        reloaded = admin.ctl("reload")
        assert reloaded.returncode == 0, reloaded.stdout + reloaded.stderr
        assert re.search(r"generation 2\b", reloaded.stdout), reloaded.stdout
        send_requests(admin.port, more)
        admin.wait_totals(first + more)
        # the old generation is gone by now (grace is 2s; idle workers leave at once): still the same
        wait_until(
            lambda: len(re.findall(r"worker exited: pid=\d+ generation=1 ", admin.process.output())) == 2,
            timeout=8,
            what="both workers of generation 1 to exit",
        )
        assert admin.totals() == (first + more, first + more)
    finally:
        poller.finish()

    assert not poller.errors, poller.errors[:5]
    assert poller.readings, "the poller read nothing"
    for earlier, later in zip(poller.readings, poller.readings[1:], strict=False):
        assert later[0] >= earlier[0] and later[1] >= earlier[1], f"counters went backwards: {earlier} -> {later}"
    assert min(min(reading) for reading in poller.readings) >= first, poller.readings[:5]
    stats = admin.api("GET", "/api/stats").json()
    assert stats["generation"] == 2


# -- 6. run-time state across a reload ---------------------------------------------------------


def reload_via_api(admin: AdminSite) -> dict[str, Any]:
    reply = admin.api("POST", "/api/reload")
    assert reply.status == 200, reply
    result = reply.json()
    assert result.get("reloaded") is True, result
    return dict(result)


def test_runtime_drain_survives_a_reload_until_the_file_changes_it(admin):
    admin.start()
    reply = admin.api("PUT", "/api/servers/web/s1", json_body={"state": "drain"})
    assert reply.status == 200, reply
    assert reply.json()["state"] == "drain"
    admin.wait_only("s2")

    # the same file: the operator's drain stays, and the new workers obey it
    assert reload_via_api(admin)["generation"] == 2
    assert admin.server("s1")["state"] == "drain"
    assert send_requests(admin.port, 30) == ["s2"] * 30

    # the file now says something else about s1: the file wins
    admin.config_path.write_text(admin.config(s1={"state": "maint"}))
    assert reload_via_api(admin)["generation"] == 3
    assert admin.server("s1")["state"] == "maint"
    assert send_requests(admin.port, 10) == ["s2"] * 10

    # and back to ready in the file: ready again, traffic returns to s1
    admin.config_path.write_text(admin.config(s1={"state": "ready"}))
    assert reload_via_api(admin)["generation"] == 4
    assert admin.server("s1")["state"] == "ready"
    assert set(send_requests(admin.port, 10)) == {"s1", "s2"}


def test_file_weight_wins_over_runtime_weight_on_reload(admin):
    admin.start()
    assert admin.api("PUT", "/api/servers/web/s1", json_body={"weight": 10}).status == 200

    assert reload_via_api(admin)["generation"] == 2
    assert admin.server("s1")["weight"] == 10

    admin.config_path.write_text(admin.config(s1={"weight": 50}))
    reload_via_api(admin)
    assert admin.server("s1")["weight"] == 50


def test_editing_the_weight_in_the_file_keeps_a_runtime_drain(admin):
    """A value set at run time survives while the file's own value for it is unchanged: editing
    s1's weight in the file says nothing about its state, so the operator's drain must stay
    (otherwise a reload for an unrelated weight tweak puts a drained server back in rotation)."""
    admin.start()
    assert admin.api("PUT", "/api/servers/web/s1", json_body={"state": "drain"}).status == 200

    admin.config_path.write_text(admin.config(s1={"weight": 50}))
    reload_via_api(admin)

    s1 = admin.server("s1")
    assert s1["weight"] == 50, s1
    assert s1["state"] == "drain", f"the file changed only the weight, yet the run-time drain was lost: {s1}"


# -- 7. /health and disable_file ---------------------------------------------------------------


def test_health_follows_the_disable_file(admin):
    admin.start()

    def health() -> tuple[int, Any]:
        reply = admin.tcp("GET", "/health")
        return reply.status, reply.json()

    assert health() == (200, {"status": "serving"})

    admin.disable_file.write_text("")
    wait_until(lambda: health()[0] == 503, timeout=5, what="/health to fail")
    status, body = health()
    assert status == 503
    assert body["status"] != "serving", body
    # the balancer still serves traffic; only the health signal is withdrawn
    assert set(send_requests(admin.port, 4)) == {"s1", "s2"}

    admin.disable_file.unlink()
    wait_until(lambda: health() == (200, {"status": "serving"}), timeout=5, what="/health to recover")


# -- 8. a refused reload -----------------------------------------------------------------------


def test_reload_of_an_invalid_file_is_refused_with_file_line_and_traffic_flows(admin):
    admin.start()
    good = admin.config()
    bad = admin.config(frontend_extra="bogus_key = 1")
    bad_line = bad.splitlines().index("bogus_key = 1") + 1
    admin.config_path.write_text(bad)

    stop = threading.Event()
    statuses: list[int | str] = []

    def drive() -> None:
        deadline = time.monotonic() + 20
        while not stop.is_set() and time.monotonic() < deadline:
            try:
                conn = http.client.HTTPConnection("127.0.0.1", admin.port, timeout=5)
                statuses.append(http_call(conn, "GET", "/during").status)
            except OSError as exc:
                statuses.append(repr(exc))

    driver = threading.Thread(target=drive, daemon=True)
    driver.start()
    try:
        wait_until(lambda: len(statuses) >= 5, timeout=5, what="traffic to start")
        reply = admin.api("POST", "/api/reload")
        seen = len(statuses)
        wait_until(lambda: len(statuses) >= seen + 20, timeout=5, what="traffic to continue after the refusal")
    finally:
        stop.set()
        driver.join(10)

    assert reply.status == 400, reply
    result = reply.json()
    assert result.get("reloaded") is False, result
    problems = result["problems"]
    assert any(p.startswith(f"{admin.config_path}:{bad_line}:") and "bogus_key" in p for p in problems), problems
    assert statuses and all(status == 200 for status in statuses), [s for s in statuses if s != 200][:5]

    # ctl says the same and exits 1; nothing changed
    refused = admin.ctl("reload")
    assert refused.returncode == 1, refused.stdout + refused.stderr
    assert f"{admin.config_path}:{bad_line}:" in refused.stderr
    stats = admin.api("GET", "/api/stats").json()
    assert stats["generation"] == 1, stats
    assert set(send_requests(admin.port, 10)) == {"s1", "s2"}

    # fixed, it takes
    admin.config_path.write_text(good)
    assert reload_via_api(admin)["generation"] == 2


def _sample(samples: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), -1.0)


def test_metrics_count_responses_by_status_class_denials_bytes_and_servers_up(admin):
    """What an operator alerts on (a 5xx ratio, a server down): SPEC's per-class counters.
    10 GETs answered 200, 3 answered 404 by a server, 5 answered 503 by a server, 2 denied."""
    admin.start(admin.config(frontend_extra='[[frontend.rule]]\nif = { path_beg = ["/private"] }\naction = "deny"\n'))
    statuses: list[int] = []
    for path in ["/ok"] * 10 + ["/status/404"] * 3 + ["/status/503"] * 5 + ["/private"] * 2:
        with contextlib.closing(http.client.HTTPConnection("127.0.0.1", admin.port, timeout=5)) as conn:
            conn.request("GET", path)
            response = conn.getresponse()
            response.read()
            statuses.append(response.status)
    assert sorted(statuses) == sorted([200] * 10 + [404] * 3 + [503] * 5 + [403] * 2)

    def counts() -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
        return parse_metrics(admin.tcp("GET", "/metrics").body.decode())

    wait_until(
        lambda: _sample(counts(), "balancer_frontend_http_requests_total", frontend="www") >= 20,
        timeout=5,
        what="the 20 requests counted",
    )
    samples = counts()
    backend = {code: _sample(samples, "balancer_backend_http_responses_total", backend="web", code=code)
               for code in ("1xx", "2xx", "3xx", "4xx", "5xx", "other")}  # fmt: skip
    assert backend == {"1xx": 0, "2xx": 10, "3xx": 0, "4xx": 3, "5xx": 5, "other": 0}, backend
    frontend = {code: _sample(samples, "balancer_frontend_http_responses_total", frontend="www", code=code)
                for code in ("2xx", "4xx", "5xx")}  # fmt: skip
    assert frontend == {"2xx": 10, "4xx": 5, "5xx": 5}, frontend  # the 403s never reached the backend
    assert _sample(samples, "balancer_frontend_requests_denied_total", frontend="www") == 2
    assert _sample(samples, "balancer_backend_http_requests_total", backend="web") == 18
    assert _sample(samples, "balancer_backend_queue_current", backend="web") == 0
    # every response has at least a status line and a Content-Length: > 50 bytes each way
    assert _sample(samples, "balancer_frontend_bytes_out_total", frontend="www") > 20 * 50
    assert _sample(samples, "balancer_frontend_bytes_in_total", frontend="www") > 20 * 30
    assert _sample(samples, "balancer_server_up", backend="web", server="s1") == 1
    # the JSON API says the same
    (row,) = [b for b in admin.api("GET", "/api/stats").json()["backends"] if b["backend"] == "web"]
    assert row["responses"]["2xx"] == 10 and row["responses"]["5xx"] == 5, row

    # a server in maintenance is not up
    assert admin.api("PUT", "/api/servers/web/s1", json_body={"state": "maint"}).status == 200
    assert _sample(counts(), "balancer_server_up", backend="web", server="s1") == 0
