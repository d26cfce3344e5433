// The fleet at a glance: a <canvas> of one cell per worker in the table's
// status colours, grouped by a label key, each group headed by its counts.
// Fed the table's /ws/telemetry messages by app.js; no DOM node per worker,
// but a Map of slots and typed arrays. A status change repaints one cell
// and one header; a membership change regroups; at most once a frame, and
// only when something changed. Keyboard access stays with the table.
import { $, el } from "./dom.js";
import { throttle } from "./stream.js";
import { STATUSES } from "./statuses.js";

const S = STATUSES.length;
const INDEX = new Map(STATUSES.map((s, i) => [s, i]));
// Not there (silent, or gone): drawn hollow when cells are big enough.
const HOLLOW = STATUSES.map((s) => s === "inactive" || s === "terminated");
// Past this many values the smallest groups share one, or headers would
// outgrow the cells.
const MAX_GROUPS = 64;
const NONE = Object.freeze({});
const byName = new Intl.Collator(undefined, { numeric: true }).compare;

// Per worker: its slot by id; by slot, its id, labels, node, value under
// the grouping (so that a regroup reads no labels) and status.
const slots = new Map();
let ids = [];
let labels = [];
let nodes = [];
let value = [];
let status = new Uint8Array(1024);
let group = new Uint8Array(1024);
let place = new Int32Array(1024);
let flagged = new Uint8Array(1024);
// Freed slots are reused only after a regroup has dropped them from `sorted`.
let free = [];
let freed = [];
// Live slots by id, and the slots added since the last regroup.
let sorted = [];
let added = [];

// The grouping ("" none, "node", "label:KEY") and the label keys seen.
let by = { kind: "none", key: "" };
const keyCount = new Map();
let keysChanged = true;
let cluster = false;

// What a regroup makes: the groups, every slot's place in `order`, the
// counts by group and status; and the fleet's totals.
let groups = [];
let order = new Int32Array(0);
let counts = new Int32Array(0);
const totals = new Int32Array(S);
let regroups = 0;

// What the next frame has to do.
let frame = 0;
let needRegroup = true;
let needGeometry = true;
let full = true;
let dirty = [];
let dirtyHeads = new Set();

let canvas, ctx, box;
let geo = { dpr: 0, pitch: 0, size: 0, pad: 0, head: 0, cols: 1 };
let colours = [];
let ink = "#000";
let pick = () => {};
let hovered = -1;
const describeSoon = throttle(describe, 250);

// `choose(id, how)` is told when a cell is clicked, as the table does.
export function init(choose) {
  pick = choose;
  canvas = $("fleet-map");
  ctx = canvas.getContext("2d");
  box = $("fleet-box");
  $("fleet-by").onchange = (e) => regroupBy(e.target.value);
  $("fleet-toggle").onclick = toggle;
  canvas.onmousemove = hover;
  canvas.onmouseleave = () => hover(null);
  canvas.onclick = (e) => {
    const s = hit(e);
    if (s >= 0) pick(ids[s], "open");
  };
  new ResizeObserver(resized).observe(box);
  addEventListener("resize", resized);
  matchMedia("(prefers-color-scheme: dark)").addEventListener("change", relayout);
  want();
}

// A /ws/telemetry message: a snapshot replaces the fleet, updates and
// removals change it.
export function apply(m) {
  if (m.type === "snapshot") reset();
  const ws = m.workers || {};
  for (const id in ws) put(id, ws[id]);
  for (const id of m.worker_ids || []) drop(id);
  // Beats that change neither a status nor a group cost no frame.
  if (needRegroup || dirty.length || keysChanged) want();
}

function want() {
  if (!frame) frame = requestAnimationFrame(paint);
}

function reset() {
  slots.clear();
  ids = [];
  labels = [];
  nodes = [];
  value = [];
  free = [];
  freed = [];
  sorted = [];
  added = [];
  totals.fill(0);
  keyCount.clear();
  keysChanged = needRegroup = true;
}

function put(id, w) {
  const st = INDEX.get(w.status) ?? 0;
  const lab = w.labels || NONE;
  const node = w.node || "";
  if (node && !cluster) cluster = keysChanged = true;
  const s = slots.get(id) ?? claim(id, st);
  relabel(labels[s], lab);
  labels[s] = lab;
  nodes[s] = node;
  const v = valueOf(s);
  if (v !== value[s]) {
    value[s] = v;
    needRegroup = true;
  }
  if (status[s] === st) return;
  totals[status[s]]--;
  totals[st]++;
  if (!needRegroup) {
    const g = group[s];
    counts[g * S + status[s]]--;
    counts[g * S + st]++;
    dirtyHeads.add(g);
    if (!flagged[s]) {
      flagged[s] = 1;
      dirty.push(s);
    }
  }
  status[s] = st;
}

function drop(id) {
  const s = slots.get(id);
  if (s === undefined) return;
  slots.delete(id);
  totals[status[s]]--;
  relabel(labels[s], NONE);
  ids[s] = labels[s] = nodes[s] = value[s] = null;
  freed.push(s);
  needRegroup = true;
}

function claim(id, st) {
  const s = free.length ? free.pop() : ids.length;
  if (s >= status.length) grow(2 * s);
  ids[s] = id;
  labels[s] = NONE;
  nodes[s] = "";
  value[s] = valueOf(s);
  status[s] = st;
  totals[st]++;
  slots.set(id, s);
  added.push(s);
  needRegroup = true;
  return s;
}

function grow(n) {
  const more = (a) => {
    const b = new a.constructor(n);
    b.set(a);
    return b;
  };
  [status, group, place, flagged] = [status, group, place, flagged].map(more);
}

// Count the label keys in use, for the grouping's <select>.
function relabel(old, now) {
  if (old === now) return;
  for (const k in old) if (!Object.hasOwn(now, k)) count(k, -1);
  for (const k in now) if (!Object.hasOwn(old, k)) count(k, 1);
}

function count(k, d) {
  const n = (keyCount.get(k) || 0) + d;
  if (n > 0) keyCount.set(k, n);
  else keyCount.delete(k);
  if (n === 0 || n === d) keysChanged = true;
}

// A worker's group under the grouping; undefined when it has no value.
function valueOf(s) {
  if (by.kind === "none") return "";
  if (by.kind === "node") return nodes[s] || undefined;
  return Object.hasOwn(labels[s], by.key) ? labels[s][by.key] : undefined;
}

function title(v) {
  if (by.kind === "none") return "all workers";
  if (v === undefined) return "(no " + (by.kind === "node" ? "node" : by.key) + ")";
  return v;
}

function regroupBy(choice) {
  by = choice === "node" ? { kind: "node", key: "" }
    : choice.startsWith("label:") ? { kind: "label", key: choice.slice(6) } : { kind: "none", key: "" };
  for (const s of slots.values()) value[s] = valueOf(s);
  needRegroup = true;
  want();
}

// Fold the newcomers into the id order, sorted then merged (never a sort
// of the fleet), dropping freed slots: O(n + k log k).
function resort() {
  if (!added.length && !freed.length) return;
  const fresh = added.filter((s) => ids[s] !== null).sort((a, b) => (ids[a] < ids[b] ? -1 : 1));
  const out = [];
  let j = 0;
  for (const s of sorted) {
    if (ids[s] === null) continue;
    while (j < fresh.length && ids[fresh[j]] < ids[s]) out.push(fresh[j++]);
    out.push(s);
  }
  sorted = out.concat(fresh.slice(j));
  added = [];
  free = free.concat(freed);
  freed = [];
}

// Groups by name, the unnamed last; within a group, workers by id, so a
// cell stays put while only statuses change. O(n): a Map lookup each.
function regroup() {
  resort();
  const n = sorted.length;
  const seen = new Map();
  const values = [];
  const sizes = [];
  const kind = new Int32Array(n);
  for (let i = 0; i < n; i++) {
    const v = value[sorted[i]];
    let k = seen.get(v);
    if (k === undefined) {
      k = values.push(v) - 1;
      seen.set(v, k);
      sizes.push(0);
    }
    sizes[k]++;
    kind[i] = k;
  }
  const kept = values.map((v, k) => k);
  let rest = [];
  if (kept.length > MAX_GROUPS) {
    kept.sort((a, b) => sizes[b] - sizes[a]);
    rest = kept.splice(MAX_GROUPS - 1);
  }
  const last = (v, w) => (v === undefined ? 1 : w === undefined ? -1 : byName(v, w));
  kept.sort((a, b) => last(values[a], values[b]));
  const into = new Int32Array(values.length).fill(kept.length);
  kept.forEach((k, g) => (into[k] = g));
  groups = kept.map((k) => ({ name: title(values[k]), size: sizes[k] }));
  if (rest.length) groups.push({ name: rest.length + " other values", size: rest.reduce((a, k) => a + sizes[k], 0) });
  const next = [];
  let at = 0;
  for (const g of groups) {
    g.start = at;
    next.push(at);
    at += g.size;
  }
  counts = new Int32Array(groups.length * S);
  order = new Int32Array(n);
  for (let i = 0; i < n; i++) {
    const s = sorted[i];
    const g = into[kind[i]];
    const p = next[g]++;
    group[s] = g;
    counts[g * S + status[s]]++;
    order[p] = s;
    place[s] = p;
  }
  regroups++;
  needRegroup = false;
  needGeometry = full = true;
}

// Cell size follows the fleet, from 10 px for a few hundred down to 2 px,
// so that it fits in about 45 % of the window (100,000 in 1280 × 800);
// past that the box scrolls. In device pixels, so cells stay crisp.
function geometry() {
  const dpr = devicePixelRatio || 1;
  const width = Math.max(1, Math.floor(box.clientWidth * dpr));
  const pad = Math.round(4 * dpr);
  const head = Math.round(18 * dpr);
  const after = Math.round(6 * dpr);
  const budget = Math.max(96, innerHeight * 0.45) * dpr - groups.length * (head + after);
  const area = (width - 2 * pad) * Math.max(budget, 48 * dpr);
  const fit = Math.floor(Math.sqrt(area / Math.max(1, order.length)));
  const pitch = Math.min(Math.round(10 * dpr), Math.max(Math.round(2 * dpr), fit));
  const size = pitch >= 5 ? pitch - Math.max(1, Math.round(dpr)) : pitch;
  const cols = Math.max(1, Math.floor((width - 2 * pad) / pitch));
  let y = pad;
  for (const g of groups) {
    g.head = y;
    g.top = y + head;
    y = g.top + Math.ceil(g.size / cols) * pitch + after;
  }
  geo = { dpr, pitch, size, pad, head, cols, css: box.clientWidth, vh: innerHeight };
  // Setting a canvas's size clears and reallocates it, even to the same.
  const height = Math.max(1, y);
  if (canvas.width !== width || canvas.height !== height) {
    canvas.width = width;
    canvas.height = height;
  }
  canvas.style.width = width / dpr + "px";
  canvas.style.height = height / dpr + "px";
  palette();
  needGeometry = false;
  full = true;
}

function palette() {
  const css = getComputedStyle(document.documentElement);
  colours = STATUSES.map((s) => css.getPropertyValue("--" + s).trim() || "#888");
  ink = css.getPropertyValue("--fg").trim() || "#000";
}

function paint() {
  frame = 0;
  if (needRegroup) regroup();
  if (!box.hidden) {
    if (needGeometry) geometry();
    if (full) drawAll();
    else drawDirty();
  }
  for (const s of dirty) flagged[s] = 0;
  dirty = [];
  dirtyHeads.clear();
  describeSoon();
}

// One pass per status, so the fill colour is set six times, not n times.
function drawAll() {
  const { pad, pitch, cols } = geo;
  ctx.clearRect(0, 0, canvas.width, canvas.height);
  for (let g = 0; g < groups.length; g++) header(g);
  for (let st = 0; st < S; st++) {
    ctx.fillStyle = colours[st];
    for (const g of groups) {
      for (let i = 0; i < g.size; i++) {
        if (status[order[g.start + i]] === st) cell(pad + (i % cols) * pitch, g.top + Math.floor(i / cols) * pitch, st);
      }
    }
  }
  full = false;
}

function drawDirty() {
  for (const g of dirtyHeads) header(g);
  for (const s of dirty) {
    const g = groups[group[s]];
    const i = place[s] - g.start;
    const x = geo.pad + (i % geo.cols) * geo.pitch;
    const y = g.top + Math.floor(i / geo.cols) * geo.pitch;
    ctx.clearRect(x, y, geo.size, geo.size);
    ctx.fillStyle = colours[status[s]];
    cell(x, y, status[s]);
  }
}

// A cell at (x, y) in device pixels, in the fill colour already set.
function cell(x, y, st) {
  const z = geo.size;
  if (!HOLLOW[st] || z < 6) return ctx.fillRect(x, y, z, z);
  const t = Math.floor(z / 4);
  ctx.fillRect(x, y, z, t);
  ctx.fillRect(x, y + z - t, z, t);
  ctx.fillRect(x, y + t, t, z - 2 * t);
  ctx.fillRect(x + z - t, y + t, t, z - 2 * t);
}

// "batch — 1,200: 1,150 working, 40 error, 10 inactive"
function header(g) {
  const { head, pad, dpr } = geo;
  const y = groups[g].head;
  ctx.clearRect(0, y, canvas.width, head);
  ctx.fillStyle = ink;
  ctx.font = Math.round(12 * dpr) + "px system-ui, sans-serif";
  ctx.textBaseline = "middle";
  ctx.fillText(groups[g].name + " — " + groups[g].size.toLocaleString() + ": " + tally(counts, g * S), pad, y + head / 2);
}

function tally(list, from) {
  const parts = [];
  for (let st = 0; st < S; st++) if (list[from + st]) parts.push(list[from + st].toLocaleString() + " " + STATUSES[st]);
  return parts.join(", ") || "none";
}

// The worker slot under a pointer event, or -1.
function hit(e) {
  if (needGeometry || needRegroup) return -1;
  const r = canvas.getBoundingClientRect();
  const x = (e.clientX - r.left) * geo.dpr - geo.pad;
  const y = (e.clientY - r.top) * geo.dpr;
  const col = Math.floor(x / geo.pitch);
  if (x < 0 || col >= geo.cols || x - col * geo.pitch >= geo.size) return -1;
  // Groups are few (at most MAX_GROUPS): a scan is enough.
  for (const g of groups) {
    if (y < g.top || y >= g.top + Math.ceil(g.size / geo.cols) * geo.pitch) continue;
    const i = Math.floor((y - g.top) / geo.pitch) * geo.cols + col;
    return i < g.size ? order[g.start + i] : -1;
  }
  return -1;
}

function hover(e) {
  const s = e ? hit(e) : -1;
  if (s === hovered) return;
  hovered = s;
  canvas.title = s < 0 ? "" : ids[s] + " (" + STATUSES[status[s]] + ")";
  canvas.classList.toggle("over", s >= 0);
}

// A new width, zoom or window height lays the grid out again; the box's
// new height, which the grid itself causes, does not.
function resized() {
  if (box.clientWidth !== geo.css || devicePixelRatio !== geo.dpr || innerHeight !== geo.vh) relayout();
}

function relayout() {
  needGeometry = true;
  want();
}

function toggle() {
  box.hidden = !box.hidden;
  $("fleet-toggle").setAttribute("aria-expanded", String(!box.hidden));
  relayout();
}

// The legend (the counts: the grid's meaning without colour), the choice
// of keys, and on the canvas a read-only summary for tests and tools: the
// layout in device pixels and every group's counts.
function describe() {
  const legend = [el("span", slots.size.toLocaleString() + " workers")];
  for (let st = 0; st < S; st++) {
    if (totals[st]) legend.push(el("span", STATUSES[st] + " " + totals[st].toLocaleString(), "st st-" + STATUSES[st]));
  }
  $("fleet-legend").replaceChildren(...legend);
  canvas.setAttribute("aria-label", "Every worker by status: " + tally(totals, 0));
  if (keysChanged) choices();
  const d = canvas.dataset;
  Object.assign(d, {
    cells: order.length, groups: groups.length, regroups, by: $("fleet-by").value,
    dpr: geo.dpr, pitch: geo.pitch, cell: geo.size, pad: geo.pad, cols: geo.cols,
  });
  d.summary = JSON.stringify(groups.map((g, i) => {
    const c = {};
    for (let st = 0; st < S; st++) if (counts[i * S + st]) c[STATUSES[st]] = counts[i * S + st];
    return { name: g.name, cells: g.size, top: g.top, counts: c };
  }));
}

// none, node (in cluster mode), then the label keys in use; the current
// choice stays offered after its last worker has gone.
function choices() {
  keysChanged = false;
  const select = $("fleet-by");
  const now = select.value;
  const values = [...keyCount.keys()].map((k) => "label:" + k);
  if (now.startsWith("label:") && !values.includes(now)) values.push(now);
  values.sort(byName);
  if (cluster) values.unshift("node");
  select.replaceChildren(...["", ...values].map((v) => {
    const o = el("option", v === "" ? "none" : v.replace(/^label:/, ""));
    o.value = v;
    return o;
  }));
  select.value = now;
}
