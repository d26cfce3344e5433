"""The Worker's public API against a fake musterd in this process."""

from __future__ import annotations

import json
import os
import select
import socket
import threading
import time
import unittest
from typing import Any, List
from unittest import mock

from _support import FakeDaemon, dead_address, fast, is_update, task_frame

import muster


class Base(unittest.TestCase):
    def setUp(self) -> None:
        self.daemons: List[FakeDaemon] = []
        self.workers: List[muster.Worker] = []
        env = {k: v for k, v in os.environ.items() if not k.startswith("MUSTER_")}
        patcher = mock.patch.dict(os.environ, env, clear=True)
        patcher.start()
        self.addCleanup(patcher.stop)

    def tearDown(self) -> None:
        for w in self.workers:
            w.close(timeout=0.5)
        for d in self.daemons:
            d.close()

    def daemon(self, **kw: Any) -> FakeDaemon:
        d = FakeDaemon(**kw)
        self.daemons.append(d)
        return d

    def worker(self, *args: Any, **kw: Any) -> muster.Worker:
        w = fast(muster.Worker(*args, **kw))
        self.workers.append(w)
        return w


class Joining(Base):
    def test_hello_then_heartbeats_with_rising_seq(self) -> None:
        d = self.daemon(interval_ms=50)
        w = self.worker("w1", d.addr, labels={"team": "ml"}, capacity=2)

        @w.task("resize")
        def resize(task: muster.Task) -> None:
            return None

        w.handle("scan", lambda t: None)
        w.start()
        c = d.wait_conn(0)
        hello = c.hello
        assert hello is not None
        self.assertEqual(hello["worker_id"], "w1")
        self.assertEqual(hello["pid"], os.getpid())
        self.assertEqual(hello["hostname"], socket.gethostname())
        self.assertEqual(hello["capacity"], 2)
        self.assertEqual(hello["task_types"], ["resize", "scan"])
        self.assertEqual(hello["labels"], {"team": "ml"})
        self.assertNotIn("token", hello)
        self.assertNotIn("running", hello)
        d.wait_for(lambda f: f.get("type") == "heartbeat" and f.get("seq") == 4)
        beats = d.frames("heartbeat")
        self.assertEqual([b["seq"] for b in beats[:4]], [1, 2, 3, 4])
        self.assertEqual(beats[0]["status"], "idle")
        self.assertNotIn("worker_id", beats[0], "a TCP session needs no id after hello")
        self.assertTrue(w.connected)
        self.assertEqual(w.address, d.addr)
        self.assertAlmostEqual(w.heartbeat_interval, 0.05)

    def test_the_first_beat_follows_the_welcome_at_once(self) -> None:
        d = self.daemon(interval_ms=10_000)
        w = self.worker("w1", d.addr).start()
        d.wait_for(lambda f: f.get("type") == "heartbeat", timeout=2)
        self.assertTrue(w.wait_connected(1))

    def test_no_handlers_takes_no_tasks(self) -> None:
        d = self.daemon()
        self.worker("w1", d.addr, capacity=3).start()
        hello = d.wait_conn(0).hello
        assert hello is not None
        self.assertNotIn("capacity", hello)
        self.assertNotIn("task_types", hello)

    def test_from_the_environment(self) -> None:
        d = self.daemon()
        dead = dead_address()
        token = os.path.join(os.path.dirname(__file__), "..", "build-token.tmp")
        with open(token, "w") as f:
            f.write("s3cret\nsecond line\n")
        self.addCleanup(os.remove, token)
        os.environ.update(
            MUSTER_ADDRS=f"{dead},{d.addr}",
            MUSTER_WORKER_ID="env-1",
            MUSTER_HEARTBEAT_TOKEN_FILE=token,
            MUSTER_LABELS="a=1,b=2",
            MUSTER_CAPACITY="3",
        )
        w = self.worker()
        w.handle("t", lambda t: None)
        self.assertEqual(w.worker_id, "env-1")
        self.assertEqual(w.addresses, [dead, d.addr])
        self.assertEqual(w.labels, {"a": "1", "b": "2"})
        self.assertEqual(w.capacity, 3)
        w.start()
        hello = d.wait_conn(0).hello
        assert hello is not None
        self.assertEqual(hello["token"], "s3cret")
        self.assertEqual(hello["capacity"], 3)

    def test_bad_configuration_is_refused_at_once(self) -> None:
        with self.assertRaises(ValueError):
            muster.Worker("bad id")
        with self.assertRaises(ValueError):
            muster.Worker("registry")
        with self.assertRaises(ValueError):
            muster.Worker("w", "nohost")
        with self.assertRaises(ValueError):
            muster.Worker("w", labels={"k": 1})  # type: ignore[dict-item]
        with self.assertRaises(ValueError):
            muster.Worker("w", capacity=-1)
        with self.assertRaises(ValueError):
            muster.Worker("w", transport="udp").handle("t", lambda t: None)


class State(Base):
    def test_set_is_carried_by_the_next_beat_and_every_one_after(self) -> None:
        d = self.daemon(interval_ms=5000)
        w = self.worker("w1", d.addr).start()
        d.wait_for(lambda f: f.get("type") == "heartbeat")
        t0 = time.monotonic()
        w.set(status="working", queue_depth=3, current_job={"id": "j1", "type": "scan"}, cpu_usage=12.5, memory_usage=3)
        beat = d.wait_for(lambda f: f.get("type") == "heartbeat" and f.get("queue_depth") == 3, timeout=2)
        self.assertLess(time.monotonic() - t0, 1.0, "sent soon, not at the next interval")
        self.assertEqual(beat["status"], "working")
        self.assertEqual(beat["current_job"], {"id": "j1", "type": "scan"})
        self.assertEqual(beat["cpu_usage"], 12.5)
        self.assertEqual(beat["memory_usage"], 3)
        w.set(current_job=None, status=None)
        beat = d.wait_for(lambda f: f.get("type") == "heartbeat" and "current_job" in f and f["current_job"] is None)
        self.assertEqual(beat["status"], "idle", "back to the automatic status")
        self.assertEqual(beat["queue_depth"], 3, "kept")

    def test_an_oversized_set_is_refused_before_sending_and_the_connection_stays(self) -> None:
        d = self.daemon(interval_ms=50)
        w = self.worker("w1", d.addr).start()
        d.wait_for(lambda f: f.get("type") == "heartbeat")
        with self.assertRaises(muster.FrameTooLarge) as cm:
            w.set(current_job={"id": "x" * 70000})
        self.assertGreater(cm.exception.size, 65536)
        w.set(queue_depth=7)
        d.wait_for(lambda f: f.get("type") == "heartbeat" and f.get("queue_depth") == 7)
        time.sleep(0.2)
        self.assertEqual(d.accepts, 1, "the same connection")
        self.assertLessEqual(max(d.conns[0].raw_sizes), 65536)
        self.assertFalse(any("current_job" in f for f in d.frames("heartbeat")), "nothing of it was sent")

    def test_values_the_daemon_would_refuse_raise(self) -> None:
        d = self.daemon()
        w = self.worker("w1", d.addr)
        for kw in (
            {"status": "busy"},
            {"cpu_usage": -1},
            {"memory_usage": 200},
            {"queue_depth": -2},
            {"current_job": "j1"},
            {"labels": {"k": 5}},
            {"cpu_usage": float("nan")},
        ):
            with self.assertRaises(ValueError, msg=str(kw)):
                w.set(**kw)
        with self.assertRaises(TypeError):
            w.set(queue=3)  # type: ignore[call-arg]

    def test_record_run(self) -> None:
        d = self.daemon()
        w = self.worker("w1", d.addr).start()
        w.record_run(1.5, True)
        w.record_run(0.25, False, exit_code=2)
        d.wait_for(lambda f: f.get("type") == "run" and f.get("ok") is False)
        runs = d.frames("run")
        self.assertEqual(runs[0], {"type": "run", "duration_ms": 1500.0, "ok": True})
        self.assertEqual(runs[1], {"type": "run", "duration_ms": 250.0, "ok": False, "exit_code": 2})
        with self.assertRaises(ValueError):
            w.record_run(-1, True)
        with self.assertRaises(ValueError):
            w.record_run(31 * 24 * 3600, True)

    def test_runs_recorded_before_the_connection_wait_for_it(self) -> None:
        d = self.daemon()
        w = self.worker("w1", d.addr)
        w.record_run(2, True)
        w.start()
        d.wait_for(lambda f: f.get("type") == "run" and f.get("duration_ms") == 2000)


class Tasks(Base):
    def test_a_task_runs_and_reports_in_order(self) -> None:
        d = self.daemon()
        w = self.worker("w1", d.addr, capacity=2)

        @w.task("echo")
        def echo(task: muster.Task) -> Any:
            task.log("hello", "two\nthree")
            task.progress(0.5, "halfway")
            return {"echo": task.payload, "attempt": task.attempt, "id": task.id}

        w.start()
        c = d.wait_conn(0)
        c.send(task_frame("t1", "echo", {"a": 1}, attempt=2, timeout_ms=5000))
        end = d.wait_for(is_update("t1", "succeeded"))
        self.assertEqual(end["result"], {"echo": {"a": 1}, "attempt": 2, "id": "t1"})
        about = [f for f in d.frames() if f.get("task_id") == "t1"]
        self.assertEqual([f["type"] for f in about], ["task_update", "task_log", "task_progress", "task_update"])
        self.assertEqual(about[0]["state"], "running")
        self.assertEqual(about[1]["lines"], ["hello", "two", "three"])
        self.assertEqual(about[2], {"type": "task_progress", "task_id": "t1", "fraction": 0.5, "message": "halfway"})

    def test_failures(self) -> None:
        d = self.daemon()
        w = self.worker("w1", d.addr, capacity=2)

        @w.task("fail")
        def fail(task: muster.Task) -> Any:
            raise muster.TaskError("boom", retryable=False, exit_code=4)

        @w.task("crash")
        def crash(task: muster.Task) -> Any:
            raise RuntimeError("try again")

        @w.task("odd")
        def odd(task: muster.Task) -> Any:
            return object()

        w.start()
        c = d.wait_conn(0)
        c.send(task_frame("t1", "fail"))
        c.send(task_frame("t2", "crash"))
        c.send(task_frame("t3", "odd"))
        c.send(task_frame("t4", "nobody"))
        f1 = d.wait_for(is_update("t1", "failed"))
        self.assertEqual((f1["error"], f1["retryable"], f1["exit_code"]), ("boom", False, 4))
        f2 = d.wait_for(is_update("t2", "failed"))
        self.assertEqual((f2["error"], f2["retryable"]), ("RuntimeError: try again", True))
        logged = [line for f in d.frames("task_log") if f["task_id"] == "t2" for line in f["lines"]]
        self.assertTrue(any("Traceback" in line for line in logged), "the traceback is in the task's log")
        f3 = d.wait_for(is_update("t3", "failed"))
        self.assertFalse(f3["retryable"])
        self.assertIn("not JSON", f3["error"])
        f4 = d.wait_for(is_update("t4", "failed"))
        self.assertIn("no handler", f4["error"])

    def test_a_result_over_the_frame_limit_fails_the_task(self) -> None:
        d = self.daemon()
        w = self.worker("w1", d.addr)
        w.handle("big", lambda t: "x" * 70000)
        w.start()
        d.wait_conn(0).send(task_frame("t1", "big"))
        f = d.wait_for(is_update("t1", "failed"))
        self.assertFalse(f["retryable"])
        self.assertLessEqual(max(d.conns[0].raw_sizes), 65536)

    def test_capacity_threads_run_at_once(self) -> None:
        d = self.daemon()
        w = self.worker("w1", d.addr, capacity=3)
        gate = threading.Barrier(3, timeout=5)
        w.handle("meet", lambda t: gate.wait())
        w.start()
        c = d.wait_conn(0)
        for i in range(3):
            c.send(task_frame(f"t{i}", "meet"))
        for i in range(3):
            d.wait_for(is_update(f"t{i}", "succeeded"))

    def test_each_end_goes_out_as_soon_as_its_handler_returns(self) -> None:
        # As musterd does: the next task as soon as an end is read. The
        # beats are 10 s apart, so only the handlers' wakes of the link
        # thread move the outcomes; one wake lost would stall the run.
        d = self.daemon(interval_ms=10_000)
        w = self.worker("w1", d.addr, capacity=4)
        w.handle("noop", lambda t: None)
        w.start()
        c = d.wait_conn(0)
        total, sent, ended, seen = 1000, 0, 0, 0
        for _ in range(4):
            c.send(task_frame(f"t{sent}", "noop"))
            sent += 1
        deadline = time.monotonic() + 3
        while ended < total:
            with d.cond:
                while True:
                    left = deadline - time.monotonic()
                    self.assertGreater(left, 0, f"{ended} of {total} tasks ended in 3 s")
                    if seen < len(d.log):
                        break
                    d.cond.wait(left)
                new = [f for _, f in d.log[seen:]]
                seen = len(d.log)
            for f in new:
                if f.get("type") == "task_update" and f.get("state") == "succeeded":
                    ended += 1
                    if sent < total:
                        c.send(task_frame(f"t{sent}", "noop"))
                        sent += 1

    def test_a_wake_while_the_link_thread_drains_is_not_lost(self) -> None:
        # The race behind the test above, made to happen every time: a
        # handler's wake comes while the link thread reads the wake bytes.
        w = self.worker("w1", dead_address(), capacity=1)
        r, wr = socket.socketpair()
        self.addCleanup(r.close)
        self.addCleanup(wr.close)
        r.setblocking(False)

        class Racing:
            calls = 0

            def recv(self, n: int) -> bytes:
                Racing.calls += 1
                if Racing.calls == 1:
                    data = r.recv(n)
                    w._wake()  # another thread, between two reads
                    return data
                return r.recv(n)

            def close(self) -> None:
                pass

        w._wake_r, w._wake_w = Racing(), wr  # type: ignore[assignment]
        w._wake()
        w._drain_wake()
        w._wake()  # a later change: the link thread must hear of it
        readable, _, _ = select.select([r], [], [], 0.5)
        self.assertEqual(readable, [r], "a wake was lost: the link thread would sleep on")

    def test_status_is_working_while_a_handler_runs(self) -> None:
        d = self.daemon(interval_ms=50)
        w = self.worker("w1", d.addr)
        release = threading.Event()
        w.handle("hold", lambda t: release.wait(5))
        w.start()
        d.wait_conn(0).send(task_frame("t1", "hold"))
        beat = d.wait_for(lambda f: f.get("type") == "heartbeat" and f.get("status") == "working")
        self.assertEqual(beat["running_tasks"], [{"task_id": "t1", "task_type": "hold"}])
        self.assertEqual(w.running, ["t1"])
        release.set()
        d.wait_for(is_update("t1", "succeeded"))
        n = len(d.frames("heartbeat"))
        d.wait_for(lambda f: f.get("type") == "heartbeat" and f.get("status") == "idle" and f["seq"] > n)

    def test_cancel_reaches_the_handler_and_is_reported(self) -> None:
        d = self.daemon()
        w = self.worker("w1", d.addr)
        seen = threading.Event()

        @w.task("wait")
        def wait(task: muster.Task) -> Any:
            if task.cancelled.wait(10):
                task.log("cancel seen")
                seen.set()
            return {"finished": True}

        w.start()
        c = d.wait_conn(0)
        c.send(task_frame("t1", "wait"))
        d.wait_for(is_update("t1", "running"))
        c.send({"type": "cancel", "task_id": "t1"})
        d.wait_for(is_update("t1", "cancelled"))
        self.assertTrue(seen.is_set())
        self.assertEqual(d.frames("task_log")[-1]["lines"], ["cancel seen"])
        self.assertFalse(any(is_update("t1", "succeeded")(f) for f in d.frames()))

    def test_a_cancel_before_the_handler_starts_reports_cancelled_alone(self) -> None:
        d = self.daemon()
        w = self.worker("w1", d.addr, capacity=1)
        release = threading.Event()
        started: List[str] = []

        def hold(task: muster.Task) -> None:
            started.append(task.id)
            release.wait(5)

        w.handle("hold", hold)
        w.start()
        c = d.wait_conn(0)
        c.send(task_frame("t1", "hold"))
        c.send(task_frame("t2", "hold"))
        d.wait_for(is_update("t1", "running"))
        c.send({"type": "cancel", "task_id": "t2"})
        d.wait_for(is_update("t2", "cancelled"))
        release.set()
        d.wait_for(is_update("t1", "succeeded"))
        time.sleep(0.1)
        self.assertEqual(started, ["t1"])
        self.assertFalse(any(is_update("t2", "running")(f) for f in d.frames()))

    def test_task_not_held_drops_the_reports_and_stops_the_handler(self) -> None:
        d = self.daemon()
        w = self.worker("w1", d.addr)
        stopped = threading.Event()

        @w.task("hold")
        def hold(task: muster.Task) -> Any:
            if task.cancelled.wait(5):
                stopped.set()
            task.log("after")
            return 1

        w.start()
        c = d.wait_conn(0)
        c.send(task_frame("t1", "hold"))
        d.wait_for(is_update("t1", "running"))
        c.send({"type": "error", "code": "task_not_held", "message": "task t1 is not held by w1"})
        self.assertTrue(stopped.wait(2))
        time.sleep(0.2)
        about = [f for f in d.frames() if f.get("task_id") == "t1"]
        self.assertEqual(len(about), 1, about)
        self.assertEqual(w.running, [])

    def test_a_handler_registered_after_start_says_hello_again(self) -> None:
        d = self.daemon()
        w = self.worker("w1", d.addr)
        w.handle("a", lambda t: None)
        w.start()
        d.wait_conn(0)
        w.handle("b", lambda t: "b")
        hello = d.wait_for(lambda f: f.get("type") == "hello" and f.get("task_types") == ["a", "b"])
        self.assertNotIn("running", hello)
        self.assertEqual(d.accepts, 1)


class Errors(Base):
    def test_a_refused_token_is_fatal(self) -> None:
        d = self.daemon(token="right")
        w = self.worker("w1", d.addr, token="wrong")
        t0 = time.monotonic()
        with self.assertRaises(muster.Unauthorized):
            w.run()
        self.assertLess(time.monotonic() - t0, 3)
        self.assertIsInstance(w.error, muster.Unauthorized)
        self.assertEqual(d.accepts, 1, "not retried")

    def test_the_right_token_is_sent(self) -> None:
        d = self.daemon(token="right")
        w = self.worker("w1", d.addr, token="right").start()
        d.wait_for(lambda f: f.get("type") == "heartbeat")
        self.assertNotIn("token", d.frames("heartbeat")[0], "over TCP the hello carried it")
        self.assertTrue(w.connected)

    def test_a_refused_hello_is_fatal(self) -> None:
        def refuse(c: Any, hello: Any) -> bool:
            c.send({"type": "error", "code": "bad_field", "message": "labels: more than 64"})
            return True

        d = self.daemon(on_hello=refuse)
        w = self.worker("w1", d.addr)
        with self.assertRaises(muster.HelloRefused) as cm:
            w.run()
        self.assertEqual(cm.exception.code, "bad_field")

    def test_superseded_is_fatal(self) -> None:
        d = self.daemon()
        w = self.worker("w1", d.addr).start()
        c = d.wait_conn(0)
        c.send({"type": "error", "code": "superseded", "message": "another connection said hello"})
        c.close()
        with self.assertRaises(muster.Superseded):
            w.run()

    def test_unknown_codes_and_refused_frames_keep_the_connection(self) -> None:
        d = self.daemon(interval_ms=50)
        w = self.worker("w1", d.addr).start()
        c = d.wait_conn(0)
        c.send({"type": "error", "code": "bad_field", "message": "cpu_usage: must be from 0 to 409600"})
        c.send({"type": "error", "code": "something_new", "message": "?"})
        c.send({"type": "surprise"})
        n = len(d.frames("heartbeat"))
        d.wait_for(lambda f: f.get("type") == "heartbeat" and f["seq"] > n + 2)
        self.assertEqual(d.accepts, 1)
        self.assertIsNone(w.error)


class Reconnecting(Base):
    def test_a_dead_first_address_is_passed_over_at_once(self) -> None:
        d = self.daemon()
        w = self.worker("w1", [dead_address(), d.addr])
        t0 = time.monotonic()
        w.start()
        self.assertTrue(w.wait_connected(3))
        self.assertLess(time.monotonic() - t0, 0.5)
        self.assertEqual(w.address, d.addr)

    def test_after_every_address_failed_it_backs_off(self) -> None:
        # A daemon that closes at once: each round fails, and rounds are
        # spaced out rather than hammered.
        def hang_up(c: Any, hello: Any) -> bool:
            c.close()
            return True

        d = self.daemon(on_hello=hang_up)
        w = muster.Worker("w1", d.addr)
        self.workers.append(w)
        w._backoff.first, w._backoff.maximum = 0.1, 0.4
        w._backoff.reset()
        w.start()
        time.sleep(1.2)
        # Waits of 0.1, 0.2, 0.4, 0.4... each 0.5x to 1.5x: a handful, not hundreds.
        self.assertGreaterEqual(d.accepts, 3)
        self.assertLessEqual(d.accepts, 12)

    def test_the_welcomes_nodes_join_the_list(self) -> None:
        d = self.daemon(nodes=["127.0.0.1:1", "node-b:8090"])
        w = self.worker("w1", d.addr).start()
        w.wait_connected(3)
        self.assertEqual(w.addresses, [d.addr, "127.0.0.1:1", "node-b:8090"])

    def test_a_lost_connection_re_reports_running_tasks_and_their_reports_wait(self) -> None:
        d = self.daemon()
        w = self.worker("w1", d.addr)
        said = threading.Event()
        finish = threading.Event()

        @w.task("long")
        def long(task: muster.Task) -> Any:
            said.wait(5)
            task.log("during the outage")
            finish.wait(5)
            return {"lease": task.lease}

        w.start()
        c0 = d.wait_conn(0)
        c0.send(task_frame("t1", "long", lease=7))
        d.wait_for(is_update("t1", "running"))
        c0.close()
        said.set()
        c1 = d.wait_conn(1)
        assert c1.hello is not None
        self.assertEqual(c1.hello["running"], [{"task_id": "t1", "lease": 7}])
        log = d.wait_for(lambda f: f.get("type") == "task_log", conn=1)
        self.assertEqual(log["lines"], ["during the outage"])
        finish.set()
        end = d.wait_for(is_update("t1", "succeeded"), conn=1)
        self.assertEqual(end["result"], {"lease": 7})
        self.assertEqual(len(d.frames("task_log")), 1)

    def test_a_lease_frame_updates_what_the_next_hello_reports(self) -> None:
        d = self.daemon()
        w = self.worker("w1", d.addr)
        finish = threading.Event()
        w.handle("long", lambda t: finish.wait(5))
        w.start()
        c0 = d.wait_conn(0)
        c0.send(task_frame("t1", "long"))
        d.wait_for(is_update("t1", "running"))
        c0.close()
        c1 = d.wait_conn(1)
        assert c1.hello is not None
        self.assertEqual(c1.hello["running"], [{"task_id": "t1", "lease": 0}], "0 when the task had none")
        c1.send({"type": "lease", "task_id": "t1", "lease": 9})
        time.sleep(0.1)
        c1.close()
        c2 = d.wait_conn(2)
        assert c2.hello is not None
        self.assertEqual(c2.hello["running"], [{"task_id": "t1", "lease": 9}])
        finish.set()
        d.wait_for(is_update("t1", "succeeded"), conn=2)

    def test_a_restarted_daemon_that_hands_the_task_back_gets_the_same_run(self) -> None:
        """A single node restarted: it answers the re-report with cancel,
        then offers the requeued task again; the handler goes on, started
        once."""

        def restarted(c: Any, hello: Any) -> bool:
            c.send(c.daemon.welcome_frame(hello["worker_id"]))
            for r in hello.get("running", []):
                c.send({"type": "cancel", "task_id": r["task_id"]})
                c.send(task_frame(r["task_id"], "slow", attempt=2))
            return True

        d = self.daemon()
        w = self.worker("w1", d.addr)
        starts: List[int] = []
        finish = threading.Event()

        @w.task("slow")
        def slow(task: muster.Task) -> Any:
            starts.append(task.attempt)
            finish.wait(5)
            return {"slept": True, "cancelled": task.cancelled.is_set(), "attempt": task.attempt}

        w.start()
        c0 = d.wait_conn(0)
        c0.send(task_frame("t1", "slow"))
        d.wait_for(is_update("t1", "running"))
        d.on_hello = restarted
        c0.close()
        d.wait_for(is_update("t1", "running"), conn=1)
        finish.set()
        end = d.wait_for(is_update("t1", "succeeded"), conn=1)
        self.assertEqual(end["result"], {"slept": True, "cancelled": False, "attempt": 2})
        time.sleep(0.2)
        self.assertEqual(starts, [1], "started once")
        self.assertFalse(any(is_update("t1", "cancelled")(f) for f in d.frames()))

    def test_a_task_that_ended_during_the_outage_is_answered_with_its_end(self) -> None:
        def restarted(c: Any, hello: Any) -> bool:
            # The reconnect can beat the handler's end: the daemon answers
            # once the task has ended during the outage, as the test means.
            ended.wait(5)
            time.sleep(0.2)
            c.send(c.daemon.welcome_frame(hello["worker_id"]))
            for r in hello.get("running", []):
                c.send({"type": "cancel", "task_id": r["task_id"]})
                c.send(task_frame(r["task_id"], "quick", attempt=2))
            return True

        d = self.daemon()
        w = self.worker("w1", d.addr)
        w._backoff.first = w._backoff.maximum = 0.3
        w._backoff.reset()
        gate, ended = threading.Event(), threading.Event()

        def quick(t: Any) -> str:
            gate.wait(5)
            ended.set()
            return "done"

        w.handle("quick", quick)
        w.start()
        c0 = d.wait_conn(0)
        c0.send(task_frame("t1", "quick"))
        d.wait_for(is_update("t1", "running"))
        d.on_hello = restarted
        c0.close()
        gate.set()
        end = d.wait_for(is_update("t1", "succeeded"), conn=1)
        self.assertEqual(end["result"], "done")
        about = [f for f in d.frames(conn=1) if f.get("task_id") == "t1"]
        self.assertEqual(len(about), 1, about)

    def test_a_re_reported_task_the_daemon_does_not_keep_is_stopped(self) -> None:
        def no(c: Any, hello: Any) -> bool:
            c.send(c.daemon.welcome_frame(hello["worker_id"]))
            for r in hello.get("running", []):
                c.send({"type": "cancel", "task_id": r["task_id"]})
            return True

        d = self.daemon()
        w = self.worker("w1", d.addr)
        stopped = threading.Event()

        @w.task("long")
        def long(task: muster.Task) -> Any:
            task.log("before")
            if task.cancelled.wait(5):
                stopped.set()
            return 1

        w.start()
        c0 = d.wait_conn(0)
        c0.send(task_frame("t1", "long"))
        d.wait_for(is_update("t1", "running"))
        d.on_hello = no
        c0.close()
        d.wait_conn(1)
        self.assertTrue(stopped.wait(3), "stopped after the grace")
        time.sleep(0.2)
        self.assertEqual([f for f in d.frames(conn=1) if f.get("task_id") == "t1"], [], "nothing said of it")

    def test_shutting_down_reconnects(self) -> None:
        d = self.daemon()
        w = self.worker("w1", d.addr).start()
        c0 = d.wait_conn(0)
        c0.send({"type": "error", "code": "shutting_down", "message": "musterd is shutting down"})
        c0.close()
        d.wait_conn(1)
        self.assertTrue(w.wait_connected(3))


class Closing(Base):
    def test_the_context_manager_says_bye(self) -> None:
        d = self.daemon()
        with self.worker("w1", d.addr) as w:
            self.assertTrue(w.wait_connected(3))
            w.record_run(1, True)
        frames = d.frames()
        self.assertEqual(frames[-1], {"type": "bye"})
        self.assertEqual(frames[-2]["type"], "run", "what was owed went out first")
        d.wait_closed(d.conns[0])

    def test_close_lets_a_running_handler_finish(self) -> None:
        d = self.daemon()
        w = self.worker("w1", d.addr)
        def short(task: muster.Task) -> str:
            time.sleep(0.3)
            return "ok"

        w.handle("short", short)
        w.start()
        d.wait_conn(0).send(task_frame("t1", "short"))
        d.wait_for(is_update("t1", "running"))
        w.close(timeout=3)
        kinds = [(f["type"], f.get("state")) for f in d.frames() if f["type"] != "heartbeat"]
        self.assertEqual(kinds[-2:], [("task_update", "succeeded"), ("bye", None)])

    def test_close_gives_back_what_runs_past_the_timeout(self) -> None:
        d = self.daemon()
        w = self.worker("w1", d.addr)
        stopped = threading.Event()
        def long(task: muster.Task) -> None:
            if task.cancelled.wait(5):
                stopped.set()

        w.handle("long", long)
        w.start()
        d.wait_conn(0).send(task_frame("t1", "long"))
        d.wait_for(is_update("t1", "running"))
        w.close(timeout=0.2)
        self.assertTrue(stopped.wait(2))
        self.assertEqual(d.frames()[-1], {"type": "bye"})
        self.assertFalse(any(is_update("t1", "cancelled")(f) for f in d.frames()), "the bye gives it back")

    def test_run_returns_after_stop(self) -> None:
        d = self.daemon()
        w = self.worker("w1", d.addr)
        threading.Timer(0.3, w.stop).start()
        t0 = time.monotonic()
        w.run()
        self.assertLess(time.monotonic() - t0, 3)
        self.assertEqual(d.frames()[-1], {"type": "bye"})


class Udp(Base):
    def test_datagrams_carry_the_id_and_the_token(self) -> None:
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind(("127.0.0.1", 0))
        s.settimeout(3)
        self.addCleanup(s.close)
        addr = f"127.0.0.1:{s.getsockname()[1]}"
        w = self.worker("u1", addr, transport="udp", heartbeat_interval=0.05, token="tok").start()
        got = [json.loads(s.recv(65536)) for _ in range(3)]
        self.assertEqual([g["seq"] for g in got], [1, 2, 3])
        for g in got:
            self.assertEqual((g["type"], g["worker_id"], g["token"]), ("heartbeat", "u1", "tok"))
        w.record_run(0.5, True)
        w.set(queue_depth=2)
        with self.assertRaises(muster.FrameTooLarge):
            w.set(current_job={"id": "x" * 66000})
        w.close()
        seen = []
        while True:
            g = json.loads(s.recv(65536))
            seen.append(g)
            if g["type"] == "bye":
                break
        self.assertIn({"type": "run", "worker_id": "u1", "duration_ms": 500.0, "ok": True, "token": "tok"}, seen)
        self.assertTrue(any(g.get("queue_depth") == 2 for g in seen))
        self.assertEqual(seen[-1], {"type": "bye", "worker_id": "u1", "token": "tok"})


if __name__ == "__main__":
    unittest.main()
