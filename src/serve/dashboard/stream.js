// A WebSocket stream from this daemon that comes back by itself: on close
// it reconnects after 0.5 s, doubling to 10 s, and starts over from the
// snapshot the daemon sends on connect.
//
// follow(path, { message(m), up(), down(waitMs) }) returns { stop() }.
// A message the page cannot read is an error on the console, not a silence.
export function follow(path, on) {
  let backoff = 500;
  let ws = null;
  let timer = null;
  let stopped = false;
  const base = (location.protocol === "https:" ? "wss://" : "ws://") + location.host + path;
  const open = () => {
    // A browser cannot set Authorization on a WebSocket: the token, when
    // the operator gave one, goes as access_token (RFC 6750 §2.3).
    const t = sessionStorage.getItem("muster.token");
    const url = t ? base + (base.includes("?") ? "&" : "?") + "access_token=" + encodeURIComponent(t) : base;
    ws = new WebSocket(url);
    ws.onopen = () => {
      backoff = 500;
      if (on.up) on.up();
    };
    ws.onmessage = (e) => {
      let m;
      try {
        m = JSON.parse(e.data);
      } catch (err) {
        console.error(path + ": a message that is not JSON: " + err.message);
        return;
      }
      on.message(m);
    };
    ws.onclose = () => {
      if (stopped) return;
      const wait = backoff;
      backoff = Math.min(backoff * 2, 10000);
      if (on.down) on.down(wait);
      timer = setTimeout(open, wait);
    };
  };
  open();
  return {
    stop() {
      stopped = true;
      clearTimeout(timer);
      if (ws) ws.close();
    },
  };
}

// Run fn at once for the first call, then at most every `every` ms: 10,000
// workers beating do not redraw the page 10,000 times a second.
export function throttle(fn, every) {
  let pending = false;
  let last = -1e9;
  const run = () => {
    pending = false;
    last = performance.now();
    fn();
  };
  const later = () => {
    if (pending) return;
    pending = true;
    setTimeout(run, Math.max(0, every - (performance.now() - last)));
  };
  later.now = run;
  return later;
}
