// The header's chart of the last hour, from the daemon's own history
// (/api/history, read every 5 s): tasks succeeded and failed per minute
// with the queue's depth over them, and the workers by status. Each
// minute is a column with a tooltip of its figures; a minute the daemon
// was not running for has no worker column.
import { $, el } from "./dom.js";
import { get } from "./api.js";
import { STATUSES } from "./statuses.js";

const NS = "http://www.w3.org/2000/svg";
const W = 180;
const H = 36;

function svgEl(tag, attrs) {
  const e = document.createElementNS(NS, tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
  return e;
}

function clock(ms) {
  return new Date(ms).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
}

function frame(name) {
  const svg = svgEl("svg", {
    class: "trend",
    viewBox: "0 0 " + W + " " + H,
    preserveAspectRatio: "none",
    role: "img",
    "aria-label": name + ", last hour",
  });
  return svg;
}

// One column of stacked parts [[value, class]], `hi` the scale's top.
function column(svg, i, n, parts, hi, tip) {
  const w = W / n;
  const g = svgEl("g", { "data-minute": i });
  let y = H;
  for (const [v, cls] of parts) {
    if (!v) continue;
    const h = (v / hi) * (H - 1);
    y -= h;
    g.append(svgEl("rect", { x: (i * w).toFixed(2), y: y.toFixed(2), width: Math.max(w - 0.5, 0.5).toFixed(2), height: h.toFixed(2), class: cls }));
  }
  const t = svgEl("title", {});
  t.textContent = tip;
  g.append(t);
  svg.append(g);
}

function tasksChart(minutes) {
  const svg = frame("Tasks per minute");
  const n = minutes.length;
  const hi = Math.max(1, ...minutes.map((m) => m.succeeded + m.failed + m.cancelled));
  minutes.forEach((m, i) => {
    const tip = clock(m.at) + ": " + m.succeeded + " succeeded, " + m.failed + " failed, " + m.cancelled + " cancelled" +
      (m.queued === null ? "" : ", queue " + m.queued);
    column(svg, i, n, [[m.succeeded, "ok"], [m.failed, "bad"], [m.cancelled, "off"]], hi, tip);
  });
  // The queue's depth on its own scale, as a line over the bars.
  const depth = minutes.map((m, i) => [i, m.queued]).filter(([, q]) => q !== null);
  if (depth.length) {
    const top = Math.max(1, ...depth.map(([, q]) => q));
    const w = W / n;
    // A step per minute, so that a single minute shows too.
    const y = (q) => (H - 0.5 - (q / top) * (H - 1)).toFixed(2);
    const pts = depth.flatMap(([i, q]) => [(i * w).toFixed(2) + "," + y(q), ((i + 1) * w).toFixed(2) + "," + y(q)]);
    svg.append(svgEl("polyline", { points: pts.join(" "), class: "depth", "vector-effect": "non-scaling-stroke" }));
  }
  return svg;
}

function workersChart(minutes) {
  const svg = frame("Workers by status");
  const n = minutes.length;
  const total = (m) => (m.workers ? STATUSES.reduce((s, k) => s + m.workers[k], 0) : 0);
  const hi = Math.max(1, ...minutes.map(total));
  minutes.forEach((m, i) => {
    if (!m.workers) return;
    const parts = STATUSES.map((k) => [m.workers[k], "st-fill-" + k]);
    const tip = clock(m.at) + ": " + STATUSES.filter((k) => m.workers[k]).map((k) => m.workers[k] + " " + k).join(", ");
    column(svg, i, n, parts, hi, tip || clock(m.at) + ": no workers");
  });
  return svg;
}

function box(title, summary, svg) {
  const b = el("figure", undefined, "trend-box");
  const cap = el("figcaption");
  cap.append(el("span", title), el("span", summary, "trend-sum"));
  b.append(cap, svg);
  return b;
}

async function draw() {
  let h;
  try {
    h = await get("/api/history");
  } catch (e) {
    $("trend").replaceChildren(el("p", "history: " + e.message, "error"));
    return;
  }
  const m = h.minutes;
  const sum = (k) => m.reduce((s, x) => s + x[k], 0);
  const now = m[m.length - 1];
  const deepest = Math.max(0, ...m.map((x) => x.queued ?? 0));
  const tasks = sum("succeeded") + " succeeded, " + sum("failed") + " failed; queue " + (now.queued ?? 0) + " (max " + deepest + ")";
  const workers = now.workers
    ? STATUSES.filter((k) => now.workers[k]).map((k) => now.workers[k] + " " + k).join(", ") || "none"
    : "–";
  $("trend").replaceChildren(
    box("Tasks, last hour", tasks, tasksChart(m)),
    box("Workers", workers, workersChart(m)),
  );
}

export function start() {
  draw();
  setInterval(draw, 5000);
}
