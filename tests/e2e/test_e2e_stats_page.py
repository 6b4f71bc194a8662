"""The live stats page in a real headless Chromium, the way an operator uses it.

One `balancer run` for the module: two workers, backend `web` (s1, s2, s3) behind frontend
`www`, backend `api` (a1) behind frontend `edge`, the stats page on its own port behind basic
auth (refresh 500 ms) and the admin API on TCP, through which every state change is checked.

The browser is Debian's `chromium` driven by Playwright (pip) with a fresh profile per test;
both are required tools: missing, the tests skip, except under CI=true where they fail.
"""

from __future__ import annotations

import base64
import contextlib
import http.client
import json
import secrets
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from tests.support import TaggedBackend, free_port, on_ci, require_tool, wait_until
from tests.support.config import server_blocks
from tests.support.process import BalancerProcess

pytestmark = pytest.mark.e2e

USER = "admin"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--headless",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SCREENSHOT_COPY = Path("/tmp/stats-page.png")


# -- the site ------------------------------------------------------------------------------------


@dataclass
class StatsSite:
    process: BalancerProcess
    www_port: int
    edge_port: int
    stats_port: int
    admin_port: int
    password: str

    @property
    def page_url(self) -> str:
        return f"http://127.0.0.1:{self.stats_port}/stats"

    def stats_call(
        self, method: str, path: str, body: Any = None, auth: tuple[str, str] | None = None, anonymous: bool = False
    ) -> tuple[int, dict[str, str], bytes]:
        """One request to the stats server: with `auth`, the right credentials, or none if `anonymous`."""
        user, password = auth or (USER, self.password)
        headers = {"Connection": "close"}
        if not anonymous:
            headers["Authorization"] = "Basic " + _b64(f"{user}:{password}")
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        connection = http.client.HTTPConnection("127.0.0.1", self.stats_port, timeout=10)
        try:
            connection.request(method, path, body=data, headers=headers)
            response = connection.getresponse()
            return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
        finally:
            connection.close()

    def servers(self) -> list[dict[str, Any]]:
        """GET /api/servers on the admin API."""
        connection = http.client.HTTPConnection("127.0.0.1", self.admin_port, timeout=10)
        try:
            connection.request("GET", "/api/servers", headers={"Connection": "close"})
            response = connection.getresponse()
            assert response.status == 200
            rows: list[dict[str, Any]] = json.loads(response.read())
            return rows
        finally:
            connection.close()

    def state_of(self, backend: str, server: str) -> str:
        return str(next(r["state"] for r in self.servers() if (r["backend"], r["server"]) == (backend, server)))

    def set_state(self, backend: str, server: str, state: str) -> None:
        connection = http.client.HTTPConnection("127.0.0.1", self.admin_port, timeout=10)
        try:
            body = json.dumps({"state": state})
            connection.request("PUT", f"/api/servers/{backend}/{server}", body=body, headers={"Connection": "close"})
            assert connection.getresponse().status == 200
        finally:
            connection.close()

    def send_traffic(self, count: int, port: int | None = None) -> None:
        for i in range(count):
            connection = http.client.HTTPConnection("127.0.0.1", port or self.www_port, timeout=10)
            try:
                connection.request("GET", f"/traffic/{i}", headers={"Connection": "close"})
                response = connection.getresponse()
                response.read()
                assert response.status == 200, (i, response.status)
            finally:
                connection.close()


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


@pytest.fixture(scope="module")
def stats_site(module_dir: Path) -> Iterator[StatsSite]:
    with contextlib.ExitStack() as stack:
        web = [stack.enter_context(TaggedBackend(name)) for name in ("s1", "s2", "s3")]
        api = [stack.enter_context(TaggedBackend("a1"))]
        www_port, edge_port, stats_port, admin_port = free_port(), free_port(), free_port(), free_port()
        password = secrets.token_urlsafe(12)
        config = (
            f'[global]\nworkers = 2\ngrace = "2s"\nlog = "file:{module_dir / "access.log"}"\n'
            f'\n[admin]\nbind = "127.0.0.1:{admin_port}"\n'
            f'\n[stats]\nbind = "127.0.0.1:{stats_port}"\nuri = "/stats"\nrefresh = "500ms"\n'
            f'auth = {{ user = "{USER}", password = "{password}" }}\n'
            f'\n[[frontend]]\nname = "www"\nbind = ["127.0.0.1:{www_port}"]\ndefault_backend = "web"\n'
            f'\n[[frontend]]\nname = "edge"\nbind = ["127.0.0.1:{edge_port}"]\ndefault_backend = "api"\n'
            '\n[[backend]]\nname = "web"\n' + server_blocks(web) + '\n[[backend]]\nname = "api"\n' + server_blocks(api)
        )
        path = module_dir / "balancer.toml"
        path.write_text(config)
        process = stack.enter_context(BalancerProcess(path, log_dir=module_dir))
        for port in (www_port, edge_port, stats_port, admin_port):
            process.wait_ready(port, timeout=15)
        wait_until(lambda: "balancer running" in process.output(), timeout=15, what="the workers to serve")
        yield StatsSite(process, www_port, edge_port, stats_port, admin_port, password)


# -- the browser ---------------------------------------------------------------------------------


def _sync_playwright() -> Any:
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        reason = "playwright is not installed (pip install playwright, the `test` extra)"
        if on_ci():
            pytest.fail(reason + "; CI=true, so this is a failure, not a skip", pytrace=False)
        pytest.skip(reason)
    return sync_playwright


@pytest.fixture
def browser_context(tmp_path: Path) -> Iterator[Callable[..., Any]]:
    """Factory: `browser_context(credentials=(user, password), width=1400)` -> a fresh Chromium context."""
    chromium = require_tool("chromium")
    sync_playwright = _sync_playwright()
    with sync_playwright() as playwright:
        contexts: list[Any] = []

        def open_context(credentials: tuple[str, str] | None, width: int = 1400, height: int = 900) -> Any:
            context = playwright.chromium.launch_persistent_context(
                str(tmp_path / f"profile{len(contexts)}"),
                executable_path=chromium,
                args=CHROMIUM_ARGS,
                headless=True,
                viewport={"width": width, "height": height},
                http_credentials={"username": credentials[0], "password": credentials[1]} if credentials else None,
            )
            context.set_default_timeout(15_000)
            contexts.append(context)
            return context

        try:
            yield open_context
        finally:
            for context in contexts:
                context.close()


def open_page(site: StatsSite, browser_context: Callable[..., Any], **kwargs: Any) -> tuple[Any, list[str]]:
    """The stats page loaded and rendered once, and the list its JavaScript errors go to."""
    context = browser_context((USER, site.password), **kwargs)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
    response = page.goto(site.page_url)
    assert response is not None and response.status == 200
    page.wait_for_selector('tr[data-server="web/s1"] td[data-field="sessions"]:not(:empty)')
    return page, errors


def cell(page: Any, row: str, field: str) -> str:
    return str(page.text_content(f'{row} td[data-field="{field}"]') or "").strip()


def total_of(text: str) -> int:
    """The number after the slash of "current / total", or the number itself."""
    return int(text.rsplit("/", 1)[-1].strip().replace(",", ""))


# -- tests -----------------------------------------------------------------------------------------


def test_the_page_asks_for_credentials(stats_site, browser_context):
    status, headers, _ = stats_site.stats_call("GET", "/stats", anonymous=True)
    assert status == 401
    assert headers.get("www-authenticate") == 'Basic realm="balancer"'

    for user, password in ((USER, "wrong"), ("root", stats_site.password), (USER, stats_site.password + "x")):
        status, _, _ = stats_site.stats_call("GET", "/stats", auth=(user, password))
        assert status == 401, (user, password)
    status, _, _ = stats_site.stats_call("GET", "/stats/api", anonymous=True)
    assert status == 401, "the JSON endpoint is behind the same auth"

    # A browser without credentials is refused too (headless Chromium has nobody to ask, so it
    # gives up on the challenge); with them it gets the page.
    anonymous = browser_context(None)
    assert anonymous.request.get(stats_site.page_url).status == 401
    response, refused = None, ""
    try:
        response = anonymous.new_page().goto(stats_site.page_url)
    except Exception as exc:  # playwright's Error
        refused = str(exc)
    assert (response is not None and response.status == 401) or "ERR_INVALID_AUTH_CREDENTIALS" in refused, refused
    page, errors = open_page(stats_site, browser_context)
    assert "balancer" in page.title()
    assert errors == []


def test_the_page_renders_every_frontend_backend_and_server(stats_site, browser_context):
    page, errors = open_page(stats_site, browser_context)

    rows = page.eval_on_selector_all("tr[data-server]", "rows => rows.map(r => r.dataset.server)")
    assert sorted(rows) == ["api/a1", "web/s1", "web/s2", "web/s3"]
    frontends = page.eval_on_selector_all("tr[data-frontend]", "rows => rows.map(r => r.dataset.frontend)")
    assert sorted(frontends) == ["edge", "www"]
    backends = page.eval_on_selector_all("section[data-backend]", "s => s.map(x => x.dataset.backend)")
    assert sorted(backends) == ["api", "web"]

    row = 'tr[data-server="web/s1"]'
    address = next(r["address"] for r in stats_site.servers() if r["server"] == "s1")
    assert address in cell(page, row, "name")
    assert cell(page, row, "state").lower() == "ready"
    assert cell(page, row, "health").lower().startswith("up")
    assert cell(page, row, "weight") == "100"
    for field in ("sessions", "queued", "req_rate", "err_rate", "bytes_in", "bytes_out", "resp_time", "since"):
        assert cell(page, row, field), f"empty {field} cell"
    assert "st-ready" in (page.get_attribute(row, "class") or "")
    assert page.locator(f"{row} button[data-action]").count() == 3
    assert page.locator("#bgp").is_hidden()  # no [bgp] in this file
    assert page.locator("#vrrp").is_hidden()  # no [vrrp] either
    assert errors == []


def test_a_counter_updates_without_a_page_reload_after_traffic(stats_site, browser_context):
    page, errors = open_page(stats_site, browser_context)
    navigations: list[str] = []
    page.on("framenavigated", lambda frame: navigations.append(frame.url))
    page.evaluate("window.__same_document = 'yes'")
    www = 'tr[data-frontend="www"]'
    before = total_of(cell(page, www, "requests"))

    stats_site.send_traffic(30)

    page.wait_for_function(
        "([selector, target]) => Number(document.querySelector(selector).textContent.replace(/,/g, '')) >= target",
        arg=[f'{www} td[data-field="requests"]', before + 30],
    )
    # The rate is computed in the page from two polls: it shows traffic for a refresh or so.
    page.wait_for_function(
        "s => /[1-9]/.test(document.querySelector(s).textContent)", arg=f'{www} td[data-field="req_rate"]'
    )
    served = sum(total_of(cell(page, f'tr[data-server="web/{name}"]', "sessions")) for name in ("s1", "s2", "s3"))
    assert served >= before + 30
    assert page.evaluate("window.__same_document") == "yes", "the page was reloaded"
    assert navigations == []
    assert errors == []


def test_drain_button_changes_the_server_state(stats_site, browser_context, tmp_path):
    page, errors = open_page(stats_site, browser_context)
    row = 'tr[data-server="web/s2"]'
    assert stats_site.state_of("web", "s2") == "ready"
    try:
        page.click(f'{row} button[data-action="drain"]')

        wait_until(lambda: stats_site.state_of("web", "s2") == "drain", timeout=10, what="web/s2 drained")
        page.wait_for_selector(f"{row}.st-drain")
        assert page.is_disabled(f'{row} button[data-action="drain"]')
        assert stats_site.state_of("web", "s1") == "ready", "only the clicked server changed"

        # The others states work the same way, and the row follows changes made elsewhere.
        page.click(f'{row} button[data-action="maint"]')
        wait_until(lambda: stats_site.state_of("web", "s2") == "maint", timeout=10, what="web/s2 in maint")
        page.wait_for_selector(f"{row}.st-maint")
        stats_site.set_state("web", "s2", "drain")
        page.wait_for_selector(f"{row}.st-drain")

        screenshot = tmp_path / "stats-page.png"
        page.screenshot(path=str(screenshot), full_page=True)
        assert screenshot.stat().st_size > 10_000
        with contextlib.suppress(OSError):
            shutil.copyfile(screenshot, SCREENSHOT_COPY)

        page.click(f'{row} button[data-action="ready"]')
        wait_until(lambda: stats_site.state_of("web", "s2") == "ready", timeout=10, what="web/s2 ready again")
        page.wait_for_selector(f"{row}.st-ready")
    finally:
        stats_site.set_state("web", "s2", "ready")
    assert errors == []


def test_actions_need_the_csrf_token_and_the_credentials(stats_site):
    before = stats_site.servers()
    body = {"backend": "web", "server": "s3", "state": "maint"}

    status, _, reply = stats_site.stats_call("POST", "/stats/action", body)
    assert status == 403, reply
    assert b"CSRF" in reply
    status, _, _ = stats_site.stats_call("POST", "/stats/action", {**body, "csrf": "guessed"})
    assert status == 403

    status, _, page = stats_site.stats_call("GET", "/stats")
    token = json.loads(page.decode().split('id="config"', 1)[1].split(">", 1)[1].split("</script>", 1)[0])["csrf"]
    status, _, _ = stats_site.stats_call("POST", "/stats/action", {**body, "csrf": token}, anonymous=True)
    assert status == 401, "the token alone is not enough"
    status, _, reply = stats_site.stats_call("POST", "/stats/action", {**body, "state": "gone", "csrf": token})
    assert status == 400, reply
    status, _, reply = stats_site.stats_call("POST", "/stats/action", {**body, "server": "nope", "csrf": token})
    assert status == 404, reply
    assert _without_clocks(stats_site.servers()) == _without_clocks(before), "a refused action changed nothing"

    status, _, reply = stats_site.stats_call("POST", "/stats/action", {**body, "csrf": token})
    try:
        assert status == 200, reply
        assert json.loads(reply)["state"] == "maint"
        assert stats_site.state_of("web", "s3") == "maint"
    finally:
        stats_site.set_state("web", "s3", "ready")


def test_the_page_fits_a_phone_screen(stats_site, browser_context, tmp_path):
    page, errors = open_page(stats_site, browser_context, width=390, height=844)

    overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
    assert overflow <= 0, f"the page is {overflow}px wider than a phone screen"
    button = page.locator('tr[data-server="web/s1"] button[data-action="drain"]')
    assert button.is_visible()
    box = button.bounding_box()
    assert box is not None and box["x"] + box["width"] <= 390
    page.screenshot(path=str(tmp_path / "stats-page-phone.png"), full_page=True)
    assert errors == []


def _without_clocks(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: v for k, v in row.items() if k != "since"} for row in rows]


def test_the_page_opened_with_credentials_in_the_url_works(stats_site, browser_context):
    """`http://user:password@host/stats`, as in a bookmark: the browser refuses fetch() to a URL
    built from that address (credentials included), so the page must build its requests from
    its origin. The numbers render and a button acts, with no error banner."""
    context = browser_context(None)  # no credentials but those in the URL
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
    url = f"http://{USER}:{stats_site.password}@127.0.0.1:{stats_site.stats_port}/stats"

    response = page.goto(url)

    assert response is not None and response.status == 200
    page.wait_for_selector('tr[data-server="web/s1"] td[data-field="sessions"]:not(:empty)', timeout=10_000)
    assert not page.is_visible("#banner"), page.text_content("#banner")
    row = 'tr[data-server="web/s3"]'
    try:
        page.click(f'{row} button[data-action="drain"]')
        wait_until(lambda: stats_site.state_of("web", "s3") == "drain", timeout=10, what="web/s3 drained")
        page.wait_for_selector(f"{row}.st-drain")
    finally:
        stats_site.set_state("web", "s3", "ready")
    assert errors == []


def test_the_bgp_panel_shows_announcements_and_sessions(tmp_path, browser_context):
    """A node with [bgp] whose router is unreachable: the page lists the prefix as announced
    (handed to ExaBGP) and the session as not established. Without [bgp] the panel is hidden."""
    pytest.importorskip("exabgp", reason="ExaBGP (the tiers extra) is not installed")
    with TaggedBackend("s1") as server:
        www_port, stats_port, router_port = free_port(), free_port(), free_port()
        password = secrets.token_urlsafe(12)
        config = (
            f'[global]\nworkers = 1\ngrace = "1s"\n'
            f'\n[stats]\nbind = "127.0.0.1:{stats_port}"\nuri = "/stats"\nrefresh = "500ms"\n'
            f'auth = {{ user = "{USER}", password = "{password}" }}\n'
            f'\n[[frontend]]\nname = "www"\nbind = ["127.0.0.1:{www_port}"]\ndefault_backend = "web"\n'
            '\n[[backend]]\nname = "web"\n' + server_blocks([server]) + '\n[bgp]\nrouter_id = "127.0.0.1"\n'
            'local_as = 65001\nlocal_address = "127.0.0.1"\nannounce = ["10.100.0.1/32"]\n'
            f'[[bgp.neighbor]]\naddress = "127.0.0.2"\npeer_as = 65000\nport = {router_port}\n'
        )
        path = tmp_path / "balancer.toml"
        path.write_text(config)
        with BalancerProcess(path, log_dir=tmp_path) as process:
            process.wait_ready(stats_port, timeout=15)
            wait_until(lambda: "announcing 10.100.0.1/32" in process.output(), timeout=15, what="the announcement")
            site = StatsSite(process, www_port, 0, stats_port, 0, password)
            context = browser_context((USER, password))
            page = context.new_page()
            errors: list[str] = []
            page.on("pageerror", lambda error: errors.append(str(error)))
            assert page.goto(site.page_url).status == 200
            page.wait_for_selector("#bgp-announcements tbody tr")
            assert page.locator("#bgp").is_visible()
            announcement = page.text_content("#bgp-announcements tbody tr") or ""
            assert "10.100.0.1/32" in announcement and "yes" in announcement
            assert "1/1 servers usable in backend web" in announcement
            neighbor = page.text_content("#bgp-neighbors tbody tr") or ""
            assert "127.0.0.2" in neighbor and "65000" in neighbor and "established" not in neighbor
            assert "ExaBGP pid" in (page.text_content("#bgp-exabgp") or "")
            assert errors == []
