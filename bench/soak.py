#!/usr/bin/env python3
"""The soak's load and its readings (bench/soak.sh starts the daemon and
the agents): everything moving at once for DURATION seconds.

- 1,000 steady workers, each beating every second over UDP with a heartbeat
  shaped like a real one (resource_usage, current_job, labels);
- 20 new worker ids a second, each beating once, ids that embed a time and
  a counter as real workers' do (`w_<ms>_<n>`), forgotten after
  forget_after;
- WebSocket clients connecting to /ws/telemetry and
  /ws/workers/telemetry, reading for a few seconds and leaving;
- tasks submitted over HTTP and run by `muster agent --tasks` processes,
  kept task_retention after they finish.

Every SAMPLE seconds it reads musterd's RSS, threads and descriptors from
/proc, with malloc's own count (muster_heap_in_use_bytes) as last scraped
from /metrics by a thread of its own (with a large fleet that page is slow).
At the end it prints the median of each 5-minute window and the growth per
hour after WARMUP seconds (a least-squares line through the windows), and
writes every sample to OUT as CSV.
"""

import argparse
import base64
import json
import os
import re
import socket
import statistics
import threading
import time
import urllib.request


def frame(worker, seq, now_ms):
    return json.dumps({
        "type": "heartbeat", "worker_id": worker, "seq": seq,
        "status": "working" if seq % 3 else "idle",
        "cpu_usage": 12.5 + seq % 50, "memory_usage": 30.2,
        "queue_depth": seq % 7,
        "resource_usage": {"rss_mb": 120.5, "heap_used_mb": 80.25,
                           "heap_total_mb": 96.0, "external_mb": 2.5},
        "current_job": {"id": "job-%d" % (seq // 10), "type": "scan",
                        "files": 3, "started_at": now_ms - 5000},
        "labels": {"pool": "scan", "zone": "eu-1"},
    }, separators=(",", ":")).encode()


class Load:
    def __init__(self, a):
        self.a = a
        self.stop = threading.Event()
        self.hb = (a.heartbeat.split(":")[0], int(a.heartbeat.split(":")[1]))
        self.http = a.http
        self.counts = {"beats": 0, "new_ids": 0, "ws": 0, "ws_failed": 0,
                       "tasks": 0, "tasks_refused": 0}

    def steady(self):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        seq = 0
        n = self.a.workers
        while not self.stop.is_set():
            start = time.time()
            seq += 1
            now_ms = int(start * 1000)
            for i in range(n):
                s.sendto(frame("steady-%04d" % i, seq, now_ms), self.hb)
                if i % 50 == 49:
                    # Spread the round over its second.
                    target = start + (i + 1) / n * 0.9
                    d = target - time.time()
                    if d > 0:
                        time.sleep(d)
            self.counts["beats"] += n
            d = start + 1 - time.time()
            if d > 0:
                self.stop.wait(d)

    def churn(self):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        k = 0
        while not self.stop.is_set():
            start = time.time()
            for _ in range(self.a.new_ids):
                k += 1
                now_ms = int(time.time() * 1000)
                s.sendto(frame("w_%d_%d" % (now_ms, k), 1, now_ms), self.hb)
            self.counts["new_ids"] += self.a.new_ids
            d = start + 1 - time.time()
            if d > 0:
                self.stop.wait(d)

    def ws_client(self, path, hold):
        host, port = self.http.split(":")
        try:
            c = socket.create_connection((host, int(port)), timeout=10)
            key = base64.b64encode(os.urandom(16)).decode()
            c.sendall(("GET %s HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\n"
                       "Connection: Upgrade\r\nSec-WebSocket-Key: %s\r\n"
                       "Sec-WebSocket-Version: 13\r\n\r\n" % (path, self.http, key)).encode())
            head = c.recv(12)
            if not head.startswith(b"HTTP/1.1 101"):
                self.counts["ws_failed"] += 1
                c.close()
                return
            end = time.time() + hold
            c.settimeout(0.5)
            while time.time() < end and not self.stop.is_set():
                try:
                    if not c.recv(65536):
                        break
                except socket.timeout:
                    pass
            # A close frame (masked, code 1000), then the socket.
            mask = os.urandom(4)
            payload = bytes(b ^ mask[i % 4] for i, b in enumerate(b"\x03\xe8"))
            try:
                c.sendall(b"\x88\x82" + mask + payload)
            except OSError:
                pass
            c.close()
            self.counts["ws"] += 1
        except OSError:
            self.counts["ws_failed"] += 1

    def websockets(self):
        paths = ["/ws/telemetry", "/ws/workers/telemetry", "/ws/telemetry/" + self.a.ws_worker]
        i = 0
        while not self.stop.is_set():
            for _ in range(self.a.ws_per_second):
                i += 1
                threading.Thread(target=self.ws_client, args=(paths[i % len(paths)], self.a.ws_hold),
                                 daemon=True).start()
            self.stop.wait(1)

    def tasks(self):
        body = json.dumps({"type": "soak", "payload": {"n": 1}}).encode()
        while not self.stop.is_set():
            start = time.time()
            for _ in range(self.a.tasks_per_second):
                req = urllib.request.Request("http://%s/api/tasks" % self.http, data=body,
                                             headers={"Content-Type": "application/json"})
                try:
                    urllib.request.urlopen(req, timeout=10).read()
                    self.counts["tasks"] += 1
                except OSError:
                    self.counts["tasks_refused"] += 1
            d = start + 1 - time.time()
            if d > 0:
                self.stop.wait(d)


class Scrape:
    """musterd's own counts from /metrics, read on a thread of their own:
    with a large fleet the page is large and slow to come, and the RSS
    samples must not wait for it. Each sample takes the latest scrape."""

    def __init__(self, http, stop):
        self.http, self.stop = http, stop
        self.heap = self.workers = None
        threading.Thread(target=self.run, daemon=True).start()

    def run(self):
        while not self.stop.is_set():
            try:
                m = urllib.request.urlopen("http://%s/metrics" % self.http, timeout=60).read().decode()
                g = re.search(r"^muster_heap_in_use_bytes (\S+)", m, re.M)
                self.heap = int(float(g.group(1))) if g else None
                w = re.search(r'^muster_workers\{state="active"\} (\S+)', m, re.M)
                self.workers = int(float(w.group(1))) if w else None
            except OSError:
                self.heap = self.workers = None
            self.stop.wait(5)


def reading(pid, scrape):
    st = open("/proc/%d/status" % pid).read()
    rss = int(re.search(r"VmRSS:\s+(\d+)", st).group(1)) * 1024
    threads = int(re.search(r"Threads:\s+(\d+)", st).group(1))
    fds = len(os.listdir("/proc/%d/fd" % pid))
    return rss, scrape.heap, threads, fds, scrape.workers


def slope_per_hour(points):
    """Least squares through (seconds, value): value per hour."""
    if len(points) < 2:
        return float("nan")
    xs = [p[0] for p in points]
    ys = [p[1] for p in points]
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    den = sum((x - mx) ** 2 for x in xs)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / den * 3600 if den else float("nan")


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--pid", type=int)
    p.add_argument("--report", metavar="CSV", help="only summarise the samples of an earlier run")
    p.add_argument("--http", default="127.0.0.1:18080")
    p.add_argument("--heartbeat", default="127.0.0.1:18090")
    p.add_argument("--duration", type=float, default=3600)
    p.add_argument("--warmup", type=float, default=600)
    p.add_argument("--sample", type=float, default=10)
    p.add_argument("--window", type=float, default=300)
    p.add_argument("--workers", type=int, default=1000)
    p.add_argument("--ws-worker", default="steady-0001", help="the worker whose /ws/telemetry/ID clients follow")
    p.add_argument("--new-ids", type=int, default=20)
    p.add_argument("--ws-per-second", type=int, default=2)
    p.add_argument("--ws-hold", type=float, default=5)
    p.add_argument("--tasks-per-second", type=int, default=5)
    p.add_argument("--out", default="/tmp/muster-soak.csv")
    a = p.parse_args()
    if a.report:
        num = lambda v: float(v) if v else None
        with open(a.report) as f:
            next(f)
            report([tuple(num(v) for v in line.strip().split(",")) for line in f if line.strip()], a)
        return
    if a.pid is None:
        p.error("--pid is required (or --report CSV)")
    load = Load(a)
    for f in (load.steady, load.churn, load.websockets, load.tasks):
        threading.Thread(target=f, daemon=True).start()
    scrape = Scrape(a.http, load.stop)
    t0 = time.time()
    samples = []
    with open(a.out, "w") as out:
        out.write("seconds,rss_bytes,heap_in_use_bytes,threads,fds,active_workers\n")
        while time.time() - t0 < a.duration:
            time.sleep(a.sample)
            r = reading(a.pid, scrape)
            at = time.time() - t0
            samples.append((at,) + r)
            out.write("%.0f,%s\n" % (at, ",".join("" if v is None else str(v) for v in r)))
            out.flush()
    load.stop.set()
    print("soak: %.0f s, samples every %.0f s; load: %s" % (a.duration, a.sample, load.counts))
    report(samples, a)


def report(samples, a):
    """The median of each window, and the growth per hour after the
    warm-up (a line through the windows' medians). A window holding fewer
    than half the samples it should (the last, cut by the end of the run)
    is left out: one sample is not a median."""
    windows = {}
    for s in samples:
        windows.setdefault(int(s[0] // a.window), []).append(s)
    print("window  from_s  rss_MB  heap_MB  threads  fds")
    rows = []
    for w in sorted(windows):
        ss = windows[w]
        if len(ss) < a.window / a.sample / 2:
            continue
        med = lambda i: statistics.median(x[i] for x in ss if x[i] is not None) if any(x[i] is not None for x in ss) else float("nan")
        row = (w, w * a.window, med(1) / 1e6, med(2) / 1e6, med(3), med(4))
        rows.append(row)
        print("%6d  %6.0f  %6.1f  %7.2f  %7.0f  %4.0f" % row)
    after = [r for r in rows if r[1] >= a.warmup]
    mid = lambda r: r[1] + a.window / 2
    print("growth after %.0f s: rss %+.2f MB/h, heap in use %+.2f MB/h, threads %+.1f/h, fds %+.1f/h" % (
        a.warmup,
        slope_per_hour([(mid(r), r[2]) for r in after]),
        slope_per_hour([(mid(r), r[3]) for r in after]),
        slope_per_hour([(mid(r), r[4]) for r in after]),
        slope_per_hour([(mid(r), r[5]) for r in after])))

if __name__ == "__main__":
    main()
