// What every part of the page shares: elements by id, elements built with
// text only (never markup), number and age formatting, and measurement
// marks that exist only when the page is opened with ?trace.
export const $ = (id) => document.getElementById(id);

export function el(tag, text, cls) {
  const e = document.createElement(tag);
  if (text !== undefined) e.textContent = text;
  if (cls) e.className = cls;
  return e;
}

// A <dl> of [name, value, class] rows; a missing value shows as a dash.
export function pairs(dl, list) {
  dl.replaceChildren(
    ...list.map(([k, v, cls]) => {
      const d = el("div", undefined, cls);
      d.append(el("dt", k), el("dd", v === undefined || v === null ? "–" : String(v)));
      return d;
    }),
  );
}

export function fixed(x, digits) {
  return typeof x === "number" ? x.toFixed(digits) : "–";
}

export function ago(ms) {
  if (!ms) return "–";
  const s = Math.max(0, Math.round((Date.now() - ms) / 1000));
  if (s < 60) return s + " s ago";
  if (s < 3600) return Math.floor(s / 60) + " min ago";
  if (s < 86400) return Math.floor(s / 3600) + " h ago";
  return Math.floor(s / 86400) + " d ago";
}

// A worker's current job as one word: its id, else its type.
export function job(w) {
  const j = w.current_job;
  return j ? j.id || j.type || "" : "";
}

// ?trace turns on performance marks for bench/dashboard.sh; without it the
// page measures nothing and leaves no globals.
const TRACE = new URLSearchParams(location.search).has("trace");
export function mark(name) {
  if (TRACE) performance.mark(name);
}
