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

  // -- bgp (only with [bgp]: the API's "bgp", as GET /api/bgp) ------------------------------
  function bgpRow(body, cells) {
    const tr = el("tr", "row");
    for (const [label, content, cls] of cells) {
      const td = el("td", cls || "");
      td.dataset.label = label;
      if (typeof content === "string") td.textContent = content; else td.append(content);
      tr.append(td);
    }
    body.append(tr);
  }
  function renderBgp(bgp) {
    $("bgp").hidden = !bgp;
    if (!bgp) return;
    const exabgp = bgp.exabgp || {};
    $("bgp-exabgp").textContent = (exabgp.pid ? "ExaBGP pid " + exabgp.pid : "ExaBGP not running")
      + " · restarted " + (exabgp.restarts || 0) + "×";
    const since = (s) => (s === null || s === undefined ? DASH : fmtSince(s));
    const announcements = document.querySelector("#bgp-announcements tbody");
    announcements.replaceChildren();
    for (const a of bgp.announcements) {
      const pill = el("span", "pill " + (a.announced ? "up" : "down"), a.announced ? "yes" : "no");
      bgpRow(announcements, [["Prefix", a.prefix, "name"], ["Announced", pill], ["Why", a.why],
        ["Since", since(a.since), "n"]]);
    }
    const neighbors = document.querySelector("#bgp-neighbors tbody");
    neighbors.replaceChildren();
    for (const n of bgp.neighbors) {
      const pill = el("span", "pill " + (n.state === "established" ? "up" : "down"), n.state);
      bgpRow(neighbors, [["Neighbor", n.address, "name"], ["Peer AS", String(n.peer_as)], ["Session", pill],
        ["Since", since(n.since), "n"]]);
    }
  }

  // -- vrrp (only with [vrrp]: the API's "vrrp", as GET /api/vrrp) ---------------------------
  function renderVrrp(vrrp) {
    $("vrrp").hidden = !vrrp;
    if (!vrrp) return;
    const keepalived = vrrp.keepalived || {};
    $("vrrp-keepalived").textContent = (keepalived.pid ? "keepalived pid " + keepalived.pid : "keepalived not running")
      + " · restarted " + (keepalived.restarts || 0) + "× · " + vrrp.transitions + " role changes";
    const body = document.querySelector("#vrrp-state tbody");
    body.replaceChildren();
    const state = vrrp.state || "INIT";
    const pill = el("span", "pill " + (state === "MASTER" ? "up" : state === "BACKUP" ? "drain" : "down"), state);
    bgpRow(body, [["Router", vrrp.virtual_router_id + " on " + vrrp.interface, "name"], ["State", pill],
      ["Priority", vrrp.priority + " (now " + vrrp.effective_priority + ")"], ["Health", vrrp.health],
      ["Why", vrrp.why], ["VIPs held here", vrrp.held.length ? vrrp.held.join(", ") : DASH],
      ["Since", fmtSince(vrrp.since), "n"]]);
  }

  // -- [[l4]] tables (an L4 node): one row per L7 node, rebuilt on every poll -----------------
  function renderL4(rows) {
    const body = document.querySelector("#l4 tbody");
    const trs = [];
    for (const n of rows) {
      const state = n.state === "up" ? "ready" : n.state;
      const tr = el("tr", "row st-" + state);
      tr.dataset.l4 = n.l4 + "/" + n.node;
      const cells = [["Table", n.l4, "name"], ["VIP", n.vip + " " + n.forward, ""], ["Method", n.method, ""],
        ["Node", n.node, ""], ["Address", n.address, ""], ["State", null, ""], ["Check", n.check, ""],
        ["Slots", fmtInt(n.slots) + " / " + fmtInt(n.table_size), "n"]];
      for (const [label, text, cls] of cells) {
        const td = el("td", cls, text === null ? undefined : text);
        td.dataset.label = label;
        if (text === null) td.append(el("span", "pill " + n.state, n.state));
        tr.append(td);
      }
      trs.push(tr);
    }
    body.replaceChildren(...trs);
    $("l4").hidden = rows.length === 0;
  }

  function render(data, now) {
    $("meta").textContent = "generation " + data.generation + " · " + data.workers + " worker"
      + (data.workers === 1 ? "" : "s") + " · refresh " + CONFIG.refresh + "s";
    renderFrontends(data.frontends, now);
    renderBackends(data.backends, data.servers, now);
    renderBgp(data.bgp);
    renderVrrp(data.vrrp);
    renderL4(data.l4 || []);
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
