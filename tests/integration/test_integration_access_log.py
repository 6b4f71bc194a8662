"""The access log: one line per request, errors included, in text and JSON formats."""

from __future__ import annotations

import json
import re

from tests.integration.aclient import Client, get
from tests.integration.configs import frontend_port, make_config
from tests.support.process import wait_until

TEXT_LINE = re.compile(
    r"^(?P<client>\d+\.\d+\.\d+\.\d+:\d+) \[(?P<time>[^\]]+)\] (?P<frontend>\S+) "
    r"(?P<backend>[^/\s]+)/(?P<server>\S+) (?P<timers>-?\d+/-?\d+/-?\d+/-?\d+/-?\d+) "
    r"(?P<status>\d{3}) (?P<bytes>\d+) (?P<termination>\S+) \"(?P<request>[^\"]*)\"$"
)


def _scenario(balancer_requests):
    async def scenario(balancer):
        port = frontend_port(balancer)
        for kind, target in balancer_requests:
            if kind == "raw":
                async with await Client.connect(port) as client:
                    await client.send(target)
                    await client.read_response()
            else:
                await get(port, target)

    return scenario


def _log_lines(path, count: int) -> list[str]:
    """The log's lines once there are `count` of them (the writer may flush a little later)."""

    def lines():
        found = path.read_text().splitlines() if path.exists() else []
        return found if len(found) >= count else None

    return wait_until(lines, timeout=5, what=f"{count} access log lines in {path}")


def test_text_access_log_for_a_request_and_errors(run_balancer, backends, tmp_path):
    (s1,) = backends("s1")
    log = tmp_path / "access.log"
    config = make_config([s1], global_={"log": f"file:{log}", "log_format": "text"})
    requests = [("get", "/first"), ("get", "/close"), ("raw", b"GET / HTTP/1.1\r\nHost: x\r\nBad : h\r\n\r\n")]
    run_balancer(config, _scenario(requests))

    lines = _log_lines(log, 3)
    parsed = [TEXT_LINE.match(line) for line in lines]
    assert all(parsed), f"lines not in the documented format: {lines}"
    ok, bad_gateway, bad_request = (m.groupdict() for m in parsed if m)

    assert ok["client"].startswith("127.0.0.1:")
    assert (ok["frontend"], ok["backend"], ok["server"]) == ("www", "web", "s1")
    assert (ok["status"], ok["termination"], ok["request"]) == ("200", "--", "GET /first HTTP/1.1")
    assert int(ok["bytes"]) > len("s1\n")
    timers = [int(t) for t in ok["timers"].split("/")]
    assert all(t >= 0 for t in timers)
    assert timers[-1] >= max(timers[:-1]), "the last timer is the total"

    assert (bad_gateway["backend"], bad_gateway["server"]) == ("web", "s1")
    assert (bad_gateway["status"], bad_gateway["request"]) == ("502", "GET /close HTTP/1.1")
    assert bad_gateway["termination"] != "--", "an error says how the session ended"

    assert (bad_request["frontend"], bad_request["status"]) == ("www", "400")
    assert bad_request["termination"] != "--"


def test_json_access_log_for_a_request_and_an_error(run_balancer, backends, tmp_path):
    (s1,) = backends("s1")
    log = tmp_path / "access.json"
    config = make_config(
        [s1],
        global_={"log": f"file:{log}", "log_format": "json"},
        backend={"timeouts": {"server": "200ms"}},
    )
    run_balancer(config, _scenario([("get", "/json?x=1"), ("get", "/hang")]))

    ok, timed_out = (json.loads(line) for line in _log_lines(log, 2))
    keys = {"client", "time", "frontend", "backend", "server", "timers", "status"}
    keys |= {"bytes_in", "bytes_out", "termination", "request"}
    assert keys <= set(ok), f"missing keys: {keys - set(ok)}"
    assert set(ok["timers"]) >= {"request", "queue", "connect", "response", "total"}
    assert str(ok["client"]).startswith("127.0.0.1")
    assert (ok["frontend"], ok["backend"], ok["server"]) == ("www", "web", "s1")
    assert (ok["status"], ok["request"]) == (200, "GET /json?x=1 HTTP/1.1")
    assert ok["bytes_out"] > len("s1\n")
    # like HAProxy's bytes_uploaded, the request's head counts too, as the response's does in bytes_out
    assert ok["bytes_in"] >= len("GET /json?x=1 HTTP/1.1\r\n"), "bytes_in leaves out the request head"
    assert ok["timers"]["total"] >= ok["timers"]["response"] >= 0

    assert (timed_out["status"], timed_out["server"]) == (504, "s1")
    assert timed_out["request"] == "GET /hang HTTP/1.1"
    assert timed_out["termination"] != "--"
    assert timed_out["timers"]["total"] >= 150
