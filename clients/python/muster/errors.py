"""The exceptions the library raises."""

from __future__ import annotations

from typing import Optional


class MusterError(Exception):
    """Base class of every exception this library raises."""


class FrameTooLarge(MusterError, ValueError):
    """A frame would be over the frame limit (``max_frame_bytes``, 65,536 by
    default). It is refused before anything is sent, and the connection is
    kept."""

    def __init__(self, size: int, limit: int, what: str = "frame") -> None:
        super().__init__(f"{what} of {size} bytes is over the limit of {limit} bytes")
        self.size = size
        self.limit = limit


class FatalError(MusterError):
    """The worker stopped for good: ``Worker.run()`` raises it, and
    ``Worker.error`` holds it. Reconnecting would not help."""

    def __init__(self, message: str, code: Optional[str] = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class Unauthorized(FatalError):
    """musterd refused the heartbeat token (error code ``unauthorized``)."""


class HelloRefused(FatalError):
    """musterd refused the worker's ``hello`` for a reason that another try
    would meet again (``bad_worker_id``, ``reserved_id``, ``bad_field``,
    ``too_large``, ...); ``code`` is the daemon's error code."""


class WorkerMismatch(HelloRefused):
    """musterd refused the ``hello`` because the connection speaks for
    another worker (error code ``worker_mismatch``): over TLS with client
    certificates, the certificate's subject CN is the worker's identity,
    and the hello named another id. Give the worker the id its certificate
    names (or the certificate of its id)."""


class Superseded(FatalError):
    """Another connection said ``hello`` with this worker's id, and the
    newer one wins (error code ``superseded``). Two processes share an id;
    this one steps aside rather than take the id back and forth."""


class TaskError(MusterError):
    """Raise it from a task handler to fail the task with this message.

    ``retryable=False`` says another attempt would fail the same way: the
    task ends ``failed`` at once instead of being tried again.
    ``exit_code`` is reported with the failure when given.
    """

    def __init__(
        self, message: str, retryable: bool = True, exit_code: Optional[int] = None
    ) -> None:
        super().__init__(message)
        self.message = message
        self.retryable = retryable
        self.exit_code = exit_code


class TaskCancelled(MusterError):
    """Raised by ``Task.raise_if_cancelled()`` once the task was cancelled.
    A handler may let it propagate: the library reports the task as the
    cancel requires."""


class APIError(MusterError):
    """An HTTP answer of musterd that is not a success: ``status`` is the
    HTTP status, ``code`` and ``message`` are the body's ``error`` and
    ``message`` when it has them."""

    def __init__(self, status: int, code: Optional[str], message: str) -> None:
        super().__init__(f"HTTP {status}: {code or 'error'}: {message}")
        self.status = status
        self.code = code
        self.message = message


class NotFound(APIError):
    """HTTP 404: no such task."""
