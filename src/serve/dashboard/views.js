// The views beside the fleet's table: the header's daemon figures (health
// and metrics read every 2 s, alerts streamed from /ws/alerts), the Tasks
// view streamed from /ws/tasks while it is shown (its schedules and queues
// read every 3 s: they have no stream), and the Pool view read every 3 s
// while it is shown (the pool has no stream).
import { $, el, pairs, fixed } from "./dom.js";
import { get, change, may, access } from "./api.js";
import { follow, throttle } from "./stream.js";

// --- the header ------------------------------------------------------------
let alerts = null;
let before = null;

export function startHeader() {
  follow("/ws/alerts", {
    message(m) {
      alerts = m.firing || [];
      header();
    },
    down(wait) {
      alerts = "stream lost, reconnecting in " + Math.round(wait / 1000) + " s";
      header();
    },
  });
  header();
  setInterval(header, 2000);
}

// The daemon's own status, the fleet's, the firing alerts and the rates.
// A daemon that cannot be read says so here, with why.
let figures = [];
async function header() {
  try {
    const [h, m] = await Promise.all([get("/health"), get("/api/metrics")]);
    const now = Date.now();
    const lost = h.frames.dropped + h.frames.rejected;
    let rate = "–";
    let drops = "–";
    if (before) {
      const dt = (now - before.at) / 1000;
      rate = ((h.frames.received - before.received) / dt).toFixed(0);
      drops = ((lost - before.lost) / dt).toFixed(1);
    }
    before = { at: now, received: h.frames.received, lost };
    const said = (s) => [s.status + (s.reasons.length ? ": " + s.reasons.join("; ") : ""), s.status === "healthy" ? "" : "bad"];
    figures = [
      ["musterd", ...said(h)], ["fleet", ...said(h.fleet)],
      ["frames/s", rate], ["lost/s", drops], ["up", m.uptime], ["version", h.version],
      ["success", fixed(m.success_rate, 1) + " %"], ["runs/h", fixed(m.runs_per_hour, 1)],
      ["p95", m.p95_execution_ms == null ? "–" : fixed(m.p95_execution_ms, 0) + " ms"],
    ];
  } catch (e) {
    figures = [["musterd", "cannot read: " + e.message, "bad"]];
  }
  let firing = [alerts ?? "–", alerts === null ? "" : "bad"];
  if (Array.isArray(alerts)) {
    firing = alerts.length ? [alerts.map((a) => a.annotations.summary).join("; "), "bad"] : ["none firing", ""];
  }
  pairs($("daemon"), [figures[0], ["alerts", ...firing], ...figures.slice(1)]);
}

// --- tasks -----------------------------------------------------------------
// The newest tasks the stream has sent, by id; the view lists 100.
const tasks = new Map();
let tasksStream = null;
const drawTasks = throttle(taskRows, 250);

const ENDED_RETRYABLE = ["failed", "dead", "cancelled", "timed_out"];
const UNDER_WAY = ["waiting", "scheduled", "queued", "assigned", "running"];

function button(text, onclick) {
  const b = el("button", text);
  b.type = "button";
  b.onclick = onclick;
  return b;
}

// A task's progress as its worker last said it: a bar and its message.
function progressCell(k) {
  const c = el("td");
  const p = k.progress;
  if (!p) return c;
  if (p.fraction != null) {
    const bar = el("progress");
    bar.max = 1;
    bar.value = p.fraction;
    bar.title = Math.round(p.fraction * 100) + " %";
    c.append(bar);
  }
  if (p.message) c.append(" " + p.message);
  return c;
}

function taskRows() {
  const shown = $("task-state").value;
  const newest = [...tasks.values()]
    .filter((k) => !shown || k.state === shown)
    .sort((a, b) => (a.id < b.id ? 1 : -1))
    .slice(0, 100);
  $("tasks").replaceChildren(
    ...newest.map((k) => {
      const r = el("tr");
      for (const v of [k.id, k.type, k.state]) r.append(el("td", String(v)));
      r.append(progressCell(k));
      for (const v of [k.worker_id || "–", k.attempt, new Date(k.created_at).toLocaleTimeString()]) r.append(el("td", String(v)));
      const c = el("td");
      const path = "/api/tasks/" + encodeURIComponent(k.id);
      // A submit token cancels only the tasks it submitted.
      const mine = may("submit") && k.submitted_by === access.name;
      if (UNDER_WAY.includes(k.state) && (may("operate") || mine)) c.append(button("Cancel", () => change("DELETE", path).catch(say("task-msg"))));
      if (ENDED_RETRYABLE.includes(k.state) && may("operate")) c.append(button("Retry", () => change("POST", path + "/retry").catch(say("task-msg"))));
      r.append(c);
      return r;
    }),
  );
}

// A bulk action on every task in the chosen state, sent again while the
// daemon says more match.
async function bulk(action) {
  const state = $("task-state").value;
  if (!state) {
    $("bulk-msg").textContent = "choose a state first";
    return;
  }
  try {
    let changed = 0;
    for (let round = 0; round < 100; round++) {
      const r = await change("POST", "/api/tasks/bulk", { action, filter: { state } });
      changed += r.changed;
      if (!r.more || !r.changed) break;
    }
    $("bulk-msg").textContent = action + ": " + changed + " " + state + " tasks";
  } catch (err) {
    say("bulk-msg")(err);
  }
}

// --- schedules and queues (read every 3 s while the Tasks view shows) ------
async function schedules() {
  try {
    const [s, q] = await Promise.all([get("/api/schedules"), get("/api/queues")]);
    $("schedules").replaceChildren(
      ...s.schedules.map((x) => {
        const r = el("tr");
        const next = x.next_tick ? new Date(x.next_tick).toLocaleString() : x.paused ? "paused" : "–";
        for (const v of [x.name, x.cron, x.timezone, next, x.fired, x.skipped]) r.append(el("td", String(v)));
        const path = "/api/schedules/" + encodeURIComponent(x.name) + (x.paused ? "/resume" : "/pause");
        const c = el("td");
        if (may("operate")) c.append(button(x.paused ? "Resume" : "Pause", () => change("POST", path).then(schedules).catch(say("sched-msg"))));
        r.append(c);
        return r;
      }),
    );
    $("queues").replaceChildren(
      ...q.queues.map((x) => {
        const r = el("tr");
        for (const v of [x.type, x.queued, x.paused ? "paused" : "dispatching"]) r.append(el("td", String(v)));
        const path = "/api/queues/" + encodeURIComponent(x.type) + (x.paused ? "/resume" : "/pause");
        const c = el("td");
        if (may("operate")) c.append(button(x.paused ? "Resume" : "Pause", () => change("POST", path).then(schedules).catch(say("sched-msg"))));
        r.append(c);
        return r;
      }),
    );
  } catch (e) {
    say("sched-msg")(e);
  }
}

function followTasks() {
  tasksStream = follow("/ws/tasks", {
    message(m) {
      if (m.type === "snapshot") tasks.clear();
      for (const t of m.tasks || []) tasks.set(t.id, t);
      for (const id of m.removed || []) tasks.delete(id);
      if (m.type === "snapshot") $("task-msg").textContent = "";
      drawTasks();
    },
    down(wait) {
      $("task-msg").textContent = "task stream lost, reconnecting in " + Math.round(wait / 1000) + " s";
    },
  });
}

async function submit(e) {
  e.preventDefault();
  try {
    const body = { type: $("task-type").value, priority: Number($("task-priority").value) || 0 };
    const raw = $("task-payload").value.trim();
    if (raw) body.payload = JSON.parse(raw);
    const t = await change("POST", "/api/tasks", body);
    $("task-msg").textContent = "submitted " + t.id;
  } catch (err) {
    say("task-msg")(err);
  }
}

// --- the pool --------------------------------------------------------------
async function pool() {
  try {
    const p = await get("/api/pool");
    $("pool-size").textContent = "desired " + p.desired + ", running " + p.actual;
    $("members").replaceChildren(
      ...p.members.map((m) => {
        const r = el("tr");
        const started = m.started_at ? new Date(m.started_at).toLocaleTimeString() : "–";
        for (const v of [m.id, m.pid ?? "–", m.state, m.restarts, m.last_exit ?? "–", started]) r.append(el("td", String(v)));
        return r;
      }),
    );
  } catch (e) {
    say("pool-msg")(e);
  }
}

async function scale(e) {
  e.preventDefault();
  try {
    const r = await change("POST", "/api/workers/scale", { count: Number($("pool-count").value) });
    $("pool-msg").textContent = "now " + r.count;
    pool();
  } catch (err) {
    say("pool-msg")(err);
  }
}

function say(id) {
  return (e) => ($(id).textContent = e.message);
}

// --- switching -------------------------------------------------------------
let poolTimer = null;
let schedTimer = null;

// The token changed: draw the rows' actions again for its role.
export function refreshActions() {
  drawTasks();
  if (!$("view-tasks").hidden) schedules();
}

export function init() {
  $("submit").onsubmit = submit;
  $("task-state").onchange = taskRows;
  $("bulk-retry").onclick = () => bulk("retry");
  $("bulk-cancel").onclick = () => bulk("cancel");
  $("scale").onsubmit = scale;
  for (const b of document.querySelectorAll("nav button")) b.onclick = () => showView(b.dataset.view);
}

// Show one view; a hidden view's stream is closed and its poll stopped.
export function showView(v) {
  for (const b of document.querySelectorAll("nav button")) b.setAttribute("aria-pressed", String(b.dataset.view === v));
  for (const s of ["workers", "tasks", "pool"]) $("view-" + s).hidden = s !== v;
  if (v === "tasks" && !tasksStream) followTasks();
  if (v !== "tasks" && tasksStream) {
    tasksStream.stop();
    tasksStream = null;
  }
  clearInterval(poolTimer);
  poolTimer = null;
  clearInterval(schedTimer);
  schedTimer = null;
  if (v === "tasks") {
    schedules();
    schedTimer = setInterval(schedules, 3000);
  }
  if (v === "pool") {
    pool();
    poolTimer = setInterval(pool, 3000);
  }
}
