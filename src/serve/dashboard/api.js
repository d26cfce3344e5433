// The REST API: reads, and changes sent with the API token the operator
// typed, kept in this tab's sessionStorage only.
const KEY = "muster.token";

export const token = {
  get: () => sessionStorage.getItem(KEY) || "",
  set: (value) => sessionStorage.setItem(KEY, value.trim()),
};

export async function get(path) {
  const r = await fetch(path, { headers: { Accept: "application/json" } });
  if (!r.ok) throw new Error(path + ": " + r.status + (await reason(r)));
  return r.json();
}

export async function change(method, path, body) {
  const headers = { "Content-Type": "application/json" };
  if (token.get()) headers.Authorization = "Bearer " + token.get();
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
