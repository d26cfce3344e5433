// musterd's dashboard: the fleet live from /ws/telemetry, a worker's
// details from the REST API, tasks and the pool. No framework, nothing from
// the network but this daemon; text goes in with textContent only.
"use strict";
const $ = (id) => document.getElementById(id);
const ROW = 28;
const COLUMNS = [
  ["worker_id", "ID", (w) => w.worker_id],
  ["status", "Status", (w) => w.status],
  ["cpu_usage", "CPU %", (w) => w.cpu_usage],
  ["memory_usage", "Mem %", (w) => w.memory_usage],
  ["rss_mb", "RSS MB", (w) => (w.resource_usage || {}).rss_mb],
  ["queue_depth", "Queue", (w) => w.queue_depth],
  ["job", "Job", (w) => job(w)],
  ["last_update", "Last seen", (w) => w.last_update],
];
const workers = new Map();
let order = [];
let sort = { key: "worker_id", dir: 1 };
let selected = null;
let live = false;

function job(w) {
  const j = w.current_job;
  return j ? j.id || j.type || "" : "";
}
function fixed(x, d) {
  return typeof x === "number" ? x.toFixed(d) : "–";
}
function ago(ms) {
  if (!ms) return "–";
  const s = Math.max(0, Math.round((Date.now() - ms) / 1000));
  if (s < 60) return s + " s ago";
  if (s < 3600) return Math.floor(s / 60) + " min ago";
  if (s < 86400) return Math.floor(s / 3600) + " h ago";
  return Math.floor(s / 86400) + " d ago";
}
function el(tag, text, cls) {
  const e = document.createElement(tag);
  if (text !== undefined) e.textContent = text;
  if (cls) e.className = cls;
  return e;
}
function pairs(dl, list) {
  dl.replaceChildren();
  for (const [k, v] of list) {
    const d = el("div");
    d.append(el("dt", k), el("dd", v === undefined || v === null ? "–" : String(v)));
    dl.append(d);
  }
}

// --- the live stream ---------------------------------------------------
let backoff = 500;
function connect() {
  const ws = new WebSocket((location.protocol === "https:" ? "wss://" : "ws://") + location.host + "/ws/telemetry");
  ws.onopen = () => {
    performance.mark("muster-ws-open");
    backoff = 500;
    live = true;
    conn("live");
  };
  ws.onmessage = (e) => {
    const m = JSON.parse(e.data);
    if (m.type === "snapshot") performance.mark("muster-snapshot");
    if (m.type === "snapshot") workers.clear();
    for (const [id, w] of Object.entries(m.workers || {})) workers.set(id, w);
    for (const id of m.worker_ids || []) workers.delete(id);
    // A snapshot is drawn at once; changes share a rebuild.
    if (m.type === "snapshot") render();
    else schedule();
  };
  ws.onclose = () => {
    live = false;
    const wait = backoff;
    backoff = Math.min(backoff * 2, 10000);
    conn("disconnected — reconnecting in " + Math.round(wait / 1000) + " s; the table is stale");
    setTimeout(connect, wait);
  };
}
function conn(text) {
  const c = $("conn");
  c.textContent = text;
  c.classList.toggle("down", !live);
}

// --- the table -----------------------------------------------------------
function matches(w, q, st, label) {
  if (q && !w.worker_id.toLowerCase().includes(q)) return false;
  if (st === "active" ? !w.is_active : st && w.status !== st) return false;
  if (label) {
    const [k, v] = label.split("=");
    const have = (w.labels || {})[k.trim()];
    if (have === undefined || (v !== undefined && have !== v.trim())) return false;
  }
  return true;
}
function rebuild() {
  const q = $("search").value.trim().toLowerCase();
  const st = $("status").value;
  const label = $("label").value.trim();
  const get = COLUMNS.find((c) => c[0] === sort.key)[2];
  order = [];
  for (const w of workers.values()) if (matches(w, q, st, label)) order.push(w);
  order.sort((a, b) => {
    const x = get(a), y = get(b);
    if (x === y) return a.worker_id < b.worker_id ? -1 : 1;
    if (x === undefined || x === null) return 1;
    if (y === undefined || y === null) return -1;
    return (x < y ? -1 : 1) * sort.dir;
  });
  $("count").textContent = order.length + " of " + workers.size + " workers";
  $("grid").setAttribute("aria-rowcount", String(order.length + 1));
  $("spacer").style.height = order.length * ROW + "px";
  totals();
}
function cell(text, cls) {
  const c = el("div", text, cls);
  c.setAttribute("role", "cell");
  return c;
}
function draw() {
  const scroll = $("scroll");
  const first = Math.max(0, Math.floor(scroll.scrollTop / ROW) - 5);
  const last = Math.min(order.length, first + Math.ceil(scroll.clientHeight / ROW) + 10);
  const rows = $("rows");
  rows.style.transform = "translateY(" + first * ROW + "px)";
  const out = [];
  for (let i = first; i < last; i++) {
    const w = order[i];
    const r = el("div", undefined, "row" + (w.worker_id === selected ? " sel" : ""));
    r.setAttribute("role", "row");
    r.setAttribute("aria-rowindex", String(i + 2));
    r.dataset.id = w.worker_id;
    r.append(
      cell(w.worker_id),
      cell(w.status, "st st-" + w.status),
      cell(fixed(w.cpu_usage, 1), "num"),
      cell(fixed(w.memory_usage, 1), "num"),
      cell(fixed((w.resource_usage || {}).rss_mb, 1), "num"),
      cell(String(w.queue_depth ?? "–"), "num"),
      cell(job(w) || "–"),
      cell(ago(w.last_update)),
    );
    out.push(r);
  }
  rows.replaceChildren(...out);
}
function head() {
  const h = $("head");
  h.replaceChildren();
  for (const [key, name] of COLUMNS) {
    const c = el("div");
    c.setAttribute("role", "columnheader");
    c.setAttribute("aria-sort", sort.key === key ? (sort.dir > 0 ? "ascending" : "descending") : "none");
    const b = el("button", name + (sort.key === key ? (sort.dir > 0 ? " ▲" : " ▼") : ""));
    b.type = "button";
    b.onclick = () => {
      sort = { key, dir: sort.key === key ? -sort.dir : 1 };
      head();
      schedule();
    };
    c.append(b);
    h.append(c);
  }
}
function totals() {
  const by = {};
  let active = 0;
  for (const w of workers.values()) {
    by[w.status] = (by[w.status] || 0) + 1;
    if (w.is_active) active++;
  }
  const list = [["workers", workers.size], ["active", active], ["inactive", workers.size - active]];
  for (const s of ["working", "idle", "error", "created", "terminated"]) if (by[s]) list.push([s, by[s]]);
  pairs($("totals"), list);
}

// --- the header's daemon figures ------------------------------------------
let last = null;
async function daemon() {
  try {
    const [h, m, al] = await Promise.all([get("/health"), get("/api/metrics"), get("/api/alerts")]);
    const now = Date.now();
    let rate = "–", drops = "–";
    if (last) {
      const dt = (now - last.at) / 1000;
      rate = ((h.frames.received - last.received) / dt).toFixed(0);
      drops = ((h.frames.dropped + h.frames.rejected - last.lost) / dt).toFixed(1);
    }
    last = { at: now, received: h.frames.received, lost: h.frames.dropped + h.frames.rejected };
    pairs($("daemon"), [
      ["health", h.status + (h.reasons && h.reasons.length ? ": " + h.reasons.join("; ") : "")],
      ["alerts", al.firing.length ? al.firing.map((a) => a.annotations.summary).join("; ") : "none firing"],
      ["frames/s", rate], ["lost/s", drops], ["up", m.uptime], ["musterd", h.version],
      ["success", fixed(m.success_rate, 1) + " %"], ["runs/h", fixed(m.runs_per_hour, 1)],
      ["p95", m.p95_execution_ms == null ? "–" : fixed(m.p95_execution_ms, 0) + " ms"],
    ]);
  } catch (e) {
    /* the banner says the daemon is away */
  }
}
async function get(path) {
  const r = await fetch(path, { headers: { Accept: "application/json" } });
  if (!r.ok) throw new Error(path + ": " + r.status);
  return r.json();
}
async function change(method, path, body) {
  const token = sessionStorage.getItem("muster.token");
  const headers = { "Content-Type": "application/json" };
  if (token) headers.Authorization = "Bearer " + token;
  const r = await fetch(path, { method, headers, body: body && JSON.stringify(body) });
  const text = await r.text();
  if (!r.ok) {
    let msg = r.status + "";
    try { msg += " " + JSON.parse(text).message; } catch (e) { /* not JSON */ }
    throw new Error(msg + (r.status === 401 ? " (set the API token above)" : ""));
  }
  return text ? JSON.parse(text) : null;
}

// --- a worker's panel --------------------------------------------------------
async function open(id) {
  selected = id;
  schedule();
  $("task-log").hidden = $("task-log-title").hidden = true;
  $("panel").hidden = false;
  document.body.classList.add("panel-open");
  $("panel-title").textContent = id;
  $("download").href = "/api/workers/snapshot/" + encodeURIComponent(id);
  await panel();
}
async function panel() {
  const id = selected;
  if (!id || $("panel").hidden) return;
  const p = encodeURIComponent(id);
  try {
    const [w, m, h, t] = await Promise.all([
      get("/api/workers/" + p), get("/api/workers/" + p + "/metrics"),
      get("/api/workers/" + p + "/history"), get("/api/workers/" + p + "/tasks").catch(() => ({ tasks: [] })),
    ]);
    if (id !== selected) return;
    pairs($("details"), [
      ["status", w.status], ["active", w.is_active ? "yes" : "no"], ["host", w.hostname], ["pid", w.pid],
      ["transport", w.transport], ["job", job(w) || undefined], ["queue", w.queue_depth],
      ["cpu %", fixed(w.cpu_usage, 1)], ["memory %", fixed(w.memory_usage, 1)],
      ["labels", Object.entries(w.labels || {}).map(([k, v]) => k + "=" + v).join(", ") || undefined],
      ["first seen", new Date(w.created_at).toISOString()], ["last seen", ago(w.last_update)],
      ["missed beats", w.missed_beats], ["errors", w.errors],
    ]);
    const ms = (x) => (x == null ? "–" : fixed(x, 0) + " ms");
    pairs($("runs"), [
      ["runs", m.window_runs], ["success", fixed(m.success_rate, 1) + " %"], ["p50", ms(m.p50_execution_ms)],
      ["p95", ms(m.p95_execution_ms)], ["p99", ms(m.p99_execution_ms)], ["runs/h", fixed(m.runs_per_hour, 1)],
    ]);
    const s = h.samples || [];
    $("sparks").replaceChildren(
      spark("CPU %", s.map((x) => x.cpu_usage)),
      spark("Memory %", s.map((x) => x.memory_usage)),
      spark("Queue", s.map((x) => x.queue_depth)),
    );
    const list = (t.tasks || []).slice(0, 20).map((k) => {
      const b = el("button", k.id + "  " + k.type + "  " + k.state);
      b.type = "button";
      b.title = "show its log";
      b.onclick = () => logs(k.id);
      const li = el("li");
      li.append(b);
      return li;
    });
    $("worker-tasks").replaceChildren(...(list.length ? list : [el("li", "none")]));
  } catch (e) {
    $("details").replaceChildren(el("div", "cannot read " + id + ": " + e.message));
  }
}
async function logs(id) {
  try {
    const l = await get("/api/tasks/" + encodeURIComponent(id) + "/logs");
    $("task-log").textContent = l.lines.length ? l.lines.slice(-200).join("\n") : "(no log lines)";
  } catch (e) {
    $("task-log").textContent = e.message;
  }
  $("task-log-title").textContent = "Log of " + id;
  $("task-log-title").hidden = $("task-log").hidden = false;
}
function spark(name, values) {
  const box = el("div");
  const v = values.filter((x) => typeof x === "number");
  const label = el("div", undefined, "spark-label");
  label.append(el("span", name), el("span", v.length ? "now " + v[v.length - 1].toFixed(1) + ", max " + Math.max(...v).toFixed(1) : "no samples"));
  const ns = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(ns, "svg");
  svg.setAttribute("class", "spark");
  svg.setAttribute("viewBox", "0 0 100 20");
  svg.setAttribute("preserveAspectRatio", "none");
  svg.setAttribute("role", "img");
  svg.setAttribute("aria-label", name + " history");
  if (v.length > 1) {
    const hi = Math.max(...v, 1e-9);
    const line = document.createElementNS(ns, "polyline");
    line.setAttribute("points", v.map((x, i) => ((i / (v.length - 1)) * 100).toFixed(2) + "," + (20 - (x / hi) * 19).toFixed(2)).join(" "));
    line.setAttribute("vector-effect", "non-scaling-stroke");
    svg.append(line);
  }
  box.append(label, svg);
  return box;
}
function close() {
  $("panel").hidden = true;
  document.body.classList.remove("panel-open");
  selected = null;
  schedule();
  $("scroll").focus();
}

// --- tasks and the pool --------------------------------------------------------
async function tasks() {
  try {
    const t = await get("/api/tasks?limit=100");
    const rows = (t.tasks || []).slice().reverse().map((k) => {
      const r = el("tr");
      for (const v of [k.id, k.type, k.state, k.worker_id || "–", k.attempt, new Date(k.created_at).toLocaleTimeString()]) r.append(el("td", String(v)));
      const c = el("td");
      if (["queued", "assigned", "running"].includes(k.state)) {
        const b = el("button", "Cancel");
        b.type = "button";
        b.onclick = () => change("DELETE", "/api/tasks/" + encodeURIComponent(k.id)).then(tasks, (e) => ($("task-msg").textContent = e.message));
        c.append(b);
      }
      r.append(c);
      return r;
    });
    $("tasks").replaceChildren(...rows);
  } catch (e) {
    $("task-msg").textContent = e.message;
  }
}
async function pool() {
  try {
    const p = await get("/api/pool");
    $("pool-size").textContent = "desired " + p.desired + ", running " + p.actual;
    $("members").replaceChildren(...p.members.map((m) => {
      const r = el("tr");
      for (const v of [m.id, m.pid ?? "–", m.state, m.restarts, m.last_exit ?? "–", m.started_at ? new Date(m.started_at).toLocaleTimeString() : "–"]) r.append(el("td", String(v)));
      return r;
    }));
  } catch (e) {
    $("pool-msg").textContent = e.message;
  }
}
let view = "workers";
function show(v) {
  view = v;
  for (const b of document.querySelectorAll("nav button")) b.setAttribute("aria-pressed", String(b.dataset.view === v));
  for (const s of ["workers", "tasks", "pool"]) $("view-" + s).hidden = s !== v;
  if (v === "tasks") tasks();
  if (v === "pool") pool();
}

// --- wiring ----------------------------------------------------------------------
function move(by) {
  let i = order.findIndex((w) => w.worker_id === selected);
  i = Math.max(0, Math.min(order.length - 1, (i < 0 ? -1 : i) + by));
  if (!order[i]) return;
  selected = order[i].worker_id;
  const scroll = $("scroll");
  if (i * ROW < scroll.scrollTop) scroll.scrollTop = i * ROW;
  if ((i + 1) * ROW > scroll.scrollTop + scroll.clientHeight) scroll.scrollTop = (i + 1) * ROW - scroll.clientHeight;
  schedule();
  if (!$("panel").hidden) open(selected);
}
addEventListener("DOMContentLoaded", () => {
  head();
  $("token").value = sessionStorage.getItem("muster.token") || "";
  $("token").onchange = (e) => sessionStorage.setItem("muster.token", e.target.value.trim());
  for (const id of ["search", "status", "label"]) $(id).oninput = schedule;
  $("filters").onsubmit = (e) => e.preventDefault();
  $("scroll").onscroll = draw;
  $("rows").onclick = (e) => {
    const r = e.target.closest(".row");
    if (r) open(r.dataset.id);
  };
  $("scroll").onkeydown = (e) => {
    if (e.key === "ArrowDown" || e.key === "ArrowUp") {
      e.preventDefault();
      move(e.key === "ArrowDown" ? 1 : -1);
    } else if (e.key === "Enter" && selected) open(selected);
  };
  $("close").onclick = close;
  document.onkeydown = (e) => {
    if (e.key === "Escape" && !$("panel").hidden) close();
    else if (e.key === "/" && document.activeElement.tagName !== "INPUT") {
      e.preventDefault();
      $("search").focus();
    }
  };
  for (const b of document.querySelectorAll("nav button")) b.onclick = () => show(b.dataset.view);
  $("submit").onsubmit = async (e) => {
    e.preventDefault();
    const body = { type: $("task-type").value, priority: Number($("task-priority").value) || 0 };
    try {
      const raw = $("task-payload").value.trim();
      if (raw) body.payload = JSON.parse(raw);
      const t = await change("POST", "/api/tasks", body);
      $("task-msg").textContent = "submitted " + t.id;
      tasks();
    } catch (err) {
      $("task-msg").textContent = err.message;
    }
  };
  $("scale").onsubmit = async (e) => {
    e.preventDefault();
    try {
      const r = await change("POST", "/api/workers/scale", { count: Number($("pool-count").value) });
      $("pool-msg").textContent = "now " + r.count;
      pool();
    } catch (err) {
      $("pool-msg").textContent = err.message;
    }
  };
  connect();
  daemon();
  setInterval(daemon, 2000);
  setInterval(panel, 5000);
  setInterval(() => (view === "tasks" ? tasks() : view === "pool" ? pool() : null), 3000);
  // The ages tick.
  setInterval(draw, 1000);
  schedule();
});

// Rebuild at once for the first change, then at most every 250 ms: 10,000
// workers beating do not rebuild the table 10,000 times a second.
let pending = false;
let built = -1e9;
function schedule() {
  if (pending) return;
  pending = true;
  setTimeout(() => {
    pending = false;
    render();
  }, Math.max(0, 250 - (performance.now() - built)));
}
function render() {
  built = performance.now();
  rebuild();
  draw();
  if (!window.musterFirstRows && order.length) {
    window.musterFirstRows = performance.now();
    performance.mark("muster-rows");
  }
}
