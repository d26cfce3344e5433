#!/usr/bin/env python3
"""Schedules and due tasks at scale, against a running musterd (bench/periodic.sh
starts one). Two measures, printed as JSON lines:

  schedules N   N schedules on "* * * * *": at the next minute all tick at
                once; each tick's task's created_at minus its tick, p50/p99/max
                (when the scheduler's turn began), and from the tick to all N
                tasks counted in /health (when the last was kept).
  due N         N tasks submitted with one run_at a few seconds ahead, no
                workers: from that instant to all N queued (polling /health).

Keep-alive HTTP from 8 threads; nothing here is asserted, only measured.
"""
import http.client
import json
import sys
import threading
import time
import urllib.parse

ADDR = sys.argv[1]
MODE = sys.argv[2]
N = int(sys.argv[3])
host, port = ADDR.split(":")


def conn():
    return http.client.HTTPConnection(host, int(port), timeout=60)


def post_many(path, bodies, threads=8):
    errors = []

    def run(part):
        c = conn()
        for b in part:
            data = json.dumps(b)
            c.request("POST", path, data, {"Content-Type": "application/json"})
            r = c.getresponse()
            r.read()
            if r.status not in (200, 201):
                errors.append(r.status)

    parts = [bodies[i::threads] for i in range(threads)]
    ts = [threading.Thread(target=run, args=(p,)) for p in parts]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    return errors


def get(path):
    c = conn()
    c.request("GET", path)
    r = c.getresponse()
    return json.loads(r.read())


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(len(xs) * p))] if xs else None


if MODE == "schedules":
    bodies = [
        {"name": f"s{i}", "cron": "* * * * *", "overlap": "allow",
         "task": {"type": "tick", "payload": {"n": i}}}
        for i in range(N)
    ]
    t0 = time.time()
    errors = post_many("/api/schedules", bodies)
    made = time.time() - t0
    # The next minute boundary, and a few seconds for the tasks to land.
    now = time.time()
    boundary = (int(now) // 60 + 1) * 60
    if boundary - now < 5:
        boundary += 60
    # From the tick to all of its tasks kept, as /health counts them.
    time.sleep(max(0, boundary - time.time() - 0.5))
    while True:
        if get("/health")["tasks"]["submitted"] >= N:
            all_in = time.time() * 1000 - boundary * 1000
            break
        time.sleep(0.005)
    time.sleep(2)
    late, after = [], None
    while True:
        q = "/api/tasks?type=tick&limit=1000" + (f"&after={after}" if after else "")
        page = get(q)
        for t in page["tasks"]:
            if t.get("schedule") and t["schedule"]["tick"] == boundary * 1000:
                late.append(t["created_at"] - t["schedule"]["tick"])
        after = page["next_after"]
        if not after:
            break
    print(json.dumps({
        "mode": "schedules", "schedules": N, "made_s": round(made, 2), "errors": len(errors),
        "fired": len(late), "late_p50_ms": pct(late, 0.5), "late_p99_ms": pct(late, 0.99),
        "late_max_ms": max(late) if late else None, "all_kept_after_ms": round(all_in, 1),
    }))
elif MODE == "due":
    ahead = max(10, N // 1500)  # seconds: enough to submit them all first
    at = (int(time.time()) + ahead) * 1000
    run_at = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(at / 1000))
    t0 = time.time()
    errors = post_many("/api/tasks", [{"type": "later", "run_at": run_at} for _ in range(N)])
    submitted = time.time() - t0
    if time.time() * 1000 >= at:
        print(json.dumps({"mode": "due", "error": "submissions outlasted the lead"}))
        sys.exit(1)
    while True:
        h = get("/health")["tasks"]
        if h["queued"] >= N - len(errors):
            done = time.time() * 1000
            break
        time.sleep(0.005)
    print(json.dumps({
        "mode": "due", "tasks": N, "errors": len(errors), "submitted_s": round(submitted, 1),
        "all_queued_after_ms": round(done - at, 1),
    }))
else:
    sys.exit(f"unknown mode {MODE}")
