"""The conformance runner of the Python client (clients/conformance/README.md):
a worker made with the library's public API, driven over standard input.

    PYTHONPATH=clients/python python3 clients/python/conformance/runner.py
"""

from __future__ import annotations

import json
import logging
import os
import sys
import threading
from typing import Any, Dict, Optional

import muster

LANG = "python"

_out_lock = threading.Lock()


def say(line: str) -> None:
    with _out_lock:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()


def one_line(text: object) -> str:
    return " ".join(str(text).split())


def make_worker() -> muster.Worker:
    """The runner's worker. TLS comes from the library's own defaults:
    ``MUSTER_TLS``, ``MUSTER_TLS_CA_FILE``, ``MUSTER_TLS_CERT_FILE`` and
    ``MUSTER_TLS_KEY_FILE``."""
    env = os.environ
    worker = muster.Worker(
        env.get("MUSTER_WORKER_ID"),
        env.get("MUSTER_ADDRS"),
        token_file=env.get("MUSTER_HEARTBEAT_TOKEN_FILE") or None,
        labels={"client": LANG},
        capacity=4,
    )
    runs_file = env.get("MUSTER_CONFORMANCE_RUNS")
    runs_lock = threading.Lock()

    @worker.task("echo")
    def echo(task: muster.Task) -> Any:
        task.log(f"hello from {LANG}")
        task.progress(0.5, "halfway")
        return {"echo": task.payload, "client": LANG}

    @worker.task("fail")
    def fail(task: muster.Task) -> Any:
        raise muster.TaskError("boom", retryable=False)

    @worker.task("flaky")
    def flaky(task: muster.Task) -> Any:
        if task.attempt == 1:
            raise muster.TaskError("try again", retryable=True)
        return {"attempt": task.attempt}

    @worker.task("wait")
    def wait(task: muster.Task) -> Any:
        if task.cancelled.wait(60):
            task.log("cancel seen")
            return None
        return {"waited": True}

    @worker.task("slow")
    def slow(task: muster.Task) -> Any:
        if runs_file:
            with runs_lock, open(runs_file, "a") as f:
                f.write(task.id + "\n")
        task.cancelled.wait(3)
        return {"slept": True}

    return worker


def command(line: str, worker: muster.Worker, client: muster.Client) -> Optional[str]:
    """One command's answer (``None``: the runner is done)."""
    verb, _, rest = line.partition(" ")
    try:
        if verb == "set":
            fields: Dict[str, Any] = json.loads(rest)
            if not isinstance(fields, dict):
                return "error set takes a JSON object"
            try:
                worker.set(**fields)
            except (ValueError, TypeError) as e:
                return f"error {one_line(e)}"
            return "ok"
        if verb == "run":
            seconds, _, outcome = rest.partition(" ")
            if outcome not in ("ok", "fail"):
                return "error run SECONDS ok|fail"
            worker.record_run(float(seconds), outcome == "ok")
            return "ok"
        if verb == "submit":
            task_type, _, tail = rest.partition(" ")
            payload_text, _, key = tail.rpartition(" ")
            if not task_type or not payload_text or not key:
                return "error submit TYPE JSON KEY"
            task = client.submit(
                task_type,
                json.loads(payload_text),
                idempotency_key=None if key == "-" else key,
            )
            return f"task {task['id']}"
        if verb == "wait":
            try:
                task = client.wait(rest.strip(), timeout=30)
            except TimeoutError:
                task = client.show(rest.strip())
            return f"state {task.get('state')}"
        if verb == "show":
            task = client.show(rest.strip())
            return "task " + json.dumps(task, separators=(",", ":"))
        if verb == "cancel":
            client.cancel(rest.strip())
            return "ok"
        if verb == "bye":
            return None
        return f"error unknown command {verb!r}"
    except (muster.MusterError, OSError, ValueError) as e:
        return f"error {one_line(e)}"


def main() -> int:
    logging.basicConfig(stream=sys.stderr, level=logging.WARNING, format="runner: %(message)s")
    try:
        worker = make_worker()
        # https:// is verified against MUSTER_TLS_CA_FILE (else the
        # system's roots).
        client = muster.Client(os.environ.get("MUSTER_URL"))
    except (ValueError, OSError) as e:
        say(f"fatal {one_line(e)}")
        return 3
    worker.start()

    def watch() -> None:
        # A fatal refusal (unauthorized, worker_mismatch: the TLS client
        # certificate names another worker, superseded...) ends the run.
        try:
            worker.run()
        except muster.FatalError as e:
            say(f"fatal {one_line(e)}")
            sys.stdout.flush()
            os._exit(3)

    # `ready` first: a fatal refusal may come at once, and the contract
    # has `ready` as the first line.
    say("ready")
    threading.Thread(target=watch, name="runner-watch", daemon=True).start()
    for raw in sys.stdin:
        line = raw.strip()
        if not line:
            continue
        answer = command(line, worker, client)
        if answer is None:
            break
        say(answer)
    worker.close()
    client.close()
    if worker.error is not None:
        say(f"fatal {one_line(worker.error)}")
        return 3
    return 0


if __name__ == "__main__":
    sys.exit(main())
