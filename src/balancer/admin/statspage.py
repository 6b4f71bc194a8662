"""The live stats page (SPEC `[stats]`), served by the master at `stats.bind` + `stats.uri`.

Three paths under the stats URI, all behind HTTP basic auth when `stats.auth` is set:

- `GET  <uri>`        the page: one HTML document with its CSS and JavaScript inline (no CDN);
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

import base64
import binascii
import hashlib
import hmac
import json
import logging
import secrets
import time
from collections.abc import Callable
from typing import Any, Protocol

from balancer.admin.api import STATES
from balancer.admin.oneshot import HttpError, OneShotServer, Reply, Request, json_reply
from balancer.config.model import Stats
from balancer.config.values import Address

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
    scheme, _, encoded = header.strip().partition(" ")
    if scheme.lower() != "basic":
        return False
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True)
    except (binascii.Error, ValueError):
        return False
    given_user, sep, given_password = decoded.partition(b":")
    # Both compared, always, as digests of equal length: neither which half was wrong nor
    # how long the secret is may show in the timing.
    user_ok = hmac.compare_digest(_digest(given_user), _digest(user.encode()))
    password_ok = hmac.compare_digest(_digest(given_password), _digest(password.encode()))
    return bool(sep) and user_ok and password_ok


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


PAGE = r"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="color-scheme" content="light dark">
<title>balancer · stats</title>
<style nonce="{{NONCE}}">
:root {
  --bg: #f4f6f9; --panel: #ffffff; --text: #1c2430; --muted: #6b7687; --line: #e3e8ef;
  --head: #f8fafc; --accent: #3b5bdb; --shadow: 0 1px 2px rgba(16, 24, 40, .06), 0 1px 3px rgba(16, 24, 40, .08);
  --ready: #2f9e44; --ready-bg: #ebfbee; --drain: #e67700; --drain-bg: #fff4e0;
  --maint: #1c7ed6; --maint-bg: #e7f1fd; --down: #e03131; --down-bg: #fff0f0;
}
@media (prefers-color-scheme: dark) {
  :root {
    --bg: #0f141a; --panel: #171e27; --text: #e6ebf1; --muted: #8d99aa; --line: #263040;
    --head: #1b2430; --accent: #748ffc; --shadow: none;
    --ready: #51cf66; --ready-bg: #13261a; --drain: #ffa94d; --drain-bg: #2d2113;
    --maint: #4dabf7; --maint-bg: #122436; --down: #ff6b6b; --down-bg: #321517;
  }
}
* { box-sizing: border-box; }
html { -webkit-text-size-adjust: 100%; }
body {
  margin: 0; background: var(--bg); color: var(--text);
  font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif;
}
.num, td.n, th.n { font-variant-numeric: tabular-nums; }
header.top {
  position: sticky; top: 0; z-index: 5; display: flex; flex-wrap: wrap; align-items: center; gap: 8px 16px;
  padding: 10px 20px; background: var(--panel); border-bottom: 1px solid var(--line); box-shadow: var(--shadow);
}
.brand { display: flex; align-items: center; gap: 8px; font-weight: 650; font-size: 16px; letter-spacing: .2px; }
.brand .logo { width: 22px; height: 22px; border-radius: 6px; background: linear-gradient(135deg, #4c6ef5, #15aabf); }
.brand small { color: var(--muted); font-weight: 500; }
.meta { color: var(--muted); font-size: 13px; display: flex; align-items: center; gap: 6px; flex-wrap: wrap; }
.spacer { flex: 1; }
.live { width: 8px; height: 8px; border-radius: 50%; background: var(--ready); display: inline-block; }
.live.off { background: var(--muted); }
.live.err { background: var(--down); }
button {
  font: inherit; font-size: 12px; font-weight: 600; cursor: pointer; border-radius: 6px; padding: 4px 10px;
  border: 1px solid var(--line); background: var(--panel); color: var(--text);
}
button:hover:not(:disabled) { border-color: var(--accent); color: var(--accent); }
button:disabled { cursor: default; opacity: .45; }
main { padding: 16px 20px 40px; max-width: 1500px; margin: 0 auto; }
.banner {
  display: none; margin-bottom: 12px; padding: 8px 12px; border-radius: 8px;
  background: var(--down-bg); color: var(--down); border: 1px solid var(--down);
}
.banner.show { display: block; }
.cards { display: grid; grid-template-columns: repeat(auto-fit, minmax(140px, 1fr)); gap: 10px; margin-bottom: 18px; }
.card {
  background: var(--panel); border: 1px solid var(--line); border-radius: 10px; padding: 10px 14px;
  box-shadow: var(--shadow);
}
.card .label { color: var(--muted); font-size: 12px; text-transform: uppercase; letter-spacing: .5px; }
.card .value { font-size: 22px; font-weight: 650; font-variant-numeric: tabular-nums; white-space: nowrap; }
section.panel {
  background: var(--panel); border: 1px solid var(--line); border-radius: 10px; margin-bottom: 18px;
  box-shadow: var(--shadow); overflow: hidden;
}
.panel-head {
  display: flex; flex-wrap: wrap; align-items: center; gap: 6px 14px; padding: 10px 14px;
  border-bottom: 1px solid var(--line); background: var(--head);
}
.panel-head h2 { margin: 0; font-size: 15px; font-weight: 650; }
.panel-head .facts { color: var(--muted); font-size: 13px; display: flex; flex-wrap: wrap; gap: 4px 14px; }
.panel-head .facts b { color: var(--text); font-weight: 600; }
.tag {
  font-size: 11px; font-weight: 600; padding: 1px 7px; border-radius: 99px; border: 1px solid var(--line);
  color: var(--muted); text-transform: lowercase;
}
.scroll { overflow-x: auto; }
table { width: 100%; border-collapse: collapse; }
th {
  text-align: left; font-size: 11px; font-weight: 600; text-transform: uppercase; letter-spacing: .4px;
  color: var(--muted); padding: 7px 10px; border-bottom: 1px solid var(--line); white-space: nowrap;
}
td { padding: 7px 10px; border-bottom: 1px solid var(--line); white-space: nowrap; vertical-align: middle; }
tr:last-child td { border-bottom: 0; }
th.n, td.n { text-align: right; }
td .sub { display: block; color: var(--muted); font-size: 12px; white-space: normal; max-width: 260px; }
td.name b { font-weight: 600; }
tr.row td:first-child { border-left: 4px solid transparent; }
tr.st-ready td:first-child { border-left-color: var(--ready); }
tr.st-drain td { background: var(--drain-bg); }
tr.st-drain td:first-child { border-left-color: var(--drain); }
tr.st-maint td { background: var(--maint-bg); }
tr.st-maint td:first-child { border-left-color: var(--maint); }
tr.st-down td { background: var(--down-bg); }
tr.st-down td:first-child { border-left-color: var(--down); }
.pill {
  display: inline-block; font-size: 11px; font-weight: 700; letter-spacing: .4px; text-transform: uppercase;
  padding: 2px 8px; border-radius: 99px; color: #fff; background: var(--muted);
}
.pill.ready, .pill.up, .pill.open { background: var(--ready); }
.pill.drain { background: var(--drain); }
.pill.maint { background: var(--maint); }
.pill.down { background: var(--down); }
.actions { display: flex; gap: 4px; }
.actions button.current { border-color: currentColor; }
.actions button[data-action="ready"].current { color: var(--ready); }
.actions button[data-action="drain"].current { color: var(--drain); }
.actions button[data-action="maint"].current { color: var(--maint); }
.flash { animation: flash 1s ease-out; }
@keyframes flash { from { color: var(--accent); } to { color: inherit; } }
#toast {
  position: fixed; left: 50%; bottom: 20px; transform: translateX(-50%) translateY(20px); opacity: 0;
  transition: all .2s; background: var(--text); color: var(--bg); padding: 8px 14px; border-radius: 8px;
  font-size: 13px; pointer-events: none; max-width: 90vw;
}
#toast.show { opacity: 1; transform: translateX(-50%) translateY(0); }
#toast.bad { background: var(--down); color: #fff; }
footer { color: var(--muted); font-size: 12px; text-align: center; padding: 10px; }
@media (max-width: 760px) {
  header.top { padding: 8px 12px; }
  main { padding: 12px 10px 40px; }
  .cards { grid-template-columns: repeat(auto-fill, minmax(104px, 1fr)); gap: 8px; }
  .card { padding: 8px 10px; }
  .card .label { font-size: 10px; }
  .card .value { font-size: 17px; }
  table.cards-sm thead { display: none; }
  table.cards-sm, table.cards-sm tbody { display: block; }
  table.cards-sm tr {
    display: grid; grid-template-columns: 1fr 1fr; gap: 2px 12px; padding: 10px 12px;
    border-bottom: 1px solid var(--line); border-left: 4px solid transparent;
  }
  table.cards-sm tr.st-ready { border-left-color: var(--ready); }
  table.cards-sm tr.st-drain { border-left-color: var(--drain); background: var(--drain-bg); }
  table.cards-sm tr.st-maint { border-left-color: var(--maint); background: var(--maint-bg); }
  table.cards-sm tr.st-down { border-left-color: var(--down); background: var(--down-bg); }
  table.cards-sm td { display: flex; justify-content: space-between; gap: 8px; padding: 2px 0; border: 0;
    background: transparent !important; white-space: normal; text-align: right; }
  table.cards-sm td:first-child { border-left: 0; }
  table.cards-sm td::before { content: attr(data-label); color: var(--muted); font-size: 12px; text-align: left; }
  table.cards-sm td.name, table.cards-sm td.wide { grid-column: 1 / -1; }
  table.cards-sm td.name { font-size: 15px; padding-bottom: 4px; }
  table.cards-sm td.name::before, table.cards-sm td.actions-cell::before { content: none; }
  table.cards-sm td.actions-cell { grid-column: 1 / -1; justify-content: flex-start; padding-top: 6px; }
  table.cards-sm td .sub { max-width: none; }
  table.cards-sm td .stack { text-align: right; }
  table.cards-sm td.name .sub { text-align: left; }
  .actions button { padding: 6px 14px; font-size: 13px; }
}
</style>
</head>
<body>
<header class="top">
  <div class="brand"><span class="logo"></span>balancer <small>stats</small></div>
  <div class="meta" id="meta">connecting…</div>
  <div class="spacer"></div>
  <div class="meta"><span class="live" id="live"></span><span id="updated">&ndash;</span></div>
  <button id="pause" type="button">Pause</button>
</header>
<main>
  <div class="banner" id="banner"></div>
  <div class="cards" id="summary"></div>
  <section class="panel" id="frontends">
    <div class="panel-head"><h2>Frontends</h2></div>
    <div class="scroll"><table class="cards-sm">
      <thead><tr><th>Frontend</th><th>Mode</th><th>State</th><th class="n">Connections</th>
        <th class="n">Conn/s</th><th class="n">Requests</th><th class="n">Req/s</th></tr></thead>
      <tbody></tbody>
    </table></div>
  </section>
  <div id="backends"></div>
  <footer>Rates are computed in this page from successive polls.</footer>
</main>
<div id="toast" role="status" aria-live="polite"></div>
<script type="application/json" id="config" nonce="{{NONCE}}">{{CONFIG}}</script>
<script nonce="{{NONCE}}">
"use strict";
(function () {
  const CONFIG = JSON.parse(document.getElementById("config").textContent);
  // Requests go to the page's origin, never to a URL resolved against the page's address:
  // opened as http://user:password@host/stats, that address holds credentials, and browsers
  // refuse fetch() to such a URL. location.origin has none; the browser sends the
  // credentials it authenticated the page with.
  const API_URL = location.origin + CONFIG.api;
  const ACTION_URL = location.origin + CONFIG.action;
  const SERVER_COLUMNS = [
    ["Server", ""], ["State", ""], ["Health", ""], ["Weight", "n"], ["Sessions", "n"], ["Queue", "n"],
    ["Req/s", "n"], ["Err/s", "n"], ["Errors", "n"], ["Bytes in", "n"], ["Bytes out", "n"],
    ["Resp. time", "n"], ["Since", "n"], ["", ""]
  ];
  const $ = (id) => document.getElementById(id);
  const DASH = "\u2013";
  let previous = null;   // {at, counters: Map key -> {requests, errors, connections}}
  let paused = false;
  let timer = null;
  let inflight = false;

  function el(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined) node.textContent = text;
    return node;
  }
  function setText(node, text) {
    text = String(text);
    if (node.textContent !== text) {
      const first = node.textContent === "";
      node.textContent = text;
      if (first) return;
      node.classList.remove("flash");
      void node.offsetWidth;
      node.classList.add("flash");
    }
  }
  function fmtInt(n) { return Number(n || 0).toLocaleString("en-US"); }
  function fmtRate(r) {
    if (r === null || r === undefined) return DASH;
    if (r === 0) return "0";
    return r < 10 ? r.toFixed(2) : r < 100 ? r.toFixed(1) : Math.round(r).toLocaleString("en-US");
  }
  function fmtBytes(b) {
    b = Number(b || 0);
    const units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let i = 0;
    while (b >= 1024 && i < units.length - 1) { b /= 1024; i++; }
    return (i === 0 ? String(b) : b.toFixed(b < 10 ? 2 : 1)) + " " + units[i];
  }
  function fmtMs(ms) {
    if (!ms) return DASH;
    return ms < 10 ? ms.toFixed(2) + " ms" : ms < 1000 ? ms.toFixed(0) + " ms" : (ms / 1000).toFixed(2) + " s";
  }
  function fmtSince(s) {
    s = Math.max(0, Math.floor(Number(s) || 0));
    const d = Math.floor(s / 86400), h = Math.floor(s % 86400 / 3600), m = Math.floor(s % 3600 / 60), r = s % 60;
    if (d) return d + "d " + h + "h";
    if (h) return h + "h " + m + "m";
    if (m) return m + "m " + r + "s";
    return r + "s";
  }
  function rowState(row) {
    if (row.state === "maint") return "maint";
    if (row.health === "down") return "down";
    if (row.state === "drain") return "drain";
    return "ready";
  }
  function rate(key, field, value, now) {
    if (!previous || !previous.counters.has(key)) return null;
    const dt = (now - previous.at) / 1000;
    if (dt <= 0) return null;
    return Math.max(0, (value - previous.counters.get(key)[field]) / dt);
  }
  function toast(message, bad) {
    const node = $("toast");
    node.textContent = message;
    node.className = "show" + (bad ? " bad" : "");
    clearTimeout(toast.timer);
    toast.timer = setTimeout(() => { node.className = bad ? "bad" : ""; }, 2600);
  }

  // -- summary cards -------------------------------------------------------------------------
  const cards = {};
  function card(id, label) {
    if (!cards[id]) {
      const box = el("div", "card");
      box.append(el("div", "label", label));
      const value = el("div", "value", DASH);
      value.dataset.card = id;
      box.append(value);
      $("summary").append(box);
      cards[id] = value;
    }
    return cards[id];
  }

  // -- frontends -----------------------------------------------------------------------------
  const frontendRows = new Map();
  function renderFrontends(frontends, now) {
    const body = document.querySelector("#frontends tbody");
    const seen = new Set();
    for (const f of frontends) {
      seen.add(f.frontend);
      let r = frontendRows.get(f.frontend);
      if (!r) {
        r = { tr: el("tr", "row st-ready"), cells: {} };
        r.tr.dataset.frontend = f.frontend;
        const name = el("td", "name");
        name.dataset.label = "Frontend";
        name.append(el("b", "", f.frontend));
        r.tr.append(name);
        for (const [field, label, cls] of [["mode", "Mode", ""], ["state", "State", ""],
            ["connections", "Connections", "n"], ["conn_rate", "Conn/s", "n"], ["requests", "Requests", "n"],
            ["req_rate", "Req/s", "n"]]) {
          const td = el("td", cls);
          td.dataset.label = label;
          td.dataset.field = field;
          r.tr.append(td);
          r.cells[field] = td;
        }
        r.cells.state.append(el("span", "pill open", "open"));
        frontendRows.set(f.frontend, r);
      }
      body.append(r.tr);
      setText(r.cells.mode, f.mode);
      setText(r.cells.connections, fmtInt(f.connections));
      setText(r.cells.requests, f.mode === "tcp" ? DASH : fmtInt(f.requests));
      const key = "f:" + f.frontend;
      setText(r.cells.conn_rate, fmtRate(rate(key, "connections", f.connections, now)));
      setText(r.cells.req_rate, f.mode === "tcp" ? DASH : fmtRate(rate(key, "requests", f.requests, now)));
    }
    for (const [name, r] of frontendRows) if (!seen.has(name)) { r.tr.remove(); frontendRows.delete(name); }
    $("frontends").hidden = frontends.length === 0;
  }

  // -- backends and servers ------------------------------------------------------------------
  const backendPanels = new Map();
  function makeBackendPanel(name) {
    const section = el("section", "panel");
    section.dataset.backend = name;
    const head = el("div", "panel-head");
    head.append(el("h2", "", name));
    const balance = el("span", "tag");
    const pill = el("span", "pill");
    const facts = el("div", "facts");
    head.append(balance, pill, facts);
    const table = el("table", "cards-sm");
    const thead = el("thead");
    const tr = el("tr");
    for (const [label, cls] of SERVER_COLUMNS) tr.append(el("th", cls, label));
    thead.append(tr);
    const tbody = el("tbody");
    table.append(thead, tbody);
    const scroll = el("div", "scroll");
    scroll.append(table);
    section.append(head, scroll);
    return { section, balance, pill, facts, tbody, rows: new Map() };
  }
  function fact(container, label, value, field) {
    let node = container.querySelector('[data-field="' + field + '"]');
    if (!node) {
      const span = el("span", "", label + " ");
      node = el("b", "num");
      node.dataset.field = field;
      span.append(node);
      container.append(span);
    }
    setText(node, value);
  }
  function makeServerRow(backend, server) {
    const tr = el("tr", "row");
    tr.dataset.server = backend + "/" + server;
    const cells = {};
    const fields = ["name", "state", "health", "weight", "sessions", "queued", "req_rate", "err_rate", "errors",
      "bytes_in", "bytes_out", "resp_time", "since", "actions"];
    fields.forEach((field, i) => {
      const [label, cls] = SERVER_COLUMNS[i];
      const td = el("td", cls);
      td.dataset.label = label;
      td.dataset.field = field;
      tr.append(td);
      cells[field] = td;
    });
    cells.name.classList.add("name");
    cells.name.append(el("b", "", server), el("span", "sub"));
    cells.state.append(el("span", "pill"));
    cells.state.classList.add("wide");
    cells.health.classList.add("wide");
    const health = el("div", "stack");
    health.append(el("span", "pill"), el("span", "sub"));
    cells.health.append(health);
    cells.actions.classList.add("actions-cell");
    const buttons = {};
    if (CONFIG.actions) {
      const box = el("div", "actions");
      for (const action of ["ready", "drain", "maint"]) {
        const button = el("button", "", action);
        button.type = "button";
        button.dataset.action = action;
        button.title = "set " + backend + "/" + server + " " + action;
        button.addEventListener("click", () => act(backend, server, action));
        box.append(button);
        buttons[action] = button;
      }
      cells.actions.append(box);
    }
    return { tr, cells, buttons };
  }
  function updateServerRow(r, s, now) {
    const state = rowState(s);
    r.tr.className = "row st-" + state;
    r.tr.dataset.state = s.state;
    r.cells.name.querySelector(".sub").textContent = s.address;
    const statePill = r.cells.state.firstChild;
    statePill.className = "pill " + s.state;
    statePill.textContent = s.state;
    const healthPill = r.cells.health.querySelector(".pill");
    healthPill.className = "pill " + s.health;
    healthPill.textContent = s.health;
    let check = s.last_check ? s.last_check : "no check";
    if (s.agent && s.agent !== "ready") check += " · agent " + s.agent;
    r.cells.health.querySelector(".sub").textContent = check;
    setText(r.cells.weight, s.effective_weight !== undefined && s.effective_weight !== s.weight
      ? s.effective_weight + " / " + s.weight : s.weight);
    setText(r.cells.sessions, fmtInt(s.active) + " / " + fmtInt(s.requests));
    r.cells.sessions.title = "current / total";
    setText(r.cells.queued, fmtInt(s.queued));
    const key = "s:" + s.backend + "/" + s.server;
    setText(r.cells.req_rate, fmtRate(rate(key, "requests", s.requests, now)));
    setText(r.cells.err_rate, fmtRate(rate(key, "errors", s.errors, now)));
    setText(r.cells.errors, fmtInt(s.errors));
    r.cells.errors.title = (s.connect_failures || 0) + " connect failures";
    setText(r.cells.bytes_in, fmtBytes(s.bytes_in));
    r.cells.bytes_in.title = fmtInt(s.bytes_in) + " bytes";
    setText(r.cells.bytes_out, fmtBytes(s.bytes_out));
    r.cells.bytes_out.title = fmtInt(s.bytes_out) + " bytes";
    setText(r.cells.resp_time, fmtMs(s.resp_time_ms));
    r.cells.since.textContent = fmtSince(s.since);
    r.cells.since.title = "last state change " + new Date(Date.now() - s.since * 1000).toLocaleString();
    for (const [action, button] of Object.entries(r.buttons)) {
      button.disabled = s.state === action;
      button.classList.toggle("current", s.state === action);
    }
  }
  function renderBackends(backends, servers, now) {
    const container = $("backends");
    const seen = new Set();
    for (const b of backends) {
      seen.add(b.backend);
      let panel = backendPanels.get(b.backend);
      if (!panel) {
        panel = makeBackendPanel(b.backend);
        backendPanels.set(b.backend, panel);
      }
      container.append(panel.section);
      const mine = servers.filter((s) => s.backend === b.backend);
      panel.balance.textContent = b.balance;
      const up = b.usable > 0;
      panel.pill.className = "pill " + (up ? "up" : "down");
      panel.pill.textContent = up ? "up" : "down";
      panel.section.dataset.state = up ? "up" : "down";
      const timed = mine.filter((s) => s.resp_time_ms && s.requests);
      const weight = timed.reduce((a, s) => a + s.requests, 0);
      const resp = weight ? timed.reduce((a, s) => a + s.resp_time_ms * s.requests, 0) / weight : 0;
      const key = "b:" + b.backend;
      fact(panel.facts, "usable", b.usable + " / " + b.servers, "usable");
      fact(panel.facts, "sessions", fmtInt(b.active) + " / " + fmtInt(b.requests), "sessions");
      fact(panel.facts, "req/s", fmtRate(rate(key, "requests", b.requests, now)), "req_rate");
      fact(panel.facts, "err/s", fmtRate(rate(key, "errors", b.errors, now)), "err_rate");
      fact(panel.facts, "in", fmtBytes(b.bytes_in), "bytes_in");
      fact(panel.facts, "out", fmtBytes(b.bytes_out), "bytes_out");
      fact(panel.facts, "resp.", fmtMs(resp), "resp_time");
      const rowSeen = new Set();
      for (const s of mine) {
        rowSeen.add(s.server);
        let r = panel.rows.get(s.server);
        if (!r) {
          r = makeServerRow(s.backend, s.server);
          panel.rows.set(s.server, r);
        }
        panel.tbody.append(r.tr);
        updateServerRow(r, s, now);
      }
      for (const [name, r] of panel.rows) if (!rowSeen.has(name)) { r.tr.remove(); panel.rows.delete(name); }
    }
    for (const [name, panel] of backendPanels) {
      if (!seen.has(name)) { panel.section.remove(); backendPanels.delete(name); }
    }
  }

  function render(data, now) {
    $("meta").textContent = "generation " + data.generation + " · " + data.workers + " worker"
      + (data.workers === 1 ? "" : "s") + " · refresh " + CONFIG.refresh + "s";
    renderFrontends(data.frontends, now);
    renderBackends(data.backends, data.servers, now);
    const servers = data.servers;
    const usable = servers.filter((s) => s.usable).length;
    let reqRate = null, errRate = null;
    for (const b of data.backends) {
      const r = rate("b:" + b.backend, "requests", b.requests, now);
      const e = rate("b:" + b.backend, "errors", b.errors, now);
      if (r !== null) reqRate = (reqRate || 0) + r;
      if (e !== null) errRate = (errRate || 0) + e;
    }
    setText(card("servers", "Servers usable"), usable + " / " + servers.length);
    setText(card("active", "Active sessions"), fmtInt(servers.reduce((a, s) => a + s.active, 0)));
    setText(card("requests", "Requests"), fmtInt(data.backends.reduce((a, b) => a + b.requests, 0)));
    setText(card("req_rate", "Req/s"), fmtRate(reqRate));
    setText(card("err_rate", "Err/s"), fmtRate(errRate));
    setText(card("bytes_in", "Bytes in"), fmtBytes(data.backends.reduce((a, b) => a + b.bytes_in, 0)));
    setText(card("bytes_out", "Bytes out"), fmtBytes(data.backends.reduce((a, b) => a + b.bytes_out, 0)));
    const counters = new Map();
    for (const f of data.frontends) counters.set("f:" + f.frontend, f);
    for (const b of data.backends) counters.set("b:" + b.backend, b);
    for (const s of servers) counters.set("s:" + s.backend + "/" + s.server, s);
    previous = { at: now, counters };
    $("updated").textContent = "updated " + new Date().toLocaleTimeString();
  }

  async function poll() {
    clearTimeout(timer);
    if (inflight) return;
    inflight = true;
    try {
      const response = await fetch(API_URL, { cache: "no-store", credentials: "same-origin" });
      if (!response.ok) throw new Error("HTTP " + response.status);
      const data = await response.json();
      render(data, performance.now());
      $("banner").classList.remove("show");
      $("live").className = paused ? "live off" : "live";
    } catch (error) {
      $("banner").textContent = "Cannot reach balancer (" + error.message + "); retrying…";
      $("banner").classList.add("show");
      $("live").className = "live err";
    } finally {
      inflight = false;
      if (!paused) timer = setTimeout(poll, CONFIG.refresh * 1000);
    }
  }

  async function act(backend, server, state) {
    try {
      const response = await fetch(ACTION_URL, {
        method: "POST",
        credentials: "same-origin",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ backend, server, state, csrf: CONFIG.csrf })
      });
      const reply = await response.json().catch(() => ({}));
      if (!response.ok) throw new Error(reply.error || "HTTP " + response.status);
      toast(backend + "/" + server + " is now " + reply.state);
    } catch (error) {
      toast("could not set " + backend + "/" + server + " " + state + ": " + error.message, true);
    }
    poll();
  }

  $("pause").addEventListener("click", () => {
    paused = !paused;
    $("pause").textContent = paused ? "Resume" : "Pause";
    $("live").className = paused ? "live off" : "live";
    if (!paused) poll(); else clearTimeout(timer);
  });
  poll();
})();
</script>
</body>
</html>
"""
