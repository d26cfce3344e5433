"""The conformance runner's command protocol, against the fake daemon."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import unittest

from _support import ROOT, FakeDaemon

RUNNER = os.path.join(ROOT, "conformance", "runner.py")


class Runner(unittest.TestCase):
    def start(self, daemon: FakeDaemon, **env: str) -> "subprocess.Popen[str]":
        e = {k: v for k, v in os.environ.items() if not k.startswith("MUSTER_")}
        e.update(PYTHONPATH=ROOT, MUSTER_ADDRS=daemon.addr, MUSTER_WORKER_ID="conf-1", MUSTER_URL="http://127.0.0.1:9")
        e.update(env)
        p = subprocess.Popen(
            [sys.executable, RUNNER],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=e,
        )
        def stop() -> None:
            p.kill()
            p.wait()
            for f in (p.stdin, p.stdout, p.stderr):
                if f is not None:
                    f.close()

        self.addCleanup(stop)
        return p

    def ask(self, p: "subprocess.Popen[str]", line: str) -> str:
        assert p.stdin is not None and p.stdout is not None
        p.stdin.write(line + "\n")
        p.stdin.flush()
        return p.stdout.readline().strip()

    def test_commands(self) -> None:
        d = FakeDaemon(interval_ms=100)
        self.addCleanup(d.close)
        p = self.start(d)
        assert p.stdout is not None
        self.assertEqual(p.stdout.readline().strip(), "ready")
        hello = d.wait_conn(0).hello
        assert hello is not None
        self.assertEqual(hello["labels"], {"client": "python"})
        self.assertEqual(hello["capacity"], 4)
        self.assertEqual(sorted(hello["task_types"]), ["echo", "fail", "flaky", "slow", "wait"])
        self.assertEqual(self.ask(p, 'set {"status":"working","queue_depth":3}'), "ok")
        big = json.dumps({"current_job": {"id": "x" * 70000}})
        self.assertTrue(self.ask(p, "set " + big).startswith("error "))
        self.assertEqual(self.ask(p, 'set {"queue_depth":4}'), "ok")
        self.assertEqual(self.ask(p, "run 1.5 ok"), "ok")
        self.assertTrue(self.ask(p, "show 1").startswith("error "), "no daemon at MUSTER_URL")
        d.wait_for(lambda f: f.get("type") == "heartbeat" and f.get("queue_depth") == 4)
        d.wait_for(lambda f: f.get("type") == "run" and f.get("duration_ms") == 1500)
        assert p.stdin is not None
        p.stdin.write("bye\n")
        p.stdin.flush()
        self.assertEqual(p.wait(10), 0)
        self.assertEqual(d.frames()[-1], {"type": "bye"})
        self.assertEqual(d.accepts, 1)

    def test_a_refused_token_is_fatal(self) -> None:
        d = FakeDaemon(token="right")
        self.addCleanup(d.close)
        tok = os.path.join(ROOT, "runner-token.tmp")
        with open(tok, "w") as f:
            f.write("wrong\n")
        self.addCleanup(os.remove, tok)
        p = self.start(d, MUSTER_HEARTBEAT_TOKEN_FILE=tok)
        out, _ = p.communicate(timeout=10)
        self.assertEqual(p.returncode, 3)
        lines = out.splitlines()
        self.assertEqual(lines[0], "ready")
        self.assertTrue(lines[1].startswith("fatal "), lines)


if __name__ == "__main__":
    unittest.main()
