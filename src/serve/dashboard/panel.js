// A worker's panel: its details, its runs in the last hour, sparklines of
// its history, its tasks and a task's log, read from the REST API when it
// opens and every 5 s while it stays open.
import { $, el, pairs, fixed, ago, job } from "./dom.js";
import { get } from "./api.js";

let current = null;

export function isOpen() {
  return current !== null;
}

export function show(id) {
  current = id;
  $("task-log").hidden = $("task-log-title").hidden = true;
  $("panel").hidden = false;
  document.body.classList.add("panel-open");
  $("panel-title").textContent = id;
  $("download").href = "/api/workers/snapshot/" + encodeURIComponent(id);
  refresh();
}

export function hide() {
  current = null;
  $("panel").hidden = true;
  document.body.classList.remove("panel-open");
}

export async function refresh() {
  const id = current;
  if (id === null) return;
  const p = "/api/workers/" + encodeURIComponent(id);
  try {
    const w = await get(p);
    // Run metrics and history stay on the node that holds the worker.
    const here = !w.node || w.node === (await node());
    const none = { samples: [] };
    const [m, h, t] = await Promise.all([
      here ? get(p + "/metrics") : {}, here ? get(p + "/history") : none, get(p + "/tasks"),
    ]);
    if (id !== current) return;
    details(w, m, h, here);
    tasks(t.tasks || []);
  } catch (e) {
    if (id === current) $("details").replaceChildren(el("div", "cannot read " + id + ": " + e.message, "error"));
  }
}

// This node's name in cluster mode, from /health (asked once).
let self;
async function node() {
  if (self === undefined) self = (await get("/health")).cluster?.node ?? null;
  return self;
}

function details(w, m, h, here) {
  pairs($("details"), [
    ["status", w.status], ["active", w.is_active ? "yes" : "no"], ["node", w.node], ["host", w.hostname], ["pid", w.pid],
    ["transport", w.transport], ["job", job(w) || undefined], ["queue", w.queue_depth],
    ["cpu %", fixed(w.cpu_usage, 1)], ["memory %", fixed(w.memory_usage, 1)],
    ["labels", Object.entries(w.labels || {}).map(([k, v]) => k + ":" + v).join(", ") || undefined],
    ["first seen", new Date(w.created_at).toISOString()], ["last seen", ago(w.last_update)],
    ["missed beats", w.missed_beats], ["seq jumps", w.seq_jumps], ["errors", w.errors],
  ]);
  const ms = (x) => (x == null ? "–" : fixed(x, 0) + " ms");
  pairs($("runs"), !here ? [["runs", "kept by node " + w.node]] : [
    ["runs", m.window_runs], ["success", fixed(m.success_rate, 1) + " %"], ["p50", ms(m.p50_execution_ms)],
    ["p95", ms(m.p95_execution_ms)], ["p99", ms(m.p99_execution_ms)], ["runs/h", fixed(m.runs_per_hour, 1)],
  ]);
  const s = h.samples || [];
  $("sparks").replaceChildren(
    spark("CPU %", s.map((x) => x.cpu_usage)),
    spark("Memory %", s.map((x) => x.memory_usage)),
    spark("Queue", s.map((x) => x.queue_depth)),
  );
}

function tasks(list) {
  const items = list.slice(0, 20).map((k) => {
    const b = el("button", k.id + "  " + k.type + "  " + k.state);
    b.type = "button";
    b.title = "show its log";
    b.onclick = () => log(k.id);
    const li = el("li");
    li.append(b);
    return li;
  });
  $("worker-tasks").replaceChildren(...(items.length ? items : [el("li", "none")]));
}

async function log(id) {
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
  const now = v.length ? "now " + v[v.length - 1].toFixed(1) + ", max " + Math.max(...v).toFixed(1) : "no samples";
  label.append(el("span", name), el("span", now));
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
    const at = (x, i) => ((i / (v.length - 1)) * 100).toFixed(2) + "," + (20 - (x / hi) * 19).toFixed(2);
    line.setAttribute("points", v.map(at).join(" "));
    line.setAttribute("vector-effect", "non-scaling-stroke");
    svg.append(line);
  }
  box.append(label, svg);
  return box;
}
