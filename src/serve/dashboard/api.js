// The REST API: reads, and changes sent with the API token the operator
// typed, kept in this tab's sessionStorage only.
const KEY = "muster.token";

export const token = {
  get: () => sessionStorage.getItem(KEY) || "",
  set: (value) => sessionStorage.setItem(KEY, value.trim()),
};

// What the daemon says this token may do (GET /api/access): its name, its
// role, and every role it holds ("operate" holds "submit" and "read").
export const access = { name: "", role: null, roles: [] };

export function may(role) {
  return access.roles.includes(role);
}

// Ask the daemon who the token is; the page's actions follow (app.js).
export async function whoami() {
  Object.assign(access, { name: "", role: null, roles: [], error: null });
  try {
    Object.assign(access, await get("/api/access"));
  } catch (e) {
    access.error = e.message;
  }
  return access;
}

function auth(headers) {
  if (token.get()) headers.Authorization = "Bearer " + token.get();
  return headers;
}

export async function get(path) {
  const r = await fetch(path, { headers: auth({ Accept: "application/json" }) });
  if (!r.ok) throw new Error(path + ": " + r.status + (await reason(r)));
  return r.json();
}

export async function change(method, path, body) {
  const headers = auth({ "Content-Type": "application/json" });
  const r = await fetch(path, { method, headers, body: body && JSON.stringify(body) });
  if (!r.ok) {
    throw new Error(r.status + (await reason(r)) + (r.status === 401 ? " (set the API token above)" : ""));
  }
  const text = await r.text();
  return text ? JSON.parse(text) : null;
}

// The daemon's error body is {"error", "message"}; anything else is shown
// by its status alone.
async function reason(r) {
  try {
    const m = (await r.json()).message;
    return m ? " " + m : "";
  } catch (e) {
    return "";
  }
}
