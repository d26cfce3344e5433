"""The HTTP producer client against a fake API in this process."""

from __future__ import annotations

import json
import threading
import time
import unittest
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Dict, List, Tuple

import _support  # noqa: F401

import muster


class FakeAPI(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), Handler)
        self.tasks: Dict[str, Dict[str, Any]] = {}
        self.keys: Dict[str, str] = {}
        self.requests: List[Tuple[str, str, Dict[str, str], Any]] = []
        self.polls: Dict[str, int] = {}
        self.lock = threading.Lock()
        threading.Thread(target=self.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: FakeAPI

    def log_message(self, *args: Any) -> None:
        pass

    def answer(self, status: int, body: Any, headers: Dict[str, str] = {}) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for k, v in headers.items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)

    def body(self) -> Any:
        n = int(self.headers.get("Content-Length") or 0)
        return json.loads(self.rfile.read(n)) if n else None

    def record(self, body: Any = None) -> None:
        with self.server.lock:
            self.server.requests.append((self.command, self.path, dict(self.headers), body))

    def do_POST(self) -> None:
        body = self.body()
        self.record(body)
        s = self.server
        if self.path == "/api/tasks":
            key = self.headers.get("Idempotency-Key")
            with s.lock:
                if key and key in s.keys:
                    return self.answer(200, s.tasks[s.keys[key]], {"Idempotent-Replayed": "true"})
                tid = f"{len(s.tasks) + 1:016x}"
                task = dict(body, id=tid, state="queued", attempt=1)
                s.tasks[tid] = task
                if key:
                    s.keys[key] = tid
            return self.answer(201, task, {"Location": f"/api/tasks/{tid}"})
        self.answer(404, {"error": "not_found", "message": "no such route"})

    def do_GET(self) -> None:
        self.record()
        s = self.server
        parts = self.path.split("?")[0].split("/")
        if self.path.startswith("/api/tasks?"):
            return self.answer(200, {"tasks": list(s.tasks.values()), "next_after": None})
        if len(parts) == 4 and parts[3] in s.tasks:
            task = s.tasks[parts[3]]
            with s.lock:
                n = s.polls[parts[3]] = s.polls.get(parts[3], 0) + 1
                if task["type"] == "quick" and n >= 3:
                    task["state"] = "succeeded"
            return self.answer(200, task)
        self.answer(404, {"error": "not_found", "message": "no such task"})

    def do_DELETE(self) -> None:
        self.record()
        s = self.server
        tid = self.path.split("/")[-1]
        if tid not in s.tasks:
            return self.answer(404, {"error": "not_found", "message": "no such task"})
        s.tasks[tid]["state"] = "cancelled"
        self.answer(200, s.tasks[tid])


class ClientTests(unittest.TestCase):
    def setUp(self) -> None:
        self.api = FakeAPI()
        self.addCleanup(self.api.shutdown)
        self.addCleanup(self.api.server_close)

    def client(self, *args: Any, **kw: Any) -> muster.Client:
        c = muster.Client(*args, **kw)
        self.addCleanup(c.close)
        return c

    def test_submit_with_a_key_twice_gives_one_task(self) -> None:
        c = self.client(self.api.url)
        a = c.submit("echo", {"a": 1}, idempotency_key="k1", priority=5)
        b = c.submit("echo", {"a": 1}, idempotency_key="k1")
        self.assertEqual(a["id"], b["id"])
        self.assertEqual(len(self.api.tasks), 1)
        method, path, headers, body = self.api.requests[0]
        self.assertEqual((method, path), ("POST", "/api/tasks"))
        self.assertEqual(headers["Idempotency-Key"], "k1")
        self.assertEqual(headers["Content-Type"], "application/json")
        self.assertEqual(body, {"type": "echo", "payload": {"a": 1}, "priority": 5})
        c2 = c.submit("echo")
        self.assertNotEqual(c2["id"], a["id"])
        self.assertNotIn("payload", self.api.requests[-1][3])
        self.assertNotIn("Idempotency-Key", self.api.requests[-1][2])

    def test_show_wait_cancel(self) -> None:
        c = self.client(self.api.url)
        t = c.submit("quick")
        self.assertEqual(c.show(t["id"])["state"], "queued")
        done = c.wait(t["id"], timeout=5, interval=0.05)
        self.assertEqual(done["state"], "succeeded")
        slow = c.submit("slow")
        with self.assertRaises(TimeoutError):
            c.wait(slow["id"], timeout=0.3, interval=0.05)
        self.assertEqual(c.cancel(slow["id"])["state"], "cancelled")
        self.assertEqual(c.wait(slow["id"], timeout=1)["state"], "cancelled")
        self.assertEqual(len(c.tasks(state="queued,cancelled")), 2)

    def test_errors(self) -> None:
        c = self.client(self.api.url)
        with self.assertRaises(muster.NotFound) as cm:
            c.show("nope")
        self.assertEqual((cm.exception.status, cm.exception.code), (404, "not_found"))
        self.assertIsInstance(cm.exception, muster.APIError)
        with self.assertRaises(muster.NotFound):
            c.cancel("nope")

    def test_the_token_goes_with_changes_only(self) -> None:
        c = self.client(self.api.url, token="t0k")
        t = c.submit("echo")
        c.show(t["id"])
        c.cancel(t["id"])
        auth = [(m, h.get("Authorization")) for m, _, h, _ in self.api.requests]
        self.assertEqual(auth, [("POST", "Bearer t0k"), ("GET", None), ("DELETE", "Bearer t0k")])

    def test_a_kept_alive_connection_is_reused(self) -> None:
        c = self.client(self.api.url)
        t = c.submit("echo")
        conn = c._conn
        c.show(t["id"])
        self.assertIs(c._conn, conn)

    def test_the_url_comes_from_the_environment(self) -> None:
        from unittest import mock

        with mock.patch.dict("os.environ", {"MUSTER_URL": self.api.url}):
            c = self.client()
        self.assertEqual(c.url, self.api.url)
        self.assertEqual(muster.Client("127.0.0.1:9").url, "http://127.0.0.1:9")
        with self.assertRaises(ValueError):
            muster.Client("ftp://x")

    def test_a_daemon_that_is_not_there(self) -> None:
        import socket

        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        s.close()
        c = self.client(f"http://127.0.0.1:{port}", timeout=1)
        t0 = time.monotonic()
        with self.assertRaises(OSError):
            c.show("x")
        self.assertLess(time.monotonic() - t0, 2)


if __name__ == "__main__":
    unittest.main()
