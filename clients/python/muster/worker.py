"""A muster worker: beats to musterd on a background thread and runs the
tasks it is handed on a pool of threads.

One thread (``muster-link``) owns the connection: it connects, says
``hello``, reads what the daemon says, writes what the worker has to say
and beats at the interval the ``welcome`` gave. Everything else (``set``,
``record_run``, the handlers' logs, progress and outcomes) only changes
state under one lock and wakes that thread, so no caller ever waits on
the network.
"""

from __future__ import annotations

import logging
import os
import queue
import re
import selectors
import socket
import ssl
import threading
import time
import traceback
from collections import deque
from typing import Any, Callable, Deque, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple, TypeVar, Union

from . import _proto as proto
from . import _tls
from ._backoff import Backoff
from .errors import (
    FatalError,
    FrameTooLarge,
    HelloRefused,
    MusterError,
    Superseded,
    TaskCancelled,
    TaskError,
    Unauthorized,
    WorkerMismatch,
)

log = logging.getLogger("muster")

__all__ = ["Worker", "Task"]

#: After a welcome, how long a task re-reported in ``hello`` waits for the
#: daemon's word about it (``cancel`` or ``lease``) before its held-back
#: reports go out.
LIMBO = 1.0
#: After a ``cancel`` that answers a re-report, how long the handler is
#: kept running in case the daemon hands the same task back (a restarted
#: single node requeues it and offers it again): the run goes on instead
#: of starting over.
RELEASE_GRACE = 3.0
#: A connection that ends sooner than this after its welcome counts as a
#: failed attempt, so that a daemon that welcomes and closes at once is
#: not reconnected to in a hot loop.
MIN_SESSION = 2.0
CONNECT_TIMEOUT = 3.0
WELCOME_TIMEOUT = 5.0
#: Default heartbeat interval before a welcome says one (and over UDP).
DEFAULT_INTERVAL = 5.0
#: Bytes queued for the socket at most before new frames wait in place.
OUT_HIGH = 256 * 1024
#: Bytes of queued frames handed to one ``send`` at most.
WRITE_CHUNK = 64 * 1024
MAX_OWED_RUNS = 1000
MAX_PENDING_LINES = 10000
MAX_ADDRS = 64
#: Entries of the automatic ``running_tasks`` at most.
AUTO_RUNNING_TASKS = 16
#: Least time between two heartbeats that ``set`` asked for.
MIN_BEAT_SPACING = 0.1
#: Reads of a TLS connection at most per wake of the link thread (a
#: record holds 16 KiB at most), so that writing gets its turn.
TLS_READS = 16

_NOT_HELD = re.compile(r"task (\S+) is not held")
_UNSET: Any = object()

_STATE_FIELDS = (
    "status",
    "cpu_usage",
    "memory_usage",
    "gpu_usage",
    "resource_usage",
    "queue_depth",
    "current_job",
    "running_tasks",
    "labels",
)

Handler = Callable[["Task"], Any]
H = TypeVar("H", bound=Handler)


class Task:
    """A task the daemon handed this worker, as its handler sees it.

    ``id``, ``type``, ``payload``, ``attempt`` (1 for the first),
    ``timeout_ms`` (or ``None``), ``traceparent`` and ``tracestate`` (W3C
    Trace Context, or ``None``) are the daemon's; ``cancelled`` is a
    ``threading.Event`` set once the task is cancelled (or the worker is
    closing and gives it back).
    """

    def __init__(self, worker: "Worker", rec: "_Rec", msg: Mapping[str, Any]) -> None:
        self.id: str = msg["task_id"]
        self.type: str = msg["task_type"]
        self.payload: Any = msg.get("payload")
        self.attempt: int = msg.get("attempt") or 1
        self.timeout_ms: Optional[int] = msg.get("timeout_ms")
        self.traceparent: Optional[str] = msg.get("traceparent")
        self.tracestate: Optional[str] = msg.get("tracestate")
        self.cancelled = threading.Event()
        self._worker = worker
        self._rec = rec

    @property
    def lease(self) -> int:
        """The claim token of the task in cluster mode (0 on a single node)."""
        return self._rec.lease

    def log(self, *lines: Any) -> None:
        """Append lines to the task's log. Each argument is one line (as
        ``str()`` makes it); a newline inside one starts another line."""
        self._worker._task_log(self._rec, lines)

    def progress(self, fraction: Optional[float] = None, message: Optional[str] = None) -> None:
        """Say how far the task has come: ``fraction`` from 0 to 1 and/or a
        ``message`` (cut at 1024 bytes). Only the latest is kept, and one
        said while the connection is down may be replaced by the next."""
        fraction, message = proto.check_progress(fraction, message)
        self._worker._task_progress(self._rec, fraction, message)

    def raise_if_cancelled(self) -> None:
        """Raise ``TaskCancelled`` once the task is cancelled."""
        if self.cancelled.is_set():
            raise TaskCancelled(f"task {self.id} was cancelled")

    def __repr__(self) -> str:
        return f"Task(id={self.id!r}, type={self.type!r}, attempt={self.attempt})"


class _Rec:
    """The worker's book-keeping of one task.

    ``link`` says where its reports go:

    - ``active``: out on the current connection;
    - ``pending``: held while there is no connection;
    - ``limbo``: re-reported in the last hello, held until the daemon says
      ``cancel`` or ``lease`` about it, or ``LIMBO`` passed in silence;
    - ``released``: the daemon answered the re-report with ``cancel``; the
      handler goes on for ``RELEASE_GRACE`` in case the task is offered
      again, its reports held;
    - ``dropped``: not this worker's any more (``task_not_held``, a grace
      that ran out, the worker closing): its reports are discarded.
    """

    __slots__ = (
        "id",
        "type",
        "lease",
        "task",
        "handler",
        "link",
        "started",
        "done",
        "skip",
        "cause",
        "unconfirmed",
        "pending_running",
        "pending_lines",
        "pending_progress",
        "end_pending",
        "end_line",
        "until",
        "dropped_lines",
    )

    def __init__(self, msg: Mapping[str, Any], link: str) -> None:
        self.id: str = msg["task_id"]
        self.type: str = msg["task_type"]
        lease = msg.get("lease")
        self.lease: int = lease if isinstance(lease, int) and not isinstance(lease, bool) and lease >= 0 else 0
        self.task: Optional[Task] = None
        self.handler: Optional[Handler] = None
        self.link = link
        self.started = False
        self.done = False
        self.skip = False
        #: Why the task was stopped: ``daemon`` (a cancel: report
        #: ``cancelled``), ``released``, ``not_held``, ``shutdown``.
        self.cause: Optional[str] = None
        self.unconfirmed = False
        self.pending_running = False
        self.pending_lines: List[str] = []
        self.pending_progress: Optional[Dict[str, Any]] = None
        self.end_pending = False
        self.end_line: Optional[bytes] = None
        self.until = 0.0
        self.dropped_lines = 0


class _Out:
    """One frame queued for the socket, with what to do if it is lost."""

    __slots__ = ("data", "off", "kind", "rec", "payload")

    def __init__(self, data: bytes, kind: str, rec: Optional[_Rec] = None, payload: Any = None) -> None:
        self.data = data
        self.off = 0
        self.kind = kind
        self.rec = rec
        self.payload = payload


class Worker:
    """A worker process as musterd sees it.

    Every argument may be left out and then comes from the environment:

    - ``worker_id``: ``MUSTER_WORKER_ID``, else ``HOSTNAME-PID``;
    - ``addrs``: ``MUSTER_ADDRS`` (comma-separated ``host:port``; also
      ``MUSTER_HEARTBEAT_ADDR``), else ``127.0.0.1:8090``; a list of
      ``host:port`` strings or ``(host, port)`` pairs is taken too;
    - ``token`` or ``token_file``: ``MUSTER_HEARTBEAT_TOKEN_FILE``, the
      heartbeat token's file (``MUSTER_TOKEN_FILE`` is the ``muster``
      CLI's API token, and not read here);
    - ``labels``: ``MUSTER_LABELS`` as ``k=v,k=v``;
    - ``capacity``: ``MUSTER_CAPACITY``, else 1 once a handler is
      registered (the tasks taken at once, and the handler threads).

    ``transport="udp"`` sends fire-and-forget datagrams (heartbeats and
    runs only: tasks need TCP), at ``heartbeat_interval`` seconds (5 by
    default; over TCP the daemon's ``welcome`` sets it).

    TLS (TCP only: with ``transport="udp"`` it is refused):

    - ``tls``: wrap the heartbeat connection in TLS 1.2 or later;
      ``MUSTER_TLS`` (``1``/``true`` or ``0``/``false``), else off. The
      daemon's certificate must verify and name the host of the address
      connected to (an IP address must be among its IP SANs).
    - ``ca_file``: the PEM bundle of the CA(s) that signed the daemon's
      certificate; ``MUSTER_TLS_CA_FILE``, else the system's roots.
    - ``cert_file`` and ``key_file``: the client certificate (PEM) this
      worker presents when the daemon asks for one, and its key (left out
      when ``cert_file`` holds it); ``MUSTER_TLS_CERT_FILE``,
      ``MUSTER_TLS_KEY_FILE``. A daemon that requires client certificates
      takes the certificate's subject CN as the worker's id: a hello
      naming another id is refused, ``WorkerMismatch``.
    - ``ssl_context``: a ready ``ssl.SSLContext`` instead of the three
      files (it turns TLS on); it is used as it is.

    The files turn nothing on: TLS is on only when ``tls`` (or
    ``MUSTER_TLS``) says so, or an ``ssl_context`` is given. They are
    loaded at once (a file that cannot be used is a ``ValueError``), and
    loaded again at a connect when what one of them holds changed.
    """

    def __init__(
        self,
        worker_id: Optional[str] = None,
        addrs: Union[None, str, Sequence[Union[str, Tuple[str, int]]]] = None,
        *,
        token: Optional[str] = None,
        token_file: Optional[str] = None,
        labels: Optional[Mapping[str, str]] = None,
        capacity: Optional[int] = None,
        hostname: Optional[str] = None,
        transport: str = "tcp",
        heartbeat_interval: Optional[float] = None,
        max_frame_bytes: int = proto.MAX_FRAME_BYTES,
        connect_timeout: float = CONNECT_TIMEOUT,
        tls: Optional[bool] = None,
        ca_file: Optional[str] = None,
        cert_file: Optional[str] = None,
        key_file: Optional[str] = None,
        ssl_context: Optional[ssl.SSLContext] = None,
    ) -> None:
        env = os.environ
        self.hostname = proto.utf8_cut(hostname or socket.gethostname(), proto.MAX_TEXT)
        self.pid = os.getpid()
        self.worker_id = proto.check_worker_id(
            worker_id or env.get("MUSTER_WORKER_ID") or proto.default_worker_id(self.hostname, self.pid)
        )
        self._addrs: List[proto.Address] = proto.parse_addrs(
            addrs or env.get("MUSTER_ADDRS") or env.get("MUSTER_HEARTBEAT_ADDR") or "127.0.0.1:8090"
        )
        if token is None:
            path = token_file or env.get("MUSTER_HEARTBEAT_TOKEN_FILE")
            if path:
                token = proto.read_token_file(path)
        if token is not None:
            proto._text("token", token)
            if not token or any(c.isspace() or ord(c) < 32 for c in token):
                raise ValueError("a token is one word of printable characters")
        self._token = token
        if labels is None:
            labels = proto.parse_labels(env["MUSTER_LABELS"]) if env.get("MUSTER_LABELS") else {}
        self._labels = proto.check_labels(labels)
        if capacity is None and env.get("MUSTER_CAPACITY"):
            try:
                capacity = int(env["MUSTER_CAPACITY"])
            except ValueError:
                raise ValueError(f"MUSTER_CAPACITY={env['MUSTER_CAPACITY']!r} is not a whole number") from None
        if capacity is not None and (not isinstance(capacity, int) or capacity < 0):
            raise ValueError("capacity must be a whole number, 0 or more")
        self._capacity = capacity
        if transport not in ("tcp", "udp"):
            raise ValueError("transport must be 'tcp' or 'udp'")
        self.transport = transport
        self._udp = transport == "udp"
        self._tls = self._tls_config(env, tls, ca_file, cert_file, key_file, ssl_context)
        if heartbeat_interval is not None and not heartbeat_interval > 0:
            raise ValueError("heartbeat_interval must be positive")
        self._interval = heartbeat_interval or DEFAULT_INTERVAL
        limit = max_frame_bytes
        if self._udp:
            limit = min(limit, proto.MAX_DATAGRAM_BYTES)
        self.max_frame_bytes = limit
        self.connect_timeout = connect_timeout

        # Knobs the tests turn.
        self._limbo = LIMBO
        self._release_grace = RELEASE_GRACE
        self._min_session = MIN_SESSION
        self._welcome_timeout = WELCOME_TIMEOUT
        self._backoff = Backoff()

        self._lock = threading.RLock()
        self._cond = threading.Condition(self._lock)
        self._handlers: Dict[str, Handler] = {}
        self._records: Dict[str, _Rec] = {}
        self._jobs: "queue.SimpleQueue[Optional[_Rec]]" = queue.SimpleQueue()
        self._pool: List[threading.Thread] = []
        self._state: Dict[str, Any] = {}
        self._owed: Deque[Dict[str, Any]] = deque()
        self._seq = 0
        self._hello_dirty = False
        self._beat_soon = False

        self._thread: Optional[threading.Thread] = None
        self._started = False
        self._stopping = False
        self._bye_deadline: Optional[float] = None
        self._done = threading.Event()
        self._connected = threading.Event()
        self._error: Optional[FatalError] = None
        self._close_lock = threading.Lock()

        # The link thread's own (touched by it alone once started).
        self._sel: Optional[selectors.BaseSelector] = None
        self._wake_r: Optional[socket.socket] = None
        self._wake_w: Optional[socket.socket] = None
        self._woken = False
        self._sock: Optional[socket.socket] = None
        self._sock_events = 0
        self._udp_sock: Optional[socket.socket] = None
        self._reader = proto.LineReader()
        self._out: Deque[_Out] = deque()
        self._out_bytes = 0
        self._at = 0
        self._failed = 0
        self._next_try = 0.0
        self._next_beat = 0.0
        self._last_beat = 0.0
        self._connected_at = 0.0
        self._cluster = False
        self._shutting_down = False
        self._welcome: Optional[Dict[str, Any]] = None
        self._address: Optional[proto.Address] = None
        self._said_down = False
        #: The connect failures warned about in this outage.
        self._warned: set = set()
        self._last_error: Optional[BaseException] = None
        # A TLS connection's state of the moment: the chunk a send could
        # not finish (a retry must offer the same bytes), and a read that
        # waits for the socket to take bytes or a write that waits for
        # bytes to come.
        self._tls_chunk: Any = None
        self._read_wants_write = False
        self._write_wants_read = False

    def _tls_config(
        self,
        env: Mapping[str, str],
        tls: Optional[bool],
        ca_file: Optional[str],
        cert_file: Optional[str],
        key_file: Optional[str],
        ssl_context: Optional[ssl.SSLContext],
    ) -> Optional[_tls.Contexts]:
        """The TLS contexts to connect with, or ``None`` for plain TCP."""
        if ssl_context is not None:
            if tls is False:
                raise ValueError("ssl_context is given but tls=False")
            if ca_file or cert_file or key_file:
                raise ValueError("give either ssl_context or ca_file/cert_file/key_file, not both")
            if not isinstance(ssl_context, ssl.SSLContext):
                raise TypeError("ssl_context must be an ssl.SSLContext")
            tls = True
        source = "tls=True"
        if tls is None:
            tls = _tls.env_flag(env, "MUSTER_TLS")
            source = "MUSTER_TLS"
        if not tls:
            given = [n for n, v in (("ca_file", ca_file), ("cert_file", cert_file), ("key_file", key_file)) if v]
            if given:
                log.warning("muster: %s given but TLS is off (tls=True or MUSTER_TLS=1 turns it on); not used", "/".join(given))
            return None
        if self._udp:
            raise ValueError(f"{source}: TLS needs transport='tcp' (UDP datagrams cannot be TLS)")
        if ssl_context is not None:
            return _tls.Contexts(None, None, None, ready=ssl_context)
        return _tls.Contexts(
            ca_file or env.get("MUSTER_TLS_CA_FILE") or None,
            cert_file or env.get("MUSTER_TLS_CERT_FILE") or None,
            key_file or env.get("MUSTER_TLS_KEY_FILE") or None,
        )

    # -- configuration ------------------------------------------------------

    def task(self, task_type: str) -> Callable[[H], H]:
        """Register the decorated function as the handler of ``task_type``::

            @worker.task("resize")
            def resize(task):
                return {"done": task.payload["file"]}
        """

        def register(fn: H) -> H:
            self.handle(task_type, fn)
            return fn

        return register

    def handle(self, task_type: str, handler: Handler) -> None:
        """Register ``handler`` for ``task_type`` (what ``@task`` does)."""
        if self._udp:
            raise ValueError("tasks travel over TCP only: this worker uses UDP")
        if not isinstance(task_type, str) or not task_type:
            raise ValueError("a task type is a non-empty string")
        proto._text("task type", task_type, proto.MAX_TASK_TYPE)
        if not callable(handler):
            raise TypeError("a handler must be callable")
        with self._lock:
            if task_type not in self._handlers and len(self._handlers) >= proto.MAX_TASK_TYPES:
                raise ValueError(f"at most {proto.MAX_TASK_TYPES} task types")
            self._handlers[task_type] = handler
            if self._started:
                self._hello_dirty = True
                self._grow_pool()
        self._wake()

    @property
    def capacity(self) -> int:
        """Tasks taken at once: as configured, else 1 with handlers, else 0."""
        if self._capacity is not None:
            return self._capacity if self._handlers else 0
        return 1 if self._handlers else 0

    @property
    def task_types(self) -> List[str]:
        with self._lock:
            return list(self._handlers)

    @property
    def labels(self) -> Dict[str, str]:
        return dict(self._labels)

    @property
    def addresses(self) -> List[str]:
        """The heartbeat addresses, in the order tried (the welcome's nodes
        join them in cluster mode)."""
        with self._lock:
            return [proto.format_addr(a) for a in self._addrs]

    @property
    def address(self) -> Optional[str]:
        """Where the worker is connected now, or ``None``."""
        a = self._address
        return proto.format_addr(a) if a and self._connected.is_set() else None

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    @property
    def heartbeat_interval(self) -> float:
        """Seconds between heartbeats (the welcome's, over TCP)."""
        return self._interval

    @property
    def tls(self) -> bool:
        """Whether the heartbeat connection is TLS."""
        return self._tls is not None

    @property
    def error(self) -> Optional[FatalError]:
        """Why the worker stopped for good, or ``None``."""
        return self._error

    @property
    def last_error(self) -> Optional[BaseException]:
        """Why the last connect failed (refused, timed out, a TLS handshake
        that failed: an ``ssl.SSLCertVerificationError`` when the daemon's
        certificate did not verify...), or why the last connection was
        lost (a ``ConnectionError``); ``None`` while connected and before
        any failure."""
        return self._last_error

    @property
    def running(self) -> List[str]:
        """Ids of the tasks whose handlers run now."""
        with self._lock:
            return [r.id for r in self._records.values() if r.started and not r.done]

    # -- state --------------------------------------------------------------

    def set(
        self,
        *,
        status: Any = _UNSET,
        queue_depth: Any = _UNSET,
        current_job: Any = _UNSET,
        cpu_usage: Any = _UNSET,
        memory_usage: Any = _UNSET,
        gpu_usage: Any = _UNSET,
        resource_usage: Any = _UNSET,
        running_tasks: Any = _UNSET,
        labels: Any = _UNSET,
    ) -> None:
        """Change what the heartbeats report; the next one (sent within
        0.1 s) carries it, and every one after.

        Fields left out stay as they are. ``None`` stops reporting a field
        (the daemon keeps its last value), except ``current_job=None``,
        which clears the job, and ``status=None``, which goes back to the
        automatic status (``working`` while a handler runs, else
        ``idle``). ``running_tasks`` is automatic too while not set.

        Raises ``FrameTooLarge`` (a ``ValueError``) when the heartbeat
        would be over the frame limit, and ``ValueError`` for a value the
        daemon would refuse; either way nothing changes and nothing is
        sent.
        """
        given = {
            "status": status,
            "queue_depth": queue_depth,
            "current_job": current_job,
            "cpu_usage": cpu_usage,
            "memory_usage": memory_usage,
            "gpu_usage": gpu_usage,
            "resource_usage": resource_usage,
            "running_tasks": running_tasks,
            "labels": labels,
        }
        changes = {k: v for k, v in given.items() if v is not _UNSET}
        with self._lock:
            new = dict(self._state)
            for k, v in changes.items():
                if v is None and k != "current_job":
                    new.pop(k, None)
                else:
                    new[k] = _snapshot(k, v)
            frame = self._beat_frame(new, 10**15)
            try:
                size = len(proto.encode(frame))
            except (TypeError, ValueError) as e:
                raise ValueError(f"cannot send that as JSON: {e}") from None
            if size > self.max_frame_bytes:
                raise FrameTooLarge(size, self.max_frame_bytes, "heartbeat")
            for k, v in changes.items():
                if v is not None:
                    proto.check_state_field(k, v)
            self._state = new
            if "labels" in changes and changes["labels"] is not None:
                self._labels = dict(changes["labels"])
            self._beat_soon = True
        self._wake()

    def record_run(
        self,
        duration_s: float,
        ok: bool,
        exit_code: Optional[int] = None,
        signal: Optional[int] = None,
    ) -> None:
        """Report one finished run (a ``run`` frame) of ``duration_s``
        seconds. Over TCP it waits for the connection when it is down (the
        latest 1,000 at most)."""
        if not proto._is_number(duration_s):
            raise ValueError("duration_s must be a number")
        ms = round(duration_s * 1000.0, 3)
        proto.check_number("duration", ms, proto.MAX_RUN_MS)
        frame: Dict[str, Any] = {"type": "run"}
        if self._udp:
            frame["worker_id"] = self.worker_id
        frame["duration_ms"] = ms
        frame["ok"] = bool(ok)
        for name, v in (("exit_code", exit_code), ("signal", signal)):
            if v is not None:
                if not isinstance(v, int) or isinstance(v, bool) or not -(2**31) <= v < 2**31:
                    raise ValueError(f"{name} must be a 32-bit integer")
                frame[name] = v
        if self._udp and self._token:
            frame["token"] = self._token
        proto.encode_line(frame, self.max_frame_bytes)
        with self._lock:
            if len(self._owed) >= MAX_OWED_RUNS:
                self._owed.popleft()
                log.warning("muster: %d runs owed to musterd; dropping the oldest", MAX_OWED_RUNS)
            self._owed.append(frame)
        self._wake()

    # -- life ---------------------------------------------------------------

    def start(self) -> "Worker":
        """Start the background threads (connecting, beating, handlers) and
        return at once. Calling it again does nothing."""
        with self._lock:
            if self._started:
                return self
            if self._done.is_set():
                raise MusterError("this worker was closed")
            if not self._udp:
                # Labels, types and the rest must fit one frame.
                proto.encode_line(self._hello_frame(None), self.max_frame_bytes)
            self._started = True
            self._wake_r, self._wake_w = socket.socketpair()
            self._wake_r.setblocking(False)
            self._wake_w.setblocking(False)
            self._grow_pool()
            self._thread = threading.Thread(target=self._main, name=f"muster-link-{self.worker_id}", daemon=True)
            self._thread.start()
        return self

    def run(self) -> None:
        """Start, and block until the worker is closed (``stop()``,
        ``close()``, or Ctrl-C, which closes it and is raised again).
        Raises the ``FatalError`` (such as ``Unauthorized``) that stopped
        the worker for good."""
        self.start()
        # On POSIX a signal (Ctrl-C, a handler that calls stop()) cuts a
        # blocked wait short, so the wait need not wake to look; elsewhere
        # it does, twice a second.
        tick = None if os.name == "posix" else 0.5
        try:
            while not self._done.wait(tick):
                pass
        except KeyboardInterrupt:
            self.close()
            raise
        # A close in progress on another thread: let it finish its bye.
        t = self._thread
        if t is not None and t is not threading.current_thread():
            t.join(timeout=10)
        if self._error is not None:
            raise self._error

    def wait_connected(self, timeout: Optional[float] = None) -> bool:
        """Block until the worker has been welcomed (or stopped); whether
        it is connected."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self._connected.is_set() and not self._done.is_set():
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                break
            self._connected.wait(0.05 if left is None else min(0.05, left))
        return self._connected.is_set()

    def stop(self) -> None:
        """Ask the worker to close, without waiting: safe from a signal
        handler. ``run()`` returns once the close is done."""
        threading.Thread(target=self.close, name="muster-stop", daemon=True).start()

    def close(self, timeout: float = 5.0) -> None:
        """Close the worker: take no new task, give the running handlers up
        to ``timeout`` seconds to end (their outcomes are reported), then
        say ``bye`` and close the connection. Tasks still running then go
        back to the daemon's queue (their ``cancelled`` event is set, and
        nothing more is reported about them). Safe to call twice."""
        with self._close_lock:
            if not self._started:
                with self._lock:
                    self._stopping = True
                    self._done.set()
                self._close_wake()
                return
            deadline = time.monotonic() + max(0.0, timeout)
            with self._lock:
                self._stopping = True
                for rec in list(self._records.values()):
                    if not rec.started and not rec.done:
                        rec.skip = True
                        self._forget(rec)
                self._beat_soon = True
                self._cond.notify_all()
            self._wake()
            with self._lock:
                while not self._done.is_set() and any(
                    r.link in ("active", "pending", "limbo") for r in self._records.values()
                ):
                    left = deadline - time.monotonic()
                    if left <= 0:
                        break
                    self._cond.wait(min(left, 0.1))
                for rec in list(self._records.values()):
                    self._drop(rec, "shutdown")
                self._bye_deadline = max(deadline, time.monotonic() + 1.0)
            self._wake()
            t = self._thread
            if t is not None and t is not threading.current_thread():
                t.join(timeout=max(0.0, self._bye_deadline - time.monotonic()) + 3.0)
            for _ in self._pool:
                self._jobs.put(None)
            self._close_wake()

    def __enter__(self) -> "Worker":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Worker({self.worker_id!r}, {self.transport}, connected={self.connected})"

    # -- the handlers' side -------------------------------------------------

    def _grow_pool(self) -> None:
        want = self.capacity
        while len(self._pool) < want:
            t = threading.Thread(
                target=self._pool_main, name=f"muster-task-{len(self._pool) + 1}", daemon=True
            )
            self._pool.append(t)
            t.start()

    def _pool_main(self) -> None:
        while True:
            rec = self._jobs.get()
            if rec is None:
                return
            with self._lock:
                if rec.skip or rec.done or self._stopping or self._records.get(rec.id) is not rec:
                    continue
                rec.started = True
                if rec.link in ("active", "pending", "limbo"):
                    rec.pending_running = True
                self._status_changed()
            self._wake()
            outcome = self._call(rec)
            with self._lock:
                self._finish(rec, outcome)
                self._cond.notify_all()
            self._wake()

    def _call(self, rec: _Rec) -> Tuple[Any, ...]:
        task = rec.task
        assert task is not None and rec.handler is not None
        try:
            result = rec.handler(task)
        except TaskError as e:
            return ("failed", e.message, e.retryable, e.exit_code)
        except TaskCancelled:
            return ("cancelled",)
        except BaseException as e:  # noqa: B902 - a handler's failure, whatever it is
            log.warning("muster: task %s (%s) failed: %s: %s", rec.id, rec.type, type(e).__name__, e)
            lines = traceback.format_exception(type(e), e, e.__traceback__)
            try:
                task.log(*"".join(lines).splitlines())
            except Exception:
                pass
            text = str(e)
            return ("failed", f"{type(e).__name__}: {text}" if text else type(e).__name__, True, None)
        return ("succeeded", result)

    def _finish(self, rec: _Rec, outcome: Tuple[Any, ...]) -> None:
        rec.done = True
        self._status_changed()
        rec.end_line = self._outcome_line(rec, outcome)
        if self._records.get(rec.id) is not rec:
            return
        if rec.link == "dropped":
            self._forget(rec)
        elif rec.link != "released":
            rec.end_pending = True

    def _outcome_line(self, rec: _Rec, outcome: Tuple[Any, ...]) -> bytes:
        base: Dict[str, Any] = {"type": "task_update", "task_id": rec.id}
        if outcome[0] == "succeeded":
            frame = dict(base, state="succeeded")
            if outcome[1] is not None:
                frame["result"] = outcome[1]
            try:
                return proto.encode_line(frame, self.max_frame_bytes)
            except FrameTooLarge as e:
                why = f"the result ({e.size} bytes as a frame) is over the frame limit of {e.limit} bytes"
            except (TypeError, ValueError) as e:
                why = f"the result is not JSON: {e}"
            log.warning("muster: task %s: %s", rec.id, why)
            outcome = ("failed", why, False, None)
        if outcome[0] == "cancelled":
            outcome = ("failed", "cancelled by the worker", True, None)
        _, message, retryable, exit_code = outcome
        frame = dict(base, state="failed", error=proto.utf8_cut(str(message) or "failed", proto.MAX_ERROR))
        frame["retryable"] = bool(retryable)
        if isinstance(exit_code, int) and not isinstance(exit_code, bool) and -(2**31) <= exit_code < 2**31:
            frame["exit_code"] = exit_code
        return proto.encode_line(frame, self.max_frame_bytes)

    def _task_log(self, rec: _Rec, items: Iterable[Any]) -> None:
        lines = proto.split_lines(items)
        if not lines:
            return
        with self._lock:
            if rec.done or rec.link == "dropped" or self._records.get(rec.id) is not rec:
                return
            rec.pending_lines.extend(lines)
            over = len(rec.pending_lines) - MAX_PENDING_LINES
            if over > 0:
                del rec.pending_lines[:over]
                if rec.dropped_lines == 0:
                    log.warning("muster: task %s: over %d log lines waiting; dropping the oldest", rec.id, MAX_PENDING_LINES)
                rec.dropped_lines += over
        self._wake()

    def _task_progress(self, rec: _Rec, fraction: Optional[float], message: Optional[str]) -> None:
        frame: Dict[str, Any] = {"type": "task_progress", "task_id": rec.id}
        if fraction is not None:
            frame["fraction"] = fraction
        if message is not None:
            frame["message"] = message
        with self._lock:
            if rec.done or rec.link == "dropped" or self._records.get(rec.id) is not rec:
                return
            rec.pending_progress = frame
        self._wake()

    # -- book-keeping (under the lock) --------------------------------------

    def _forget(self, rec: _Rec) -> None:
        if self._records.get(rec.id) is rec:
            del self._records[rec.id]
        self._cond.notify_all()

    def _drop(self, rec: _Rec, cause: str) -> None:
        """The task is not this worker's any more: stop its handler, report
        nothing more about it."""
        rec.link = "dropped"
        if rec.cause is None:
            rec.cause = cause
        rec.pending_running = False
        rec.pending_lines = []
        rec.pending_progress = None
        rec.end_pending = False
        if rec.task is not None:
            rec.task.cancelled.set()
        if rec.done or not rec.started:
            rec.skip = True
            self._forget(rec)

    def _status_changed(self) -> None:
        """A handler started or ended: the automatic status (and the
        automatic ``running_tasks``) may read otherwise: beat soon."""
        if "status" not in self._state or "running_tasks" not in self._state:
            self._beat_soon = True

    def _busy(self) -> bool:
        return any(r.started and not r.done for r in self._records.values())

    def _beat_frame(self, state: Mapping[str, Any], seq: int) -> Dict[str, Any]:
        frame: Dict[str, Any] = {"type": "heartbeat"}
        if self._udp:
            frame["worker_id"] = self.worker_id
        frame["seq"] = seq
        frame["status"] = state.get("status") or ("working" if self._busy() else "idle")
        for k in _STATE_FIELDS:
            if k != "status" and k in state:
                frame[k] = state[k]
        if "running_tasks" not in state and self._handlers:
            frame["running_tasks"] = [
                {"task_id": r.id, "task_type": r.type}
                for r in self._records.values()
                if r.started and not r.done and r.link != "dropped"
            ][:AUTO_RUNNING_TASKS]
        if self._udp and self._token:
            frame["token"] = self._token
        return frame

    def _hello_frame(self, running: Optional[List[Dict[str, Any]]]) -> Dict[str, Any]:
        frame: Dict[str, Any] = {
            "type": "hello",
            "worker_id": self.worker_id,
            "pid": self.pid,
            "hostname": self.hostname,
        }
        cap = self.capacity
        if cap > 0:
            frame["capacity"] = cap
            frame["task_types"] = list(self._handlers)
        if self._labels:
            frame["labels"] = dict(self._labels)
        if self._token:
            frame["token"] = self._token
        if running:
            frame["running"] = running
        return frame

    def _reported(self) -> Tuple[List[_Rec], List[Dict[str, Any]]]:
        """The tasks the next hello re-reports: every one still this
        worker's, running or ended with its end not yet said."""
        recs = [r for r in self._records.values() if r.link == "pending"][: proto.MAX_RUNNING]
        return recs, [{"task_id": r.id, "lease": r.lease} for r in recs]

    # -- the link thread ----------------------------------------------------

    def _wake(self) -> None:
        """Make the link thread look at the state again (after a change
        made under the lock). ``_woken`` spares a send while a byte is
        already on its way: it is set before the byte goes and cleared
        only once the bytes have been read, so a wake can never be lost
        to a drain under way."""
        w = self._wake_w
        if self._woken or w is None:
            return
        self._woken = True
        try:
            w.send(b"\0")
        except OSError:
            pass

    def _drain_wake(self) -> None:
        assert self._wake_r is not None
        try:
            while self._wake_r.recv(4096):
                pass
        except OSError:
            pass
        # Only now: a wake that came while reading (and so found the flag
        # set) made its change before, and the link thread, back from
        # here, reads the state under the lock before it waits again.
        self._woken = False

    def _close_wake(self) -> None:
        if self._thread is None or not self._thread.is_alive():
            for s in (self._wake_r, self._wake_w):
                if s is not None:
                    try:
                        s.close()
                    except OSError:
                        pass

    def _main(self) -> None:
        self._sel = selectors.DefaultSelector()
        assert self._wake_r is not None
        self._sel.register(self._wake_r, selectors.EVENT_READ)
        try:
            if self._udp:
                self._udp_main()
            else:
                self._tcp_main()
        except FatalError as e:
            self._error = e
            log.error("muster: worker %s stopped: %s", self.worker_id, e)
        except Exception as e:  # a bug: say so rather than die silently
            log.exception("muster: worker %s stopped on an internal error", self.worker_id)
            self._error = FatalError(f"internal error: {e}")
        finally:
            self._disconnect("closed", quiet=True)
            if self._udp_sock is not None:
                self._udp_sock.close()
            with self._lock:
                self._stopping = True
                for rec in list(self._records.values()):
                    self._drop(rec, "shutdown")
                self._cond.notify_all()
            self._connected.clear()
            self._done.set()
            try:
                self._sel.close()
            except Exception:
                pass

    def _wait(self, seconds: float) -> None:
        assert self._sel is not None
        for key, _ in self._sel.select(max(0.0, seconds)):
            if key.fileobj is self._wake_r:
                self._drain_wake()

    # TCP

    def _tcp_main(self) -> None:
        while True:
            now = time.monotonic()
            if self._bye_deadline is not None and self._finishing(now):
                return
            if self._sock is None:
                if now < self._next_try:
                    wait = self._next_try - now
                    if self._bye_deadline is not None:
                        wait = min(wait, max(0.0, self._bye_deadline - now))
                    self._wait(wait)
                    continue
                self._connect()
                continue
            self._step()

    def _finishing(self, now: float) -> bool:
        """Closing: say bye once what is owed went out (or time is up).
        True when the thread is done."""
        assert self._bye_deadline is not None
        late = now >= self._bye_deadline
        if self._sock is None:
            with self._lock:
                owed = bool(self._owed)
            # Nothing to deliver, or no more time to connect for it.
            return late or not owed
        with self._lock:
            self._fill()
            idle = not self._out and not self._owed
        if idle or late:
            self._bye()
            return True
        return False

    def _connect(self) -> None:
        addr = self._addrs[self._at % len(self._addrs)]
        with self._lock:
            recs, running = self._reported()
            hello = self._hello_frame(running)
            self._hello_dirty = False
        try:
            line = proto.encode_line(hello, self.max_frame_bytes)
        except FrameTooLarge:
            # Too many re-reported tasks for one frame: as many as fit.
            while running and len(proto.encode(hello)) > self.max_frame_bytes:
                running = running[: len(running) // 2]
                recs = recs[: len(running)]
                with self._lock:
                    hello = self._hello_frame(running)
            try:
                line = proto.encode_line(hello, self.max_frame_bytes)
            except FrameTooLarge as e:
                raise HelloRefused(f"the hello cannot be sent: {e}", "too_large") from None
        sock: Optional[socket.socket] = None
        reader = proto.LineReader()
        connect_timeout = self.connect_timeout
        if self._bye_deadline is not None:
            connect_timeout = max(0.1, min(connect_timeout, self._bye_deadline - time.monotonic()))
        try:
            sock = socket.create_connection(addr, timeout=connect_timeout)
            _tune(sock)
            if self._tls is not None:
                # The handshake, within the connect timeout. The host
                # of the address is the name the certificate must bear
                # (an IP address: one of its IP SANs).
                sock = self._tls.get().wrap_socket(sock, server_hostname=addr[0])
            deadline = time.monotonic() + self._welcome_timeout
            sock.settimeout(self._welcome_timeout)
            sock.sendall(line)
            welcome: Optional[Dict[str, Any]] = None
            rest: List[bytes] = []
            while welcome is None:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise OSError("no welcome in time")
                sock.settimeout(left)
                data = sock.recv(65536)
                if not data:
                    raise OSError("closed before its welcome")
                lines = reader.feed(data)
                for i, raw in enumerate(lines):
                    msg = proto.decode(raw)
                    if msg is None:
                        continue
                    if msg["type"] == "welcome":
                        welcome = msg
                        rest = lines[i + 1 :]
                        break
                    if msg["type"] == "error":
                        self._refused_hello(msg)
        except FatalError:
            if sock is not None:
                sock.close()
            raise
        except (OSError, ValueError, proto.ProtocolError, _Retry) as e:
            # ValueError: a host name that cannot be encoded.
            if sock is not None:
                sock.close()
            self._connect_failed(addr, e)
            return
        assert sock is not None
        sock.setblocking(False)
        now = time.monotonic()
        self._sock = sock
        self._reader = reader
        self._address = addr
        self._connected_at = now
        self._failed = 0
        self._shutting_down = False
        self._last_error = None
        self._warned.clear()
        self._tls_chunk = None
        self._read_wants_write = False
        self._write_wants_read = False
        assert self._sel is not None
        self._sel.register(sock, selectors.EVENT_READ)
        self._sock_events = selectors.EVENT_READ
        self._on_welcome(welcome, first=True)
        with self._lock:
            for r in recs:
                if r.link == "pending" and self._records.get(r.id) is r:
                    r.link = "limbo"
                    r.unconfirmed = True
                    r.until = now + self._limbo
            self._next_beat = now
        if self._said_down:
            log.info("muster: worker %s reconnected to %s", self.worker_id, proto.format_addr(addr))
            self._said_down = False
        self._connected.set()
        for raw in rest:
            self._on_line(raw)

    def _refused_hello(self, msg: Mapping[str, Any]) -> None:
        code = str(msg.get("code") or "")
        message = str(msg.get("message") or code)
        if code == "unauthorized":
            raise Unauthorized(f"musterd refused the heartbeat token: {message}", code)
        if code == "worker_mismatch":
            cert = " (over TLS the client certificate's CN is the worker's id)" if self._tls is not None else ""
            raise WorkerMismatch(f"musterd refused the hello as worker {self.worker_id}{cert}: {message}", code)
        if code in ("worker_cap", "shutting_down", "idle_timeout") or code not in _HELLO_FATAL:
            raise _Retry(f"{code}: {message}")
        raise HelloRefused(f"musterd refused the hello: {code}: {message}", code)

    def _connect_failed(self, addr: proto.Address, why: BaseException) -> None:
        self._last_error = why
        text = _tls.describe(why)
        # A warning once per address and reason in an outage (a TLS
        # failure after a refused connect is said too), then quiet.
        key = (addr, text)
        if key not in self._warned:
            if len(self._warned) < 2 * MAX_ADDRS:
                self._warned.add(key)
            log.warning(
                "muster: worker %s cannot reach musterd at %s (%s); retrying",
                self.worker_id,
                proto.format_addr(addr),
                text,
            )
            self._said_down = True
        else:
            log.debug("muster: connect to %s failed: %s", proto.format_addr(addr), text)
        self._next_address(failed=True)

    def _next_address(self, failed: bool) -> None:
        """Move on along the list: at once, or after the backoff once every
        address failed in a row."""
        now = time.monotonic()
        with self._lock:
            n = len(self._addrs)
        self._at = (self._at + 1) % n
        if failed:
            self._failed += 1
        if self._failed >= n:
            self._failed = 0
            self._next_try = now + self._backoff.next()
        else:
            self._next_try = now

    def _on_welcome(self, msg: Mapping[str, Any], first: bool = False) -> None:
        self._welcome = dict(msg)
        if msg.get("version") not in (None, proto.VERSION):
            log.warning("muster: musterd speaks protocol version %s; this library speaks %d", msg.get("version"), proto.VERSION)
        ms = msg.get("heartbeat_interval_ms")
        if isinstance(ms, (int, float)) and not isinstance(ms, bool) and ms > 0:
            self._interval = ms / 1000.0
        nodes = msg.get("nodes")
        self._cluster = bool(nodes)
        if isinstance(nodes, list):
            with self._lock:
                for n in nodes:
                    if len(self._addrs) >= MAX_ADDRS:
                        break
                    try:
                        a = proto.parse_addr(str(n))
                    except ValueError:
                        continue
                    if a not in self._addrs:
                        self._addrs.append(a)

    def _disconnect(self, why: str, quiet: bool = False) -> None:
        sock = self._sock
        if sock is None:
            return
        self._sock = None
        self._connected.clear()
        self._tls_chunk = None
        self._read_wants_write = False
        self._write_wants_read = False
        if not quiet:
            self._last_error = ConnectionError(why)
        try:
            assert self._sel is not None
            self._sel.unregister(sock)
        except Exception:
            pass
        try:
            sock.close()
        except OSError:
            pass
        now = time.monotonic()
        with self._lock:
            # What did not reach the socket waits for the next connection.
            for o in reversed(self._out):
                self._requeue(o)
            self._out.clear()
            self._out_bytes = 0
            for rec in list(self._records.values()):
                if rec.link in ("active", "limbo"):
                    rec.link = "pending"
                elif rec.link == "released":
                    self._drop(rec, "released")
            self._cond.notify_all()
        if quiet:
            return
        log.info("muster: worker %s lost its connection to musterd: %s", self.worker_id, why)
        self._said_down = True
        short = now - self._connected_at < self._min_session
        if not short:
            self._backoff.reset()
        if self._shutting_down or short:
            self._next_address(failed=True)
        else:
            self._failed = 0
            self._next_address(failed=False)

    def _requeue(self, o: _Out) -> None:
        rec = o.rec
        if o.kind == "run":
            self._owed.appendleft(o.payload)
            return
        if rec is None or self._records.get(rec.id) is not rec or rec.link == "dropped":
            return
        if o.kind == "running":
            rec.pending_running = True
        elif o.kind == "log":
            rec.pending_lines[:0] = o.payload
        elif o.kind == "progress":
            if rec.pending_progress is None:
                rec.pending_progress = o.payload
        elif o.kind == "end":
            rec.end_pending = True

    def _push(self, data: bytes, kind: str, rec: Optional[_Rec] = None, payload: Any = None) -> None:
        self._out.append(_Out(data, kind, rec, payload))
        self._out_bytes += len(data)

    def _fill(self) -> None:
        """Move what waits to be said into the socket's queue (under the
        lock), as far as ``OUT_HIGH`` allows."""
        while self._owed and self._out_bytes < OUT_HIGH:
            f = self._owed.popleft()
            self._push(proto.encode_line(f, self.max_frame_bytes), "run", None, f)
        if self._hello_dirty:
            self._hello_dirty = False
            self._push(proto.encode_line(self._hello_frame(None), self.max_frame_bytes), "hello")
        for rec in list(self._records.values()):
            if self._out_bytes >= OUT_HIGH:
                break
            if rec.link == "active":
                self._flush_rec(rec)

    def _flush_rec(self, rec: _Rec) -> None:
        if rec.pending_running:
            rec.pending_running = False
            frame = {"type": "task_update", "task_id": rec.id, "state": "running"}
            self._push(proto.encode_line(frame), "running", rec)
        if rec.pending_lines:
            lines, rec.pending_lines = rec.pending_lines, []
            for frame in proto.pack_log_lines(rec.id, lines, self.max_frame_bytes):
                self._push(proto.encode_line(frame, self.max_frame_bytes), "log", rec, frame["lines"])
        if rec.pending_progress is not None:
            frame, rec.pending_progress = rec.pending_progress, None
            self._push(proto.encode_line(frame, self.max_frame_bytes), "progress", rec, frame)
        if rec.end_pending:
            rec.end_pending = False
            if rec.cause == "daemon":
                line = proto.encode_line({"type": "task_update", "task_id": rec.id, "state": "cancelled"})
            elif rec.cause == "shutdown" or rec.end_line is None:
                self._forget(rec)
                return
            else:
                line = rec.end_line
            self._push(line, "end", rec)

    def _step(self) -> None:
        sock = self._sock
        assert sock is not None and self._sel is not None
        now = time.monotonic()
        with self._lock:
            self._timers(now)
            if now >= self._next_beat or (self._beat_soon and now - self._last_beat >= MIN_BEAT_SPACING):
                self._beat(now)
            self._fill()
            timeout = self._next_beat - now
            if self._beat_soon:
                timeout = min(timeout, self._last_beat + MIN_BEAT_SPACING - now)
            for r in self._records.values():
                if r.link in ("limbo", "released"):
                    timeout = min(timeout, r.until - now)
        # Over TLS a write may wait for bytes to come (and a read for the
        # socket to take some), and bytes already decrypted wait in the
        # TLS layer, where the selector cannot see them.
        want_write = (bool(self._out) and not self._write_wants_read) or self._read_wants_write
        events = selectors.EVENT_READ | (selectors.EVENT_WRITE if want_write else 0)
        if events != self._sock_events:
            self._sel.modify(sock, events)
            self._sock_events = events
        if self._bye_deadline is not None:
            timeout = min(timeout, 0.05)
        pending = self._tls is not None and sock.pending() > 0
        if pending:
            timeout = 0.0
        read = False
        for key, ev in self._sel.select(max(0.0, timeout)):
            if key.fileobj is self._wake_r:
                self._drain_wake()
            elif key.fileobj is sock:
                readable = bool(ev & selectors.EVENT_READ)
                writable = bool(ev & selectors.EVENT_WRITE)
                if readable or (writable and self._read_wants_write):
                    read = True
                    if not self._read():
                        return
                    if readable and self._write_wants_read:
                        self._write_wants_read = False
                        writable = True
                if writable and self._sock is sock and self._out:
                    self._write()
        if pending and not read and self._sock is sock:
            self._read()

    def _beat(self, now: float) -> None:
        self._last_beat = now
        self._beat_soon = False
        self._next_beat = now + self._interval
        if self._out_bytes > OUT_HIGH // 4:
            return  # the daemon is not reading: a beat now would only wait
        self._seq += 1
        frame = self._beat_frame(self._state, self._seq)
        try:
            data = proto.encode_line(frame, self.max_frame_bytes)
        except FrameTooLarge:
            frame.pop("running_tasks", None)
            try:
                data = proto.encode_line(frame, self.max_frame_bytes)
            except FrameTooLarge as e:
                log.warning("muster: heartbeat not sent: %s", e)
                return
        self._push(data, "beat")

    def _timers(self, now: float) -> None:
        for rec in list(self._records.values()):
            if rec.link == "limbo" and now >= rec.until:
                # No word from the daemon: it kept the task.
                rec.link = "active"
                if not self._cluster:
                    rec.unconfirmed = False
            elif rec.link == "released" and now >= rec.until:
                log.info("muster: task %s was not handed back; stopping it", rec.id)
                self._drop(rec, "released")

    def _read(self) -> bool:
        """Read what came and act on it; False when the connection went."""
        sock = self._sock
        assert sock is not None
        if self._tls is not None:
            return self._read_tls(sock)
        try:
            data = sock.recv(65536)
        except (BlockingIOError, InterruptedError):
            return True
        except OSError as e:
            self._disconnect(str(e))
            return False
        return self._take(sock, data)

    def _read_tls(self, sock: socket.socket) -> bool:
        """Read a TLS connection until it has nothing more (a ready socket
        may hold part of a record only: nothing to read yet), or
        ``TLS_READS`` records: what is left decrypted is ``pending()``,
        which ``_step`` looks at."""
        self._read_wants_write = False
        for _ in range(TLS_READS):
            try:
                data = sock.recv(65536)
            except ssl.SSLWantReadError:
                return True
            except ssl.SSLWantWriteError:
                self._read_wants_write = True
                return True
            except (BlockingIOError, InterruptedError):
                return True
            except OSError as e:
                self._disconnect(_tls.describe(e))
                return False
            if not self._take(sock, data):
                return False
        return True

    def _take(self, sock: socket.socket, data: bytes) -> bool:
        if not data:
            self._disconnect("closed by musterd")
            return False
        try:
            lines = self._reader.feed(data)
        except proto.ProtocolError as e:
            self._disconnect(str(e))
            return False
        for raw in lines:
            self._on_line(raw)
            if self._sock is not sock:
                return False
        return True

    def _write(self) -> None:
        sock = self._sock
        assert sock is not None
        done: List[_Out] = []
        err: Optional[OSError] = None
        out = self._out
        tls = self._tls is not None
        with self._lock:
            while out:
                chunk: Any = self._tls_chunk
                if chunk is None:
                    # The frames waiting, as many as make a chunk, in one
                    # send (a chunk ends at the end of a frame).
                    parts: List[Any] = []
                    size = 0
                    for o in out:
                        parts.append(memoryview(o.data)[o.off :] if o.off else o.data)
                        size += len(o.data) - o.off
                        if size >= WRITE_CHUNK:
                            break
                    chunk = parts[0] if len(parts) == 1 else b"".join(parts)
                size = len(chunk)
                try:
                    n = sock.send(chunk)
                except ssl.SSLWantWriteError:
                    # TLS: the same bytes must be offered again.
                    self._tls_chunk = chunk
                    break
                except ssl.SSLWantReadError:
                    self._tls_chunk = chunk
                    self._write_wants_read = True
                    break
                except (BlockingIOError, InterruptedError):
                    if tls:
                        self._tls_chunk = chunk
                    break
                except OSError as e:
                    err = e
                    break
                self._tls_chunk = None
                whole = n == size
                done.extend(self._sent(n))
                if not whole:
                    break
            for o in done:
                if o.kind == "end" and o.rec is not None:
                    self._forget(o.rec)
        if err is not None:
            self._disconnect(_tls.describe(err))

    def _sent(self, n: int) -> List[_Out]:
        """``n`` bytes of the queue went out (under the lock): the frames
        they ended."""
        out = self._out
        done: List[_Out] = []
        while n > 0:
            o = out[0]
            left = len(o.data) - o.off
            if n < left:
                o.off += n  # the rest of it goes first next time
                break
            n -= left
            out.popleft()
            self._out_bytes -= len(o.data)
            done.append(o)
        return done

    def _on_line(self, raw: bytes) -> None:
        msg = proto.decode(raw)
        if msg is None:
            log.debug("muster: musterd sent a line that is not a frame: %r", raw[:200])
            return
        kind = msg["type"]
        if kind == "task":
            self._on_task(msg)
        elif kind == "cancel":
            self._on_cancel(msg)
        elif kind == "lease":
            self._on_lease(msg)
        elif kind == "error":
            self._on_error(msg)
        elif kind == "welcome":
            self._on_welcome(msg)
        else:
            log.debug("muster: ignoring a %r frame", kind)

    def _on_task(self, msg: Dict[str, Any]) -> None:
        task_id = msg.get("task_id")
        task_type = msg.get("task_type")
        if not isinstance(task_id, str) or not proto.valid_task_id(task_id) or not isinstance(task_type, str):
            log.warning("muster: ignoring a task frame without a valid task_id and task_type")
            return
        attempt = msg.get("attempt")
        if not isinstance(attempt, int) or isinstance(attempt, bool):
            msg["attempt"] = 1
        with self._lock:
            if self._stopping:
                log.info("muster: closing; task %s left to time out and go elsewhere", task_id)
                return
            rec = self._records.get(task_id)
            if rec is not None and rec.cause != "daemon":
                self._adopt(rec, msg)
                return
            new = _Rec(msg, "active")
            new.task = Task(self, new, msg)
            new.handler = self._handlers.get(task_type)
            self._records[task_id] = new
            if new.handler is None:
                new.done = True
                new.end_line = self._outcome_line(
                    new, ("failed", f"no handler for task type {task_type!r} on worker {self.worker_id}", True, None)
                )
                new.end_pending = True
            else:
                self._jobs.put(new)
        self._wake()

    def _adopt(self, rec: _Rec, msg: Mapping[str, Any]) -> None:
        """The task this worker still runs is offered again (a restarted
        daemon requeued it, or took long to hear ``running``): the run goes
        on as the new attempt rather than starting over."""
        log.info("muster: task %s offered again (attempt %s); the running handler goes on", rec.id, msg.get("attempt"))
        lease = msg.get("lease")
        rec.lease = lease if isinstance(lease, int) and not isinstance(lease, bool) and lease >= 0 else 0
        if rec.task is not None:
            rec.task.attempt = msg.get("attempt") or rec.task.attempt
        rec.link = "active"
        rec.unconfirmed = False
        if rec.cause in ("released", "not_held"):
            rec.cause = None
        if rec.done:
            rec.end_pending = True
        elif rec.started:
            rec.pending_running = True
        else:
            rec.skip = False
        self._wake()

    def _on_cancel(self, msg: Mapping[str, Any]) -> None:
        task_id = msg.get("task_id")
        with self._lock:
            rec = self._records.get(task_id) if isinstance(task_id, str) else None
            if rec is None or rec.link in ("released", "dropped"):
                return
            if rec.link == "limbo" or rec.unconfirmed:
                # The answer to the re-report: the daemon does not keep it.
                # Hold on for a while in case it hands the task back.
                rec.link = "released"
                rec.unconfirmed = False
                rec.until = time.monotonic() + self._release_grace
                rec.pending_running = False
                rec.pending_lines = []
                rec.pending_progress = None
                rec.end_pending = False
                return
            if rec.done:
                return  # ended before the cancel: its outcome stands
            if rec.cause is None:
                rec.cause = "daemon"
            assert rec.task is not None
            rec.task.cancelled.set()
            if not rec.started:
                rec.skip = True
                rec.done = True
                rec.end_pending = True
        self._wake()

    def _on_lease(self, msg: Mapping[str, Any]) -> None:
        task_id = msg.get("task_id")
        lease = msg.get("lease")
        with self._lock:
            rec = self._records.get(task_id) if isinstance(task_id, str) else None
            if rec is None or not isinstance(lease, int) or isinstance(lease, bool):
                return
            rec.lease = lease
            rec.unconfirmed = False
            if rec.link == "limbo":
                rec.link = "active"
        self._wake()

    def _on_error(self, msg: Mapping[str, Any]) -> None:
        code = str(msg.get("code") or "")
        message = str(msg.get("message") or "")
        if code == "task_not_held":
            m = _NOT_HELD.search(message)
            with self._lock:
                rec = self._records.get(m.group(1)) if m else None
                if rec is not None and rec.link == "active":
                    log.info("muster: musterd does not hold task %s for this worker; dropping its reports", rec.id)
                    self._drop(rec, "not_held")
                elif m is None:
                    log.info("muster: musterd: task_not_held: %s", message)
            return
        if code == "unauthorized":
            raise Unauthorized(f"musterd refused the heartbeat token: {message}", code)
        if code == "superseded":
            raise Superseded(f"another connection said hello as worker {self.worker_id}: {message}", code)
        if code == "worker_mismatch":
            # This library names no other worker: the daemon holds the
            # connection to be another's (its client certificate's CN).
            self._refused_hello(msg)
        if code == "shutting_down":
            self._shutting_down = True
            log.info("muster: musterd is shutting down")
            return
        if code in ("idle_timeout", "hello_required", "worker_cap"):
            log.info("muster: musterd closes the connection: %s: %s", code, message)
            return
        log.warning("muster: musterd refused a frame: %s: %s", code, message)

    def _bye(self) -> None:
        sock = self._sock
        if sock is None:
            return
        try:
            sock.setblocking(True)
            sock.settimeout(1.0)
            with self._lock:
                # A frame half written must end before the bye's line
                # (over TLS: the chunk a send could not finish, whole).
                if self._tls_chunk is not None:
                    chunk, self._tls_chunk = self._tls_chunk, None
                    sock.sendall(chunk)
                    self._sent(len(chunk))
                if self._out and self._out[0].off > 0:
                    o = self._out.popleft()
                    self._out_bytes -= len(o.data)
                    sock.sendall(memoryview(o.data)[o.off :])
            sock.sendall(b'{"type":"bye"}\n')
            if isinstance(sock, ssl.SSLSocket):
                # TLS's end of writing (close_notify), then the wait for
                # the daemon's (or its close), within the timeout.
                sock.unwrap()
            else:
                sock.shutdown(socket.SHUT_WR)
                # Let the daemon read it before the connection goes.
                deadline = time.monotonic() + 1.0
                while time.monotonic() < deadline:
                    sock.settimeout(max(0.01, deadline - time.monotonic()))
                    if not sock.recv(65536):
                        break
        except OSError:
            pass
        self._disconnect("bye", quiet=True)

    # UDP

    def _udp_main(self) -> None:
        self._next_beat = time.monotonic()
        while True:
            now = time.monotonic()
            closing = self._bye_deadline is not None
            with self._lock:
                frames: List[Dict[str, Any]] = list(self._owed)
                self._owed.clear()
                soon = self._beat_soon and (closing or now - self._last_beat >= MIN_BEAT_SPACING)
                if now >= self._next_beat or soon:
                    self._last_beat = now
                    self._beat_soon = False
                    self._next_beat = now + self._interval
                    self._seq += 1
                    frames.append(self._beat_frame(self._state, self._seq))
            if closing:
                bye: Dict[str, Any] = {"type": "bye", "worker_id": self.worker_id}
                if self._token:
                    bye["token"] = self._token
                frames.append(bye)
            for f in frames:
                self._send_datagram(f)
            if closing:
                return
            timeout = self._next_beat - now
            if self._beat_soon:
                timeout = min(timeout, self._last_beat + MIN_BEAT_SPACING - now)
            self._wait(timeout)

    def _send_datagram(self, frame: Mapping[str, Any]) -> None:
        try:
            data = proto.encode(frame)
        except (TypeError, ValueError) as e:
            log.warning("muster: frame not sent: %s", e)
            return
        if len(data) > self.max_frame_bytes:
            log.warning("muster: %s frame of %d bytes not sent: over %d", frame.get("type"), len(data), self.max_frame_bytes)
            return
        for _ in range(len(self._addrs)):
            try:
                if self._udp_sock is None:
                    addr = self._addrs[self._at % len(self._addrs)]
                    info = socket.getaddrinfo(addr[0], addr[1], 0, socket.SOCK_DGRAM)[0]
                    s = socket.socket(info[0], socket.SOCK_DGRAM)
                    s.connect(info[4])
                    self._udp_sock = s
                    self._address = addr
                    self._connected.set()
                self._udp_sock.send(data)
                return
            except OSError as e:
                log.debug("muster: datagram to %s failed: %s", self._address, e)
                if self._udp_sock is not None:
                    self._udp_sock.close()
                    self._udp_sock = None
                self._connected.clear()
                self._at = (self._at + 1) % len(self._addrs)


class _Retry(Exception):
    """A hello refusal that another try may not meet (``worker_cap``...)."""


#: Hello refusals that the same hello would meet again.
_HELLO_FATAL = frozenset(
    {
        "too_large",
        "invalid_utf8",
        "not_json",
        "not_object",
        "missing_type",
        "unknown_type",
        "bad_worker_id",
        "reserved_id",
        "bad_field",
        "worker_mismatch",
        "tcp_only",
    }
)


def _snapshot(name: str, value: Any) -> Any:
    """A copy of a mapping or list given to ``set``, so that changing it
    later changes nothing sent."""
    if isinstance(value, Mapping):
        return {k: _snapshot(name, v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_snapshot(name, v) for v in value]
    return value


def _tune(sock: socket.socket) -> None:
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        if hasattr(socket, "TCP_KEEPIDLE"):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, 30)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, 10)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT, 3)
    except OSError:
        pass
