// musterd's dashboard, native ES modules with no build step: the fleet
// live from /ws/telemetry as a table (table.js) and as a grid of one cell
// per worker (grid.js), a worker's panel (panel.js), the header, tasks and
// pool views (views.js), the header's chart of the last hour (chart.js),
// streams that reconnect by themselves (stream.js).
// Nothing comes from the network but this daemon, and text goes in with
// textContent only.
import { $, mark } from "./dom.js";
import { token, whoami } from "./api.js";
import { follow } from "./stream.js";
import * as table from "./table.js";
import * as grid from "./grid.js";
import * as panel from "./panel.js";
import * as views from "./views.js";
import * as chart from "./chart.js";

function banner(text, live) {
  const c = $("conn");
  c.textContent = text;
  c.classList.toggle("down", !live);
}

function pick(id, how) {
  if (how === "open" || panel.isOpen()) panel.show(id);
  table.select(id);
}

function close() {
  panel.hide();
  table.select(null);
  table.focus();
}

table.init(pick);
grid.init(pick);
views.init();
// Show only what the token's role allows, and say which role that is.
async function role() {
  const a = await whoami();
  for (const r of ["submit", "operate", "admin"]) document.body.classList.toggle("may-" + r, a.roles.includes(r));
  $("role").textContent = a.error ? "token: " + a.error : a.role ? "role: " + a.role + " (" + a.name + ")" : "read only";
  views.refreshActions();
}
$("token").value = token.get();
$("token").onchange = (e) => {
  token.set(e.target.value);
  role();
};
role();
$("close").onclick = close;
document.onkeydown = (e) => {
  if (e.key === "Escape" && panel.isOpen()) close();
  else if (e.key === "/" && document.activeElement.tagName !== "INPUT") {
    e.preventDefault();
    table.focusSearch();
  }
};
follow("/ws/telemetry", {
  // One stream feeds both views of the fleet.
  message(m) {
    table.apply(m);
    grid.apply(m);
  },
  up() {
    mark("muster-ws-open");
    banner("live", true);
  },
  down(wait) {
    banner("disconnected — reconnecting in " + Math.round(wait / 1000) + " s; what is shown is stale", false);
  },
});
views.startHeader();
chart.start();
setInterval(panel.refresh, 5000);
