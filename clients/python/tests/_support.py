"""What the tests share: the library on the path, and a fake musterd that
speaks the heartbeat protocol over TCP in this process."""

from __future__ import annotations

import json
import os
import socket
import sys
import threading
import time
from typing import Any, Callable, Dict, List, Optional, Tuple

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

import muster  # noqa: E402

Frame = Dict[str, Any]


def dead_address() -> str:
    """A loopback address nobody listens on."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return f"127.0.0.1:{port}"


class Conn:
    """One connection a worker made to the fake daemon."""

    def __init__(self, daemon: "FakeDaemon", sock: socket.socket, index: int) -> None:
        self.daemon = daemon
        self.sock = sock
        self.index = index
        self.hello: Optional[Frame] = None
        self.closed = False
        self.raw_sizes: List[int] = []

    def send(self, frame: Frame) -> None:
        try:
            self.sock.sendall(json.dumps(frame).encode() + b"\n")
        except OSError:
            pass

    def close(self) -> None:
        self.closed = True
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()


class FakeDaemon:
    """Accepts workers on a loopback port, answers ``hello`` with
    ``welcome`` (or ``unauthorized`` for a wrong token) and records every
    frame. ``on_hello(conn, hello)`` may answer instead (return True when
    it did)."""

    def __init__(
        self,
        interval_ms: int = 100,
        token: Optional[str] = None,
        nodes: Optional[List[str]] = None,
        on_hello: Optional[Callable[[Conn, Frame], bool]] = None,
        welcome: bool = True,
    ) -> None:
        self.interval_ms = interval_ms
        self.token = token
        self.nodes = nodes
        self.on_hello = on_hello
        self.welcome = welcome
        self.listener = socket.socket()
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(16)
        self.port = self.listener.getsockname()[1]
        self.addr = f"127.0.0.1:{self.port}"
        self.conns: List[Conn] = []
        self.log: List[Tuple[int, Frame]] = []
        self.cond = threading.Condition()
        self.accepts = 0
        self._stop = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self._stop:
            try:
                s, _ = self.listener.accept()
            except OSError:
                return
            with self.cond:
                self.accepts += 1
                c = Conn(self, s, len(self.conns))
                self.conns.append(c)
                self.cond.notify_all()
            threading.Thread(target=self._serve, args=(c,), daemon=True).start()

    def _serve(self, c: Conn) -> None:
        buf = b""
        while True:
            try:
                data = c.sock.recv(65536)
            except OSError:
                data = b""
            if not data:
                break
            buf += data
            while b"\n" in buf:
                line, buf = buf.split(b"\n", 1)
                c.raw_sizes.append(len(line))
                frame = json.loads(line)
                with self.cond:
                    self.log.append((c.index, frame))
                    self.cond.notify_all()
                if frame.get("type") == "hello" and c.hello is None:
                    self._hello(c, frame)
                    with self.cond:
                        c.hello = frame
                        self.cond.notify_all()
        with self.cond:
            c.closed = True
            self.cond.notify_all()
        try:
            c.sock.close()
        except OSError:
            pass

    def _hello(self, c: Conn, hello: Frame) -> None:
        if self.token is not None and hello.get("token") != self.token:
            c.send({"type": "error", "code": "unauthorized", "message": "hello needs the heartbeat token"})
            c.close()
            return
        if self.on_hello is not None and self.on_hello(c, hello):
            return
        if self.welcome:
            c.send(self.welcome_frame(hello["worker_id"]))

    def welcome_frame(self, worker_id: str) -> Frame:
        w: Frame = {
            "type": "welcome",
            "version": 1,
            "worker_id": worker_id,
            "heartbeat_interval_ms": self.interval_ms,
            "inactivity_timeout_ms": self.interval_ms * 6,
        }
        if self.nodes:
            w["nodes"] = self.nodes
        return w

    # -- what the tests look at ----------------------------------------------

    def frames(self, kind: Optional[str] = None, conn: Optional[int] = None) -> List[Frame]:
        with self.cond:
            return [
                f
                for i, f in self.log
                if (kind is None or f.get("type") == kind) and (conn is None or i == conn)
            ]

    def wait_for(self, pred: Callable[[Frame], bool], timeout: float = 5.0, conn: Optional[int] = None) -> Frame:
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                for i, f in self.log:
                    if (conn is None or i == conn) and pred(f):
                        return f
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"no such frame within {timeout} s; got {[f for _, f in self.log][-20:]}")
                self.cond.wait(left)

    def wait_conn(self, n: int, timeout: float = 5.0) -> Conn:
        """The ``n``-th connection (0 first), once it said hello."""
        deadline = time.monotonic() + timeout
        with self.cond:
            while len(self.conns) <= n or self.conns[n].hello is None:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"no connection {n} within {timeout} s")
                self.cond.wait(left)
            return self.conns[n]

    def wait_closed(self, c: Conn, timeout: float = 5.0) -> None:
        deadline = time.monotonic() + timeout
        with self.cond:
            while not c.closed:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError("connection still open")
                self.cond.wait(left)

    def close(self) -> None:
        self._stop = True
        self.listener.close()
        for c in list(self.conns):
            if not c.closed:
                c.close()


def is_update(task_id: str, state: str) -> Callable[[Frame], bool]:
    return lambda f: f.get("type") == "task_update" and f.get("task_id") == task_id and f.get("state") == state


def task_frame(task_id: str, task_type: str, payload: Any = None, attempt: int = 1, **extra: Any) -> Frame:
    f: Frame = {"type": "task", "task_id": task_id, "task_type": task_type, "payload": payload, "attempt": attempt}
    f.update(extra)
    return f


def fast(worker: "muster.Worker") -> "muster.Worker":
    """Shorter waits, for tests."""
    worker._limbo = 0.2
    worker._release_grace = 0.5
    worker._min_session = 0.0
    worker._backoff.first = 0.05
    worker._backoff.maximum = 0.2
    worker._backoff.reset()
    return worker
