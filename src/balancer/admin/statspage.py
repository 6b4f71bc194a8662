"""The live stats page (SPEC `[stats]`), served by the master at `stats.bind` + `stats.uri`.

Three paths under the stats URI, all behind HTTP basic auth when `stats.auth` is set:

- `GET  <uri>`        the page: one HTML document with its CSS and JavaScript inline (no CDN),
                      kept as files in admin/static (stats.html, .css, .js) and put together once;
- `GET  <uri>/api`    the master's stats as JSON (what `GET /api/stats` of the admin API says),
                      which the page polls every `stats.refresh` and renders without a reload;
- `POST <uri>/action` `{"backend", "server", "state", "csrf"}`: set a server ready, drain or
                      maint. The CSRF token is random per process and embedded in the page, so
                      another site cannot make a logged-in browser drain servers. Without
                      `stats.auth` the page is read-only: actions are refused with 403.

Credentials are compared in constant time (hmac.compare_digest); a request without them, or
with wrong ones, gets 401 with `WWW-Authenticate: Basic realm="balancer"`. Like the admin API,
the server answers one request per connection and closes. `uri`, `auth` and `refresh` follow
reloads (they are read from the current configuration at each request); `bind` does not.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import secrets
import time
from collections.abc import Callable
from importlib import resources
from typing import Any, Protocol

from balancer.admin.api import STATES
from balancer.admin.oneshot import HttpError, OneShotServer, Reply, Request, json_reply
from balancer.config.model import Stats
from balancer.config.values import Address
from balancer.proto.basic_auth import basic_credentials

log = logging.getLogger("balancer.stats")

MAX_BODY = 4096
REALM = "balancer"


class StatsControl(Protocol):
    """What the master offers the stats page."""

    def stats(self) -> dict[str, Any]: ...
    def set_server(self, backend: str, server: str, state: str | None, weight: int | None) -> dict[str, Any]: ...


def base_uri(uri: str) -> str:
    """`stats.uri` without a trailing slash, with a leading one: "/stats", or "" for "/"."""
    return "/" + uri.strip("/") if uri.strip("/") else ""


def check_basic_auth(header: str, user: str, password: str) -> bool:
    """Whether an Authorization header carries these credentials; constant time in their content."""
    credentials = basic_credentials(header.encode("latin-1"))
    given_user, given_password = credentials if credentials is not None else (b"", b"")
    # Both compared, always, as digests of equal length: neither which half was wrong nor
    # how long the secret is may show in the timing.
    user_ok = hmac.compare_digest(_digest(given_user), _digest(user.encode()))
    password_ok = hmac.compare_digest(_digest(given_password), _digest(password.encode()))
    return credentials is not None and user_ok and password_ok


def _digest(value: bytes) -> bytes:
    return hashlib.sha256(value).digest()


async def start_stats_page(control: StatsControl, settings: Callable[[], Stats]) -> StatsPage | None:
    """The stats page on `stats.bind`, if configured. Raises OSError when it cannot bind."""
    bind = settings().bind
    if bind is None:
        return None
    page = StatsPage(control, settings)
    await page.listen(bind)
    uri = base_uri(settings().uri) or "/"
    log.info("stats page on %s", f"http://{bind}{uri}" if bind.host else f"{bind} at {uri}")
    return page


class StatsPage:
    def __init__(self, control: StatsControl, settings: Callable[[], Stats]) -> None:
        self.control = control
        self.settings = settings
        self.csrf = secrets.token_urlsafe(32)
        self.http = OneShotServer(
            self._handle,
            MAX_BODY,
            {
                "Cache-Control": "no-store",
                "X-Content-Type-Options": "nosniff",
                "X-Frame-Options": "DENY",
                "Referrer-Policy": "no-referrer",
            },
        )

    async def listen(self, address: Address) -> None:
        await self.http.listen(address)

    def close(self) -> None:
        self.http.close()

    async def _handle(self, request: Request) -> Reply:
        settings = self.settings()
        if settings.auth is not None and not check_basic_auth(
            request.headers.get("authorization", ""), settings.auth.user, settings.auth.password
        ):
            raise HttpError(401, "authentication required", {"WWW-Authenticate": f'Basic realm="{REALM}"'})
        return self.route(request.method, request.path, request.body, settings)

    def route(self, method: str, path: str, body: bytes, settings: Stats) -> Reply:
        base = base_uri(settings.uri)
        if path in (base, base + "/"):
            if method not in ("GET", "HEAD"):
                raise HttpError(405, f"{method} not allowed: use GET", {"Allow": "GET, HEAD"})
            return self._page(settings, head_only=method == "HEAD")
        if path == base + "/api":
            if method != "GET":
                raise HttpError(405, f"{method} not allowed: use GET", {"Allow": "GET"})
            return json_reply(200, {**self.control.stats(), "time": time.time()})
        if path == base + "/action":
            if method != "POST":
                raise HttpError(405, f"{method} not allowed: use POST", {"Allow": "POST"})
            if settings.auth is None:
                raise HttpError(403, "actions need stats.auth: the page is read-only without credentials")
            return self._action(body)
        raise HttpError(404, f"no such path: {path}")

    def _page(self, settings: Stats, head_only: bool) -> Reply:
        base = base_uri(settings.uri)
        nonce = secrets.token_urlsafe(16)
        config = {
            "api": base + "/api",
            "action": base + "/action",
            "refresh": max(0.5, settings.refresh),
            "csrf": self.csrf if settings.auth is not None else "",
            "actions": settings.auth is not None,
        }
        # JSON inside <script>: no "</script>", no HTML comment, whatever the names say.
        config_json = json.dumps(config).replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
        html = PAGE.replace("{{NONCE}}", nonce).replace("{{CONFIG}}", config_json)
        csp = (
            f"default-src 'none'; script-src 'nonce-{nonce}'; style-src 'nonce-{nonce}'; connect-src 'self'; "
            "img-src data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
        )
        body = html.encode()
        headers = {"Content-Security-Policy": csp}
        if head_only:
            headers["Content-Length"] = str(len(body))  # what a GET would send
        return Reply(200, b"" if head_only else body, "text/html; charset=utf-8", headers)

    def _action(self, body: bytes) -> Reply:
        try:
            request = json.loads(body or b"null")
        except ValueError:
            raise HttpError(400, "body is not valid JSON") from None
        if not isinstance(request, dict):
            raise HttpError(400, 'expected {"backend": ..., "server": ..., "state": ..., "csrf": ...}')
        token = request.get("csrf")
        if not isinstance(token, str) or not hmac.compare_digest(token.encode(), self.csrf.encode()):
            raise HttpError(403, "missing or wrong CSRF token: reload the page")
        backend, server, state = request.get("backend"), request.get("server"), request.get("state")
        if not isinstance(backend, str) or not isinstance(server, str):
            raise HttpError(400, "backend and server are required")
        if state not in STATES:
            raise HttpError(400, f"state must be one of {', '.join(STATES)}, got {state!r}")
        try:
            row = self.control.set_server(backend, server, state, None)
        except KeyError:
            raise HttpError(404, f"no server {backend}/{server}") from None
        log.info("stats page: %s/%s set to %s", backend, server, state)
        return json_reply(200, row)


def _page_template() -> str:
    """The page's HTML with its stylesheet and script inlined (a nonce in the CSP lets
    exactly these run), read once from the package's data files in admin/static."""
    static = resources.files("balancer.admin") / "static"
    html = (static / "stats.html").read_text(encoding="utf-8")
    style = (static / "stats.css").read_text(encoding="utf-8")
    script = (static / "stats.js").read_text(encoding="utf-8")
    return html.replace("{{STYLE}}", style).replace("{{SCRIPT}}", script)


PAGE = _page_template()
