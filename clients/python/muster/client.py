"""A small producer client for musterd's HTTP API: submit tasks, read
them, wait for them to end, cancel them. Standard library only
(``http.client``)."""

from __future__ import annotations

import http.client
import json
import os
import ssl
import threading
import time
from typing import Any, Dict, List, Mapping, Optional, Tuple
from urllib.parse import quote, urlencode, urlsplit

from . import _proto as proto
from . import _tls
from .errors import APIError, NotFound

__all__ = ["Client"]

DEFAULT_URL = "http://127.0.0.1:8080"
#: musterd closes idle HTTP connections after 60 s: a connection idle for
#: longer than this is opened afresh rather than reused.
_REUSE_FOR = 30.0


class Client:
    """musterd's HTTP API at ``url`` (``MUSTER_URL`` when left out, else
    ``http://127.0.0.1:8080``; ``https://`` works too).

    Over ``https://`` the daemon's certificate must verify, against
    ``ca_file`` (a PEM bundle; ``MUSTER_TLS_CA_FILE`` when left out) or
    else the system's roots, and name the URL's host (an IP address must
    be among its IP SANs). ``ssl_context`` is a ready ``ssl.SSLContext``
    to use instead (for a client certificate, say). Neither is used over
    ``http://``.

    ``token`` (or ``token_file``) is the API token that changes (``POST``,
    ``DELETE``) carry as ``Authorization: Bearer`` when the daemon has
    ``api_token_file`` set; without one the daemon takes changes from
    loopback only. One keep-alive connection is used, one request at a
    time (the client may be shared by threads).
    """

    def __init__(
        self,
        url: Optional[str] = None,
        token: Optional[str] = None,
        *,
        token_file: Optional[str] = None,
        timeout: float = 10.0,
        ssl_context: Optional[ssl.SSLContext] = None,
        ca_file: Optional[str] = None,
    ) -> None:
        url = url or os.environ.get("MUSTER_URL") or DEFAULT_URL
        if "://" not in url:
            url = "http://" + url
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"{url!r} is not an http:// or https:// URL")
        self.url = url.rstrip("/")
        self._https = parts.scheme == "https"
        self._host = parts.hostname
        self._port = parts.port or (443 if self._https else 80)
        self._prefix = parts.path.rstrip("/")
        if token is None and token_file:
            token = proto.read_token_file(token_file)
        self._token = token
        self.timeout = timeout
        if ssl_context is not None and ca_file:
            raise ValueError("give either ssl_context or ca_file, not both")
        self._ssl: Optional[ssl.SSLContext] = None
        if self._https:
            # Made once, here: a CA file that cannot be used is a
            # ValueError now rather than at the first request.
            self._ssl = ssl_context or _tls.client_context(ca_file or os.environ.get("MUSTER_TLS_CA_FILE") or None)
        self._conn: Optional[http.client.HTTPConnection] = None
        self._used = 0.0
        self._lock = threading.Lock()

    # -- tasks --------------------------------------------------------------

    def submit(
        self,
        type: str,
        payload: Any = None,
        idempotency_key: Optional[str] = None,
        *,
        traceparent: Optional[str] = None,
        tracestate: Optional[str] = None,
        **fields: Any,
    ) -> Dict[str, Any]:
        """Submit a task of ``type`` with ``payload``; any other field of
        ``POST /api/tasks`` (``priority``, ``timeout_ms``, ``max_attempts``,
        ``labels``, ``worker_id``, ``delay_ms``, ``run_at``, ``retry``,
        ``depends_on``, ``concurrency_key``, ``unique_key``...) as a keyword.
        With ``idempotency_key`` a repeat gives back the first task
        instead of making another. Returns the task."""
        body: Dict[str, Any] = {"type": type}
        if payload is not None:
            body["payload"] = payload
        body.update(fields)
        headers: Dict[str, str] = {}
        if idempotency_key is not None:
            headers["Idempotency-Key"] = idempotency_key
        if traceparent is not None:
            headers["traceparent"] = traceparent
        if tracestate is not None:
            headers["tracestate"] = tracestate
        return self._object(
            self._request("POST", "/api/tasks", body, headers, retry_safe=idempotency_key is not None)
        )

    def show(self, task_id: str) -> Dict[str, Any]:
        """The task as the API shows it; ``NotFound`` when there is none."""
        return self._object(self._request("GET", f"/api/tasks/{quote(task_id, safe='')}"))

    def wait(self, task_id: str, timeout: Optional[float] = None, interval: float = 0.5) -> Dict[str, Any]:
        """Poll the task until it has ended (``succeeded``, ``failed``,
        ``cancelled``, ``timed_out`` or ``dead``) and return it. Raises
        ``TimeoutError`` after ``timeout`` seconds (``None``: no limit)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        pause = min(0.05, interval)
        while True:
            task = self.show(task_id)
            if task.get("state") in proto.ENDED_STATES:
                return task
            if deadline is not None:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"task {task_id} is still {task.get('state')} after {timeout} s")
                pause = min(pause, left)
            time.sleep(pause)
            pause = min(pause * 2, interval)

    def cancel(self, task_id: str) -> Dict[str, Any]:
        """Cancel the task: a queued one at once, a held one is asked to
        stop. Returns the task as it is then."""
        return self._object(self._request("DELETE", f"/api/tasks/{quote(task_id, safe='')}", retry_safe=True))

    def retry(self, task_id: str) -> Dict[str, Any]:
        """Start a task that ended otherwise than in success again."""
        return self._object(self._request("POST", f"/api/tasks/{quote(task_id, safe='')}/retry"))

    def tasks(self, **filters: Any) -> List[Dict[str, Any]]:
        """``GET /api/tasks`` with its filters (``state``, ``type``,
        ``worker_id``, ``label``, ``q``, ``limit``, ``after``...): one page."""
        query = urlencode({k: v for k, v in filters.items() if v is not None})
        body = self._object(self._request("GET", "/api/tasks" + (f"?{query}" if query else "")))
        return list(body.get("tasks", []))

    def logs(self, task_id: str, since: int = 0) -> Tuple[List[str], int]:
        """The task's log lines from line ``since`` on, and the offset to
        read from next."""
        path = f"/api/tasks/{quote(task_id, safe='')}/logs?since={int(since)}"
        body = self._object(self._request("GET", path, headers={"Accept": "application/json"}))
        return list(body.get("lines", [])), int(body.get("next", since))

    def close(self) -> None:
        with self._lock:
            self._drop()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # -- HTTP ---------------------------------------------------------------

    @staticmethod
    def _object(answer: Tuple[int, http.client.HTTPMessage, Any]) -> Dict[str, Any]:
        status, _, body = answer
        if not isinstance(body, dict):
            raise APIError(status, None, f"expected a JSON object, got {str(body)[:200]!r}")
        return body

    def _connect(self) -> http.client.HTTPConnection:
        if self._https:
            return http.client.HTTPSConnection(self._host, self._port, timeout=self.timeout, context=self._ssl)
        return http.client.HTTPConnection(self._host, self._port, timeout=self.timeout)

    def _drop(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def _request(
        self,
        method: str,
        path: str,
        body: Any = None,
        headers: Optional[Mapping[str, str]] = None,
        retry_safe: Optional[bool] = None,
    ) -> Tuple[int, http.client.HTTPMessage, Any]:
        if retry_safe is None:
            retry_safe = method in ("GET", "HEAD", "DELETE")
        h = {"Accept": "application/json"}
        if headers:
            h.update(headers)
        data: Optional[bytes] = None
        if body is not None:
            data = json.dumps(body, separators=(",", ":")).encode("utf-8")
            h["Content-Type"] = "application/json"
        if self._token and method not in ("GET", "HEAD"):
            h["Authorization"] = f"Bearer {self._token}"
        with self._lock:
            for attempt in (1, 2):
                now = time.monotonic()
                reused = self._conn is not None
                if reused and now - self._used > _REUSE_FOR:
                    self._drop()
                    reused = False
                if self._conn is None:
                    self._conn = self._connect()
                conn = self._conn
                try:
                    conn.request(method, self._prefix + path, body=data, headers=h)
                    resp = conn.getresponse()
                    raw = resp.read()
                except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
                    # A kept-alive connection the server had closed.
                    self._drop()
                    if reused and retry_safe and attempt == 1:
                        continue
                    raise
                except Exception:
                    self._drop()
                    raise
                self._used = time.monotonic()
                if resp.will_close:
                    self._drop()
                break
        status = resp.status
        parsed: Any = None
        if raw:
            try:
                parsed = json.loads(raw.decode("utf-8"))
            except ValueError:
                parsed = raw.decode("utf-8", "replace")
        if status >= 400:
            code = parsed.get("error") if isinstance(parsed, dict) else None
            message = parsed.get("message") if isinstance(parsed, dict) else None
            cls = NotFound if status == 404 else APIError
            raise cls(status, code, str(message or parsed or resp.reason))
        return status, resp.headers, parsed
