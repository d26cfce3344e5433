"""muster: the Python worker library of musterd.

A ``Worker`` joins musterd's roll call over TCP (or UDP), beats at the
interval the daemon gives, reports its state and runs, and runs the
tasks it is handed with the handlers registered for their types. A
``Client`` submits tasks over the HTTP API and waits for them.

    import muster

    worker = muster.Worker("resizer-1", labels={"team": "media"}, capacity=4)

    @worker.task("resize")
    def resize(task):
        task.log("resizing", task.payload["file"])
        task.progress(0.5, "halfway")
        return {"resized": task.payload["file"]}

    worker.run()
"""

import logging as _logging

from .client import Client
from .errors import (
    APIError,
    FatalError,
    FrameTooLarge,
    HelloRefused,
    MusterError,
    NotFound,
    Superseded,
    TaskCancelled,
    TaskError,
    Unauthorized,
    WorkerMismatch,
)
from .worker import Task, Worker

__version__ = "0.1.0"

# The library logs to the "muster" logger; the application decides where
# that goes (logging.basicConfig() shows its warnings).
_logging.getLogger("muster").addHandler(_logging.NullHandler())

__all__ = [
    "APIError",
    "Client",
    "FatalError",
    "FrameTooLarge",
    "HelloRefused",
    "MusterError",
    "NotFound",
    "Superseded",
    "Task",
    "TaskCancelled",
    "TaskError",
    "Unauthorized",
    "Worker",
    "WorkerMismatch",
    "__version__",
]
