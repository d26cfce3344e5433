// The fleet's table, fed by /ws/telemetry: every worker is kept, the rows
// drawn are only those in view (a virtual table of fixed-height rows), and
// filters and sorting rebuild the order at most every 250 ms.
import { $, el, pairs, fixed, ago, job, mark } from "./dom.js";
import { throttle } from "./stream.js";
import { STATUSES } from "./statuses.js";

const ROW = 28;
const COLUMNS = [
  ["worker_id", "ID", (w) => w.worker_id],
  ["node", "Node", (w) => w.node],
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
let chosen = null;
let firstRows = false;
const schedule = throttle(render, 250);

// `pick(id, how)` is told when a row is opened ("open": a click or Enter)
// or the selection moves ("move": the arrow keys).
export function init(pick) {
  const status = $("status");
  for (const s of STATUSES) status.append(el("option", s));
  head();
  for (const id of ["search", "status", "label"]) $(id).oninput = schedule;
  $("filters").onsubmit = (e) => e.preventDefault();
  $("scroll").onscroll = draw;
  $("rows").onclick = (e) => {
    const r = e.target.closest(".row");
    if (r) pick(r.dataset.id, "open");
  };
  $("scroll").onkeydown = (e) => {
    if (e.key === "ArrowDown" || e.key === "ArrowUp") {
      e.preventDefault();
      const id = move(e.key === "ArrowDown" ? 1 : -1);
      if (id) pick(id, "move");
    } else if (e.key === "Enter" && chosen) pick(chosen, "open");
  };
  // The ages tick.
  setInterval(draw, 1000);
  schedule();
}

// A /ws/telemetry message: a snapshot replaces the fleet and is drawn at
// once; updates and removals share a rebuild.
export function apply(m) {
  if (m.type === "snapshot") {
    mark("muster-snapshot");
    workers.clear();
  }
  for (const [id, w] of Object.entries(m.workers || {})) {
    workers.set(id, w);
    // In cluster mode every worker names its node: the column shows.
    if (w.node) document.body.classList.add("cluster");
  }
  for (const id of m.worker_ids || []) workers.delete(id);
  if (m.type === "snapshot") schedule.now();
  else schedule();
}

export function select(id) {
  chosen = id;
  schedule();
}

export function focus() {
  $("scroll").focus();
}

export function focusSearch() {
  $("search").focus();
}

// The label filter is the API's: `key:value`, or `key` for any value.
function matches(w, q, st, label) {
  if (q && !w.worker_id.toLowerCase().includes(q)) return false;
  if (st === "active" ? !w.is_active : st && w.status !== st) return false;
  if (label) {
    const at = label.indexOf(":");
    const key = (at < 0 ? label : label.slice(0, at)).trim();
    const have = (w.labels || {})[key];
    if (have === undefined || (at >= 0 && have !== label.slice(at + 1).trim())) return false;
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
    const x = get(a);
    const y = get(b);
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
    const r = el("div", undefined, "row" + (w.worker_id === chosen ? " sel" : ""));
    r.setAttribute("role", "row");
    r.setAttribute("aria-rowindex", String(i + 2));
    r.dataset.id = w.worker_id;
    r.append(
      cell(w.worker_id),
      cell(w.node || "–", "node"),
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
  h.replaceChildren(
    ...COLUMNS.map(([key, name]) => {
      const c = el("div", undefined, key === "node" ? "node" : undefined);
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
      return c;
    }),
  );
}

function totals() {
  const by = {};
  let active = 0;
  for (const w of workers.values()) {
    by[w.status] = (by[w.status] || 0) + 1;
    if (w.is_active) active++;
  }
  const list = [["workers", workers.size], ["active", active], ["inactive", workers.size - active]];
  for (const s of STATUSES) if (by[s] && s !== "inactive") list.push([s, by[s]]);
  pairs($("totals"), list);
}

// Move the selection by `by` rows, scrolling it into view; the id chosen.
function move(by) {
  let i = order.findIndex((w) => w.worker_id === chosen);
  i = Math.max(0, Math.min(order.length - 1, (i < 0 ? -1 : i) + by));
  if (!order[i]) return null;
  chosen = order[i].worker_id;
  const scroll = $("scroll");
  if (i * ROW < scroll.scrollTop) scroll.scrollTop = i * ROW;
  if ((i + 1) * ROW > scroll.scrollTop + scroll.clientHeight) scroll.scrollTop = (i + 1) * ROW - scroll.clientHeight;
  schedule();
  return chosen;
}

function render() {
  rebuild();
  draw();
  if (!firstRows && order.length) {
    firstRows = true;
    mark("muster-rows");
  }
}
