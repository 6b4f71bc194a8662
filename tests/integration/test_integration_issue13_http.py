"""Issue #13 HTTP features through the proxy: monitor_uri, errorfiles, response header rules."""

from __future__ import annotations

from pathlib import Path

from tests.integration.aclient import Client, get
from tests.integration.configs import frontend_port, make_config


def test_monitor_uri_is_answered_by_balancer_and_follows_the_disable_file(run_balancer, backends, tmp_path):
    (s1,) = backends("s1")
    disable = tmp_path / "disable"
    config = make_config([s1], frontend={"monitor_uri": "/healthz"}, global_={"disable_file": str(disable)})

    async def scenario(balancer):
        port = frontend_port(balancer)
        async with await Client.connect(port) as client:
            ready = await client.get("/healthz")
            other = await client.get("/healthz/x")
        async with await Client.connect(port) as client:
            head = await client.request("HEAD", "/healthz")
        disable.write_text("")
        disabled = await get(port, "/healthz")
        return ready, other, disabled, head

    ready, other, disabled, head = run_balancer(config, scenario)
    assert head.status == 200 and head.header("Connection") == "close", "a HEAD is answered, then closed"
    assert ready.status == 200 and b"Service ready" in ready.body
    assert other.status == 200 and other.header("Server-Name") == "s1"
    assert disabled.status == 503
    assert [r.target for r in s1.requests] == ["/healthz/x"], "the monitor URI never reaches a server"


def _page(path: Path, status: int, text: str) -> str:
    head = f"HTTP/1.0 {status} Custom\nContent-Type: text/plain\nConnection: keep-alive\nContent-Length: 999\n\n"
    path.write_bytes((head + text).encode())
    return str(path)


def test_errorfiles_replace_built_in_pages_and_the_backends_win(run_balancer, backends, tmp_path):
    (s1,) = backends("s1")
    front_403 = _page(tmp_path / "f403.http", 403, "front forbids")
    front_503 = _page(tmp_path / "f503.http", 503, "front is down")
    back_503 = _page(tmp_path / "b503.http", 503, "empty is down")
    back_403 = _page(tmp_path / "b403.http", 403, "web forbids")
    config = make_config(
        [s1],
        frontend={
            "errorfiles": {"403": front_403, "503": front_503},
            "rule": [
                {"if": {"path_beg": ["/deny"]}, "action": "deny"},
                {"if": {"path_beg": ["/empty"]}, "use_backend": "empty"},
                {"if": {"path_beg": ["/nothing"]}, "use_backend": "nothing"},
            ],
        },
        backend={"errorfiles": {"403": back_403}, "rule": [{"if": {"path_beg": ["/web-deny"]}, "action": "deny"}]},
        extra_backends=[({"name": "empty", "errorfiles": {"503": back_503}}, []), ({"name": "nothing"}, [])],
    )

    async def scenario(balancer):
        port = frontend_port(balancer)
        paths = ("/deny", "/web-deny", "/empty", "/nothing")
        return [await get(port, path) for path in paths]

    denied, web_denied, empty, nothing = run_balancer(config, scenario)
    assert (denied.status, denied.body) == (403, b"front forbids")
    assert (web_denied.status, web_denied.body) == (403, b"web forbids"), "a backend rule's answer: the backend's page"
    assert (empty.status, empty.body) == (503, b"empty is down"), "the backend's page wins"
    assert (nothing.status, nothing.body) == (503, b"front is down")
    assert empty.header("Content-Type") == "text/plain"
    assert empty.header("Content-Length") == str(len(b"empty is down")), "the length is the proxy's"


def test_response_rules_edit_the_response_head(run_balancer, backends):
    (s1,) = backends("s1")
    config = make_config(
        [s1],
        frontend={
            "response_rule": [
                {"set_header": {"X-Frame-Options": "DENY"}, "del_header": ["Server-Name"]},
                {"if": {"status": [404]}, "add_header": {"X-Missing": "yes"}},
            ]
        },
        backend={"response_rule": [{"if": {"path_beg": ["/api"]}, "add_header": {"X-Api": "1"}}]},
    )

    async def scenario(balancer):
        port = frontend_port(balancer)
        return await get(port, "/api/x"), await get(port, "/page")

    api, page = run_balancer(config, scenario)
    for response in (api, page):
        assert response.status == 200
        assert response.header_all("X-Frame-Options") == ["DENY"]
        assert response.header("Server-Name") is None
        assert response.header("X-Missing") is None
    assert api.header("X-Api") == "1" and page.header("X-Api") is None
